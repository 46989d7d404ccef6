//! Candidate sources: each proposes items for one user from one kind of evidence. The
//! recommender merges their lists, drops duplicates and what the user has seen, and leaves the
//! ordering to the learned blend.

use std::collections::HashMap;

use super::catalogue::{dot, Catalogue};
use super::factors::Factors;
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
    /// The user's latest engagements (`rank.sequence.length`), as sequence features see them.
    pub recent: RecentSequence,
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
        let seeding = match settings.cooccurrence_history {
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
            if k >= history.engaged.len() - seeding {
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
        let recent = RecentSequence::new(&history, catalogue, signals, settings.sequence.length);
        Self {
            recent,
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

/// The user's latest engagements, summarised for the sequence features.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecentSequence {
    /// Unit mean of the latest items' content vectors.
    pub content: Option<Vec<f32>>,
    /// Unit mean of the latest items' unit factor vectors.
    pub factor: Option<Vec<f32>>,
    /// Co-occurrence with the latest items only (by catalogue position), and its largest value.
    pub cooccurrence: HashMap<usize, f32>,
    pub max_cooccurrence: f32,
    /// The latest engagement time with each tag and each source (over the whole history).
    pub tag_last: HashMap<String, i64>,
    pub source_last: HashMap<String, i64>,
}

impl RecentSequence {
    /// Summarise the last `length` distinct engaged items of `history`.
    pub fn new(
        history: &UserHistory,
        catalogue: &Catalogue,
        signals: &InteractionSignals,
        length: usize,
    ) -> Self {
        let mut latest: Vec<usize> = Vec::new();
        for &(i, _, _) in history.engaged.iter().rev() {
            if latest.len() >= length {
                break;
            }
            if !latest.contains(&i) {
                latest.push(i);
            }
        }
        let unit_mean = |vectors: &mut dyn Iterator<Item = Vec<f32>>| -> Option<Vec<f32>> {
            let mut sum: Option<Vec<f32>> = None;
            for v in vectors {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                let s = sum.get_or_insert_with(|| vec![0.0; v.len()]);
                s.iter_mut().zip(&v).for_each(|(a, b)| *a += b / norm);
            }
            let s = sum?;
            let norm = s.iter().map(|x| x * x).sum::<f32>().sqrt();
            (norm > 0.0).then(|| s.iter().map(|x| x / norm).collect())
        };
        let content = unit_mean(&mut latest.iter().map(|&i| catalogue.vector(i).to_vec()));
        let factor = signals
            .factors
            .as_ref()
            .and_then(|f| unit_mean(&mut latest.iter().map(|&i| f.item(i).to_vec())));
        let mut cooccurrence: HashMap<usize, f32> = HashMap::new();
        for &i in &latest {
            for &(j, s) in signals.cooccurring.get(i).into_iter().flatten() {
                *cooccurrence.entry(j).or_default() += s;
            }
        }
        let max_cooccurrence = cooccurrence.values().copied().fold(0f32, f32::max);
        let (mut tag_last, mut source_last) = (HashMap::new(), HashMap::new());
        for &(i, _, t) in &history.engaged {
            let item = &catalogue.items[i];
            for (tag, _) in &item.tags {
                let last = tag_last.entry(tag.clone()).or_insert(t);
                *last = (*last).max(t);
            }
            if let Some(source) = &item.source {
                let last = source_last.entry(source.clone()).or_insert(t);
                *last = (*last).max(t);
            }
        }
        Self {
            content,
            factor,
            cooccurrence,
            max_cooccurrence,
            tag_last,
            source_last,
        }
    }
}

impl RecentSequence {
    /// Item `i`'s sequence features at `now`: `recent_dense`, `recent_factor`,
    /// `recent_cooccurrence` (divided by the user's largest), `tag_recency` (the most recently
    /// engaged of its tags) and `source_recency`, each recency `½^(days / half_life_days)`.
    pub fn features(
        &self,
        catalogue: &Catalogue,
        factors: Option<&Factors>,
        i: usize,
        now: i64,
        half_life_days: f64,
    ) -> [f32; 5] {
        let item = &catalogue.items[i];
        let content = self
            .content
            .as_deref()
            .map_or(0.0, |v| dot(v, catalogue.vector(i)));
        let factor = match (factors, &self.factor) {
            (Some(f), Some(v)) => {
                let x = f.item(i);
                let norm = x.iter().map(|a| a * a).sum::<f32>().sqrt();
                if norm > 0.0 {
                    dot(v, x) / norm
                } else {
                    0.0
                }
            }
            _ => 0.0,
        };
        let cooccurrence =
            self.cooccurrence.get(&i).copied().unwrap_or(0.0) / self.max_cooccurrence.max(1e-9);
        let recency = |last: Option<&i64>| {
            last.map_or(0.0, |&t| {
                let days = (now - t).max(0) as f64 / 86_400.0;
                0.5f64.powf(days / half_life_days.max(1e-9)) as f32
            })
        };
        let tag = item
            .tags
            .iter()
            .map(|(t, _)| recency(self.tag_last.get(t)))
            .fold(0f32, f32::max);
        let source = recency(item.source.as_ref().and_then(|s| self.source_last.get(s)));
        [content, factor, cooccurrence, tag, source]
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
    /// `rank.dense_scan_max_items`.
    pub scan_max_items: usize,
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
            self.scan_max_items,
        )
        .await
    }
}

/// "More like this": the items nearest a seed item's vector.
pub struct MoreLikeThis<'a, S> {
    pub store: &'a S,
    pub collection: &'a str,
    pub catalogue: &'a Catalogue,
    /// `rank.dense_scan_max_items`.
    pub scan_max_items: usize,
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
            self.scan_max_items,
        )
        .await
    }
}

/// The `n` unseen items nearest `vector`: a scan of the catalogue's item vectors when it has
/// at most `scan_max_items` items, else the store's nearest (best chunk per item). The store
/// has no "not these ids" condition, so its query asks for enough extra to cover the seen
/// items, and each hit is decoded from its stored payload: for a user with thousands of seen
/// items that costs more than scanning every vector of a catalogue held in memory anyway.
#[allow(clippy::too_many_arguments)]
async fn nearest<S: VectorStore>(
    store: &S,
    collection: &str,
    catalogue: &Catalogue,
    vector: &[f32],
    user: &UserContext,
    n: usize,
    scan_max_items: usize,
) -> Result<Vec<(usize, f32)>, RankError> {
    if catalogue.len() <= scan_max_items {
        return Ok(top_n(
            (0..catalogue.len())
                .filter(|i| !user.history.seen.contains(i) && user.seed != Some(*i))
                .map(|i| (i, dot(vector, catalogue.vector(i)))),
            n,
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rank::catalogue::CatalogueItem;

    const DAY: i64 = 86_400;

    /// The catalogue scan and the store's search propose the same nearest unseen items (one
    /// chunk per item, so the item vector is the chunk's), for a profile and for a seed.
    #[tokio::test]
    async fn scanning_the_catalogue_finds_what_the_store_finds() {
        use crate::store::{ChunkPoint, CollectionSpec, EdgeStore};
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let store = EdgeStore::new(dir.path()).unwrap();
        let dim = 8;
        let spec = CollectionSpec {
            name: "c".into(),
            model_id: "m".into(),
            model_fingerprint: "f".into(),
            dimension: dim,
            bm25_avg_len: 1.0,
            bm25_chunks: 0,
            bm25_total_len: 0.0,
        };
        store.open_collection(&spec).await.unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let points: Vec<ChunkPoint> = (0..300)
            .map(|i| ChunkPoint {
                content_id: format!("item-{i}"),
                chunk_index: 0,
                dense: (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect(),
                bm25: Default::default(),
                payload: serde_json::json!({"title": format!("item {i}")})
                    .as_object()
                    .unwrap()
                    .clone(),
            })
            .collect();
        store.upsert("c", points).await.unwrap();
        let catalogue = Catalogue::load(&store, "c").await.unwrap();
        let mut user = UserContext::default();
        user.history.seen = (0..300).step_by(3).collect();
        let profile: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let norm = dot(&profile, &profile).sqrt();
        user.profile = Some(profile.iter().map(|x| x / norm).collect());
        let dense = |scan_max_items| Dense {
            store: &store,
            collection: "c",
            catalogue: &catalogue,
            scan_max_items,
        };
        let (scanned, searched) = (
            dense(usize::MAX).candidates(&user, 20).await.unwrap(),
            dense(0).candidates(&user, 20).await.unwrap(),
        );
        let ids = |list: &[(usize, f32)]| list.iter().map(|c| c.0).collect::<Vec<_>>();
        assert_eq!(scanned.len(), 20);
        assert_eq!(ids(&scanned), ids(&searched));
        for ((_, a), (_, b)) in scanned.iter().zip(&searched) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert!(scanned.iter().all(|(i, _)| !user.history.seen.contains(i)));

        user.seed = Some(4);
        let like = |scan_max_items| MoreLikeThis {
            store: &store,
            collection: "c",
            catalogue: &catalogue,
            scan_max_items,
        };
        let (scanned, searched) = (
            like(usize::MAX).candidates(&user, 10).await.unwrap(),
            like(0).candidates(&user, 10).await.unwrap(),
        );
        assert_eq!(ids(&scanned), ids(&searched));
        assert!(scanned.iter().all(|(i, _)| *i != 4));
    }

    #[test]
    fn the_simd_friendly_dot_equals_the_plain_sum() {
        for len in 0..40 {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-5, "length {len}");
        }
    }

    #[test]
    fn the_sequence_features_follow_the_latest_items_and_decay_with_time() {
        let mut catalogue = Catalogue::default();
        for (id, v, source, tag) in [
            ("old", [1.0, 0.0], "x", "sport"),
            ("new", [0.0, 1.0], "y", "politics"),
            ("like_old", [0.99, 0.1], "x", "sport"),
            ("like_new", [0.1, 0.99], "z", "politics"),
        ] {
            let item = CatalogueItem {
                id: id.into(),
                title: id.into(),
                source: Some(source.into()),
                content_type: None,
                published: None,
                embargo_until: None,
                tags: vec![(tag.into(), 1.0)],
                payload: Default::default(),
            };
            catalogue.push(item, v.to_vec()).unwrap();
        }
        let history = UserHistory {
            engaged: vec![(0, 1.0, 0), (1, 1.0, 60 * DAY)],
            seen: [0, 1].into(),
            last_seen: 60 * DAY,
        };
        let signals = InteractionSignals::default();
        // The latest one item is the sequence: the candidate like it scores near 1, the other
        // near 0, whatever the older history says.
        let recent = RecentSequence::new(&history, &catalogue, &signals, 1);
        let now = 90 * DAY;
        let like_new = recent.features(&catalogue, None, 3, now, 30.0);
        let like_old = recent.features(&catalogue, None, 2, now, 30.0);
        assert!(
            like_new[0] > 0.95 && like_old[0] < 0.15,
            "{like_new:?} {like_old:?}"
        );
        // Recency: politics was engaged 30 days before now (one half-life), sport 90 days.
        assert!((like_new[3] - 0.5).abs() < 1e-6, "{like_new:?}");
        assert!((like_old[3] - 0.125).abs() < 1e-6, "{like_old:?}");
        // Source x was last engaged 90 days ago; nobody engaged with source z.
        assert!((like_old[4] - 0.125).abs() < 1e-6 && like_new[4] == 0.0);
        // No factors, no co-occurrence: those features are 0, not NaN.
        assert_eq!((like_new[1], like_new[2]), (0.0, 0.0));
        // With the whole history as the sequence, both engaged directions count.
        let all = RecentSequence::new(&history, &catalogue, &signals, 10);
        let f = all.features(&catalogue, None, 2, now, 30.0);
        assert!(f[0] > 0.6 && f[0] < 0.8, "{f:?}");
    }
}
