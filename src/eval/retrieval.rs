//! The retrieval suite: a BEIR-layout dataset through the real ingest and search path.
//!
//! The corpus is ingested into a fresh collection (through [`crate::ingest::pipeline`], so the
//! eval measures what production runs), each query of the chosen qrels split is searched, and
//! results are scored per content item (a document's best chunk stands for it) with
//! [`super::metrics`]. Queries go through [`crate::search::Searcher`] with the configured
//! `search.*` settings: the eval measures exactly what `signaldesk search` returns. Fusion
//! settings can be re-tuned on the `train` split (`--tune-fusion`), never on the evaluated one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::metrics::{by_name, ranked, Judgments};
use super::Report;
use crate::chunk::Chunker;
use crate::config::{HybridConfig, SearchConfig, SearchMode};
use crate::embed::Embedder;
use crate::ingest::jsonl::parse_object;
use crate::ingest::pipeline::{ingest_file, IngestError, IngestOptions, IngestSummary};
use crate::ingest::InputFile;
use crate::search::{SearchError, Searcher};
use crate::store::{Filter, StoreError, VectorStore};

/// Headline metrics of the suite.
pub const METRICS: &[&str] = &["ndcg@10", "recall@100", "mrr@10", "map@10", "p@10"];

/// Errors of the retrieval suite.
#[derive(Debug, thiserror::Error)]
pub enum RetrievalEvalError {
    #[error("{}: {message}", path.display())]
    Dataset { path: PathBuf, message: String },
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Embed(#[from] crate::embed::EmbedError),
    #[error(transparent)]
    Search(#[from] SearchError),
}

/// A BEIR dataset: corpus file, queries, qrels per split.
pub struct BeirDataset {
    pub dir: PathBuf,
    pub corpus: PathBuf,
    pub queries: HashMap<String, String>,
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.jsonl"), format!("{stem}.jsonl.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

impl BeirDataset {
    /// Open `dir` (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/<split>.tsv[.gz]).
    pub fn open(dir: &Path) -> Result<Self, RetrievalEvalError> {
        let missing = |what: &str| RetrievalEvalError::Dataset {
            path: dir.to_path_buf(),
            message: format!("no {what}.jsonl or {what}.jsonl.gz (BEIR layout expected)"),
        };
        let corpus = find(dir, "corpus").ok_or_else(|| missing("corpus"))?;
        let qpath = find(dir, "queries").ok_or_else(|| missing("queries"))?;
        let mut queries = HashMap::new();
        for line in InputFile::open(&qpath)
            .map_err(IngestError::from)?
            .lines(1 << 24)
        {
            let line = line.map_err(IngestError::from)?;
            let bad = |m: String| RetrievalEvalError::Dataset {
                path: qpath.clone(),
                message: format!("line {}: {m}", line.number),
            };
            let text = line.content.as_ref().map_err(|p| bad(p.to_string()))?;
            if text.trim().is_empty() {
                continue;
            }
            let obj = parse_object(text).map_err(|e| bad(e.to_string()))?;
            let id = obj
                .get("_id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no _id".into()))?;
            let q = obj
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no text".into()))?;
            queries.insert(id.to_string(), q.to_string());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            corpus,
            queries,
        })
    }

    /// Judgments of `split`: query id → (doc id → grade).
    pub fn qrels(&self, split: &str) -> Result<BTreeMap<String, Judgments>, RetrievalEvalError> {
        let path = [
            format!("qrels/{split}.tsv"),
            format!("qrels/{split}.tsv.gz"),
        ]
        .into_iter()
        .map(|p| self.dir.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| RetrievalEvalError::Dataset {
            path: self.dir.join("qrels"),
            message: format!("no {split}.tsv"),
        })?;
        let mut out: BTreeMap<String, Judgments> = BTreeMap::new();
        for line in InputFile::open(&path)
            .map_err(IngestError::from)?
            .lines(1 << 20)
        {
            let line = line.map_err(IngestError::from)?;
            let bad = |m: &str| RetrievalEvalError::Dataset {
                path: path.clone(),
                message: format!("line {}: {m}", line.number),
            };
            let text = line.content.as_ref().map_err(|p| bad(&p.to_string()))?;
            let cols: Vec<&str> = text.split('\t').collect();
            if line.number == 1 && cols.first() == Some(&"query-id") {
                continue;
            }
            if text.trim().is_empty() {
                continue;
            }
            let [q, d, g] = cols[..] else {
                return Err(bad("expected query-id, corpus-id, score"));
            };
            let g: i32 = g
                .trim()
                .parse()
                .map_err(|_| bad("score is not an integer"))?;
            if !self.queries.contains_key(q) {
                return Err(bad(&format!("query {q:?} is not in queries")));
            }
            out.entry(q.to_string())
                .or_default()
                .insert(d.to_string(), g);
        }
        Ok(out)
    }
}

/// Settings of one retrieval eval run.
#[derive(Debug, Clone)]
pub struct RetrievalEvalOptions {
    pub mode: SearchMode,
    /// The chunking the collection was ingested with (for the report).
    pub chunker: Option<Chunker>,
    pub split: String,
    pub collection: String,
    /// Items kept per query.
    pub depth: usize,
    /// The search settings, as configured (`search.*`): the same the `search` command uses.
    pub search: SearchConfig,
    /// Also choose fusion settings on the train split and report them (the configured ones are
    /// still the ones evaluated).
    pub tune_fusion: bool,
    /// Score only the first N queries of the split (in query-id order): a fixed subset for
    /// quick runs such as the CI gate's test.
    pub limit_queries: Option<usize>,
}

/// The collection `eval retrieval` ingests a dataset into: `eval-<dataset>-chunked` or
/// `eval-<dataset>-whole`, so chunked and whole-document runs never share one.
pub fn eval_collection_name(dataset: &BeirDataset, chunked: bool) -> String {
    let name = dataset
        .dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    format!("eval-{name}-{}", if chunked { "chunked" } else { "whole" })
}

/// Ingest the corpus into a fresh [`eval_collection_name`] collection with the configured ingest
/// settings (the code `signaldesk ingest` runs); returns the collection and what the ingest did,
/// as the report's `ingest` entry.
pub async fn ingest_eval_collection<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    dataset: &BeirDataset,
    config: &crate::Config,
    chunker: Option<crate::chunk::Chunker>,
    on_progress: impl FnMut(usize),
) -> Result<(String, IngestSummary, Value), RetrievalEvalError> {
    let collection = eval_collection_name(dataset, chunker.is_some());
    let options = IngestOptions::from_config(config, &collection, chunker);
    let (summary, seconds) =
        ingest_corpus(store, embedder, dataset, &options, true, on_progress).await?;
    let entry = serde_json::json!({
        "documents": summary.read, "chunks": summary.chunks, "tokens": summary.tokens,
        "seconds": seconds,
    });
    Ok((collection, summary, entry))
}

/// Ingest the corpus with `options` (into a fresh collection when `fresh`, else idempotently
/// into the existing one); returns the summary and the seconds it took.
pub async fn ingest_corpus<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    dataset: &BeirDataset,
    options: &IngestOptions,
    fresh: bool,
    on_progress: impl FnMut(usize),
) -> Result<(IngestSummary, f64), RetrievalEvalError> {
    if fresh {
        store.drop_collection(&options.collection).await?;
    }
    let started = std::time::Instant::now();
    let summary = ingest_file(
        store,
        embedder,
        &dataset.corpus,
        options,
        |_, _| {},
        on_progress,
    )
    .await?;
    Ok((summary, started.elapsed().as_secs_f64()))
}

/// Ranked content ids per query id, at most `depth` items each, through [`Searcher`].
pub async fn run_queries<S: VectorStore>(
    searcher: &Searcher<'_, S>,
    mode: SearchMode,
    queries: &[(String, String)],
    depth: usize,
) -> Result<BTreeMap<String, Vec<(String, f32)>>, RetrievalEvalError> {
    let texts: Vec<&str> = queries.iter().map(|(_, t)| t.as_str()).collect();
    let mut out = BTreeMap::new();
    // Embedded in slices, so memory stays flat for large query sets.
    for (slice, texts) in queries.chunks(256).zip(texts.chunks(256)) {
        let hits = searcher
            .search_many(texts, mode, &Filter::default(), depth)
            .await?;
        for ((qid, _), hits) in slice.iter().zip(hits) {
            out.insert(
                qid.clone(),
                hits.into_iter().map(|h| (h.id, h.score)).collect(),
            );
        }
    }
    Ok(out)
}

/// Score runs: (mean metrics, per query metrics).
pub fn score(
    runs: &BTreeMap<String, Vec<(String, f32)>>,
    qrels: &BTreeMap<String, Judgments>,
) -> (
    BTreeMap<String, f64>,
    BTreeMap<String, BTreeMap<String, f64>>,
) {
    let mut per_item = BTreeMap::new();
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let judged: Vec<(&String, &Judgments)> = qrels
        .iter()
        .filter(|(_, j)| j.values().any(|&g| g > 0))
        .collect();
    for (qid, j) in &judged {
        let empty = Vec::new();
        let run = runs.get(*qid).unwrap_or(&empty);
        // Ranks as trec_eval orders them, then positions as scores so `ranked` keeps them.
        let ranking = ranked(run);
        let mut m = BTreeMap::new();
        for name in METRICS {
            let v = by_name(name, &ranking, j).unwrap_or(0.0);
            *sums.entry(name.to_string()).or_default() += v;
            m.insert(name.to_string(), v);
        }
        per_item.insert((*qid).clone(), m);
    }
    let n = judged.len().max(1) as f64;
    (
        sums.into_iter().map(|(k, v)| (k, v / n)).collect(),
        per_item,
    )
}

/// Choose fusion settings on `train` by nDCG@10, over a fixed grid.
pub async fn tune_fusion<S: VectorStore>(
    searcher: Searcher<'_, S>,
    dataset: &BeirDataset,
    depth: usize,
) -> Result<(HybridConfig, f64), RetrievalEvalError> {
    let qrels = dataset.qrels("train")?;
    let queries: Vec<(String, String)> = qrels
        .keys()
        .map(|q| (q.clone(), dataset.queries[q].clone()))
        .collect();
    let base = searcher.settings().hybrid;
    let mut searcher = searcher;
    let mut best = (base, f64::MIN);
    for rrf_k in [10, 30, 60, 100] {
        for dense_weight in [0.5f32, 0.75, 1.0, 1.25, 1.5, 2.0] {
            let fusion = HybridConfig {
                rrf_k,
                dense_weight,
                ..base
            };
            searcher = searcher.with_hybrid(fusion);
            let runs = run_queries(&searcher, SearchMode::Hybrid, &queries, depth).await?;
            let ndcg = score(&runs, &qrels).0["ndcg@10"];
            tracing::info!(rrf_k, dense_weight, ndcg, "fusion candidate on train");
            if ndcg > best.1 {
                best = (fusion, ndcg);
            }
        }
    }
    Ok(best)
}

/// Run the suite on an already ingested collection and build the report.
pub async fn evaluate<S: VectorStore>(
    store: &S,
    embedder: &Embedder,
    dataset: &BeirDataset,
    options: &RetrievalEvalOptions,
    mut config: serde_json::Map<String, Value>,
) -> Result<(Report, BTreeMap<String, Vec<(String, f32)>>), RetrievalEvalError> {
    // Split problems surface before any searching.
    let mut qrels = dataset.qrels(&options.split)?;
    if let Some(n) = options.limit_queries {
        qrels = qrels.into_iter().take(n).collect();
    }
    let searcher = Searcher::open(store, embedder, &options.collection, &options.search).await?;
    if options.tune_fusion {
        let tuner = Searcher::open(store, embedder, &options.collection, &options.search).await?;
        let (best, train_ndcg) = tune_fusion(tuner, dataset, options.depth).await?;
        config.insert(
            "fusion_tuned_on_train".into(),
            json!({"rrf_k": best.rrf_k, "dense_weight": best.dense_weight, "ndcg@10": train_ndcg}),
        );
    }
    let queries: Vec<(String, String)> = qrels
        .keys()
        .map(|q| (q.clone(), dataset.queries[q].clone()))
        .collect();
    let runs = run_queries(&searcher, options.mode, &queries, options.depth).await?;
    let (metrics, per_item) = score(&runs, &qrels);
    config.insert("mode".into(), json!(options.mode));
    config.insert(
        "chunking".into(),
        json!(options
            .chunker
            .map(|c| json!({"max_tokens": c.max_tokens, "overlap_tokens": c.overlap_tokens}))),
    );
    config.insert("split".into(), json!(options.split));
    config.insert("queries".into(), json!(queries.len()));
    config.insert("model".into(), json!(embedder.model_id()));
    config.insert("backend".into(), json!(store.backend()));
    config.insert("collection".into(), json!(options.collection));
    config.insert("bm25_avg_len".into(), json!(searcher.spec().bm25_avg_len));
    if options.mode == SearchMode::Hybrid {
        let h = options.search.hybrid;
        config.insert("fusion".into(), json!({"method": "rrf", "k": h.rrf_k, "dense_weight": h.dense_weight, "bm25_weight": 1.0, "candidates": h.candidates}));
    }
    config.insert(
        "search".into(),
        json!(if options.search.exact {
            "exact"
        } else {
            "hnsw"
        }),
    );
    let dataset_name = dataset
        .dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((
        Report {
            suite: "retrieval".into(),
            dataset: dataset_name,
            config: Value::Object(config),
            metrics,
            per_item,
            details: Value::Null,
            extra: Default::default(),
        },
        runs,
    ))
}

/// Write runs in TREC format (`qid Q0 docid rank score tag`).
pub fn write_trec(
    path: &Path,
    runs: &BTreeMap<String, Vec<(String, f32)>>,
    tag: &str,
) -> std::io::Result<()> {
    let mut s = String::new();
    for (qid, run) in runs {
        for (rank, (doc, score)) in run.iter().enumerate() {
            s.push_str(&format!("{qid} Q0 {doc} {} {score} {tag}\n", rank + 1));
        }
    }
    std::fs::write(path, s)
}
