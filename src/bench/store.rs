//! `signaldesk bench store`: the vector store's scale curve.
//!
//! Points are synthetic but shaped like real embeddings: each is one of the base vectors (real
//! model output, read from JSONL files such as `signaldesk embed` writes) plus Gaussian noise,
//! renormalised. No model runs, so a million points cost seconds to make, and every point and
//! query is a pure function of (seed, index): the same collection is rebuilt for each backend
//! and quantization without holding it in memory. Queries are fresh noisy copies of random base
//! vectors (never stored points). The exact top-k of every query is computed here, by brute
//! force over the same points, once per size; recall@k is the share of it the store's indexed
//! (HNSW) search returns.
//!
//! Each run goes through the same [`VectorStore`] a user's ingest and search use, with the
//! collection layout the configuration gives (`store.*`, `search.hnsw_ef`, `search.oversampling`): points are upserted
//! in batches (timed: throughput), indexed ([`VectorStore::optimize`], timed), then queried one
//! at a time (a warm-up pass, then a timed pass: p50/p99).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ingest::jsonl::parse_object;
use crate::ingest::{InputError, InputFile};
use crate::observe::nearest_rank;
use crate::store::{
    ChunkPoint, ChunkQuery, CollectionSpec, Filter, QueryVectors, StoreError, VectorStore,
};

/// Errors of the store benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchStoreError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{path}: line {line}: {reason}")]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}: no vectors")]
    NoVectors(PathBuf),
    #[error("base vectors differ in dimension: {0} and {1}")]
    Dimension(usize, usize),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("exact search: {0}")]
    Exact(#[from] candle_core::Error),
    #[error("the store returned {0:?}, which is not a benchmark point")]
    Foreign(String),
}

/// Read the base vectors: every line's `"vector"` array, each normalised to unit length.
pub fn read_base(paths: &[PathBuf]) -> Result<Vec<Vec<f32>>, BenchStoreError> {
    let mut base: Vec<Vec<f32>> = Vec::new();
    for path in paths {
        let before = base.len();
        let bad = |line: usize, reason: String| BenchStoreError::BadLine {
            path: path.clone(),
            line,
            reason,
        };
        for (n, line) in InputFile::open(path)?
            .lines(crate::ingest::embed_file::DEFAULT_MAX_LINE_BYTES)
            .enumerate()
        {
            let text = line?.content.map_err(|e| bad(n + 1, e.to_string()))?;
            if text.trim().is_empty() {
                continue;
            }
            let object = parse_object(&text).map_err(|e| bad(n + 1, e.to_string()))?;
            let vector: Vec<f32> = object
                .get("vector")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(n + 1, "no \"vector\" array".into()))?
                .iter()
                .map(|x| x.as_f64().map(|x| x as f32))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(n + 1, "\"vector\" holds a non-number".into()))?;
            if let Some(first) = base.first() {
                if first.len() != vector.len() {
                    return Err(BenchStoreError::Dimension(first.len(), vector.len()));
                }
            }
            base.push(normalised(vector));
        }
        if base.len() == before {
            return Err(BenchStoreError::NoVectors(path.clone()));
        }
    }
    Ok(base)
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// How the synthetic points and queries are made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Synthetic {
    /// Real vectors copied.
    #[serde(skip)]
    pub base: Vec<Vec<f32>>,
    /// Standard deviation of the noise added to each coordinate (before renormalising).
    pub noise: f32,
    pub seed: u64,
}

/// Queries live at the far end of the index space, so they never coincide with a point.
const QUERY_OFFSET: u64 = 1 << 62;

impl Synthetic {
    /// Point `index`: a random base vector (chosen by the index's own generator) plus noise.
    pub fn point(&self, index: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let base = &self.base[rng.random_range(0..self.base.len())];
        normalised(
            base.iter()
                .map(|x| x + self.noise * rng.sample::<f32, _>(StandardNormal))
                .collect(),
        )
    }

    /// Query `n` (a point that is never stored).
    pub fn query(&self, n: usize) -> Vec<f32> {
        self.point(QUERY_OFFSET + n as u64)
    }

    pub fn dimension(&self) -> usize {
        self.base.first().map_or(0, Vec::len)
    }
}

/// The exact top-`k` point indexes of each query among points `0..size`, for each of `sizes`
/// (ascending): one brute-force pass over the largest, snapshotted at each size.
pub fn exact_top_k(
    synthetic: &Synthetic,
    queries: &[Vec<f32>],
    sizes: &[usize],
    k: usize,
    mut on_progress: impl FnMut(usize),
) -> Result<Vec<Vec<Vec<u64>>>, BenchStoreError> {
    const BLOCK: usize = 4096;
    let dim = synthetic.dimension();
    let flat: Vec<f32> = queries.iter().flatten().copied().collect();
    let q = Tensor::from_vec(flat, (queries.len(), dim), &Device::Cpu)?;
    // Per query, the best (score, index) so far, best first.
    let mut best: Vec<Vec<(f32, u64)>> = vec![Vec::with_capacity(k + 1); queries.len()];
    let mut out = Vec::new();
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    let mut start = 0usize;
    for &size in &sizes {
        while start < size {
            let end = (start + BLOCK).min(size);
            let block: Vec<f32> = (start..end)
                .flat_map(|i| synthetic.point(i as u64))
                .collect();
            let p = Tensor::from_vec(block, (end - start, dim), &Device::Cpu)?;
            let scores = q.matmul(&p.t()?)?.to_vec2::<f32>()?;
            for (top, row) in best.iter_mut().zip(&scores) {
                for (j, &s) in row.iter().enumerate() {
                    if top.len() == k && s <= top[k - 1].0 {
                        continue;
                    }
                    let at = top.partition_point(|&(t, _)| t >= s);
                    top.insert(at, (s, (start + j) as u64));
                    top.truncate(k);
                }
            }
            start = end;
            on_progress(start);
        }
        out.push(
            best.iter()
                .map(|top| top.iter().map(|&(_, i)| i).collect())
                .collect(),
        );
    }
    Ok(out)
}

/// One measured configuration: a row of the scale table. Field names are the JSON contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleRow {
    /// `qdrant-edge` or `qdrant`.
    pub backend: String,
    /// `none` or `int8`.
    pub quantization: String,
    pub points: usize,
    /// Dense vector dimension.
    pub dimension: usize,
    /// Search-time HNSW candidates (`None`: the store's default).
    pub hnsw_ef: Option<usize>,
    /// Quantized candidates per result, rescored (`None`: the store's default).
    #[serde(default)]
    pub oversampling: Option<f64>,
    pub upsert_s: f64,
    pub upsert_points_per_s: f64,
    /// Time for the store to finish indexing after the last write.
    pub index_s: f64,
    pub queries: usize,
    pub k: usize,
    pub search_p50_ms: f64,
    pub search_p99_ms: f64,
    /// Mean share of the exact top-k that the indexed search returned.
    pub recall: f64,
    /// Resident memory of the process holding the collection after the searches (anonymous:
    /// what it needs; file-backed: memory-mapped storage pages, which the kernel may evict).
    /// For Edge that is this process less what it held before the store was opened.
    pub rss_anon_bytes: Option<u64>,
    pub rss_file_bytes: Option<u64>,
    /// Bytes on disk of the collection's storage (allocated blocks).
    pub disk_bytes: Option<u64>,
}

/// Where the store's memory and disk are measured.
#[derive(Debug, Clone)]
pub enum Footprint {
    /// In this process; the collection's directory is `root/<collection>`.
    InProcess { root: PathBuf, baseline: Rss },
    /// A server process and its storage directory (`<storage>/collections/<collection>`); each
    /// optional.
    Server {
        pid: Option<u32>,
        storage: Option<PathBuf>,
    },
}

/// Resident set of a process, from `/proc/PID/status` (Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub anon: u64,
    pub file: u64,
}

impl Rss {
    /// `pid` = `None`: this process. `None` where `/proc` cannot say.
    pub fn of(pid: Option<u32>) -> Option<Self> {
        let path = match pid {
            Some(p) => format!("/proc/{p}/status"),
            None => "/proc/self/status".to_string(),
        };
        let status = std::fs::read_to_string(path).ok()?;
        let field = |name: &str| {
            status.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .map(|kb| kb * 1024)
            })
        };
        Some(Self {
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
        })
    }
}

/// Allocated bytes of every file under `dir` (sparse and preallocated files count what they use).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Search-time settings of one pass (`None`: the store's default), as `search.hnsw_ef` and
/// `search.oversampling` set them for users.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSetting {
    pub hnsw_ef: Option<usize>,
    pub oversampling: Option<f64>,
}

/// One configuration of the curve.
pub struct ScaleRun<'a> {
    pub synthetic: &'a Synthetic,
    pub queries: &'a [Vec<f32>],
    /// The exact top-k of each query at this size.
    pub truth: &'a [Vec<u64>],
    pub points: usize,
    pub k: usize,
    /// Search settings measured on the one collection built, a row each.
    pub settings: &'a [SearchSetting],
    pub quantization: &'a str,
    /// Points per upsert call.
    pub batch: usize,
    pub footprint: &'a Footprint,
}

impl ScaleRun<'_> {
    /// Build the collection `name` (replacing one left by an earlier run), measure it with each
    /// search setting (a row each; build figures shared), and drop it unless `keep`.
    pub async fn measure<S: VectorStore>(
        &self,
        store: &S,
        name: &str,
        keep: bool,
        mut on_progress: impl FnMut(&str, usize),
    ) -> Result<Vec<ScaleRow>, BenchStoreError> {
        let dimension = self.synthetic.dimension();
        if store.collection_spec(name).await?.is_some() {
            store.drop_collection(name).await?;
        }
        store
            .open_collection(&CollectionSpec {
                name: name.to_string(),
                model_id: "synthetic".into(),
                model_fingerprint: "synthetic".into(),
                dimension,
                bm25_avg_len: 1.0,
                bm25_chunks: 0,
                bm25_total_len: 0.0,
            })
            .await?;
        // Only the upsert calls are timed, not making the points.
        let mut upsert_s = 0.0;
        let mut done = 0usize;
        while done < self.points {
            let end = (done + self.batch).min(self.points);
            let points = (done..end)
                .map(|i| ChunkPoint {
                    content_id: format!("p{i}"),
                    chunk_index: 0,
                    dense: self.synthetic.point(i as u64),
                    bm25: Default::default(),
                    payload: Map::new(),
                })
                .collect();
            let started = Instant::now();
            store.upsert(name, points).await?;
            upsert_s += started.elapsed().as_secs_f64();
            done = end;
            on_progress("upsert", done);
        }
        on_progress("index", 0);
        let started = Instant::now();
        store.optimize(name, true).await?;
        let index_s = started.elapsed().as_secs_f64();

        let mut rows = Vec::new();
        for &setting in self.settings {
            rows.push(
                self.search(store, name, setting, &mut on_progress)
                    .await
                    .map(|(p50, p99, recall)| ScaleRow {
                        backend: store.backend().to_string(),
                        quantization: self.quantization.to_string(),
                        points: self.points,
                        dimension,
                        hnsw_ef: setting.hnsw_ef,
                        oversampling: setting.oversampling,
                        upsert_s,
                        upsert_points_per_s: self.points as f64 / upsert_s.max(1e-9),
                        index_s,
                        queries: self.queries.len(),
                        k: self.k,
                        search_p50_ms: p50,
                        search_p99_ms: p99,
                        recall,
                        rss_anon_bytes: None,
                        rss_file_bytes: None,
                        disk_bytes: None,
                    })?,
            );
        }
        let (rss, disk) = match self.footprint {
            Footprint::InProcess { root, baseline } => (
                Rss::of(None).map(|now| Rss {
                    anon: now.anon.saturating_sub(baseline.anon),
                    file: now.file.saturating_sub(baseline.file),
                }),
                Some(disk_usage(&root.join(store.resolve(name).await?))),
            ),
            Footprint::Server { pid, storage } => (
                pid.and_then(|p| Rss::of(Some(p))),
                storage
                    .as_ref()
                    .map(|s| disk_usage(&s.join("collections").join(name))),
            ),
        };
        for row in &mut rows {
            row.rss_anon_bytes = rss.map(|r| r.anon);
            row.rss_file_bytes = rss.map(|r| r.file);
            row.disk_bytes = disk;
        }
        if !keep {
            store.drop_collection(name).await?;
        }
        Ok(rows)
    }

    /// A warm-up pass, then a timed pass of every query: (p50 ms, p99 ms, mean recall@k).
    async fn search<S: VectorStore>(
        &self,
        store: &S,
        name: &str,
        setting: SearchSetting,
        on_progress: &mut impl FnMut(&str, usize),
    ) -> Result<(f64, f64, f64), BenchStoreError> {
        let query = |vector: &Vec<f32>| ChunkQuery {
            vectors: QueryVectors::Dense(vector.clone()),
            filter: Filter::default(),
            limit: self.k,
            exact: false,
            hnsw_ef: setting.hnsw_ef,
            oversampling: setting.oversampling,
            payload_fields: None,
        };
        for v in self.queries {
            store.query(name, &query(v)).await?;
        }
        let mut latencies = Vec::with_capacity(self.queries.len());
        let mut recall = 0.0;
        for (n, (v, truth)) in self.queries.iter().zip(self.truth).enumerate() {
            let started = Instant::now();
            let hits = store.query(name, &query(v)).await?;
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
            let mut found = 0usize;
            for hit in &hits {
                let id = &hit.chunk.content_id;
                let index: u64 = id
                    .strip_prefix('p')
                    .and_then(|i| i.parse().ok())
                    .ok_or_else(|| BenchStoreError::Foreign(id.clone()))?;
                found += usize::from(truth.contains(&index));
            }
            recall += found as f64 / truth.len().max(1) as f64;
            on_progress("search", n + 1);
        }
        latencies.sort_by(f64::total_cmp);
        Ok((
            nearest_rank(&latencies, 0.50),
            nearest_rank(&latencies, 0.99),
            recall / self.queries.len().max(1) as f64,
        ))
    }
}

impl ScaleRow {
    /// The search settings in words, e.g. `oversampling 2` or `ef 128, oversampling 1`.
    pub fn settings(&self) -> String {
        let mut parts = Vec::new();
        if let Some(ef) = self.hnsw_ef {
            parts.push(format!("ef {ef}"));
        }
        // `None` is Qdrant's own default, 1 (rescoring only the k found).
        parts.push(format!("oversampling {}", self.oversampling.unwrap_or(1.0)));
        parts.join(", ")
    }
}

/// Rows as a JSONL file holds them (one per line, as `bench store --output` appends them).
pub fn read_rows(path: &Path) -> Result<Vec<ScaleRow>, BenchStoreError> {
    let bad = |line: usize, reason: String| BenchStoreError::BadLine {
        path: path.to_path_buf(),
        line,
        reason,
    };
    std::fs::read_to_string(path)
        .map_err(|e| bad(0, e.to_string()))?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| serde_json::from_str(l).map_err(|e| bad(n + 1, e.to_string())))
        .collect()
}

/// The plot's lines: one per backend, quantization and search setting, points in size order.
pub fn scale_series(rows: &[ScaleRow]) -> Vec<crate::eval::plot::ScaleSeries> {
    let mut series: Vec<crate::eval::plot::ScaleSeries> = Vec::new();
    for r in rows {
        let name = format!("{} {} ({})", r.backend, r.quantization, r.settings());
        let point = (r.points as f64, r.search_p99_ms, r.recall);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, points)) => points.push(point),
            None => series.push((name, vec![point])),
        }
    }
    for (_, points) in &mut series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

/// The scale table as Markdown, rows in the given order. RSS is the process's total (anonymous
/// + file-backed), split after it.
pub fn markdown_table(rows: &[ScaleRow]) -> String {
    let mib = |b: Option<u64>| {
        b.map_or("–".to_string(), |b| {
            format!("{:.0}", b as f64 / 1048576.0)
        })
    };
    let mut out = String::from(
        "| backend | quantization | search | points | upsert points/s | index s | p50 ms | p99 ms | recall@k | RSS MiB (anon + file) | disk MiB |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let rss = match (r.rss_anon_bytes, r.rss_file_bytes) {
            (Some(a), Some(f)) => {
                format!("{} ({} + {})", mib(Some(a + f)), mib(Some(a)), mib(Some(f)))
            }
            _ => "–".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.4} | {} | {} |\n",
            r.backend,
            r.quantization,
            r.settings(),
            r.points,
            r.upsert_points_per_s,
            r.index_s,
            r.search_p50_ms,
            r.search_p99_ms,
            r.recall,
            rss,
            mib(r.disk_bytes),
        ));
    }
    out
}

/// What a scale-curve run measures: `signaldesk bench store`'s options, one definition for the
/// command line and the library.
#[derive(Debug, Clone, clap::Args)]
pub struct CurveOptions {
    /// JSONL files whose "vector" arrays are the shapes copied (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub base: Vec<PathBuf>,
    /// Collection sizes in points (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub sizes: Vec<usize>,
    /// Quantizations to measure (comma-separated); overrides store.quantization.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "none,int8")]
    pub quantization: Vec<crate::config::Quantization>,
    /// Queries timed per configuration (and as many warm-up queries before them).
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Results per query; recall is measured at k.
    #[arg(long, short, default_value_t = 10)]
    pub k: usize,
    /// Standard deviation of the noise added to each coordinate before renormalising.
    #[arg(long, default_value_t = 0.02)]
    pub noise: f32,
    /// Seed of the synthetic points and queries.
    #[arg(long, default_value_t = 20261201)]
    pub seed: u64,
    /// Points per upsert call.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Pid of the Qdrant server, whose resident memory is then reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's storage directory, whose collection size is then reported.
    #[arg(long)]
    pub server_storage: Option<PathBuf>,
    /// Append each row as a JSON line to this file.
    #[arg(long = "output", id = "output")]
    pub rows_file: Option<PathBuf>,
    /// Keep the collections instead of dropping them.
    #[arg(long)]
    pub keep: bool,
    /// Search passes with these search.hnsw_ef values (comma-separated; 0: the store's
    /// default) on each collection built, instead of the configured one.
    #[arg(long, value_delimiter = ',')]
    pub hnsw_ef: Vec<usize>,
    /// Search passes with these search.oversampling values (comma-separated; 0: the
    /// store's default), combined with each --hnsw-ef.
    #[arg(long, value_delimiter = ',')]
    pub oversampling: Vec<f64>,
}

/// What a scale-curve run reports as it goes, for progress lines.
#[derive(Debug)]
pub enum CurveEvent<'a> {
    /// The base vectors are read.
    Base { vectors: usize, dimension: usize },
    /// Exact top-k computed over this many points.
    Exact { done: usize, total: usize },
    /// A configuration (`label`: backend, size, quantization) is in `stage`, `done` points in.
    Stage {
        label: &'a str,
        stage: &'a str,
        done: usize,
        total: usize,
    },
    /// One row measured.
    Row { label: &'a str, row: &'a ScaleRow },
}

/// Why a scale-curve run cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CurveError {
    #[error("{0}")]
    Options(&'static str),
    #[error(transparent)]
    Bench(#[from] BenchStoreError),
    #[error("{path}: {source}")]
    Rows {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The search settings a curve measures: the configured ones, or each combination of the lists
/// given (0: the store's default).
fn curve_settings(config: &crate::Config, options: &CurveOptions) -> Vec<SearchSetting> {
    let efs = if options.hnsw_ef.is_empty() {
        vec![config.search.hnsw_ef]
    } else {
        options.hnsw_ef.clone()
    };
    let overs = if options.oversampling.is_empty() {
        vec![config.search.oversampling]
    } else {
        options.oversampling.clone()
    };
    efs.iter()
        .flat_map(|&ef| {
            overs.iter().map(move |&o| SearchSetting {
                hnsw_ef: (ef > 0).then_some(ef),
                oversampling: (o > 0.0).then_some(o),
            })
        })
        .collect()
}

/// The file rows are appended to as they are measured (JSON lines).
struct RowsFile {
    file: std::fs::File,
    path: PathBuf,
}

impl RowsFile {
    fn open(path: &Path) -> Result<Self, CurveError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| CurveError::Rows {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    fn append(&mut self, row: &ScaleRow) -> Result<(), CurveError> {
        use std::io::Write;
        let line = serde_json::to_string(row).unwrap_or_default();
        writeln!(self.file, "{line}").map_err(|source| CurveError::Rows {
            path: self.path.clone(),
            source,
        })
    }
}

/// Measure the store's scale curve: for each quantization and size, build the collection in the
/// configured store (Edge under `data_dir/bench`), index it and query it (see [`ScaleRun`]).
pub async fn scale_curve(
    config: &crate::Config,
    options: &CurveOptions,
    mut on_event: impl FnMut(CurveEvent<'_>),
) -> Result<Vec<ScaleRow>, CurveError> {
    let k = options.k;
    if k == 0 || options.queries == 0 || options.batch == 0 {
        return Err(CurveError::Options(
            "--k, --queries and --batch must be > 0",
        ));
    }
    let mut sizes = options.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.first().is_none_or(|&s| s < k) {
        return Err(CurveError::Options("every size must be at least --k"));
    }
    let settings = curve_settings(config, options);
    if settings
        .iter()
        .any(|s| s.oversampling.is_some_and(|o| o < 1.0))
    {
        return Err(CurveError::Options(
            "--oversampling values are 0 (the store's default) or >= 1",
        ));
    }
    // Opened before the long runs, so a bad path fails at once; each row is appended as measured.
    let mut rows_file = options
        .rows_file
        .as_deref()
        .map(RowsFile::open)
        .transpose()?;
    let synthetic = Synthetic {
        base: read_base(&options.base)?,
        noise: options.noise,
        seed: options.seed,
    };
    on_event(CurveEvent::Base {
        vectors: synthetic.base.len(),
        dimension: synthetic.dimension(),
    });
    let query_vectors: Vec<Vec<f32>> = (0..options.queries).map(|n| synthetic.query(n)).collect();
    let largest = *sizes.last().unwrap_or(&0);
    let truth = exact_top_k(&synthetic, &query_vectors, &sizes, k, |done| {
        on_event(CurveEvent::Exact {
            done,
            total: largest,
        })
    })?;
    let edge_root = config.data_dir.join("bench");
    let baseline = Rss::of(None).unwrap_or_default();
    let mut rows = Vec::new();
    for &q in &options.quantization {
        let mut store_config = config.store.clone();
        store_config.quantization = q;
        let store = crate::store::AnyStore::from_config(&store_config, &edge_root)
            .map_err(BenchStoreError::from)?;
        let footprint = match store {
            crate::store::AnyStore::Edge(_) => Footprint::InProcess {
                root: edge_root.clone(),
                baseline,
            },
            crate::store::AnyStore::Qdrant(_) => Footprint::Server {
                pid: options.server_pid,
                storage: options.server_storage.clone(),
            },
        };
        let q_name = serde_json::to_value(q)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "none".into());
        for (&points, truth) in sizes.iter().zip(&truth) {
            let run = ScaleRun {
                synthetic: &synthetic,
                queries: &query_vectors,
                truth,
                points,
                k,
                settings: &settings,
                quantization: &q_name,
                batch: options.batch,
                footprint: &footprint,
            };
            let label = format!("{} {points} {q_name}", store.backend());
            let name = format!("bench-scale-{points}-{q_name}");
            let measured = run
                .measure(&store, &name, options.keep, |stage, done| {
                    on_event(CurveEvent::Stage {
                        label: &label,
                        stage,
                        done,
                        total: points,
                    })
                })
                .await?;
            for row in measured {
                on_event(CurveEvent::Row {
                    label: &label,
                    row: &row,
                });
                if let Some(file) = &mut rows_file {
                    file.append(&row)?;
                }
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic() -> Synthetic {
        Synthetic {
            base: vec![
                normalised(vec![1.0, 0.0, 0.0]),
                normalised(vec![0.0, 1.0, 1.0]),
            ],
            noise: 0.05,
            seed: 7,
        }
    }

    #[test]
    fn points_are_deterministic_unit_vectors_near_a_base_vector() {
        let s = synthetic();
        let p = s.point(12);
        assert_eq!(p, s.point(12));
        assert_ne!(p, s.point(13));
        let norm: f32 = p.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let best = s
            .base
            .iter()
            .map(|b| b.iter().zip(&p).map(|(a, b)| a * b).sum::<f32>())
            .fold(f32::MIN, f32::max);
        assert!(best > 0.9, "cosine to its base vector {best}");
    }

    #[test]
    fn exact_top_k_agrees_with_sorting_every_score() {
        let s = synthetic();
        let queries: Vec<Vec<f32>> = (0..5).map(|n| s.query(n)).collect();
        let truth = exact_top_k(&s, &queries, &[50, 9000], 4, |_| {}).unwrap();
        for (size, per_query) in [50usize, 9000].iter().zip(&truth) {
            for (q, top) in queries.iter().zip(per_query) {
                let dot = |i: u64| s.point(i).iter().zip(q).map(|(a, b)| a * b).sum::<f32>();
                let mut all: Vec<f32> = (0..*size as u64).map(dot).collect();
                all.sort_by(|a, b| b.total_cmp(a));
                // Scores decide, not indexes: near-ties may come in either order.
                assert_eq!(top.len(), 4);
                for (rank, &i) in top.iter().enumerate() {
                    assert!((dot(i) - all[rank]).abs() < 1e-5, "size {size} rank {rank}");
                    assert!(i < *size as u64);
                }
            }
        }
    }

    #[test]
    fn base_files_name_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.jsonl");
        std::fs::write(&path, "{\"vector\": [1, 0]}\n{\"vector\": [1, \"x\"]}\n").unwrap();
        let e = read_base(&[path]).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("non-number"), "{e}");
    }
}
