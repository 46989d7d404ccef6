//! Vector storage: one trait, two real backends.
//!
//! - [`EdgeStore`]: Qdrant Edge, Qdrant's own engine in process, persistent and WAL-backed under
//!   the data dir. The default: nothing to run, works offline.
//! - `QdrantStore`: a Qdrant server over gRPC (`qdrant-client`), for production.
//!
//! Both store the same points: one per chunk, with a named dense vector (`dense`, cosine) and a
//! named sparse BM25 vector (`bm25`, IDF modifier), and the same payload. Point ids are UUIDv5 of
//! (content id, chunk index), so writing an item twice overwrites it instead of duplicating it.
//! Each collection also holds one metadata point recording the embedding model and dimension;
//! opening a collection with a different model is refused, so vectors are never mixed.
//!
//! Collection names given to the trait may be aliases: `signaldesk reindex` builds a new
//! physical collection for a new model and then points the configured name at it, so readers
//! switch over in one step and the old vectors stay intact until then.

mod any;
mod edge;
mod qdrant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use any::AnyStore;
pub use edge::EdgeStore;
pub use qdrant::{CollectionLayout, QdrantStore};

/// Name of the dense vector in every collection.
pub const DENSE: &str = "dense";
/// Name of the sparse BM25 vector in every collection.
pub const BM25: &str = "bm25";

/// Errors from a vector store; each says what to do about it where something can be done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("collection {collection:?} holds vectors of model {stored_model} ({stored_dim} dims), but the configured embedder is {model} ({dim} dims): run `signaldesk reindex` to re-embed into a new collection, or configure the original model")]
    ModelMismatch {
        collection: String,
        stored_model: String,
        stored_dim: usize,
        model: String,
        dim: usize,
    },
    #[error("wrong vector dimension for {what}: expected {expected}, got {got}")]
    Dimension {
        what: String,
        expected: usize,
        got: usize,
    },
    #[error("collection {0:?} does not exist: ingest something first")]
    NoCollection(String),
    #[error("invalid filter: {0}")]
    Filter(String),
    #[error("{backend}: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
}

/// What a collection is for: the embedding model whose vectors it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionSpec {
    pub name: String,
    pub model_id: String,
    pub model_fingerprint: String,
    pub dimension: usize,
    /// Average chunk length in BM25 tokens, for BM25's length normalisation: the running average
    /// over every chunk written so far (`bm25_total_len / bm25_chunks`), measured at ingest.
    pub bm25_avg_len: f64,
    /// Chunks counted into the average.
    #[serde(default)]
    pub bm25_chunks: u64,
    /// Their summed length in BM25 tokens.
    #[serde(default)]
    pub bm25_total_len: f64,
}

/// What `collections list` and `info` show of one collection: its physical name, backend,
/// counts, model and aliases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectionInfo {
    pub name: String,
    pub backend: &'static str,
    /// Content items (first chunks).
    pub items: usize,
    pub chunks: usize,
    pub model: String,
    pub model_fingerprint: String,
    pub dimension: usize,
    pub bm25_avg_len: f64,
    /// Aliases pointing at this collection.
    pub aliases: Vec<String>,
}

/// Describe the collection (or alias) `name` of `store`.
pub async fn describe_collection<S: VectorStore>(
    store: &S,
    name: &str,
) -> Result<CollectionInfo, StoreError> {
    let physical = store.resolve(name).await?;
    let spec = store
        .collection_spec(&physical)
        .await?
        .ok_or_else(|| StoreError::NoCollection(name.to_string()))?;
    let items = store.count(&physical, &Filter::first_chunks()).await?;
    let chunks = store.count(&physical, &Filter::default()).await?;
    let aliases = store
        .list_aliases()
        .await?
        .into_iter()
        .filter(|(_, c)| *c == physical)
        .map(|(a, _)| a)
        .collect();
    Ok(CollectionInfo {
        name: physical,
        backend: store.backend(),
        items,
        chunks,
        model: spec.model_id,
        model_fingerprint: spec.model_fingerprint,
        dimension: spec.dimension,
        bm25_avg_len: spec.bm25_avg_len,
        aliases,
    })
}

/// Test hook: abort the process at a named step of a collection's first writes
/// (`collection-created`, `indexes-created`, `metadata-written`, and on Edge `upsert-applied`,
/// between an upsert and its flush), so the crash tests can stop at each one.
pub const CRASH_AT_ENV: &str = "SIGNALDESK_TEST_CRASH_AT";

/// Test hook: at the named step, print `paused at STEP` on stderr and wait to be killed, so a test
/// can deliver a real SIGKILL at that exact step.
pub const PAUSE_AT_ENV: &str = "SIGNALDESK_TEST_PAUSE_AT";

/// Abort at `step` if [`CRASH_AT_ENV`] names it; pause there if [`PAUSE_AT_ENV`] does.
pub(crate) fn crash_point(step: &str) {
    if std::env::var(CRASH_AT_ENV).is_ok_and(|v| v == step) {
        eprintln!("{CRASH_AT_ENV}: aborting at {step}");
        std::process::abort();
    }
    if std::env::var(PAUSE_AT_ENV).is_ok_and(|v| v == step) {
        eprintln!("{PAUSE_AT_ENV}: paused at {step}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

pub use crate::embed::bm25::Sparse;

/// One chunk of one content item, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkPoint {
    pub content_id: String,
    pub chunk_index: usize,
    pub dense: Vec<f32>,
    pub bm25: Sparse,
    /// Payload: `content_id` and `chunk_index` are added by the store.
    pub payload: Map<String, Value>,
}

/// A point ready for any backend: its id, vectors and complete payload.
pub(crate) struct PointParts {
    pub id: uuid::Uuid,
    pub dense: Vec<f32>,
    pub bm25: Sparse,
    pub payload: Map<String, Value>,
}

impl ChunkPoint {
    /// Check the dense vector against the collection's `dimension` and add `content_id` and
    /// `chunk_index` to the payload: what every backend does before writing a chunk.
    pub(crate) fn into_parts(self, dimension: usize) -> Result<PointParts, StoreError> {
        check_dimension(
            || format!("chunk {} of {}", self.chunk_index, self.content_id),
            dimension,
            self.dense.len(),
        )?;
        let mut payload = self.payload;
        payload.insert("content_id".into(), Value::from(self.content_id.clone()));
        payload.insert("chunk_index".into(), Value::from(self.chunk_index));
        Ok(PointParts {
            id: point_id(&self.content_id, self.chunk_index),
            dense: self.dense,
            bm25: self.bm25,
            payload,
        })
    }
}

/// A dimension error unless `got == expected`.
pub(crate) fn check_dimension(
    what: impl FnOnce() -> String,
    expected: usize,
    got: usize,
) -> Result<(), StoreError> {
    if got != expected {
        return Err(StoreError::Dimension {
            what: what(),
            expected,
            got,
        });
    }
    Ok(())
}

/// A stored chunk as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    pub point_id: String,
    pub content_id: String,
    pub chunk_index: usize,
    pub payload: Map<String, Value>,
}

impl StoredChunk {
    /// A chunk read back from any backend: ids come from the payload ingest wrote.
    pub(crate) fn from_payload(point_id: String, payload: Map<String, Value>) -> Self {
        Self {
            point_id,
            content_id: payload
                .get("content_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            chunk_index: payload
                .get("chunk_index")
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize,
            payload,
        }
    }
}

/// A search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredChunk {
    pub chunk: StoredChunk,
    pub score: f32,
}

/// Payload conditions, all of which must hold: `field = value` (keyword, integer or bool match;
/// arrays match if any element equals the value) and optional ranges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub must: Vec<Condition>,
}

/// One payload condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Equals {
        field: String,
        value: Value,
    },
    /// `field >= gte` and/or `field < lt` (numbers; RFC 3339 strings for datetime fields).
    Range {
        field: String,
        gte: Option<Value>,
        lt: Option<Value>,
    },
}

impl Filter {
    /// Each item's first chunk (`chunk_index = 0`): one point per item, for counting and paging
    /// items rather than chunks.
    pub fn first_chunks() -> Self {
        Self {
            must: vec![Condition::Equals {
                field: "chunk_index".into(),
                value: Value::from(0),
            }],
        }
    }

    /// A filter from the CLI's `--filter` strings, all of which must hold: `field=value`,
    /// `field>=value`, `field<value`, several in one string joined by commas
    /// (`source=a,language=en`). Fields are the indexed ones ([`INDEXED_FIELDS`]) and
    /// `metadata.KEY` (an input's other fields); anything else is an error that says where such a
    /// field lives. Integers and booleans are typed; `published_at=2025-03-01` means that whole
    /// day, and its bounds take RFC 3339 or `YYYY-MM-DD`.
    pub fn parse_pairs(pairs: &[String]) -> Result<Self, StoreError> {
        let mut must = Vec::new();
        for p in pairs.iter().flat_map(|p| split_conditions(p)) {
            must.push(parse_condition(p)?);
        }
        let filter = Self { must };
        // A bad date fails here, where the caller's input is, not at the store.
        filter.normalized()?;
        Ok(filter)
    }

    /// `content_id = id`.
    pub fn content(id: &str) -> Self {
        Self {
            must: vec![Condition::Equals {
                field: "content_id".into(),
                value: Value::from(id),
            }],
        }
    }

    /// `content_id = id` and, when `from_index > 0`, `chunk_index >= from_index`: the chunks
    /// [`VectorStore::delete_content`] removes.
    pub fn content_from(id: &str, from_index: usize) -> Self {
        let mut filter = Self::content(id);
        if from_index > 0 {
            filter.must.push(Condition::Range {
                field: "chunk_index".into(),
                gte: Some(Value::from(from_index)),
                lt: None,
            });
        }
        filter
    }

    /// The canonical Qdrant filter JSON (`{"must": [{"key", "match"}|{"key", "range"}]}`).
    pub fn to_qdrant_json(&self) -> Value {
        let must: Vec<Value> = self
            .must
            .iter()
            .map(|c| match c {
                Condition::Equals { field, value } => {
                    serde_json::json!({"key": field, "match": {"value": value}})
                }
                Condition::Range { field, gte, lt } => {
                    let mut range = Map::new();
                    if let Some(v) = gte {
                        range.insert("gte".into(), v.clone());
                    }
                    if let Some(v) = lt {
                        range.insert("lt".into(), v.clone());
                    }
                    serde_json::json!({"key": field, "range": range})
                }
            })
            .collect();
        serde_json::json!({ "must": must })
    }
}

/// The comparison operators `--filter` takes, longest first so `>=` is not read as `>`.
const FILTER_OPERATORS: &[&str] = &[">=", "<", "="];

/// The position and operator of the first comparison in `s`, if any.
fn find_operator(s: &str) -> Option<(usize, &'static str)> {
    FILTER_OPERATORS
        .iter()
        .filter_map(|op| s.find(op).map(|i| (i, *op)))
        .min_by_key(|(i, op)| (*i, std::cmp::Reverse(op.len())))
}

/// `a=1,b=2` as `["a=1", "b=2"]`: a comma starts a new condition only where a field name and an
/// operator follow, so values may contain commas (`tags=a,b` stays one condition).
fn split_conditions(p: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in p.match_indices(',') {
        let rest = &p[i + 1..];
        let starts_condition = find_operator(rest).is_some_and(|(at, _)| {
            at > 0
                && rest[..at]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        });
        if starts_condition {
            parts.push(&p[start..i]);
            start = i + 1;
        }
    }
    parts.push(&p[start..]);
    parts
}

/// One `field OP value`.
fn parse_condition(p: &str) -> Result<Condition, StoreError> {
    let bad = |m: String| StoreError::Filter(m);
    let (at, op) = find_operator(p).ok_or_else(|| {
        bad(format!(
            "{p:?} is not field=value (or field>=value, field<value)"
        ))
    })?;
    let (field, raw) = (p[..at].trim(), p[at + op.len()..].trim());
    if field.is_empty() {
        return Err(bad(format!("{p:?} has no field name")));
    }
    // chunk_index: which chunk of an item a point is (0 for its first).
    let indexed = INDEXED_FIELDS.iter().any(|(f, _)| *f == field) || field == "chunk_index";
    let metadata = field
        .strip_prefix("metadata.")
        .is_some_and(|k| !k.is_empty());
    if !indexed && !metadata {
        let fields: Vec<&str> = INDEXED_FIELDS.iter().map(|(f, _)| *f).collect();
        return Err(bad(format!(
            "{field:?} is not a filterable field: use one of {}, chunk_index, or metadata.KEY for the other fields of your input (--filter metadata.{field}={raw})",
            fields.join(", ")
        )));
    }
    let typed = match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => raw
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(raw)),
    };
    let datetime = is_datetime_field(field);
    Ok(match op {
        "=" if datetime => {
            // A stored timestamp rarely equals a typed one character for character: a date
            // means that whole day, a timestamp that second.
            let start = datetime_bound(field, &Value::from(raw))?;
            let start_at = chrono::DateTime::parse_from_rfc3339(&start)
                .map_err(|e| bad(format!("{field}: {raw}: {e}")))?;
            let width = if raw.len() == "YYYY-MM-DD".len() {
                chrono::Duration::days(1)
            } else {
                chrono::Duration::seconds(1)
            };
            Condition::Range {
                field: field.to_string(),
                gte: Some(Value::from(start)),
                lt: Some(Value::from(
                    (start_at + width)
                        .to_utc()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                )),
            }
        }
        "=" => Condition::Equals {
            field: field.to_string(),
            value: typed,
        },
        _ => {
            if !datetime && !typed.is_number() {
                return Err(bad(format!(
                    "{p:?}: {op} needs a number or a date field ({raw:?} is neither)"
                )));
            }
            let bound = Some(if datetime { Value::from(raw) } else { typed });
            let (gte, lt) = if op == ">=" {
                (bound, None)
            } else {
                (None, bound)
            };
            Condition::Range {
                field: field.to_string(),
                gte,
                lt,
            }
        }
    })
}

/// A datetime filter bound as RFC 3339 UTC: the same dates ingest accepts (RFC 3339 or
/// `YYYY-MM-DD`), whichever backend runs the filter.
pub(crate) fn datetime_bound(field: &str, v: &Value) -> Result<String, StoreError> {
    v.as_str()
        .and_then(crate::content::parse_date)
        .ok_or_else(|| {
            StoreError::Filter(format!(
                "{field}: {v} is not a date (use RFC 3339, e.g. 2025-03-01T00:00:00Z, or YYYY-MM-DD)"
            ))
        })
}

/// Whether `field` is indexed as a datetime.
pub(crate) fn is_datetime_field(field: &str) -> bool {
    INDEXED_FIELDS
        .iter()
        .any(|(f, kind)| *f == field && *kind == "datetime")
}

impl Filter {
    /// The same filter with every datetime bound in RFC 3339 UTC (see [`datetime_bound`]).
    pub(crate) fn normalized(&self) -> Result<Self, StoreError> {
        let mut out = self.clone();
        for c in &mut out.must {
            if let Condition::Range { field, gte, lt } = c {
                if is_datetime_field(field) {
                    for bound in [gte, lt].into_iter().flatten() {
                        *bound = Value::from(datetime_bound(field, bound)?);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// How a query scores chunks.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryVectors {
    Dense(Vec<f32>),
    Sparse(Sparse),
    /// Dense and BM25 candidates fused by weighted reciprocal rank fusion.
    Hybrid {
        dense: Vec<f32>,
        sparse: Sparse,
        /// RRF's k: larger flattens the contribution of top ranks.
        rrf_k: usize,
        /// Weight of the dense list; the BM25 list has weight 1.
        dense_weight: f32,
        /// Candidates taken from each list before fusion.
        candidates: usize,
    },
}

/// A chunk-level query.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkQuery {
    pub vectors: QueryVectors,
    pub filter: Filter,
    pub limit: usize,
    /// Exact (brute-force) dense search instead of the HNSW index.
    pub exact: bool,
    /// HNSW candidates per query (`None`: the store's default).
    pub hnsw_ef: Option<usize>,
    /// Quantized candidates per result, rescored with the full vectors (`None`: the store's
    /// default); see `search.oversampling`.
    pub oversampling: Option<f64>,
    /// Return only these payload keys (`content_id` and `chunk_index` always); `None`: the
    /// whole payload. A recommender asking for thousands of ids reads a fraction of the bytes.
    pub payload_fields: Option<Vec<String>>,
}

/// The payload keys a query with `payload_fields` returns: those and the chunk's ids.
pub(crate) fn payload_keys(fields: &[String]) -> impl Iterator<Item = &str> {
    ["content_id", "chunk_index"].into_iter().chain(
        fields
            .iter()
            .map(String::as_str)
            .filter(|f| *f != "content_id" && *f != "chunk_index"),
    )
}

/// Operations every backend provides; the conformance suite (`tests/store_conformance.rs`)
/// holds each backend to the same behaviour.
#[allow(async_fn_in_trait)]
pub trait VectorStore {
    /// Short backend name for messages.
    fn backend(&self) -> &'static str;
    /// Create the collection if missing (vectors, payload indexes, metadata); refuse it if it
    /// holds another model's vectors. Returns the spec as stored.
    async fn open_collection(&self, spec: &CollectionSpec) -> Result<CollectionSpec, StoreError>;
    /// Replace the collection's stored spec (its metadata point), e.g. with new BM25 statistics.
    /// The model fields must be those it was opened with.
    async fn write_spec(&self, spec: &CollectionSpec) -> Result<(), StoreError>;
    /// The stored spec of a collection, if it exists.
    async fn collection_spec(&self, name: &str) -> Result<Option<CollectionSpec>, StoreError>;
    /// Remove a collection and all its points.
    async fn drop_collection(&self, name: &str) -> Result<(), StoreError>;
    /// Insert or overwrite points, as one operation.
    async fn upsert(&self, collection: &str, points: Vec<ChunkPoint>) -> Result<(), StoreError>;
    /// Merge `fields` into the payload of every chunk of item `content_id`, other keys kept: how
    /// enrichment stores its signals (tags, their scores and lineage) beside the content.
    async fn set_item_fields(
        &self,
        collection: &str,
        content_id: &str,
        fields: serde_json::Map<String, Value>,
    ) -> Result<(), StoreError>;
    /// Delete the chunks of `content_id` whose index is at least `from_index` (0: all).
    async fn delete_content(
        &self,
        collection: &str,
        content_id: &str,
        from_index: usize,
    ) -> Result<(), StoreError>;
    /// Read chunks by (content id, index).
    async fn get(
        &self,
        collection: &str,
        keys: &[(String, usize)],
    ) -> Result<Vec<StoredChunk>, StoreError>;
    /// Score chunks.
    async fn query(
        &self,
        collection: &str,
        query: &ChunkQuery,
    ) -> Result<Vec<ScoredChunk>, StoreError>;
    /// Several queries of one collection, answered in order. One at a time by default; the
    /// server backend sends them as batch requests (an eval sends thousands).
    async fn query_batch(
        &self,
        collection: &str,
        queries: &[ChunkQuery],
    ) -> Result<Vec<Vec<ScoredChunk>>, StoreError> {
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            out.push(self.query(collection, q).await?);
        }
        Ok(out)
    }
    /// Page through chunks matching `filter`; returns the page and the offset of the next one.
    async fn scroll(
        &self,
        collection: &str,
        filter: &Filter,
        offset: Option<String>,
        limit: usize,
    ) -> Result<(Vec<StoredChunk>, Option<String>), StoreError>;
    /// Like [`Self::scroll`], with each chunk's dense vector: what a model trained on stored
    /// items (the ensemble tagger's head) reads instead of embedding the items again.
    async fn scroll_vectors(
        &self,
        collection: &str,
        filter: &Filter,
        offset: Option<String>,
        limit: usize,
    ) -> Result<(Vec<(StoredChunk, Vec<f32>)>, Option<String>), StoreError>;
    /// Chunks matching `filter` (the metadata point is never counted).
    async fn count(&self, collection: &str, filter: &Filter) -> Result<usize, StoreError>;
    /// The physical collection `name` refers to: the alias's target, or `name` itself.
    async fn resolve(&self, name: &str) -> Result<String, StoreError>;
    /// Point alias `alias` at `collection` (creating or moving it). Refused while a real
    /// collection is called `alias`: drop that first.
    async fn set_alias(&self, alias: &str, collection: &str) -> Result<(), StoreError>;
    /// The real collections (not aliases), sorted: for `signaldesk collections list`.
    async fn list_collections(&self) -> Result<Vec<String>, StoreError>;
    /// Every alias as (alias, collection), sorted.
    async fn list_aliases(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Bring the collection's indexes (HNSW, quantized copies, segment merges) up to date with
    /// what was written. Qdrant Edge has no background optimizers: without this its points stay
    /// in unindexed segments and every dense query is a full scan, so ingest calls it at the end.
    /// A server optimizes by itself; there this only waits for it when `wait` is set (a
    /// benchmark timing indexed search), up to the store's deadline per poll.
    async fn optimize(&self, collection: &str, wait: bool) -> Result<(), StoreError>;
}

/// The stored spec of an existing collection, if it holds `wanted`'s model; a missing metadata
/// point or another model is refused (never mixed vectors). Shared by every backend.
pub(crate) fn check_model(
    backend: &'static str,
    stored: Option<CollectionSpec>,
    wanted: &CollectionSpec,
) -> Result<CollectionSpec, StoreError> {
    let stored = stored.ok_or_else(|| StoreError::Backend {
        backend,
        message: format!(
            "collection {:?} has no signaldesk metadata point (created by another tool?)",
            wanted.name
        ),
    })?;
    if stored.model_fingerprint != wanted.model_fingerprint || stored.dimension != wanted.dimension
    {
        return Err(StoreError::ModelMismatch {
            collection: wanted.name.clone(),
            stored_model: stored.model_id,
            stored_dim: stored.dimension,
            model: wanted.model_id.clone(),
            dim: wanted.dimension,
        });
    }
    Ok(stored)
}

/// The deterministic point id of a chunk: UUIDv5 of "content_id\u{0}chunk_index".
pub fn point_id(content_id: &str, chunk_index: usize) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &NAMESPACE,
        format!("{content_id}\u{0}{chunk_index}").as_bytes(),
    )
}

/// The id of a collection's metadata point.
pub fn meta_point_id() -> uuid::Uuid {
    uuid::Uuid::new_v5(&NAMESPACE, b"signaldesk:collection-meta")
}

/// signaldesk's UUIDv5 namespace: a fixed value picked once for this project (it is not derived
/// from anything). Never change it: every stored point id is derived from it.
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f0b_3a8e_58c1_5d2a_9a4f_1c7e_2b90_d431);

/// Payload fields that filters use, and their index types.
pub const INDEXED_FIELDS: &[(&str, &str)] = &[
    ("content_id", "keyword"),
    ("source", "keyword"),
    ("content_type", "keyword"),
    ("language", "keyword"),
    ("tags", "keyword"),
    ("published_at", "datetime"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(pairs: &[&str]) -> Result<Vec<Condition>, String> {
        let pairs: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
        Filter::parse_pairs(&pairs)
            .map(|f| f.must)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn filters_take_commas_ranges_days_and_metadata_keys() {
        let eq = |f: &str, v: Value| Condition::Equals {
            field: f.into(),
            value: v,
        };
        assert_eq!(
            parsed(&["source=a,language=en", "tags=x,y"]).unwrap(),
            [
                eq("source", "a".into()),
                eq("language", "en".into()),
                eq("tags", "x,y".into())
            ]
        );
        assert_eq!(
            parsed(&["metadata.desk=economy"]).unwrap(),
            [eq("metadata.desk", "economy".into())]
        );
        assert_eq!(
            parsed(&["published_at=2025-03-01"]).unwrap(),
            [Condition::Range {
                field: "published_at".into(),
                gte: Some("2025-03-01T00:00:00Z".into()),
                lt: Some("2025-03-02T00:00:00Z".into()),
            }]
        );
        assert_eq!(
            parsed(&["published_at>=2025-03-01", "published_at<2025-04-01"]).unwrap(),
            [
                Condition::Range {
                    field: "published_at".into(),
                    gte: Some("2025-03-01".into()),
                    lt: None,
                },
                Condition::Range {
                    field: "published_at".into(),
                    gte: None,
                    lt: Some("2025-04-01".into()),
                }
            ]
        );
        let e = parsed(&["desk=economy"]).unwrap_err();
        assert!(e.contains("metadata.desk=economy"), "{e}");
        let e = parsed(&["published_at=March"]).unwrap_err();
        assert!(e.contains("not a date"), "{e}");
        let e = parsed(&["source>=abc"]).unwrap_err();
        assert!(e.contains("needs a number or a date"), "{e}");
    }

    #[test]
    fn point_ids_are_deterministic_and_distinct() {
        assert_eq!(point_id("a", 0), point_id("a", 0));
        assert_ne!(point_id("a", 0), point_id("a", 1));
        assert_ne!(point_id("a1", 0), point_id("a", 10));
        assert_ne!(point_id("a", 0), meta_point_id());
    }

    #[test]
    fn filters_parse_and_render_as_qdrant_json() {
        let f =
            Filter::parse_pairs(&["source=reuters".into(), "metadata.year=1987".into()]).unwrap();
        assert_eq!(
            f.to_qdrant_json(),
            serde_json::json!({"must": [
                {"key": "source", "match": {"value": "reuters"}},
                {"key": "metadata.year", "match": {"value": 1987}},
            ]})
        );
        assert!(Filter::parse_pairs(&["nonsense".into()]).is_err());
    }
}
