//! The recommendable items as the ranker sees them: read once from the vector store (vectors,
//! enrichment's tags, payload fields) and held in memory, so features cost a lookup.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::RankError;
use crate::content::parse_timestamp;
use crate::store::{Filter, VectorStore};

/// One item: its mean chunk vector (unit length), tags and ranking-relevant payload.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueItem {
    pub id: String,
    pub title: String,
    pub source: Option<String>,
    pub content_type: Option<String>,
    /// `published_at` as Unix seconds.
    pub published: Option<i64>,
    /// Not recommendable before this time (`embargo_until`, top level or in `metadata`).
    pub embargo_until: Option<i64>,
    /// The served tags (`tags`, editors' decisions applied) at the model's confidence
    /// (`tag_scores`), or 1 for an editor's addition.
    pub tags: Vec<(String, f32)>,
    /// The whole first chunk's payload, for numeric features and business rules.
    pub payload: Map<String, Value>,
}

/// Every item of a collection, indexed by position.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub items: Vec<CatalogueItem>,
    /// Row-major `[items, dim]`, each row unit length.
    vectors: Vec<f32>,
    dim: usize,
    index: HashMap<String, usize>,
}

impl Catalogue {
    /// Read `collection` whole (one pass of `scroll_vectors`).
    pub async fn load<S: VectorStore>(store: &S, collection: &str) -> Result<Self, RankError> {
        let mut sums: Vec<(StoredParts, Vec<f32>)> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        let mut offset = None;
        loop {
            let (page, next) = store
                .scroll_vectors(collection, &Filter::default(), offset, 512)
                .await?;
            for (chunk, vector) in page {
                match at.get(&chunk.content_id) {
                    Some(&i) => {
                        for (s, v) in sums[i].1.iter_mut().zip(&vector) {
                            *s += v;
                        }
                        if chunk.chunk_index == 0 {
                            sums[i].0 = StoredParts(chunk.content_id.clone(), chunk.payload);
                        }
                    }
                    None => {
                        at.insert(chunk.content_id.clone(), sums.len());
                        sums.push((StoredParts(chunk.content_id, chunk.payload), vector));
                    }
                }
            }
            match next {
                Some(n) => offset = Some(n),
                None => break,
            }
        }
        if sums.is_empty() {
            return Err(RankError::EmptyCatalogue(collection.to_string()));
        }
        // Stable order whatever the backend's scroll order: by id (numerically for numeric
        // ids), which is also how equal scores are ordered.
        sums.sort_by(|a, b| super::item_order(&a.0 .0, &b.0 .0));
        let mut catalogue = Self::default();
        for (StoredParts(id, payload), vector) in sums {
            catalogue.push(item_from_payload(id, payload), vector)?;
        }
        Ok(catalogue)
    }

    /// Add an item (its vector is normalised here).
    pub fn push(&mut self, item: CatalogueItem, mut vector: Vec<f32>) -> Result<(), RankError> {
        if self.dim == 0 {
            self.dim = vector.len();
        } else if vector.len() != self.dim {
            return Err(RankError::Parse(format!(
                "item {} has a {}-dimensional vector, others {}",
                item.id,
                vector.len(),
                self.dim
            )));
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        vector.iter_mut().for_each(|x| *x /= norm);
        self.index.insert(item.id.clone(), self.items.len());
        self.items.push(item);
        self.vectors.extend_from_slice(&vector);
        Ok(())
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// No items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Position of item `id`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Unit vector of the item at `i`.
    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    /// Cosine similarity of items `a` and `b`.
    pub fn similarity(&self, a: usize, b: usize) -> f32 {
        dot(self.vector(a), self.vector(b))
    }
}

struct StoredParts(String, Map<String, Value>);

/// Dot product, in eight independent running sums the compiler keeps in SIMD registers (one
/// running sum is a serial chain of adds no vectoriser may reorder: scanning a catalogue's
/// vectors that way was several times slower).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn item_from_payload(id: String, payload: Map<String, Value>) -> CatalogueItem {
    let text = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_string);
    let time = |k: &str| {
        payload
            .get(k)
            .or_else(|| payload.get("metadata").and_then(|m| m.get(k)))
            .and_then(|v| match v {
                Value::String(s) => parse_timestamp(s),
                Value::Number(n) => n.as_i64(),
                _ => None,
            })
    };
    // The served tags (`tags`: the model's with editors' decisions applied), each at the model's
    // confidence (`tag_scores`) when it has one, an editor's addition at 1.
    let confidence: HashMap<&str, f32> = payload
        .get("tag_scores")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t.get("label")?.as_str()?,
                t.get("confidence").and_then(Value::as_f64).unwrap_or(1.0) as f32,
            ))
        })
        .collect();
    let tags = payload
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    let t = t.as_str()?;
                    Some((t.to_string(), confidence.get(t).copied().unwrap_or(1.0)))
                })
                .collect()
        })
        .unwrap_or_default();
    CatalogueItem {
        title: text("title").unwrap_or_default(),
        source: text("source"),
        content_type: text("content_type"),
        published: time("published_at"),
        embargo_until: time("embargo_until"),
        tags,
        id,
        payload,
    }
}

/// A payload field by name (`metadata.KEY` reaches into metadata) as a number.
pub fn numeric_field(payload: &Map<String, Value>, name: &str) -> Option<f64> {
    let v = match name.strip_prefix("metadata.") {
        Some(key) => payload.get("metadata")?.get(key)?,
        None => payload.get(name)?,
    };
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// A payload field by name as text (for boosts): strings as they are, numbers printed.
pub fn text_field(payload: &Map<String, Value>, name: &str) -> Option<String> {
    let v = match name.strip_prefix("metadata.") {
        Some(key) => payload.get("metadata")?.get(key)?,
        None => payload.get(name)?,
    };
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}
