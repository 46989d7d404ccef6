//! Candidate sources: each proposes items for one user from one kind of evidence. The
//! recommender merges their lists, drops duplicates and what the user has seen, and leaves the
//! ordering to the learned blend.

use std::collections::HashMap;

use super::catalogue::Catalogue;
use super::signals::{decayed, InteractionSignals, UserHistory};
use super::RankError;
use crate::config::RankConfig;
use crate::store::{ChunkQuery, Filter, QueryVectors, VectorStore};

/// What the sources know about the user a list is for.
#[derive(Debug, Clone, Default)]
pub struct UserContext {
    /// Positive engagements and seen items (empty for a cold start).
    pub history: UserHistory,
    /// Recency- and weight-decayed mean of engaged items' vectors, unit length.
    pub profile: Option<Vec<f32>>,
    /// Tag → decayed weight over engaged items' tags, unit length.
    pub tag_profile: HashMap<String, f32>,
    /// Co-occurrence score of every item (dense, by catalogue position: a heavy user's history
    /// touches most of the catalogue, and a flat array beats a hash map several times there).
    pub cooccurrence: Vec<f32>,
    /// The positions with a non-zero co-occurrence score.
    pub cooccurring: Vec<usize>,
    /// The largest of those scores (features divide by it, so they compare across users).
    pub max_cooccurrence: f32,
    /// The user's collaborative-factor vector, solved from the history against the trained
    /// item factors (none without factors or engagements).
    pub factor_vector: Option<Vec<f32>>,
    /// The seed of a "more like this" list.
    pub seed: Option<usize>,
    /// The time decays are measured from.
    pub now: i64,
}

impl UserContext {
    /// Build the context of `history` (its profiles and co-occurrence scores).
    pub fn new(
        history: UserHistory,
        catalogue: &Catalogue,
        signals: &InteractionSignals,
        settings: &RankConfig,
        now: i64,
    ) -> Self {
        let reference = history.last_seen;
        let mut profile = vec![0f32; catalogue.dim()];
        let mut tags: HashMap<String, f32> = HashMap::new();
        let mut cooccurrence = vec![0f32; catalogue.len()];
        let mut cooccurring = Vec::new();
        let recent = match settings.cooccurrence_history {
            0 => history.engaged.len(),
            n => n.min(history.engaged.len()),
        };
        for (k, &(i, w, t)) in history.engaged.iter().enumerate() {
            let w = decayed(w, t, reference, settings.profile_half_life_days);
            for (p, v) in profile.iter_mut().zip(catalogue.vector(i)) {
                *p += w * v;
            }
            for (tag, confidence) in &catalogue.items[i].tags {
                *tags.entry(tag.clone()).or_default() += w * confidence;
            }
            if k >= history.engaged.len() - recent {
                for &(j, s) in &signals.cooccurring[i] {
                    if cooccurrence[j] == 0.0 {
                        cooccurring.push(j);
                    }
                    cooccurrence[j] += w * s;
                }
            }
        }
        let norm = profile.iter().map(|x| x * x).sum::<f32>().sqrt();
        let profile = (norm > 0.0).then(|| profile.iter().map(|x| x / norm).collect());
        let tag_norm = tags.values().map(|x| x * x).sum::<f32>().sqrt();
        if tag_norm > 0.0 {
            tags.values_mut().for_each(|x| *x /= tag_norm);
        }
        let max_cooccurrence = cooccurrence.iter().copied().fold(0f32, f32::max);
        let factor_vector = signals
            .factors
            .as_ref()
            .and_then(|f| f.user_vector(history.engaged.iter().map(|&(i, _, _)| i)));
        Self {
            history,
            profile,
            tag_profile: tags,
            cooccurrence,
            cooccurring,
            max_cooccurrence,
            factor_vector,
            seed: None,
            now,
        }
    }
}

/// One way of proposing items.
#[allow(async_fn_in_trait)]
pub trait CandidateSource {
    /// The source's name in responses and reports.
    fn name(&self) -> &'static str;
    /// Up to `n` unseen items for the user, best first, with the source's own score.
    async fn candidates(
        &self,
        user: &UserContext,
        n: usize,
    ) -> Result<Vec<(usize, f32)>, RankError>;
}

/// The most engaged-with items (trending when `rank.popularity_half_life_days` is set).
pub struct Popularity<'a> {
    pub signals: &'a InteractionSignals,
    pub decayed: bool,
}

impl CandidateSource for Popularity<'_> {
    fn name(&self) -> &'static str {
        "popularity"
    }
    async fn candidates(
        &self,
        user: &UserContext,
        n: usize,
    ) -> Result<Vec<(usize, f32)>, RankError> {
        let (order, scores) = if self.decayed {
            (&self.signals.by_trending, &self.signals.trending)
        } else {
            (&self.signals.by_popularity, &self.signals.popularity)
        };
        Ok(order
            .iter()
            .filter(|i| !user.history.seen.contains(i) && user.seed != Some(**i))
            .take(n)
            .map(|&i| (i, scores[i]))
            .collect())
    }
}

/// Items engaged with by the same users as the user's own engagements.
pub struct CoOccurrence;

impl CandidateSource for CoOccurrence {
    fn name(&self) -> &'static str {
        "cooccurrence"
    }
    async fn candidates(
        &self,
        user: &UserContext,
        n: usize,
    ) -> Result<Vec<(usize, f32)>, RankError> {
        Ok(top_n(
            user.cooccurring
                .iter()
                .filter(|i| !user.history.seen.contains(i) && user.seed != Some(**i))
                .map(|&i| (i, user.cooccurrence[i])),
            n,
        ))
    }
}

/// The items whose collaborative factors score highest against the user's factor vector
/// (none without factors, or for a user without engagements).
pub struct FactorSource<'a> {
    pub signals: &'a InteractionSignals,
}

impl CandidateSource for FactorSource<'_> {
    fn name(&self) -> &'static str {
        "factors"
    }
    async fn candidates(
        &self,
        user: &UserContext,
        n: usize,
    ) -> Result<Vec<(usize, f32)>, RankError> {
        let (Some(factors), Some(x)) = (&self.signals.factors, &user.factor_vector) else {
            return Ok(Vec::new());
        };
        let items = factors.items.len() / factors.dim.max(1);
        Ok(top_n(
            (0..items)
                .filter(|i| !user.history.seen.contains(i) && user.seed != Some(*i))
                .map(|i| (i, super::catalogue::dot(x, factors.item(i)))),
            n,
        ))
    }
}

/// The items nearest the user's profile vector, searched in the vector store.
pub struct Dense<'a, S> {
    pub store: &'a S,
    pub collection: &'a str,
    pub catalogue: &'a Catalogue,
}

impl<S: VectorStore> CandidateSource for Dense<'_, S> {
    fn name(&self) -> &'static str {
        "dense"
    }
    async fn candidates(
        &self,
        user: &UserContext,
        n: usize,
    ) -> Result<Vec<(usize, f32)>, RankError> {
        let Some(profile) = &user.profile else {
            return Ok(Vec::new());
        };
        nearest(
            self.store,
            self.collection,
            self.catalogue,
            profile,
            user,
            n,
        )
        .await
    }
}

/// "More like this": the items nearest a seed item's vector.
pub struct MoreLikeThis<'a, S> {
    pub store: &'a S,
    pub collection: &'a str,
    pub catalogue: &'a Catalogue,
}

impl<S: VectorStore> CandidateSource for MoreLikeThis<'_, S> {
    fn name(&self) -> &'static str {
        "more_like_this"
    }
    async fn candidates(
        &self,
        user: &UserContext,
        n: usize,
    ) -> Result<Vec<(usize, f32)>, RankError> {
        let Some(seed) = user.seed else {
            return Ok(Vec::new());
        };
        let vector = self.catalogue.vector(seed).to_vec();
        nearest(
            self.store,
            self.collection,
            self.catalogue,
            &vector,
            user,
            n,
        )
        .await
    }
}

/// The store's nearest items to `vector`, unseen, best chunk per item. The store has no
/// "not these ids" condition, so the query asks for enough extra to cover the seen items.
async fn nearest<S: VectorStore>(
    store: &S,
    collection: &str,
    catalogue: &Catalogue,
    vector: &[f32],
    user: &UserContext,
    n: usize,
) -> Result<Vec<(usize, f32)>, RankError> {
    let query = ChunkQuery {
        vectors: QueryVectors::Dense(vector.to_vec()),
        filter: Filter::default(),
        limit: (n + user.history.seen.len() + 1).min(catalogue.len().max(1) * 4),
        exact: false,
        hnsw_ef: None,
        oversampling: None,
        // Ids only: a heavy user's query returns thousands of hits.
        payload_fields: Some(Vec::new()),
    };
    let hits = store.query(collection, &query).await?;
    let mut out: Vec<(usize, f32)> = Vec::with_capacity(n);
    for hit in hits {
        let Some(i) = catalogue.position(&hit.chunk.content_id) else {
            continue;
        };
        if user.history.seen.contains(&i)
            || user.seed == Some(i)
            || out.iter().any(|(j, _)| *j == i)
        {
            continue;
        }
        out.push((i, hit.score));
        if out.len() == n {
            break;
        }
    }
    Ok(out)
}

/// The `n` highest-scoring pairs, best first (ties by position, so lists are stable).
pub fn top_n(scores: impl Iterator<Item = (usize, f32)>, n: usize) -> Vec<(usize, f32)> {
    let mut v: Vec<(usize, f32)> = scores.collect();
    let cmp = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if v.len() > n {
        v.select_nth_unstable_by(n, cmp);
        v.truncate(n);
    }
    v.sort_by(cmp);
    v
}

/// Why a backfilled item is in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backfill {
    /// Among the most recently published.
    Fresh,
    /// Among the most engaged-with.
    Popular,
    /// The freshest item of a tag the list does not cover yet.
    Diverse,
    /// Anything else unseen, in catalogue order (a catalogue with no dates and no events).
    Catalogue,
}

impl Backfill {
    /// The source name lists carry.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Popular => "popular",
            Self::Diverse => "diverse",
            Self::Catalogue => "catalogue",
        }
    }
}

/// Up to `n` items to fill a list the ranker left short (a new reader with no history, a
/// `dense` list with no profile, a user who has seen everything the sources proposed): fresh,
/// popular and diverse items in turn, then the rest of the catalogue, never one the user has
/// seen, the seed, an item in `taken`, or one the objectives' hard filters keep out at `now`.
pub fn backfill(
    catalogue: &Catalogue,
    signals: &InteractionSignals,
    user: &UserContext,
    taken: &[usize],
    objectives: &crate::config::ObjectivesConfig,
    n: usize,
) -> Vec<(usize, Backfill)> {
    let eligible = |i: usize| {
        !user.history.seen.contains(&i)
            && user.seed != Some(i)
            && !taken.contains(&i)
            && super::rerank::showable(catalogue, i, objectives, user.now)
    };
    let mut fresh: Vec<usize> = (0..catalogue.len())
        .filter(|&i| catalogue.items[i].published.is_some())
        .collect();
    fresh.sort_by_key(|&i| (std::cmp::Reverse(catalogue.items[i].published), i));
    // Diverse: each tag's freshest item, tags taken by how many items they cover.
    let mut by_tag: HashMap<&str, Vec<usize>> = HashMap::new();
    let undated = (0..catalogue.len()).filter(|&i| catalogue.items[i].published.is_none());
    for i in fresh.iter().copied().chain(undated) {
        if let Some((tag, _)) = catalogue.items[i].tags.first() {
            by_tag.entry(tag.as_str()).or_default().push(i);
        }
    }
    let mut tags: Vec<(&str, Vec<usize>)> = by_tag.into_iter().collect();
    tags.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let diverse: Vec<usize> = tags
        .iter()
        .filter_map(|(_, items)| items.first().copied())
        .collect();
    let lists: [(Backfill, &[usize]); 3] = [
        (Backfill::Fresh, &fresh),
        (Backfill::Popular, &signals.by_popularity),
        (Backfill::Diverse, &diverse),
    ];
    let mut cursors = [0usize; 3];
    let mut out: Vec<(usize, Backfill)> = Vec::with_capacity(n);
    let mut chosen = std::collections::HashSet::new();
    let mut exhausted = false;
    while out.len() < n && !exhausted {
        exhausted = true;
        for (k, (why, list)) in lists.iter().enumerate() {
            while let Some(&i) = list.get(cursors[k]) {
                cursors[k] += 1;
                if eligible(i) && chosen.insert(i) {
                    out.push((i, *why));
                    exhausted = false;
                    break;
                }
            }
            if out.len() == n {
                return out;
            }
        }
    }
    for i in 0..catalogue.len() {
        if out.len() == n {
            break;
        }
        if eligible(i) && chosen.insert(i) {
            out.push((i, Backfill::Catalogue));
        }
    }
    out
}
