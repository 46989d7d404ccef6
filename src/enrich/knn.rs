//! The kNN tagger: an item gets the labels of the labelled items most like it.
//!
//! The labelled memory is an ordinary collection whose items list their concept ids in a
//! `labels` field (ingested like any content: `signaldesk ingest train.jsonl`). For each item the
//! `k` nearest memory items are found through [`Searcher`] in dense mode (the one search path);
//! each votes its labels with its cosine similarity as weight, and a label is kept when its share
//! of the votes reaches the threshold, the best-voted `min_labels` always. `k` and the threshold
//! are configuration (`enrich.knn`), tuned by `eval tagging` on a validation split of the
//! training data, never on test.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Tag;
use crate::config::{KnnConfig, KnnWeighting, SearchMode};
use crate::search::{SearchError, Searcher};
use crate::store::{Filter, VectorStore};

/// A labelled item near the one being tagged.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    pub id: String,
    /// Cosine similarity to the item.
    pub similarity: f32,
    pub labels: Vec<String>,
    /// Its title (else its text's first line): what an LLM prompt shows as an example.
    pub title: String,
}

/// Queries per store round trip: memory stays flat for any number of items.
const BATCH: usize = 256;

/// Tags items by their nearest labelled neighbours.
pub struct KnnTagger<'a, S> {
    searcher: Searcher<'a, S>,
    settings: KnnConfig,
}

impl<'a, S: VectorStore> KnnTagger<'a, S> {
    /// A tagger over the labelled memory behind `searcher`.
    pub fn new(searcher: Searcher<'a, S>, settings: KnnConfig) -> Self {
        Self { searcher, settings }
    }

    /// The settings in force.
    pub fn settings(&self) -> &KnnConfig {
        &self.settings
    }

    /// The embedder the memory was built with.
    pub fn embedder(&self) -> &'a crate::embed::Embedder {
        self.searcher.embedder()
    }

    /// The `k` nearest memory items of each text, most similar first. An item of the memory
    /// never counts as its own neighbour when its id is passed in `ids` (leave-one-out, for
    /// tuning on the memory's own items).
    pub async fn neighbours(
        &self,
        texts: &[&str],
        ids: Option<&[&str]>,
        k: usize,
    ) -> Result<Vec<Vec<Neighbour>>, SearchError> {
        let mut out = Vec::with_capacity(texts.len());
        for (start, slice) in (0..texts.len()).step_by(BATCH).zip(texts.chunks(BATCH)) {
            let vectors = self.searcher.embedder().embed(slice)?;
            let ids = ids.map(|ids| &ids[start..start + slice.len()]);
            out.extend(self.neighbours_embedded(slice, vectors, ids, k).await?);
        }
        Ok(out)
    }

    /// [`Self::neighbours`] of texts already embedded (`vectors`, one per text).
    pub async fn neighbours_embedded(
        &self,
        texts: &[&str],
        vectors: Vec<Vec<f32>>,
        ids: Option<&[&str]>,
        k: usize,
    ) -> Result<Vec<Vec<Neighbour>>, SearchError> {
        let extra = usize::from(ids.is_some());
        let hits = self
            .searcher
            .search_embedded(
                texts,
                vectors,
                SearchMode::Dense,
                &Filter::default(),
                k + extra,
            )
            .await?;
        Ok(hits
            .into_iter()
            .enumerate()
            .map(|(i, hits)| {
                let own = ids.map(|ids| ids[i]);
                hits.into_iter()
                    .filter(|h| Some(h.id.as_str()) != own)
                    .take(k)
                    .map(|h| Neighbour {
                        labels: labels_of(&h.metadata),
                        title: h
                            .title
                            .clone()
                            .unwrap_or_else(|| h.text.lines().next().unwrap_or("").to_string()),
                        id: h.id,
                        similarity: h.score,
                    })
                    .collect()
            })
            .collect())
    }
}

impl<S: VectorStore> KnnTagger<'_, S> {
    /// [`super::Tagger::tag`] of texts already embedded (`vectors`, one per text, by the
    /// memory's embedder): what a server that batches its requests' embeddings calls.
    pub async fn tag_embedded(
        &self,
        texts: &[&str],
        vectors: Vec<Vec<f32>>,
    ) -> Result<Vec<Vec<Tag>>, SearchError> {
        let s = &self.settings;
        Ok(self
            .neighbours_embedded(texts, vectors, None, s.k)
            .await?
            .iter()
            .map(|n| vote(n, s))
            .collect())
    }
}

impl<S: VectorStore> super::Tagger for KnnTagger<'_, S> {
    fn name(&self) -> &'static str {
        "knn"
    }

    /// Tags for each text, by the configured `k`, threshold and minimum.
    async fn tag(&self, texts: &[&str]) -> Result<Vec<Vec<Tag>>, SearchError> {
        let s = &self.settings;
        Ok(self
            .neighbours(texts, None, s.k)
            .await?
            .iter()
            .map(|n| vote(n, s))
            .collect())
    }
}

/// The `labels` of a memory item's metadata (strings; anything else is ignored).
pub(crate) fn labels_of(metadata: &serde_json::Map<String, Value>) -> Vec<String> {
    metadata
        .get("labels")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The labels the first `k` of `neighbours` give: each label's share of the weighted votes
/// (`settings.weighting`; negative similarities weigh nothing), kept at `threshold` or above, and
/// the best `min_labels` always. Most confident first; ties by label id, so results are stable.
pub fn vote(neighbours: &[Neighbour], settings: &KnnConfig) -> Vec<Tag> {
    let voters = &neighbours[..settings.k.min(neighbours.len())];
    let weight = |n: &Neighbour| -> f32 {
        match settings.weighting {
            // Capped so a duplicate (similarity 1) does not silence every other neighbour.
            KnnWeighting::InverseDistance => 1.0 / (1.0 - n.similarity).max(1e-3),
            KnnWeighting::Similarity => n.similarity.max(0.0),
        }
    };
    let total: f32 = voters.iter().map(weight).sum();
    if total <= 0.0 {
        return Vec::new();
    }
    let mut votes: BTreeMap<&str, (f32, Vec<String>)> = BTreeMap::new();
    for n in voters {
        for label in &n.labels {
            let v = votes.entry(label.as_str()).or_default();
            v.0 += weight(n);
            v.1.push(n.id.clone());
        }
    }
    let tags: Vec<Tag> = votes
        .into_iter()
        .map(|(label, (weight, evidence))| Tag {
            label: label.to_string(),
            confidence: weight / total,
            source: "knn".into(),
            evidence,
        })
        .collect();
    super::keep_confident(
        tags,
        settings.threshold,
        settings.min_labels,
        settings.max_labels,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: &str, similarity: f32, labels: &[&str]) -> Neighbour {
        Neighbour {
            id: id.into(),
            similarity,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            title: String::new(),
        }
    }

    fn knn(k: usize, threshold: f32, min_labels: usize) -> KnnConfig {
        KnnConfig {
            k,
            threshold,
            min_labels,
            weighting: KnnWeighting::Similarity,
            ..KnnConfig::default()
        }
    }

    #[test]
    fn inverse_distance_lets_the_nearest_dominate() {
        let near = [
            n("a", 0.95, &["earn"]),
            n("b", 0.5, &["acq"]),
            n("c", 0.5, &["acq"]),
        ];
        let s = KnnConfig {
            weighting: KnnWeighting::InverseDistance,
            ..knn(3, 0.5, 1)
        };
        // Weights 20, 2, 2: earn 20/24.
        let tags = vote(&near, &s);
        assert_eq!(tags.len(), 1);
        assert!((tags[0].confidence - 20.0 / 24.0).abs() < 1e-5);
        // By similarity acq wins: 1.0 / 1.95.
        assert_eq!(vote(&near, &knn(3, 0.5, 1))[0].label, "acq");
    }

    #[test]
    fn votes_are_similarity_weighted_shares_with_a_floor_of_labels() {
        let near = [
            n("a", 0.9, &["earn"]),
            n("b", 0.6, &["earn", "acq"]),
            n("c", 0.3, &["crude"]),
            n("d", 0.2, &["grain"]),
        ];
        let tags = vote(&near, &knn(3, 0.3, 1));
        let got: Vec<(&str, f32)> = tags
            .iter()
            .map(|t| (t.label.as_str(), t.confidence))
            .collect();
        // Total weight 1.8: earn 1.5/1.8, acq 0.6/1.8; crude 0.3/1.8 is under 0.3; d is beyond k.
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "earn");
        assert!((got[0].1 - 1.5 / 1.8).abs() < 1e-6);
        assert_eq!(got[1].0, "acq");
        assert_eq!(tags[0].evidence, ["a", "b"]);
        assert_eq!(tags[0].source, "knn");
        // Nothing reaches the threshold: the best label is still given.
        let tags = vote(&near, &knn(4, 0.9, 1));
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].label, "earn");
        assert!(vote(&near, &knn(4, 0.9, 0)).is_empty());
        assert!(vote(&[], &knn(5, 0.3, 1)).is_empty());
    }
}
