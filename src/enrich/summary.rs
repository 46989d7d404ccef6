//! Summaries that need no LLM: the extractive summarizer (the LLM summarizer's fallback) and the
//! lead-n baseline.
//!
//! Extractive: the item's sentences are embedded, and those nearest the mean of all of them (the
//! most central: what the whole item keeps coming back to) are kept, up to the word limit, in
//! the item's order. Deterministic, cheap, and never says anything the item does not.

use crate::embed::{EmbedError, Embedder};

/// Sentences of a text: one per line when the text is laid out so, else split after `.`, `!` or
/// `?` followed by a space and an upper-case letter, digit or quote.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut start = 0;
        let bytes = line.as_bytes();
        for (i, c) in line.char_indices() {
            if matches!(c, '.' | '!' | '?') && i + 2 < line.len() && bytes[i + 1] == b' ' {
                let next = line[i + 2..].chars().next().unwrap_or(' ');
                if next.is_uppercase()
                    || next.is_ascii_digit()
                    || matches!(next, '"' | '\'' | '‘' | '“')
                {
                    let s = line[start..=i].trim();
                    if !s.is_empty() {
                        out.push(s);
                    }
                    start = i + 1;
                }
            }
        }
        let s = line[start..].trim();
        if !s.is_empty() {
            out.push(s);
        }
    }
    out
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// The first `n` sentences.
pub fn lead(text: &str, n: usize) -> String {
    sentences(text)
        .into_iter()
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
}

/// At most `max_words` words: whole sentences while they fit, else the first sentence cut.
fn within(picked: Vec<&str>, max_words: usize) -> String {
    let joined = picked.join(" ");
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
    fn summaries_respect_the_word_limit() {
        assert_eq!(
            within(vec!["one two three", "four"], 4),
            "one two three four"
        );
        assert_eq!(within(vec!["one two three four five"], 3), "one two three");
    }
}
