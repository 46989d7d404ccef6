//! Sentences of an item's text as byte spans, so evidence can be cited exactly where it stands.
//!
//! A rule-based splitter for news and scientific prose: a sentence ends at `.`, `!` or `?`
//! (with any closing quotes or brackets) followed by white space and a capital letter, a digit
//! or an opening bracket, unless the word before the stop is a common abbreviation ("e.g.",
//! "et al.", "Fig.") or a single initial ("J. Smith"). Line breaks between paragraphs end a
//! sentence too.

/// Words that end in a period without ending a sentence (lower case, without the period).
const ABBREVIATIONS: &[&str] = &[
    "al", "approx", "ca", "cf", "dr", "e.g", "eg", "eq", "etc", "fig", "figs", "i.e", "ie", "inc",
    "jr", "ltd", "mr", "mrs", "ms", "no", "nos", "prof", "ref", "refs", "resp", "sr", "st", "vs",
    // Countries and bodies a wire story names mid-sentence ("the U.S. Trade Representative").
    "u.s", "u.k", "u.n", "u.s.a",
];

/// The byte spans of `text`'s sentences, in order, each trimmed of surrounding white space;
/// empty sentences are left out.
pub fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let end_of_paragraph = b == b'\n' && bytes.get(i + 1) == Some(&b'\n');
        if matches!(b, b'.' | b'!' | b'?') || end_of_paragraph {
            // Closing quotes and brackets stay with the sentence.
            let mut end = i + 1;
            while end < bytes.len() && matches!(bytes[end], b'"' | b'\'' | b')' | b']') {
                end += 1;
            }
            let next = text[end..].trim_start();
            let gap = text.len() - end - next.len();
            let opens = next
                .chars()
                .next()
                .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit() || "([\"'".contains(c));
            let breaks = end_of_paragraph
                || (gap > 0 && opens && !(b == b'.' && is_abbreviation(&text[start..i])));
            if breaks || next.is_empty() {
                push_trimmed(text, start, end, &mut spans);
                start = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    push_trimmed(text, start, text.len(), &mut spans);
    spans
}

/// Whether the text before a period ends in an abbreviation or a single initial.
fn is_abbreviation(before: &str) -> bool {
    let word = before
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    let lower = word.to_lowercase();
    ABBREVIATIONS.contains(&lower.as_str())
        || (word.chars().count() == 1 && word.chars().all(char::is_uppercase))
}

fn push_trimmed(text: &str, start: usize, end: usize, spans: &mut Vec<(usize, usize)>) {
    let piece = &text[start..end];
    let lead = piece.len() - piece.trim_start().len();
    let trail = piece.len() - piece.trim_end().len();
    if start + lead < end - trail {
        spans.push((start + lead, end - trail));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<&str> {
        sentence_spans(text)
            .into_iter()
            .map(|(a, b)| &text[a..b])
            .collect()
    }

    #[test]
    fn sentences_end_at_stops_before_capitals_digits_and_brackets() {
        assert_eq!(
            split("Rates rose. 12 banks agreed! (Others did not.) Why? Because."),
            [
                "Rates rose.",
                "12 banks agreed!",
                "(Others did not.)",
                "Why?",
                "Because."
            ]
        );
        assert_eq!(
            split("  Mass was 1.8 kg, i.e. small.  The end"),
            ["Mass was 1.8 kg, i.e. small.", "The end"]
        );
    }

    #[test]
    fn abbreviations_initials_and_lower_case_continuations_do_not_split() {
        assert_eq!(
            split("As Smith et al. Showed, see Fig. 2 and J. Smith. Then p < 0.05. done."),
            [
                "As Smith et al. Showed, see Fig. 2 and J. Smith.",
                "Then p < 0.05. done."
            ]
        );
        assert_eq!(
            split("Friction between the U.S. And Japan grew. The U.K. Said so."),
            [
                "Friction between the U.S. And Japan grew.",
                "The U.K. Said so."
            ]
        );
        assert_eq!(split("Heading\n\nBody text"), ["Heading", "Body text"]);
        assert!(split("   ").is_empty());
    }

    #[test]
    fn spans_are_byte_offsets_into_the_text() {
        let text = "Café opens. Ünïcode follows.";
        let spans = sentence_spans(text);
        assert_eq!(spans.len(), 2);
        assert_eq!(&text[spans[1].0..spans[1].1], "Ünïcode follows.");
    }
}
