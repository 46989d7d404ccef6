//! Splitting long texts into token-budgeted chunks, and counting LLM tokens.
//!
//! An embedding model sees at most `max_seq_length` tokens; anything past that is silently
//! dropped. To embed a whole article or transcript it is split into chunks that each fit, cut
//! where a reader would cut (paragraph, then sentence, then word boundaries), with a little overlap
//! so that a sentence near a cut is still seen whole by one chunk. Every chunk carries its byte
//! span in the original text, so search results can point at the passage that matched.
//!
//! The same splitter works with any tokenizer through [`TokenSpans`]: the embedding model's
//! (WordPiece) and the LLM's (tiktoken BPE, for prompt budgets in map-reduce summarisation).

use std::str::FromStr;

use tiktoken_rs::CoreBPE;

/// Errors from chunking and token counting.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("a chunk budget of {max_tokens} tokens leaves no room for text after {special} special tokens")]
    BudgetTooSmall { max_tokens: usize, special: usize },
    #[error("cannot split the text at byte {at} into chunks of at most {max_tokens} tokens")]
    Unsplittable { at: usize, max_tokens: usize },
    #[error("unknown LLM token encoding {0:?} (expected o200k_base or cl100k_base)")]
    UnknownEncoding(String),
}

/// A tokenizer as the chunker sees it.
pub trait TokenSpans {
    /// Byte span of every token of `text`, in order, with no special tokens.
    fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>, ChunkError>;
    /// Tokens the model would see for `text`: special tokens included, no truncation.
    fn count_tokens(&self, text: &str) -> Result<usize, ChunkError>;
}

/// One chunk of a text: `text[start..end]`, `tokens` long with special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkSpan {
    pub index: usize,
    pub start: usize,
    pub end: usize,
    pub tokens: usize,
}

/// Splits texts into chunks of at most `max_tokens` tokens.
#[derive(Debug, Clone, Copy)]
pub struct Chunker {
    /// Most tokens per chunk, special tokens included.
    pub max_tokens: usize,
    /// Tokens of the previous chunk repeated at the start of the next (at most).
    pub overlap_tokens: usize,
}

impl Chunker {
    /// The configured chunker for a model that reads `max_seq_length` tokens, or `None` (embed
    /// each item truncated) when chunking is off. `enabled` overrides `chunk.enabled`.
    pub fn from_config(
        config: &crate::config::ChunkConfig,
        max_seq_length: usize,
        enabled: Option<bool>,
    ) -> Option<Self> {
        enabled.unwrap_or(config.enabled).then(|| Self {
            max_tokens: match config.max_tokens {
                0 => max_seq_length,
                n => n.min(max_seq_length),
            },
            overlap_tokens: config.overlap_tokens,
        })
    }

    /// Chunk `text`. Spans are ordered, the first starts at 0, the last ends at `text.len()`, and
    /// each starts no later than the previous one ends: together they cover the whole text.
    /// An empty text has no chunks; a text that fits is one chunk.
    pub fn chunk(&self, tok: &impl TokenSpans, text: &str) -> Result<Vec<ChunkSpan>, ChunkError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let special = tok.count_tokens("")?;
        if self.max_tokens <= special {
            return Err(ChunkError::BudgetTooSmall {
                max_tokens: self.max_tokens,
                special,
            });
        }
        let whole = tok.count_tokens(text)?;
        if whole <= self.max_tokens {
            return Ok(vec![ChunkSpan {
                index: 0,
                start: 0,
                end: text.len(),
                tokens: whole,
            }]);
        }
        let spans = tok.token_spans(text)?;
        let n = spans.len();
        let budget = self.max_tokens - special;
        // Overlap beyond half the budget would make chunks advance too slowly.
        let overlap = self.overlap_tokens.min(budget / 2);
        let mut chunks = Vec::new();
        let (mut first, mut start_byte) = (0usize, 0usize);
        loop {
            let mut limit = (first + budget).min(n);
            let (end_token, end_byte, tokens) = loop {
                if limit == n {
                    let tokens = tok.count_tokens(&text[start_byte..])?;
                    if tokens <= self.max_tokens {
                        break (n, text.len(), tokens);
                    }
                    limit = n - 1;
                }
                if limit <= first {
                    return Err(ChunkError::Unsplittable {
                        at: start_byte,
                        max_tokens: self.max_tokens,
                    });
                }
                // Cut before the best boundary in the back half of the window, latest on ties.
                let lowest = (first + 1).max(first + (limit - first) / 2);
                let cut = (lowest..=limit)
                    .rev()
                    .max_by_key(|&e| boundary_score(text, &spans, e))
                    .unwrap_or(limit);
                let end_byte = spans[cut].0;
                // Re-count: a token sequence cut mid-word can tokenize differently on its own.
                let tokens = tok.count_tokens(&text[start_byte..end_byte])?;
                if tokens <= self.max_tokens {
                    break (cut, end_byte, tokens);
                }
                limit = cut - 1;
            };
            chunks.push(ChunkSpan {
                index: chunks.len(),
                start: start_byte,
                end: end_byte,
                tokens,
            });
            if end_token >= n {
                break;
            }
            // Start the next chunk up to `overlap` tokens back, at the best boundary there.
            let next = (end_token.saturating_sub(overlap).max(first + 1)..end_token)
                .max_by_key(|&t| (boundary_score(text, &spans, t), std::cmp::Reverse(t)))
                .filter(|&t| boundary_score(text, &spans, t) > 0)
                .unwrap_or(end_token);
            first = next;
            start_byte = if next == end_token {
                end_byte
            } else {
                spans[next].0
            };
        }
        Ok(chunks)
    }
}

/// How good a place it is to cut before token `i`: 3 paragraph, 2 sentence or line, 1 word, 0 none.
///
/// The whitespace considered is the gap between the tokens plus any whitespace the next token
/// starts with: WordPiece leaves spaces between tokens, BPE folds them into the next token.
fn boundary_score(text: &str, spans: &[(usize, usize)], i: usize) -> u8 {
    if i == 0 || i >= spans.len() {
        return 3;
    }
    let prev_end = spans[i - 1].1;
    let next = &text[spans[i].0.max(prev_end)..spans[i].1.max(prev_end)];
    let gap = &text[prev_end..spans[i].0.max(prev_end)];
    let lead = &next[..next.len() - next.trim_start().len()];
    let newlines = gap.matches('\n').count() + lead.matches('\n').count();
    if newlines >= 2 {
        return 3;
    }
    if gap.is_empty() && lead.is_empty() {
        return 0;
    }
    let before = text[..prev_end].trim_end_matches(['"', '\'', ')', ']', '\u{201d}', '\u{2019}']);
    if newlines == 1 || before.ends_with(['.', '!', '?', '\u{3002}']) {
        return 2;
    }
    u8::from(gap.chars().chain(lead.chars()).any(char::is_whitespace))
}

/// The tiktoken encodings LLM prompts are budgeted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmEncoding {
    /// GPT-4o and later.
    O200kBase,
    /// GPT-4 and GPT-3.5.
    Cl100kBase,
}

impl FromStr for LlmEncoding {
    type Err = ChunkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "o200k_base" => Ok(Self::O200kBase),
            "cl100k_base" => Ok(Self::Cl100kBase),
            other => Err(ChunkError::UnknownEncoding(other.to_string())),
        }
    }
}

impl LlmEncoding {
    fn bpe(self) -> &'static CoreBPE {
        match self {
            Self::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }
}

/// LLM tokens in `text`, counted as content: `<|endoftext|>` in user text is text, not a token.
pub fn count_llm_tokens(text: &str, encoding: LlmEncoding) -> usize {
    encoding.bpe().encode_ordinary(text).len()
}

/// The longest prefix of `text` of at most `max_tokens` LLM tokens, cut at a char boundary.
pub fn truncate_to_llm_tokens(text: &str, max_tokens: usize, encoding: LlmEncoding) -> &str {
    let bpe = encoding.bpe();
    let tokens = bpe.encode_ordinary(text);
    if tokens.len() <= max_tokens {
        return text;
    }
    // BPE tokens are byte strings that concatenate to the input, so the prefix's length is exact.
    let mut len = bpe
        .decode_bytes(&tokens[..max_tokens])
        .map_or(0, |b| b.len());
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    &text[..len]
}

impl TokenSpans for LlmEncoding {
    fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>, ChunkError> {
        let bpe = self.bpe();
        let mut spans = Vec::new();
        let mut at = 0usize;
        for token in bpe.encode_ordinary(text) {
            let len = bpe
                .decode_bytes(&[token])
                .map_err(|e| ChunkError::Tokenizer(e.to_string()))?
                .len();
            // A token can end inside a multi-byte char; spans are kept on char boundaries.
            let mut end = at + len;
            while end < text.len() && !text.is_char_boundary(end) {
                end += 1;
            }
            let end = end.min(text.len());
            if end > at {
                spans.push((at, end));
            }
            at = end.max(at + len).min(text.len());
        }
        Ok(spans)
    }
    fn count_tokens(&self, text: &str) -> Result<usize, ChunkError> {
        Ok(count_llm_tokens(text, *self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks every promise of [`Chunker::chunk`] for one text.
    pub(crate) fn assert_valid_chunks(
        tok: &impl TokenSpans,
        text: &str,
        chunker: Chunker,
    ) -> Vec<ChunkSpan> {
        let chunks = chunker.chunk(tok, text).unwrap();
        assert!(!chunks.is_empty());
        assert_eq!(chunks[0].start, 0);
        assert_eq!(chunks.last().unwrap().end, text.len());
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.index, i);
            assert!(c.start < c.end, "empty chunk {c:?}");
            assert!(c.tokens <= chunker.max_tokens, "chunk {c:?} over budget");
            assert_eq!(tok.count_tokens(&text[c.start..c.end]).unwrap(), c.tokens);
            if i > 0 {
                let prev = chunks[i - 1];
                assert!(
                    c.start > prev.start && c.start <= prev.end,
                    "gap or no progress: {prev:?} {c:?}"
                );
            }
        }
        chunks
    }

    fn prose(sentences: usize) -> String {
        let mut s = String::new();
        for i in 0..sentences {
            s.push_str(&format!(
                "Sentence number {i} talks about the market and the weather. "
            ));
            if i % 7 == 6 {
                s.push_str("\n\n");
            }
        }
        s
    }

    #[test]
    fn llm_tokens_are_counted_and_truncated_on_char_boundaries() {
        let enc = LlmEncoding::Cl100kBase;
        assert_eq!(count_llm_tokens("", enc), 0);
        assert!(count_llm_tokens("hello world", enc) == 2);
        let text = "naïve café — 東京 🚀 ".repeat(50);
        for max in [0, 1, 3, 10, 57, 1000] {
            let cut = truncate_to_llm_tokens(&text, max, enc);
            assert!(text.starts_with(cut));
            assert!(count_llm_tokens(cut, enc) <= max, "max {max}");
        }
        assert_eq!(truncate_to_llm_tokens(&text, 100_000, enc), text);
        // Special-token text in user content is counted as text, never as a control token.
        assert!(count_llm_tokens("<|endoftext|>", LlmEncoding::O200kBase) > 1);
        assert!("o300k".parse::<LlmEncoding>().is_err());
    }

    #[test]
    fn llm_token_spans_tile_the_text() {
        let text = "Prices rose 3.5% in Zürich; 東京 was flat 🚀.\n\nNext paragraph.";
        for enc in [LlmEncoding::O200kBase, LlmEncoding::Cl100kBase] {
            let spans = enc.token_spans(text).unwrap();
            assert_eq!(spans.first().unwrap().0, 0);
            assert_eq!(spans.last().unwrap().1, text.len());
            for w in spans.windows(2) {
                assert_eq!(w[0].1, w[1].0);
            }
        }
    }

    #[test]
    fn chunks_fit_cover_and_prefer_sentence_ends() {
        let text = prose(400);
        for overlap in [0, 16] {
            let chunker = Chunker {
                max_tokens: 64,
                overlap_tokens: overlap,
            };
            let chunks = assert_valid_chunks(&LlmEncoding::Cl100kBase, &text, chunker);
            assert!(chunks.len() > 20);
            let sentence_cuts = chunks[..chunks.len() - 1]
                .iter()
                .filter(|c| text[c.start..c.end].trim_end().ends_with('.'))
                .count();
            assert_eq!(
                sentence_cuts,
                chunks.len() - 1,
                "every cut should fall after a sentence"
            );
            if overlap == 0 {
                for w in chunks.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
            } else {
                assert!(
                    chunks.windows(2).any(|w| w[1].start < w[0].end),
                    "overlap expected"
                );
            }
        }
    }

    #[test]
    fn text_without_boundaries_is_still_split_within_budget() {
        let text = "x".repeat(5000) + &"ab".repeat(3000);
        let chunker = Chunker {
            max_tokens: 50,
            overlap_tokens: 8,
        };
        assert_valid_chunks(&LlmEncoding::O200kBase, &text, chunker);
    }

    #[test]
    fn short_and_empty_texts() {
        let chunker = Chunker {
            max_tokens: 50,
            overlap_tokens: 8,
        };
        assert!(chunker
            .chunk(&LlmEncoding::O200kBase, "")
            .unwrap()
            .is_empty());
        let one = chunker
            .chunk(&LlmEncoding::O200kBase, "  short text ")
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].start, one[0].end), (0, 13));
        let zero = Chunker {
            max_tokens: 0,
            overlap_tokens: 0,
        };
        assert!(matches!(
            zero.chunk(&LlmEncoding::O200kBase, "text"),
            Err(ChunkError::BudgetTooSmall { .. })
        ));
    }
}
