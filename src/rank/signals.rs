//! What the interaction log says about items and users, computed once from a log and a
//! catalogue: each user's engagements and seen items, item popularity, item-to-item
//! co-occurrence, and collaborative factors.

use std::collections::{HashMap, HashSet};

use super::catalogue::Catalogue;
use super::factors::{Factors, SavedFactors};
use super::interactions::{by_user, Interaction};
use crate::config::RankConfig;

const DAY: f64 = 86_400.0;

/// One user's history over catalogue positions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserHistory {
    /// Positive engagements, oldest first: (item, event weight, timestamp).
    pub engaged: Vec<(usize, f32, i64)>,
    /// Every item the user interacted with at all (never recommended again).
    pub seen: HashSet<usize>,
    /// The user's latest event.
    pub last_seen: i64,
}

/// Popularity and co-occurrence over a log, with each user's history.
#[derive(Debug, Clone, Default)]
pub struct InteractionSignals {
    pub users: HashMap<String, UserHistory>,
    /// Count of positive engagements per item (users, not events).
    pub popularity: Vec<f32>,
    /// Popularity with each engagement decayed by its age at `now`
    /// (`rank.popularity_half_life_days`; equal to `popularity` when that is 0).
    pub trending: Vec<f32>,
    /// Per item, its strongest co-engaged items with the cosine-normalised count
    /// `|U(i) ∩ U(j)| / sqrt(|U(i)|·|U(j)|)`, strongest first.
    pub cooccurring: Vec<Vec<(usize, f32)>>,
    /// The latest event in the log: "now" for decays, unless a request gives another.
    pub now: i64,
    /// Items ranked by popularity (ties by catalogue position).
    pub by_popularity: Vec<usize>,
    /// Items ranked by trending popularity.
    pub by_trending: Vec<usize>,
    /// Collaborative factors trained on every user's engagements (`rank.factors`; none when
    /// turned off or the log holds no engagement).
    pub factors: Option<Factors>,
}

impl InteractionSignals {
    /// Compute every signal from `events`, training the collaborative factors on them; items
    /// missing from the catalogue are skipped.
    pub fn build(events: &[Interaction], catalogue: &Catalogue, settings: &RankConfig) -> Self {
        Self::build_with(events, catalogue, settings, None)
    }

    /// As [`Self::build`], with the factors `rank train` saved (mapped onto `catalogue` by item
    /// id) instead of training them; without saved factors they are trained here.
    pub fn build_with(
        events: &[Interaction],
        catalogue: &Catalogue,
        settings: &RankConfig,
        saved: Option<&SavedFactors>,
    ) -> Self {
        let n = catalogue.len();
        let now = events.iter().map(|x| x.timestamp).max().unwrap_or(0);
        let mut users = HashMap::new();
        let mut popularity = vec![0f32; n];
        let mut trending = vec![0f32; n];
        let mut item_users: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut user_items: Vec<Vec<u32>> = Vec::new();
        for (user, events) in by_user(events) {
            let mut history = UserHistory::default();
            let mut positives: Vec<u32> = Vec::new();
            for x in &events {
                history.last_seen = history.last_seen.max(x.timestamp);
                let Some(i) = catalogue.position(&x.item) else {
                    continue;
                };
                history.seen.insert(i);
                let w = x.weight(settings) as f32;
                if w > 0.0 {
                    history.engaged.push((i, w, x.timestamp));
                    if !positives.contains(&(i as u32)) {
                        positives.push(i as u32);
                        popularity[i] += 1.0;
                        trending[i] +=
                            decayed(1.0, x.timestamp, now, settings.popularity_half_life_days);
                    }
                }
            }
            let u = user_items.len() as u32;
            for &i in &positives {
                item_users[i as usize].push(u);
            }
            user_items.push(positives);
            users.insert(user, history);
        }
        let cooccurring = cooccurrence(&item_users, &user_items, settings.cooccurrence_neighbours);
        let factors = match saved {
            _ if settings.factors.dim == 0 => None,
            Some(saved) => {
                let (factors, mapped) = saved.for_catalogue(catalogue);
                tracing::info!(
                    version = %saved.version,
                    items = n,
                    with_factors = mapped,
                    "collaborative factors read from rank train's file"
                );
                Some(factors)
            }
            None => {
                let engaged: Vec<Vec<usize>> = user_items
                    .iter()
                    .map(|items| items.iter().map(|&i| i as usize).collect())
                    .collect();
                Factors::train(&engaged, n, &settings.factors)
            }
        };
        let rank_by = |scores: &[f32]| {
            let mut order: Vec<usize> = (0..n).filter(|&i| scores[i] > 0.0).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            order
        };
        Self {
            by_popularity: rank_by(&popularity),
            by_trending: rank_by(&trending),
            users,
            popularity,
            trending,
            cooccurring,
            now,
            factors,
        }
    }

    /// The user's history; an unknown user has none (a cold start).
    pub fn history(&self, user: &str) -> Option<&UserHistory> {
        self.users.get(user)
    }
}

/// Top-`keep` cosine-normalised co-occurrence neighbours of every item: for each item, count
/// the other positives of its users in a dense scratch row (Σ over users of |positives|², a
/// few tens of millions of adds on MovieLens, well under a second).
fn cooccurrence(
    item_users: &[Vec<u32>],
    user_items: &[Vec<u32>],
    keep: usize,
) -> Vec<Vec<(usize, f32)>> {
    use rayon::prelude::*;
    let n = item_users.len();
    (0..n)
        .into_par_iter()
        .map_init(
            || (vec![0f32; n], Vec::<u32>::new()),
            |(counts, touched), i| {
                for &u in &item_users[i] {
                    for &j in &user_items[u as usize] {
                        if j as usize != i {
                            if counts[j as usize] == 0.0 {
                                touched.push(j);
                            }
                            counts[j as usize] += 1.0;
                        }
                    }
                }
                let ni = item_users[i].len() as f32;
                let mut row: Vec<(usize, f32)> = touched
                    .iter()
                    .map(|&j| {
                        let nj = item_users[j as usize].len() as f32;
                        (j as usize, counts[j as usize] / (ni * nj).sqrt())
                    })
                    .collect();
                for &j in touched.iter() {
                    counts[j as usize] = 0.0;
                }
                touched.clear();
                row.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                row.truncate(keep);
                row
            },
        )
        .collect()
}

/// An engagement's weight in a profile: its event weight halved every `half_life_days` before
/// `reference`.
pub fn decayed(weight: f32, timestamp: i64, reference: i64, half_life_days: f64) -> f32 {
    if half_life_days <= 0.0 {
        return weight;
    }
    let age = (reference - timestamp).max(0) as f64 / DAY;
    weight * 0.5f64.powf(age / half_life_days) as f32
}
