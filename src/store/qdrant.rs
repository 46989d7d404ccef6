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
    PrefetchQueryBuilder, Query, QueryPointsBuilder, Range, Rrf, ScrollPointsBuilder,
    SearchParamsBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder,
    UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde_json::{Map, Value};

use super::{
    meta_point_id, point_id, ChunkPoint, ChunkQuery, CollectionSpec, Condition, Filter,
    QueryVectors, ScoredChunk, StoreError, StoredChunk, VectorStore, BM25, DENSE, INDEXED_FIELDS,
};

const BACKEND: &str = "qdrant";
const META_KEY: &str = "_signaldesk_collection";

/// Collections on a Qdrant server.
pub struct QdrantStore {
    client: Qdrant,
    url: String,
    api_key: Option<String>,
    timeout: Duration,
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

/// Maps "collection not found" to [`StoreError::NoCollection`], anything else to a backend error.
fn call_err(collection: &str) -> impl Fn(QdrantError) -> StoreError + '_ {
    move |e| match &e {
        QdrantError::ResponseError { status }
            if status.code() == tonic::Code::NotFound
                && status.message().to_ascii_lowercase().contains("collection") =>
        {
            StoreError::NoCollection(collection.to_string())
        }
        _ => err(e),
    }
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
            dimensions: Default::default(),
        })
    }

    /// The server address, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a real collection (not an alias) is called `name`.
    async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        // Listed rather than `collection_exists`, which may also answer for aliases.
        let list = self
            .client
            .list_collections()
            .await
            .map_err(|e| err(format!("{}: {e}", self.url)))?;
        Ok(list.collections.iter().any(|c| c.name == name))
    }

    async fn create(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        let mut vectors = VectorsConfigBuilder::default();
        vectors.add_named_vector_params(
            DENSE,
            VectorParamsBuilder::new(
                spec.dimension as u64,
                qdrant_client::qdrant::Distance::Cosine,
            ),
        );
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            BM25,
            SparseVectorParamsBuilder::default().modifier(Modifier::Idf as i32),
        );
        self.client
            .create_collection(
                CreateCollectionBuilder::new(&spec.name)
                    .vectors_config(vectors)
                    .sparse_vectors_config(sparse),
            )
            .await
            .map_err(err)?;
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
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(&spec.name, *field, field_type)
                        .wait(true),
                )
                .await
                .map_err(err)?;
        }
        super::crash_point("indexes-created");
        self.write_meta(spec).await?;
        super::crash_point("metadata-written");
        Ok(())
    }

    /// Upsert the metadata point (the collection's spec).
    async fn write_meta(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        let meta = Payload::try_from(serde_json::json!({ META_KEY: spec })).map_err(err)?;
        self.client
            .upsert_points(
                UpsertPointsBuilder::new(
                    &spec.name,
                    vec![PointStruct::new(
                        meta_point_id().to_string(),
                        NamedVectors::default(),
                        meta,
                    )],
                )
                .wait(true),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn read_spec(&self, name: &str) -> Result<Option<CollectionSpec>, StoreError> {
        let response = self
            .client
            .get_points(
                GetPointsBuilder::new(name, vec![PointId::from(meta_point_id().to_string())])
                    .with_payload(true),
            )
            .await
            .map_err(call_err(name))?;
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
        let channel = tonic::transport::Channel::from_shared(self.url.clone())
            .map_err(|e| err(format!("{}: {e}", self.url)))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(self.timeout)
            .connect()
            .await
            .map_err(|e| err(format!("{}: {e}", self.url)))?;
        let key = match &self.api_key {
            Some(k) => Some(
                tonic::metadata::MetadataValue::try_from(k.as_str())
                    .map_err(|_| err("the API key is not a valid header value"))?,
            ),
            None => None,
        };
        let mut client =
            CollectionsClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
                if let Some(k) = &key {
                    req.metadata_mut().insert("api-key", k.clone());
                }
                Ok(req)
            });
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
        client
            .update_aliases(ChangeAliases {
                actions,
                timeout: None,
            })
            .await
            .map_err(|status| err(format!("{}: moving alias {alias:?}: {status}", self.url)))?;
        Ok(())
    }

    /// Names may now point elsewhere (a dropped collection, a moved alias).
    fn forget_dimensions(&self) -> Result<(), StoreError> {
        self.dimensions.lock().map_err(err)?.clear();
        Ok(())
    }
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
            self.client.delete_alias(name).await.map_err(err)?;
        }
        if self.exists(&physical).await? {
            // The server drops the collection's other aliases with it.
            self.client
                .delete_collection(&physical)
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    async fn resolve(&self, name: &str) -> Result<String, StoreError> {
        let aliases = self
            .client
            .list_aliases()
            .await
            .map_err(|e| err(format!("{}: {e}", self.url)))?;
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
        self.client
            .upsert_points(UpsertPointsBuilder::new(collection, batch).wait(true))
            .await
            .map_err(call_err(collection))?;
        Ok(())
    }

    async fn delete_content(
        &self,
        collection: &str,
        content_id: &str,
        from_index: usize,
    ) -> Result<(), StoreError> {
        let filter = Filter::content_from(content_id, from_index);
        self.client
            .delete_points(
                DeletePointsBuilder::new(collection)
                    .points(qdrant_filter(&filter)?)
                    .wait(true),
            )
            .await
            .map_err(call_err(collection))?;
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
            .client
            .get_points(GetPointsBuilder::new(collection, ids.clone()).with_payload(true))
            .await
            .map_err(call_err(collection))?;
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
        let filter = qdrant_filter(&query.filter)?;
        let params = SearchParamsBuilder::default().exact(query.exact);
        let dim_check = |v: &Vec<f32>, dim: usize| {
            super::check_dimension(|| "the query vector".into(), dim, v.len())
        };
        let mut request = QueryPointsBuilder::new(collection)
            .filter(filter.clone())
            .limit(query.limit as u64)
            .with_payload(true)
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
        let response = self
            .client
            .query(request)
            .await
            .map_err(call_err(collection))?;
        Ok(response
            .result
            .into_iter()
            .map(|p| ScoredChunk {
                score: p.score,
                chunk: to_chunk(p.id, p.payload),
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
        let mut request = ScrollPointsBuilder::new(collection)
            .filter(qdrant_filter(filter)?)
            .limit(limit.max(1) as u32)
            .with_payload(true);
        if let Some(o) = offset {
            let id = match o.parse::<u64>() {
                Ok(n) => PointId::from(n),
                Err(_) => PointId::from(o),
            };
            request = request.offset(id);
        }
        let response = self
            .client
            .scroll(request)
            .await
            .map_err(call_err(collection))?;
        Ok((
            response
                .result
                .into_iter()
                .map(|p| to_chunk(p.id, p.payload))
                .collect(),
            response.next_page_offset.map(|id| id_string(Some(id))),
        ))
    }

    async fn count(&self, collection: &str, filter: &Filter) -> Result<usize, StoreError> {
        let response = self
            .client
            .count(
                CountPointsBuilder::new(collection)
                    .filter(qdrant_filter(filter)?)
                    .exact(true),
            )
            .await
            .map_err(call_err(collection))?;
        Ok(response.result.map_or(0, |r| r.count as usize))
    }
}
