//! The learned blend: logistic regression over standardised candidate features, trained with
//! candle's autograd and AdamW (already the embedder's and tagging head's dependency), saved as a
//! versioned JSON file that `recommend` and exposures name.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::factors::SavedFactors;
use super::RankError;

/// The file format's version; a file of another version is refused.
pub const FORMAT: &str = "signaldesk-blend/1";

/// A trained blend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlendModel {
    pub format: String,
    /// Content hash of the weights: what exposures and reports name.
    pub version: String,
    /// Feature names, in weight order.
    pub features: Vec<String>,
    /// Standardisation: (x - mean) / scale per feature.
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// How it was trained (split, examples, positives, settings).
    #[serde(default)]
    pub training: Value,
    /// The collaborative factors `rank train` trained with this blend, saved beside it; serving
    /// reads them rather than training its own (none: a blend from before, or factors off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factors: Option<FactorsRef>,
}

/// Where a blend's factors are and which they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactorsRef {
    /// File name, in the blend file's directory.
    pub file: String,
    /// The factors' content hash ([`SavedFactors::version`]).
    pub version: String,
    pub dim: usize,
    /// Items with a vector.
    pub items: usize,
}

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainSettings {
    pub epochs: usize,
    pub learning_rate: f64,
    /// L2 penalty on the standardised weights.
    pub l2: f64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            epochs: 300,
            learning_rate: 0.05,
            l2: 1e-4,
        }
    }
}

impl BlendModel {
    /// Fit on `(features, clicked)` examples whose columns are `features`.
    pub fn train(
        features: &[String],
        examples: &[(Vec<f32>, bool)],
        settings: TrainSettings,
        training: Value,
    ) -> Result<Self, RankError> {
        let d = features.len();
        let n = examples.len();
        if n == 0 || !examples.iter().any(|e| e.1) || examples.iter().all(|e| e.1) {
            return Err(RankError::Training(
                "the training split gave no positive or no negative candidates".into(),
            ));
        }
        let mut mean = vec![0f64; d];
        let mut sq = vec![0f64; d];
        for (x, _) in examples {
            for j in 0..d {
                mean[j] += f64::from(x[j]);
                sq[j] += f64::from(x[j]).powi(2);
            }
        }
        let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
        let scale: Vec<f32> = (0..d)
            .map(|j| {
                let var = sq[j] / n as f64 - f64::from(mean[j]).powi(2);
                (var.max(0.0).sqrt() as f32).max(1e-6)
            })
            .collect();
        let mut flat = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for (x, clicked) in examples {
            flat.extend((0..d).map(|j| (x[j] - mean[j]) / scale[j]));
            y.push(f32::from(u8::from(*clicked)));
        }
        let device = Device::Cpu;
        let x = Tensor::from_vec(flat, (n, d), &device)?;
        let y = Tensor::from_vec(y, (n, 1), &device)?;
        let fit = crate::enrich::head::LogisticFit {
            learning_rate: settings.learning_rate,
            epochs: settings.epochs,
            l2: settings.l2,
            minibatch: None,
        };
        let (w, b) = crate::enrich::head::fit_logistic(&x, &y, &fit)?;
        let weights: Vec<f32> = w.flatten_all()?.to_vec1()?;
        let bias = b.to_vec1::<f32>()?[0];
        let mut hash = Sha256::new();
        for v in weights.iter().chain(&mean).chain(&scale).chain([&bias]) {
            hash.update(v.to_le_bytes());
        }
        for f in features {
            hash.update(f.as_bytes());
        }
        let version = crate::fingerprint::hex(&hash.finalize()[..6]);
        Ok(Self {
            format: FORMAT.into(),
            version,
            features: features.to_vec(),
            mean,
            scale,
            weights,
            bias,
            training,
            factors: None,
        })
    }

    /// This blend with its factors, to be saved as `file` beside the blend file; the blend's
    /// version then covers both (a blend and the factors it was trained with are served
    /// together or not at all).
    pub fn with_factors(mut self, file: String, factors: &SavedFactors) -> Self {
        let mut hash = Sha256::new();
        hash.update(self.version.as_bytes());
        hash.update(factors.version.as_bytes());
        self.version = crate::fingerprint::hex(&hash.finalize()[..6]);
        self.factors = Some(FactorsRef {
            file,
            version: factors.version.clone(),
            dim: factors.dim,
            items: factors.ids.len(),
        });
        self
    }

    /// The factors this blend names, read from beside `model_path` (none when it names none).
    pub fn load_factors(&self, model_path: &Path) -> Result<Option<SavedFactors>, RankError> {
        self.factors
            .as_ref()
            .map(|f| SavedFactors::load(&model_path.with_file_name(&f.file), Some(&f.version)))
            .transpose()
    }

    /// Each feature's share of the logit (weight × standardised value).
    pub fn contributions(&self, x: &[f32]) -> Vec<f32> {
        (0..self.weights.len())
            .map(|j| self.weights[j] * (x[j] - self.mean[j]) / self.scale[j])
            .collect()
    }

    /// A candidate's score for features `x` (in [`Self::features`] order): the logit, bias plus
    /// [`Self::contributions`]. Trained pairwise, it orders one user's candidates; it is not a
    /// calibrated click probability (and a logit keeps re-ranking's score scale linear).
    pub fn score(&self, x: &[f32]) -> f32 {
        self.bias + self.contributions(x).iter().sum::<f32>()
    }

    /// Read a model file.
    pub fn load(path: &Path) -> Result<Self, RankError> {
        let text = std::fs::read_to_string(path).map_err(|source| RankError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let model: Self = serde_json::from_str(&text)
            .map_err(|e| RankError::Parse(format!("{}: {e}", path.display())))?;
        if model.format != FORMAT {
            return Err(RankError::Parse(format!(
                "{}: format {:?}, this build reads {FORMAT:?} (retrain with `signaldesk rank train`)",
                path.display(),
                model.format
            )));
        }
        let d = model.features.len();
        if [model.mean.len(), model.scale.len(), model.weights.len()] != [d, d, d] {
            return Err(RankError::Parse(format!(
                "{}: weights do not match its {d} features",
                path.display()
            )));
        }
        Ok(model)
    }

    /// Write the model file (creating its directory).
    pub fn save(&self, path: &Path) -> Result<(), RankError> {
        let text = serde_json::to_string_pretty(self).expect("a model serializes") + "\n";
        super::write_file(path, |path| std::fs::write(path, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clicks that follow feature 0 and ignore feature 1: the blend weighs 0 far above 1 and
    /// ranks by it; a saved model reads back identical.
    #[test]
    fn the_blend_learns_which_feature_predicts_clicks() {
        let examples: Vec<(Vec<f32>, bool)> = (0..400)
            .map(|i| {
                let a = (i % 20) as f32 / 20.0;
                let b = ((i * 7) % 13) as f32;
                (vec![a, b], a > 0.6 || (a > 0.4 && i % 3 == 0))
            })
            .collect();
        let names = vec!["a".to_string(), "b".to_string()];
        let model =
            BlendModel::train(&names, &examples, TrainSettings::default(), Value::Null).unwrap();
        assert!(
            model.weights[0] > 1.0 && model.weights[1].abs() < 0.3 * model.weights[0],
            "{model:?}"
        );
        assert!(model.score(&[0.9, 5.0]) > model.score(&[0.1, 5.0]));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        model.save(&path).unwrap();
        assert_eq!(BlendModel::load(&path).unwrap(), model);
    }
}
