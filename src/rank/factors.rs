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

use std::collections::HashMap;
use std::path::Path;

use super::catalogue::Catalogue;
use super::RankError;
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
    /// Seconds ALS took (0 for factors read from a file).
    pub training_seconds: f64,
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
        let mut factors = Self::from_items(
            dim,
            items.iter().map(|&v| v as f32).collect(),
            lambda,
            alpha,
        );
        factors.training_seconds = started.elapsed().as_secs_f64();
        Some(factors)
    }

    /// Factors from trained item vectors (row-major, `dim` per item; an item unknown to
    /// training is a zero row). The Gram matrix is computed from the stored `f32` values, so
    /// factors trained in process and the same factors read back from a file serve alike.
    pub fn from_items(dim: usize, items: Vec<f32>, lambda: f64, alpha: f64) -> Self {
        let wide: Vec<f64> = items.iter().map(|&v| f64::from(v)).collect();
        Self {
            dim,
            gram: gram(&wide, dim, lambda),
            items,
            alpha,
            training_seconds: 0.0,
        }
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

/// The saved factors' file format; a file of another format is refused.
pub const FACTORS_FORMAT: &str = "signaldesk-factors/1";

/// Item factors as `rank train` saves them beside the blend (a safetensors file): keyed by item
/// id rather than catalogue position, so they map onto whatever catalogue serves later, with the
/// settings they were trained with and a content hash the blend names. Serving reads them
/// instead of training ALS at every start and every catalogue refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedFactors {
    /// Content hash of ids, vectors and settings.
    pub version: String,
    pub dim: usize,
    /// Item ids, in row order.
    pub ids: Vec<String>,
    /// Row-major, `dim` per id.
    pub vectors: Vec<f32>,
    pub regularization: f32,
    pub alpha: f32,
    /// How they were trained (users, engagements, rounds, seed, seconds).
    pub training: serde_json::Value,
}

impl SavedFactors {
    /// The trained `factors` over `catalogue`'s positions, keyed by id.
    pub fn of(
        factors: &Factors,
        catalogue: &Catalogue,
        settings: &FactorConfig,
        training: serde_json::Value,
    ) -> Self {
        let ids: Vec<String> = catalogue.items.iter().map(|x| x.id.clone()).collect();
        let mut saved = Self {
            version: String::new(),
            dim: factors.dim,
            vectors: factors.items[..ids.len() * factors.dim].to_vec(),
            ids,
            regularization: settings.regularization,
            alpha: settings.alpha,
            training,
        };
        saved.version = saved.content_hash();
        saved
    }

    fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update((self.dim as u64).to_le_bytes());
        hash.update(self.regularization.to_le_bytes());
        hash.update(self.alpha.to_le_bytes());
        for id in &self.ids {
            hash.update((id.len() as u64).to_le_bytes());
            hash.update(id.as_bytes());
        }
        for v in &self.vectors {
            hash.update(v.to_le_bytes());
        }
        crate::fingerprint::hex(&hash.finalize()[..6])
    }

    /// Serve these factors over `catalogue`: each catalogue item gets its saved vector, an item
    /// added since training a zero vector (no factor score, never a factor candidate until the
    /// next `rank train`). Also returns how many catalogue items had a saved vector.
    pub fn for_catalogue(&self, catalogue: &Catalogue) -> (Factors, usize) {
        let dim = self.dim;
        let mut items = vec![0f32; catalogue.len() * dim];
        let mut mapped = 0;
        for (row, id) in self.ids.iter().enumerate() {
            if let Some(i) = catalogue.position(id) {
                items[i * dim..(i + 1) * dim]
                    .copy_from_slice(&self.vectors[row * dim..(row + 1) * dim]);
                mapped += 1;
            }
        }
        let factors = Factors::from_items(
            dim,
            items,
            f64::from(self.regularization),
            f64::from(self.alpha),
        );
        (factors, mapped)
    }

    /// Write the file (creating its directory).
    pub fn save(&self, path: &Path) -> Result<(), RankError> {
        let bytes: Vec<u8> = self.vectors.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![self.ids.len(), self.dim],
            &bytes,
        )
        .map_err(|e| RankError::Parse(format!("{}: {e}", path.display())))?;
        let metadata: HashMap<String, String> = [
            ("format", FACTORS_FORMAT.to_string()),
            ("version", self.version.clone()),
            (
                "ids",
                serde_json::to_string(&self.ids).expect("ids serialize"),
            ),
            ("regularization", self.regularization.to_string()),
            ("alpha", self.alpha.to_string()),
            ("training", self.training.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        super::write_file(path, |path| {
            safetensors::serialize_to_file([("items", view)], Some(metadata), path)
                .map_err(std::io::Error::other)
        })
    }

    /// Read a file; refused when its format is another, its contents do not hash to the
    /// version it states, or that version is not `expected` (the blend's record of them).
    pub fn load(path: &Path, expected: Option<&str>) -> Result<Self, RankError> {
        let bytes = std::fs::read(path).map_err(|source| RankError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |what: String| RankError::Parse(format!("{}: {what}", path.display()));
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a factors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("no {k:?} in its metadata")))
        };
        let format = field("format")?;
        if format != FACTORS_FORMAT {
            return Err(bad(format!("format {format:?}, this build reads {FACTORS_FORMAT:?} (retrain with `signaldesk rank train`)")));
        }
        let number = |k: &str| -> Result<f32, RankError> {
            field(k)?.parse().map_err(|e| bad(format!("{k}: {e}")))
        };
        let tensors = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a factors file: {e}")))?;
        let items = tensors
            .tensor("items")
            .map_err(|e| bad(format!("no item factors: {e}")))?;
        let ids: Vec<String> =
            serde_json::from_str(&field("ids")?).map_err(|e| bad(format!("ids: {e}")))?;
        let (shape, dtype) = (items.shape().to_vec(), items.dtype());
        if dtype != safetensors::Dtype::F32 || shape.len() != 2 || shape[0] != ids.len() {
            return Err(bad(format!(
                "item factors are {dtype:?} {shape:?}, expected F32 [{}, dim]",
                ids.len()
            )));
        }
        let saved = Self {
            version: field("version")?,
            dim: shape[1],
            vectors: items
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            ids,
            regularization: number("regularization")?,
            alpha: number("alpha")?,
            training: serde_json::from_str(&field("training")?).unwrap_or_default(),
        };
        if saved.content_hash() != saved.version {
            return Err(bad(format!(
                "contents do not match their version {} (a damaged or edited file)",
                saved.version
            )));
        }
        if let Some(expected) = expected.filter(|e| *e != saved.version) {
            return Err(bad(format!(
                "factors {} are not the blend's ({expected}): retrain with `signaldesk rank train`",
                saved.version
            )));
        }
        Ok(saved)
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

    fn catalogue(ids: &[&str]) -> Catalogue {
        let mut c = Catalogue::default();
        for id in ids {
            let item = crate::rank::catalogue::CatalogueItem {
                id: id.to_string(),
                title: id.to_string(),
                source: None,
                content_type: None,
                published: None,
                embargo_until: None,
                tags: Vec::new(),
                payload: Default::default(),
            };
            c.push(item, vec![1.0, 0.0]).unwrap();
        }
        c
    }

    /// Saved, read back and mapped onto a catalogue whose order changed and which gained an
    /// item, the factors serve every user the vector the trained ones give; the new item has
    /// none; a damaged file or one the blend does not name is refused.
    #[test]
    fn saved_factors_map_by_id_and_refuse_damaged_or_foreign_files() {
        let engaged = vec![vec![0, 1], vec![1, 2], vec![2, 3], vec![0, 3], vec![0, 2]];
        let settings = FactorConfig {
            dim: 3,
            ..FactorConfig::default()
        };
        let trained = Factors::train(&engaged, 4, &settings).unwrap();
        let saved = SavedFactors::of(
            &trained,
            &catalogue(&["a", "b", "c", "d"]),
            &settings,
            serde_json::json!({"users": 5}),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rank/blend.factors.safetensors");
        saved.save(&path).unwrap();
        let read = SavedFactors::load(&path, Some(&saved.version)).unwrap();
        assert_eq!(read, saved);

        // Served over "new, d, c, b, a": position p holds the item trained at 4 - p.
        let (served, mapped) = read.for_catalogue(&catalogue(&["new", "d", "c", "b", "a"]));
        assert_eq!(mapped, 4);
        assert_eq!(served.item(0), &[0.0; 3]);
        for p in 1..5 {
            assert_eq!(served.item(p), trained.item(4 - p));
        }
        for history in &engaged {
            let expected = trained.user_vector(history.iter().copied()).unwrap();
            let got = served.user_vector(history.iter().map(|&i| 4 - i)).unwrap();
            for (a, b) in expected.iter().zip(&got) {
                assert!((a - b).abs() < 1e-5, "{expected:?} vs {got:?}");
            }
        }

        let foreign = SavedFactors::load(&path, Some("000000000000")).unwrap_err();
        assert!(foreign.to_string().contains("not the blend's"), "{foreign}");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let damaged = SavedFactors::load(&path, None).unwrap_err();
        assert!(damaged.to_string().contains("do not match"), "{damaged}");
        let missing = SavedFactors::load(&dir.path().join("none"), None).unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }

    #[test]
    fn training_is_deterministic_for_a_seed() {
        let engaged = vec![vec![0, 1], vec![1, 2], vec![2, 3], vec![0, 3]];
        let a = Factors::train(&engaged, 4, &FactorConfig::default()).unwrap();
        let b = Factors::train(&engaged, 4, &FactorConfig::default()).unwrap();
        assert_eq!(a.items, b.items);
    }
}
