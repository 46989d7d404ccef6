//! One user's list: candidates from every source, merged; features; the learned blend (or a
//! single source, for baselines and control variants); then the objectives.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::blend::BlendModel;
use super::candidates::{
    backfill, Backfill, CandidateSource, CoOccurrence, Dense, FactorSource, MoreLikeThis,
    Popularity, UserContext,
};
use super::catalogue::{dot, numeric_field, Catalogue};
use super::rerank::{rerank, Scored};
use super::signals::{InteractionSignals, UserHistory};
use super::RankError;
use crate::config::{ObjectivesConfig, RankConfig};
use crate::store::VectorStore;

const DAY: f64 = 86_400.0;

/// How a list is ordered before the objectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RankerKind {
    /// The learned blend over every source's candidates.
    Blend,
    /// Most engaged-with items.
    Popularity,
    /// Items co-engaged with the user's own.
    Cooccurrence,
    /// Items nearest the user's profile vector.
    Dense,
    /// Items scored highest by the collaborative factors.
    Factors,
}

impl RankerKind {
    /// Every kind, in report order.
    pub const ALL: [RankerKind; 5] = [
        Self::Popularity,
        Self::Cooccurrence,
        Self::Dense,
        Self::Factors,
        Self::Blend,
    ];

    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blend => "blend",
            Self::Popularity => "popularity",
            Self::Cooccurrence => "cooccurrence",
            Self::Dense => "dense",
            Self::Factors => "factors",
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct RecommendRequest<'m> {
    pub user: String,
    pub k: usize,
    /// A "more like this" seed item.
    pub seed: Option<String>,
    pub ranker: RankerKind,
    /// The blend (required for [`RankerKind::Blend`]).
    pub model: Option<&'m BlendModel>,
    pub objectives: ObjectivesConfig,
    /// Decays and embargoes are measured at this time (default: the log's latest event).
    pub now: Option<i64>,
    /// The user's history as it is now, when it has moved on from the signals' (a server
    /// recording events as they come); `None`: the signals' own.
    pub history: Option<UserHistory>,
}

/// A candidate with its features, before scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub item: usize,
    /// The sources that proposed it.
    pub sources: Vec<&'static str>,
    /// Values in [`Recommender::feature_names`] order.
    pub features: Vec<f32>,
}

/// One recommended item, with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommended {
    pub id: String,
    pub title: String,
    pub score: f32,
    pub sources: Vec<&'static str>,
    pub features: BTreeMap<String, f32>,
    /// The blend's per-feature logit shares, then what each objective added.
    pub contributions: BTreeMap<String, f32>,
    /// Why it is in the list, in words a reader could be shown.
    pub reason: String,
}

/// A catalogue, the signals of an interaction log, and the store the dense sources search.
pub struct Recommender<'a, S> {
    pub store: &'a S,
    pub collection: String,
    pub catalogue: Catalogue,
    pub signals: InteractionSignals,
    pub settings: RankConfig,
}

impl<'a, S: VectorStore> Recommender<'a, S> {
    /// Every feature the recommender computes, in order: the fixed ones, then
    /// `rank.numeric_fields`.
    pub fn feature_names(&self) -> Vec<String> {
        [
            "dense",
            "tag_overlap",
            "cooccurrence",
            "popularity",
            "trending",
            "freshness",
            "factor",
            "recent_dense",
            "recent_factor",
            "recent_cooccurrence",
            "tag_recency",
            "source_recency",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(self.settings.numeric_fields.iter().cloned())
        .collect()
    }

    /// The context of `user` (profiles, co-occurrence) at `now`, with an optional seed.
    pub fn context(
        &self,
        user: &str,
        seed: Option<&str>,
        now: Option<i64>,
    ) -> Result<UserContext, RankError> {
        let history = self.signals.history(user).cloned().unwrap_or_default();
        self.context_of(history, seed, now)
    }

    /// The context of a given history.
    pub fn context_of(
        &self,
        history: UserHistory,
        seed: Option<&str>,
        now: Option<i64>,
    ) -> Result<UserContext, RankError> {
        let mut ctx = UserContext::new(
            history,
            &self.catalogue,
            &self.signals,
            &self.settings,
            now.unwrap_or(self.signals.now),
        );
        if let Some(seed) = seed {
            ctx.seed = Some(
                self.catalogue
                    .position(seed)
                    .ok_or_else(|| RankError::UnknownItem(seed.to_string()))?,
            );
        }
        Ok(ctx)
    }

    /// Merged, de-duplicated candidates of every source (the seed's neighbours replace the
    /// profile's when there is a seed), with features.
    pub async fn candidates(&self, ctx: &UserContext) -> Result<Vec<Candidate>, RankError> {
        let n = self.settings.candidates_per_source;
        let factors = FactorSource {
            signals: &self.signals,
        };
        let mut lists = vec![
            (CoOccurrence.name(), CoOccurrence.candidates(ctx, n).await?),
            (factors.name(), factors.candidates(ctx, n).await?),
            (
                "popularity",
                Popularity {
                    signals: &self.signals,
                    decayed: self.settings.popularity_half_life_days > 0.0,
                }
                .candidates(ctx, n)
                .await?,
            ),
        ];
        if ctx.seed.is_some() {
            let source = MoreLikeThis {
                store: self.store,
                collection: &self.collection,
                catalogue: &self.catalogue,
                scan_max_items: self.settings.dense_scan_max_items,
            };
            lists.push((source.name(), source.candidates(ctx, n).await?));
        } else {
            let source = Dense {
                store: self.store,
                collection: &self.collection,
                catalogue: &self.catalogue,
                scan_max_items: self.settings.dense_scan_max_items,
            };
            lists.push((source.name(), source.candidates(ctx, n).await?));
        }
        let mut at: HashMap<usize, usize> = HashMap::new();
        let mut out: Vec<Candidate> = Vec::new();
        for (name, list) in lists {
            for (item, _) in list {
                match at.get(&item) {
                    Some(&k) => out[k].sources.push(name),
                    None => {
                        at.insert(item, out.len());
                        out.push(Candidate {
                            item,
                            sources: vec![name],
                            features: Vec::new(),
                        });
                    }
                }
            }
        }
        for c in &mut out {
            c.features = self.features(ctx, c.item);
        }
        Ok(out)
    }

    /// Item `i`'s features for the user of `ctx`.
    pub fn features(&self, ctx: &UserContext, i: usize) -> Vec<f32> {
        let item = &self.catalogue.items[i];
        let anchor = match ctx.seed {
            Some(seed) => Some(self.catalogue.vector(seed)),
            None => ctx.profile.as_deref(),
        };
        let dense = anchor.map_or(0.0, |p| dot(p, self.catalogue.vector(i)));
        let tag_norm = item.tags.iter().map(|(_, c)| c * c).sum::<f32>().sqrt();
        let tag_overlap = if tag_norm > 0.0 {
            item.tags
                .iter()
                .map(|(t, c)| c * ctx.tag_profile.get(t).copied().unwrap_or(0.0))
                .sum::<f32>()
                / tag_norm
        } else {
            0.0
        };
        let cooc = ctx.cooccurrence.get(i).copied().unwrap_or(0.0) / ctx.max_cooccurrence.max(1e-9);
        let top = |v: &[f32], order: &[usize]| order.first().map_or(1.0, |&j| v[j]).max(1e-9);
        let popularity = (1.0 + self.signals.popularity[i]).ln()
            / (1.0 + top(&self.signals.popularity, &self.signals.by_popularity))
                .ln()
                .max(1e-9);
        let trending =
            self.signals.trending[i] / top(&self.signals.trending, &self.signals.by_trending);
        let freshness = item.published.map_or(0.0, |p| {
            let age = (ctx.now - p).max(0) as f64 / DAY;
            0.5f64.powf(age / self.settings.freshness_half_life_days.max(1e-9)) as f32
        });
        let factor = match (&self.signals.factors, &ctx.factor_vector) {
            (Some(factors), Some(x)) => dot(x, factors.item(i)),
            _ => 0.0,
        };
        let mut f = vec![
            dense,
            tag_overlap,
            cooc,
            popularity,
            trending,
            freshness,
            factor,
        ];
        f.extend(ctx.recent.features(
            &self.catalogue,
            self.signals.factors.as_ref(),
            i,
            ctx.now,
            self.settings.sequence.recency_half_life_days,
        ));
        for name in &self.settings.numeric_fields {
            f.push(numeric_field(&item.payload, name).unwrap_or(0.0) as f32);
        }
        f
    }

    /// The candidates scored by `ranker` (before the objectives), with each score's parts.
    pub fn score(
        &self,
        candidates: &[Candidate],
        ranker: RankerKind,
        model: Option<&BlendModel>,
    ) -> Result<Vec<Scored>, RankError> {
        let scorer = Scorer::new(
            &self.feature_names(),
            ranker,
            model,
            self.settings.popularity_half_life_days > 0.0,
        )?;
        Ok(candidates
            .iter()
            .filter(|c| scorer.takes(&c.sources))
            .map(|c| {
                let mut contributions = BTreeMap::new();
                let score = scorer.score(&c.features, Some(&mut contributions));
                Scored {
                    item: c.item,
                    score,
                    contributions,
                }
            })
            .collect())
    }

    /// The context a request is served in: its history (or the signals'), seed and time.
    fn request_context(&self, request: &RecommendRequest<'_>) -> Result<UserContext, RankError> {
        match &request.history {
            Some(h) => self.context_of(h.clone(), request.seed.as_deref(), request.now),
            None => self.context(&request.user, request.seed.as_deref(), request.now),
        }
    }

    /// Ranked candidates as the items a response shows, with features and why.
    fn shown(
        &self,
        ctx: &UserContext,
        candidates: &[Candidate],
        ranked: Vec<Scored>,
    ) -> Vec<Recommended> {
        let names = self.feature_names();
        let by_item: HashMap<usize, &Candidate> = candidates.iter().map(|c| (c.item, c)).collect();
        let seed_title = ctx.seed.map(|s| self.catalogue.items[s].title.clone());
        ranked
            .into_iter()
            .map(|s| {
                let c = by_item[&s.item];
                let item = &self.catalogue.items[s.item];
                Recommended {
                    id: item.id.clone(),
                    title: item.title.clone(),
                    score: s.score,
                    sources: c.sources.clone(),
                    features: names
                        .iter()
                        .cloned()
                        .zip(c.features.iter().copied())
                        .collect(),
                    contributions: s.contributions,
                    reason: reason(&c.sources, seed_title.as_deref()),
                }
            })
            .collect()
    }

    /// An exploring list's pool ([`super::explore`]): the ranker's best `size` after the
    /// objectives, then each single-source ranker's own top `request.k` not among them, in the
    /// ranker's order — so an off-policy estimate can replay every source's ranker over the
    /// logged pool ([`super::offpolicy`]).
    pub async fn exploration_pool(
        &self,
        request: &RecommendRequest<'_>,
        size: usize,
    ) -> Result<Vec<Recommended>, RankError> {
        let _stage = crate::observe::stage("rank");
        let ctx = self.request_context(request)?;
        let candidates = self.candidates(&ctx).await?;
        let scored = self.score(&candidates, request.ranker, request.model)?;
        let mut pool = rerank(
            scored.clone(),
            &self.catalogue,
            &request.objectives,
            ctx.now,
            size,
        );
        let plain = ObjectivesConfig {
            mmr_lambda: 1.0,
            ..request.objectives.clone()
        };
        let mut own: HashSet<usize> = HashSet::new();
        for kind in RankerKind::ALL
            .into_iter()
            .filter(|&k| k != RankerKind::Blend)
        {
            let list = self.score(&candidates, kind, None)?;
            own.extend(
                rerank(list, &self.catalogue, &plain, ctx.now, request.k)
                    .iter()
                    .map(|s| s.item),
            );
        }
        let taken: HashSet<usize> = pool.iter().map(|s| s.item).collect();
        let rest: Vec<Scored> = scored
            .into_iter()
            .filter(|s| own.contains(&s.item) && !taken.contains(&s.item))
            .collect();
        let n = rest.len();
        pool.extend(rerank(rest, &self.catalogue, &plain, ctx.now, n));
        Ok(self.shown(&ctx, &candidates, pool))
    }

    /// The top `k` for one request, with features and each objective's part.
    pub async fn recommend(
        &self,
        request: &RecommendRequest<'_>,
    ) -> Result<Vec<Recommended>, RankError> {
        let _stage = crate::observe::stage("rank");
        let ctx = self.request_context(request)?;
        let candidates = self.candidates(&ctx).await?;
        let scored = self.score(&candidates, request.ranker, request.model)?;
        let ranked = rerank(
            scored,
            &self.catalogue,
            &request.objectives,
            ctx.now,
            request.k,
        );
        let names = self.feature_names();
        let mut out = self.shown(&ctx, &candidates, ranked);
        // A list holds k items whenever the catalogue has k the user can be shown.
        if out.len() < request.k {
            let taken: Vec<usize> = out
                .iter()
                .filter_map(|r| self.catalogue.position(&r.id))
                .collect();
            let fill = backfill(
                &self.catalogue,
                &self.signals,
                &ctx,
                &taken,
                &request.objectives,
                request.k - out.len(),
            );
            for (i, why) in fill {
                let item = &self.catalogue.items[i];
                out.push(Recommended {
                    id: item.id.clone(),
                    title: item.title.clone(),
                    score: 0.0,
                    sources: vec![why.name()],
                    features: names.iter().cloned().zip(self.features(&ctx, i)).collect(),
                    // No ranker scored it: relevance 0, below every ranked item.
                    contributions: BTreeMap::from([("relevance".to_string(), 0.0)]),
                    reason: backfill_reason(why, item),
                });
            }
        }
        Ok(out)
    }
}

/// How one ranker scores a candidate from its features: the blend's model over its columns, or
/// a single source's own feature. Serving and the off-policy replay of a logged pool
/// ([`super::offpolicy`]) score through it, so a replayed ranker orders items as it would serve.
pub struct Scorer<'m> {
    ranker: RankerKind,
    model: Option<&'m BlendModel>,
    /// The model's features' columns in the feature vector (the blend).
    columns: Option<Vec<usize>>,
    /// The single feature a source ranker orders by.
    single: usize,
}

impl<'m> Scorer<'m> {
    /// A scorer over feature vectors laid out as `names`; `popularity_decayed`: popularity
    /// orders by the trending feature (`rank.popularity_half_life_days` > 0).
    pub fn new(
        names: &[String],
        ranker: RankerKind,
        model: Option<&'m BlendModel>,
        popularity_decayed: bool,
    ) -> Result<Self, RankError> {
        let column = |name: &str| {
            names.iter().position(|n| n == name).ok_or_else(|| {
                RankError::Parse(format!(
                    "the model uses feature {name:?}, which this configuration does not compute (rank.numeric_fields?)"
                ))
            })
        };
        let columns = match (ranker, model) {
            (RankerKind::Blend, None) => return Err(RankError::NoModel),
            (RankerKind::Blend, Some(m)) => Some(
                m.features
                    .iter()
                    .map(|f| column(f))
                    .collect::<Result<_, _>>()?,
            ),
            _ => None,
        };
        let single = column(match ranker {
            RankerKind::Popularity if popularity_decayed => "trending",
            RankerKind::Popularity => "popularity",
            RankerKind::Cooccurrence => "cooccurrence",
            RankerKind::Factors => "factor",
            _ => "dense",
        })?;
        Ok(Self {
            ranker,
            model,
            columns,
            single,
        })
    }

    /// Whether the ranker scores a candidate proposed by `sources`: the blend scores every
    /// candidate, a single source only its own.
    pub fn takes(&self, sources: &[impl AsRef<str>]) -> bool {
        let has = |name: &str| sources.iter().any(|s| s.as_ref() == name);
        self.ranker == RankerKind::Blend
            || has(self.ranker.name())
            // A seed's neighbours are the dense list of a "more like this" request.
            || (self.ranker == RankerKind::Dense && has("more_like_this"))
    }

    /// The candidate's score; with `contributions`, the blend's per-feature parts and the
    /// `relevance` are recorded there.
    pub fn score(
        &self,
        features: &[f32],
        contributions: Option<&mut BTreeMap<String, f32>>,
    ) -> f32 {
        let (score, parts) = match (&self.columns, self.model) {
            (Some(cols), Some(m)) => {
                let x: Vec<f32> = cols.iter().map(|&j| features[j]).collect();
                let parts = contributions.is_some().then(|| {
                    m.features
                        .iter()
                        .cloned()
                        .zip(m.contributions(&x))
                        .collect::<Vec<_>>()
                });
                (m.score(&x), parts)
            }
            _ => (features[self.single], None),
        };
        if let Some(out) = contributions {
            for (name, part) in parts.into_iter().flatten() {
                out.insert(format!("blend:{name}"), part);
            }
            out.insert("relevance".into(), score);
        }
        score
    }
}

/// Why a ranked item is in a list: its strongest source, in words.
fn reason(sources: &[&str], seed_title: Option<&str>) -> String {
    let has = |s: &str| sources.contains(&s);
    if has("more_like_this") {
        return format!(
            "more like \"{}\"",
            seed_title.unwrap_or("the item you opened")
        );
    }
    if has("cooccurrence") {
        "read by readers who read what you read".into()
    } else if has("factors") {
        "liked by readers whose tastes match yours".into()
    } else if has("dense") {
        "close to what you have read".into()
    } else {
        "popular with readers".into()
    }
}

/// Why a backfilled item is in a list.
fn backfill_reason(why: Backfill, item: &super::catalogue::CatalogueItem) -> String {
    match why {
        Backfill::Fresh => match item
            .published
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        {
            Some(at) => format!("new: published {}", at.format("%Y-%m-%d")),
            None => "new".into(),
        },
        Backfill::Popular => "popular with readers".into(),
        Backfill::Diverse => match item.tags.first() {
            Some((tag, _)) => format!("something different: {tag}"),
            None => "something different".into(),
        },
        Backfill::Catalogue => "from the archive".into(),
    }
}
