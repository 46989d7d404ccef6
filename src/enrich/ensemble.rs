//! The ensemble tagger: kNN's vote shares and a linear head's probabilities, averaged.
//!
//! The two fail differently: kNN copies the labels of near duplicates exactly and knows rare
//! labels from a handful of examples; the head draws smooth boundaries from every labelled item.
//! Averaged with weights tuned on a validation split (`enrich.ensemble`), they beat each alone
//! (Reuters ModApte figures in eval/README.md). Both read one embedding per item, computed once.

use std::collections::{BTreeMap, HashSet};

use super::head::{HeadError, LinearHead};
use super::knn::{labels_of, vote, KnnTagger, Neighbour};
use super::llm_tagger::LlmParts;
use super::{Tag, Tagged};
use crate::config::{EnsembleConfig, HeadConfig, KnnConfig};
use crate::search::SearchError;
use crate::store::{Filter, StoreError, VectorStore};

/// Items embedded and searched per round trip.
const BATCH: usize = 256;

/// Why the ensemble could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Head(#[from] HeadError),
}

/// Train the head on the stored vectors and `labels` of `memory`, leaving out the items in
/// `exclude` (a validation split).
pub async fn train_head<S: VectorStore>(
    store: &S,
    memory: &str,
    exclude: &HashSet<String>,
    settings: &HeadConfig,
) -> Result<LinearHead, EnsembleError> {
    let mut data: Vec<(Vec<f32>, Vec<String>)> = Vec::new();
    let mut offset = None;
    loop {
        let (page, next) = store
            .scroll_vectors(memory, &Filter::default(), offset, 1024)
            .await?;
        for (chunk, vector) in page {
            if exclude.contains(&chunk.content_id) || vector.is_empty() {
                continue;
            }
            let metadata = chunk
                .payload
                .get("metadata")
                .and_then(|m| m.as_object())
                .cloned()
                .unwrap_or_default();
            data.push((vector, labels_of(&metadata)));
        }
        match next {
            Some(n) => offset = Some(n),
            None => break,
        }
    }
    let examples: Vec<(&[f32], &[String])> = data
        .iter()
        .map(|(v, l)| (v.as_slice(), l.as_slice()))
        .collect();
    // Training is CPU-bound for seconds: keep it off the async workers.
    Ok(tokio::task::block_in_place(|| {
        LinearHead::train(&examples, settings)
    })?)
}

/// Each label's kNN vote share and head probability for one item.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// label → (share, the neighbours that voted for it).
    pub knn: BTreeMap<String, (f32, Vec<String>)>,
    /// label → probability.
    pub head: BTreeMap<String, f32>,
    /// The labels the LLM picked, when it was consulted and answered.
    pub llm: Option<Vec<String>>,
}

/// The signals for one item from its neighbours and embedding.
pub fn signals(
    neighbours: &[Neighbour],
    vector: &[f32],
    head: &LinearHead,
    knn: &KnnConfig,
) -> Signals {
    let all_votes = KnnConfig {
        threshold: 0.0,
        min_labels: 0,
        max_labels: None,
        ..knn.clone()
    };
    Signals {
        knn: vote(neighbours, &all_votes)
            .into_iter()
            .map(|t| (t.label, (t.confidence, t.evidence)))
            .collect(),
        head: head
            .labels()
            .iter()
            .cloned()
            .zip(head.probabilities(vector))
            .collect(),
        llm: None,
    }
}

/// The labels `signals` give under `settings`: the weighted mean of the head's probability and
/// kNN's share, kept at the threshold or above, the best `min_labels` always. Most confident
/// first; ties by label id.
pub fn combine(signals: &Signals, settings: &EnsembleConfig) -> Vec<Tag> {
    let llm_weight = if signals.llm.is_some() {
        settings.llm_weight
    } else {
        0.0
    };
    let total = settings.head_weight + settings.knn_weight + llm_weight;
    if total <= 0.0 {
        return Vec::new();
    }
    let picked: &[String] = signals.llm.as_deref().unwrap_or(&[]);
    let labels: std::collections::BTreeSet<&String> = signals
        .knn
        .keys()
        .chain(signals.head.keys())
        .chain(picked)
        .collect();
    let tags: Vec<Tag> = labels
        .into_iter()
        .map(|label| {
            let p = signals.head.get(label).copied().unwrap_or(0.0);
            let (share, voters) = signals
                .knn
                .get(label)
                .map(|(s, v)| (*s, v.as_slice()))
                .unwrap_or((0.0, &[]));
            let mut evidence = vec![format!("head {p:.3}"), format!("knn {share:.3}")];
            let llm = if picked.contains(label) { 1.0 } else { 0.0 };
            if signals.llm.is_some() {
                evidence.push(format!("llm {llm:.0}"));
            }
            evidence.extend(voters.iter().cloned());
            Tag {
                label: label.clone(),
                confidence: (settings.head_weight * p
                    + settings.knn_weight * share
                    + llm_weight * llm)
                    / total,
                source: "ensemble".into(),
                evidence,
            }
        })
        .collect();
    super::keep_confident(
        tags,
        settings.threshold,
        settings.min_labels,
        settings.max_labels,
    )
}

/// Tags items with kNN over the labelled memory and the head trained on it.
pub struct EnsembleTagger<'a, S> {
    knn: KnnTagger<'a, S>,
    head: LinearHead,
    settings: EnsembleConfig,
    llm: Option<LlmParts<'a, S>>,
}

impl<'a, S: VectorStore> EnsembleTagger<'a, S> {
    /// An ensemble of `knn` and `head`.
    pub fn new(knn: KnnTagger<'a, S>, head: LinearHead, settings: EnsembleConfig) -> Self {
        Self {
            knn,
            head,
            settings,
            llm: None,
        }
    }

    /// The same ensemble consulting an LLM too (its picks weigh `llm_weight`).
    pub fn with_llm(mut self, llm: Option<LlmParts<'a, S>>) -> Self {
        self.llm = llm;
        self
    }

    /// Each text's signals, with its embedding computed once for both; without the LLM.
    pub async fn signals(&self, texts: &[&str]) -> Result<Vec<Signals>, SearchError> {
        Ok(self.signals_and_neighbours(texts).await?.0)
    }

    async fn signals_and_neighbours(
        &self,
        texts: &[&str],
    ) -> Result<(Vec<Signals>, Vec<Vec<Neighbour>>), SearchError> {
        let knn = self.knn.settings();
        let mut out = Vec::with_capacity(texts.len());
        let mut all = Vec::with_capacity(texts.len());
        for slice in texts.chunks(BATCH) {
            let vectors = self.knn.embedder().embed(slice)?;
            let neighbours = self
                .knn
                .neighbours_embedded(slice, vectors.clone(), None, knn.k)
                .await?;
            out.extend(
                neighbours
                    .iter()
                    .zip(&vectors)
                    .map(|(n, v)| signals(n, v, &self.head, knn)),
            );
            all.extend(neighbours);
        }
        Ok((out, all))
    }
}

impl<S: VectorStore> super::Tagger for EnsembleTagger<'_, S> {
    fn name(&self) -> &'static str {
        "ensemble"
    }

    async fn tag(&self, texts: &[&str]) -> Result<Vec<Vec<Tag>>, SearchError> {
        Ok(self
            .tag_items(texts)
            .await?
            .into_iter()
            .map(|t| t.tags)
            .collect())
    }

    async fn tag_items(&self, texts: &[&str]) -> Result<Vec<Tagged>, SearchError> {
        let (mut signals, neighbours) = self.signals_and_neighbours(texts).await?;
        let mut outcomes = vec![(None, crate::llm::Usage::default()); texts.len()];
        if let Some(llm) = self.llm.as_ref().filter(|_| self.settings.llm_weight > 0.0) {
            let picks = llm.picks(texts, &neighbours).await?;
            for ((s, outcome), pick) in signals.iter_mut().zip(&mut outcomes).zip(picks) {
                match pick {
                    Ok(pick) => {
                        outcome.1 = pick.usage;
                        s.llm = Some(pick.labels);
                    }
                    Err(reason) => outcome.0 = Some(reason),
                }
            }
        }
        Ok(signals
            .iter()
            .zip(outcomes)
            .map(|(s, (fallback_reason, usage))| Tagged {
                tags: combine(s, &self.settings),
                fallback_reason,
                usage,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combines_by_weight_with_a_floor_of_labels() {
        let signals = Signals {
            knn: BTreeMap::from([
                ("earn".to_string(), (1.0, vec!["n1".to_string()])),
                ("acq".to_string(), (0.2, vec!["n2".to_string()])),
            ]),
            head: BTreeMap::from([
                ("earn".to_string(), 0.5),
                ("acq".to_string(), 0.6),
                ("grain".to_string(), 0.1),
            ]),
            llm: None,
        };
        let settings = EnsembleConfig {
            head_weight: 0.75,
            knn_weight: 0.25,
            llm_weight: 0.5,
            threshold: 0.5,
            min_labels: 1,
            max_labels: None,
        };
        let tags = combine(&signals, &settings);
        // earn: 0.75·0.5 + 0.25·1.0 = 0.625; acq: 0.45 + 0.05 = 0.5; grain 0.075.
        let got: Vec<(&str, f32)> = tags
            .iter()
            .map(|t| (t.label.as_str(), t.confidence))
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "earn");
        assert!((got[0].1 - 0.625).abs() < 1e-6);
        assert!((got[1].1 - 0.5).abs() < 1e-6);
        assert_eq!(tags[0].evidence, ["head 0.500", "knn 1.000", "n1"]);
        let strict = EnsembleConfig {
            threshold: 0.9,
            ..settings.clone()
        };
        assert_eq!(combine(&signals, &strict).len(), 1, "the best label stays");
        let head_only = EnsembleConfig {
            knn_weight: 0.0,
            threshold: 0.55,
            ..settings
        };
        assert_eq!(combine(&signals, &head_only)[0].label, "acq");
        // The LLM's pick counts when it answered: grain (0.075·... + 0.5) / 1.5.
        let with_llm = Signals {
            llm: Some(vec!["grain".to_string()]),
            ..signals.clone()
        };
        let tags = combine(
            &with_llm,
            &EnsembleConfig {
                threshold: 0.3,
                ..strict
            },
        );
        let grain = tags.iter().find(|t| t.label == "grain").unwrap();
        assert!(
            (grain.confidence - (0.075 + 0.5) / 1.5).abs() < 1e-6,
            "{tags:?}"
        );
        assert_eq!(grain.evidence[2], "llm 1");
    }
}
