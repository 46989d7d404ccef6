//! Collaborative factors: implicit-feedback matrix factorisation by alternating least squares
//! (Hu, Koren & Volinsky 2008, "Collaborative Filtering for Implicit Feedback Datasets").
//!
//! Every user–item pair is a preference `p = 1` (engaged) or `0`, with confidence `c = 1 + α`
//! for engaged pairs and `1` for the rest; ALS minimises
//! `Σ c·(p − xᵤ·yᵢ)² + λ(Σ‖xᵤ‖² + Σ‖yᵢ‖²)` by solving each user's vector with the items fixed,
//! then each item's with the users fixed, exactly (a `dim × dim` Cholesky solve per row, with
//! the paper's `YᵀY + Yᵤᵀ(Cᵤ − I)Yᵤ` trick so a row costs its own engagements, not the
//! catalogue). Only the item factors are kept: a user's vector is solved from their history at
//! request time ([`Factors::user_vector`]), so a history that moved on since training, or a
//! user training never saw, gets the vector one more ALS step would give it.

use nalgebra::{DMatrix, DVector};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::config::FactorConfig;

/// Trained item factors, and what solving a user's vector needs.
#[derive(Debug, Clone)]
pub struct Factors {
    pub dim: usize,
    /// Item `i`'s vector is `items[i * dim..(i + 1) * dim]` (catalogue positions).
    pub items: Vec<f32>,
    /// `YᵀY + λI`, shared by every user solve.
    gram: DMatrix<f64>,
    alpha: f64,
}

impl Factors {
    /// Train on `engaged[u]` (each user's engaged catalogue positions) over `n_items` items.
    /// `None` when `settings.dim` is 0 or nobody engaged with anything.
    pub fn train(engaged: &[Vec<usize>], n_items: usize, settings: &FactorConfig) -> Option<Self> {
        let dim = settings.dim;
        if dim == 0 || n_items == 0 || engaged.iter().all(Vec::is_empty) {
            return None;
        }
        let mut by_item: Vec<Vec<usize>> = vec![Vec::new(); n_items];
        for (u, items) in engaged.iter().enumerate() {
            for &i in items {
                by_item[i].push(u);
            }
        }
        let started = std::time::Instant::now();
        // Items start small and random; users are solved from them first.
        let mut rng = rand::rngs::StdRng::seed_from_u64(settings.seed);
        let mut items: Vec<f64> = (0..n_items * dim)
            .map(|_| rng.random_range(-0.01..0.01))
            .collect();
        let (lambda, alpha) = (
            f64::from(settings.regularization),
            f64::from(settings.alpha),
        );
        for _ in 0..settings.iterations {
            let users = solve_rows(engaged, &items, dim, lambda, alpha);
            items = solve_rows(&by_item, &users, dim, lambda, alpha);
        }
        tracing::info!(
            users = engaged.len(),
            items = n_items,
            dim,
            iterations = settings.iterations,
            seconds = started.elapsed().as_secs_f64(),
            "collaborative factors trained"
        );
        Some(Self {
            dim,
            gram: gram(&items, dim, lambda),
            items: items.iter().map(|&v| v as f32).collect(),
            alpha,
        })
    }

    /// Item `i`'s vector.
    pub fn item(&self, i: usize) -> &[f32] {
        &self.items[i * self.dim..(i + 1) * self.dim]
    }

    /// The vector of a user who engaged with `engaged` (catalogue positions; repeats count
    /// once): one ALS user step against the trained items. `None` for an empty history.
    pub fn user_vector(&self, engaged: impl IntoIterator<Item = usize>) -> Option<Vec<f32>> {
        let mut positives: Vec<usize> = engaged.into_iter().collect();
        positives.sort_unstable();
        positives.dedup();
        if positives.is_empty() {
            return None;
        }
        let rows = |i: usize| self.item(i).iter().map(|&v| f64::from(v));
        let x = solve_one(&self.gram, &positives, self.dim, self.alpha, |i| {
            rows(i).collect()
        });
        Some(x.iter().map(|&v| v as f32).collect())
    }
}

/// `VᵀV + λI` for the row-major `v` with rows of `dim`.
fn gram(v: &[f64], dim: usize, lambda: f64) -> DMatrix<f64> {
    let m = DMatrix::from_row_slice(v.len() / dim, dim, v);
    let mut g = m.transpose() * &m;
    for d in 0..dim {
        g[(d, d)] += lambda;
    }
    g
}

/// One ALS half-step: every row's vector given the other side's `fixed` vectors, in parallel.
fn solve_rows(
    positives: &[Vec<usize>],
    fixed: &[f64],
    dim: usize,
    lambda: f64,
    alpha: f64,
) -> Vec<f64> {
    let g = gram(fixed, dim, lambda);
    let row = |j: usize| fixed[j * dim..(j + 1) * dim].to_vec();
    positives
        .par_iter()
        .flat_map_iter(|p| solve_one(&g, p, dim, alpha, row))
        .collect()
}

/// `(G + α·YₚᵀYₚ)⁻¹ · (1 + α)·Σⱼ yⱼ` over the positives `j` (G = `YᵀY + λI`, Yₚ the
/// positives' rows): the least-squares vector of one row. The positives are gathered into one
/// matrix so the update is a single `gemm` (a rank-one update per positive, each with its own
/// allocation, made a heavy user's request several times slower). A row without positives is
/// all zeros.
fn solve_one(
    gram: &DMatrix<f64>,
    positives: &[usize],
    dim: usize,
    alpha: f64,
    row: impl Fn(usize) -> Vec<f64>,
) -> Vec<f64> {
    if positives.is_empty() {
        return vec![0.0; dim];
    }
    let gathered: Vec<f64> = positives.iter().flat_map(|&j| row(j)).collect();
    let yp = DMatrix::from_row_slice(positives.len(), dim, &gathered);
    let mut a = gram.clone();
    a.gemm_tr(alpha, &yp, &yp, 1.0);
    let b: DVector<f64> = yp.row_sum().transpose() * (1.0 + alpha);
    // G is positive definite (λ > 0) and the added term is positive semi-definite.
    match a.cholesky() {
        Some(c) => c.solve(&b).iter().copied().collect(),
        None => vec![0.0; dim],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two groups of users, each engaging with its own half of the items: the factors must
    /// score a user's unseen in-group item above every out-of-group item.
    #[test]
    fn factors_recover_two_communities() {
        let mut engaged = Vec::new();
        for u in 0..40 {
            let base = if u % 2 == 0 { 0 } else { 10 };
            // Each user misses one item of their group.
            engaged.push(
                (0..10)
                    .filter(|k| k != &(u % 10))
                    .map(|k| base + k)
                    .collect(),
            );
        }
        // Two factors for two communities: too few to memorise who missed what.
        let settings = FactorConfig {
            dim: 2,
            ..FactorConfig::default()
        };
        let f = Factors::train(&engaged, 20, &settings).unwrap();
        for (u, items) in engaged.iter().enumerate() {
            let x = f.user_vector(items.iter().copied()).unwrap();
            let score = |i: usize| f.item(i).iter().zip(&x).map(|(a, b)| a * b).sum::<f32>();
            let base = if u % 2 == 0 { 0 } else { 10 };
            let missing = base + u % 10;
            let other = if base == 0 { 10..20 } else { 0..10 };
            for o in other {
                assert!(
                    score(missing) > score(o) + 0.1,
                    "user {u}: {missing} vs {o}"
                );
            }
            assert!(
                score(items[0]) > 0.5,
                "an engaged item scores near its preference 1"
            );
        }
        assert_eq!(f.user_vector([]), None);
        assert!(Factors::train(&[vec![], vec![]], 5, &FactorConfig::default()).is_none());
        let off = FactorConfig { dim: 0, ..settings };
        assert!(Factors::train(&engaged, 20, &off).is_none());
    }

    #[test]
    fn training_is_deterministic_for_a_seed() {
        let engaged = vec![vec![0, 1], vec![1, 2], vec![2, 3], vec![0, 3]];
        let a = Factors::train(&engaged, 4, &FactorConfig::default()).unwrap();
        let b = Factors::train(&engaged, 4, &FactorConfig::default()).unwrap();
        assert_eq!(a.items, b.items);
    }
}
