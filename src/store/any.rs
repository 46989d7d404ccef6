//! [`AnyStore`]: the backend chosen by configuration, behind the same trait.
//!
//! The trait's methods are `async fn`s (not object safe), so the runtime choice is an enum that
//! forwards each call: no boxing, and code generic over `VectorStore` takes it unchanged.

use std::path::Path;
use std::time::Duration;

use super::{
    ChunkPoint, ChunkQuery, CollectionLayout, CollectionSpec, EdgeStore, Filter, QdrantStore,
    ScoredChunk, StoreError, StoredChunk, VectorStore,
};
use crate::config::{StoreBackend, StoreConfig};

/// Environment variable holding the Qdrant server's API key (never put in config files).
pub const QDRANT_API_KEY_ENV: &str = "QDRANT_API_KEY";

/// One of the two backends.
pub enum AnyStore {
    Edge(EdgeStore),
    Qdrant(QdrantStore),
}

impl AnyStore {
    /// The store the product's commands use: `store.*`, with Edge's collections under
    /// `data_dir/edge`.
    pub fn open(config: &crate::config::Config) -> Result<Self, StoreError> {
        Self::from_config(&config.store, &config.data_dir.join("edge"))
    }

    /// The store offline evaluations write their collections to: `store.*`, with Edge's under
    /// `data_dir/eval`, apart from the product's own.
    pub fn open_for_eval(config: &crate::config::Config) -> Result<Self, StoreError> {
        Self::from_config(&config.store, &config.data_dir.join("eval"))
    }

    /// The configured backend: `edge` keeps its collections under `edge_root`; `qdrant`
    /// connects to `config.url` with the API key from `QDRANT_API_KEY` if set.
    pub fn from_config(config: &StoreConfig, edge_root: &Path) -> Result<Self, StoreError> {
        match config.backend {
            StoreBackend::Edge => Ok(Self::Edge(
                EdgeStore::new(edge_root)?.with_quantization(config.quantization),
            )),
            StoreBackend::Qdrant => Ok(Self::Qdrant(
                QdrantStore::connect(
                    &config.url,
                    std::env::var(QDRANT_API_KEY_ENV)
                        .ok()
                        .filter(|k| !k.is_empty()),
                    Duration::from_secs(config.timeout_s),
                )?
                .with_layout(CollectionLayout {
                    shards: config.shards,
                    replication_factor: config.replication_factor,
                    write_consistency_factor: config.write_consistency_factor,
                })
                .with_quantization(config.quantization),
            )),
        }
    }
}

macro_rules! forward {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Edge($s) => $call.await,
            AnyStore::Qdrant($s) => $call.await,
        }
    };
}

impl VectorStore for AnyStore {
    fn backend(&self) -> &'static str {
        match self {
            AnyStore::Edge(s) => s.backend(),
            AnyStore::Qdrant(s) => s.backend(),
        }
    }
    async fn open_collection(&self, spec: &CollectionSpec) -> Result<CollectionSpec, StoreError> {
        forward!(self, s => s.open_collection(spec))
    }
    async fn write_spec(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        forward!(self, s => s.write_spec(spec))
    }
    async fn collection_spec(&self, name: &str) -> Result<Option<CollectionSpec>, StoreError> {
        forward!(self, s => s.collection_spec(name))
    }
    async fn drop_collection(&self, name: &str) -> Result<(), StoreError> {
        forward!(self, s => s.drop_collection(name))
    }
    async fn upsert(&self, collection: &str, points: Vec<ChunkPoint>) -> Result<(), StoreError> {
        let _stage = crate::observe::stage("store");
        forward!(self, s => s.upsert(collection, points))
    }
    async fn delete_content(
        &self,
        collection: &str,
        content_id: &str,
        from_index: usize,
    ) -> Result<(), StoreError> {
        forward!(self, s => s.delete_content(collection, content_id, from_index))
    }
    async fn get(
        &self,
        collection: &str,
        keys: &[(String, usize)],
    ) -> Result<Vec<StoredChunk>, StoreError> {
        forward!(self, s => s.get(collection, keys))
    }
    async fn query(
        &self,
        collection: &str,
        query: &ChunkQuery,
    ) -> Result<Vec<ScoredChunk>, StoreError> {
        let _stage = crate::observe::stage("store");
        forward!(self, s => s.query(collection, query))
    }
    async fn query_batch(
        &self,
        collection: &str,
        queries: &[ChunkQuery],
    ) -> Result<Vec<Vec<ScoredChunk>>, StoreError> {
        let _stage = crate::observe::stage("store");
        forward!(self, s => s.query_batch(collection, queries))
    }
    async fn scroll(
        &self,
        collection: &str,
        filter: &Filter,
        offset: Option<String>,
        limit: usize,
    ) -> Result<(Vec<StoredChunk>, Option<String>), StoreError> {
        forward!(self, s => s.scroll(collection, filter, offset, limit))
    }
    async fn scroll_vectors(
        &self,
        collection: &str,
        filter: &Filter,
        offset: Option<String>,
        limit: usize,
    ) -> Result<(Vec<(StoredChunk, Vec<f32>)>, Option<String>), StoreError> {
        forward!(self, s => s.scroll_vectors(collection, filter, offset, limit))
    }
    async fn count(&self, collection: &str, filter: &Filter) -> Result<usize, StoreError> {
        forward!(self, s => s.count(collection, filter))
    }
    async fn resolve(&self, name: &str) -> Result<String, StoreError> {
        forward!(self, s => s.resolve(name))
    }
    async fn set_alias(&self, alias: &str, collection: &str) -> Result<(), StoreError> {
        forward!(self, s => s.set_alias(alias, collection))
    }
    async fn set_item_fields(
        &self,
        collection: &str,
        content_id: &str,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), StoreError> {
        forward!(self, s => s.set_item_fields(collection, content_id, fields))
    }
    async fn list_collections(&self) -> Result<Vec<String>, StoreError> {
        forward!(self, s => s.list_collections())
    }
    async fn list_aliases(&self) -> Result<Vec<(String, String)>, StoreError> {
        forward!(self, s => s.list_aliases())
    }
    async fn optimize(&self, collection: &str, wait: bool) -> Result<(), StoreError> {
        forward!(self, s => s.optimize(collection, wait))
    }
}
