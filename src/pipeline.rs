//! The main job, end to end on the embedded defaults: what `signaldesk pipeline` runs.
//!
//! Today it embeds the bundled SciFact sample and checks the vectors against
//! sentence-transformers' own (the parity contract), reporting speed and cache use. Each later
//! stage (store, enrich, rank, eval) adds its step and its section of [`PipelineReport`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::embed::{cosine, Embedder};
use crate::ingest::jsonl::{parse_object, RecordError};
use crate::ingest::InputFile;

/// The bundled sample: SciFact texts with sentence-transformers vectors of the same model.
pub const SAMPLE_PATH: &str = "golden-datasets/scifact-minilm-reference/scifact_minilm_st.jsonl.gz";

/// Least cosine to the reference vector that counts as parity.
pub const PARITY_MIN_COSINE: f32 = 0.9999;

/// Errors that stop the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Input(#[from] crate::ingest::InputError),
    #[error("{path} line {line}: {message}")]
    Sample {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Embed(#[from] crate::embed::EmbedError),
}

/// One text with the vector sentence-transformers made for it.
#[derive(Debug, Clone, Deserialize)]
pub struct ReferenceVector {
    pub id: String,
    pub text: String,
    pub vector: Vec<f32>,
}

/// Read a reference file (`id`, `text`, `vector` per line; `.gz` allowed).
pub fn read_reference(path: &Path) -> Result<Vec<ReferenceVector>, PipelineError> {
    let mut out = Vec::new();
    for line in InputFile::open(path)?.lines(1 << 24) {
        let line = line?;
        let bad = |message: String| PipelineError::Sample {
            path: path.to_path_buf(),
            line: line.number,
            message,
        };
        let text = line.content.as_ref().map_err(|p| bad(p.to_string()))?;
        if text.trim().is_empty() {
            continue;
        }
        let obj = parse_object(text).map_err(|e: RecordError| bad(e.to_string()))?;
        let r: ReferenceVector =
            serde_json::from_value(obj.into()).map_err(|e| bad(e.to_string()))?;
        out.push(r);
    }
    Ok(out)
}

/// What the main job did and found; printed as a table or JSON.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    pub model: String,
    pub dimension: usize,
    pub sample: String,
    pub texts: usize,
    pub tokens: usize,
    /// Wall time of the embedding step (cache lookups included).
    pub embed_seconds: f64,
    pub tokens_per_s: f64,
    pub parity_min_cosine: f32,
    pub parity_mean_cosine: f32,
    /// Texts whose cosine to the reference is below [`PARITY_MIN_COSINE`].
    pub parity_failures: usize,
}

impl PipelineReport {
    /// Whether every check of the run passed.
    pub fn passed(&self) -> bool {
        self.parity_failures == 0 && self.texts > 0
    }
}

/// Run the main job on `sample` with `embedder`.
pub fn run(embedder: &Embedder, sample: &Path) -> Result<PipelineReport, PipelineError> {
    let _span = tracing::info_span!("pipeline", sample = %sample.display()).entered();
    let reference = {
        let _s = tracing::info_span!("load_sample").entered();
        read_reference(sample)?
    };
    let texts: Vec<&str> = reference.iter().map(|r| r.text.as_str()).collect();
    let tokens: usize = embedder.token_counts(&texts)?.iter().sum();
    let started = Instant::now();
    let vectors = {
        let _s = tracing::info_span!("embed", texts = texts.len()).entered();
        embedder.embed(&texts)?
    };
    let embed_seconds = started.elapsed().as_secs_f64();
    let cosines: Vec<f32> = reference
        .iter()
        .zip(&vectors)
        .map(|(r, v)| cosine(&r.vector, v))
        .collect();
    let min = cosines.iter().copied().fold(f32::INFINITY, f32::min);
    let mean = cosines.iter().sum::<f32>() / cosines.len().max(1) as f32;
    Ok(PipelineReport {
        model: embedder.model_id().to_string(),
        dimension: embedder.dimension(),
        sample: sample.display().to_string(),
        texts: texts.len(),
        tokens,
        embed_seconds,
        tokens_per_s: tokens as f64 / embed_seconds.max(1e-9),
        parity_min_cosine: if cosines.is_empty() { 0.0 } else { min },
        parity_mean_cosine: mean,
        parity_failures: cosines.iter().filter(|&&c| c < PARITY_MIN_COSINE).count(),
    })
}
