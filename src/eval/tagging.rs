//! The tagging suite: a labelled dataset (`train.jsonl`, `test.jsonl`, each line `{"id", "title",
//! "body", "labels": [...]}`, gzip'd too) and its taxonomy. Reports micro and macro precision,
//! recall and F1 over every concept of the taxonomy (a concept never predicted scores 0), per-label
//! P/R/F1 and support, per-item true/false positives and false negatives, and hierarchical P/R/F1
//! (each label set extended with its ancestors) when the taxonomy has a hierarchy.
//!
//! The kNN tagger runs as users run it: the training documents are ingested (the `ingest` code)
//! into a labelled memory collection, and every test document is tagged through
//! [`KnnTagger`], which searches through [`crate::search::Searcher`]. `k` and the threshold come
//! from `enrich.knn`, or are tuned on a validation split of train (1,500 documents, at most a
//! fifth of train, drawn with seed 0, each tagged leave-one-out from the whole memory), never on
//! test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};

use super::Report;
use crate::config::{Config, EnsembleConfig, KnnConfig, ZeroShotConfig};
use crate::embed::Embedder;
use crate::enrich::ensemble::{self, combine, train_head, EnsembleTagger, Signals};
use crate::enrich::knn::{vote, KnnTagger, Neighbour};
use crate::enrich::taxonomy::{Taxonomy, TaxonomyError};
use crate::enrich::zeroshot::{pick, ZeroShotTagger};
use crate::ingest::pipeline::{ingest_file, IngestOptions};
use crate::ingest::InputFile;
use crate::search::{SearchError, Searcher};
use crate::store::VectorStore;

/// Why the tagging suite could not run.
#[derive(Debug, thiserror::Error)]
pub enum TaggingEvalError {
    #[error("{}: {message}", path.display())]
    Dataset { path: PathBuf, message: String },
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
    #[error(transparent)]
    Input(#[from] crate::ingest::InputError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::pipeline::IngestError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Ensemble(#[from] ensemble::EnsembleError),
    #[error(transparent)]
    Embed(#[from] crate::embed::EmbedError),
    #[error("{0}")]
    Tagger(String),
}

/// One labelled document.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledItem {
    pub id: String,
    /// `title + "\n" + body`, as ingest embeds it.
    pub text: String,
    pub labels: Vec<String>,
}

/// `DIR/STEM.jsonl` or `DIR/STEM.jsonl.gz`.
pub fn split_file(dir: &Path, stem: &str) -> Result<PathBuf, TaggingEvalError> {
    [format!("{stem}.jsonl"), format!("{stem}.jsonl.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| TaggingEvalError::Dataset {
            path: dir.to_path_buf(),
            message: format!("no {stem}.jsonl or {stem}.jsonl.gz"),
        })
}

/// Read a labelled split; every label must be a concept of `taxonomy`.
pub fn read_labelled(
    path: &Path,
    taxonomy: &Taxonomy,
) -> Result<Vec<LabelledItem>, TaggingEvalError> {
    let bad = |line: usize, message: String| TaggingEvalError::Dataset {
        path: PathBuf::from(format!("{}:{line}", path.display())),
        message,
    };
    let mut items = Vec::new();
    for line in InputFile::open(path)?.lines(64 << 20) {
        let line = line?;
        let n = line.number;
        let text = line.content.map_err(|e| bad(n, e.to_string()))?;
        if text.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| bad(n, e.to_string()))?;
        let id = match &v["id"] {
            Value::String(s) => s.clone(),
            Value::Number(x) => x.to_string(),
            _ => return Err(bad(n, "no id".into())),
        };
        let title = v["title"].as_str().unwrap_or_default();
        let body = v["body"].as_str().unwrap_or_default();
        let labels: Vec<String> = v["labels"]
            .as_array()
            .ok_or_else(|| bad(n, format!("item {id}: no labels array")))?
            .iter()
            .map(|l| l.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(n, format!("item {id}: labels must be strings")))?;
        if let Some(unknown) = labels.iter().find(|l| !taxonomy.contains(l)) {
            return Err(bad(
                n,
                format!(
                    "item {id}: label {unknown:?} is not in taxonomy {}",
                    taxonomy.id()
                ),
            ));
        }
        let text = crate::content::item_text(title, body).unwrap_or_default();
        items.push(LabelledItem { id, text, labels });
    }
    Ok(items)
}

/// Precision, recall, F1 and support of one label.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LabelScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Gold occurrences.
    pub support: usize,
    /// Times predicted.
    pub predicted: usize,
}

pub(crate) fn prf(tp: usize, fp: usize, fneg: usize) -> (f64, f64, f64) {
    let p = if tp + fp == 0 {
        0.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let r = if tp + fneg == 0 {
        0.0
    } else {
        tp as f64 / (tp + fneg) as f64
    };
    let f = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f)
}

/// Micro and macro P/R/F1 over `labels` (macro: the mean over every one of them, 0 for a label
/// never predicted or never present), and each label's scores.
pub fn score(
    gold: &[Vec<String>],
    predicted: &[Vec<String>],
    labels: &[String],
) -> (BTreeMap<String, f64>, BTreeMap<String, LabelScores>) {
    let mut counts: BTreeMap<&str, (usize, usize, usize)> =
        labels.iter().map(|l| (l.as_str(), (0, 0, 0))).collect();
    for (g, p) in gold.iter().zip(predicted) {
        let g: BTreeSet<&str> = g.iter().map(String::as_str).collect();
        let p: BTreeSet<&str> = p.iter().map(String::as_str).collect();
        for l in &p {
            if let Some(c) = counts.get_mut(l) {
                if g.contains(l) {
                    c.0 += 1;
                } else {
                    c.1 += 1;
                }
            }
        }
        for l in g.difference(&p) {
            if let Some(c) = counts.get_mut(l) {
                c.2 += 1;
            }
        }
    }
    let (tp, fp, fneg) = counts
        .values()
        .fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
    let (mp, mr, mf) = prf(tp, fp, fneg);
    let per_label: BTreeMap<String, LabelScores> = counts
        .iter()
        .map(|(l, &(tp, fp, fneg))| {
            let (precision, recall, f1) = prf(tp, fp, fneg);
            (
                l.to_string(),
                LabelScores {
                    precision,
                    recall,
                    f1,
                    support: tp + fneg,
                    predicted: tp + fp,
                },
            )
        })
        .collect();
    let n = per_label.len().max(1) as f64;
    let mean = |f: fn(&LabelScores) -> f64| per_label.values().map(f).sum::<f64>() / n;
    let metrics = BTreeMap::from([
        ("micro_precision".to_string(), mp),
        ("micro_recall".to_string(), mr),
        ("micro_f1".to_string(), mf),
        ("macro_precision".to_string(), mean(|s| s.precision)),
        ("macro_recall".to_string(), mean(|s| s.recall)),
        ("macro_f1".to_string(), mean(|s| s.f1)),
    ]);
    (metrics, per_label)
}

/// The share of items whose predicted labels are exactly their gold labels: for an exclusive
/// taxonomy (one label each), the usual accuracy, reported beside micro-F1.
pub fn accuracy(gold: &[Vec<String>], predicted: &[Vec<String>]) -> f64 {
    let exact = gold
        .iter()
        .zip(predicted)
        .filter(|(g, p)| {
            let g: BTreeSet<&String> = g.iter().collect();
            let p: BTreeSet<&String> = p.iter().collect();
            g == p
        })
        .count();
    exact as f64 / gold.len().max(1) as f64
}

/// Hierarchical micro P/R/F1 (Kiritchenko et al.): each gold and predicted set is extended with
/// every ancestor of its labels, then compared as sets, so a near miss in the tree earns partial
/// credit.
pub fn hierarchical(
    gold: &[Vec<String>],
    predicted: &[Vec<String>],
    taxonomy: &Taxonomy,
) -> (f64, f64, f64) {
    let extend = |labels: &[String]| -> BTreeSet<String> {
        let mut out: BTreeSet<String> = labels.iter().cloned().collect();
        for l in labels {
            out.extend(taxonomy.ancestors(l).into_iter().map(str::to_string));
        }
        out
    };
    let (mut tp, mut fp, mut fneg) = (0, 0, 0);
    for (g, p) in gold.iter().zip(predicted) {
        let (g, p) = (extend(g), extend(p));
        tp += g.intersection(&p).count();
        fp += p.difference(&g).count();
        fneg += g.difference(&p).count();
    }
    prf(tp, fp, fneg)
}

/// The most of train a tuning split may hold: a fifth, so a newsroom's few hundred labelled
/// articles keep four fifths to learn from (Reuters' 7,770 keep the requested 1,500).
pub const MAX_VALIDATION_SHARE: f64 = 0.2;

/// How many training documents the tuning split holds: `requested` (`--validation`), at most
/// [`MAX_VALIDATION_SHARE`] of `train`.
pub fn validation_size(requested: usize, train: usize) -> usize {
    requested.min((train as f64 * MAX_VALIDATION_SHARE) as usize)
}

/// Validation documents drawn from train: `n` of them, by a shuffle seeded with `seed`.
pub fn validation_split(train: &[LabelledItem], n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    order.truncate(n);
    order
}

/// The `k` values and thresholds tried when tuning.
pub const TUNE_K: &[usize] = &[5, 10, 20, 30];
/// 0.20, 0.25, ..., 0.60.
pub fn tune_thresholds() -> Vec<f32> {
    (0..=8).map(|i| 0.20 + 0.05 * i as f32).collect()
}

/// What tuning maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TuneObjective {
    /// Micro-F1: frequent labels dominate.
    MicroF1,
    /// Macro-F1: every label counts alike, rare ones included.
    MacroF1,
    /// The mean of the two: good on the labels a desk uses daily without giving up the rare ones.
    MeanF1,
}

impl TuneObjective {
    /// The value tuning maximises.
    pub fn of(self, metrics: &BTreeMap<String, f64>) -> f64 {
        match self {
            Self::MicroF1 => metrics["micro_f1"],
            Self::MacroF1 => metrics["macro_f1"],
            Self::MeanF1 => (metrics["micro_f1"] + metrics["macro_f1"]) / 2.0,
        }
    }
}

/// The trial whose predictions score best for `objective` against `gold` (ties: the first),
/// and its metrics.
pub fn grid_search<C>(
    trials: impl IntoIterator<Item = C>,
    predict: impl Fn(&C) -> Vec<Vec<String>>,
    gold: &[Vec<String>],
    labels: &[String],
    objective: TuneObjective,
) -> Option<(C, BTreeMap<String, f64>)> {
    let mut best: Option<(f64, C, BTreeMap<String, f64>)> = None;
    for trial in trials {
        let metrics = score(gold, &predict(&trial), labels).0;
        let value = objective.of(&metrics);
        if best.as_ref().is_none_or(|b| value > b.0) {
            best = Some((value, trial, metrics));
        }
    }
    best.map(|(_, trial, metrics)| (trial, metrics))
}

/// The kNN settings (k and threshold from the grid, the rest as given) with the best
/// `objective` on `neighbours` of `gold`, and the validation metrics there.
pub fn tune(
    neighbours: &[Vec<Neighbour>],
    gold: &[Vec<String>],
    labels: &[String],
    base: KnnConfig,
    objective: TuneObjective,
) -> (KnnConfig, BTreeMap<String, f64>) {
    let trials = TUNE_K.iter().flat_map(|&k| {
        let base = base.clone();
        tune_thresholds()
            .into_iter()
            .map(move |threshold| KnnConfig {
                k,
                threshold,
                ..base.clone()
            })
    });
    let predict = |settings: &KnnConfig| -> Vec<Vec<String>> {
        neighbours
            .iter()
            .map(|n| vote(n, settings).into_iter().map(|t| t.label).collect())
            .collect()
    };
    grid_search(trials, predict, gold, labels, objective)
        .unwrap_or_else(|| (base.clone(), BTreeMap::new()))
}

/// A dataset's splits as the suite reads them: train, and test cut to `limit`.
struct Splits {
    train_path: PathBuf,
    train: Vec<LabelledItem>,
    test: Vec<LabelledItem>,
}

impl Splits {
    fn read(
        dataset: &Path,
        taxonomy: &Taxonomy,
        limit: Option<usize>,
    ) -> Result<Self, TaggingEvalError> {
        let train_path = split_file(dataset, "train")?;
        let train = read_labelled(&train_path, taxonomy)?;
        let mut test = read_labelled(&split_file(dataset, "test")?, taxonomy)?;
        if let Some(n) = limit {
            test.truncate(n);
        }
        Ok(Self {
            train_path,
            train,
            test,
        })
    }
}

/// How `eval tagging` runs the kNN tagger.
pub struct TaggingEvalOptions {
    /// Tune `k` and the threshold on the validation split (else take `enrich.knn`).
    pub tune: bool,
    /// What tuning maximises.
    pub objective: TuneObjective,
    /// Validation documents drawn from train for tuning.
    pub validation: usize,
    /// Evaluate only the first N test documents.
    pub limit: Option<usize>,
}

/// Evaluate the tagger `kind`: the one dispatch `signaldesk eval tagging` and the eval gate run,
/// and the only way in (the per-tagger runners are private), so every run takes the product's
/// settings for `taxonomy` from [`crate::enrich::for_taxonomy`].
/// `llm` is the client of taggers that call one (the `llm` tagger needs it).
#[allow(clippy::too_many_arguments)]
pub async fn evaluate<S: VectorStore>(
    kind: crate::config::TaggerKind,
    store: &S,
    embedder: Arc<Embedder>,
    config: &Config,
    dataset: &Path,
    taxonomy: &Taxonomy,
    options: &TaggingEvalOptions,
    llm: Option<&crate::llm::AnyLlm>,
    on_progress: impl FnMut(usize),
) -> Result<Report, TaggingEvalError> {
    use crate::config::TaggerKind;
    // The product's settings for this taxonomy (an exclusive one: exactly one label per item).
    let config = &crate::enrich::for_taxonomy(config, Some(taxonomy));
    match kind {
        TaggerKind::Knn => {
            evaluate_knn(
                store,
                embedder,
                config,
                dataset,
                taxonomy,
                options,
                on_progress,
            )
            .await
        }
        TaggerKind::Zeroshot => {
            evaluate_zeroshot(store, embedder, config, dataset, taxonomy, options).await
        }
        TaggerKind::Llm => {
            let llm =
                llm.ok_or_else(|| TaggingEvalError::Tagger("the llm tagger needs an LLM".into()))?;
            evaluate_llm(
                store,
                embedder,
                config,
                dataset,
                taxonomy,
                options,
                llm,
                on_progress,
            )
            .await
        }
        TaggerKind::Ensemble => {
            evaluate_ensemble(
                store,
                embedder,
                config,
                dataset,
                taxonomy,
                options,
                on_progress,
            )
            .await
        }
    }
}

/// The settings a tagging report was made with, in one line (`knn k=5 threshold=0.40 ...`).
pub fn settings_line(kind: crate::config::TaggerKind, report: &Report) -> String {
    use crate::config::TaggerKind;
    let c = &report.config;
    let num = |k: &str| c[k].as_f64().unwrap_or_default();
    let text = |k: &str| c[k].as_str().unwrap_or("-").to_string();
    let line = match kind {
        TaggerKind::Knn => format!(
            "knn k={} threshold={:.2} weighting={}",
            c["k"],
            num("threshold"),
            text("weighting")
        ),
        TaggerKind::Zeroshot => format!(
            "zeroshot threshold={:.3} max_labels={}",
            num("threshold"),
            c["max_labels"]
        ),
        TaggerKind::Llm => format!(
            "llm {} via {} (candidates from knn k={}; {} of {} items fell back to knn)",
            text("llm_model"),
            text("prompt"),
            c["k"],
            c["fallbacks"],
            c["test_documents"]
        ),
        TaggerKind::Ensemble => format!(
            "ensemble head_weight={:.2} knn_weight={:.2} threshold={:.3} (knn k={})",
            num("head_weight"),
            num("knn_weight"),
            num("threshold"),
            c["k"]
        ),
    };
    if c["exclusive"] == true {
        line + " (exclusive taxonomy: one label each)"
    } else {
        line
    }
}

/// Run the suite with the kNN tagger; `on_progress(items)` hears the memory's ingest.
async fn evaluate_knn<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    config: &Config,
    dataset: &Path,
    taxonomy: &Taxonomy,
    options: &TaggingEvalOptions,
    on_progress: impl FnMut(usize),
) -> Result<Report, TaggingEvalError> {
    let Splits {
        train_path,
        train,
        test,
    } = Splits::read(dataset, taxonomy, options.limit)?;
    let (memory, ingested, ingest_seconds) =
        ingest_memory(store, &embedder, config, dataset, &train_path, on_progress).await?;
    let searcher = Searcher::open(store, &embedder, &memory, &config.search).await?;
    let labels: Vec<String> = taxonomy.concepts().iter().map(|c| c.id.clone()).collect();
    let mut settings = config.enrich.knn.clone();
    let mut validation = None;
    let tagger = KnnTagger::new(searcher, settings.clone());
    if options.tune {
        let picked = validation_split(&train, validation_size(options.validation, train.len()), 0);
        let texts: Vec<&str> = picked.iter().map(|&i| train[i].text.as_str()).collect();
        let ids: Vec<&str> = picked.iter().map(|&i| train[i].id.as_str()).collect();
        let gold: Vec<Vec<String>> = picked.iter().map(|&i| train[i].labels.clone()).collect();
        let max_k = *TUNE_K.iter().max().unwrap_or(&30);
        let neighbours = tagger.neighbours(&texts, Some(&ids), max_k).await?;
        let (tuned, metrics) = tune(
            &neighbours,
            &gold,
            &labels,
            settings.clone(),
            options.objective,
        );
        settings = tuned;
        validation = Some(metrics);
    }
    let texts: Vec<&str> = test.iter().map(|t| t.text.as_str()).collect();
    let started = std::time::Instant::now();
    let neighbours = tagger.neighbours(&texts, None, settings.k).await?;
    let predicted_tags: Vec<_> = neighbours.iter().map(|n| vote(n, &settings)).collect();
    let tag_seconds = started.elapsed().as_secs_f64();
    let predicted: Vec<Vec<String>> = predicted_tags
        .iter()
        .map(|tags| tags.iter().map(|t| t.label.clone()).collect())
        .collect();
    let config = json!({
        "tagger": "knn",
        "k": settings.k,
        // As configured (0.4, not 0.4000000059604645).
        "threshold": (f64::from(settings.threshold) * 1e4).round() / 1e4,
        "min_labels": settings.min_labels,
        "max_labels": settings.max_labels,
        "weighting": settings.weighting,
        "tuned_on_validation": options.tune,
        "tune_objective": options.tune.then_some(options.objective),
        "validation_documents": if options.tune { validation_size(options.validation, train.len()) } else { 0 },
        "validation_metrics": validation,
        "memory_collection": memory,
        "memory_documents": ingested,
        "memory_ingest_seconds": ingest_seconds,
        "test_documents": test.len(),
        "tag_seconds": tag_seconds,
        "model": embedder.model_id(),
        "taxonomy": taxonomy.id(),
        "exclusive": taxonomy.exclusive,
        "backend": store.backend(),
        "search_exact": config.search.exact,
    });
    Ok(report(dataset, taxonomy, &test, &predicted, config))
}

/// Ingest `train_path` into the dataset's labelled memory collection (the `ingest` code, whole
/// documents truncated at the model's limit, one point each: a neighbour is an item). Returns
/// the collection, the documents read and the seconds it took.
async fn ingest_memory<S: VectorStore>(
    store: &S,
    embedder: &Arc<Embedder>,
    config: &Config,
    dataset: &Path,
    train_path: &Path,
    on_progress: impl FnMut(usize),
) -> Result<(String, usize, f64), TaggingEvalError> {
    let name = dataset
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    let memory = format!("memory-{name}");
    let ingest_options = IngestOptions::from_config(config, &memory, None);
    let started = std::time::Instant::now();
    let ingested = ingest_file(
        store,
        embedder.clone(),
        train_path,
        &ingest_options,
        |_, _| {},
        on_progress,
    )
    .await?;
    Ok((memory, ingested.read, started.elapsed().as_secs_f64()))
}

/// Run the suite with the ensemble tagger: kNN over the memory and a head trained on the
/// memory's stored vectors. With `options.tune`, the head is trained without the validation
/// split, the ensemble's weight and threshold are chosen on it (kNN leave-one-out, k and
/// weighting from `enrich.knn`), and the head is trained again on all of train for test.
async fn evaluate_ensemble<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    config: &Config,
    dataset: &Path,
    taxonomy: &Taxonomy,
    options: &TaggingEvalOptions,
    on_progress: impl FnMut(usize),
) -> Result<Report, TaggingEvalError> {
    let Splits {
        train_path,
        train,
        test,
    } = Splits::read(dataset, taxonomy, options.limit)?;
    let (memory, ingested, ingest_seconds) =
        ingest_memory(store, &embedder, config, dataset, &train_path, on_progress).await?;
    let searcher = Searcher::open(store, &embedder, &memory, &config.search).await?;
    let labels: Vec<String> = taxonomy.concepts().iter().map(|c| c.id.clone()).collect();
    let knn_settings = config.enrich.knn.clone();
    let knn = KnnTagger::new(searcher, knn_settings.clone());
    let mut settings = config.enrich.ensemble.clone();
    let mut validation = None;
    let mut head_seconds = 0.0;
    if options.tune {
        let picked = validation_split(&train, validation_size(options.validation, train.len()), 0);
        let texts: Vec<&str> = picked.iter().map(|&i| train[i].text.as_str()).collect();
        let ids: Vec<&str> = picked.iter().map(|&i| train[i].id.as_str()).collect();
        let gold: Vec<Vec<String>> = picked.iter().map(|&i| train[i].labels.clone()).collect();
        let exclude = ids.iter().map(|s| s.to_string()).collect();
        let started = std::time::Instant::now();
        let head = train_head(store, &memory, &exclude, &config.enrich.head).await?;
        head_seconds += started.elapsed().as_secs_f64();
        let vectors = embedder.embed(&texts)?;
        let neighbours = knn
            .neighbours_embedded(&texts, vectors.clone(), Some(&ids), knn_settings.k)
            .await?;
        let signals: Vec<Signals> = neighbours
            .iter()
            .zip(&vectors)
            .map(|(n, v)| ensemble::signals(n, v, &head, &knn_settings))
            .collect();
        let trials = (0..=10).flat_map(|w| {
            let base = settings.clone();
            (0..=16).map(move |t| EnsembleConfig {
                head_weight: w as f32 / 10.0,
                knn_weight: 1.0 - w as f32 / 10.0,
                threshold: 0.20 + 0.025 * t as f32,
                ..base.clone()
            })
        });
        let predict = |trial: &EnsembleConfig| -> Vec<Vec<String>> {
            signals
                .iter()
                .map(|s| combine(s, trial).into_iter().map(|t| t.label).collect())
                .collect()
        };
        if let Some((tuned, metrics)) =
            grid_search(trials, predict, &gold, &labels, options.objective)
        {
            settings = tuned;
            validation = Some(metrics);
        }
    }
    let started = std::time::Instant::now();
    let head = train_head(store, &memory, &Default::default(), &config.enrich.head).await?;
    head_seconds += started.elapsed().as_secs_f64();
    let tagger = EnsembleTagger::new(knn, head, settings.clone());
    let texts: Vec<&str> = test.iter().map(|t| t.text.as_str()).collect();
    let started = std::time::Instant::now();
    let predicted: Vec<Vec<String>> = tagger
        .signals(&texts)
        .await?
        .iter()
        .map(|s| combine(s, &settings).into_iter().map(|t| t.label).collect())
        .collect();
    let tag_seconds = started.elapsed().as_secs_f64();
    let round = |x: f32| (f64::from(x) * 1e4).round() / 1e4;
    let config = json!({
        "tagger": "ensemble",
        "head_weight": round(settings.head_weight),
        "knn_weight": round(settings.knn_weight),
        "threshold": round(settings.threshold),
        "min_labels": settings.min_labels,
        "max_labels": settings.max_labels,
        "k": knn_settings.k,
        "weighting": knn_settings.weighting,
        "head": config.enrich.head,
        "head_train_seconds": head_seconds,
        "tuned_on_validation": options.tune,
        "tune_objective": options.tune.then_some(options.objective),
        "validation_documents": if options.tune { validation_size(options.validation, train.len()) } else { 0 },
        "validation_metrics": validation,
        "memory_collection": memory,
        "memory_documents": ingested,
        "memory_ingest_seconds": ingest_seconds,
        "test_documents": test.len(),
        "tag_seconds": tag_seconds,
        "model": embedder.model_id(),
        "taxonomy": taxonomy.id(),
        "exclusive": taxonomy.exclusive,
        "backend": store.backend(),
        "search_exact": config.search.exact,
    });
    Ok(report(dataset, taxonomy, &test, &predicted, config))
}

/// Run the suite with the `llm` tagger over the dataset's memory: what [`crate::enrich::open_tagger`]
/// builds for `signaldesk tag --tagger llm`, on the first `options.limit` test documents (every
/// call costs). Reports how many items fell back to kNN and the tokens spent.
#[allow(clippy::too_many_arguments)]
async fn evaluate_llm<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    config: &Config,
    dataset: &Path,
    taxonomy: &Taxonomy,
    options: &TaggingEvalOptions,
    llm: &crate::llm::AnyLlm,
    on_progress: impl FnMut(usize),
) -> Result<Report, TaggingEvalError> {
    use crate::enrich::Tagger;
    use crate::llm::LlmClient;
    let Splits {
        train_path, test, ..
    } = Splits::read(dataset, taxonomy, options.limit)?;
    let (memory, ingested, ingest_seconds) =
        ingest_memory(store, &embedder, config, dataset, &train_path, on_progress).await?;
    let (tagger, lineage) = crate::enrich::open_tagger(
        crate::enrich::TaggerKind::Llm,
        store,
        &embedder,
        config,
        Some(taxonomy),
        Some(memory.clone()),
        Some(llm),
    )
    .await
    .map_err(|e| TaggingEvalError::Tagger(e.to_string()))?;
    let texts: Vec<&str> = test.iter().map(|t| t.text.as_str()).collect();
    let started = std::time::Instant::now();
    let tagged = tagger.tag_items(&texts).await?;
    let tag_seconds = started.elapsed().as_secs_f64();
    let predicted: Vec<Vec<String>> = tagged
        .iter()
        .map(|t| t.tags.iter().map(|t| t.label.clone()).collect())
        .collect();
    let fallbacks: Vec<&str> = tagged
        .iter()
        .filter_map(|t| t.fallback_reason.as_deref())
        .collect();
    let config = json!({
        "tagger": "llm",
        "k": config.enrich.knn.k,
        "llm_provider": llm.provider(),
        "llm_model": llm.model(),
        "prompt": lineage["llm"]["prompt"],
        "candidates": config.enrich.llm.candidates,
        "examples": config.enrich.llm.examples,
        "concurrency": config.enrich.llm.concurrency,
        "fallbacks": fallbacks.len(),
        "fallback_reasons": fallbacks.iter().take(5).collect::<Vec<_>>(),
        "prompt_tokens": tagged.iter().map(|t| t.usage.prompt_tokens).sum::<usize>(),
        "completion_tokens": tagged.iter().map(|t| t.usage.completion_tokens).sum::<usize>(),
        "memory_collection": memory,
        "memory_documents": ingested,
        "memory_ingest_seconds": ingest_seconds,
        "test_documents": test.len(),
        "tag_seconds": tag_seconds,
        "model": embedder.model_id(),
        "taxonomy": taxonomy.id(),
        "exclusive": taxonomy.exclusive,
        "backend": store.backend(),
    });
    let mut report = report(dataset, taxonomy, &test, &predicted, config);
    // The share of items the LLM answered (the rest fell back to kNN), per item too so the gate
    // can test it: a replay of a recorded run must answer every item from the cache.
    for (item, t) in test.iter().zip(&tagged) {
        if let Some(row) = report.per_item.get_mut(&item.id) {
            row.insert(
                "llm_answered".into(),
                f64::from(u8::from(t.fallback_reason.is_none())),
            );
        }
    }
    report.metrics.insert(
        "llm_answered".into(),
        1.0 - fallbacks.len() as f64 / test.len().max(1) as f64,
    );
    Ok(report)
}

/// The suite's report for `predicted` labels of the `test` items.
fn report(
    dataset: &Path,
    taxonomy: &Taxonomy,
    test: &[LabelledItem],
    predicted: &[Vec<String>],
    config: Value,
) -> Report {
    let labels: Vec<String> = taxonomy.concepts().iter().map(|c| c.id.clone()).collect();
    let gold: Vec<Vec<String>> = test.iter().map(|t| t.labels.clone()).collect();
    let (mut metrics, per_label) = score(&gold, predicted, &labels);
    if taxonomy.exclusive {
        metrics.insert("accuracy".into(), accuracy(&gold, predicted));
    }
    if taxonomy.is_hierarchical() {
        let (p, r, f) = hierarchical(&gold, predicted, taxonomy);
        metrics.insert("hierarchical_precision".into(), p);
        metrics.insert("hierarchical_recall".into(), r);
        metrics.insert("hierarchical_f1".into(), f);
    }
    let mut per_item = BTreeMap::new();
    let mut items = serde_json::Map::new();
    for ((item, p), g) in test.iter().zip(predicted).zip(&gold) {
        let p: BTreeSet<&String> = p.iter().collect();
        let g: BTreeSet<&String> = g.iter().collect();
        let tp: Vec<&&String> = p.intersection(&g).collect();
        let fp: Vec<&&String> = p.difference(&g).collect();
        let fneg: Vec<&&String> = g.difference(&p).collect();
        per_item.insert(
            item.id.clone(),
            BTreeMap::from([
                ("tp".to_string(), tp.len() as f64),
                ("fp".to_string(), fp.len() as f64),
                ("fn".to_string(), fneg.len() as f64),
            ]),
        );
        items.insert(item.id.clone(), json!({"tp": tp, "fp": fp, "fn": fneg}));
    }
    Report {
        suite: "tagging".into(),
        dataset: dataset.display().to_string(),
        config,
        metrics,
        per_item,
        details: json!({"per_label": per_label, "items": items}),
        extra: Default::default(),
    }
}

/// Run the suite with the zero-shot tagger: no memory, only the taxonomy's own words. The
/// threshold (and the most labels per item) are tuned on the validation split of train for
/// `options.objective`, unless `options.tune` is off.
async fn evaluate_zeroshot<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    config: &Config,
    dataset: &Path,
    taxonomy: &Taxonomy,
    options: &TaggingEvalOptions,
) -> Result<Report, TaggingEvalError> {
    let Splits { train, test, .. } = Splits::read(dataset, taxonomy, options.limit)?;
    let started = std::time::Instant::now();
    let collection =
        crate::enrich::zeroshot::prepare_labels(store, embedder.clone(), config, taxonomy).await?;
    let labels_seconds = started.elapsed().as_secs_f64();
    let searcher = Searcher::open(store, &embedder, &collection, &config.search).await?;
    let mut settings = config.enrich.zeroshot.clone();
    let tagger = ZeroShotTagger::new(searcher, settings.clone());
    let labels: Vec<String> = taxonomy.concepts().iter().map(|c| c.id.clone()).collect();
    let mut validation = None;
    if options.tune {
        let picked = validation_split(&train, validation_size(options.validation, train.len()), 0);
        let texts: Vec<&str> = picked.iter().map(|&i| train[i].text.as_str()).collect();
        let gold: Vec<Vec<String>> = picked.iter().map(|&i| train[i].labels.clone()).collect();
        let candidates = tagger.candidates(&texts).await?;
        // An exclusive taxonomy keeps its one label; the others try several limits.
        let limits: &[usize] = if taxonomy.exclusive {
            &[1]
        } else {
            &[1, 2, 3, 5]
        };
        let trials = limits.iter().copied().flat_map(|max_labels| {
            let base = settings.clone();
            (0..=20).map(move |step| ZeroShotConfig {
                threshold: 0.10 + 0.025 * step as f32,
                max_labels,
                ..base.clone()
            })
        });
        let predict = |trial: &ZeroShotConfig| -> Vec<Vec<String>> {
            candidates
                .iter()
                .map(|c| pick(c, trial).into_iter().map(|t| t.label).collect())
                .collect()
        };
        let best = grid_search(trials, predict, &gold, &labels, options.objective);
        if let Some((tuned, metrics)) = best {
            settings = tuned;
            validation = Some(metrics);
        }
    }
    let texts: Vec<&str> = test.iter().map(|t| t.text.as_str()).collect();
    let started = std::time::Instant::now();
    let candidates = tagger.candidates(&texts).await?;
    let predicted: Vec<Vec<String>> = candidates
        .iter()
        .map(|c| pick(c, &settings).into_iter().map(|t| t.label).collect())
        .collect();
    let tag_seconds = started.elapsed().as_secs_f64();
    let config = json!({
        "tagger": "zeroshot",
        "threshold": (f64::from(settings.threshold) * 1e4).round() / 1e4,
        "max_labels": settings.max_labels,
        "min_labels": settings.min_labels,
        "candidates": settings.candidates,
        "tuned_on_validation": options.tune,
        "tune_objective": options.tune.then_some(options.objective),
        "validation_documents": if options.tune { validation_size(options.validation, train.len()) } else { 0 },
        "validation_metrics": validation,
        "labels_collection": collection,
        "labels_seconds": labels_seconds,
        "test_documents": test.len(),
        "tag_seconds": tag_seconds,
        "model": embedder.model_id(),
        "taxonomy": taxonomy.id(),
        "exclusive": taxonomy.exclusive,
        "backend": store.backend(),
    });
    Ok(report(dataset, taxonomy, &test, &predicted, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// Hand-worked: 2 items, labels a, b, c.
    /// item 1: gold {a, b}, predicted {a, c}: a tp, c fp, b fn.
    /// item 2: gold {b},    predicted {b}:    b tp.
    /// micro: tp 2, fp 1, fn 1 → P = R = F1 = 2/3.
    /// per label: a P1 R1 F1 1; b P1 R 1/2 F 2/3; c P0 R0 F0 (support 0).
    /// macro F1 = (1 + 2/3 + 0) / 3 = 5/9.
    #[test]
    fn micro_and_macro_match_the_hand_worked_example() {
        let gold = [s(&["a", "b"]), s(&["b"])];
        let pred = [s(&["a", "c"]), s(&["b"])];
        let (m, per) = score(&gold, &pred, &s(&["a", "b", "c"]));
        let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
        assert!(close(m["micro_precision"], 2.0 / 3.0));
        assert!(close(m["micro_recall"], 2.0 / 3.0));
        assert!(close(m["micro_f1"], 2.0 / 3.0));
        assert!(close(m["macro_f1"], 5.0 / 9.0));
        assert!(close(m["macro_recall"], 0.5));
        assert!(close(per["b"].recall, 0.5) && per["b"].support == 2);
        assert_eq!((per["c"].support, per["c"].predicted), (0, 1));
    }

    /// Tree: sport > football > cup. Gold {cup}, predicted {football}: extended gold
    /// {cup, football, sport}, extended prediction {football, sport}: tp 2, fp 0, fn 1,
    /// hP 1, hR 2/3. Flat scoring gives this prediction nothing.
    #[test]
    fn hierarchical_scores_give_credit_for_ancestors() {
        let t = Taxonomy::parse(
            "tree",
            "tree.tsv",
            b"id\tlabel\tparent\nsport\tSport\t\nfootball\tFootball\tsport\ncup\tCup\tfootball\n",
        )
        .unwrap();
        let (p, r, f) = hierarchical(&[s(&["cup"])], &[s(&["football"])], &t);
        assert!((p - 1.0).abs() < 1e-12 && (r - 2.0 / 3.0).abs() < 1e-12);
        assert!((f - 0.8).abs() < 1e-12);
        let flat = score(
            &[s(&["cup"])],
            &[s(&["football"])],
            &s(&["sport", "football", "cup"]),
        )
        .0;
        assert_eq!(flat["micro_f1"], 0.0);
    }

    #[test]
    fn accuracy_counts_exact_label_sets() {
        let gold = vec![s(&["earn"]), s(&["acq"]), s(&["crude"]), s(&["ship"])];
        let predicted = vec![s(&["earn"]), s(&["earn"]), s(&["crude"]), s(&[])];
        assert_eq!(accuracy(&gold, &predicted), 0.5);
        assert_eq!(accuracy(&[], &[]), 0.0);
    }

    #[test]
    fn the_validation_split_is_fixed_by_its_seed() {
        let train: Vec<LabelledItem> = (0..100)
            .map(|i| LabelledItem {
                id: i.to_string(),
                text: String::new(),
                labels: vec![],
            })
            .collect();
        assert_eq!(validation_size(1500, 7770), 1500);
        assert_eq!(validation_size(1500, 300), 60);
        assert_eq!(validation_size(1500, 3), 0);
        let a = validation_split(&train, 15, 0);
        assert_eq!(a, validation_split(&train, 15, 0));
        assert_ne!(a, validation_split(&train, 15, 1));
        assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), 15);
    }
}
