//! `verify`: a claim against the archive. Retrieve through the one search path (hybrid), split
//! the retrieved items into sentences, judge each item with the local [`Verifier`], and name the
//! items that decide the claim with their rationale sentences as byte spans into the item's
//! text. Each stage is timed.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};

use super::sentences::sentence_spans;
use super::verifier::{Judgement, SentenceInput, Verifier};
use super::Verdict;
use crate::config::{AnswerConfig, SearchMode};
use crate::content::ContentItem;
use crate::embed::{EmbedError, Embedder};
use crate::search::{SearchError, Searcher};
use crate::store::{Filter, VectorStore};

/// Why a claim could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the claim is empty: give a statement to verify")]
    EmptyClaim,
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Read(#[from] crate::ingest::pipeline::IngestError),
}

/// One sentence of an item, where it stands in the item's text, and its rationale score.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Sentence {
    /// Its place among the item's body sentences (what SciFact's sentence indices count).
    pub index: usize,
    /// Byte span in the item's text (`title` + "\n" + `body`, as stored and returned by
    /// `GET /v1/content/{id}`).
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// The verifier's rationale probability.
    pub score: f32,
}

/// One retrieved item as the verifier read it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Considered {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its rank in the search (1 = best) and its search score.
    pub rank: usize,
    pub search_score: f32,
    /// The verifier's probabilities that it supports or contradicts the claim.
    pub support: f32,
    pub contradict: f32,
    /// Its sentences, in the item's order (rationale scores in each).
    #[serde(skip)]
    pub sentences: Vec<Sentence>,
}

impl Considered {
    fn judgement(&self) -> Judgement {
        Judgement {
            support: self.support,
            contradict: self.contradict,
            sentence_scores: self.sentences.iter().map(|s| s.score).collect(),
        }
    }
}

/// An item named as evidence: its verdict, its strength and its rationale sentences.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Evidence {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub verdict: Verdict,
    /// The verifier's probability of that verdict, discounted by the item's search rank
    /// (`answer.rank_decay^(rank − 1)`): what `answer.threshold` is compared with.
    pub score: f32,
    /// The best rationale sentences, best first.
    pub rationale: Vec<Sentence>,
}

/// A claim's verdict, the items that decide it, and how it came about.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Verification {
    pub claim: String,
    /// The strongest evidence item's verdict; NOT_ENOUGH_INFO when no item reaches the
    /// threshold.
    pub verdict: Verdict,
    /// Items that decide the claim, strongest first.
    pub evidence: Vec<Evidence>,
    /// Every retrieved item with the verifier's probabilities.
    pub considered: Vec<Considered>,
    /// Search settings, model, verifier version, threshold, the retrieved ids.
    #[schema(value_type = Object)]
    pub lineage: Value,
    /// Milliseconds per stage: retrieve, read, sentences (splitting and embedding), judge.
    pub timings_ms: BTreeMap<String, f64>,
}

/// How to name evidence among the retrieved items: the bar, the search rank's weight, and how
/// much to cite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecisionRule {
    /// Smallest discounted probability (of SUPPORT or CONTRADICT) for an item to be evidence.
    pub threshold: f32,
    /// Each item's probability is multiplied by `rank_decay^(rank − 1)`: the search's order is
    /// evidence too (on SciFact's tuning claims the verifier alone named the wrong abstract
    /// about as often as the right one).
    pub rank_decay: f32,
    pub rationale_sentences: usize,
    pub max_evidence: usize,
}

impl DecisionRule {
    /// The rule `answer.*` configures.
    pub fn of(settings: &AnswerConfig) -> Self {
        Self {
            threshold: settings.threshold,
            rank_decay: settings.rank_decay,
            rationale_sentences: settings.rationale_sentences,
            max_evidence: settings.max_evidence,
        }
    }
}

/// The evidence among `considered` under `rule`: at most `max_evidence` items, strongest
/// (after the rank discount) first, with `rationale_sentences` sentences each. The one decision
/// rule `verify` and `eval grounded` (re-deciding under other thresholds and decays) apply.
pub fn decide(considered: &[Considered], rule: &DecisionRule) -> (Verdict, Vec<Evidence>) {
    let mut evidence: Vec<Evidence> = considered
        .iter()
        .filter_map(|c| {
            let judgement = c.judgement();
            let discount = rule.rank_decay.powi(c.rank.max(1) as i32 - 1);
            let score = judgement.strength() * discount;
            let verdict = judgement.verdict(0.0);
            (score >= rule.threshold && verdict != Verdict::NotEnoughInfo).then(|| Evidence {
                id: c.id.clone(),
                title: c.title.clone(),
                verdict,
                score,
                rationale: judgement
                    .rationale(rule.rationale_sentences)
                    .into_iter()
                    .map(|i| c.sentences[i].clone())
                    .collect(),
            })
        })
        .collect();
    evidence.sort_by(|a, b| b.score.total_cmp(&a.score));
    evidence.truncate(rule.max_evidence.max(1));
    let verdict = evidence
        .first()
        .map_or(Verdict::NotEnoughInfo, |e| e.verdict);
    (verdict, evidence)
}

/// The body sentences of an item, as spans into its text.
pub fn item_sentences(item: &ContentItem) -> Vec<(usize, usize)> {
    let text = item.text();
    let (offset, part) = if item.body.trim().is_empty() {
        (0, item.title.as_str())
    } else {
        (text.len() - item.body.len(), item.body.as_str())
    };
    sentence_spans(part)
        .into_iter()
        .map(|(a, b)| (a + offset, b + offset))
        .collect()
}

/// Judge `items` against `claim` (its vector given): every item's sentences embedded in one
/// batch, then read by the verifier. `ranked` gives each item's rank and search score.
pub fn judge_items(
    embedder: &Embedder,
    verifier: &Verifier,
    claim: &str,
    claim_vector: &[f32],
    items: &[(ContentItem, usize, f32)],
) -> Result<Vec<Considered>, EmbedError> {
    let texts: Vec<String> = items.iter().map(|(item, _, _)| item.text()).collect();
    let spans: Vec<Vec<(usize, usize)>> = items
        .iter()
        .map(|(item, _, _)| item_sentences(item))
        .collect();
    let all: Vec<&str> = texts
        .iter()
        .zip(&spans)
        .flat_map(|(t, s)| s.iter().map(move |&(a, b)| &t[a..b]))
        .collect();
    let vectors = embedder.embed(&all)?;
    let mut at = 0;
    let mut out = Vec::with_capacity(items.len());
    for (((item, rank, score), text), spans) in items.iter().zip(&texts).zip(&spans) {
        let inputs: Vec<SentenceInput> = spans
            .iter()
            .zip(&vectors[at..at + spans.len()])
            .map(|(&(a, b), v)| SentenceInput {
                text: &text[a..b],
                vector: v,
            })
            .collect();
        at += spans.len();
        let judgement = verifier.judge(claim, claim_vector, &inputs);
        out.push(Considered {
            id: item.id.clone(),
            title: (!item.title.trim().is_empty()).then(|| item.title.clone()),
            rank: *rank,
            search_score: *score,
            support: judgement.support,
            contradict: judgement.contradict,
            sentences: spans
                .iter()
                .enumerate()
                .map(|(index, &(start, end))| Sentence {
                    index,
                    start,
                    end,
                    text: text[start..end].to_string(),
                    score: judgement.sentence_scores[index],
                })
                .collect(),
        });
    }
    Ok(out)
}

/// What the chain read for a text (a claim or a question): its vector and every retrieved item
/// judged, in the search's order, with the stages' times.
pub struct Retrieved {
    pub vector: Vec<f32>,
    pub considered: Vec<Considered>,
    /// Milliseconds per stage: retrieve, read, judge.
    pub timings_ms: BTreeMap<String, f64>,
}

/// Retrieve `k` items for `text` through the one search path (hybrid), read them, split them
/// into sentences and judge each with `verifier`: the stages `verify` and `ask` share.
pub async fn retrieve_and_judge<S: VectorStore>(
    store: &S,
    searcher: &Searcher<'_, S>,
    verifier: &Verifier,
    text: &str,
    k: usize,
    filter: &Filter,
) -> Result<Retrieved, VerifyError> {
    let mut timings = BTreeMap::new();
    let mut lap = Instant::now();
    let mut time = |stage: &str, timings: &mut BTreeMap<String, f64>| {
        timings.insert(stage.to_string(), lap.elapsed().as_secs_f64() * 1e3);
        lap = Instant::now();
    };
    let vector = searcher.embedder().embed(&[text])?.remove(0);
    let hits = searcher
        .search_embedded(
            &[text],
            vec![vector.clone()],
            SearchMode::Hybrid,
            filter,
            k.max(1),
        )
        .await?
        .pop()
        .unwrap_or_default();
    time("retrieve", &mut timings);
    let collection = &searcher.spec().name;
    let firsts = store
        .get(
            collection,
            &hits.iter().map(|h| (h.id.clone(), 0)).collect::<Vec<_>>(),
        )
        .await
        .map_err(SearchError::from)?;
    let mut read = crate::ingest::reindex::read_items(store, collection, firsts).await?;
    // In the search's order.
    let mut items = Vec::with_capacity(hits.len());
    for (rank, hit) in hits.iter().enumerate() {
        if let Some(at) = read.iter().position(|(item, _)| item.id == hit.id) {
            items.push((read.swap_remove(at).0, rank + 1, hit.score));
        }
    }
    time("read", &mut timings);
    let considered = judge_items(searcher.embedder(), verifier, text, &vector, &items)?;
    time("judge", &mut timings);
    Ok(Retrieved {
        vector,
        considered,
        timings_ms: timings,
    })
}

/// Verify `claim` against the items of `searcher`'s collection that pass `filter`.
pub async fn verify<S: VectorStore>(
    store: &S,
    searcher: &Searcher<'_, S>,
    verifier: &Verifier,
    settings: &AnswerConfig,
    claim: &str,
    filter: &Filter,
) -> Result<Verification, VerifyError> {
    let claim = claim.trim();
    if claim.is_empty() {
        return Err(VerifyError::EmptyClaim);
    }
    let Retrieved {
        considered,
        timings_ms: timings,
        ..
    } = retrieve_and_judge(store, searcher, verifier, claim, settings.k, filter).await?;
    let collection = &searcher.spec().name;
    let (verdict, evidence) = decide(&considered, &DecisionRule::of(settings));
    let lineage = json!({
        "search": {"mode": "hybrid", "k": settings.k, "collection": collection,
                   "hybrid": searcher.settings().hybrid},
        "model": searcher.embedder().model_id(),
        "verifier": verifier.version,
        "threshold": settings.threshold,
        "rank_decay": settings.rank_decay,
        "max_evidence": settings.max_evidence,
        "retrieved": considered.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
    });
    Ok(Verification {
        claim: claim.to_string(),
        verdict,
        evidence,
        considered,
        lineage,
        timings_ms: timings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn considered(id: &str, support: f32, contradict: f32) -> Considered {
        Considered {
            id: id.into(),
            title: None,
            rank: 1,
            search_score: 0.5,
            support,
            contradict,
            sentences: (0..4)
                .map(|i| Sentence {
                    index: i,
                    start: i * 10,
                    end: i * 10 + 9,
                    text: format!("sentence {i}"),
                    score: [0.2, 0.9, 0.1, 0.6][i],
                })
                .collect(),
        }
    }

    #[test]
    fn the_strongest_item_decides_and_weak_ones_are_left_out() {
        let items = [
            considered("a", 0.7, 0.1),
            considered("b", 0.2, 0.8),
            considered("c", 0.3, 0.3),
        ];
        let rule = |threshold: f32, max_evidence: usize| DecisionRule {
            threshold,
            rank_decay: 1.0,
            rationale_sentences: 2,
            max_evidence,
        };
        let (verdict, evidence) = decide(&items, &rule(0.5, 3));
        assert_eq!(verdict, Verdict::Contradict);
        let named: Vec<(&str, Verdict)> = evidence
            .iter()
            .map(|e| (e.id.as_str(), e.verdict))
            .collect();
        assert_eq!(named, [("b", Verdict::Contradict), ("a", Verdict::Support)]);
        let rationale: Vec<usize> = evidence[0].rationale.iter().map(|s| s.index).collect();
        assert_eq!(rationale, [1, 3]);
        assert_eq!(decide(&items, &rule(0.9, 3)).0, Verdict::NotEnoughInfo);
        let one = decide(&items, &rule(0.5, 1)).1;
        assert_eq!(one.len(), 1, "at most max_evidence items");
        assert_eq!(one[0].id, "b");
    }

    #[test]
    fn the_search_rank_discounts_an_items_probability() {
        let first = considered("first", 0.6, 0.1);
        let third = Considered {
            rank: 3,
            ..considered("third", 0.1, 0.8)
        };
        let rule = |rank_decay: f32| DecisionRule {
            threshold: 0.3,
            rank_decay,
            rationale_sentences: 1,
            max_evidence: 1,
        };
        let (verdict, evidence) = decide(&[first.clone(), third.clone()], &rule(1.0));
        assert_eq!(
            (verdict, evidence[0].id.as_str()),
            (Verdict::Contradict, "third")
        );
        let (verdict, evidence) = decide(&[first, third], &rule(0.5));
        assert_eq!(
            (verdict, evidence[0].id.as_str()),
            (Verdict::Support, "first")
        );
        assert!(
            (evidence[0].score - 0.6).abs() < 1e-6,
            "rank 1 is not discounted"
        );
        let alone = Considered {
            rank: 3,
            ..considered("third", 0.1, 0.8)
        };
        assert_eq!(
            decide(&[alone], &rule(0.5)).0,
            Verdict::NotEnoughInfo,
            "0.8 × 0.5² = 0.2 is under 0.3"
        );
    }

    #[test]
    fn body_sentences_are_spans_into_the_item_text() {
        let item = crate::answer::claims::CorpusDoc {
            title: "A title".into(),
            text: "First one. Second one.".into(),
        }
        .to_item("x");
        let text = item.text();
        let spans = item_sentences(&item);
        let got: Vec<&str> = spans.iter().map(|&(a, b)| &text[a..b]).collect();
        assert_eq!(got, ["First one.", "Second one."]);
    }
}
