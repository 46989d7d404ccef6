//! The recommendation suite on MovieLens (ml-latest-small): the product's chain end to end.
//! Movies are ingested as content (title + genres), tagged by enrichment's zero-shot tagger
//! against the IAB Content Taxonomy, read back as the recommender's catalogue; ratings become
//! interactions; a per-user temporal split holds out each user's latest positives; the blend is
//! trained on the training side only (its own inner split), and every ranker is scored on the
//! held-out positives.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::metrics::{mrr_at, ndcg_at, precision_at, recall_at, Judgments};
use super::traffic::{self, TrafficUser};
use super::Report;
use crate::config::{ObjectivesConfig, RankConfig};
use crate::embed::Embedder;
use crate::enrich::collection::{enrich_collection, EnrichOptions};
use crate::enrich::taxonomy::Taxonomy;
use crate::enrich::{open_tagger, TaggerKind};
use crate::ingest::pipeline::{ingest_file, IngestOptions};
use crate::rank::blend::BlendModel;
use crate::rank::catalogue::{dot, Catalogue};
use crate::rank::experiments::{ExperimentsFile, LoggedPool};
use crate::rank::interactions::read_file;
use crate::rank::recommender::{RankerKind, RecommendRequest, Recommender};
use crate::rank::rerank::rerank;
use crate::rank::signals::{InteractionSignals, UserHistory};
use crate::rank::{temporal_split, train_blend};
use crate::store::VectorStore;
use crate::Config;

/// Why the suite could not run.
#[derive(Debug, thiserror::Error)]
pub enum RecommendEvalError {
    #[error("{0}")]
    Dataset(String),
    #[error(transparent)]
    Rank(#[from] crate::rank::RankError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::pipeline::IngestError),
    #[error(transparent)]
    Taxonomy(#[from] crate::enrich::taxonomy::TaxonomyError),
    #[error(transparent)]
    Tagger(#[from] Box<crate::enrich::TaggerSetupError>),
    #[error(transparent)]
    Enrich(#[from] crate::enrich::collection::EnrichError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct RecommendEvalOptions {
    /// The IAB taxonomy movies are tagged against.
    pub taxonomy: PathBuf,
    /// Variants of `rank.experiments` to score beside the four rankers.
    pub variants: Vec<String>,
    /// MMR λ values for the diversity sweep.
    pub lambdas: Vec<f32>,
    /// Only this many test users (a quick run); all by default.
    pub limit_users: Option<usize>,
}

/// Cut-offs the report gives.
const K: usize = 10;
const K_RECALL: usize = 50;
/// The cold-start readout serves each test user as if they had only this many (their latest)
/// training engagements.
const COLD_START_RATINGS: usize = 5;

/// Write the movies as content items (title + genres; `published_at` from the title's year).
fn movies_as_items(dataset: &Path, out: &Path) -> Result<usize, RecommendEvalError> {
    let path = dataset.join("movies.csv");
    let mut reader = csv::Reader::from_path(&path)
        .map_err(|e| RecommendEvalError::Dataset(format!("{}: {e}", path.display())))?;
    let mut lines = String::new();
    let mut n = 0;
    for record in reader.records() {
        let r =
            record.map_err(|e| RecommendEvalError::Dataset(format!("{}: {e}", path.display())))?;
        let (id, title, genres) = (&r[0], &r[1], &r[2]);
        let genres = if genres == "(no genres listed)" {
            String::new()
        } else {
            genres.replace('|', ", ")
        };
        let mut item = Map::new();
        item.insert("id".into(), json!(id));
        item.insert("title".into(), json!(title));
        item.insert("body".into(), json!(genres));
        item.insert("content_type".into(), json!("other"));
        item.insert("metadata".into(), json!({"kind": "movie"}));
        item.insert("source".into(), json!("movielens"));
        let year = title
            .trim_end()
            .strip_suffix(')')
            .and_then(|t| t.rsplit_once('('))
            .and_then(|(_, y)| y.trim().parse::<u32>().ok())
            .filter(|y| (1870..2100).contains(y));
        if let Some(y) = year {
            item.insert("published_at".into(), json!(format!("{y}-01-01")));
        }
        lines.push_str(&Value::Object(item).to_string());
        lines.push('\n');
        n += 1;
    }
    std::fs::write(out, lines).map_err(|source| RecommendEvalError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(n)
}

/// Mean pairwise 1 − cosine within a list.
fn diversity(catalogue: &Catalogue, items: &[usize]) -> f64 {
    let mut sum = 0.0;
    let mut pairs = 0;
    for a in 0..items.len() {
        for b in a + 1..items.len() {
            sum += 1.0 - f64::from(dot(catalogue.vector(items[a]), catalogue.vector(items[b])));
            pairs += 1;
        }
    }
    if pairs == 0 {
        0.0
    } else {
        sum / pairs as f64
    }
}

/// Accumulates one ranker's metrics over users.
#[derive(Default)]
struct Scores {
    sums: BTreeMap<String, f64>,
    users: usize,
    covered: BTreeSet<usize>,
}

impl Scores {
    /// Users scored so far.
    fn users(&self) -> usize {
        self.users
    }

    fn add(
        &mut self,
        catalogue: &Catalogue,
        list: &[usize],
        judgments: &Judgments,
    ) -> BTreeMap<String, f64> {
        let ids: Vec<&str> = list
            .iter()
            .map(|&i| catalogue.items[i].id.as_str())
            .collect();
        let top: Vec<usize> = list.iter().take(K).copied().collect();
        self.covered.extend(&top);
        let m = BTreeMap::from([
            ("ndcg@10".to_string(), ndcg_at(&ids, judgments, K)),
            ("precision@10".to_string(), precision_at(&ids, judgments, K)),
            ("recall@10".to_string(), recall_at(&ids, judgments, K)),
            (
                "recall@50".to_string(),
                recall_at(&ids, judgments, K_RECALL),
            ),
            ("mrr".to_string(), mrr_at(&ids, judgments, ids.len().max(1))),
            ("diversity".to_string(), diversity(catalogue, &top)),
        ]);
        for (k, v) in &m {
            *self.sums.entry(k.clone()).or_default() += v;
        }
        self.users += 1;
        m
    }

    fn metrics(&self, catalogue: &Catalogue) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = self
            .sums
            .iter()
            .map(|(k, v)| (k.clone(), v / self.users.max(1) as f64))
            .collect();
        out.insert(
            "coverage".into(),
            self.covered.len() as f64 / catalogue.len().max(1) as f64,
        );
        out
    }
}

/// The MovieLens catalogue in the store, as the product builds it: movies ingested as content
/// and tagged by enrichment's zero-shot tagger; then read back with the ratings.
pub struct Prepared {
    /// The physical collection holding the movies.
    pub collection: String,
    pub catalogue: Catalogue,
    /// Every rating as an interaction.
    pub events: Vec<crate::rank::interactions::Interaction>,
    pub taxonomy: Taxonomy,
    /// What tagging did (items tagged, kept).
    pub tagging: crate::enrich::collection::EnrichSummary,
    pub ingest_seconds: f64,
    pub tag_seconds: f64,
}

/// Ingest and tag the movies of `dataset` (both skip what is current) and read the ratings.
pub async fn prepare<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    config: &Config,
    dataset: &Path,
    taxonomy: &Path,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<Prepared, RecommendEvalError> {
    let started = std::time::Instant::now();
    // 1. Movies as content, through ingest.
    // The movies as an ingest file, in the cache (rebuildable; ingest skips unchanged items).
    let work = config.cache_dir.join("eval");
    std::fs::create_dir_all(&work).map_err(|source| RecommendEvalError::Write {
        path: work.clone(),
        source,
    })?;
    let items_path = work.join("movielens-movies.jsonl");
    let movies = movies_as_items(dataset, &items_path)?;
    let collection = "movielens-movies";
    let ingest_options = IngestOptions::from_config(config, collection, None);
    let mut first_reject = None;
    let ingested = ingest_file(
        store,
        embedder.clone(),
        &items_path,
        &ingest_options,
        |line, reason| {
            first_reject.get_or_insert_with(|| format!("line {line}: {reason}"));
        },
        |n| progress("ingest", n, movies),
    )
    .await?;
    if ingested.rejected > 0 {
        return Err(RecommendEvalError::Dataset(format!(
            "{} movies rejected by ingest, the first at {}",
            ingested.rejected,
            first_reject.unwrap_or_default()
        )));
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    // The name is an alias of the model's physical collection.
    let physical = store
        .resolve(collection)
        .await
        .map_err(crate::rank::RankError::from)?;
    let collection = physical.as_str();
    // 2. Tags from enrichment (zero-shot against IAB); current tags are kept.
    let taxonomy = Taxonomy::load(taxonomy)?;
    let (tagger, lineage) = open_tagger(
        TaggerKind::Zeroshot,
        store,
        &embedder,
        config,
        Some(&taxonomy),
        None,
        None,
    )
    .await
    .map_err(Box::new)?;
    let tagged_at = std::time::Instant::now();
    let enrich = enrich_collection(
        store,
        collection,
        &tagger,
        &lineage,
        &EnrichOptions {
            only_stale: true,
            ..EnrichOptions::default()
        },
        |n| progress("tag", n, movies),
    )
    .await?;
    let tag_seconds = tagged_at.elapsed().as_secs_f64();
    // 3. The catalogue as the recommender reads it, and the interactions.
    let catalogue = Catalogue::load(store, collection).await?;
    let (events, rejects) = read_file(
        &dataset.join("ratings.csv"),
        &crate::rank::interactions::EventRules::now(),
    )?;
    if !rejects.is_empty() {
        return Err(RecommendEvalError::Dataset(format!(
            "ratings.csv: {} lines rejected, the first at line {}: {}",
            rejects.len(),
            rejects[0].line,
            rejects[0].reason
        )));
    }
    Ok(Prepared {
        collection: collection.to_string(),
        catalogue,
        events,
        taxonomy,
        tagging: enrich,
        ingest_seconds,
        tag_seconds,
    })
}

/// The console summary of a recommendation report: one line per ranker (and the ablations
/// without tags and without factors), then the diversity sweep.
pub fn console_summary(report: &Report, sweep: &[(f32, f64, f64)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let c = &report.config;
    let _ = writeln!(
        out,
        "recommend on {} ({} test users, {} movies, {} tagged):",
        report.dataset, c["test_users"], c["movies"], c["tagged_movies"]
    );
    let _ = writeln!(
        out,
        "  {:<26} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "ranker", "nDCG@10", "P@10", "R@10", "R@50", "MRR", "cover", "divers"
    );
    let rankers = report.extra["rankers"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let ablation = &report.extra["ablation"];
    let ablations = ABLATIONS.map(|(name, _)| (name.trim_start_matches("blend_"), &ablation[name]));
    for (name, m) in rankers
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .chain(ablations)
    {
        let g = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "  {name:<26} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4}",
            g("ndcg@10"),
            g("precision@10"),
            g("recall@10"),
            g("recall@50"),
            g("mrr"),
            g("coverage"),
            g("diversity")
        );
    }
    for (lambda, ndcg, diversity) in sweep {
        let _ = writeln!(
            out,
            "  λ = {lambda:<5} nDCG@10 {ndcg:.4}  diversity {diversity:.4}"
        );
    }
    let cold = &report.extra["cold_start"];
    let _ = writeln!(
        out,
        "  cold start ({} test users cut to their latest {} training engagements): the served list's nDCG@10 {:.4}, popularity's {:.4} (ratio {:.2})",
        cold["users"],
        cold["training_engagements_kept"],
        cold["served"]["ndcg@10"].as_f64().unwrap_or(f64::NAN),
        cold["popularity"]["ndcg@10"].as_f64().unwrap_or(f64::NAN),
        cold["ndcg@10_ratio"].as_f64().unwrap_or(f64::NAN)
    );
    out.push_str(&traffic::console_summary(&report.extra["simulation"]));
    out
}

/// Where the diversity plot of a report goes: `report.json` → `report-diversity.png`.
pub fn diversity_plot_path(output: &Path) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!("{stem}-diversity.png"))
}

/// Run the suite.
pub async fn evaluate<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    config: &Config,
    dataset: &Path,
    options: &RecommendEvalOptions,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<(Report, Vec<(f32, f64, f64)>), RecommendEvalError> {
    let settings: RankConfig = config.rank.clone();
    let Prepared {
        collection,
        catalogue,
        events,
        taxonomy,
        tagging: enrich,
        ingest_seconds,
        tag_seconds,
    } = prepare(
        store,
        embedder.clone(),
        config,
        dataset,
        &options.taxonomy,
        &mut progress,
    )
    .await?;
    let collection = collection.as_str();
    let tagged_items = catalogue
        .items
        .iter()
        .filter(|i| !i.tags.is_empty())
        .count();
    let movies = catalogue.len();
    let split = temporal_split(&events, &settings, 5);
    // 4. The blend, from the training side only, with every feature and without each of the
    // ablated groups.
    let trained_at = std::time::Instant::now();
    let (model, ablations) = train_blends(
        store,
        collection,
        &catalogue,
        &split.train,
        &settings,
        &mut progress,
    )
    .await?;
    let train_seconds = trained_at.elapsed().as_secs_f64();
    let variant_runs = variant_runs(options, &settings)?;
    // 5. Every ranker on every test user.
    let signals = InteractionSignals::build(&split.train, &catalogue, &settings);
    let recommender = Recommender {
        store,
        collection: collection.to_string(),
        catalogue,
        signals,
        settings: settings.clone(),
    };
    let catalogue = &recommender.catalogue;
    let users: Vec<(&String, &Vec<String>)> = split
        .held_out
        .iter()
        .take(options.limit_users.unwrap_or(usize::MAX))
        .collect();
    let run = ScoringRun {
        model: &model,
        ablations: &ablations,
        variants: &variant_runs,
        plain: ObjectivesConfig {
            mmr_lambda: 1.0,
            ..settings.objectives.clone()
        },
        lambdas: &options.lambdas,
        settings: &settings,
    };
    let mut scores = RunScores::default();
    let mut per_item: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let scored_at = std::time::Instant::now();
    for (done, (user, held)) in users.iter().enumerate() {
        let row = run
            .score_user(&recommender, user, held, &mut scores)
            .await?;
        per_item.insert((*user).clone(), row);
        progress("score", done + 1, users.len());
    }
    let score_seconds = scored_at.elapsed().as_secs_f64();
    let (metrics, extra, sweep_points) =
        scores.summarize(catalogue, options, references(dataset), &model, &settings);
    let config_json = json!({
        "split": "per user with >= 5 positives (rating >= 4): the last max(1, floor(0.2n + 0.5)) positives by (timestamp, movie id) are test; that user's events from the first test event on are left out of training",
        "item_text": "title + genres (tags.csv unused)",
        "test_users": users.len(),
        "training_interactions": split.train.len(),
        "movies": movies,
        "tagged_movies": tagged_items,
        "tagger": "zeroshot",
        "taxonomy": taxonomy.id(),
        "tagging": enrich,
        "model": embedder.model_id(),
        "blend_model": {"version": model.version, "features": model.features, "weights": model.weights, "training": model.training},
        "ablation_models": ablations.iter().map(|(name, m)| (name.clone(), json!({"version": m.version, "features": m.features, "weights": m.weights}))).collect::<Map<String, Value>>(),
        "rank": settings,
        "k": K,
        "backend": store.backend(),
        "seconds": {"ingest": ingest_seconds, "tag": tag_seconds, "train": train_seconds, "score": score_seconds},
    });
    let report = Report {
        suite: "recommend".into(),
        dataset: dataset.display().to_string(),
        config: config_json,
        metrics,
        per_item,
        details: Value::Null,
        extra,
    };
    Ok((report, sweep_points))
}

/// The dataset's outside references (`references.json`, written by
/// `scripts/recommend_reference.py`), or none.
fn references(dataset: &Path) -> Value {
    std::fs::read_to_string(dataset.join("references.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .unwrap_or(json!({}))
}

/// The blend trained on `train`, the same without the tag feature, and without the
/// collaborative factor (the ablations).
async fn train_blends<S: VectorStore>(
    store: &S,
    collection: &str,
    catalogue: &Catalogue,
    train: &[crate::rank::interactions::Interaction],
    settings: &RankConfig,
    progress: &mut impl FnMut(&str, usize, usize),
) -> Result<(BlendModel, Vec<(String, BlendModel)>), RecommendEvalError> {
    let model = train_blend(
        store,
        collection,
        catalogue,
        train,
        settings,
        &[],
        |d, n| progress("train", d, n),
    )
    .await?;
    let mut ablations = Vec::new();
    for (name, features) in ABLATIONS {
        let m = train_blend(
            store,
            collection,
            catalogue,
            train,
            settings,
            features,
            |d, n| progress(&format!("train ({name})"), d, n),
        )
        .await?;
        ablations.push((name.to_string(), m));
    }
    Ok((model, ablations))
}

/// The ablations: each blend is trained without these features.
const ABLATIONS: [(&str, &[&str]); 7] = [
    ("blend_without_tags", &["tag_overlap"]),
    ("blend_without_factors", &["factor"]),
    (
        "blend_without_sequence",
        &[
            "recent_dense",
            "recent_factor",
            "recent_cooccurrence",
            "tag_recency",
            "source_recency",
        ],
    ),
    ("blend_without_recent_dense", &["recent_dense"]),
    ("blend_without_recent_factor", &["recent_factor"]),
    (
        "blend_without_recent_cooccurrence",
        &["recent_cooccurrence"],
    ),
    ("blend_without_recency", &["tag_recency", "source_recency"]),
];

/// An experiment variant scored beside the rankers: name, ranker, its own model (else the
/// blend's), objectives.
type VariantRun = (String, RankerKind, Option<BlendModel>, ObjectivesConfig);

/// The variants `options` names, from `rank.experiments`.
fn variant_runs(
    options: &RecommendEvalOptions,
    settings: &RankConfig,
) -> Result<Vec<VariantRun>, RecommendEvalError> {
    let experiments = if options.variants.is_empty() {
        ExperimentsFile::default()
    } else {
        let text = std::fs::read_to_string(&settings.experiments).map_err(|e| {
            RecommendEvalError::Dataset(format!("{}: {e}", settings.experiments.display()))
        })?;
        ExperimentsFile::parse(&text, &settings.experiments.display().to_string())?
    };
    let mut variant_runs = Vec::new();
    for name in &options.variants {
        let v = experiments
            .experiments
            .iter()
            .find_map(|x| x.variant(name))
            .ok_or_else(|| {
                RecommendEvalError::Dataset(format!(
                    "no variant {name:?} in {}",
                    settings.experiments.display()
                ))
            })?;
        let model = match &v.model {
            Some(p) => Some(BlendModel::load(p)?),
            None => None,
        };
        variant_runs.push((
            name.clone(),
            v.ranker.unwrap_or(RankerKind::Blend),
            model,
            v.objectives(&settings.objectives),
        ));
    }
    Ok(variant_runs)
}

/// What every test user is scored with.
struct ScoringRun<'r> {
    model: &'r BlendModel,
    /// Blends trained without groups of features, by name ([`ABLATIONS`]).
    ablations: &'r [(String, BlendModel)],
    variants: &'r [VariantRun],
    /// The objectives without diversity (MMR λ = 1).
    plain: ObjectivesConfig,
    lambdas: &'r [f32],
    settings: &'r RankConfig,
}

/// Scores accumulated over the test users: per ranker (and variant), and per MMR λ.
#[derive(Default)]
struct RunScores {
    rankers: BTreeMap<String, Scores>,
    sweep: BTreeMap<String, Scores>,
    /// Each test user's pool and lists for the simulated traffic.
    traffic: Vec<TrafficUser>,
}

impl ScoringRun<'_> {
    /// Every ranker, the ablation, each variant and each λ of the sweep on one user; returns
    /// the user's row of per-item metrics.
    async fn score_user<S: VectorStore>(
        &self,
        recommender: &Recommender<'_, S>,
        user: &str,
        held: &[String],
        scores: &mut RunScores,
    ) -> Result<BTreeMap<String, f64>, RecommendEvalError> {
        let catalogue = &recommender.catalogue;
        let judgments: Judgments = held.iter().map(|i| (i.clone(), 1)).collect();
        let ctx = recommender.context(user, None, None)?;
        let candidates = recommender.candidates(&ctx).await?;
        let mut row = BTreeMap::new();
        let mut runs: Vec<(String, RankerKind, Option<&BlendModel>, &ObjectivesConfig)> =
            RankerKind::ALL
                .iter()
                .map(|&r| (r.name().to_string(), r, Some(self.model), &self.plain))
                .collect();
        for (name, m) in self.ablations {
            runs.push((name.clone(), RankerKind::Blend, Some(m), &self.plain));
        }
        for (n, r, m, o) in self.variants {
            runs.push((
                format!("variant:{n}"),
                *r,
                m.as_ref().or(Some(self.model)),
                o,
            ));
        }
        let mut lists = HashMap::new();
        for (name, ranker, m, objectives) in runs {
            let scored = recommender.score(&candidates, ranker, m)?;
            let list: Vec<usize> = rerank(scored, catalogue, objectives, ctx.now, K_RECALL)
                .iter()
                .map(|s| s.item)
                .collect();
            if RankerKind::ALL.iter().any(|r| r.name() == name) {
                let ids = list.iter().take(K).map(|&i| catalogue.items[i].id.clone());
                lists.insert(ranker, ids.collect());
            }
            let m = scores
                .rankers
                .entry(name.clone())
                .or_default()
                .add(catalogue, &list, &judgments);
            for (metric, v) in m {
                row.insert(format!("{name}.{metric}"), v);
            }
        }
        self.cold_start(recommender, user, &judgments, scores)
            .await?;
        let traffic = self.traffic_user(recommender, user, held, lists).await?;
        scores.traffic.push(traffic);
        for &lambda in self.lambdas {
            let objectives = ObjectivesConfig {
                mmr_lambda: lambda,
                ..self.settings.objectives.clone()
            };
            let scored = recommender.score(&candidates, RankerKind::Blend, Some(self.model))?;
            let list: Vec<usize> = rerank(scored, catalogue, &objectives, ctx.now, K)
                .iter()
                .map(|s| s.item)
                .collect();
            scores
                .sweep
                .entry(format!("{lambda}"))
                .or_default()
                .add(catalogue, &list, &judgments);
        }
        Ok(row)
    }
}

impl ScoringRun<'_> {
    /// The trained blend's request for `user`'s top K without diversity, with `history` in
    /// place of theirs when given.
    fn blend_request(&self, user: &str, history: Option<UserHistory>) -> RecommendRequest<'_> {
        RecommendRequest {
            user: user.to_string(),
            k: K,
            seed: None,
            ranker: RankerKind::Blend,
            model: Some(self.model),
            objectives: self.plain.clone(),
            now: None,
            history,
        }
    }

    /// A cold start, scored into `cold_start:served` and `cold_start:popularity`.
    async fn cold_start<S: VectorStore>(
        &self,
        recommender: &Recommender<'_, S>,
        user: &str,
        judgments: &Judgments,
        scores: &mut RunScores,
    ) -> Result<(), RecommendEvalError> {
        // A cold start, simulated (ml-latest-small has no user with under 20 ratings): the
        // user's training history cut to their latest COLD_START_RATINGS engagements. The list
        // that reader is served (the blend, its backfill included, through
        // `Recommender::recommend`) beside popularity's for the same reader.
        let catalogue = &recommender.catalogue;
        if let Some(full) = recommender.signals.history(user) {
            let mut cold = full.clone();
            let drop = cold.engaged.len().saturating_sub(COLD_START_RATINGS);
            cold.engaged.drain(..drop);
            cold.seen = cold.engaged.iter().map(|(i, _, _)| *i).collect();
            let cold_ctx = recommender.context_of(cold.clone(), None, None)?;
            let served = recommender
                .recommend(&self.blend_request(user, Some(cold)))
                .await?;
            let list: Vec<usize> = served
                .iter()
                .filter_map(|r| catalogue.position(&r.id))
                .collect();
            scores
                .rankers
                .entry("cold_start:served".into())
                .or_default()
                .add(catalogue, &list, judgments);
            let cold_candidates = recommender.candidates(&cold_ctx).await?;
            let scored = recommender.score(&cold_candidates, RankerKind::Popularity, None)?;
            let list: Vec<usize> = rerank(scored, catalogue, &self.plain, cold_ctx.now, K)
                .iter()
                .map(|s| s.item)
                .collect();
            scores
                .rankers
                .entry("cold_start:popularity".into())
                .or_default()
                .add(catalogue, &list, judgments);
        }
        Ok(())
    }

    /// The user as the simulated traffic sees them: the exploring blend's pool (as an
    /// exploring variant serves and logs it, [`Recommender::exploration_pool`]), the held-out
    /// positives, and each ranker's own list.
    async fn traffic_user<S: VectorStore>(
        &self,
        recommender: &Recommender<'_, S>,
        user: &str,
        held: &[String],
        lists: HashMap<RankerKind, Vec<String>>,
    ) -> Result<TrafficUser, RecommendEvalError> {
        let pool = recommender
            .exploration_pool(&self.blend_request(user, None), traffic::POOL)
            .await?;
        Ok(TrafficUser {
            pool: LoggedPool::of(traffic::EPSILON, &pool),
            relevant: held.iter().cloned().collect(),
            lists,
        })
    }
}

impl RunScores {
    /// The report's metrics, its `rankers`, `references`, `diversity_sweep`, `ablation`,
    /// `variants` and `simulation` ([`traffic::simulate`]) entries, and the sweep's
    /// (λ, nDCG@10, diversity) points for the plot.
    #[allow(clippy::type_complexity)]
    fn summarize(
        &self,
        catalogue: &Catalogue,
        options: &RecommendEvalOptions,
        references: Value,
        model: &BlendModel,
        settings: &RankConfig,
    ) -> (
        BTreeMap<String, f64>,
        Map<String, Value>,
        Vec<(f32, f64, f64)>,
    ) {
        let table = |name: &str| {
            self.rankers
                .get(name)
                .map(|s| s.metrics(catalogue))
                .unwrap_or_default()
        };
        let mut metrics = BTreeMap::new();
        for r in RankerKind::ALL {
            for (k, v) in table(r.name()) {
                metrics.insert(format!("{}.{k}", r.name()), v);
            }
        }
        let rankers_json: Map<String, Value> = RankerKind::ALL
            .iter()
            .map(|r| (r.name().to_string(), json!(table(r.name()))))
            .collect();
        let variants_json: Map<String, Value> = options
            .variants
            .iter()
            .map(|n| (n.clone(), json!(table(&format!("variant:{n}")))))
            .collect();
        let mut sweep_points = Vec::new();
        let sweep_json: Vec<Value> = options
            .lambdas
            .iter()
            .map(|&l| {
                let m = self.sweep[&format!("{l}")].metrics(catalogue);
                sweep_points.push((l, m["ndcg@10"], m["diversity"]));
                json!({"lambda": l, "ndcg@10": m["ndcg@10"], "diversity": m["diversity"], "coverage": m["coverage"]})
            })
            .collect();
        let mut extra = Map::new();
        extra.insert("rankers".into(), Value::Object(rankers_json));
        extra.insert("references".into(), references);
        extra.insert("diversity_sweep".into(), json!(sweep_json));
        // Each ablation's metrics and what removing its features changes in nDCG@10.
        let blend_ndcg = table("blend").get("ndcg@10").copied().unwrap_or(0.0);
        let mut ablation = Map::new();
        ablation.insert("blend".into(), json!(table("blend")));
        for (name, _) in ABLATIONS {
            let m = table(name);
            let change = blend_ndcg - m.get("ndcg@10").copied().unwrap_or(0.0);
            ablation.insert(name.into(), json!(m));
            ablation.insert(format!("{name}.ndcg@10_change"), json!(change));
        }
        extra.insert("ablation".into(), Value::Object(ablation));
        if !variants_json.is_empty() {
            extra.insert("variants".into(), Value::Object(variants_json));
        }
        let (served, popular) = (table("cold_start:served"), table("cold_start:popularity"));
        for (name, m) in [("served", &served), ("popularity", &popular)] {
            if let Some(v) = m.get("ndcg@10") {
                metrics.insert(format!("cold_start.{name}.ndcg@10"), *v);
            }
        }
        extra.insert(
            "cold_start".into(),
            json!({
                "users": self.rankers.get("cold_start:served").map_or(0, Scores::users),
                "training_engagements_kept": COLD_START_RATINGS,
                "served": served,
                "popularity": popular,
                "ndcg@10_ratio": served.get("ndcg@10").copied().unwrap_or(0.0)
                    / popular.get("ndcg@10").copied().unwrap_or(0.0).max(1e-12),
            }),
        );
        let decayed = settings.popularity_half_life_days > 0.0;
        let simulation = traffic::simulate(&self.traffic, model, decayed, K, &mut metrics);
        extra.insert("simulation".into(), simulation);
        (metrics, extra, sweep_points)
    }
}
