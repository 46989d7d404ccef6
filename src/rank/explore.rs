//! Exploration with known probabilities: ε-greedy over lists from the serving ranker's pool.
//!
//! With probability 1 − ε a list is the ranker's own top k; with probability ε it is a
//! uniformly random ordered sample of k items from the ranker's pool. The marginal probability
//! of the pool's item at rank r being shown at position j is exact and O(1):
//! `(1 − ε)·[r = j] + ε/|pool|` ([`propensity`]). Every (item, position) pair of the pool has
//! probability at least ε/|pool|, so an off-policy estimate of another ranker
//! ([`super::offpolicy`]) never weighs a click by more than |pool|/ε. Two alternatives were
//! measured against this on the recommendation suite's simulation and dropped: Plackett–Luce
//! sampling has no closed-form marginals (Monte-Carlo estimates of them bias the inverse
//! weights), and ε-greedy per position gives the ranker's best item a probability of
//! (1 − ε)·ε⁹ ≈ 10⁻⁵ of appearing tenth — one co-occurrence list that put it there weighed
//! 10⁵ and the estimate's effective sample size fell to 9.

use rand::seq::index::sample;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A variant's exploration (`explore = { epsilon = 0.1, pool = 100 }` in `experiments.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExploreConfig {
    /// The probability that a list explores (0: the deterministic list).
    pub epsilon: f64,
    /// How many of the ranker's best items an exploring list draws from (besides every single
    /// source's own top k, which the pool always holds so those rankers can be estimated): the
    /// larger, the more rankers the log can evaluate, and the rarer each item at each position
    /// (higher-variance estimates).
    #[serde(default = "default_pool")]
    pub pool: usize,
}

fn default_pool() -> usize {
    100
}

impl ExploreConfig {
    /// Why the settings cannot be served, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.epsilon) {
            return Err(format!(
                "explore.epsilon must be between 0 and 1 (it is {})",
                self.epsilon
            ));
        }
        if self.pool == 0 {
            return Err("explore.pool must be at least 1".into());
        }
        Ok(())
    }
}

/// One sampled list: positions into the pool, and each shown item's marginal probability of
/// being at its position under the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ExploredList {
    pub shown: Vec<usize>,
    pub propensities: Vec<f64>,
}

/// Sample a list of `min(k, pool_len)` items from a pool of `pool_len` items in the ranker's
/// order.
pub fn sample_list(epsilon: f64, pool_len: usize, k: usize, rng: &mut impl Rng) -> ExploredList {
    let k = k.min(pool_len);
    let shown: Vec<usize> = if rng.random::<f64>() < epsilon {
        // A uniform sample, fully shuffled.
        sample(rng, pool_len, k).into_vec()
    } else {
        (0..k).collect()
    };
    let propensities = shown
        .iter()
        .enumerate()
        .map(|(j, &r)| propensity(epsilon, pool_len, k, r, j))
        .collect();
    ExploredList {
        shown,
        propensities,
    }
}

/// The probability that the pool's item at `rank` (0-based) is shown at `position` (0-based)
/// in a list of `k`: the ranker's own list puts it there with probability 1 − ε when
/// `rank == position`; a random list puts any of the `pool_len` items at any position with
/// probability 1/`pool_len`.
pub fn propensity(epsilon: f64, pool_len: usize, k: usize, rank: usize, position: usize) -> f64 {
    if position >= k.min(pool_len) || rank >= pool_len {
        return 0.0;
    }
    let own = if rank == position { 1.0 - epsilon } else { 0.0 };
    own + epsilon / pool_len as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_marginals_sum_to_one_and_match_the_sampled_frequencies() {
        let (epsilon, pool, k) = (0.3, 12, 5);
        for j in 0..k {
            let total: f64 = (0..pool).map(|r| propensity(epsilon, pool, k, r, j)).sum();
            assert!((total - 1.0).abs() < 1e-12, "position {j}: {total}");
        }
        for r in 0..pool {
            let total: f64 = (0..k).map(|j| propensity(epsilon, pool, k, r, j)).sum();
            assert!(total <= 1.0 + 1e-12, "an item is shown at most once");
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let n = 400_000;
        let mut counts = vec![vec![0usize; k]; pool];
        for _ in 0..n {
            let list = sample_list(epsilon, pool, k, &mut rng);
            let mut distinct = list.shown.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), k);
            for (j, &r) in list.shown.iter().enumerate() {
                counts[r][j] += 1;
                assert_eq!(list.propensities[j], propensity(epsilon, pool, k, r, j));
            }
        }
        for (r, row) in counts.iter().enumerate() {
            for (j, &c) in row.iter().enumerate() {
                let p = propensity(epsilon, pool, k, r, j);
                let got = c as f64 / n as f64;
                // Four standard errors of a binomial proportion.
                let se = (p * (1.0 - p) / n as f64).sqrt();
                assert!(
                    (got - p).abs() <= 4.0 * se + 1e-9,
                    "rank {r} at {j}: sampled {got}, formula {p}"
                );
                assert!(p > 0.0, "every item can appear at every position");
            }
        }
    }

    #[test]
    fn epsilon_zero_is_the_deterministic_list_with_probability_one() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let list = sample_list(0.0, 50, 10, &mut rng);
        assert_eq!(list.shown, (0..10).collect::<Vec<_>>());
        assert!(list.propensities.iter().all(|&p| p == 1.0));
        assert_eq!(propensity(0.0, 50, 10, 11, 3), 0.0);
        // A pool shorter than the list: all of it, in order.
        let list = sample_list(0.5, 3, 10, &mut rng);
        assert_eq!(list.shown.len(), 3);
        assert!(ExploreConfig {
            epsilon: 1.5,
            pool: 10
        }
        .check()
        .unwrap_err()
        .contains("explore.epsilon"));
    }
}
