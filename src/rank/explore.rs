//! Exploration with known probabilities: ε-greedy slots over the serving ranker's pool.
//!
//! Each of the `k` positions of a list explores, independently, with probability ε. The
//! positions that do not explore take the ranker's pool in order (the first greedy position
//! gets the pool's first item, the second its second, …); the exploring positions are filled
//! with a uniformly random sample, without replacement, of the pool's items that the greedy
//! positions did not take. Unlike Plackett–Luce sampling, whose marginal probability of an item
//! at a position has no closed form (it needs Monte-Carlo estimates, whose noise biases inverse
//! weights), this policy's marginals are exact and cost O(k) (see [`propensity`]): every item of
//! the pool can appear at every position, which is the support that off-policy estimates of
//! another ranker need ([`super::offpolicy`]).

use rand::seq::index::sample;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A variant's exploration (`explore = { epsilon = 0.1, pool = 100 }` in `experiments.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExploreConfig {
    /// The probability that a position explores (0: the deterministic list).
    pub epsilon: f64,
    /// How many of the ranker's best items exploring positions draw from (and an off-policy
    /// estimate can replay another ranker over): the larger, the more rankers the log can
    /// evaluate, and the rarer each item at each position (higher-variance estimates).
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
    let explores: Vec<bool> = (0..k).map(|_| rng.random::<f64>() < epsilon).collect();
    let greedy = explores.iter().filter(|e| !**e).count();
    // Exploring positions: a uniform sample, in random order, of the items greedy did not take.
    let mut drawn = sample(rng, pool_len - greedy, k - greedy)
        .into_iter()
        .map(|i| i + greedy);
    let mut next_greedy = 0;
    let shown: Vec<usize> = explores
        .iter()
        .map(|&e| {
            if e {
                drawn.next().expect("one draw per exploring position")
            } else {
                next_greedy += 1;
                next_greedy - 1
            }
        })
        .collect();
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
/// in a list of `k` (≤ `pool_len`) under ε-greedy slots.
///
/// Greedy: the position does not explore and exactly `rank` of the positions before it do not
/// either — `(1−ε)·C(j, r)(1−ε)^r ε^(j−r)`. Exploring: the position explores, `g` of the other
/// `k − 1` positions are greedy (Binomial(k − 1, 1 − ε)), the item is not among the `g` greedy
/// ones (`rank ≥ g`), and each exploring position's item is uniform over the `pool_len − g`
/// items left — `Σ_g ε·P(g)/(pool_len − g)`.
pub fn propensity(epsilon: f64, pool_len: usize, k: usize, rank: usize, position: usize) -> f64 {
    let k = k.min(pool_len);
    if position >= k || rank >= pool_len {
        return 0.0;
    }
    let keep = 1.0 - epsilon;
    let greedy = if rank <= position {
        keep * binomial_pmf(position, rank, keep)
    } else {
        0.0
    };
    let explored: f64 = (0..k.min(rank + 1))
        .map(|g| epsilon * binomial_pmf(k - 1, g, keep) / (pool_len - g) as f64)
        .sum();
    greedy + explored
}

/// P(X = x) for X ~ Binomial(n, p).
fn binomial_pmf(n: usize, x: usize, p: f64) -> f64 {
    if x > n {
        return 0.0;
    }
    let mut choose = 1.0;
    for i in 0..x {
        choose *= (n - i) as f64 / (i + 1) as f64;
    }
    choose * p.powi(x as i32) * (1.0 - p).powi((n - x) as i32)
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
