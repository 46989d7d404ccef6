//! ROUGE-1, ROUGE-2 and ROUGE-L F1 as Google's `rouge-score` computes them (the package the
//! summarization literature reports), so figures compare with published ones:
//! lowercase, every run of characters outside `[a-z0-9]` becomes a space, tokens longer than 3
//! characters are Porter-stemmed; ROUGE-N counts clipped n-gram overlaps, ROUGE-L is the longest
//! common subsequence over the whole text (`rougeL`, not the summary-level `rougeLsum`).
//! `scripts/rouge_agreement.py` checks every FRANK item against the Python package.

use std::collections::HashMap;

/// Precision, recall and F1 of one comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Score {
    fn of(overlap: usize, candidate: usize, reference: usize) -> Self {
        let precision = overlap as f64 / candidate.max(1) as f64;
        let recall = overlap as f64 / reference.max(1) as f64;
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Self {
            precision,
            recall,
            f1,
        }
    }
}

/// ROUGE-1, ROUGE-2 and ROUGE-L of a candidate summary against a reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Rouge {
    pub rouge1: Score,
    pub rouge2: Score,
    #[serde(rename = "rougeL")]
    pub rouge_l: Score,
}

/// Tokens as `rouge-score`'s default tokenizer with `use_stemmer=True` makes them.
pub fn tokenize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let cleaned: String = lower
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                ' '
            }
        })
        .collect();
    cleaned
        .split_whitespace()
        .map(|t| {
            if t.len() > 3 {
                super::porter::stem(t)
            } else {
                t.to_string()
            }
        })
        .filter(|t| !t.is_empty())
        .collect()
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

fn rouge_n(candidate: &[String], reference: &[String], n: usize) -> Score {
    let c = ngrams(candidate, n);
    let r = ngrams(reference, n);
    let overlap: usize = c
        .iter()
        .map(|(g, &k)| k.min(r.get(g).copied().unwrap_or(0)))
        .sum();
    Score::of(overlap, c.values().sum(), r.values().sum())
}

fn lcs(a: &[String], b: &[String]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Score `candidate` against `reference`.
pub fn score(candidate: &str, reference: &str) -> Rouge {
    let c = tokenize(candidate);
    let r = tokenize(reference);
    Rouge {
        rouge1: rouge_n(&c, &r, 1),
        rouge2: rouge_n(&c, &r, 2),
        rouge_l: Score::of(lcs(&c, &r), c.len(), r.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_lowercased_cleaned_and_stemmed() {
        assert_eq!(
            tokenize("The Cats' running-shoes, 2 skies!"),
            ["the", "cat", "run", "shoe", "2", "sky"]
        );
        assert_eq!(tokenize("ties dies"), ["tie", "die"]);
    }

    #[test]
    fn scores_match_hand_counts() {
        // rouge-score's own example: candidate 9 tokens, reference 8... here by hand:
        // c = the quick brown dog jump on the log (8), r = the quick brown fox jump over the lazi dog (9).
        let r = score(
            "The quick brown dog jumps on the log.",
            "The quick brown fox jumps over the lazy dog",
        );
        // Unigram overlap: the×2, quick, brown, dog, jump = 6.
        assert!((r.rouge1.precision - 6.0 / 8.0).abs() < 1e-12);
        assert!((r.rouge1.recall - 6.0 / 9.0).abs() < 1e-12);
        // Bigrams: "the quick", "quick brown" = 2 of 7 and 8.
        assert!((r.rouge2.precision - 2.0 / 7.0).abs() < 1e-12);
        assert!((r.rouge2.recall - 2.0 / 8.0).abs() < 1e-12);
        // LCS: the quick brown jump the = 5.
        assert!((r.rouge_l.precision - 5.0 / 8.0).abs() < 1e-12);
        assert_eq!(score("", "anything").rouge1.f1, 0.0);
        assert_eq!(score("same words", "same words").rouge_l.f1, 1.0);
    }
}
