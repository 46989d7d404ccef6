//! Off-policy evaluation: what would another ranker's lists have earned, estimated from the
//! exploring lists already served, before any user sees it.
//!
//! The item-position model (Li et al., "Offline Evaluation of Ranking Policies with Click
//! Models", KDD 2018): a click depends on the item and its position only. Under it, a
//! deterministic target ranker's expected clicks per list are estimated by inverse propensity
//! scoring — each logged (item, position) that the target would also show at that position,
//! weighted by one over the logging policy's probability of showing it there — and by the
//! self-normalised variant (SNIPS), which divides each position's weighted clicks by its summed
//! weights instead of the number of lists (lower variance, and bounded by the clicks seen). Only
//! exposures with a logged pool (an exploring variant's, [`super::explore`]) are used: the
//! target is replayed over that pool, and a deterministic list gives no support to any other
//! order.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson};
use serde::Serialize;

use super::blend::BlendModel;
use super::experiments::{Clicks, Exposure, LoggedPool};
use super::interactions::Interaction;
use super::recommender::{RankerKind, Scorer};
use super::RankError;
use crate::config::RankConfig;

/// Below this effective sample size at any position the readout says the log cannot support
/// the estimate: Kish's ESS of the importance weights; under 100 the interval's own bootstrap
/// is unreliable and a handful of lists decide the value.
pub const MIN_EFFECTIVE_SAMPLE_SIZE: f64 = 100.0;

/// Bootstrap rounds of the intervals.
pub const BOOTSTRAP_ROUNDS: usize = 400;

/// A position at which the target ranker shows the item the logged list showed there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matched {
    pub position: usize,
    /// One over the logging policy's probability of that item at that position.
    pub weight: f64,
    pub clicked: bool,
}

/// An estimate of a ranker's clicks per list (the sum over positions of its click-through at
/// each position), with 95% bootstrap intervals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub policy: String,
    /// Exploring lists the estimate rests on.
    pub lists: usize,
    /// Exposures without a logged pool (deterministic or interleaved lists), not used.
    pub skipped: usize,
    /// (list, position) pairs at which the target agrees with the log.
    pub matched: usize,
    pub ips: f64,
    pub ips_low: f64,
    pub ips_high: f64,
    pub snips: f64,
    pub snips_low: f64,
    pub snips_high: f64,
    /// The logging policy's own clicks per list, as observed.
    pub logged: f64,
    /// Kish's effective sample size of the weights, at the least supported position.
    pub effective_sample_size: f64,
    /// False when the log cannot support the estimate (see `warning`).
    pub supported: bool,
    pub warning: Option<String>,
}

/// The estimate from lists seen through the target: `matched` holds the lists with at least
/// one match; `lists` counts every list (those without a match add zero clicks and zero
/// weight); `k` is the list length; `logged` the logging policy's clicks per list.
pub fn estimate_matched(
    policy: &str,
    matched: &[Vec<Matched>],
    lists: usize,
    k: usize,
    logged: f64,
    seed: u64,
) -> Estimate {
    let point = |counts: &dyn Fn(usize) -> f64, n: f64| {
        let mut clicks = vec![0.0; k];
        let mut weights = vec![0.0; k];
        for (i, list) in matched.iter().enumerate() {
            let c = counts(i);
            for m in list.iter().filter(|m| m.position < k) {
                weights[m.position] += c * m.weight;
                if m.clicked {
                    clicks[m.position] += c * m.weight;
                }
            }
        }
        let ips = clicks.iter().sum::<f64>() / n.max(1.0);
        let snips = clicks
            .iter()
            .zip(&weights)
            .map(|(c, w)| if *w > 0.0 { c / w } else { 0.0 })
            .sum::<f64>();
        (ips, snips)
    };
    let (ips, snips) = point(&|_| 1.0, lists as f64);
    // Poisson bootstrap: each list is drawn Poisson(1) times, which resamples the lists without
    // touching the (many) lists that match nothing one by one.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let one = Poisson::new(1.0).expect("a valid rate");
    let rest = Poisson::new((lists.saturating_sub(matched.len())).max(1) as f64).expect("rate");
    let mut draws = (Vec::new(), Vec::new());
    for _ in 0..BOOTSTRAP_ROUNDS {
        let counts: Vec<f64> = matched.iter().map(|_| one.sample(&mut rng)).collect();
        let n = counts.iter().sum::<f64>()
            + if lists > matched.len() {
                rest.sample(&mut rng)
            } else {
                0.0
            };
        let (i, s) = point(&|i| counts[i], n);
        draws.0.push(i);
        draws.1.push(s);
    }
    let ess = effective_sample_size(matched, k);
    let (ips_low, ips_high) = percentiles(&mut draws.0);
    let (snips_low, snips_high) = percentiles(&mut draws.1);
    let warning = (ess < MIN_EFFECTIVE_SAMPLE_SIZE).then(|| {
        format!(
            "the log cannot support this estimate: effective sample size {ess:.0} at the least supported position (under {MIN_EFFECTIVE_SAMPLE_SIZE}); the exploring lists rarely showed what {policy} would show — explore more (a larger epsilon or pool) or for longer"
        )
    });
    Estimate {
        policy: policy.to_string(),
        lists,
        skipped: 0,
        matched: matched.iter().map(Vec::len).sum(),
        ips,
        ips_low,
        ips_high,
        snips,
        snips_low,
        snips_high,
        logged,
        effective_sample_size: ess,
        supported: warning.is_none(),
        warning,
    }
}

/// Kish's effective sample size (Σw)²/Σw² at each of the `k` positions; the smallest.
fn effective_sample_size(matched: &[Vec<Matched>], k: usize) -> f64 {
    let mut sums = vec![(0.0, 0.0); k];
    for m in matched.iter().flatten().filter(|m| m.position < k) {
        sums[m.position].0 += m.weight;
        sums[m.position].1 += m.weight * m.weight;
    }
    sums.iter()
        .map(|(s, s2)| if *s2 > 0.0 { s * s / s2 } else { 0.0 })
        .fold(f64::INFINITY, f64::min)
}

/// The 2.5th and 97.5th percentiles.
fn percentiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
}

/// The target ranker's list over a logged pool: the items it scores, best first (ties in the
/// pool's order), at most `k`.
pub fn replay(pool: &LoggedPool, scorer: &Scorer<'_>, k: usize) -> Vec<usize> {
    let mut scored: Vec<(usize, f32)> = (0..pool.items.len())
        .filter(|&i| scorer.takes(&pool.sources[i]))
        .map(|i| (i, scorer.score(&pool.features[i], None)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().take(k).map(|(i, _)| i).collect()
}

/// Estimate `ranker` (with `model` for the blend) from the exposure log's exploring lists and
/// the clicks that followed them (attributed as the experiment readout does).
pub fn estimate(
    ranker: RankerKind,
    model: Option<&BlendModel>,
    exposures: &[Exposure],
    interactions: &[Interaction],
    settings: &RankConfig,
) -> Result<Estimate, RankError> {
    let clicks = Clicks::new(interactions, settings);
    let decayed = settings.popularity_half_life_days > 0.0;
    let mut scorers: BTreeMap<&[String], Scorer<'_>> = BTreeMap::new();
    let (mut matched, mut lists, mut skipped, mut logged, mut k) = (Vec::new(), 0, 0, 0.0, 0);
    for e in exposures {
        let Some(pool) = e
            .pool
            .as_ref()
            .filter(|_| e.propensities.len() == e.items.len())
        else {
            skipped += 1;
            continue;
        };
        let names = pool.feature_names.as_slice();
        if !scorers.contains_key(names) {
            scorers.insert(names, Scorer::new(names, ranker, model, decayed)?);
        }
        let scorer = &scorers[names];
        let target = replay(pool, scorer, e.items.len());
        let clicked = clicks.of(e);
        lists += 1;
        k = k.max(e.items.len());
        logged += clicked.iter().filter(|c| **c).count() as f64;
        let list: Vec<Matched> = target
            .iter()
            .zip(&e.items)
            .enumerate()
            .filter(|(j, (t, shown))| pool.items[**t] == **shown && e.propensities[*j] > 0.0)
            .map(|(j, _)| Matched {
                position: j,
                weight: 1.0 / e.propensities[j],
                clicked: clicked[j],
            })
            .collect();
        if !list.is_empty() {
            matched.push(list);
        }
    }
    if lists == 0 {
        return Err(RankError::Experiments(format!(
            "no exploring lists in the exposure log ({skipped} exposures, none with a logged pool): serve a variant with `explore = {{ epsilon = ... }}` first"
        )));
    }
    let mut out = estimate_matched(ranker.name(), &matched, lists, k, logged / lists as f64, 0);
    out.skipped = skipped;
    Ok(out)
}

/// Simulated traffic with a known answer, shared by the unit test here and the MovieLens
/// simulation of `eval recommend`: a user's pool in the logging ranker's order, each target
/// ranker's list as positions into that pool, and a click probability per pool item at each
/// position.
pub struct SimulatedUser<'a> {
    pub targets: Vec<&'a [usize]>,
    /// P(click | pool item i at position j).
    pub click: &'a dyn Fn(usize, usize) -> f64,
    pub pool_len: usize,
}

/// One simulated exposure log: per target, the lists with a match; the number of lists; the
/// logging policy's clicks per list.
pub struct SimulatedLog {
    pub matched: Vec<Vec<Vec<Matched>>>,
    pub lists: usize,
    pub logged: f64,
}

/// Serve `lists_per_user` ε-greedy lists of `k` to every user, simulate clicks, and see the one
/// log through every target.
pub fn simulate_log(
    users: &[SimulatedUser<'_>],
    epsilon: f64,
    k: usize,
    lists_per_user: usize,
    rng: &mut impl Rng,
) -> SimulatedLog {
    let targets = users.first().map_or(0, |u| u.targets.len());
    let (mut matched, mut clicks) = (vec![Vec::new(); targets], 0usize);
    for u in users {
        for _ in 0..lists_per_user {
            let list = super::explore::sample_list(epsilon, u.pool_len, k, rng);
            let clicked: Vec<bool> = list
                .shown
                .iter()
                .enumerate()
                .map(|(j, &item)| rng.random::<f64>() < (u.click)(item, j))
                .collect();
            clicks += clicked.iter().filter(|c| **c).count();
            for (t, target) in u.targets.iter().enumerate() {
                let m: Vec<Matched> = list
                    .shown
                    .iter()
                    .enumerate()
                    .filter(|(j, item)| target.get(*j) == Some(item))
                    .map(|(j, _)| Matched {
                        position: j,
                        weight: 1.0 / list.propensities[j],
                        clicked: clicked[j],
                    })
                    .collect();
                if !m.is_empty() {
                    matched[t].push(m);
                }
            }
        }
    }
    let lists = users.len() * lists_per_user;
    SimulatedLog {
        matched,
        lists,
        logged: clicks as f64 / lists.max(1) as f64,
    }
}

/// Target `t`'s true clicks per list under the simulation's click model.
pub fn true_value(users: &[SimulatedUser<'_>], t: usize) -> f64 {
    users
        .iter()
        .map(|u| {
            u.targets[t]
                .iter()
                .enumerate()
                .map(|(j, &i)| (u.click)(i, j))
                .sum::<f64>()
        })
        .sum::<f64>()
        / users.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Users with 60 pool items each; item relevance falls with the logging ranker's order but
    /// not exactly; a position-bias curve 1/(j+1). Two targets: one close to the logger, one far.
    #[test]
    fn snips_recovers_a_known_click_through_and_its_interval_covers_it() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (pool, k, n_users) = (60, 10, 300);
        let relevance: Vec<Vec<f64>> = (0..n_users)
            .map(|_| {
                (0..pool)
                    .map(|i| 0.6 * rng.random::<f64>() * (1.0 - i as f64 / pool as f64))
                    .collect()
            })
            .collect();
        // The target that knows relevance (the best ranker possible) and one that reverses the log.
        let best: Vec<Vec<usize>> = relevance
            .iter()
            .map(|r| {
                let mut order: Vec<usize> = (0..pool).collect();
                order.sort_by(|a, b| r[*b].total_cmp(&r[*a]));
                order.truncate(k);
                order
            })
            .collect();
        let reversed: Vec<usize> = (pool - k..pool).rev().collect();
        let clicks: Vec<Box<dyn Fn(usize, usize) -> f64>> = relevance
            .iter()
            .map(|r| {
                let r = r.clone();
                Box::new(move |i: usize, j: usize| r[i] / (j + 1) as f64)
                    as Box<dyn Fn(usize, usize) -> f64>
            })
            .collect();
        let users: Vec<SimulatedUser> = best
            .iter()
            .zip(&clicks)
            .map(|(b, c)| SimulatedUser {
                targets: vec![b.as_slice(), reversed.as_slice()],
                click: c.as_ref(),
                pool_len: pool,
            })
            .collect();
        let log = simulate_log(&users, 0.5, k, 400, &mut rng);
        for (t, name) in ["best", "reversed"].into_iter().enumerate() {
            let truth = true_value(&users, t);
            let e = estimate_matched(name, &log.matched[t], log.lists, k, log.logged, 1);
            let error = (e.snips - truth).abs() / truth;
            assert!(error < 0.10, "{name}: snips {} vs true {truth}", e.snips);
            assert!(
                e.snips_low <= truth && truth <= e.snips_high,
                "{name}: [{}, {}] misses {truth}",
                e.snips_low,
                e.snips_high
            );
            assert!(e.ips_low <= truth && truth <= e.ips_high, "{name}: {e:?}");
            assert!(e.supported, "{e:?}");
        }
    }

    #[test]
    fn too_little_overlap_is_called_out() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let target: Vec<usize> = (190..200).collect();
        let click = |_: usize, _: usize| 0.1;
        let users: Vec<SimulatedUser> = (0..5)
            .map(|_| SimulatedUser {
                targets: vec![&target],
                click: &click,
                pool_len: 200,
            })
            .collect();
        let log = simulate_log(&users, 0.05, 10, 20, &mut rng);
        let e = estimate_matched("far", &log.matched[0], log.lists, 10, log.logged, 0);
        assert!(!e.supported && e.warning.as_deref().unwrap().contains("cannot support"));
    }
}
