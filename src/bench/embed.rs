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

/// One timed, uncached pass over `refs`: the report and the vectors.
fn timed_embed(
    embedder: &Embedder,
    refs: &[&str],
    tokens: usize,
) -> Result<(BenchReport, Vec<Vec<f32>>), EmbedError> {
    let started = Instant::now();
    let vectors = embedder.embed_uncached(refs)?;
    let seconds = started.elapsed().as_secs_f64();
    debug_assert_eq!(vectors.len(), refs.len());
    let report = BenchReport {
        docs: refs.len(),
        tokens,
        seconds,
        docs_per_s: refs.len() as f64 / seconds.max(1e-9),
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
    };
    Ok((report, vectors))
}

/// One precision's result in [`compare_precisions`]; field names are the `--json` contract.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrecisionRun {
    /// `fp32` or `int8`.
    pub precision: &'static str,
    /// The int8 kernel rten-gemm picked, for int8 runs.
    pub kernel: Option<String>,
    /// The median round (by tokens/s).
    #[serde(flatten)]
    pub median: BenchReport,
    pub tokens_per_s_min: f64,
    pub tokens_per_s_max: f64,
    /// Tokens/s of every round, in the order run.
    pub rounds: Vec<f64>,
    /// Cosine of this precision's vectors to the first precision's, text by text (absent for
    /// the first).
    pub cosine_to_first: Option<CosineAgreement>,
}

/// How closely two embedders agree on the same texts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CosineAgreement {
    /// The precision compared against.
    pub reference: &'static str,
    pub min: f64,
    pub mean: f64,
}

/// Time every embedder over `texts` in `rounds` alternated rounds (embedder 1, 2, …, 1, 2, …),
/// so drift in the machine's speed hits all of them alike, and compare each one's vectors with
/// the first's.
pub fn compare_precisions(
    embedders: &[Embedder],
    texts: &[String],
    rounds: usize,
) -> Result<Vec<PrecisionRun>, EmbedError> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let Some(first) = embedders.first() else {
        return Ok(Vec::new());
    };
    let tokens: usize = first.token_counts(&refs)?.iter().sum();
    let warm = refs.len().min(8);
    for e in embedders {
        e.embed_uncached(&refs[..warm])?;
    }
    let mut reports: Vec<Vec<BenchReport>> = vec![Vec::new(); embedders.len()];
    let mut vectors: Vec<Vec<Vec<f32>>> = vec![Vec::new(); embedders.len()];
    for _ in 0..rounds.max(1) {
        for (i, e) in embedders.iter().enumerate() {
            let (report, v) = timed_embed(e, &refs, tokens)?;
            reports[i].push(report);
            vectors[i] = v;
        }
    }
    Ok(embedders
        .iter()
        .zip(reports)
        .enumerate()
        .map(|(i, (e, reports))| {
            let speeds: Vec<f64> = reports.iter().map(|r| r.tokens_per_s).collect();
            let mut order: Vec<usize> = (0..reports.len()).collect();
            order.sort_by(|&a, &b| speeds[a].total_cmp(&speeds[b]));
            let cosine_to_first = (i > 0).then(|| agreement(&vectors[0], &vectors[i], first));
            PrecisionRun {
                precision: e.precision().name(),
                kernel: e.int8_kernel(),
                median: reports[order[order.len() / 2]].clone(),
                tokens_per_s_min: speeds[order[0]],
                tokens_per_s_max: speeds[order[order.len() - 1]],
                rounds: speeds,
                cosine_to_first,
            }
        })
        .collect())
}

fn agreement(reference: &[Vec<f32>], other: &[Vec<f32>], first: &Embedder) -> CosineAgreement {
    let cosines: Vec<f64> = reference
        .iter()
        .zip(other)
        .map(|(a, b)| f64::from(crate::embed::cosine(a, b)))
        .collect();
    CosineAgreement {
        reference: first.precision().name(),
        min: cosines.iter().copied().fold(f64::INFINITY, f64::min),
        mean: cosines.iter().sum::<f64>() / cosines.len().max(1) as f64,
    }
}
