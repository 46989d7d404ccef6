//! Serving recommendations: the recommender, the trained blend, live experiments and the
//! exposure log together, so the CLI and the HTTP API serve one way.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::blend::BlendModel;
use super::catalogue::Catalogue;
use super::experiments::{Assignment, Exposure, ExposureLog, LiveExperiments};
use super::interactions::{read_file, EventRules, Interaction, InteractionStore, Reject};
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
        let signals = InteractionSignals::build(&events, &catalogue, &config.rank);
        let model = if paths.model.exists() {
            Some(Arc::new(BlendModel::load(&paths.model)?))
        } else {
            None
        };
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
        let signals = InteractionSignals::build(&events, &catalogue, &current.settings);
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

    /// Top `k` for `user`: in `experiment` (when given and on), the variant's ranker, model and
    /// objectives; otherwise `ranker` (default: the blend when a model is trained, else
    /// popularity). The list is logged as an exposure.
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
        let settings = &recommender.settings;
        let experiments = self.experiments.current()?;
        let mut objectives = settings.objectives.clone();
        let mut model = self.model.clone();
        // Without a trained blend: a seed's neighbours ("more like this"), else popularity; a
        // short list is filled either way (see `Recommender::recommend`).
        let mut kind = ranker.unwrap_or(match (&model, seed) {
            (Some(_), _) => RankerKind::Blend,
            (None, Some(_)) => RankerKind::Dense,
            (None, None) => RankerKind::Popularity,
        });
        let mut assignment = None;
        if let Some(name) = experiment {
            let x = experiments
                .get(name)
                .ok_or_else(|| RankError::Experiments(format!("no experiment {name:?}")))?;
            if let Some(a) = x.assign(user) {
                let v = x.variant(&a.served).expect("served variants exist");
                objectives = v.objectives(&objectives);
                kind = v.ranker.unwrap_or(RankerKind::Blend);
                if let Some(path) = &v.model {
                    model = Some(self.variant_model(path)?);
                }
                assignment = Some(a);
            }
        }
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
        let request = RecommendRequest {
            user: user.to_string(),
            k,
            seed: seed.map(str::to_string),
            ranker: kind,
            model: model.as_deref(),
            objectives,
            now,
            history,
        };
        let items = recommender.recommend(&request).await?;
        let served = Served {
            user: user.to_string(),
            exposure_id: uuid::Uuid::new_v4().to_string(),
            ranker: kind,
            model_version: (kind == RankerKind::Blend)
                .then(|| model.as_ref().map(|m| m.version.clone()))
                .flatten(),
            assignment,
            items,
        };
        if let Some(log) = &self.exposures {
            log.write(&Exposure {
                id: served.exposure_id.clone(),
                timestamp: chrono::Utc::now().timestamp(),
                user: user.to_string(),
                experiment: served.assignment.as_ref().map(|a| a.experiment.clone()),
                variant: served.assignment.as_ref().map(|a| a.served.clone()),
                assigned: served.assignment.as_ref().map(|a| a.assigned.clone()),
                ranker: kind,
                model_version: served.model_version.clone(),
                items: served.items.iter().map(|i| i.id.clone()).collect(),
                scores: served.items.iter().map(|i| i.score).collect(),
                features: served.items.iter().map(|i| i.features.clone()).collect(),
            })?;
        }
        Ok(served)
    }
}
