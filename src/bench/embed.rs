//! `signaldesk bench embed`: model throughput on real documents.
//!
//! Tokens are counted the way sentence-transformers comparisons count them: the input ids the
//! model runs after truncation, special tokens included, padding excluded. The timed region is one
//! uncached [`Embedder::embed_uncached`] call over all documents (tokenization included), after a
//! small warm-up so first-touch page faults and thread start-up are not billed to the model.

use std::time::Instant;

use crate::embed::{EmbedError, Embedder};
use crate::ingest::jsonl::{parse_object, text_of};
use crate::ingest::InputFile;

/// A benchmark's result; field names are the `--json` contract.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub docs: usize,
    pub tokens: usize,
    pub seconds: f64,
    pub docs_per_s: f64,
    pub tokens_per_s: f64,
}

/// Read up to `limit` texts from a JSONL file; bad lines are skipped (and counted in the result).
pub fn load_texts(
    input: InputFile,
    text_field: Option<&str>,
    limit: Option<usize>,
) -> Result<(Vec<String>, usize), crate::ingest::InputError> {
    let mut texts = Vec::new();
    let mut skipped = 0;
    for line in input.lines(crate::ingest::embed_file::DEFAULT_MAX_LINE_BYTES) {
        if limit.is_some_and(|l| texts.len() >= l) {
            break;
        }
        let Ok(s) = line?.content else {
            skipped += 1;
            continue;
        };
        if s.trim().is_empty() {
            continue;
        }
        match parse_object(&s).and_then(|o| text_of(&o, text_field)) {
            Ok(t) => texts.push(t),
            Err(_) => skipped += 1,
        }
    }
    Ok((texts, skipped))
}

/// Time embedding `texts` (no cache) and count their tokens.
pub fn bench_embed(embedder: &Embedder, texts: &[String]) -> Result<BenchReport, EmbedError> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens: usize = embedder.token_counts(&refs)?.iter().sum();
    let warm = refs.len().min(8);
    embedder.embed_uncached(&refs[..warm])?;
    let started = Instant::now();
    let vectors = embedder.embed_uncached(&refs)?;
    let seconds = started.elapsed().as_secs_f64();
    debug_assert_eq!(vectors.len(), refs.len());
    Ok(BenchReport {
        docs: refs.len(),
        tokens,
        seconds,
        docs_per_s: refs.len() as f64 / seconds.max(1e-9),
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
    })
}
