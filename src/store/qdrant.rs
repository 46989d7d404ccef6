//! [`QdrantStore`]: a Qdrant server over gRPC (`qdrant-client`), for production.
//!
//! The same collection layout as [`super::EdgeStore`] (named `dense` cosine vector, named `bm25`
//! sparse vector with the IDF modifier, the same payload indexes, the metadata point), so data
//! and behaviour carry over between the two, and the conformance suite holds both to it.
//! Every write waits for the server to apply it (`wait: true`): an acknowledged write is
//! visible to the next read, as with the embedded store.

use std::time::Duration;

use qdrant_client::qdrant::{
    point_id::PointIdOptions, Condition as QCondition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DatetimeRange, DeletePointsBuilder, FieldType,
    Filter as QFilter, GetPointsBuilder, Modifier, NamedVectors, PointId, PointStruct,
    PrefetchQueryBuilder, QuantizationType, Query, QueryBatchPointsBuilder, QueryPointsBuilder,
    Range, Rrf, ScalarQuantizationBuilder, ScrollPointsBuilder, SearchParamsBuilder,
    SetPayloadPointsBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder,
    UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};

use crate::config::Quantization;
use serde_json::{Map, Value};

use super::{
    meta_point_id, point_id, ChunkPoint, ChunkQuery, CollectionSpec, Condition, Filter,
    QueryVectors, ScoredChunk, StoreError, StoredChunk, VectorStore, BM25, DENSE, INDEXED_FIELDS,
};

const BACKEND: &str = "qdrant";
const META_KEY: &str = "_signaldesk_collection";

/// How new collections are spread over a Qdrant cluster: Qdrant's own sharding and replication
/// (`store.shards`, `store.replication_factor`, `store.write_consistency_factor`). One shard
/// and one copy suit a single server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectionLayout {
    /// Shards per collection: points are spread over them, and so over the peers.
    pub shards: u32,
    /// Copies of each shard, on different peers: reads survive the loss of `replication_factor
    /// - 1` peers.
    pub replication_factor: u32,
    /// Copies that must apply a write before it is acknowledged.
    pub write_consistency_factor: u32,
}

impl Default for CollectionLayout {
    fn default() -> Self {
        Self {
            shards: 1,
            replication_factor: 1,
            write_consistency_factor: 1,
        }
    }
}

/// Collections on a Qdrant server.
pub struct QdrantStore {
    client: Qdrant,
    url: String,
    api_key: Option<String>,
    /// The deadline of one store call, qdrant-client's own retry included.
    timeout: Duration,
    layout: CollectionLayout,
    /// Quantization of the collections this store creates.
    quantization: Quantization,
    /// Dimension by collection name, read once from the metadata point: every upsert and query
    /// checks it, and it cannot change while the name points at the same collection.
    dimensions: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        message: e.to_string(),
    }
}

/// What answered an HTTP/1.1 request at the address given for gRPC.
enum HttpAnswer {
    /// Qdrant's REST API (port 6333 by default).
    QdrantRest,
    /// Some other HTTP/1 server, with the status it answered.
    Other(reqwest::StatusCode),
}

/// Whether a gRPC error means nothing answered (refused, reset, unresolvable, cut).
fn unreachable(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "failed to connect",
        "connection refused",
        "transport error",
        "connection reset",
        "broken pipe",
        "dns error",
        "connection closed",
        "tcp connect error",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// The useful part of tonic's connection errors, which qdrant-client formats with `{:?}`.
fn short_cause(message: &str) -> &str {
    let m = message.to_ascii_lowercase();
    for cause in [
        "connection refused",
        "connection reset",
        "broken pipe",
        "dns error",
        "timed out",
    ] {
        if m.contains(cause) {
            return cause;
        }
    }
    "no gRPC connection"
}

impl QdrantStore {
    /// A client for the server at `url` (gRPC, usually port 6334); `api_key` for Qdrant Cloud or
    /// a server started with one. Nothing is sent until the first call.
    pub fn connect(
        url: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key.clone())
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .skip_compatibility_check()
            .build()
            .map_err(|e| err(format!("cannot set up a client for {url}: {e}")))?;
        Ok(Self {
            client,
            url: url.to_string(),
            api_key,
            timeout,
            layout: CollectionLayout::default(),
            quantization: Quantization::None,
            dimensions: Default::default(),
        })
    }

    /// The same client, creating new collections with `quantization`.
    pub fn with_quantization(mut self, quantization: Quantization) -> Self {
        self.quantization = quantization;
        self
    }

    /// The same client, creating new collections with `layout` (shards and replicas).
    pub fn with_layout(mut self, layout: CollectionLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Run one client call within the deadline, its error said in a user's terms. `collection`
    /// is the collection it addresses, if any ("not found" then means that collection).
    async fn call<T>(
        &self,
        collection: Option<&str>,
        call: impl std::future::Future<Output = Result<T, QdrantError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.explain(e, collection).await),
            Err(_) => Err(err(format!(
                "Qdrant at {} did not answer within {} s (store.timeout_s); is the server overloaded or stuck?",
                self.url,
                self.timeout.as_secs_f64()
            ))),
        }
    }

    /// A client error as what went wrong and what to do: never tonic's raw text or metadata.
    ///
    /// A gRPC client talking to an HTTP/1 port fails in several ways depending on timing (an h2
    /// protocol error, "operation was canceled", a closed connection), so any failure without a
    /// definite gRPC status is followed by one short HTTP/1.1 request to the same address, whose
    /// answer says what is there: Qdrant's REST port, some other HTTP server, or nothing.
    async fn explain(&self, e: QdrantError, collection: Option<&str>) -> StoreError {
        let url = &self.url;
        let status = match e {
            QdrantError::ResponseError { status } => status,
            QdrantError::ResourceExhaustedError {
                status,
                retry_after_seconds,
            } => {
                return err(format!(
                    "Qdrant at {url} is overloaded: {} (it asks to retry after {retry_after_seconds} s)",
                    status.message()
                ))
            }
            other => {
                let message = other.to_string();
                return match self.probe_http().await {
                    Some(answer) => self.not_grpc(answer),
                    None => err(format!("Qdrant at {url}: {message}")),
                };
            }
        };
        let message = status.message();
        use tonic::Code;
        match status.code() {
            Code::NotFound if message.to_ascii_lowercase().contains("collection") => {
                match collection {
                    Some(c) => StoreError::NoCollection(c.to_string()),
                    None => err(format!("Qdrant at {url}: {message}")),
                }
            }
            Code::Unauthenticated | Code::PermissionDenied => err(format!(
                "Qdrant at {url} refused the request ({message}): {}",
                if self.api_key.is_some() {
                    "the API key in QDRANT_API_KEY is not the server's"
                } else {
                    "the server wants an API key; set QDRANT_API_KEY"
                }
            )),
            Code::DeadlineExceeded => err(format!(
                "Qdrant at {url} did not answer within {} s (store.timeout_s)",
                self.timeout.as_secs_f64()
            )),
            Code::Unknown | Code::Cancelled | Code::Internal | Code::Unavailable => {
                if let Some(answer) = self.probe_http().await {
                    return self.not_grpc(answer);
                }
                if unreachable(message) {
                    err(format!(
                        "cannot reach Qdrant at {url} ({}): is the server running and store.url right? (`docker compose up -d qdrant` starts one on 6334)",
                        short_cause(message)
                    ))
                } else {
                    err(format!("Qdrant at {url}: {message} ({:?})", status.code()))
                }
            }
            code => err(format!("Qdrant at {url}: {message} ({code:?})")),
        }
    }

    /// What an HTTP/1 server at the gRPC address is, as an error.
    fn not_grpc(&self, answer: HttpAnswer) -> StoreError {
        let url = &self.url;
        match answer {
            HttpAnswer::QdrantRest => err(format!(
                "{url} is Qdrant's REST port, but signaldesk speaks gRPC: set store.url to the gRPC port (6334 unless the server was configured otherwise; 6333 is REST)"
            )),
            HttpAnswer::Other(status) => err(format!(
                "{url} answers HTTP/1.1 ({status}), not gRPC: is store.url the address of Qdrant's gRPC port (usually 6334)?"
            )),
        }
    }

    /// One HTTP/1.1 GET of the server's root, at most two seconds: `None` when nothing answers
    /// HTTP/1.1 there (nothing listening, or a real gRPC server, which speaks only HTTP/2).
    async fn probe_http(&self) -> Option<HttpAnswer> {
        let client = reqwest::Client::builder()
            .http1_only()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let mut request = client.get(&self.url);
        if let Some(key) = &self.api_key {
            request = request.header("api-key", key);
        }
        let response = request.send().await.ok()?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        // Qdrant's REST root answers {"title":"qdrant - vector search engine","version":...}.
        Some(if body.contains("qdrant") {
            HttpAnswer::QdrantRest
        } else {
            HttpAnswer::Other(status)
        })
    }

    /// The server address, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a real collection (not an alias) is called `name`.
    async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        // Listed rather than `collection_exists`, which may also answer for aliases.
        let list = self.call(None, self.client.list_collections()).await?;
        Ok(list.collections.iter().any(|c| c.name == name))
    }

    async fn create(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        let mut vectors = VectorsConfigBuilder::default();
        vectors.add_named_vector_params(DENSE, {
            let params = VectorParamsBuilder::new(
                spec.dimension as u64,
                qdrant_client::qdrant::Distance::Cosine,
            );
            match self.quantization {
                Quantization::None => params,
                // The full vectors go to disk (memory-mapped, read to rescore): the saving.
                Quantization::Int8 => params.on_disk(true).quantization_config(
                    ScalarQuantizationBuilder::default()
                        .r#type(QuantizationType::Int8.into())
                        .quantile(0.99)
                        .always_ram(true),
                ),
            }
        });
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            BM25,
            SparseVectorParamsBuilder::default().modifier(Modifier::Idf as i32),
        );
        let layout = self.layout;
        let created = self
            .call(
                None,
                self.client.create_collection(
                    CreateCollectionBuilder::new(&spec.name)
                        .vectors_config(vectors)
                        .sparse_vectors_config(sparse)
                        .shard_number(layout.shards)
                        .replication_factor(layout.replication_factor)
                        .write_consistency_factor(layout.write_consistency_factor),
                ),
            )
            .await;
        // qdrant-client resends a call once after an Internal/Unavailable error, and a timed-out
        // call may have been applied: "already exists" after such a retry is our own creation.
        if let Err(e) = created {
            if !self.exists(&spec.name).await? {
                return Err(e);
            }
        }
        super::crash_point("collection-created");
        self.finish_creation(spec).await
    }

    /// The steps after the collection exists: payload indexes, then the metadata point. Each is
    /// idempotent, so a collection left half-made by a crash is finished by running them again.
    async fn finish_creation(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        for (field, kind) in INDEXED_FIELDS.iter().chain(&[("chunk_index", "integer")]) {
            let field_type = match *kind {
                "keyword" => FieldType::Keyword,
                "integer" => FieldType::Integer,
                _ => FieldType::Datetime,
            };
            self.call(
                None,
                self.client.create_field_index(
                    CreateFieldIndexCollectionBuilder::new(&spec.name, *field, field_type)
                        .wait(true),
                ),
            )
            .await?;
        }
        super::crash_point("indexes-created");
        self.write_meta(spec).await?;
        super::crash_point("metadata-written");
        Ok(())
    }

    /// Upsert the metadata point (the collection's spec).
    async fn write_meta(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        let meta = Payload::try_from(serde_json::json!({ META_KEY: spec })).map_err(err)?;
        self.call(
            None,
            self.client.upsert_points(
                UpsertPointsBuilder::new(
                    &spec.name,
                    vec![PointStruct::new(
                        meta_point_id().to_string(),
                        NamedVectors::default(),
                        meta,
                    )],
                )
                .wait(true),
            ),
        )
        .await?;
        Ok(())
    }

    async fn read_spec(&self, name: &str) -> Result<Option<CollectionSpec>, StoreError> {
        let response = self
            .call(
                Some(name),
                self.client.get_points(
                    GetPointsBuilder::new(name, vec![PointId::from(meta_point_id().to_string())])
                        .with_payload(true),
                ),
            )
            .await?;
        let Some(point) = response.result.into_iter().next() else {
            return Ok(None);
        };
        let payload: Map<String, Value> = Payload::from(point.payload).into();
        let value = payload.get(META_KEY).cloned().unwrap_or(Value::Null);
        serde_json::from_value(value).map(Some).map_err(err)
    }

    async fn dimension(&self, name: &str) -> Result<usize, StoreError> {
        if let Some(d) = self.dimensions.lock().map_err(err)?.get(name) {
            return Ok(*d);
        }
        let dim = self
            .read_spec(name)
            .await?
            .map(|s| s.dimension)
            .ok_or_else(|| StoreError::NoCollection(name.to_string()))?;
        self.dimensions
            .lock()
            .map_err(err)?
            .insert(name.to_string(), dim);
        Ok(dim)
    }

    /// Point `alias` at `target` in one `UpdateAliases` request (deleting it first when
    /// `moving`), which the server applies atomically: readers see the old target or the new one,
    /// never no collection. qdrant-client's helpers send one action per request, so this call
    /// goes through the generated gRPC client on its own channel.
    async fn update_aliases_atomically(
        &self,
        alias: &str,
        target: &str,
        moving: bool,
    ) -> Result<(), StoreError> {
        use qdrant_client::qdrant::alias_operations::Action;
        use qdrant_client::qdrant::collections_client::CollectionsClient;
        use qdrant_client::qdrant::{AliasOperations, ChangeAliases, CreateAlias, DeleteAlias};
        let as_status = |status: tonic::Status| QdrantError::ResponseError { status };
        let key = match &self.api_key {
            Some(k) => Some(
                tonic::metadata::MetadataValue::try_from(k.as_str())
                    .map_err(|_| err("the API key is not a valid header value"))?,
            ),
            None => None,
        };
        let mut actions = Vec::new();
        if moving {
            actions.push(AliasOperations {
                action: Some(Action::DeleteAlias(DeleteAlias {
                    alias_name: alias.to_string(),
                })),
            });
        }
        actions.push(AliasOperations {
            action: Some(Action::CreateAlias(CreateAlias {
                collection_name: target.to_string(),
                alias_name: alias.to_string(),
            })),
        });
        let channel = tonic::transport::Channel::from_shared(self.url.clone())
            .map_err(|e| err(format!("{}: {e}", self.url)))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(self.timeout);
        let request = async move {
            let channel = channel.connect().await.map_err(|e| {
                as_status(tonic::Status::unavailable(format!(
                    "failed to connect: {e:?}"
                )))
            })?;
            let mut client =
                CollectionsClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
                    if let Some(k) = &key {
                        req.metadata_mut().insert("api-key", k.clone());
                    }
                    Ok(req)
                });
            client
                .update_aliases(ChangeAliases {
                    actions,
                    timeout: None,
                })
                .await
                .map_err(as_status)
        };
        self.call(None, request).await?;
        Ok(())
    }

    /// One query as the gRPC API takes it (for `query` and `query_batch` alike).
    async fn query_request(
        &self,
        collection: &str,
        query: &ChunkQuery,
    ) -> Result<qdrant_client::qdrant::QueryPoints, StoreError> {
        let filter = qdrant_filter(&query.filter)?;
        let mut params = SearchParamsBuilder::default().exact(query.exact);
        if let Some(ef) = query.hnsw_ef {
            params = params.hnsw_ef(ef as u64);
        }
        if let Some(oversampling) = query.oversampling {
            params = params.quantization(
                qdrant_client::qdrant::QuantizationSearchParamsBuilder::default()
                    .rescore(true)
                    .oversampling(oversampling),
            );
        }
        let dim_check = |v: &Vec<f32>, dim: usize| {
            super::check_dimension(|| "the query vector".into(), dim, v.len())
        };
        use qdrant_client::qdrant::with_payload_selector::SelectorOptions;
        let payload: SelectorOptions = match &query.payload_fields {
            None => SelectorOptions::Enable(true),
            Some(fields) => qdrant_client::qdrant::PayloadIncludeSelector::new(
                super::payload_keys(fields)
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            )
            .into(),
        };
        let mut request = QueryPointsBuilder::new(collection)
            .filter(filter.clone())
            .limit(query.limit as u64)
            .with_payload(payload)
            .params(params.clone());
        match &query.vectors {
            QueryVectors::Dense(v) => {
                dim_check(v, self.dimension(collection).await?)?;
                request = request
                    .query(Query::new_nearest(VectorInput::new_dense(v.clone())))
                    .using(DENSE);
            }
            QueryVectors::Sparse(s) => {
                request = request
                    .query(Query::new_nearest(VectorInput::new_sparse(
                        s.indices.clone(),
                        s.values.clone(),
                    )))
                    .using(BM25);
            }
            QueryVectors::Hybrid {
                dense,
                sparse,
                rrf_k,
                dense_weight,
                candidates,
            } => {
                dim_check(dense, self.dimension(collection).await?)?;
                request = request
                    .add_prefetch(
                        PrefetchQueryBuilder::default()
                            .query(Query::new_nearest(VectorInput::new_dense(dense.clone())))
                            .using(DENSE)
                            .filter(filter.clone())
                            .params(params.clone())
                            .limit(*candidates as u64),
                    )
                    .add_prefetch(
                        PrefetchQueryBuilder::default()
                            .query(Query::new_nearest(VectorInput::new_sparse(
                                sparse.indices.clone(),
                                sparse.values.clone(),
                            )))
                            .using(BM25)
                            .filter(filter.clone())
                            .limit(*candidates as u64),
                    )
                    .query(Query::new_rrf(Rrf {
                        k: Some(*rrf_k as u32),
                        weights: vec![*dense_weight, 1.0],
                    }));
            }
        }
        Ok(request.build())
    }

    /// Names may now point elsewhere (a dropped collection, a moved alias).
    fn forget_dimensions(&self) -> Result<(), StoreError> {
        self.dimensions.lock().map_err(err)?.clear();
        Ok(())
    }
}

/// Queries per batch request: large enough to save round trips, small enough for one message.
const QUERY_BATCH: usize = 64;

fn scored(points: Vec<qdrant_client::qdrant::ScoredPoint>) -> Vec<ScoredChunk> {
    points
        .into_iter()
        .map(|p| ScoredChunk {
            score: p.score,
            chunk: to_chunk(p.id, p.payload),
        })
        .collect()
}

fn id_string(id: Option<PointId>) -> String {
    match id.and_then(|p| p.point_id_options) {
        Some(PointIdOptions::Uuid(u)) => u,
        Some(PointIdOptions::Num(n)) => n.to_string(),
        None => String::new(),
    }
}

fn to_chunk(
    id: Option<PointId>,
    payload: std::collections::HashMap<String, qdrant_client::qdrant::Value>,
) -> StoredChunk {
    StoredChunk::from_payload(id_string(id), Payload::from(payload).into())
}

fn timestamp(field: &str, v: &Value) -> Result<prost_types::Timestamp, StoreError> {
    let s = super::datetime_bound(field, v)?;
    let t = chrono::DateTime::parse_from_rfc3339(&s)
        .map_err(|e| StoreError::Filter(format!("{field}: {s:?} is not RFC 3339: {e}")))?;
    Ok(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

fn number(field: &str, v: &Value) -> Result<f64, StoreError> {
    v.as_f64()
        .ok_or_else(|| StoreError::Filter(format!("{field}: a range bound must be a number")))
}

/// The filter as the gRPC API takes it, always excluding the metadata point.
fn qdrant_filter(filter: &Filter) -> Result<QFilter, StoreError> {
    let mut must = Vec::with_capacity(filter.must.len());
    for c in &filter.must {
        must.push(match c {
            Condition::Equals { field, value } => match value {
                Value::String(s) => QCondition::matches(field, s.clone()),
                Value::Bool(b) => QCondition::matches(field, *b),
                Value::Number(n) if n.as_i64().is_some() => {
                    QCondition::matches(field, n.as_i64().unwrap_or_default())
                }
                other => {
                    return Err(StoreError::Filter(format!(
                        "{field}: cannot match {other} (use a string, an integer or a boolean)"
                    )))
                }
            },
            Condition::Range { field, gte, lt } => {
                let is_datetime = INDEXED_FIELDS
                    .iter()
                    .any(|(f, kind)| f == field && *kind == "datetime");
                if is_datetime {
                    QCondition::datetime_range(
                        field,
                        DatetimeRange {
                            gte: gte.as_ref().map(|v| timestamp(field, v)).transpose()?,
                            lt: lt.as_ref().map(|v| timestamp(field, v)).transpose()?,
                            ..Default::default()
                        },
                    )
                } else {
                    QCondition::range(
                        field,
                        Range {
                            gte: gte.as_ref().map(|v| number(field, v)).transpose()?,
                            lt: lt.as_ref().map(|v| number(field, v)).transpose()?,
                            ..Default::default()
                        },
                    )
                }
            }
        });
    }
    Ok(QFilter {
        must,
        must_not: vec![QCondition::has_id([meta_point_id().to_string()])],
        ..Default::default()
    })
}

impl QdrantStore {
    /// One page of points, with the dense vectors when asked.
    async fn scroll_points(
        &self,
        collection: &str,
        filter: &Filter,
        offset: Option<String>,
        limit: usize,
        with_vectors: bool,
    ) -> Result<(Vec<qdrant_client::qdrant::RetrievedPoint>, Option<String>), StoreError> {
        let mut request = ScrollPointsBuilder::new(collection)
            .filter(qdrant_filter(filter)?)
            .limit(limit.max(1) as u32)
            .with_payload(true);
        if with_vectors {
            request = request.with_vectors(qdrant_client::qdrant::VectorsSelector {
                names: vec![DENSE.to_string()],
            });
        }
        if let Some(o) = offset {
            let id = match o.parse::<u64>() {
                Ok(n) => PointId::from(n),
                Err(_) => PointId::from(o),
            };
            request = request.offset(id);
        }
        let response = self
            .call(Some(collection), self.client.scroll(request))
            .await?;
        Ok((
            response.result,
            response.next_page_offset.map(|id| id_string(Some(id))),
        ))
    }
}

impl VectorStore for QdrantStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn open_collection(&self, spec: &CollectionSpec) -> Result<CollectionSpec, StoreError> {
        let physical = self.resolve(&spec.name).await?;
        if !self.exists(&physical).await? {
            let mut spec = spec.clone();
            spec.name = physical;
            self.create(&spec).await?;
            return Ok(spec);
        }
        let spec = &CollectionSpec {
            name: physical,
            ..spec.clone()
        };
        let stored = self.read_spec(&spec.name).await?;
        if stored.is_none() && self.count(&spec.name, &Filter::default()).await? == 0 {
            // Created, then interrupted before its metadata point: nothing is in it, so
            // finishing the creation loses nothing.
            tracing::warn!(collection = %spec.name, "finishing an interrupted collection creation");
            self.finish_creation(spec).await?;
            return Ok(spec.clone());
        }
        super::check_model(BACKEND, stored, spec)
    }

    async fn write_spec(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        let physical = self.resolve(&spec.name).await?;
        self.write_meta(&CollectionSpec {
            name: physical,
            ..spec.clone()
        })
        .await
    }

    async fn collection_spec(&self, name: &str) -> Result<Option<CollectionSpec>, StoreError> {
        let physical = self.resolve(name).await?;
        if !self.exists(&physical).await? {
            return Ok(None);
        }
        self.read_spec(&physical).await
    }

    async fn drop_collection(&self, name: &str) -> Result<(), StoreError> {
        self.forget_dimensions()?;
        let physical = self.resolve(name).await?;
        if physical != name {
            self.call(None, self.client.delete_alias(name)).await?;
        }
        if self.exists(&physical).await? {
            // The server drops the collection's other aliases with it.
            self.call(None, self.client.delete_collection(&physical))
                .await?;
        }
        Ok(())
    }

    async fn list_collections(&self) -> Result<Vec<String>, StoreError> {
        let list = self.call(None, self.client.list_collections()).await?;
        let mut names: Vec<String> = list.collections.into_iter().map(|c| c.name).collect();
        names.sort();
        Ok(names)
    }

    async fn list_aliases(&self) -> Result<Vec<(String, String)>, StoreError> {
        let list = self.call(None, self.client.list_aliases()).await?;
        let mut aliases: Vec<(String, String)> = list
            .aliases
            .into_iter()
            .map(|a| (a.alias_name, a.collection_name))
            .collect();
        aliases.sort();
        Ok(aliases)
    }

    async fn resolve(&self, name: &str) -> Result<String, StoreError> {
        let aliases = self.call(None, self.client.list_aliases()).await?;
        Ok(aliases
            .aliases
            .into_iter()
            .find(|a| a.alias_name == name)
            .map_or_else(|| name.to_string(), |a| a.collection_name))
    }

    async fn set_alias(&self, alias: &str, collection: &str) -> Result<(), StoreError> {
        self.forget_dimensions()?;
        if self.exists(alias).await? {
            return Err(err(format!(
                "cannot alias {alias:?}: a collection has that name (drop it first)"
            )));
        }
        let target = self.resolve(collection).await?;
        if !self.exists(&target).await? {
            return Err(StoreError::NoCollection(target));
        }
        let moving = self.resolve(alias).await? != alias;
        self.update_aliases_atomically(alias, &target, moving).await
    }

    async fn upsert(&self, collection: &str, points: Vec<ChunkPoint>) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let dim = self.dimension(collection).await?;
        let mut batch = Vec::with_capacity(points.len());
        for p in points {
            let p = p.into_parts(dim)?;
            let vectors = NamedVectors::default()
                .add_vector(DENSE, Vector::new_dense(p.dense))
                .add_vector(BM25, Vector::new_sparse(p.bm25.indices, p.bm25.values));
            batch.push(PointStruct::new(
                p.id.to_string(),
                vectors,
                Payload::from(p.payload),
            ));
        }
        self.call(
            Some(collection),
            self.client
                .upsert_points(UpsertPointsBuilder::new(collection, batch).wait(true)),
        )
        .await?;
        Ok(())
    }

    async fn delete_content(
        &self,
        collection: &str,
        content_id: &str,
        from_index: usize,
    ) -> Result<(), StoreError> {
        let filter = Filter::content_from(content_id, from_index);
        self.call(
            Some(collection),
            self.client.delete_points(
                DeletePointsBuilder::new(collection)
                    .points(qdrant_filter(&filter)?)
                    .wait(true),
            ),
        )
        .await?;
        Ok(())
    }

    async fn set_item_fields(
        &self,
        collection: &str,
        content_id: &str,
        fields: Map<String, Value>,
    ) -> Result<(), StoreError> {
        self.call(
            Some(collection),
            self.client.set_payload(
                SetPayloadPointsBuilder::new(collection, Payload::from(fields))
                    .points_selector(qdrant_filter(&Filter::content(content_id))?)
                    .wait(true),
            ),
        )
        .await?;
        Ok(())
    }

    async fn get(
        &self,
        collection: &str,
        keys: &[(String, usize)],
    ) -> Result<Vec<StoredChunk>, StoreError> {
        let ids: Vec<PointId> = keys
            .iter()
            .map(|(c, i)| PointId::from(point_id(c, *i).to_string()))
            .collect();
        let response = self
            .call(
                Some(collection),
                self.client
                    .get_points(GetPointsBuilder::new(collection, ids.clone()).with_payload(true)),
            )
            .await?;
        // The server returns found points in no promised order: restore the order of `keys`.
        let mut found: std::collections::HashMap<String, StoredChunk> = response
            .result
            .into_iter()
            .map(|p| {
                let c = to_chunk(p.id, p.payload);
                (c.point_id.clone(), c)
            })
            .collect();
        Ok(ids
            .into_iter()
            .filter_map(|id| found.remove(&id_string(Some(id))))
            .collect())
    }

    async fn query(
        &self,
        collection: &str,
        query: &ChunkQuery,
    ) -> Result<Vec<ScoredChunk>, StoreError> {
        let request = self.query_request(collection, query).await?;
        let response = self
            .call(Some(collection), self.client.query(request))
            .await?;
        Ok(scored(response.result))
    }

    async fn query_batch(
        &self,
        collection: &str,
        queries: &[ChunkQuery],
    ) -> Result<Vec<Vec<ScoredChunk>>, StoreError> {
        let mut out = Vec::with_capacity(queries.len());
        for batch in queries.chunks(QUERY_BATCH) {
            let mut requests = Vec::with_capacity(batch.len());
            for q in batch {
                requests.push(self.query_request(collection, q).await?);
            }
            let response = self
                .call(
                    Some(collection),
                    self.client
                        .query_batch(QueryBatchPointsBuilder::new(collection, requests)),
                )
                .await?;
            out.extend(response.result.into_iter().map(|r| scored(r.result)));
        }
        Ok(out)
    }

    async fn scroll(
        &self,
        collection: &str,
        filter: &Filter,
        offset: Option<String>,
        limit: usize,
    ) -> Result<(Vec<StoredChunk>, Option<String>), StoreError> {
        let (points, next) = self
            .scroll_points(collection, filter, offset, limit, false)
            .await?;
        Ok((
            points
                .into_iter()
                .map(|p| to_chunk(p.id, p.payload))
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
        use qdrant_client::qdrant::{vector_output, vectors_output::VectorsOptions};
        let (points, next) = self
            .scroll_points(collection, filter, offset, limit, true)
            .await?;
        let mut out = Vec::with_capacity(points.len());
        for p in points {
            let output = match p.vectors.and_then(|v| v.vectors_options) {
                Some(VectorsOptions::Vectors(mut named)) => named.vectors.remove(DENSE),
                Some(VectorsOptions::Vector(v)) => Some(v),
                None => None,
            };
            let vector = match output.map(|o| o.into_vector()) {
                Some(vector_output::Vector::Dense(d)) => d.data,
                _ => Vec::new(),
            };
            out.push((to_chunk(p.id, p.payload), vector));
        }
        Ok((out, next))
    }

    async fn optimize(&self, collection: &str, wait: bool) -> Result<(), StoreError> {
        if !wait {
            return Ok(());
        }
        // Green (no optimization running) with the same indexed count twice, a second apart: an
        // optimizer may not have started yet right after the last write.
        let mut last = None;
        loop {
            let info = self
                .call(Some(collection), self.client.collection_info(collection))
                .await?
                .result
                .ok_or_else(|| err(format!("Qdrant sent no info for {collection:?}")))?;
            let green = info.status == qdrant_client::qdrant::CollectionStatus::Green as i32;
            let indexed = info.indexed_vectors_count;
            if green && last == Some(indexed) {
                return Ok(());
            }
            last = green.then_some(indexed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn count(&self, collection: &str, filter: &Filter) -> Result<usize, StoreError> {
        let response = self
            .call(
                Some(collection),
                self.client.count(
                    CountPointsBuilder::new(collection)
                        .filter(qdrant_filter(filter)?)
                        .exact(true),
                ),
            )
            .await?;
        Ok(response.result.map_or(0, |r| r.count as usize))
    }
}
