//! The local verifier: decides, offline and without an LLM, whether an item supports or
//! contradicts a claim, and which of its sentences are the rationale.
//!
//! Two logistic models over the embedder's vectors, trained in-process like the tagging head
//! (on [`fit_logistic`]): a **rationale** model scores each (claim, sentence) pair from the
//! element-wise product of their vectors, their cosine, the claim's words the sentence shares,
//! and negation and direction cues ("increased" against "reduced"); a **stance** model scores
//! the item from its best rationale sentences, one output for SUPPORT and one for CONTRADICT.
//! Trained on labelled claims in SciFact's format (the bundled tuning claims by default): the
//! gold evidence documents with their rationale sentences, and the documents cited by claims
//! nothing decides as near misses. Training takes about a minute at first use and is cached
//! under `cache_dir/verifier/`, keyed by the data, the model and [`VERIFIER_VERSION`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::claims::{read_claims, read_corpus, ClaimsError, LabelledClaim};
use super::sentences::sentence_spans;
use super::Verdict;
use crate::embed::{EmbedError, Embedder};
use crate::enrich::head::{fit_logistic, LogisticFit};

/// The features' and models' version: part of the cache key and of every verdict's lineage.
pub const VERIFIER_VERSION: u32 = 2;

/// Why the verifier could not be trained or loaded.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("training the verifier: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("the verifier's training claims {0} hold no evidence to learn from")]
    NoExamples(PathBuf),
    #[error("the verifier cache {}: {message}", path.display())]
    Cache { path: PathBuf, message: String },
}

/// Words that negate a statement.
const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "none",
    "nor",
    "cannot",
    "without",
    "neither",
    "lack",
    "lacks",
    "lacking",
    "absence",
    "absent",
    "unable",
    "fail",
    "fails",
    "failed",
    "unaffected",
    "independent",
    "irrespective",
];
/// Words of upward and downward change.
const UP: &[&str] = &[
    "increase",
    "increases",
    "increased",
    "increasing",
    "higher",
    "high",
    "more",
    "greater",
    "elevated",
    "enhance",
    "enhances",
    "enhanced",
    "promote",
    "promotes",
    "promoted",
    "raise",
    "raises",
    "raised",
    "improve",
    "improves",
    "improved",
    "upregulated",
    "upregulates",
    "induces",
    "induced",
    "activates",
    "activated",
    "rise",
    "rises",
    "gain",
    "positive",
];
const DOWN: &[&str] = &[
    "decrease",
    "decreases",
    "decreased",
    "decreasing",
    "lower",
    "low",
    "less",
    "fewer",
    "reduced",
    "reduce",
    "reduces",
    "reduction",
    "inhibit",
    "inhibits",
    "inhibited",
    "suppress",
    "suppresses",
    "suppressed",
    "impair",
    "impairs",
    "impaired",
    "downregulated",
    "downregulates",
    "decline",
    "declines",
    "prevents",
    "prevented",
    "blocks",
    "blocked",
    "worse",
    "loss",
    "negative",
];
/// Words too common to count as shared content.
const STOPWORDS: &[&str] = &[
    "the", "and", "for", "with", "that", "this", "are", "was", "were", "from", "has", "have",
    "had", "been", "its", "their", "which", "into", "than", "can", "may", "not", "but", "all",
    "also", "these", "those", "such", "there", "between", "during", "other", "our", "who",
];

/// The lower-case words of a text.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '-')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// What the features read of one text, computed once.
#[derive(Debug, Clone)]
pub struct TextCues {
    content: HashSet<String>,
    negated: bool,
    up: bool,
    down: bool,
}

impl TextCues {
    /// The cues of `text`.
    pub fn of(text: &str) -> Self {
        let ws = words(text);
        let has = |list: &[&str]| ws.iter().any(|w| list.contains(&w.as_str()));
        Self {
            negated: has(NEGATIONS) || text.contains("n't"),
            up: has(UP),
            down: has(DOWN),
            content: ws
                .into_iter()
                .filter(|w| w.len() > 2 && !STOPWORDS.contains(&w.as_str()))
                .collect(),
        }
    }
}

/// The pair features beyond the vectors' product: cosine, shared content, negation, direction.
const PAIR_EXTRAS: usize = 6;

/// Features of a (claim, sentence) pair.
fn pair_features(
    claim: &[f32],
    claim_cues: &TextCues,
    sentence: &[f32],
    cues: &TextCues,
) -> Vec<f32> {
    let mut f = Vec::with_capacity(claim.len() + PAIR_EXTRAS);
    f.extend(claim.iter().zip(sentence).map(|(a, b)| a * b));
    let cosine = f.iter().sum::<f32>();
    let shared = if claim_cues.content.is_empty() {
        0.0
    } else {
        claim_cues.content.intersection(&cues.content).count() as f32
            / claim_cues.content.len() as f32
    };
    let flip =
        (claim_cues.up && cues.down && !cues.up) || (claim_cues.down && cues.up && !cues.down);
    f.extend([
        cosine,
        shared,
        f32::from(u8::from(claim_cues.negated)),
        f32::from(u8::from(cues.negated)),
        f32::from(u8::from(claim_cues.negated != cues.negated)),
        f32::from(u8::from(flip)),
    ]);
    f
}

/// A logistic model over standardized features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Logistic {
    mean: Vec<f32>,
    scale: Vec<f32>,
    /// `[outputs][dim]`, row-major.
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl Logistic {
    fn fit(rows: &[Vec<f32>], targets: &[Vec<f32>]) -> Result<Self, VerifierError> {
        let (n, dim, outputs) = (rows.len(), rows[0].len(), targets[0].len());
        let mut mean = vec![0f32; dim];
        for r in rows {
            mean.iter_mut().zip(r).for_each(|(m, x)| *m += x / n as f32);
        }
        let mut scale = vec![0f32; dim];
        for r in rows {
            scale
                .iter_mut()
                .zip(r.iter().zip(&mean))
                .for_each(|(s, (x, m))| *s += (x - m) * (x - m) / n as f32);
        }
        scale.iter_mut().for_each(|s| *s = 1.0 / s.sqrt().max(1e-6));
        let x: Vec<f32> = rows
            .iter()
            .flat_map(|r| standardize(r, &mean, &scale))
            .collect();
        let y: Vec<f32> = targets.iter().flatten().copied().collect();
        let device = Device::Cpu;
        let x = Tensor::from_vec(x, (n, dim), &device)?;
        let y = Tensor::from_vec(y, (n, outputs), &device)?;
        let (w, b) = fit_logistic(
            &x,
            &y,
            &LogisticFit {
                learning_rate: 0.01,
                epochs: 100,
                l2: 1e-4,
                minibatch: Some((256, 0)),
            },
        )?;
        Ok(Self {
            mean,
            scale,
            weights: w.t()?.contiguous()?.flatten_all()?.to_vec1()?,
            bias: b.to_vec1()?,
        })
    }

    fn probabilities(&self, features: &[f32]) -> Vec<f32> {
        let x: Vec<f32> = standardize(features, &self.mean, &self.scale).collect();
        let dim = x.len();
        self.bias
            .iter()
            .enumerate()
            .map(|(o, b)| {
                let w = &self.weights[o * dim..(o + 1) * dim];
                let z = b + w.iter().zip(&x).map(|(w, x)| w * x).sum::<f32>();
                1.0 / (1.0 + (-z).exp())
            })
            .collect()
    }
}

fn standardize<'a>(
    r: &'a [f32],
    mean: &'a [f32],
    scale: &'a [f32],
) -> impl Iterator<Item = f32> + 'a {
    r.iter()
        .zip(mean.iter().zip(scale))
        .map(|(x, (m, s))| (x - m) * s)
}

/// One sentence of an item as the verifier reads it.
pub struct SentenceInput<'a> {
    pub text: &'a str,
    pub vector: &'a [f32],
}

/// The verifier's reading of one item against a claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Probability the item supports the claim.
    pub support: f32,
    /// Probability it contradicts the claim.
    pub contradict: f32,
    /// Each sentence's rationale score, in the item's order.
    pub sentence_scores: Vec<f32>,
}

impl Judgement {
    /// The verdict at `threshold`: the likelier of SUPPORT and CONTRADICT when it reaches it.
    pub fn verdict(&self, threshold: f32) -> Verdict {
        let (label, p) = if self.support >= self.contradict {
            (Verdict::Support, self.support)
        } else {
            (Verdict::Contradict, self.contradict)
        };
        if p >= threshold {
            label
        } else {
            Verdict::NotEnoughInfo
        }
    }

    /// The strength of the item's verdict, whichever it is.
    pub fn strength(&self) -> f32 {
        self.support.max(self.contradict)
    }

    /// The indices of the `n` best rationale sentences, best first.
    pub fn rationale(&self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.sentence_scores.len()).collect();
        order.sort_by(|&a, &b| self.sentence_scores[b].total_cmp(&self.sentence_scores[a]));
        order.truncate(n);
        order
    }
}

/// The trained verifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verifier {
    /// `v{VERIFIER_VERSION}-{first 12 hex digits of the training key}`: lineage names it.
    pub version: String,
    /// Claims and items it was trained on.
    pub trained_on: (usize, usize),
    rationale: Logistic,
    stance: Logistic,
}

/// The stance features of an item, few so that ~700 training items generalize: the cues of its
/// two best rationale sentences (cosine, shared words, negation, direction), the rationale scores
/// of its best three, and its best cosine with the claim. The vectors' product dims stay in the
/// rationale model, which has ten times the examples.
fn stance_features(pairs: &[Vec<f32>], scores: &[f32]) -> Vec<f32> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let cues = |rank: usize| -> Vec<f32> {
        order.get(rank).map_or_else(
            || vec![0.0; PAIR_EXTRAS],
            |&i| pairs[i][pairs[i].len() - PAIR_EXTRAS..].to_vec(),
        )
    };
    let mut f = cues(0);
    f.extend(cues(1));
    for k in 0..3 {
        f.push(order.get(k).map_or(0.0, |&i| scores[i]));
    }
    let best_cosine = pairs
        .iter()
        .map(|p| p[p.len() - PAIR_EXTRAS])
        .fold(0.0f32, f32::max);
    f.push(best_cosine);
    f
}

impl Verifier {
    /// Judge one item's sentences against a claim.
    pub fn judge(
        &self,
        claim: &str,
        claim_vector: &[f32],
        sentences: &[SentenceInput],
    ) -> Judgement {
        let claim_cues = TextCues::of(claim);
        let pairs: Vec<Vec<f32>> = sentences
            .iter()
            .map(|s| pair_features(claim_vector, &claim_cues, s.vector, &TextCues::of(s.text)))
            .collect();
        let scores: Vec<f32> = pairs
            .iter()
            .map(|p| self.rationale.probabilities(p)[0])
            .collect();
        if sentences.is_empty() {
            return Judgement {
                support: 0.0,
                contradict: 0.0,
                sentence_scores: scores,
            };
        }
        let stance = self.stance.probabilities(&stance_features(&pairs, &scores));
        Judgement {
            support: stance[0],
            contradict: stance[1],
            sentence_scores: scores,
        }
    }

    /// The verifier trained on `claims` (SciFact JSONL) over `corpus`, from the cache under
    /// `cache_dir` when one was trained on the same data with the same model and version.
    /// `on_status` hears what happens (trained or loaded, and how long it took).
    pub fn load_or_train(
        embedder: &Embedder,
        claims: &Path,
        corpus: &Path,
        cache_dir: &Path,
        mut on_status: impl FnMut(&str),
    ) -> Result<Self, VerifierError> {
        let key = training_key(embedder, claims, corpus)?;
        let path = cache_dir
            .join("verifier")
            .join(format!("verifier-v{VERIFIER_VERSION}-{}.json", &key[..12]));
        let cache_error = |message: String| VerifierError::Cache {
            path: path.clone(),
            message,
        };
        if let Ok(bytes) = std::fs::read(&path) {
            let verifier: Self =
                serde_json::from_slice(&bytes).map_err(|e| cache_error(e.to_string()))?;
            on_status(&format!(
                "verifier {} loaded from {}",
                verifier.version,
                path.display()
            ));
            return Ok(verifier);
        }
        let started = std::time::Instant::now();
        on_status(&format!(
            "training the verifier on {} (first use; cached after)",
            claims.display()
        ));
        let mut verifier = Self::train(embedder, &read_claims(claims)?, corpus, claims)?;
        verifier.version = format!("v{VERIFIER_VERSION}-{}", &key[..12]);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| cache_error(e.to_string()))?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(&verifier).expect("a verifier serializes"),
        )
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| cache_error(e.to_string()))?;
        on_status(&format!(
            "verifier {} trained on {} claims, {} items in {:.1} s",
            verifier.version,
            verifier.trained_on.0,
            verifier.trained_on.1,
            started.elapsed().as_secs_f64()
        ));
        Ok(verifier)
    }

    /// Train on `claims`: each claim against its evidence documents and the ones it cites.
    pub fn train(
        embedder: &Embedder,
        claims: &[LabelledClaim],
        corpus: &Path,
        source: &Path,
    ) -> Result<Self, VerifierError> {
        let wanted: HashSet<String> = claims
            .iter()
            .flat_map(|c| c.evidence.keys().cloned().chain(c.cited.iter().cloned()))
            .collect();
        let docs = read_corpus(corpus, Some(&wanted))?;
        // Every distinct text embedded once (the embedding cache keeps them for next time).
        let mut texts: Vec<&str> = claims.iter().map(|c| c.claim.as_str()).collect();
        let mut doc_sentences = std::collections::HashMap::new();
        for (id, doc) in &docs {
            let spans = sentence_spans(&doc.text);
            let sentences: Vec<&str> = spans.iter().map(|&(a, b)| &doc.text[a..b]).collect();
            texts.extend(sentences.iter().copied());
            doc_sentences.insert(id.as_str(), sentences);
        }
        let vectors = embedder.embed(&texts)?;
        let vector_of: std::collections::HashMap<&str, &[f32]> = texts
            .iter()
            .copied()
            .zip(vectors.iter().map(Vec::as_slice))
            .collect();
        let (mut pair_rows, mut pair_targets) = (Vec::new(), Vec::new());
        let mut items = Vec::new();
        for claim in claims {
            let cues = TextCues::of(&claim.claim);
            let claim_vector = vector_of[claim.claim.as_str()];
            let mut seen = HashSet::new();
            for doc in claim.evidence.keys().chain(&claim.cited) {
                let Some(sentences) = doc_sentences.get(doc.as_str()) else {
                    continue;
                };
                if !seen.insert(doc.as_str()) {
                    continue;
                }
                let gold: HashSet<usize> = claim
                    .evidence
                    .get(doc)
                    .into_iter()
                    .flatten()
                    .flat_map(|s| s.sentences.iter().copied())
                    .collect();
                let pairs: Vec<Vec<f32>> = sentences
                    .iter()
                    .map(|s| pair_features(claim_vector, &cues, vector_of[s], &TextCues::of(s)))
                    .collect();
                for (i, p) in pairs.iter().enumerate() {
                    pair_rows.push(p.clone());
                    pair_targets.push(vec![f32::from(u8::from(gold.contains(&i)))]);
                }
                items.push((pairs, claim.verdict_on(doc)));
            }
        }
        if pair_rows.is_empty() || !pair_targets.iter().any(|t| t[0] > 0.0) {
            return Err(VerifierError::NoExamples(source.to_path_buf()));
        }
        let rationale = Logistic::fit(&pair_rows, &pair_targets)?;
        let (mut stance_rows, mut stance_targets) = (Vec::new(), Vec::new());
        for (pairs, verdict) in &items {
            if pairs.is_empty() {
                continue;
            }
            let scores: Vec<f32> = pairs
                .iter()
                .map(|p| rationale.probabilities(p)[0])
                .collect();
            stance_rows.push(stance_features(pairs, &scores));
            stance_targets.push(vec![
                f32::from(u8::from(*verdict == Verdict::Support)),
                f32::from(u8::from(*verdict == Verdict::Contradict)),
            ]);
        }
        let stance = Logistic::fit(&stance_rows, &stance_targets)?;
        Ok(Self {
            version: format!("v{VERIFIER_VERSION}"),
            trained_on: (claims.len(), items.len()),
            rationale,
            stance,
        })
    }
}

/// The cache key: the training files' bytes, the embedding model and the verifier's version.
fn training_key(
    embedder: &Embedder,
    claims: &Path,
    corpus: &Path,
) -> Result<String, VerifierError> {
    let mut h = Sha256::new();
    for path in [claims, corpus] {
        let bytes = std::fs::read(path).map_err(|source| {
            VerifierError::Claims(ClaimsError::Read {
                path: path.to_path_buf(),
                source,
            })
        })?;
        h.update(Sha256::digest(&bytes));
    }
    h.update(embedder.fingerprint().as_bytes());
    h.update(VERIFIER_VERSION.to_le_bytes());
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cues_see_negation_and_direction_and_flips_are_features() {
        let claim = TextCues::of("Vitamin D increases bone density.");
        let against = TextCues::of("Supplementation reduced bone density in women.");
        let along = TextCues::of("Bone density rose and was higher.");
        assert!(claim.up && !claim.negated);
        assert!(against.down);
        let v = [1.0f32, 0.0];
        let f = pair_features(&v, &claim, &v, &against);
        assert_eq!(f.len(), 2 + PAIR_EXTRAS);
        assert_eq!(f[2], 1.0, "cosine");
        assert_eq!(f[7], 1.0, "direction flip");
        assert_eq!(pair_features(&v, &claim, &v, &along)[7], 0.0);
        assert!(TextCues::of("It did not work").negated && TextCues::of("It didn't").negated);
    }

    #[test]
    fn a_judgement_abstains_below_the_threshold_and_ranks_rationale() {
        let j = Judgement {
            support: 0.3,
            contradict: 0.6,
            sentence_scores: vec![0.1, 0.9, 0.5],
        };
        assert_eq!(j.verdict(0.5), Verdict::Contradict);
        assert_eq!(j.verdict(0.7), Verdict::NotEnoughInfo);
        assert_eq!(j.rationale(2), [1, 2]);
    }

    #[test]
    fn a_logistic_model_learns_a_separable_rule() {
        let rows: Vec<Vec<f32>> = (0..200).map(|i| vec![(i % 10) as f32, 1.0]).collect();
        let targets: Vec<Vec<f32>> = rows
            .iter()
            .map(|r| vec![f32::from(u8::from(r[0] >= 5.0))])
            .collect();
        let m = Logistic::fit(&rows, &targets).unwrap();
        assert!(m.probabilities(&[9.0, 1.0])[0] > 0.8);
        assert!(m.probabilities(&[0.0, 1.0])[0] < 0.2);
    }
}
