//! `signaldesk ingest`: content files into the vector store, idempotently and crash-safely.
//!
//! Stages, each bounded so memory stays flat however large the file:
//! read + validate (streaming, line by line) → change detection against the store → chunk →
//! embed (dense + BM25) → upsert. Embedding of batch n+1 overlaps the upsert of batch n through a
//! bounded channel (capacity 1: back pressure by construction).
//!
//! **Idempotence.** Point ids are derived from (content id, chunk index) and every chunk carries
//! its item's content hash (which includes the chunking settings). An item whose first chunk
//! already holds the same hash is unchanged and skipped; a changed item is re-embedded.
//!
//! **Crash safety.** For each batch the store first deletes the chunks that changed items no
//! longer have (index ≥ their new chunk count), then upserts all the batch's chunks as one
//! write-ahead-logged operation. A crash before the upsert leaves the old first chunk, whose hash
//! differs, so the re-run redoes the item; a crash after it leaves nothing to do. Either way a
//! re-run ends with exactly the right points.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{InputError, InputFile};
use crate::chunk::{ChunkError, Chunker};
use crate::content::{ContentItem, FieldError, Limits};
use crate::embed::bm25::Bm25Encoder;
use crate::embed::{EmbedError, Embedder};
use crate::ingest::jsonl::parse_object;
use crate::store::{ChunkPoint, CollectionSpec, StoreError, VectorStore};

/// Test hook: abort the process after this many acknowledged upsert batches.
pub const CRASH_HOOK_ENV: &str = "SIGNALDESK_TEST_CRASH_AFTER_BATCHES";

/// Errors that stop an ingest run (bad records do not: they go to the rejects file).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {message}", path.display())]
    Csv { path: PathBuf, message: String },
    #[error("embedding worker failed: {0}")]
    Worker(String),
    #[error("cannot write rejects file {}: {source}", path.display())]
    Rejects {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How to ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub collection: String,
    /// `None`: embed each item's text truncated at the model limit, as one chunk.
    pub chunker: Option<Chunker>,
    pub limits: Limits,
    /// Items per batch (embedded together, upserted as one operation).
    pub batch_items: usize,
    /// Where rejected lines go, one JSON object per line with the line number and the reason.
    pub rejects: Option<PathBuf>,
    pub max_line_bytes: usize,
}

impl IngestOptions {
    /// Options as configured (`ingest.*`, `chunk.*`), for `collection`, with `chunker` from
    /// [`crate::chunk::Chunker::from_config`]. Every path that ingests (the CLI, the evals, the
    /// pipeline) starts here, so what an eval measures is what `signaldesk ingest` builds.
    pub fn from_config(config: &crate::Config, collection: &str, chunker: Option<Chunker>) -> Self {
        Self {
            collection: collection.to_string(),
            chunker,
            limits: Limits {
                max_body_bytes: config.ingest.max_body_bytes,
            },
            batch_items: config.ingest.batch_items.max(1),
            rejects: None,
            max_line_bytes: config.ingest.max_line_bytes,
        }
    }

    /// Options as configured with the configured chunking for `embedder`: what the API's
    /// `POST /v1/content` and the stream workers ingest with.
    pub fn configured(config: &crate::Config, collection: &str, embedder: &Embedder) -> Self {
        let chunker = Chunker::from_config(&config.chunk, embedder.max_seq_length(), None);
        Self::from_config(config, collection, chunker)
    }
}

/// Counts at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestSummary {
    pub read: usize,
    pub new: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub rejected: usize,
    /// Records skipped because a later record in the same file has the same id (the last wins).
    pub duplicates: usize,
    pub chunks: usize,
    /// Model tokens embedded (after truncation, special tokens included).
    pub tokens: usize,
}

/// A validated record with its line number.
pub struct Record {
    pub line: usize,
    pub item: ContentItem,
}

/// A stream of records: `Ok(Ok(record))`, `Ok(Err((line, reason)))` for a rejected line, or an
/// error that stops reading.
pub type RecordStream =
    Box<dyn Iterator<Item = Result<Result<Record, (usize, String)>, IngestError>> + Send>;

/// Stream validated records from a `.jsonl`, `.jsonl.gz` or `.csv` file. Problems are passed to
/// `reject(line, reason)`; the iterator carries on.
pub fn read_records(
    path: &Path,
    limits: Limits,
    max_line_bytes: usize,
) -> Result<RecordStream, IngestError> {
    let name = path.to_string_lossy();
    if name.ends_with(".csv") || name.ends_with(".csv.gz") {
        let input = InputFile::open(path)?;
        let path_buf = path.to_path_buf();
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(input.into_reader());
        let headers = reader
            .headers()
            .map_err(|e| IngestError::Csv {
                path: path_buf.clone(),
                message: e.to_string(),
            })?
            .clone();
        let iter = reader.into_records().map(move |row| {
            let row = match row {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line() as usize);
                    return Ok(Err((line, format!("bad CSV row: {e}"))));
                }
            };
            let line = row.position().map_or(0, |p| p.line() as usize);
            let mut obj = Map::new();
            for (h, v) in headers.iter().zip(row.iter()) {
                if !v.is_empty() {
                    obj.insert(h.to_string(), Value::from(v));
                }
            }
            Ok(ContentItem::from_json(obj, limits)
                .map(|item| Record { line, item })
                .map_err(|e: FieldError| (line, e.to_string())))
        });
        return Ok(Box::new(iter));
    }
    let lines = InputFile::open(path)?.lines(max_line_bytes);
    Ok(Box::new(lines.filter_map(move |line| {
        let line = match line {
            Ok(l) => l,
            Err(e) => return Some(Err(IngestError::from(e))),
        };
        let n = line.number;
        let text = match line.content {
            Ok(t) if t.trim().is_empty() => return None,
            Ok(t) => t,
            Err(p) => return Some(Ok(Err((n, p.to_string())))),
        };
        Some(Ok(parse_object(&text)
            .map_err(|e| (n, e.to_string()))
            .and_then(|obj| ContentItem::from_json(obj, limits).map_err(|e| (n, e.to_string())))
            .map(|item| Record { line: n, item })))
    })))
}

/// The chunk payload stored with every point: the item's fields, then the chunk's own.
fn payload(
    item: &ContentItem,
    hash: &str,
    chunk_count: usize,
    start: usize,
    end: usize,
    text: &str,
) -> Map<String, Value> {
    let mut p = item.to_payload();
    p.insert("content_hash".into(), Value::from(hash));
    p.insert("chunk_count".into(), Value::from(chunk_count));
    p.insert("start".into(), Value::from(start));
    p.insert("end".into(), Value::from(end));
    p.insert("text".into(), Value::from(text));
    p
}

/// The spec of a new collection for `embedder`'s vectors (BM25 statistics start empty and grow
/// as chunks are written).
pub fn collection_spec(name: &str, embedder: &Embedder) -> CollectionSpec {
    CollectionSpec {
        name: name.to_string(),
        model_id: embedder.model_id().to_string(),
        model_fingerprint: embedder.fingerprint().to_string(),
        dimension: embedder.dimension(),
        bm25_avg_len: 0.0,
        bm25_chunks: 0,
        bm25_total_len: 0.0,
    }
}

/// The physical collection a new collection `name` is created as: `name-<first 12 hex digits of
/// the model fingerprint>`, behind the alias `name`. `reindex` builds the next one beside it and
/// then moves the alias in one atomic step, so `name` never points at nothing.
pub fn physical_name(name: &str, embedder: &Embedder) -> String {
    let fingerprint: String = embedder.fingerprint().chars().take(12).collect();
    format!("{name}-{fingerprint}")
}

/// Open `name` for writing `embedder`'s vectors: an existing collection (or alias) as it is; a
/// new one as [`physical_name`] behind the alias `name`. Each step is idempotent, so a run
/// interrupted between creating the collection and setting the alias is finished by the next.
pub async fn open_for_ingest<S: VectorStore>(
    store: &S,
    name: &str,
    embedder: &Embedder,
) -> Result<CollectionSpec, StoreError> {
    let exists = match store.count(name, &crate::store::Filter::default()).await {
        Ok(_) => true,
        Err(StoreError::NoCollection(_)) => false,
        Err(e) => return Err(e),
    };
    if exists {
        return store
            .open_collection(&collection_spec(name, embedder))
            .await;
    }
    let physical = physical_name(name, embedder);
    let spec = store
        .open_collection(&collection_spec(&physical, embedder))
        .await?;
    store.set_alias(name, &physical).await?;
    Ok(spec)
}

/// The line of the last record of each id in `path`: earlier records with the same id are
/// superseded before anything is compared or embedded, so one file never leaves two versions.
fn last_lines(path: &Path, options: &IngestOptions) -> Result<HashMap<String, usize>, IngestError> {
    let mut last = HashMap::new();
    for r in read_records(path, options.limits, options.max_line_bytes)? {
        if let Ok(rec) = r? {
            last.insert(rec.item.id, rec.line);
        }
    }
    Ok(last)
}

/// What an item's content hash covers besides the item: the model and the chunking settings, so
/// changing either re-embeds everything.
pub(crate) fn hash_salt(embedder: &Embedder, chunker: Option<Chunker>) -> String {
    format!(
        "{}|{:?}",
        embedder.fingerprint(),
        chunker.map(|c| (c.max_tokens, c.overlap_tokens))
    )
}

/// Payload keys that describe one chunk (rebuilt on every write); all others describe the item.
pub(crate) const CHUNK_KEYS: &[&str] = &[
    "content_hash",
    "chunk_count",
    "start",
    "end",
    "text",
    "chunk_index",
    "content_id",
];

/// One batch ready for the store.
pub(crate) struct Prepared {
    /// (content id, new chunk count) for items that existed before.
    pub(crate) stale: Vec<(String, usize)>,
    pub(crate) points: Vec<ChunkPoint>,
    pub(crate) tokens: usize,
    /// The collection's BM25 statistics once this batch is written.
    pub(crate) stats: Bm25Stats,
}

/// Ingest `path` into `store`. `on_reject` hears each rejected line; `on_progress(items)` is
/// called after each batch.
pub async fn ingest_file<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    path: &Path,
    options: &IngestOptions,
    mut on_reject: impl FnMut(usize, &str),
    mut on_progress: impl FnMut(usize),
) -> Result<IngestSummary, IngestError> {
    let last_line = last_lines(path, options)?;
    let rejects_path = options.rejects.clone().unwrap_or_default();
    let rejects_err = |source| IngestError::Rejects {
        path: rejects_path.clone(),
        source,
    };
    let mut rejects = match &options.rejects {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(rejects_err)?,
        )),
        None => None,
    };
    if last_line.is_empty() {
        // Nothing valid to ingest (an empty file, or every line rejected): report the rejects
        // and create nothing, so no empty collection is left behind.
        let mut summary = IngestSummary::default();
        for r in read_records(path, options.limits, options.max_line_bytes)? {
            if let Err((line, reason)) = r? {
                summary.read += 1;
                summary.rejected += 1;
                on_reject(line, &reason);
                write_reject(&mut rejects, path, line, &reason).map_err(rejects_err)?;
            }
        }
        if let Some(w) = rejects.as_mut() {
            w.flush().map_err(rejects_err)?;
        }
        return Ok(summary);
    }
    let mut spec = open_for_ingest(store, &options.collection, &embedder).await?;
    let mut stats = Bm25Stats::of(&spec);
    let salt = hash_salt(&embedder, options.chunker);
    let crash_after: Option<usize> = std::env::var(CRASH_HOOK_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let mut summary = IngestSummary::default();
    let mut records = read_records(path, options.limits, options.max_line_bytes)?;
    let mut batches_written = 0usize;
    // The batch embedded but not yet written: one in flight, so memory stays bounded.
    let mut in_flight: Option<Prepared> = None;
    loop {
        let mut batch: Vec<(ContentItem, String)> = Vec::with_capacity(options.batch_items);
        for r in records.by_ref() {
            match r? {
                Ok(rec) => {
                    summary.read += 1;
                    if last_line.get(&rec.item.id) != Some(&rec.line) {
                        summary.duplicates += 1;
                        continue;
                    }
                    let hash = rec.item.content_hash(&salt);
                    batch.push((rec.item, hash));
                }
                Err((line, reason)) => {
                    summary.read += 1;
                    summary.rejected += 1;
                    on_reject(line, &reason);
                    write_reject(&mut rejects, path, line, &reason).map_err(rejects_err)?;
                }
            }
            if batch.len() >= options.batch_items {
                break;
            }
        }
        if batch.is_empty() && in_flight.is_none() {
            break;
        }
        let (todo, existed) =
            detect_changes(store, &options.collection, batch, &mut summary).await?;
        // Embed this batch on a worker thread while the previous batch is written.
        let job = {
            let (embedder, chunker) = (embedder.clone(), options.chunker);
            tokio::task::spawn_blocking(move || prepare(&embedder, chunker, todo, &existed, stats))
        };
        if let Some(prev) = in_flight.take() {
            write_batch(store, &mut spec, prev).await?;
            batches_written += 1;
            if crash_after.is_some_and(|n| batches_written >= n) {
                eprintln!(
                    "{CRASH_HOOK_ENV}: aborting after {batches_written} acknowledged batches"
                );
                std::process::abort();
            }
        }
        let prepared = job
            .await
            .map_err(|e| IngestError::Worker(e.to_string()))??;
        summary.chunks += prepared.points.len();
        summary.tokens += prepared.tokens;
        stats = prepared.stats;
        on_progress(summary.read);
        in_flight = (!prepared.points.is_empty() || !prepared.stale.is_empty()).then_some(prepared);
    }
    if let Some(w) = rejects.as_mut() {
        w.flush().map_err(rejects_err)?;
    }
    // Index what was written (Edge has no background optimizers; a server needs nothing). Also
    // when nothing changed: a collection written by an older version gets its index that way,
    // and with nothing to do the optimizers only look at the segments.
    use tracing::Instrument;
    let span = tracing::info_span!("optimize", collection = %spec.name);
    store.optimize(&spec.name, false).instrument(span).await?;
    Ok(summary)
}

/// One line of the rejects file, if there is one: `{"file", "line", "reason"}`.
pub(crate) fn write_reject(
    rejects: &mut Option<impl Write>,
    path: &Path,
    line: usize,
    reason: &str,
) -> std::io::Result<()> {
    match rejects {
        Some(w) => writeln!(
            w,
            "{}",
            serde_json::json!({"file": path.display().to_string(), "line": line, "reason": reason})
        ),
        None => Ok(()),
    }
}

/// Split a batch into items to (re-)embed and count the unchanged ones. Returns the items to
/// embed and, for those already stored, their old chunk counts.
async fn detect_changes<S: VectorStore>(
    store: &S,
    collection: &str,
    batch: Vec<(ContentItem, String)>,
    summary: &mut IngestSummary,
) -> Result<(Vec<(ContentItem, String)>, Vec<(String, usize)>), IngestError> {
    if batch.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let keys: Vec<(String, usize)> = batch.iter().map(|(i, _)| (i.id.clone(), 0)).collect();
    let stored = store.get(collection, &keys).await?;
    let known: HashMap<&str, &Map<String, Value>> = stored
        .iter()
        .map(|c| (c.content_id.as_str(), &c.payload))
        .collect();
    // Ids are unique here: `ingest_file` keeps only the last record of each id.
    let mut todo = Vec::new();
    let mut existed = Vec::new();
    for (item, hash) in batch {
        match known.get(item.id.as_str()) {
            Some(p) if p.get("content_hash").and_then(Value::as_str) == Some(hash.as_str()) => {
                summary.unchanged += 1;
            }
            Some(p) => {
                summary.updated += 1;
                let old = p.get("chunk_count").and_then(Value::as_u64).unwrap_or(0) as usize;
                existed.push((item.id.clone(), old));
                todo.push((item, hash));
            }
            None => {
                summary.new += 1;
                todo.push((item, hash));
            }
        }
    }
    Ok((todo, existed))
}

/// Write a prepared batch into the collection of `spec`, then record the batch's BM25
/// statistics in the spec. A crash between the two leaves the statistics one batch behind: they
/// set a normalisation constant, so that costs a little precision, never a point.
pub(crate) async fn write_batch<S: VectorStore>(
    store: &S,
    spec: &mut CollectionSpec,
    batch: Prepared,
) -> Result<(), IngestError> {
    let _span = tracing::debug_span!("upsert", points = batch.points.len()).entered();
    // Stale chunks go first: see the module docs for why this order is crash-safe.
    for (id, new_count) in &batch.stale {
        store.delete_content(&spec.name, id, *new_count).await?;
    }
    store.upsert(&spec.name, batch.points).await?;
    if batch.stats != Bm25Stats::of(spec) {
        batch.stats.apply(spec);
        store.write_spec(spec).await?;
    }
    Ok(())
}

/// Running BM25 length statistics of a collection: every chunk written is counted in, and each
/// batch is encoded against the average including itself. So BM25's length normalisation always
/// uses a measured average (never a constant), the first ingest into an empty collection gets its
/// own data's average after one batch, and the same input gives the same vectors on every path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bm25Stats {
    pub chunks: u64,
    pub total_len: f64,
}

impl Bm25Stats {
    /// The statistics stored in a collection's spec.
    pub fn of(spec: &CollectionSpec) -> Self {
        Self {
            chunks: spec.bm25_chunks,
            total_len: spec.bm25_total_len,
        }
    }

    /// Record these statistics (and their average) in `spec`.
    pub fn apply(self, spec: &mut CollectionSpec) {
        spec.bm25_chunks = self.chunks;
        spec.bm25_total_len = self.total_len;
        spec.bm25_avg_len = self.avg_len();
    }

    /// Average chunk length (1 for an empty collection, where nothing is normalised yet).
    pub fn avg_len(self) -> f64 {
        if self.chunks == 0 {
            1.0
        } else {
            (self.total_len / self.chunks as f64).max(1.0)
        }
    }
}

/// Chunk, embed and BM25-encode a batch. `stats` are the collection's BM25 statistics before
/// the batch; the prepared batch carries them with the batch counted in.
pub(crate) fn prepare(
    embedder: &Embedder,
    chunker: Option<Chunker>,
    todo: Vec<(ContentItem, String)>,
    existed: &[(String, usize)],
    stats: Bm25Stats,
) -> Result<Prepared, IngestError> {
    let mut spans = Vec::new(); // (item index, start, end)
    let texts: Vec<String> = todo.iter().map(|(i, _)| i.text()).collect();
    for (i, text) in texts.iter().enumerate() {
        match chunker {
            Some(c) => {
                for s in c.chunk(embedder, text)? {
                    spans.push((i, s.start, s.end));
                }
            }
            None => spans.push((i, 0, text.len())),
        }
    }
    let chunk_texts: Vec<&str> = spans.iter().map(|&(i, s, e)| &texts[i][s..e]).collect();
    let tokens = embedder.token_counts(&chunk_texts)?.iter().sum::<usize>();
    let vectors = embedder.embed(&chunk_texts)?;
    // BM25 indexes each chunk with its item's title: a later chunk of an article is still about
    // what its title says (the first chunk already starts with it).
    let bm25_texts: Vec<std::borrow::Cow<str>> = spans
        .iter()
        .zip(&chunk_texts)
        .map(|(&(i, s, _), text)| {
            let title = todo[i].0.title.trim();
            if s > 0 && !title.is_empty() {
                std::borrow::Cow::Owned(format!("{title}\n{text}"))
            } else {
                std::borrow::Cow::Borrowed(*text)
            }
        })
        .collect();
    let lengths = Bm25Encoder::length_counter();
    let stats = Bm25Stats {
        chunks: stats.chunks + bm25_texts.len() as u64,
        total_len: stats.total_len
            + bm25_texts
                .iter()
                .map(|t| lengths.document_length(t))
                .sum::<f64>(),
    };
    let bm25 = Bm25Encoder::new(stats.avg_len());
    let mut counts = vec![0usize; todo.len()];
    for &(i, _, _) in &spans {
        counts[i] += 1;
    }
    let mut next_index = vec![0usize; todo.len()];
    let mut points = Vec::with_capacity(spans.len());
    for (((&(i, s, e), text), dense), bm25_text) in
        spans.iter().zip(&chunk_texts).zip(vectors).zip(&bm25_texts)
    {
        let (item, hash) = &todo[i];
        points.push(ChunkPoint {
            content_id: item.id.clone(),
            chunk_index: next_index[i],
            dense,
            bm25: bm25.document(bm25_text),
            payload: payload(item, hash, counts[i], s, e, text),
        });
        next_index[i] += 1;
    }
    let stale = existed
        .iter()
        .filter_map(|(id, old)| {
            let i = todo.iter().position(|(it, _)| &it.id == id)?;
            (counts[i] < *old).then(|| (id.clone(), counts[i]))
        })
        .collect();
    Ok(Prepared {
        stale,
        points,
        tokens,
        stats,
    })
}

/// What ingesting one item did: `new`, `updated` (re-embedded) or `unchanged` (same content
/// hash, nothing written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    New,
    Updated,
    Unchanged,
}

/// Ingest validated items held in memory (the API's `POST /v1/content`) exactly as
/// [`ingest_file`] ingests a file's records: the same change detection, chunking, embedding and
/// crash-safe write order. Ids must be unique (the caller keeps the last of each). Answers each
/// item's status in input order.
pub async fn ingest_items<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    items: Vec<ContentItem>,
    options: &IngestOptions,
) -> Result<Vec<ItemStatus>, IngestError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut spec = open_for_ingest(store, &options.collection, &embedder).await?;
    let salt = hash_salt(&embedder, options.chunker);
    let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    let mut statuses = HashMap::new();
    let mut wrote = false;
    let mut pending = items.into_iter().peekable();
    while pending.peek().is_some() {
        let batch: Vec<(ContentItem, String)> = pending
            .by_ref()
            .take(options.batch_items.max(1))
            .map(|item| {
                let hash = item.content_hash(&salt);
                (item, hash)
            })
            .collect();
        let mut counts = IngestSummary::default();
        let batch_ids: Vec<String> = batch.iter().map(|(i, _)| i.id.clone()).collect();
        let (todo, existed) =
            detect_changes(store, &options.collection, batch, &mut counts).await?;
        for id in batch_ids {
            statuses.insert(id, ItemStatus::Unchanged);
        }
        for (item, _) in &todo {
            statuses.insert(item.id.clone(), ItemStatus::New);
        }
        for (id, _) in &existed {
            statuses.insert(id.clone(), ItemStatus::Updated);
        }
        let stats = Bm25Stats::of(&spec);
        let prepared = {
            let (embedder, chunker) = (embedder.clone(), options.chunker);
            tokio::task::spawn_blocking(move || prepare(&embedder, chunker, todo, &existed, stats))
                .await
                .map_err(|e| IngestError::Worker(e.to_string()))??
        };
        if !prepared.points.is_empty() || !prepared.stale.is_empty() {
            write_batch(store, &mut spec, prepared).await?;
            wrote = true;
        }
    }
    if wrote {
        // As `ingest_file` does. Usually nothing to do: the optimizers act when the segment
        // being written outgrows the indexing threshold or segments need merging.
        store.optimize(&spec.name, false).await?;
    }
    Ok(ids.iter().map(|id| statuses[id]).collect())
}
