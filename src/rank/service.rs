//! Serving recommendations: the recommender, the trained blend, live experiments and the
//! exposure log together, so the CLI and the HTTP API serve one way.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::blend::BlendModel;
use super::catalogue::Catalogue;
use super::experiments::{
    Assignment, ExperimentKind, Exposure, ExposureLog, LiveExperiments, LoggedPool,
};
use super::explore::{sample_list, ExploreConfig};
use super::factors::SavedFactors;
use super::interactions::{read_file, EventRules, Interaction, InteractionStore, Reject};
use super::interleave::{team_draft, Team, BOTH_TEAMS};
use super::recommender::{RankerKind, RecommendRequest, Recommended, Recommender};
use super::signals::{InteractionSignals, UserHistory};
use super::RankError;
use crate::store::VectorStore;
use crate::Config;

/// Where rank's files live for a configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RankPaths {
    pub interactions: PathBuf,
    pub model: PathBuf,
    pub exposures: PathBuf,
    pub experiments: PathBuf,
}

impl RankPaths {
    /// `data_dir/interactions.redb`; `rank.model` and `rank.exposures` under `data_dir` when
    /// relative; `rank.experiments` as given.
    pub fn of(config: &Config) -> Self {
        let under = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                config.data_dir.join(p)
            }
        };
        Self {
            interactions: config.data_dir.join("interactions.redb"),
            model: under(&config.rank.model),
            exposures: under(&config.rank.exposures),
            experiments: config.rank.experiments.clone(),
        }
    }
}

/// The collection recommended from: `rank.collection`, else `store.collection`.
pub fn collection_name(config: &Config) -> String {
    if config.rank.collection.is_empty() {
        config.store.collection.clone()
    } else {
        config.rank.collection.clone()
    }
}

/// One served list.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    pub user: String,
    pub exposure_id: String,
    pub ranker: RankerKind,
    pub model_version: Option<String>,
    pub assignment: Option<Assignment>,
    pub items: Vec<Recommended>,
    /// Each item's probability of being at its position: 1 for a deterministic list; an
    /// exploring variant's marginals; empty for an interleaved list.
    pub propensities: Vec<f64>,
    /// An interleaved list: the variant each item was drafted for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teams: Option<Vec<String>>,
    /// The exposure logged for this list (when exposures are logged): what a replica publishes
    /// to the shared exposures stream.
    #[serde(skip)]
    pub exposure: Option<Exposure>,
}

/// The ids of the items stored in the collection recommendations come from (`rank.collection`,
/// else `store.collection`), or `None` while that collection does not exist: what received events
/// are checked against ([`super::interactions::EventRules`]). Reads first chunks' payloads only,
/// no vectors.
pub async fn stored_item_ids<S: VectorStore>(
    store: &S,
    config: &Config,
) -> Result<Option<HashSet<String>>, RankError> {
    let collection = store.resolve(&collection_name(config)).await?;
    if store.collection_spec(&collection).await?.is_none() {
        return Ok(None);
    }
    let first_chunks = crate::store::Filter::first_chunks();
    let (mut ids, mut offset) = (HashSet::new(), None);
    loop {
        let (page, next) = store
            .scroll(&collection, &first_chunks, offset, 1024)
            .await?;
        let last = page.is_empty();
        ids.extend(page.into_iter().map(|c| c.content_id));
        match next {
            Some(n) if !last => offset = Some(n),
            _ => return Ok(Some(ids)),
        }
    }
}

/// Read an interactions file under the one event rule (see
/// [`super::interactions::RawEvent::validate`]): the receiving clock, and the stored items when
/// the collection exists. The `bool` says whether items were checked against it.
pub async fn read_events<S: VectorStore>(
    store: &S,
    config: &Config,
    path: &Path,
) -> Result<(Vec<Interaction>, Vec<Reject>, bool), RankError> {
    let stored = stored_item_ids(store, config).await?;
    let is_stored = |id: &str| stored.as_ref().is_some_and(|ids| ids.contains(id));
    let vocabulary = config.rank.event_vocabulary();
    let rules = EventRules {
        now: chrono::Utc::now().timestamp(),
        is_stored: stored
            .is_some()
            .then_some(&is_stored as &(dyn Fn(&str) -> bool + Sync)),
        vocabulary: Some(&vocabulary),
    };
    let (events, rejects) = read_file(path, &rules)?;
    Ok((events, rejects, stored.is_some()))
}

/// What `rank train` produced and saved.
#[derive(Debug, Clone)]
pub struct TrainedBlend {
    pub model: BlendModel,
    /// Where the blend was saved (its factors beside it, as it names them).
    pub path: PathBuf,
    pub collection: String,
    pub items: usize,
    pub interactions: usize,
    /// Seconds spent training the collaborative factors on the whole log (none: factors off).
    pub factor_seconds: Option<f64>,
}

/// Train the blend on the interaction log (its inner temporal split), then the collaborative
/// factors on the whole log, and save both — the blend at `output` (default `rank.model`),
/// the factors beside it under the version the blend names — so serving reads them instead of
/// training at every start. `rank train` and anything else that retrains go through here.
pub async fn train<S: VectorStore>(
    store: &S,
    config: &Config,
    drop_features: &[&str],
    output: Option<PathBuf>,
    on_progress: impl FnMut(usize, usize),
) -> Result<TrainedBlend, RankError> {
    let paths = RankPaths::of(config);
    let collection = store.resolve(&collection_name(config)).await?;
    let catalogue = Catalogue::load(store, &collection).await?;
    let events = InteractionStore::open(&paths.interactions)?.all()?;
    if events.is_empty() {
        return Err(RankError::Training(
            "the interaction log is empty: run `signaldesk interactions ingest FILE` first".into(),
        ));
    }
    let mut model = super::train_blend(
        store,
        &collection,
        &catalogue,
        &events,
        &config.rank,
        drop_features,
        on_progress,
    )
    .await?;
    let path = output.unwrap_or(paths.model);
    let signals = InteractionSignals::build(&events, &catalogue, &config.rank);
    let mut factor_seconds = None;
    if let Some(factors) = &signals.factors {
        let seconds = factors.training_seconds;
        let engaged = signals
            .users
            .values()
            .filter(|h| !h.engaged.is_empty())
            .count();
        let training = serde_json::json!({
            "users": engaged,
            "interactions": events.len(),
            "iterations": config.rank.factors.iterations,
            "seed": config.rank.factors.seed,
            "seconds": (seconds * 100.0).round() / 100.0,
        });
        let saved = SavedFactors::of(factors, &catalogue, &config.rank.factors, training);
        let stem = path
            .file_stem()
            .map_or("blend".into(), |s| s.to_string_lossy().into_owned());
        let file = format!("{stem}.factors.safetensors");
        saved.save(&path.with_file_name(&file))?;
        model = model.with_factors(file, &saved);
        factor_seconds = Some(seconds);
    }
    model.save(&path)?;
    Ok(TrainedBlend {
        model,
        path,
        collection,
        items: catalogue.len(),
        interactions: events.len(),
        factor_seconds,
    })
}

/// A warm recommender with its model, experiments and exposure log.
pub struct RecommendService<'a, S> {
    /// Swapped whole by [`Self::refresh`] when the catalogue changes; a request keeps the one
    /// it started with.
    recommender: std::sync::RwLock<Arc<Recommender<'a, S>>>,
    /// The collection name as configured (an alias may move to a new physical collection).
    collection_name: String,
    pub model: Option<Arc<BlendModel>>,
    experiments: LiveExperiments,
    exposures: Option<ExposureLog>,
    variant_models: Mutex<HashMap<PathBuf, Arc<BlendModel>>>,
    /// The factors `rank train` saved with the model: mapped onto the catalogue at every
    /// refresh instead of retraining (none: trained from the log at open and each refresh).
    factors: Option<Arc<SavedFactors>>,
    log: InteractionStore,
    /// Histories changed by events recorded since the signals were built: the next list for
    /// that user reflects them at once (popularity and co-occurrence wait for a rebuild).
    live: Mutex<HashMap<String, UserHistory>>,
}

impl<'a, S: VectorStore> RecommendService<'a, S> {
    /// Load the catalogue from the store and the log, the model if trained, and open the
    /// exposure log (none: exposures are not logged).
    pub async fn open(
        store: &'a S,
        config: &Config,
        log_exposures: bool,
    ) -> Result<Self, RankError> {
        let paths = RankPaths::of(config);
        let collection = store.resolve(&collection_name(config)).await?;
        let catalogue = Catalogue::load(store, &collection).await?;
        let log = InteractionStore::open(&paths.interactions)?;
        let events = log.all()?;
        let model = if paths.model.exists() {
            Some(Arc::new(BlendModel::load(&paths.model)?))
        } else {
            None
        };
        let factors = match &model {
            Some(m) => m.load_factors(&paths.model)?.map(Arc::new),
            None => None,
        };
        let signals =
            InteractionSignals::build_with(&events, &catalogue, &config.rank, factors.as_deref());
        Ok(Self {
            recommender: std::sync::RwLock::new(Arc::new(Recommender {
                store,
                collection,
                catalogue,
                signals,
                settings: config.rank.clone(),
            })),
            collection_name: collection_name(config),
            model,
            experiments: LiveExperiments::new(&paths.experiments),
            exposures: if log_exposures {
                Some(ExposureLog::open(&paths.exposures)?)
            } else {
                None
            },
            variant_models: Mutex::new(HashMap::new()),
            factors,
            log,
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Record a user's event: appended to the interaction log at once, and the user's history
    /// updated so their next list reflects it (the item is seen; a positive joins the profile).
    pub fn record(&self, event: &Interaction) -> Result<(), RankError> {
        self.log.append(std::slice::from_ref(event))?;
        let mut live = self.live.lock().expect("live histories lock");
        let r = self.recommender();
        let history = live
            .entry(event.user.clone())
            .or_insert_with(|| r.signals.history(&event.user).cloned().unwrap_or_default());
        history.last_seen = history.last_seen.max(event.timestamp);
        if let Some(i) = r.catalogue.position(&event.item) {
            history.seen.insert(i);
            let w = event.weight(&r.settings) as f32;
            if w > 0.0 {
                history.engaged.push((i, w, event.timestamp));
            }
        }
        Ok(())
    }

    /// The recommender serving now.
    pub fn recommender(&self) -> Arc<Recommender<'a, S>> {
        self.recommender.read().expect("recommender lock").clone()
    }

    /// Reload the catalogue from the store and rebuild the signals from the whole log, then
    /// serve from them: after content was added or deleted. Events recorded meanwhile are in
    /// the log, so the live histories are rebuilt with everything else.
    pub async fn refresh(&self) -> Result<(), RankError> {
        let current = self.recommender();
        let store = current.store;
        let collection = store.resolve(&self.collection_name).await?;
        let catalogue = Catalogue::load(store, &collection).await?;
        let mut live = self.live.lock().expect("live histories lock");
        let events = self.log.all()?;
        let signals = InteractionSignals::build_with(
            &events,
            &catalogue,
            &current.settings,
            self.factors.as_deref(),
        );
        *self.recommender.write().expect("recommender lock") = Arc::new(Recommender {
            store,
            collection,
            catalogue,
            signals,
            settings: current.settings.clone(),
        });
        live.clear();
        Ok(())
    }

    fn variant_model(&self, path: &Path) -> Result<Arc<BlendModel>, RankError> {
        let mut cache = self.variant_models.lock().expect("model cache lock");
        if let Some(m) = cache.get(path) {
            return Ok(m.clone());
        }
        let m = Arc::new(BlendModel::load(path)?);
        cache.insert(path.to_path_buf(), m.clone());
        Ok(m)
    }

    /// What `user` is served in `experiment` (when given and on): each arm's ranker, model,
    /// objectives and exploration (two arms for an interleaving experiment); otherwise
    /// `ranker` (default: the blend when a model is trained, else popularity).
    fn plan(
        &self,
        user: &str,
        seed: Option<&str>,
        experiment: Option<&str>,
        ranker: Option<RankerKind>,
        settings: &crate::config::RankConfig,
    ) -> Result<(Vec<Arm>, Option<Assignment>), RankError> {
        // Without a trained blend: a seed's neighbours ("more like this"), else popularity; a
        // short list is filled either way (see `Recommender::recommend`).
        let default = Arm {
            name: None,
            kind: ranker.unwrap_or(match (&self.model, seed) {
                (Some(_), _) => RankerKind::Blend,
                (None, Some(_)) => RankerKind::Dense,
                (None, None) => RankerKind::Popularity,
            }),
            model: self.model.clone(),
            objectives: settings.objectives.clone(),
            explore: None,
        };
        let Some(name) = experiment else {
            return Ok((vec![default], None));
        };
        let experiments = self.experiments.current()?;
        let x = experiments
            .get(name)
            .ok_or_else(|| RankError::Experiments(format!("no experiment {name:?}")))?;
        let Some(a) = x.assign(user) else {
            return Ok((vec![default], None));
        };
        let arm = |v: &super::experiments::Variant| -> Result<Arm, RankError> {
            Ok(Arm {
                name: Some(v.name.clone()),
                kind: v.ranker.unwrap_or(RankerKind::Blend),
                model: match &v.model {
                    Some(path) => Some(self.variant_model(path)?),
                    None => self.model.clone(),
                },
                objectives: v.objectives(&settings.objectives),
                explore: v.explore.filter(|e| e.epsilon > 0.0),
            })
        };
        let arms = if x.kind == ExperimentKind::Interleave {
            // Control is team A.
            let mut vs: Vec<_> = x.variants.iter().collect();
            vs.sort_by_key(|v| v.name != x.control);
            vs.into_iter().map(arm).collect::<Result<_, _>>()?
        } else {
            vec![arm(x.variant(&a.served).expect("served variants exist"))?]
        };
        Ok((arms, Some(a)))
    }

    /// Top `k` for `user`: in `experiment` (when given and on), the variant's ranker, model,
    /// objectives and exploration, or the two variants interleaved; otherwise `ranker`
    /// (default: the blend when a model is trained, else popularity). The list is logged as an
    /// exposure, with each shown item's probability at its position.
    pub async fn recommend(
        &self,
        user: &str,
        k: usize,
        seed: Option<&str>,
        experiment: Option<&str>,
        ranker: Option<RankerKind>,
        now: Option<i64>,
    ) -> Result<Served, RankError> {
        let recommender = self.recommender();
        let (arms, assignment) =
            self.plan(user, seed, experiment, ranker, &recommender.settings)?;
        let history = self
            .live
            .lock()
            .expect("live histories lock")
            .get(user)
            .cloned();
        // Served "now" is the log's latest time, or the user's latest event if later (events
        // recorded since the signals were built would otherwise lie in the future and be ignored).
        let now = now.or_else(|| {
            history
                .as_ref()
                .map(|h| h.last_seen.max(recommender.signals.now))
        });
        let request = |arm, k| Arm::request(arm, user, k, seed, now, history.clone());
        let arm = &arms[0];
        let mut served = Served {
            user: user.to_string(),
            exposure_id: uuid::Uuid::new_v4().to_string(),
            ranker: arm.kind,
            model_version: (arm.kind == RankerKind::Blend)
                .then(|| arm.model.as_ref().map(|m| m.version.clone()))
                .flatten(),
            assignment,
            items: Vec::new(),
            propensities: Vec::new(),
            teams: None,
            exposure: None,
        };
        let mut pool = None;
        if let [a, b] = arms.as_slice() {
            let lists = [
                recommender.recommend(&request(a, k)).await?,
                recommender.recommend(&request(b, k)).await?,
            ];
            let ids = lists
                .each_ref()
                .map(|l| l.iter().map(|r| r.id.as_str()).collect::<Vec<_>>());
            let (merged, teams) = team_draft(&ids[0], &ids[1], k, &mut rand::rng());
            for (id, team) in merged.into_iter().zip(&teams) {
                let from = &lists[usize::from(*team == Team::B)];
                served
                    .items
                    .push(from.iter().find(|r| r.id == id).expect("drafted").clone());
            }
            let names = [a, b].map(|x| x.name.clone().unwrap_or_default());
            served.teams = Some(
                teams
                    .iter()
                    .map(|t| match t {
                        Team::A => names[0].clone(),
                        Team::B => names[1].clone(),
                        Team::Both => BOTH_TEAMS.to_string(),
                    })
                    .collect(),
            );
        } else if let Some(explore) = arm.explore {
            let candidates = recommender
                .recommend(&request(arm, explore.pool.max(k)))
                .await?;
            let list = sample_list(explore.epsilon, candidates.len(), k, &mut rand::rng());
            served.items = list.shown.iter().map(|&i| candidates[i].clone()).collect();
            served.propensities = list.propensities;
            pool = Some(LoggedPool::of(explore.epsilon, &candidates));
        } else {
            served.items = recommender.recommend(&request(arm, k)).await?;
            served.propensities = vec![1.0; served.items.len()];
        }
        if let Some(log) = &self.exposures {
            let exposure = Exposure {
                id: served.exposure_id.clone(),
                timestamp: chrono::Utc::now().timestamp(),
                user: user.to_string(),
                experiment: served.assignment.as_ref().map(|a| a.experiment.clone()),
                variant: served.assignment.as_ref().map(|a| a.served.clone()),
                assigned: served.assignment.as_ref().map(|a| a.assigned.clone()),
                ranker: served.ranker,
                model_version: served.model_version.clone(),
                items: served.items.iter().map(|i| i.id.clone()).collect(),
                scores: served.items.iter().map(|i| i.score).collect(),
                features: served.items.iter().map(|i| i.features.clone()).collect(),
                propensities: served.propensities.clone(),
                pool,
                teams: served.teams.clone(),
            };
            log.write(&exposure)?;
            served.exposure = Some(exposure);
        }
        Ok(served)
    }
}

/// One arm of a request: what a variant (or the default) serves with.
struct Arm {
    name: Option<String>,
    kind: RankerKind,
    model: Option<Arc<BlendModel>>,
    objectives: crate::config::ObjectivesConfig,
    explore: Option<ExploreConfig>,
}

impl Arm {
    /// The request for `user`'s list of `k` from this arm.
    fn request<'m>(
        &'m self,
        user: &str,
        k: usize,
        seed: Option<&str>,
        now: Option<i64>,
        history: Option<UserHistory>,
    ) -> RecommendRequest<'m> {
        RecommendRequest {
            user: user.to_string(),
            k,
            seed: seed.map(str::to_string),
            ranker: self.kind,
            model: self.model.as_deref(),
            objectives: self.objectives.clone(),
            now,
            history,
        }
    }
}

/// One experiment's readout, by its kind.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ExperimentReadout {
    Split(super::experiments::Readout),
    Interleave(super::interleave::InterleavingReadout),
}

/// Read out every experiment of `rank.experiments` (or only `only`) from the exposure log
/// (`exposures`, default `rank.exposures`) joined with the interaction log.
pub fn experiment_readouts(
    config: &Config,
    only: Option<&str>,
    exposures: Option<&Path>,
) -> Result<Vec<ExperimentReadout>, RankError> {
    let paths = RankPaths::of(config);
    let text = std::fs::read_to_string(&paths.experiments).map_err(|source| RankError::Read {
        path: paths.experiments.clone(),
        source,
    })?;
    let file = super::experiments::ExperimentsFile::parse(
        &text,
        &paths.experiments.display().to_string(),
    )?;
    let exposures =
        super::experiments::read_exposures(exposures.unwrap_or(paths.exposures.as_path()))?;
    let interactions = InteractionStore::open(&paths.interactions)?.all()?;
    let readouts: Vec<ExperimentReadout> = file
        .experiments
        .iter()
        .filter(|x| only.is_none_or(|n| n == x.name))
        .map(|x| match x.kind {
            ExperimentKind::Split => ExperimentReadout::Split(super::experiments::readout(
                x,
                &exposures,
                &interactions,
                &config.rank,
            )),
            ExperimentKind::Interleave => ExperimentReadout::Interleave(
                super::interleave::readout(x, &exposures, &interactions, &config.rank),
            ),
        })
        .collect();
    if readouts.is_empty() {
        return Err(RankError::Experiments(format!(
            "no experiment{} in {}",
            only.map(|n| format!(" {n:?}")).unwrap_or_default(),
            paths.experiments.display()
        )));
    }
    Ok(readouts)
}

/// Estimate `ranker` off-policy (with the blend model at `model`, default `rank.model`) from
/// the exploring lists of the exposure log (`exposures`, default `rank.exposures`) and the
/// clicks in the interaction log ([`super::offpolicy::estimate`]).
pub fn estimate_policy(
    config: &Config,
    ranker: RankerKind,
    model: Option<&Path>,
    exposures: Option<&Path>,
) -> Result<super::offpolicy::Estimate, RankError> {
    let paths = RankPaths::of(config);
    let model = match ranker {
        RankerKind::Blend => Some(BlendModel::load(model.unwrap_or(&paths.model))?),
        _ => None,
    };
    let exposures =
        super::experiments::read_exposures(exposures.unwrap_or(paths.exposures.as_path()))?;
    let interactions = InteractionStore::open(&paths.interactions)?.all()?;
    super::offpolicy::estimate(
        ranker,
        model.as_ref(),
        &exposures,
        &interactions,
        &config.rank,
    )
}
