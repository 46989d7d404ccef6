//! The retrieval suite: a BEIR-layout dataset through the real ingest and search path.
//!
//! The corpus is ingested into a fresh collection (through [`crate::ingest::pipeline`], so the
//! eval measures what production runs), each query of the chosen qrels split is searched, and
//! results are scored per content item (a document's best chunk stands for it) with
//! [`super::metrics`]. Hybrid fusion settings are chosen on the `train` split only, then applied
//! to the evaluated split.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::metrics::{by_name, ranked, Judgments};
use super::Report;
use crate::chunk::Chunker;
use crate::content::Limits;
use crate::embed::bm25::Bm25Encoder;
use crate::embed::Embedder;
use crate::ingest::jsonl::parse_object;
use crate::ingest::pipeline::{ingest_file, IngestError, IngestOptions, IngestSummary};
use crate::ingest::InputFile;
use crate::store::{ChunkQuery, Filter, QueryVectors, StoreError, VectorStore};

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
}

/// Search mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Dense,
    Bm25,
    Hybrid,
}

impl Mode {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::Bm25 => "bm25",
            Self::Hybrid => "hybrid",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dense" => Ok(Self::Dense),
            "bm25" => Ok(Self::Bm25),
            "hybrid" => Ok(Self::Hybrid),
            _ => Err(format!("unknown mode {s:?} (dense, bm25 or hybrid)")),
        }
    }
}

/// Reciprocal rank fusion settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Fusion {
    pub rrf_k: usize,
    pub dense_weight: f32,
}

impl Default for Fusion {
    fn default() -> Self {
        Self {
            rrf_k: 60,
            dense_weight: 1.0,
        }
    }
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
    pub mode: Mode,
    pub chunker: Option<Chunker>,
    pub split: String,
    pub collection: String,
    /// Candidates per list for hybrid fusion, and results kept per query.
    pub depth: usize,
    /// Fusion settings; `None` chooses them on the train split.
    pub fusion: Option<Fusion>,
}

/// Ingest the corpus (into a fresh collection when `fresh`, else idempotently into the existing
/// one); returns the summary and the seconds it took.
pub async fn ingest_corpus<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    dataset: &BeirDataset,
    collection: &str,
    chunker: Option<Chunker>,
    fresh: bool,
) -> Result<(IngestSummary, f64), RetrievalEvalError> {
    if fresh {
        store.drop_collection(collection).await?;
    }
    let avg_len = average_bm25_length(&dataset.corpus)?;
    let options = IngestOptions {
        collection: collection.to_string(),
        chunker,
        limits: Limits {
            max_body_bytes: 64 << 20,
        },
        batch_items: 256,
        rejects: None,
        max_line_bytes: 64 << 20,
        bm25_avg_len: avg_len,
    };
    let started = std::time::Instant::now();
    let summary = ingest_file(
        store,
        embedder,
        &dataset.corpus,
        &options,
        |_, _| {},
        |_| {},
    )
    .await?;
    Ok((summary, started.elapsed().as_secs_f64()))
}

/// Average BM25 document length over a corpus file, for the collection's BM25 normalisation.
fn average_bm25_length(corpus: &Path) -> Result<f64, RetrievalEvalError> {
    let enc = Bm25Encoder::new(256.0);
    let (mut total, mut n) = (0f64, 0usize);
    for rec in crate::ingest::pipeline::read_records(
        corpus,
        Limits {
            max_body_bytes: 64 << 20,
        },
        64 << 20,
    )? {
        if let Ok(r) = rec? {
            total += enc.document_length(&r.item.text());
            n += 1;
        }
    }
    Ok(if n == 0 { 256.0 } else { total / n as f64 })
}

/// How queries are run.
#[derive(Debug, Clone, Copy)]
pub struct SearchSettings {
    pub mode: Mode,
    pub fusion: Fusion,
    /// Items kept per query.
    pub depth: usize,
    /// Whether items are stored as several chunks (more chunks are fetched to fill `depth`).
    pub chunked: bool,
}

/// Ranked content ids per query: best chunk per item, at most `depth` items.
pub async fn run_queries<S: VectorStore>(
    store: &S,
    embedder: &Embedder,
    collection: &str,
    queries: &[(String, String)],
    settings: SearchSettings,
) -> Result<BTreeMap<String, Vec<(String, f32)>>, RetrievalEvalError> {
    let SearchSettings {
        mode,
        fusion,
        depth,
        chunked,
    } = settings;
    let spec = store
        .collection_spec(collection)
        .await?
        .ok_or_else(|| StoreError::NoCollection(collection.to_string()))?;
    let bm25 = Bm25Encoder::new(spec.bm25_avg_len);
    let texts: Vec<&str> = queries.iter().map(|(_, t)| t.as_str()).collect();
    let dense = if mode == Mode::Bm25 {
        vec![Vec::new(); texts.len()]
    } else {
        embedder.embed(&texts)?
    };
    // With chunking, fetch more chunks so that `depth` distinct items survive deduplication.
    let chunk_limit = if chunked { depth * 4 } else { depth };
    let mut out = BTreeMap::new();
    for ((qid, text), dv) in queries.iter().zip(dense) {
        let vectors = match mode {
            Mode::Dense => QueryVectors::Dense(dv),
            Mode::Bm25 => QueryVectors::Sparse(bm25.query(text)),
            Mode::Hybrid => QueryVectors::Hybrid {
                dense: dv,
                sparse: bm25.query(text),
                rrf_k: fusion.rrf_k,
                dense_weight: fusion.dense_weight,
                candidates: chunk_limit,
            },
        };
        let hits = store
            .query(
                collection,
                &ChunkQuery {
                    vectors,
                    filter: Filter::default(),
                    limit: chunk_limit,
                    exact: true,
                },
            )
            .await?;
        let mut best: Vec<(String, f32)> = Vec::new();
        for h in hits {
            if !best.iter().any(|(d, _)| *d == h.chunk.content_id) {
                best.push((h.chunk.content_id, h.score));
            }
            if best.len() >= depth {
                break;
            }
        }
        out.insert(qid.clone(), best);
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

/// Choose fusion settings on `train` by nDCG@10.
pub async fn tune_fusion<S: VectorStore>(
    store: &S,
    embedder: &Embedder,
    dataset: &BeirDataset,
    collection: &str,
    depth: usize,
    chunked: bool,
) -> Result<(Fusion, f64), RetrievalEvalError> {
    let qrels = dataset.qrels("train")?;
    let queries: Vec<(String, String)> = qrels
        .keys()
        .map(|q| (q.clone(), dataset.queries[q].clone()))
        .collect();
    let mut best = (Fusion::default(), f64::MIN);
    for rrf_k in [10, 30, 60, 100] {
        for dense_weight in [0.5f32, 0.75, 1.0, 1.25, 1.5, 2.0] {
            let fusion = Fusion {
                rrf_k,
                dense_weight,
            };
            let runs = run_queries(
                store,
                embedder,
                collection,
                &queries,
                SearchSettings {
                    mode: Mode::Hybrid,
                    fusion,
                    depth,
                    chunked,
                },
            )
            .await?;
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
    let chunked = options.chunker.is_some();
    let fusion = match (options.mode, options.fusion) {
        (Mode::Hybrid, None) => {
            let (f, train_ndcg) = tune_fusion(
                store,
                embedder,
                dataset,
                &options.collection,
                options.depth,
                chunked,
            )
            .await?;
            config.insert("fusion_chosen_on".into(), json!("train"));
            config.insert("fusion_train_ndcg@10".into(), json!(train_ndcg));
            f
        }
        (_, f) => f.unwrap_or_default(),
    };
    let qrels = dataset.qrels(&options.split)?;
    let queries: Vec<(String, String)> = qrels
        .keys()
        .map(|q| (q.clone(), dataset.queries[q].clone()))
        .collect();
    let runs = run_queries(
        store,
        embedder,
        &options.collection,
        &queries,
        SearchSettings {
            mode: options.mode,
            fusion,
            depth: options.depth,
            chunked,
        },
    )
    .await?;
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
    if options.mode == Mode::Hybrid {
        config.insert("fusion".into(), json!({"method": "rrf", "k": fusion.rrf_k, "dense_weight": fusion.dense_weight, "bm25_weight": 1.0}));
    }
    config.insert("search".into(), json!("exact"));
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
