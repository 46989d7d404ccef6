//! `signaldesk reindex`: move a collection to a new embedding model without losing anything.
//!
//! Vectors of two models never share a collection (the store refuses it), so a model change
//! means a new physical collection. Reindexing reads every item back from the current one
//! (chunk 0 first, then its other chunks, a page of items at a time so memory stays bounded),
//! rebuilds the item's text from the stored chunk spans, embeds it with the new model into
//! `<name>-<fingerprint>`, checks that every item arrived, and only then points `<name>` at the
//! new collection and drops the old one. Until that switch, readers keep the old vectors; a
//! crash before it leaves the old collection untouched, and a re-run starts the new one afresh.
//! Item-level payload that ingest did not write itself (tags, summaries added by enrichment)
//! is carried over.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::pipeline::{
    collection_spec, hash_salt, physical_name, prepare, write_batch, Bm25Stats, IngestError,
    CHUNK_KEYS,
};
use crate::chunk::Chunker;
use crate::content::ContentItem;
use crate::embed::Embedder;
use crate::store::{Filter, StoreError, StoredChunk, VectorStore};

/// What a reindex did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReindexSummary {
    /// The name readers use (now an alias of `to`).
    pub name: String,
    /// The physical collection the vectors came from (dropped at the end).
    pub from: String,
    pub from_model: String,
    /// The new physical collection.
    pub to: String,
    pub to_model: String,
    pub dimension: usize,
    pub items: usize,
    pub chunks: usize,
    pub tokens: usize,
}

/// Re-embed every item of collection `name` with `embedder` and switch `name` over to it.
/// `on_progress(items)` is called after each page.
pub async fn reindex<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    name: &str,
    chunker: Option<Chunker>,
    page_items: usize,
    mut on_progress: impl FnMut(usize),
) -> Result<ReindexSummary, IngestError> {
    let old = store
        .collection_spec(name)
        .await?
        .ok_or_else(|| StoreError::NoCollection(name.to_string()))?;
    let from = store.resolve(name).await?;
    let to = physical_name(name, &embedder);
    if to == from || old.model_fingerprint == embedder.fingerprint() {
        return Err(StoreError::Backend {
            backend: store.backend(),
            message: format!(
                "collection {name:?} already holds vectors of {} (nothing to reindex)",
                old.model_id
            ),
        }
        .into());
    }
    // A half-built target from an interrupted run is rebuilt from scratch.
    store.drop_collection(&to).await?;
    let mut spec = store
        .open_collection(&collection_spec(&to, &embedder))
        .await?;
    let salt = hash_salt(&embedder, chunker);
    let first_chunks = Filter::first_chunks();
    let mut summary = ReindexSummary {
        name: name.to_string(),
        from: from.clone(),
        from_model: old.model_id.clone(),
        to: to.clone(),
        to_model: embedder.model_id().to_string(),
        dimension: embedder.dimension(),
        items: 0,
        chunks: 0,
        tokens: 0,
    };
    let mut offset = None;
    loop {
        let (page, next) = store
            .scroll(&from, &first_chunks, offset, page_items.max(1))
            .await?;
        let items = read_items(store, &from, page).await?;
        summary.items += items.len();
        let extras: HashMap<String, Map<String, Value>> = items
            .iter()
            .map(|(item, extra)| (item.id.clone(), extra.clone()))
            .collect();
        let todo: Vec<(ContentItem, String)> = items
            .into_iter()
            .map(|(item, _)| {
                let hash = item.content_hash(&salt);
                (item, hash)
            })
            .collect();
        let mut prepared = {
            let (embedder, stats) = (embedder.clone(), Bm25Stats::of(&spec));
            tokio::task::spawn_blocking(move || prepare(&embedder, chunker, todo, &[], stats))
                .await
                .map_err(|e| IngestError::Worker(e.to_string()))??
        };
        for p in &mut prepared.points {
            if let Some(extra) = extras.get(&p.content_id) {
                for (k, v) in extra {
                    p.payload.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        summary.chunks += prepared.points.len();
        summary.tokens += prepared.tokens;
        write_batch(store, &mut spec, prepared).await?;
        on_progress(summary.items);
        match next {
            Some(n) => offset = Some(n),
            None => break,
        }
    }
    let arrived = store.count(&to, &first_chunks).await?;
    if arrived != summary.items {
        return Err(StoreError::Backend {
            backend: store.backend(),
            message: format!(
                "reindex read {} items from {from:?} but {to:?} holds {arrived}; {name:?} still points at the old vectors",
                summary.items
            ),
        }
        .into());
    }
    // Indexed before readers are moved to it (Edge has no background optimizers).
    store.optimize(&to, false).await?;
    if from == name {
        // A collection made before ingest created collections behind aliases: `name` is a real
        // collection, so it must go before the alias can take its name (the one case with a
        // moment where `name` points at nothing). The new collection is complete and verified.
        store.drop_collection(name).await?;
        crate::store::crash_point("legacy-collection-dropped");
        store.set_alias(name, &to).await?;
    } else {
        // The alias moves first, in one step: readers see the old collection, then the new one,
        // never neither. A crash before the drop leaves the old collection unused, never lost.
        store.set_alias(name, &to).await?;
        crate::store::crash_point("alias-switched");
        store.drop_collection(&from).await?;
    }
    Ok(summary)
}

/// One stored item rebuilt from its chunks, with its extra (enrichment) payload: what
/// `GET /v1/content/{id}` and the editorial export read. `None` when no such item is stored.
pub async fn read_item<S: VectorStore>(
    store: &S,
    collection: &str,
    id: &str,
) -> Result<Option<(ContentItem, Map<String, Value>)>, IngestError> {
    let firsts = store.get(collection, &[(id.to_string(), 0)]).await?;
    if firsts.is_empty() {
        return Ok(None);
    }
    Ok(read_items(store, collection, firsts).await?.pop())
}

/// Rebuild the items whose first chunks are `firsts`: their text from all their chunk spans,
/// their fields from the payload. Returns each item with its extra (non-ingest) payload.
pub(crate) async fn read_items<S: VectorStore>(
    store: &S,
    collection: &str,
    firsts: Vec<StoredChunk>,
) -> Result<Vec<(ContentItem, Map<String, Value>)>, IngestError> {
    let mut keys = Vec::new();
    for c in &firsts {
        let count = c
            .payload
            .get("chunk_count")
            .and_then(Value::as_u64)
            .unwrap_or(1) as usize;
        keys.extend((1..count).map(|i| (c.content_id.clone(), i)));
    }
    let mut rest: HashMap<String, Vec<StoredChunk>> = HashMap::new();
    for chunk in store.get(collection, &keys).await? {
        rest.entry(chunk.content_id.clone())
            .or_default()
            .push(chunk);
    }
    let mut items = Vec::with_capacity(firsts.len());
    for first in firsts {
        let mut chunks = rest.remove(&first.content_id).unwrap_or_default();
        chunks.push(first);
        chunks.sort_by_key(|c| c.chunk_index);
        items.push(rebuild(chunks).map_err(|message| StoreError::Backend {
            backend: store.backend(),
            message,
        })?);
    }
    Ok(items)
}

/// An item from its chunks (sorted by index, chunk 0 first).
fn rebuild(chunks: Vec<StoredChunk>) -> Result<(ContentItem, Map<String, Value>), String> {
    let first = &chunks[0];
    let id = first.content_id.clone();
    let expected = first
        .payload
        .get("chunk_count")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    if chunks.len() != expected {
        return Err(format!(
            "item {id:?} has {} of its {expected} chunks stored; re-ingest it",
            chunks.len()
        ));
    }
    // Chunk spans are byte ranges of the item's text; with overlap they share a prefix with
    // the previous chunk's end, which is skipped.
    let mut text = String::new();
    for c in &chunks {
        let start = c.payload.get("start").and_then(Value::as_u64).unwrap_or(0) as usize;
        let end = c.payload.get("end").and_then(Value::as_u64).unwrap_or(0) as usize;
        let chunk_text = c.payload.get("text").and_then(Value::as_str).unwrap_or("");
        if start > text.len() || end < start || chunk_text.len() != end - start {
            return Err(format!(
                "item {id:?}: chunk {} spans {start}..{end}, which does not continue the text",
                c.chunk_index
            ));
        }
        if end > text.len() {
            let skip = text.len() - start;
            let tail = chunk_text.get(skip..).ok_or_else(|| {
                format!(
                    "item {id:?}: chunk {} overlap is not on a character boundary",
                    c.chunk_index
                )
            })?;
            text.push_str(tail);
        }
    }
    let p = &first.payload;
    let item = ContentItem::from_payload(id, text, p)?;
    let extra = p
        .iter()
        .filter(|(k, _)| {
            !CHUNK_KEYS.contains(&k.as_str()) && !ContentItem::PAYLOAD_KEYS.contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok((item, extra))
}
