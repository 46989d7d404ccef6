//! Reading a sentence-transformers model directory.
//!
//! A sentence-transformers model is more than BERT weights: `sentence_bert_config.json` sets the
//! truncation length, `1_Pooling/config.json` how token vectors become one vector, and
//! `modules.json` whether the result is L2-normalised. Getting any of these wrong gives vectors that
//! look fine and retrieve worse, so every one is read from the directory, never assumed.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::EmbedError;

/// Files without which a directory is not a usable model.
pub const REQUIRED_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// How token vectors are reduced to one text vector (sentence-transformers' `Pooling` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the non-padding token vectors.
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
    /// Per-dimension maximum over non-padding tokens.
    Max,
    /// Sum of token vectors divided by sqrt(token count).
    MeanSqrtLen,
}

/// Everything about a model dir that changes the vectors it produces.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub dir: PathBuf,
    /// Short name: the directory's name (e.g. `all-MiniLM-L6-v2`).
    pub model_id: String,
    /// Tokens per text, special tokens included; longer texts are truncated.
    pub max_seq_length: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    pub dimension: usize,
    /// sha256 over the weights and every config file: two dirs with the same fingerprint give the
    /// same vectors, so it keys the embedding cache and is recorded with stored vectors.
    pub fingerprint: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct PoolingConfig {
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct HfConfigHead {
    hidden_size: usize,
    max_position_embeddings: usize,
}

impl ModelSpec {
    /// Check that `dir` is a complete model and read its settings.
    pub fn read(dir: &Path) -> Result<Self, EmbedError> {
        if !dir.is_dir() {
            return Err(EmbedError::ModelDirNotFound {
                dir: dir.to_path_buf(),
            });
        }
        for file in REQUIRED_FILES {
            if !dir.join(file).is_file() {
                return Err(EmbedError::MissingModelFile {
                    dir: dir.to_path_buf(),
                    file: (*file).to_string(),
                });
            }
        }
        let hf: HfConfigHead = read_json(&dir.join("config.json"))?;
        let st: SentenceBertConfig = read_json(&dir.join("sentence_bert_config.json"))?;
        let pool: PoolingConfig = read_json(&dir.join("1_Pooling/config.json"))?;
        let pooling = match (
            pool.pooling_mode_mean_tokens,
            pool.pooling_mode_cls_token,
            pool.pooling_mode_max_tokens,
            pool.pooling_mode_mean_sqrt_len_tokens,
        ) {
            _ if pool.pooling_mode_weightedmean_tokens || pool.pooling_mode_lasttoken => {
                return Err(EmbedError::Unsupported(format!(
                    "{}: weighted-mean and last-token pooling are not supported",
                    dir.join("1_Pooling/config.json").display()
                )))
            }
            (true, false, false, false) => Pooling::Mean,
            (false, true, false, false) => Pooling::Cls,
            (false, false, true, false) => Pooling::Max,
            (false, false, false, true) => Pooling::MeanSqrtLen,
            _ => {
                return Err(EmbedError::Unsupported(format!(
                "{}: exactly one pooling mode must be set (concatenated modes are not supported)",
                dir.join("1_Pooling/config.json").display()
            )))
            }
        };
        if let Some(d) = pool.word_embedding_dimension {
            if d != hf.hidden_size {
                return Err(EmbedError::BadModelFile {
                    path: dir.join("1_Pooling/config.json"),
                    message: format!(
                        "word_embedding_dimension {d} differs from config.json hidden_size {}",
                        hf.hidden_size
                    ),
                });
            }
        }
        // Without modules.json a model is taken to normalise: every store here uses cosine.
        let modules_path = dir.join("modules.json");
        let normalize = if modules_path.is_file() {
            let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
            modules.iter().any(|m| m.kind.ends_with(".Normalize"))
        } else {
            true
        };
        let max_seq_length = st
            .max_seq_length
            .unwrap_or(hf.max_position_embeddings)
            .min(hf.max_position_embeddings);
        let model_id = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let fingerprint = fingerprint(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            model_id,
            max_seq_length,
            pooling,
            normalize,
            dimension: hf.hidden_size,
            fingerprint,
        })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|e| EmbedError::BadModelFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| EmbedError::BadModelFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// sha256 of every file that shapes the vectors, in a fixed order, each prefixed by its name.
fn fingerprint(dir: &Path) -> Result<String, EmbedError> {
    let mut hasher = Sha256::new();
    let mut files: Vec<&str> = REQUIRED_FILES.to_vec();
    if dir.join("modules.json").is_file() {
        files.push("modules.json");
    }
    let mut buf = vec![0u8; 1 << 20];
    for name in files {
        let path = dir.join(name);
        let mut f = std::fs::File::open(&path).map_err(|e| EmbedError::BadModelFile {
            path: path.clone(),
            message: e.to_string(),
        })?;
        hasher.update(name.as_bytes());
        hasher.update([0u8]);
        loop {
            let n = f.read(&mut buf).map_err(|e| EmbedError::BadModelFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(crate::fingerprint::hex(&hasher.finalize()))
}
