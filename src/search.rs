//! Search: the one query path that `signaldesk search`, the evals, the pipeline and the HTTP API
//! all call, so a figure measured by an eval is what a user's query gets.
//!
//! A query is embedded (dense), encoded with the collection's BM25 settings (sparse), or both
//! (hybrid: the two lists fused by weighted reciprocal rank fusion inside the store), scored over
//! chunks, and collapsed to content items: an item is ranked by its best chunk, and the hit says
//! which chunk and byte span matched. Every behaviour knob lives in [`SearchConfig`]
//! (`search.*` in the configuration file).

use serde::Serialize;
use serde_json::Value;

use crate::config::{HybridConfig, SearchConfig, SearchMode};
use crate::embed::bm25::Bm25Encoder;
use crate::embed::{EmbedError, Embedder};
use crate::store::{
    ChunkQuery, CollectionSpec, Filter, QueryVectors, ScoredChunk, StoreError, VectorStore,
};

/// Chunks fetched per wanted item on the first try; more are fetched while items are missing.
const CHUNKS_PER_ITEM: usize = 4;

/// Errors of a search.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("collection {0:?} does not exist: run `signaldesk ingest FILE` first")]
    NoCollection(String),
    #[error("the query is empty: give some text to search for")]
    EmptyQuery,
    #[error("k must be at least 1")]
    ZeroK,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// One content item found, ranked by its best chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// The content item's id.
    pub id: String,
    /// The best chunk's score (cosine, BM25 or fused RRF score, by mode).
    pub score: f32,
    /// The item's title, if it has one.
    pub title: Option<String>,
    /// Index of the best chunk within the item.
    pub chunk: usize,
    /// Byte span of that chunk in the item's text.
    pub start: usize,
    pub end: usize,
    /// The chunk's text.
    pub text: String,
    /// The item's other fields as ingested (`metadata` in the payload): labels of a labelled
    /// memory, a desk, anything a caller filters or votes on.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, Value>,
    /// The item's tags, as `signaldesk enrich` stored them (concept ids).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The item's summary and standfirst, as `signaldesk enrich --summaries` stored them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standfirst: Option<String>,
}

impl Hit {
    fn from_chunk(c: ScoredChunk) -> Self {
        let p = &c.chunk.payload;
        let num = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        Self {
            id: c.chunk.content_id.clone(),
            score: c.score,
            title: p.get("title").and_then(Value::as_str).map(str::to_string),
            chunk: c.chunk.chunk_index,
            start: num("start"),
            end: num("end"),
            text: p
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            metadata: p
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            tags: p
                .get("tags")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            summary: p.get("summary").and_then(Value::as_str).map(str::to_string),
            standfirst: p
                .get("standfirst")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }
}

/// Searches one collection with one embedder and one set of settings.
pub struct Searcher<'a, S> {
    store: &'a S,
    embedder: &'a Embedder,
    spec: CollectionSpec,
    bm25: Bm25Encoder,
    settings: SearchConfig,
}

impl<'a, S: VectorStore> Searcher<'a, S> {
    /// Open `collection` for searching: it must exist and hold `embedder`'s vectors.
    pub async fn open(
        store: &'a S,
        embedder: &'a Embedder,
        collection: &str,
        settings: &SearchConfig,
    ) -> Result<Self, SearchError> {
        let spec = store
            .collection_spec(collection)
            .await?
            .ok_or_else(|| SearchError::NoCollection(collection.to_string()))?;
        if spec.model_fingerprint != embedder.fingerprint()
            || spec.dimension != embedder.dimension()
        {
            return Err(StoreError::ModelMismatch {
                collection: collection.to_string(),
                stored_model: spec.model_id,
                stored_dim: spec.dimension,
                model: embedder.model_id().to_string(),
                dim: embedder.dimension(),
            }
            .into());
        }
        // Query weights do not depend on the average length; the collection's is used anyway.
        let bm25 = Bm25Encoder::new(spec.bm25_avg_len);
        Ok(Self {
            store,
            embedder,
            spec,
            bm25,
            settings: settings.clone(),
        })
    }

    /// The same searcher with other fusion settings (for tuning them on a train split).
    pub fn with_hybrid(mut self, hybrid: HybridConfig) -> Self {
        self.settings.hybrid = hybrid;
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> &SearchConfig {
        &self.settings
    }

    /// The embedder queries go through.
    pub fn embedder(&self) -> &'a Embedder {
        self.embedder
    }

    /// The collection's stored spec.
    pub fn spec(&self) -> &CollectionSpec {
        &self.spec
    }

    /// The top `k` items for `query`.
    pub async fn search(
        &self,
        query: &str,
        mode: SearchMode,
        filter: &Filter,
        k: usize,
    ) -> Result<Vec<Hit>, SearchError> {
        Ok(self
            .search_many(&[query], mode, filter, k)
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// The top `k` items for each query, in order; the queries are embedded as one batch.
    pub async fn search_many(
        &self,
        queries: &[&str],
        mode: SearchMode,
        filter: &Filter,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        if k == 0 {
            return Err(SearchError::ZeroK);
        }
        if queries.iter().any(|q| q.trim().is_empty()) {
            return Err(SearchError::EmptyQuery);
        }
        let dense = match mode {
            SearchMode::Bm25 => vec![Vec::new(); queries.len()],
            _ => self.embedder.embed(queries)?,
        };
        self.search_embedded(queries, dense, mode, filter, k).await
    }

    /// [`Self::search_many`] for queries already embedded by this searcher's embedder (`dense`,
    /// one per query; empty in BM25 mode): for callers that need the vectors themselves too.
    pub async fn search_embedded(
        &self,
        queries: &[&str],
        dense: Vec<Vec<f32>>,
        mode: SearchMode,
        filter: &Filter,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        if k == 0 {
            return Err(SearchError::ZeroK);
        }
        let mut vectors = Vec::with_capacity(queries.len());
        for (query, dense) in queries.iter().zip(dense) {
            vectors.push(match mode {
                SearchMode::Dense => QueryVectors::Dense(dense),
                SearchMode::Bm25 => QueryVectors::Sparse(self.bm25.query(query)),
                SearchMode::Hybrid => QueryVectors::Hybrid {
                    dense,
                    sparse: self.bm25.query(query),
                    rrf_k: self.settings.hybrid.rrf_k,
                    dense_weight: self.settings.hybrid.dense_weight,
                    candidates: self.settings.hybrid.candidates,
                },
            });
        }
        // First pass for every query in one batch; a query whose chunks collapse to fewer than
        // `k` items while the store holds more fetches again on its own.
        let limit = k.saturating_mul(CHUNKS_PER_ITEM);
        let first: Vec<ChunkQuery> = vectors
            .iter()
            .map(|v| self.chunk_query(v.clone(), filter, limit))
            .collect();
        let answers = self.store.query_batch(&self.spec.name, &first).await?;
        let mut out = Vec::with_capacity(queries.len());
        for (vectors, chunks) in vectors.into_iter().zip(answers) {
            let exhausted = chunks.len() < limit;
            let hits = collapse(chunks, k);
            out.push(if hits.len() >= k || exhausted {
                hits
            } else {
                self.items(vectors, filter, k, limit.saturating_mul(2))
                    .await?
            });
        }
        Ok(out)
    }

    fn chunk_query(&self, vectors: QueryVectors, filter: &Filter, limit: usize) -> ChunkQuery {
        let configured = self.settings.hnsw_ef;
        // Hybrid fuses the whole dense candidate list, so its tail must be as right as its head:
        // an HNSW search with ef equal to the list's length misses some of its last ranks. On
        // SciFact's 300 test queries, against an exact scan, the hybrid top 10 differed for 33
        // with ef = the list's length, 7 with twice it and 1 with four times it; the cost stays
        // far below the query embedding's.
        let hnsw_ef = match &vectors {
            QueryVectors::Hybrid { candidates, .. } => Some(configured.max(4 * candidates)),
            _ => (configured > 0).then_some(configured),
        };
        ChunkQuery {
            vectors,
            filter: filter.clone(),
            limit,
            exact: self.settings.exact,
            hnsw_ef,
            oversampling: (self.settings.oversampling > 0.0).then_some(self.settings.oversampling),
            payload_fields: None,
        }
    }

    /// Collapse ranked chunks to the first `k` distinct items, fetching more chunks (from
    /// `limit`, doubling) while fewer than `k` items are found and the store may hold more. The
    /// chunk ranking does not depend on how many are fetched, so the top `k` is always a prefix
    /// of the top `k + n`.
    async fn items(
        &self,
        vectors: QueryVectors,
        filter: &Filter,
        k: usize,
        mut limit: usize,
    ) -> Result<Vec<Hit>, SearchError> {
        loop {
            let query = self.chunk_query(vectors.clone(), filter, limit);
            let chunks = self.store.query(&self.spec.name, &query).await?;
            let exhausted = chunks.len() < limit;
            let hits = collapse(chunks, k);
            if hits.len() >= k || exhausted {
                return Ok(hits);
            }
            limit = limit.saturating_mul(2);
        }
    }
}

/// The first `k` distinct items of `chunks`, each at its best chunk. Equal scores are common in
/// fusion (1.25/(10+15) = 1/(10+10)); the store breaks them by its internal order, which differs
/// between two builds of the same data, so they are broken by id instead, and equal collections
/// always rank alike.
fn collapse(mut chunks: Vec<ScoredChunk>, k: usize) -> Vec<Hit> {
    chunks.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.chunk.content_id.cmp(&b.chunk.content_id))
            .then_with(|| a.chunk.chunk_index.cmp(&b.chunk.chunk_index))
    });
    let mut seen = std::collections::HashSet::new();
    chunks
        .into_iter()
        .filter(|c| seen.insert(c.chunk.content_id.clone()))
        .take(k)
        .map(Hit::from_chunk)
        .collect()
}
