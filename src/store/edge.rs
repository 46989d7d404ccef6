//! [`EdgeStore`]: Qdrant Edge (`qdrant-edge`), in process, one shard directory per collection.
//!
//! Durability: qdrant-edge 0.7.2 writes every operation to its write-ahead log, but does not
//! replay the log when a shard is loaded: only flushed segments survive a crash (the ingest crash
//! test found this: an abort after acknowledged batches reopened empty). So every write here is
//! flushed (WAL and segments) before it is acknowledged, and writes are serialised, because the
//! engine's flush expects no concurrent writer. Calls are synchronous inside (the engine is) and
//! short (milliseconds per batch), so the async methods run them inline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use qdrant_edge::{
    CountRequest, CreateIndex, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeSparseVectorParamsBuilder, EdgeVectorParamsBuilder, FieldIndexOperations, Fusion, JsonPath,
    Modifier, NamedQuery, PayloadFieldSchema, PayloadOps, PayloadSchemaType, PointId,
    PointInsertOperations, PointOperations, PointStruct, Prefetch, QuantizationSearchParams,
    QueryEnum, QueryRequest, ScoringQuery, ScrollRequest, SearchParams, SetPayloadOp, SparseVector,
    UpdateOperation, Vector, VectorInternal, VectorStructInternal, Vectors, WithPayloadInterface,
    WithVector,
};
use serde_json::Value;

use crate::config::Quantization;

use super::{
    meta_point_id, point_id, ChunkPoint, ChunkQuery, CollectionSpec, Filter, QueryVectors,
    ScoredChunk, StoreError, StoredChunk, VectorStore, BM25, DENSE, INDEXED_FIELDS,
};

const BACKEND: &str = "qdrant-edge";
const META_KEY: &str = "_signaldesk_collection";
const ALIASES_FILE: &str = "aliases.json";

/// Collections as Qdrant Edge shards under one directory.
pub struct EdgeStore {
    root: PathBuf,
    shards: Mutex<HashMap<String, Arc<EdgeShard>>>,
    /// Alias → collection, persisted in `root/aliases.json` (replaced atomically).
    aliases: Mutex<HashMap<String, String>>,
    /// Held for each write + flush: see the module docs.
    writes: Mutex<()>,
    /// Quantization of the collections this store creates.
    quantization: Quantization,
    /// An exclusive lock on `root/.signaldesk.lock` for the store's lifetime: an embedded store
    /// is one process at a time, and a second one is told so in words (not a WAL error).
    _lock: std::fs::File,
}

/// Qdrant's scalar int8 quantization, as `store.quantization = "int8"` asks. Built from its
/// JSON form: qdrant-edge 0.7.2 does not re-export the `ScalarQuantization` wrapper.
fn int8() -> Result<qdrant_edge::QuantizationConfig, StoreError> {
    serde_json::from_value(serde_json::json!(
        {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": true}}
    ))
    .map_err(err)
}

/// Segments smaller than this (KB of dense vectors) stay unindexed and are searched exactly.
/// Qdrant's default, 10,000 KB, is per segment, and a server spreads writes over one segment per
/// core, so on 2 cores a server collection is searched exactly up to about 20 MB of vectors
/// (13,000 of dimension 384: SciFact's 11,352 chunks). Edge writes one segment; the same
/// threshold for the whole collection keeps small collections exact on both stores, the same
/// answers as the server and as an exact scan, which a full scan of that size affords (< 1 ms).
const INDEXING_THRESHOLD_KB: usize = 20_000;

fn optimizers() -> qdrant_edge::EdgeOptimizersConfig {
    qdrant_edge::EdgeOptimizersConfig {
        indexing_threshold: Some(INDEXING_THRESHOLD_KB),
        ..Default::default()
    }
}

/// Lock `root` for this process, or say which process has it.
fn lock_root(root: &Path) -> Result<std::fs::File, StoreError> {
    std::fs::create_dir_all(root)
        .map_err(|e| err(format!("cannot create {}: {e}", root.display())))?;
    let path = root.join(".signaldesk.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {
            use std::io::Write;
            // The holder's pid, for the message another process gets.
            let _ = file.set_len(0);
            let _ = (&file).write_all(std::process::id().to_string().as_bytes());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .filter(|p| !p.trim().is_empty())
                .map_or_else(String::new, |p| format!(" (pid {})", p.trim()));
            Err(err(format!(
                "the store in {} is in use by another signaldesk process{holder}; wait for it to finish, or use a Qdrant server (store.backend = \"qdrant\") for concurrent access",
                root.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(err(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        message: e.to_string(),
    }
}

impl EdgeStore {
    /// The same store, creating new collections with `quantization`.
    pub fn with_quantization(mut self, quantization: Quantization) -> Self {
        self.quantization = quantization;
        self
    }

    /// A store whose collections live in `root/<collection>/`. A corrupt alias table is an
    /// error, never ignored: ignoring it would silently point names at the wrong collections.
    pub fn new(root: &Path) -> Result<Self, StoreError> {
        let lock = lock_root(root)?;
        let path = root.join(ALIASES_FILE);
        let aliases = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                err(format!(
                    "{} is corrupt ({e}): restore it from a backup, or delete it to drop every alias",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(err(format!("cannot read {}: {e}", path.display()))),
        };
        Ok(Self {
            root: root.to_path_buf(),
            shards: Mutex::new(HashMap::new()),
            aliases: Mutex::new(aliases),
            writes: Mutex::new(()),
            quantization: Quantization::None,
            _lock: lock,
        })
    }

    fn physical(&self, name: &str) -> Result<String, StoreError> {
        let aliases = self.aliases.lock().map_err(err)?;
        Ok(aliases
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string()))
    }

    /// Write the alias table: to a temporary file, synced, then renamed over the old one, so a
    /// crash leaves either the old table or the new one.
    fn save_aliases(&self, aliases: &HashMap<String, String>) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.root).map_err(err)?;
        let tmp = self.root.join(format!("{ALIASES_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(aliases).map_err(err)?;
        {
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            std::io::Write::write_all(&mut f, &bytes).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, self.root.join(ALIASES_FILE)).map_err(err)
    }

    /// Apply `operation` and flush it to disk before returning: a returned write is durable.
    fn write(&self, shard: &EdgeShard, operation: UpdateOperation) -> Result<(), StoreError> {
        self.write_at(shard, operation, None)
    }

    /// [`Self::write`], passing the crash-test point `step` between the update and its flush.
    fn write_at(
        &self,
        shard: &EdgeShard,
        operation: UpdateOperation,
        step: Option<&str>,
    ) -> Result<(), StoreError> {
        let _guard = self.writes.lock().map_err(err)?;
        shard.update(operation).map_err(err)?;
        if let Some(step) = step {
            super::crash_point(step);
        }
        shard.flush();
        Ok(())
    }

    fn dir(&self, name: &str) -> Result<PathBuf, StoreError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            || name.starts_with('.')
        {
            return Err(StoreError::Backend {
                backend: BACKEND,
                message: format!("invalid collection name {name:?} (use letters, digits, _ - .)"),
            });
        }
        Ok(self.root.join(name))
    }

    /// The open shard of `name` (an alias is followed), loading it from disk on first use.
    fn shard(&self, name: &str) -> Result<Option<Arc<EdgeShard>>, StoreError> {
        let name = &self.physical(name)?;
        let mut shards = self.shards.lock().map_err(err)?;
        if let Some(s) = shards.get(name) {
            return Ok(Some(s.clone()));
        }
        let dir = self.dir(name)?;
        if !dir.join("edge_config.json").is_file() {
            return Ok(None);
        }
        let shard = Arc::new(EdgeShard::load(&dir, None).map_err(err)?);
        if shard.config().optimizers != optimizers() {
            // A collection created before the threshold below was set.
            shard.set_optimizers_config(optimizers()).map_err(err)?;
        }
        shards.insert(name.to_string(), shard.clone());
        Ok(Some(shard))
    }

    /// One page of records, with the dense vectors when asked.
    fn scroll_records(
        &self,
        collection: &str,
        filter: &Filter,
        offset: Option<String>,
        limit: usize,
        with_vector: bool,
    ) -> Result<(Vec<qdrant_edge::Record>, Option<String>), StoreError> {
        let shard = self.existing(collection)?;
        let request = ScrollRequest {
            offset: offset.as_deref().map(parse_point_id).transpose()?,
            limit: Some(limit.max(1)),
            filter: Some(edge_filter(filter)?),
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: if with_vector {
                WithVector::Selector(vec![DENSE.into()])
            } else {
                WithVector::Bool(false)
            },
            order_by: None,
        };
        let (records, next) = shard.scroll(request).map_err(err)?;
        Ok((
            records,
            next.map(|id| match id {
                PointId::Uuid(u) => u.to_string(),
                PointId::NumId(n) => n.to_string(),
            }),
        ))
    }

    fn existing(&self, name: &str) -> Result<Arc<EdgeShard>, StoreError> {
        self.shard(name)?
            .ok_or_else(|| StoreError::NoCollection(name.to_string()))
    }

    /// Create the shard of a new collection, then [`Self::finish_creation`].
    fn create(&self, spec: &CollectionSpec) -> Result<Arc<EdgeShard>, StoreError> {
        let dir = self.dir(&spec.name)?;
        std::fs::create_dir_all(&dir).map_err(err)?;
        let config = EdgeConfigBuilder::new()
            .vector(DENSE, {
                let params = EdgeVectorParamsBuilder::new(spec.dimension, Distance::Cosine);
                match self.quantization {
                    Quantization::None => params,
                    // The full vectors go to disk (memory-mapped, read to rescore): the saving.
                    Quantization::Int8 => params.on_disk(true).quantization_config(int8()?),
                }
                .build()
            })
            .sparse_vector(
                BM25,
                EdgeSparseVectorParamsBuilder::new()
                    .modifier(Modifier::Idf)
                    .build(),
            )
            .optimizers(optimizers())
            .build();
        let shard = Arc::new(EdgeShard::new(&dir, config).map_err(err)?);
        self.shards
            .lock()
            .map_err(err)?
            .insert(spec.name.clone(), shard.clone());
        super::crash_point("collection-created");
        self.finish_creation(&shard, spec)?;
        Ok(shard)
    }

    /// The steps after the shard exists: payload indexes, then the metadata point. Each is
    /// idempotent, so a collection left half-made by a crash is finished by running them again.
    fn finish_creation(&self, shard: &EdgeShard, spec: &CollectionSpec) -> Result<(), StoreError> {
        for (field, kind) in INDEXED_FIELDS.iter().chain(&[("chunk_index", "integer")]) {
            let schema = match *kind {
                "keyword" => PayloadSchemaType::Keyword,
                "integer" => PayloadSchemaType::Integer,
                _ => PayloadSchemaType::Datetime,
            };
            let field_name: JsonPath = field
                .parse()
                .map_err(|_| err(format!("bad field {field}")))?;
            self.write(
                shard,
                UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(
                    CreateIndex {
                        field_name,
                        field_schema: Some(PayloadFieldSchema::FieldType(schema)),
                    },
                )),
            )?;
        }
        super::crash_point("indexes-created");
        self.write_meta(shard, spec)?;
        super::crash_point("metadata-written");
        Ok(())
    }

    /// Upsert the metadata point (the collection's spec).
    fn write_meta(&self, shard: &EdgeShard, spec: &CollectionSpec) -> Result<(), StoreError> {
        let meta = serde_json::json!({ META_KEY: spec });
        let point = PointStruct::new(
            PointId::Uuid(meta_point_id()),
            Vectors::new_named(std::iter::empty::<(String, Vector)>()),
            meta,
        );
        self.write(
            shard,
            UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(vec![point.into()]),
            )),
        )
    }

    fn read_spec(shard: &EdgeShard) -> Result<Option<CollectionSpec>, StoreError> {
        let records = shard
            .retrieve(
                &[PointId::Uuid(meta_point_id())],
                Some(WithPayloadInterface::Bool(true)),
                None,
            )
            .map_err(err)?;
        let Some(payload) = records.into_iter().next().and_then(|r| r.payload) else {
            return Ok(None);
        };
        let value = payload.0.get(META_KEY).cloned().unwrap_or(Value::Null);
        serde_json::from_value(value).map(Some).map_err(err)
    }
}

/// The filter as qdrant-edge takes it, always excluding the metadata point.
fn edge_filter(filter: &Filter) -> Result<qdrant_edge::Filter, StoreError> {
    let mut json = filter.normalized()?.to_qdrant_json();
    json["must_not"] = serde_json::json!([{ "has_id": [meta_point_id().to_string()] }]);
    serde_json::from_value(json).map_err(|e| StoreError::Filter(e.to_string()))
}

fn sparse(s: &super::Sparse) -> Result<SparseVector, StoreError> {
    SparseVector::new(s.indices.clone(), s.values.clone())
        .map_err(|e| StoreError::Filter(format!("bad sparse vector: {e}")))
}

fn to_chunk(id: PointId, payload: Option<qdrant_edge::Payload>) -> StoredChunk {
    let point_id = match id {
        PointId::Uuid(u) => u.to_string(),
        PointId::NumId(n) => n.to_string(),
    };
    StoredChunk::from_payload(point_id, payload.map(|p| p.0).unwrap_or_default())
}

fn parse_point_id(s: &str) -> Result<PointId, StoreError> {
    if let Ok(u) = s.parse::<uuid::Uuid>() {
        return Ok(PointId::Uuid(u));
    }
    s.parse::<u64>()
        .map(PointId::NumId)
        .map_err(|_| err(format!("bad scroll offset {s:?}")))
}

impl VectorStore for EdgeStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn open_collection(&self, spec: &CollectionSpec) -> Result<CollectionSpec, StoreError> {
        let mut physical = spec.clone();
        physical.name = self.physical(&spec.name)?;
        let shard = match self.shard(&spec.name)? {
            Some(s) => s,
            None => return self.create(&physical).map(|_| physical),
        };
        let stored = Self::read_spec(&shard)?;
        if stored.is_none() && self.count(&physical.name, &Filter::default()).await? == 0 {
            // Created, then interrupted before its metadata point: nothing is in it, so
            // finishing the creation loses nothing.
            tracing::warn!(collection = %physical.name, "finishing an interrupted collection creation");
            self.finish_creation(&shard, &physical)?;
            return Ok(physical);
        }
        super::check_model(BACKEND, stored, spec)
    }

    async fn write_spec(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        let shard = self.existing(&spec.name)?;
        self.write_meta(&shard, spec)
    }

    async fn collection_spec(&self, name: &str) -> Result<Option<CollectionSpec>, StoreError> {
        match self.shard(name)? {
            Some(s) => Self::read_spec(&s),
            None => Ok(None),
        }
    }

    async fn drop_collection(&self, name: &str) -> Result<(), StoreError> {
        let physical = self.physical(name)?;
        let dir = self.dir(&physical)?;
        if let Some(shard) = self.shards.lock().map_err(err)?.remove(&physical) {
            drop(shard);
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(err)?;
        }
        // Aliases of the dropped collection go with it.
        let mut aliases = self.aliases.lock().map_err(err)?;
        let before = aliases.len();
        aliases.retain(|a, target| a != name && *target != physical);
        if aliases.len() != before {
            self.save_aliases(&aliases)?;
        }
        Ok(())
    }

    async fn resolve(&self, name: &str) -> Result<String, StoreError> {
        self.physical(name)
    }

    async fn list_collections(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(err(format!("cannot list {}: {e}", self.root.display()))),
        };
        for entry in entries {
            let entry = entry.map_err(err)?;
            if entry.path().join("edge_config.json").is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn list_aliases(&self) -> Result<Vec<(String, String)>, StoreError> {
        let aliases = self.aliases.lock().map_err(err)?;
        let mut out: Vec<(String, String)> = aliases
            .iter()
            .map(|(a, c)| (a.clone(), c.clone()))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn optimize(&self, collection: &str, _wait: bool) -> Result<(), StoreError> {
        let shard = self.existing(&self.physical(collection)?)?;
        // Under the write lock, and flushed before returning: the module docs' durability rule.
        let _guard = self.writes.lock().map_err(err)?;
        shard.optimize().map_err(err)?;
        shard.flush();
        Ok(())
    }

    async fn set_alias(&self, alias: &str, collection: &str) -> Result<(), StoreError> {
        self.dir(alias)?;
        if self.dir(alias)?.join("edge_config.json").is_file() {
            return Err(err(format!(
                "cannot alias {alias:?}: a collection has that name (drop it first)"
            )));
        }
        let target = self.physical(collection)?;
        if self.shard(&target)?.is_none() {
            return Err(StoreError::NoCollection(target));
        }
        let mut aliases = self.aliases.lock().map_err(err)?;
        let mut next = aliases.clone();
        next.insert(alias.to_string(), target);
        self.save_aliases(&next)?;
        *aliases = next;
        Ok(())
    }

    async fn upsert(&self, collection: &str, points: Vec<ChunkPoint>) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let shard = self.existing(collection)?;
        let dim = shard.config().vectors.get(DENSE).map_or(0, |p| p.size);
        let mut batch = Vec::with_capacity(points.len());
        for p in points {
            let p = p.into_parts(dim)?;
            let bm25 = Vector::new_sparse(p.bm25.indices, p.bm25.values).map_err(err)?;
            let vectors = Vectors::new_named([(DENSE, Vector::new_dense(p.dense)), (BM25, bm25)]);
            let point = PointStruct::new(PointId::Uuid(p.id), vectors, Value::Object(p.payload));
            batch.push(point.into());
        }
        self.write_at(
            &shard,
            UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(batch),
            )),
            Some("upsert-applied"),
        )
    }

    async fn delete_content(
        &self,
        collection: &str,
        content_id: &str,
        from_index: usize,
    ) -> Result<(), StoreError> {
        let shard = self.existing(collection)?;
        let filter = Filter::content_from(content_id, from_index);
        self.write(
            &shard,
            UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(edge_filter(
                &filter,
            )?)),
        )
    }

    async fn set_item_fields(
        &self,
        collection: &str,
        content_id: &str,
        fields: serde_json::Map<String, Value>,
    ) -> Result<(), StoreError> {
        let shard = self.existing(collection)?;
        self.write(
            &shard,
            UpdateOperation::PayloadOperation(PayloadOps::SetPayload(SetPayloadOp {
                payload: qdrant_edge::Payload(fields),
                points: None,
                filter: Some(edge_filter(&Filter::content(content_id))?),
                key: None,
            })),
        )
    }

    async fn get(
        &self,
        collection: &str,
        keys: &[(String, usize)],
    ) -> Result<Vec<StoredChunk>, StoreError> {
        let shard = self.existing(collection)?;
        let ids: Vec<PointId> = keys
            .iter()
            .map(|(c, i)| PointId::Uuid(point_id(c, *i)))
            .collect();
        let records = shard
            .retrieve(&ids, Some(WithPayloadInterface::Bool(true)), None)
            .map_err(err)?;
        Ok(records
            .into_iter()
            .map(|r| to_chunk(r.id, r.payload))
            .collect())
    }

    async fn query(
        &self,
        collection: &str,
        query: &ChunkQuery,
    ) -> Result<Vec<ScoredChunk>, StoreError> {
        let shard = self.existing(collection)?;
        let filter = edge_filter(&query.filter)?;
        let params = Some(SearchParams {
            exact: query.exact,
            hnsw_ef: query.hnsw_ef,
            quantization: query.oversampling.map(|o| QuantizationSearchParams {
                ignore: false,
                rescore: Some(true),
                oversampling: Some(o),
            }),
            ..Default::default()
        });
        let dense_query = |v: &Vec<f32>| -> Result<ScoringQuery, StoreError> {
            let dim = shard.config().vectors.get(DENSE).map_or(0, |p| p.size);
            super::check_dimension(|| "the query vector".into(), dim, v.len())?;
            Ok(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(
                VectorInternal::Dense(v.clone()),
                DENSE,
            ))))
        };
        let sparse_query = |s: &super::Sparse| -> Result<ScoringQuery, StoreError> {
            Ok(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(
                VectorInternal::Sparse(sparse(s)?),
                BM25,
            ))))
        };
        let (prefetches, scoring) = match &query.vectors {
            QueryVectors::Dense(v) => (Vec::new(), dense_query(v)?),
            QueryVectors::Sparse(s) => (Vec::new(), sparse_query(s)?),
            QueryVectors::Hybrid {
                dense,
                sparse,
                rrf_k,
                dense_weight,
                candidates,
            } => {
                let prefetch = |q: ScoringQuery| Prefetch {
                    prefetches: Vec::new(),
                    query: Some(q),
                    limit: *candidates,
                    params,
                    filter: Some(filter.clone()),
                    score_threshold: None,
                };
                (
                    vec![
                        prefetch(dense_query(dense)?),
                        prefetch(sparse_query(sparse)?),
                    ],
                    ScoringQuery::Fusion(Fusion::Rrf {
                        k: *rrf_k,
                        weights: Some(vec![(*dense_weight).into(), 1.0f32.into()]),
                    }),
                )
            }
        };
        let request = QueryRequest {
            prefetches,
            query: Some(scoring),
            filter: Some(filter),
            score_threshold: None,
            limit: query.limit,
            offset: 0,
            params,
            with_vector: WithVector::Bool(false),
            with_payload: match &query.payload_fields {
                None => WithPayloadInterface::Bool(true),
                Some(fields) => WithPayloadInterface::Fields(
                    super::payload_keys(fields)
                        .map(|f| {
                            f.parse::<JsonPath>()
                                .map_err(|_| err(format!("bad payload field {f:?}")))
                        })
                        .collect::<Result<_, _>>()?,
                ),
            },
        };
        let hits = shard.query(request).map_err(err)?;
        Ok(hits
            .into_iter()
            .map(|h| ScoredChunk {
                score: h.score,
                chunk: to_chunk(h.id, h.payload),
            })
            .collect())
    }

    async fn scroll(
        &self,
        collection: &str,
        filter: &Filter,
        offset: Option<String>,
        limit: usize,
    ) -> Result<(Vec<StoredChunk>, Option<String>), StoreError> {
        let (records, next) = self.scroll_records(collection, filter, offset, limit, false)?;
        Ok((
            records
                .into_iter()
                .map(|r| to_chunk(r.id, r.payload))
                .collect(),
            next,
        ))
    }

    async fn scroll_vectors(
        &self,
        collection: &str,
        filter: &Filter,
        offset: Option<String>,
        limit: usize,
    ) -> Result<(Vec<(StoredChunk, Vec<f32>)>, Option<String>), StoreError> {
        let (records, next) = self.scroll_records(collection, filter, offset, limit, true)?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let vector = match r.vector {
                Some(VectorStructInternal::Named(mut named)) => match named.remove(DENSE) {
                    Some(VectorInternal::Dense(v)) => v,
                    _ => Vec::new(),
                },
                Some(VectorStructInternal::Single(v)) => v,
                _ => Vec::new(),
            };
            out.push((to_chunk(r.id, r.payload), vector));
        }
        Ok((out, next))
    }

    async fn count(&self, collection: &str, filter: &Filter) -> Result<usize, StoreError> {
        let shard = self.existing(collection)?;
        shard
            .count(CountRequest {
                filter: Some(edge_filter(filter)?),
                exact: true,
            })
            .map_err(err)
    }
}
