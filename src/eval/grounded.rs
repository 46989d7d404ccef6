//! The grounded-answering suite: claims verified against the archive, scored with SciFact's own
//! metrics (Wadden et al. 2020, "Fact or Fiction: Verifying Scientific Claims", section 4).
//!
//! Abstract level: a predicted evidence abstract (one with a verdict other than
//! NOT_ENOUGH_INFO) is correct for **label-only** when the abstract is gold evidence for the
//! claim and the verdict is its gold label; for **label+rationale** when, in addition, the
//! predicted rationale sentences (at most [`MAX_RATIONALE_SENTENCES`]) contain every sentence of
//! at least one gold rationale set. Precision divides by the predicted evidence abstracts,
//! recall by the gold ones.
//!
//! Sentence level: a predicted rationale sentence of a predicted evidence abstract is correctly
//! **selected** when it belongs to a gold rationale set of that abstract and every other sentence
//! of that set is predicted too; **selection+label** also needs the abstract's verdict to be its
//! gold label. Precision divides by the predicted sentences, recall by the gold rationale
//! sentences.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Report;
use crate::answer::claims::{read_claims, read_corpus, ClaimsError, GoldEvidence, LabelledClaim};
use crate::answer::verifier::{Verifier, VerifierError};
use crate::answer::verify::{
    decide, judge_items, verify, Considered, DecisionRule, Verification, VerifyError,
};
use crate::answer::Verdict;
use crate::config::Config;
use crate::embed::Embedder;
use crate::eval::retrieval::{
    eval_collection_name, ingest_corpus, BeirDataset, RetrievalEvalError,
};
use crate::ingest::pipeline::IngestOptions;
use crate::search::{SearchError, Searcher};
use crate::store::{Filter, VectorStore};

/// The official evaluation reads at most this many rationale sentences per abstract.
pub const MAX_RATIONALE_SENTENCES: usize = 3;

/// One abstract a verifier named as evidence, with its verdict and rationale sentences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictedEvidence {
    pub doc: String,
    pub label: Verdict,
    pub sentences: Vec<usize>,
}

/// One claim's counts: what the paired tests of the gate resample, and what the metrics sum.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClaimCounts {
    /// Predicted evidence abstracts (verdict other than NOT_ENOUGH_INFO).
    pub abstracts_predicted: usize,
    /// Gold evidence abstracts.
    pub abstracts_gold: usize,
    /// Predicted abstracts that are gold with the right label.
    pub abstracts_label: usize,
    /// ... that also contain a whole gold rationale set.
    pub abstracts_rationale: usize,
    /// Predicted rationale sentences (at most three per predicted abstract).
    pub sentences_predicted: usize,
    /// Sentences of the gold rationale sets.
    pub sentences_gold: usize,
    /// Predicted sentences correctly selected.
    pub sentences_selected: usize,
    /// ... whose abstract also has the right label.
    pub sentences_labelled: usize,
}

impl ClaimCounts {
    /// Score one claim's predictions against its gold evidence.
    pub fn of(gold: &GoldEvidence, predicted: &[PredictedEvidence]) -> Self {
        let mut c = ClaimCounts {
            abstracts_gold: gold.len(),
            sentences_gold: gold
                .values()
                .flat_map(|sets| sets.iter().map(|s| s.sentences.len()))
                .sum(),
            ..Self::default()
        };
        // One prediction per abstract: a repeated id counts once, as the first.
        let mut seen = BTreeSet::new();
        for p in predicted {
            if p.label == Verdict::NotEnoughInfo || !seen.insert(p.doc.as_str()) {
                continue;
            }
            let chosen: BTreeSet<usize> = p
                .sentences
                .iter()
                .copied()
                .take(MAX_RATIONALE_SENTENCES)
                .collect();
            c.abstracts_predicted += 1;
            c.sentences_predicted += chosen.len();
            let Some(sets) = gold.get(&p.doc) else {
                continue;
            };
            let right_label = sets.first().is_some_and(|s| s.label == p.label);
            if right_label {
                c.abstracts_label += 1;
                let has_rationale = sets
                    .iter()
                    .any(|s| s.sentences.iter().all(|i| chosen.contains(i)));
                if has_rationale {
                    c.abstracts_rationale += 1;
                }
            }
            for sentence in &chosen {
                // The (first) gold set holding this sentence, complete among the chosen ones,
                // as the official scorer reads it.
                let selected = sets
                    .iter()
                    .find(|s| s.sentences.contains(sentence))
                    .is_some_and(|s| s.sentences.iter().all(|i| chosen.contains(i)));
                if selected {
                    c.sentences_selected += 1;
                    if right_label {
                        c.sentences_labelled += 1;
                    }
                }
            }
        }
        c
    }

    fn add(mut self, o: &Self) -> Self {
        self.abstracts_predicted += o.abstracts_predicted;
        self.abstracts_gold += o.abstracts_gold;
        self.abstracts_label += o.abstracts_label;
        self.abstracts_rationale += o.abstracts_rationale;
        self.sentences_predicted += o.sentences_predicted;
        self.sentences_gold += o.sentences_gold;
        self.sentences_selected += o.sentences_selected;
        self.sentences_labelled += o.sentences_labelled;
        self
    }

    /// The counts as the report's per-item row; `tp`, `fp` and `fn` are the abstract-level
    /// label-only counts the gate's paired test resamples.
    pub fn row(&self) -> BTreeMap<String, f64> {
        [
            ("tp", self.abstracts_label),
            (
                "fp",
                self.abstracts_predicted
                    .saturating_sub(self.abstracts_label),
            ),
            (
                "fn",
                self.abstracts_gold.saturating_sub(self.abstracts_label),
            ),
            ("abstracts_predicted", self.abstracts_predicted),
            ("abstracts_gold", self.abstracts_gold),
            ("abstracts_label", self.abstracts_label),
            ("abstracts_rationale", self.abstracts_rationale),
            ("sentences_predicted", self.sentences_predicted),
            ("sentences_gold", self.sentences_gold),
            ("sentences_selected", self.sentences_selected),
            ("sentences_labelled", self.sentences_labelled),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v as f64))
        .collect()
    }
}

/// SciFact's precision, recall and F1 at both levels, summed over claims: `abstract_label_*`,
/// `abstract_rationale_*`, `sentence_selection_*`, `sentence_label_*`.
pub fn scifact_metrics(claims: &[ClaimCounts]) -> BTreeMap<String, f64> {
    let t = claims.iter().fold(ClaimCounts::default(), |a, c| a.add(c));
    let mut out = BTreeMap::new();
    for (name, correct, predicted, gold) in [
        (
            "abstract_label",
            t.abstracts_label,
            t.abstracts_predicted,
            t.abstracts_gold,
        ),
        (
            "abstract_rationale",
            t.abstracts_rationale,
            t.abstracts_predicted,
            t.abstracts_gold,
        ),
        (
            "sentence_selection",
            t.sentences_selected,
            t.sentences_predicted,
            t.sentences_gold,
        ),
        (
            "sentence_label",
            t.sentences_labelled,
            t.sentences_predicted,
            t.sentences_gold,
        ),
    ] {
        let (p, r, f) = precision_recall_f1(correct, predicted, gold);
        out.insert(format!("{name}_precision"), p);
        out.insert(format!("{name}_recall"), r);
        out.insert(format!("{name}_f1"), f);
    }
    out
}

/// NOT_ENOUGH_INFO as a class of its own (abstention): a claim is predicted NEI when no abstract
/// is named as evidence, and is NEI when its gold evidence is empty. Answers (precision, recall).
pub fn abstention(gold: &[&GoldEvidence], predicted: &[&[PredictedEvidence]]) -> (f64, f64) {
    let said = |p: &[PredictedEvidence]| p.iter().all(|e| e.label == Verdict::NotEnoughInfo);
    let (mut both, mut predicted_nei, mut gold_nei) = (0, 0, 0);
    for (g, p) in gold.iter().zip(predicted) {
        let (g, p) = (g.is_empty(), said(p));
        both += usize::from(g && p);
        predicted_nei += usize::from(p);
        gold_nei += usize::from(g);
    }
    let (p, r, _) = precision_recall_f1(both, predicted_nei, gold_nei);
    (p, r)
}

/// P = correct / predicted, R = correct / gold, F1 their harmonic mean (0 where undefined).
pub fn precision_recall_f1(correct: usize, predicted: usize, gold: usize) -> (f64, f64, f64) {
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (p, r) = (ratio(correct, predicted), ratio(correct, gold));
    let f = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f)
}

/// Why the grounded suite could not run.
#[derive(Debug, thiserror::Error)]
pub enum GroundedEvalError {
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    #[error(transparent)]
    Verifier(#[from] VerifierError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Corpus(#[from] RetrievalEvalError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Embed(#[from] crate::embed::EmbedError),
    #[error(transparent)]
    Ask(#[from] crate::answer::ask::AskError),
}

/// How `eval grounded` runs.
#[derive(Clone)]
pub struct GroundedEvalOptions<'a> {
    /// Evaluate at the threshold tuned on the tuning claims (else at `answer.threshold`).
    pub tune: bool,
    /// Evaluate only the first N evaluation claims.
    pub limit: Option<usize>,
    /// Chunk the corpus as configured (`chunk.*`), or ingest documents whole.
    pub chunker: Option<crate::chunk::Chunker>,
    /// Also ask this many evaluation claims (the first ones) with the LLM composing, as
    /// `signaldesk ask` does: its citations, fallbacks, time to the first words and tokens/s.
    pub llm_questions: usize,
    /// The LLM that composes those answers (none: they are not asked).
    pub composer: Option<&'a crate::answer::ask::Composer<'a, crate::llm::AnyLlm>>,
}

/// Thresholds tried when tuning (0.05 to 0.95).
fn thresholds() -> impl Iterator<Item = f32> {
    (1..20).map(|i| i as f32 * 0.05)
}

/// Rank decays tried when tuning (1: the search's order ignored).
const RANK_DECAYS: [f32; 6] = [1.0, 0.85, 0.7, 0.5, 0.35, 0.25];

/// The chain's predictions under `rule`: each evidence item with its verdict and rationale.
fn predictions(considered: &[Considered], rule: &DecisionRule) -> Vec<PredictedEvidence> {
    decide(considered, rule)
        .1
        .into_iter()
        .map(|e| PredictedEvidence {
            doc: e.id,
            label: e.verdict,
            sentences: e.rationale.iter().map(|s| s.index).collect(),
        })
        .collect()
}

/// The top-1 retrieved item labelled SUPPORT, when its search score reaches `min_score`.
fn top1_support(considered: &[Considered], min_score: f32) -> Vec<PredictedEvidence> {
    considered
        .iter()
        .find(|c| c.rank == 1 && c.search_score >= min_score)
        .map(|c| PredictedEvidence {
            doc: c.id.clone(),
            label: Verdict::Support,
            sentences: Vec::new(),
        })
        .into_iter()
        .collect()
}

fn label_f1(claims: &[LabelledClaim], predicted: &[Vec<PredictedEvidence>]) -> f64 {
    let counts: Vec<ClaimCounts> = claims
        .iter()
        .zip(predicted)
        .map(|(c, p)| ClaimCounts::of(&c.evidence, p))
        .collect();
    scifact_metrics(&counts)["abstract_label_f1"]
}

/// The best value of `candidates` for abstract-level label-only F1 on `claims` (the first of
/// equals), and that F1.
fn tune_on(
    claims: &[LabelledClaim],
    candidates: impl Iterator<Item = f32>,
    predict: impl Fn(f32) -> Vec<Vec<PredictedEvidence>>,
) -> (f32, f64) {
    let mut best = (0.0, -1.0);
    for t in candidates {
        let f = label_f1(claims, &predict(t));
        if f > best.1 {
            best = (t, f);
        }
    }
    best
}

/// Run the suite: the SciFact corpus of `dataset` ingested (idempotently) the way `eval
/// retrieval` ingests it, every claim of `claims_dir/tune.jsonl` and `eval.jsonl` verified
/// through [`verify`] (the path `signaldesk verify` takes), scored with SciFact's metrics on the
/// evaluation claims beside two baselines and the chain given the gold abstracts.
pub async fn evaluate<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    config: &Config,
    dataset: &Path,
    claims_dir: &Path,
    options: &GroundedEvalOptions<'_>,
    mut on_status: impl FnMut(&str),
) -> Result<Report, GroundedEvalError> {
    let settings = &config.answer;
    let verifier = Verifier::load_or_train(
        &embedder,
        &settings.training_claims,
        &settings.training_corpus,
        &config.cache_dir,
        &mut on_status,
    )?;
    let tune_claims = read_claims(&claims_dir.join("tune.jsonl"))?;
    let mut eval_claims = read_claims(&claims_dir.join("eval.jsonl"))?;
    if let Some(n) = options.limit {
        eval_claims.truncate(n);
    }
    let beir = BeirDataset::open(dataset)?;
    let collection = eval_collection_name(&beir, options.chunker.is_some());
    let ingest = IngestOptions::from_config(config, &collection, options.chunker);
    on_status(&format!(
        "corpus: {collection} (ingested once, then reused)"
    ));
    let (ingested, ingest_seconds) =
        ingest_corpus(store, embedder.clone(), &beir, &ingest, false, |_| {}).await?;
    let searcher = Searcher::open(store, &embedder, &collection, &config.search).await?;
    on_status(&format!(
        "verifying the {} tuning claims",
        tune_claims.len()
    ));
    let tune_runs = verify_all(store, &searcher, &verifier, settings, &tune_claims).await?;
    on_status(&format!(
        "verifying the {} evaluation claims",
        eval_claims.len()
    ));
    let eval_runs = verify_all(store, &searcher, &verifier, settings, &eval_claims).await?;
    // Tuning, on the tuning claims only: the chain's threshold, and the abstaining baseline's
    // smallest top-1 search score.
    let (tuned, tuned_f1, min_score) = tune(&tune_claims, &tune_runs, settings);
    let rule = if options.tune {
        tuned
    } else {
        DecisionRule::of(settings)
    };
    let (counts, mut metrics) = chain_metrics(&eval_claims, &eval_runs, &rule);
    // The baselines, side by side on the same claims and retrieval.
    let (top1_f1, abstaining_f1) = baselines(&eval_claims, &eval_runs, min_score);
    metrics.insert("top1_support.abstract_label_f1".into(), top1_f1);
    metrics.insert("top1_abstaining.abstract_label_f1".into(), abstaining_f1);
    metrics.insert(
        "margin_over_baselines".into(),
        metrics["abstract_label_f1"] - top1_f1.max(abstaining_f1),
    );
    // The same chain given the gold abstracts (and the ones each claim cites): an upper bound
    // that isolates retrieval.
    let oracle = gold_abstracts(&embedder, &verifier, &beir.corpus, &eval_claims, &rule)?;
    metrics.extend(oracle_metrics(&eval_claims, &oracle));
    on_status("asking the evaluation claims as questions (extractive answers)");
    metrics.extend(ask_metrics(store, &searcher, &verifier, settings, &eval_claims).await?);
    if let Some(composer) = options.composer.filter(|_| options.llm_questions > 0) {
        let asked = &eval_claims[..options.llm_questions.min(eval_claims.len())];
        on_status(&format!(
            "asking {} evaluation claims with the LLM",
            asked.len()
        ));
        let found = llm_ask_metrics(store, &searcher, &verifier, composer, settings, asked);
        metrics.extend(found.await?);
    }
    let per_item = eval_claims
        .iter()
        .zip(&counts)
        .map(|(c, counts)| (c.id.clone(), counts.row()))
        .collect();
    let items = claim_details(&eval_claims, &eval_runs);
    let (p50, p99) = latency_ms(&eval_runs);
    let config_out = json!({
        "verifier": verifier.version,
        "verifier_trained_on": {"claims": verifier.trained_on.0, "items": verifier.trained_on.1,
                                "file": settings.training_claims},
        "threshold": (f64::from(rule.threshold) * 1e4).round() / 1e4,
        "rank_decay": rule.rank_decay,
        "tuned_on_tuning_claims": options.tune,
        "tuned_threshold": (f64::from(tuned.threshold) * 1e4).round() / 1e4,
        "tuned_rank_decay": tuned.rank_decay,
        "tuned_threshold_label_f1": tuned_f1,
        "abstaining_baseline_min_score": min_score,
        "k": settings.k,
        "rationale_sentences": settings.rationale_sentences,
        "max_evidence": settings.max_evidence,
        "search": config.search.hybrid,
        "collection": collection,
        "corpus_documents": ingested.read,
        "corpus_ingest_seconds": ingest_seconds,
        "tuning_claims": tune_claims.len(),
        "evaluation_claims": eval_claims.len(),
        "split": "golden-datasets/scifact-claims: SciFact's 809 training claims, 80/20 by a seeded shuffle (README.txt there)",
        "verify_ms_p50": p50,
        "verify_ms_p99": p99,
        "model": embedder.model_id(),
    });
    Ok(Report {
        suite: "grounded".into(),
        dataset: claims_dir.display().to_string(),
        config: config_out,
        metrics,
        per_item,
        details: json!({"items": items}),
        extra: Default::default(),
    })
}

/// SciFact's F1s of the chain given the gold abstracts (`predicted`, per claim), named
/// `gold_abstracts.*`.
fn oracle_metrics(
    claims: &[LabelledClaim],
    predicted: &[Vec<PredictedEvidence>],
) -> BTreeMap<String, f64> {
    let counts: Vec<ClaimCounts> = claims
        .iter()
        .zip(predicted)
        .map(|(c, p)| ClaimCounts::of(&c.evidence, p))
        .collect();
    scifact_metrics(&counts)
        .into_iter()
        .filter(|(k, _)| k.ends_with("_f1"))
        .map(|(k, v)| (format!("gold_abstracts.{k}"), v))
        .collect()
}

/// The chain's per-claim counts under `rule`, and SciFact's metrics with NOT_ENOUGH_INFO
/// precision and recall.
fn chain_metrics(
    claims: &[LabelledClaim],
    runs: &[Verification],
    rule: &DecisionRule,
) -> (Vec<ClaimCounts>, BTreeMap<String, f64>) {
    let chain: Vec<Vec<PredictedEvidence>> = runs
        .iter()
        .map(|r| predictions(&r.considered, rule))
        .collect();
    let counts: Vec<ClaimCounts> = claims
        .iter()
        .zip(&chain)
        .map(|(c, p)| ClaimCounts::of(&c.evidence, p))
        .collect();
    let mut metrics = scifact_metrics(&counts);
    let gold: Vec<&GoldEvidence> = claims.iter().map(|c| &c.evidence).collect();
    let said: Vec<&[PredictedEvidence]> = chain.iter().map(Vec::as_slice).collect();
    let (nei_p, nei_r) = abstention(&gold, &said);
    metrics.insert("nei_precision".into(), nei_p);
    metrics.insert("nei_recall".into(), nei_r);
    (counts, metrics)
}

/// The chain's threshold and rank decay tuned on the tuning claims (and its label-only F1
/// there), and the abstaining baseline's smallest top-1 search score (one of twenty quantiles).
fn tune(
    claims: &[LabelledClaim],
    runs: &[Verification],
    settings: &crate::config::AnswerConfig,
) -> (DecisionRule, f64, f32) {
    let mut best = (DecisionRule::of(settings), -1.0);
    for rank_decay in RANK_DECAYS {
        let rule = |threshold| DecisionRule {
            threshold,
            rank_decay,
            ..DecisionRule::of(settings)
        };
        let (threshold, f1) = tune_on(claims, thresholds(), |t| {
            runs.iter()
                .map(|r| predictions(&r.considered, &rule(t)))
                .collect()
        });
        if f1 > best.1 {
            best = (rule(threshold), f1);
        }
    }
    let mut top_scores: Vec<f32> = runs
        .iter()
        .filter_map(|r| r.considered.first().map(|c| c.search_score))
        .collect();
    top_scores.sort_by(f32::total_cmp);
    let quantiles = (0..20).filter_map(|i| top_scores.get(i * top_scores.len() / 20).copied());
    let (min_score, _) = tune_on(claims, quantiles, |t| {
        runs.iter()
            .map(|r| top1_support(&r.considered, t))
            .collect()
    });
    (best.0, best.1, min_score)
}

/// Label-only F1 of the two baselines on the same retrieval: the top-1 hit labelled SUPPORT,
/// and the same abstaining below `min_score`.
fn baselines(claims: &[LabelledClaim], runs: &[Verification], min_score: f32) -> (f64, f64) {
    let at = |min: f32| -> Vec<Vec<PredictedEvidence>> {
        runs.iter()
            .map(|r| top1_support(&r.considered, min))
            .collect()
    };
    (
        label_f1(claims, &at(f32::MIN)),
        label_f1(claims, &at(min_score)),
    )
}

/// `ask`'s citations over `claims` asked as questions, extractively (the path `signaldesk ask
/// --no-llm` takes): the share of citations that point to a passage of a retrieved item (1 by
/// construction; checked), citation precision and recall against the gold evidence abstracts
/// (each cited item counted once per claim), and the share answered "not in the archive".
async fn ask_metrics<S: VectorStore>(
    store: &S,
    searcher: &Searcher<'_, S>,
    verifier: &Verifier,
    settings: &crate::config::AnswerConfig,
    claims: &[LabelledClaim],
) -> Result<BTreeMap<String, f64>, GroundedEvalError> {
    let (mut citations, mut retrieved, mut cited, mut correct, mut gold, mut none) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let answers = ask_all(store, searcher, verifier, None, settings, claims).await?;
    for (c, answer) in claims.iter().zip(&answers) {
        let (made, pointing_to_retrieved, items) = citations_of(answer);
        citations += made;
        retrieved += pointing_to_retrieved;
        cited += items.len();
        correct += items
            .iter()
            .filter(|id| c.evidence.contains_key(**id))
            .count();
        gold += c.evidence.len();
        none += usize::from(answer.not_in_archive);
    }
    let (p, r, f) = precision_recall_f1(correct, cited, gold);
    Ok(BTreeMap::from([
        (
            "ask_citations_retrieved".into(),
            retrieved as f64 / citations.max(1) as f64,
        ),
        ("ask_citation_precision".into(), p),
        ("ask_citation_recall".into(), r),
        ("ask_citation_f1".into(), f),
        (
            "ask_not_in_archive".into(),
            none as f64 / claims.len().max(1) as f64,
        ),
    ]))
}

/// Every claim of `claims` asked as a question through [`crate::answer::ask::ask`] (the path
/// `signaldesk ask` takes), composed by `composer` or extractively.
async fn ask_all<S: VectorStore>(
    store: &S,
    searcher: &Searcher<'_, S>,
    verifier: &Verifier,
    composer: Option<&crate::answer::ask::Composer<'_, crate::llm::AnyLlm>>,
    settings: &crate::config::AnswerConfig,
    claims: &[LabelledClaim],
) -> Result<Vec<crate::answer::ask::Answer>, GroundedEvalError> {
    let (mut answers, everything) = (Vec::with_capacity(claims.len()), Filter::default());
    for c in claims {
        let answer = crate::answer::ask::ask(
            store,
            searcher,
            verifier,
            composer,
            &settings.ask,
            settings.k,
            &c.claim,
            &everything,
            None,
        );
        answers.push(answer.await?);
    }
    Ok(answers)
}

/// An answer's citations: how many, how many point to a passage of an item that was retrieved
/// (its lineage's `retrieved`), and the items cited.
fn citations_of(answer: &crate::answer::ask::Answer) -> (usize, usize, BTreeSet<&str>) {
    let read: HashSet<&str> = answer.lineage["retrieved"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    let (mut citations, mut retrieved, mut items) = (0, 0, BTreeSet::new());
    for n in answer.statements.iter().flat_map(|s| &s.citations) {
        citations += 1;
        if let Some(p) = answer.passages.get(n.wrapping_sub(1)) {
            retrieved += usize::from(p.number == *n && read.contains(p.id.as_str()));
            items.insert(p.id.as_str());
        }
    }
    (citations, retrieved, items)
}

/// `ask` with the LLM composing over `claims` asked as questions (the path `signaldesk ask`
/// takes): the share of citations pointing to a retrieved passage, the share the LLM answered
/// and the share that fell back to extractive (the rest were not in the archive), the time from the question to
/// the first words of the answer (p50 and max) and the LLM's completion tokens per second.
async fn llm_ask_metrics<S: VectorStore>(
    store: &S,
    searcher: &Searcher<'_, S>,
    verifier: &Verifier,
    composer: &crate::answer::ask::Composer<'_, crate::llm::AnyLlm>,
    settings: &crate::config::AnswerConfig,
    claims: &[LabelledClaim],
) -> Result<BTreeMap<String, f64>, GroundedEvalError> {
    let (mut citations, mut retrieved, mut by_llm, mut fallbacks) =
        (0usize, 0usize, 0usize, 0usize);
    let (mut first_text, mut speeds) = (Vec::new(), Vec::new());
    for answer in ask_all(store, searcher, verifier, Some(composer), settings, claims).await? {
        let (made, pointing_to_retrieved, _) = citations_of(&answer);
        citations += made;
        retrieved += pointing_to_retrieved;
        by_llm += usize::from(answer.source == "llm");
        fallbacks += usize::from(answer.fallback_reason.is_some());
        first_text.extend(answer.timings_ms.get("first_text").copied());
        speeds.extend(answer.lineage["tokens"]["completion_per_s"].as_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Ok(BTreeMap::from([
        (
            "ask_llm.citations_retrieved".into(),
            retrieved as f64 / citations.max(1) as f64,
        ),
        (
            "ask_llm.answered_by_llm".into(),
            by_llm as f64 / claims.len().max(1) as f64,
        ),
        (
            "ask_llm.fallbacks".into(),
            fallbacks as f64 / claims.len().max(1) as f64,
        ),
        ("ask_llm.first_text_ms_p50".into(), median(&mut first_text)),
        (
            "ask_llm.first_text_ms_max".into(),
            first_text.last().copied().unwrap_or(f64::NAN),
        ),
        (
            "ask_llm.completion_tokens_per_s_p50".into(),
            median(&mut speeds),
        ),
        ("ask_llm.questions".into(), claims.len() as f64),
    ]))
}

/// Every claim verified through [`verify`], in order.
async fn verify_all<S: VectorStore>(
    store: &S,
    searcher: &Searcher<'_, S>,
    verifier: &Verifier,
    settings: &crate::config::AnswerConfig,
    claims: &[LabelledClaim],
) -> Result<Vec<Verification>, VerifyError> {
    let mut runs = Vec::with_capacity(claims.len());
    for c in claims {
        runs.push(
            verify(
                store,
                searcher,
                verifier,
                settings,
                &c.claim,
                &Filter::default(),
            )
            .await?,
        );
    }
    Ok(runs)
}

/// The chain's predictions when it is given each claim's gold abstracts and the ones it cites
/// instead of the retrieved items.
fn gold_abstracts(
    embedder: &Embedder,
    verifier: &Verifier,
    corpus: &Path,
    claims: &[LabelledClaim],
    rule: &DecisionRule,
) -> Result<Vec<Vec<PredictedEvidence>>, GroundedEvalError> {
    let wanted: HashSet<String> = claims
        .iter()
        .flat_map(|c| c.evidence.keys().chain(&c.cited).cloned())
        .collect();
    let docs = read_corpus(corpus, Some(&wanted))?;
    let mut out = Vec::with_capacity(claims.len());
    for c in claims {
        let mut seen = HashSet::new();
        let items: Vec<_> = c
            .evidence
            .keys()
            .chain(&c.cited)
            .filter(|id| seen.insert(id.as_str()))
            .filter_map(|id| docs.get(id).map(|d| (d.to_item(id), 1, 0.0)))
            .collect();
        let vector = embedder.embed(&[c.claim.as_str()])?.remove(0);
        let considered = judge_items(embedder, verifier, &c.claim, &vector, &items)?;
        // Every given abstract at rank 1: no search order to weigh.
        out.push(predictions(&considered, rule));
    }
    Ok(out)
}

/// Per claim, for reading the report: the claim, its gold evidence, the verdict and evidence.
fn claim_details(
    claims: &[LabelledClaim],
    runs: &[Verification],
) -> serde_json::Map<String, serde_json::Value> {
    claims
        .iter()
        .zip(runs)
        .map(|(c, r)| {
            let evidence: Vec<serde_json::Value> = r
                .evidence
                .iter()
                .map(|e| {
                    let sentences: Vec<usize> = e.rationale.iter().map(|s| s.index).collect();
                    json!({"id": e.id, "verdict": e.verdict, "score": e.score, "sentences": sentences})
                })
                .collect();
            (
                c.id.clone(),
                json!({"claim": c.claim, "gold": c.evidence, "verdict": r.verdict, "evidence": evidence}),
            )
        })
        .collect()
}

/// The median and 99th percentile of the runs' total milliseconds.
fn latency_ms(runs: &[Verification]) -> (f64, f64) {
    let mut all: Vec<f64> = runs
        .iter()
        .map(|r| r.timings_ms.values().sum::<f64>())
        .collect();
    all.sort_by(f64::total_cmp);
    let at = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    (at(0.5), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::claims::GoldRationale;

    fn gold(entries: &[(&str, &[&[usize]], Verdict)]) -> GoldEvidence {
        entries
            .iter()
            .map(|(doc, sets, label)| {
                (
                    doc.to_string(),
                    sets.iter()
                        .map(|s| GoldRationale {
                            sentences: s.to_vec(),
                            label: *label,
                        })
                        .collect(),
                )
            })
            .collect()
    }

    fn said(doc: &str, label: Verdict, sentences: &[usize]) -> PredictedEvidence {
        PredictedEvidence {
            doc: doc.into(),
            label,
            sentences: sentences.to_vec(),
        }
    }

    /// Worked by hand. Claim 1: gold d1 SUPPORT with rationale sets {1, 2} and {5}; d2
    /// CONTRADICT with {0}. Predicted: d1 SUPPORT with sentences [2, 5, 7]; d3 SUPPORT with
    /// [0]; d2 NOT_ENOUGH_INFO (not counted).
    /// - abstracts: predicted 2 (d1, d3), gold 2; d1 is gold with the right label (label 1) and
    ///   contains the whole set {5} (rationale 1).
    /// - sentences: predicted 3 + 1 = 4; gold 2 + 1 + 1 = 4; of d1's [2, 5, 7]: 2 is in {1, 2}
    ///   but 1 is missing (not selected), 5 completes {5} (selected), 7 is in no set; d3 is not
    ///   gold. Selected 1, labelled 1.
    ///
    /// Claim 2: gold d4 CONTRADICT {3}; predicted d4 SUPPORT [3, 4]: abstracts predicted 1,
    /// gold 1, label 0, rationale 0; sentences predicted 2, gold 1, selected 1 (3 completes
    /// {3}), labelled 0.
    ///
    /// Totals: abstracts label 1/3 predicted, 1/3 gold → P = R = F1 = 1/3; rationale the
    /// same; sentences selection 2 of 6 predicted, 2 of 5 gold → P 1/3, R 2/5, F1 4/11;
    /// selection+label 1/6, 1/5 → F1 2/11.
    #[test]
    fn scifact_metrics_match_the_hand_worked_example() {
        let g1 = gold(&[
            ("d1", &[&[1, 2], &[5]], Verdict::Support),
            ("d2", &[&[0]], Verdict::Contradict),
        ]);
        let p1 = [
            said("d1", Verdict::Support, &[2, 5, 7]),
            said("d3", Verdict::Support, &[0]),
            said("d2", Verdict::NotEnoughInfo, &[0]),
        ];
        let c1 = ClaimCounts::of(&g1, &p1);
        assert_eq!(
            c1,
            ClaimCounts {
                abstracts_predicted: 2,
                abstracts_gold: 2,
                abstracts_label: 1,
                abstracts_rationale: 1,
                sentences_predicted: 4,
                sentences_gold: 4,
                sentences_selected: 1,
                sentences_labelled: 1,
            }
        );
        let g2 = gold(&[("d4", &[&[3]], Verdict::Contradict)]);
        let c2 = ClaimCounts::of(&g2, &[said("d4", Verdict::Support, &[3, 4])]);
        assert_eq!(
            (
                c2.abstracts_label,
                c2.sentences_selected,
                c2.sentences_labelled
            ),
            (0, 1, 0)
        );
        let m = scifact_metrics(&[c1, c2]);
        let close = |k: &str, v: f64| assert!((m[k] - v).abs() < 1e-12, "{k}: {} vs {v}", m[k]);
        close("abstract_label_precision", 1.0 / 3.0);
        close("abstract_label_recall", 1.0 / 3.0);
        close("abstract_label_f1", 1.0 / 3.0);
        close("abstract_rationale_f1", 1.0 / 3.0);
        close("sentence_selection_precision", 1.0 / 3.0);
        close("sentence_selection_recall", 0.4);
        close("sentence_selection_f1", 4.0 / 11.0);
        close("sentence_label_f1", 2.0 / 11.0);
        // The per-item rows the gate resamples give the label-only counts back.
        let rows = [c1.row(), c2.row()];
        let sum = |k: &str| rows.iter().map(|r| r[k]).sum::<f64>();
        assert_eq!((sum("tp"), sum("fp"), sum("fn")), (1.0, 2.0, 2.0));
    }

    #[test]
    fn only_three_rationale_sentences_count_and_repeats_count_once() {
        let g = gold(&[("d1", &[&[4]], Verdict::Support)]);
        // The gold sentence is the fourth named: beyond the three read.
        let c = ClaimCounts::of(&g, &[said("d1", Verdict::Support, &[0, 1, 2, 4])]);
        assert_eq!((c.abstracts_label, c.abstracts_rationale), (1, 0));
        assert_eq!((c.sentences_predicted, c.sentences_selected), (3, 0));
        let twice = [
            said("d1", Verdict::Support, &[4]),
            said("d1", Verdict::Contradict, &[4]),
        ];
        let c = ClaimCounts::of(&g, &twice);
        assert_eq!((c.abstracts_predicted, c.abstracts_label), (1, 1));
    }

    #[test]
    fn abstention_is_scored_as_its_own_class() {
        let nei = GoldEvidence::new();
        let evidence = gold(&[("d1", &[&[0]], Verdict::Support)]);
        let abstain: Vec<PredictedEvidence> = Vec::new();
        let named = vec![said("d1", Verdict::Support, &[0])];
        // Claims: NEI abstained (right), NEI named (missed), evidence abstained (wrong).
        let (p, r) = abstention(&[&nei, &nei, &evidence], &[&abstain, &named, &abstain]);
        assert_eq!((p, r), (0.5, 0.5));
    }
}
