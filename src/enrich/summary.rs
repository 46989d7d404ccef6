//! Summaries that need no LLM: the extractive summarizer (the LLM summarizer's fallback) and the
//! lead-n baseline.
//!
//! Extractive: the item's sentences are embedded, and those nearest the mean of all of them (the
//! most central: what the whole item keeps coming back to) are kept, up to the word limit, in
//! the item's order. Deterministic, cheap, and never says anything the item does not.

use crate::embed::{EmbedError, Embedder};

/// Sentences of a text. Text laid out one sentence per line (at least half its lines end a
/// sentence: CNN/DailyMail, most feeds) splits at line ends and, within a line, after `.`, `!`
/// or `?` followed by a space and an upper-case letter, digit or quote. Hard-wrapped text (wire
/// copy such as Reuters', broken every 60-odd characters mid-sentence: fewer than half its lines
/// end a sentence and none is longer than 80 characters) would come out as line fragments that
/// way, so there lines are joined into paragraphs (a new one at a blank or
/// indented line; an all-capitals line, a headline, stands alone, and a one-word one, a
/// sign-off, is dropped) and split at the same marks,
/// a line break counting as the space. Each sentence is a slice of `text`: a joined one keeps
/// its line breaks, which [`lead`] and the extractive summary fold into single spaces.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for block in blocks(text) {
        split_block(block, &mut out);
    }
    out
}

/// Whether a line ends a sentence: terminal punctuation, perhaps inside closing quotes.
fn ends_sentence(line: &str) -> bool {
    line.trim_end_matches(|c: char| {
        c.is_whitespace() || matches!(c, '"' | '\'' | '’' | '”' | ')' | ']')
    })
    .ends_with(['.', '!', '?'])
}

/// Hard-wrapped text has no line longer than this (wire copy wraps at 60-odd characters, plain
/// text mail at 72–80); a longer line means the layout is the writer's, and is kept.
const WRAP_WIDTH: usize = 80;

/// The runs of text sentences are split within: lines, or paragraphs of hard-wrapped text.
fn blocks(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let ended = lines.iter().filter(|l| ends_sentence(l)).count();
    let fixed_width = lines.iter().all(|l| l.chars().count() <= WRAP_WIDTH);
    if ended * 2 >= lines.len() || !fixed_width {
        return lines.into_iter().map(str::trim).collect();
    }
    let mut blocks = Vec::new();
    let mut paragraph: Option<(usize, usize)> = None;
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let line_start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        let content = line.trim();
        let headline =
            content.chars().any(char::is_alphabetic) && !content.chars().any(char::is_lowercase);
        if content.is_empty() || headline || line.starts_with(char::is_whitespace) {
            if let Some((s, e)) = paragraph.take() {
                blocks.push(text[s..e].trim());
            }
        }
        if content.is_empty() {
            continue;
        }
        if headline {
            // One capitalised word is a sign-off or slug (Reuters ends every story with
            // "REUTER"), not a sentence.
            if content.split_whitespace().nth(1).is_some() {
                blocks.push(content);
            }
            continue;
        }
        let (s, _) = paragraph.unwrap_or((line_start, 0));
        paragraph = Some((s, line_start + line.len()));
    }
    if let Some((s, e)) = paragraph {
        blocks.push(text[s..e].trim());
    }
    blocks
}

/// Split one block after `.`, `!` or `?` followed by a space (or a line break and indentation)
/// and an upper-case letter, digit or quote.
fn split_block<'a>(block: &'a str, out: &mut Vec<&'a str>) {
    let mut start = 0;
    for (i, c) in block.char_indices() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        let rest = &block[i + 1..];
        let after = if let Some(r) = rest.strip_prefix(' ') {
            r
        } else if rest.starts_with(['\n', '\r']) {
            rest.trim_start()
        } else {
            continue;
        };
        let next = after.chars().next().unwrap_or(' ');
        if next.is_uppercase() || next.is_ascii_digit() || matches!(next, '"' | '\'' | '‘' | '“')
        {
            let s = block[start..=i].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + 1;
        }
    }
    let s = block[start..].trim();
    if !s.is_empty() {
        out.push(s);
    }
}

/// Sentences joined by single spaces, the line breaks of hard-wrapped ones folded.
fn join(picked: &[&str]) -> String {
    picked
        .iter()
        .flat_map(|s| s.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ")
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// The first `n` sentences.
pub fn lead(text: &str, n: usize) -> String {
    let all = sentences(text);
    join(&all[..n.min(all.len())])
}

/// At most `max_words` words: whole sentences while they fit, else the first sentence cut.
fn within(picked: Vec<&str>, max_words: usize) -> String {
    let joined = join(&picked);
    if words(&joined) <= max_words {
        return joined;
    }
    joined
        .split_whitespace()
        .take(max_words)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The most central sentences of `text`, in its order, within `max_words` words.
pub fn extractive(embedder: &Embedder, text: &str, max_words: usize) -> Result<String, EmbedError> {
    let all = sentences(text);
    if all.len() <= 1 {
        return Ok(within(all, max_words));
    }
    let vectors = embedder.embed(&all)?;
    let dim = vectors[0].len();
    let mut centroid = vec![0f32; dim];
    for v in &vectors {
        for (c, x) in centroid.iter_mut().zip(v) {
            *c += x;
        }
    }
    let mut order: Vec<(usize, f32)> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (i, v.iter().zip(&centroid).map(|(a, b)| a * b).sum::<f32>()))
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut chosen: Vec<usize> = Vec::new();
    let mut used = 0;
    for (i, _) in order {
        let n = words(all[i]);
        if used + n <= max_words {
            chosen.push(i);
            used += n;
        }
    }
    if chosen.is_empty() {
        // Every sentence is longer than the limit: the most central one, cut.
        let best = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i, v.iter().zip(&centroid).map(|(a, b)| a * b).sum::<f32>()))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(i, _)| i);
        return Ok(within(vec![all[best]], max_words));
    }
    chosen.sort_unstable();
    Ok(within(
        chosen.into_iter().map(|i| all[i]).collect(),
        max_words,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_on_lines_and_terminal_punctuation() {
        assert_eq!(
            sentences(
                "First one. Second one! Third?\nA line of its own\n\nU.S. rates rose 2.5 pct. Then"
            ),
            [
                "First one.",
                "Second one!",
                "Third?",
                "A line of its own",
                "U.S. rates rose 2.5 pct.",
                "Then"
            ]
        );
        assert_eq!(lead("A. B. C. D.", 3), "A. B. C.");
    }

    #[test]
    fn hard_wrapped_wire_copy_splits_into_whole_sentences() {
        // Reuters' layout: a headline, then paragraphs wrapped mid-sentence, each indented.
        let text = "ASIAN EXPORTERS FEAR DAMAGE\nMounting trade friction between the\n\
                    United States and Japan raised fears, officials said.\n    They told Reuter\n\
                    correspondents a move might boost\nprotectionism. Exporters disagreed.\n REUTER\n";
        let got = sentences(text);
        assert_eq!(got[0], "ASIAN EXPORTERS FEAR DAMAGE");
        assert_eq!(
            got[1..]
                .iter()
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>(),
            [
                "Mounting trade friction between the United States and Japan raised fears, officials said.",
                "They told Reuter correspondents a move might boost protectionism.",
                "Exporters disagreed."
            ]
        );
        assert_eq!(
            lead(text, 2),
            "ASIAN EXPORTERS FEAR DAMAGE Mounting trade friction between the United States \
             and Japan raised fears, officials said."
        );
        // One sentence per line stays line by line, unpunctuated lines included.
        assert_eq!(
            sentences("By Staff\nIt rained. Then\nRoads closed.\nSchools shut!"),
            [
                "By Staff",
                "It rained.",
                "Then",
                "Roads closed.",
                "Schools shut!"
            ]
        );
    }

    #[test]
    fn summaries_respect_the_word_limit() {
        assert_eq!(
            within(vec!["one two three", "four"], 4),
            "one two three four"
        );
        assert_eq!(within(vec!["one two three four five"], 3), "one two three");
    }
}
