//! The main job, end to end on the embedded defaults: what `signaldesk pipeline` runs.
//!
//! Stages so far: embed the bundled SciFact sample and check the vectors against
//! sentence-transformers' own (the parity contract); then ingest the bundled SciFact corpus into
//! the embedded store and run the retrieval suite (dense, BM25, hybrid) on its test queries.
//! Each later stage (enrich, rank) adds its step and its section of [`PipelineReport`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::config::SearchMode;
use crate::embed::{cosine, Embedder};
use crate::eval::retrieval::{ingest_corpus, run_queries, score, BeirDataset};
use crate::ingest::jsonl::{parse_object, RecordError};
use crate::ingest::pipeline::IngestOptions;
use crate::ingest::pipeline::IngestSummary;
use crate::ingest::InputFile;
use crate::search::Searcher;
use crate::store::VectorStore;

/// The bundled sample: SciFact texts with sentence-transformers vectors of the same model.
pub const SAMPLE_PATH: &str = "golden-datasets/scifact-minilm-reference/scifact_minilm_st.jsonl.gz";

/// The bundled retrieval dataset (BEIR SciFact).
pub const RETRIEVAL_DATASET: &str = "golden-datasets/scifact";

/// Dense nDCG@10 that sentence-transformers gets on SciFact test with this model, and the
/// tolerance the pipeline allows.
pub const DENSE_NDCG_REFERENCE: f64 = 0.6451;
pub const DENSE_NDCG_TOLERANCE: f64 = 0.005;

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
    #[error(transparent)]
    Retrieval(#[from] crate::eval::retrieval::RetrievalEvalError),
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
    /// Texts the embedding cache answered (the model ran for the rest).
    pub cache_hits: usize,
    /// Model speed over the texts the model embedded; `None` when the cache answered them all
    /// (a cache lookup's speed is not the model's).
    pub tokens_per_s: Option<f64>,
    pub parity_min_cosine: f32,
    pub parity_mean_cosine: f32,
    /// Texts whose cosine to the reference is below [`PARITY_MIN_COSINE`].
    pub parity_failures: usize,
    /// The retrieval stage, when it ran.
    pub retrieval: Option<RetrievalSection>,
}

/// Retrieval stage results: ingest counts and nDCG@10 / recall@100 per mode.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalSection {
    pub dataset: String,
    /// The store the stage ran on (`qdrant-edge` or `qdrant`), from `store.backend`.
    pub backend: String,
    pub ingest: IngestSummary,
    pub ingest_seconds: f64,
    pub queries: usize,
    /// mode → metric → value.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// Dense nDCG@10 within [`DENSE_NDCG_TOLERANCE`] of [`DENSE_NDCG_REFERENCE`].
    pub dense_matches_reference: bool,
}

impl PipelineReport {
    /// Whether every check of the run passed.
    pub fn passed(&self) -> bool {
        self.parity_failures == 0
            && self.texts > 0
            && self
                .retrieval
                .as_ref()
                .is_none_or(|r| r.dense_matches_reference)
    }
}

/// The retrieval stage: ingest `dataset` into `store` (idempotent: a second run finds every item
/// unchanged) and evaluate dense, BM25 and hybrid search on its test split.
pub async fn run_retrieval<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    dataset: &Path,
    config: &crate::Config,
    on_progress: impl FnMut(usize),
) -> Result<RetrievalSection, PipelineError> {
    let data = BeirDataset::open(dataset)?;
    // Whole documents (no chunking), as sentence-transformers' reference run embedded them, so
    // the dense figure can be held to it; search runs with the configured settings.
    let options = IngestOptions::from_config(config, "pipeline-scifact", None);
    let (ingest, ingest_seconds) =
        ingest_corpus(store, embedder.clone(), &data, &options, false, on_progress)
            .instrument(tracing::info_span!("ingest", corpus = %data.corpus.display()))
            .await?;
    let qrels = data.qrels("test")?;
    let queries: Vec<(String, String)> = qrels
        .keys()
        .map(|q| (q.clone(), data.queries[q].clone()))
        .collect();
    let searcher = Searcher::open(store, &embedder, &options.collection, &config.search)
        .await
        .map_err(crate::eval::retrieval::RetrievalEvalError::from)?;
    let mut metrics = BTreeMap::new();
    for mode in [SearchMode::Dense, SearchMode::Bm25, SearchMode::Hybrid] {
        let runs = run_queries(&searcher, mode, &queries, 100)
            .instrument(tracing::info_span!("search", ?mode))
            .await?;
        let (m, _) = score(&runs, &qrels);
        metrics.insert(mode.as_str().to_string(), m);
    }
    let dense = metrics
        .get("dense")
        .and_then(|m| m.get("ndcg@10"))
        .copied()
        .unwrap_or(0.0);
    Ok(RetrievalSection {
        dataset: dataset.display().to_string(),
        backend: store.backend().to_string(),
        ingest,
        ingest_seconds,
        queries: queries.len(),
        metrics,
        dense_matches_reference: (dense - DENSE_NDCG_REFERENCE).abs() <= DENSE_NDCG_TOLERANCE,
    })
}

/// The parity stage of `config`'s model: always at fp32, the precision the parity contract is
/// about (an int8 embedder is held to its own bound against fp32 by `bench embed --precision
/// fp32,int8`). The embedder is dropped on return, so the caller may open the cache again.
pub fn run_parity(config: &crate::Config, sample: &Path) -> Result<PipelineReport, PipelineError> {
    let fp32 = crate::embed::EmbedderOptions {
        precision: crate::config::EmbedPrecision::Fp32,
        ..crate::embed::EmbedderOptions::from_config(config)
    };
    run(&Embedder::load(&config.embed_model_dir(), fp32)?, sample)
}

/// Run the main job on `sample` with `embedder`.
pub fn run(embedder: &Embedder, sample: &Path) -> Result<PipelineReport, PipelineError> {
    let _span = tracing::info_span!("pipeline", sample = %sample.display()).entered();
    let reference = {
        let _s = tracing::info_span!("load_sample").entered();
        read_reference(sample)?
    };
    let texts: Vec<&str> = reference.iter().map(|r| r.text.as_str()).collect();
    let counts = embedder.token_counts(&texts)?;
    let tokens: usize = counts.iter().sum();
    let started = Instant::now();
    let (vectors, cache_hits) = {
        let _s = tracing::info_span!("embed", texts = texts.len()).entered();
        embedder.embed_counting_hits(&texts)?
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
        cache_hits,
        // With some hits the time mixes lookups and model runs: a model speed is only given
        // for a run the cache did not help.
        tokens_per_s: (cache_hits == 0).then(|| tokens as f64 / embed_seconds.max(1e-9)),
        parity_min_cosine: if cosines.is_empty() { 0.0 } else { min },
        parity_mean_cosine: mean,
        parity_failures: cosines.iter().filter(|&&c| c < PARITY_MIN_COSINE).count(),
        retrieval: None,
    })
}
