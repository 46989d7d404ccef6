//! Local text embeddings with candle: a sentence-transformers BERT-family model run in process.
//!
//! The contract is parity with sentence-transformers for the same model dir (cosine ≥ 0.9999 per
//! vector, checked by `embed_matches_sentence_transformers_on_the_scifact_fixture` in
//! `tests/cli.rs` and by the pipeline's parity stage), so vectors made here and vectors made by a
//! Python tool can share one collection. Speed comes from running fewer padding tokens, not from cutting
//! corners: texts are sorted by token length and batched so each batch pads to a similar length.

pub mod batcher;
pub mod bm25;
mod cache;
mod cpu_bert;
mod model_dir;
pub mod precision;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub use cache::EmbeddingCache;
/// The int8 linear layers, shared with the local LLM's prompt processing.
pub use cpu_bert::int8;
pub use model_dir::{ModelSpec, Pooling, REQUIRED_FILES};
pub use precision::{CpuFeatures, Precision};

use crate::config::{Config, EmbedPrecision};

/// The command that puts the default models in place; named in every "model missing" error.
pub const FETCH_HINT: &str = "run scripts/fetch-models.sh (or set embed.model / SIGNALDESK_EMBED__MODEL to a sentence-transformers model dir)";

/// Errors from loading or running an embedding model.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("model dir {} does not exist: {FETCH_HINT}", dir.display())]
    ModelDirNotFound { dir: PathBuf },
    #[error("model dir {} is missing {file}: {FETCH_HINT}", dir.display())]
    MissingModelFile { dir: PathBuf, file: String },
    #[error("bad model file {}: {message}", path.display())]
    BadModelFile { path: PathBuf, message: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("device {device:?}: {message}")]
    Device { device: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("embedding cache: {0}")]
    Cache(String),
    #[error("embedding batcher: {0}")]
    Batcher(String),
    #[error("model forward pass: {0}")]
    Candle(#[from] candle_core::Error),
}

/// How an [`Embedder`] runs, beyond what the model dir fixes.
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// Texts per forward pass.
    pub batch_size: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// On-disk cache file; `None` embeds every text every time.
    pub cache_path: Option<PathBuf>,
    /// Force candle-transformers' BERT even on the CPU (the reference implementation).
    pub reference_backend: bool,
    /// Arithmetic of the packed CPU forward pass (candle-transformers' BERT is always fp32).
    /// The default is fp32, as for `embed.precision`.
    pub precision: EmbedPrecision,
    /// CPU features hidden from the `auto` decision (`embed.cpu_features_off`).
    pub cpu_features_off: String,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            device: "cpu".into(),
            cache_path: None,
            reference_backend: false,
            precision: EmbedPrecision::Fp32,
            cpu_features_off: String::new(),
        }
    }
}

impl EmbedderOptions {
    /// Options as the configuration sets them; the cache lives under `cache_dir`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            batch_size: config.embed.batch_size,
            device: config.embed.device.clone(),
            cache_path: config
                .embed
                .cache
                .then(|| config.cache_dir.join("embeddings.redb")),
            reference_backend: config.embed.backend == crate::config::EmbedBackend::Candle,
            precision: config.embed.precision,
            cpu_features_off: config.embed.cpu_features_off.clone(),
        }
    }
}

/// The network that turns token ids into token vectors.
enum Backend {
    /// signaldesk's packed forward pass (see `cpu_bert`): the fast path on CPUs.
    Cpu(cpu_bert::CpuBert),
    /// candle-transformers' BERT: the reference, and the path for GPUs.
    Candle(BertModel),
}

/// A loaded embedding model: tokenizer, BERT weights, pooling and normalisation.
pub struct Embedder {
    spec: ModelSpec,
    backend: Backend,
    /// Truncates at `max_seq_length` and adds `[CLS]`/`[SEP]`: what the model sees.
    tokenizer: Tokenizer,
    /// No truncation: the chunker needs every token's offsets.
    full_tokenizer: Tokenizer,
    special_tokens: usize,
    device: Device,
    batch_size: usize,
    cache: Option<EmbeddingCache>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("spec", &self.spec)
            .finish()
    }
}

impl Embedder {
    /// Load the model the configuration names.
    pub fn from_config(config: &Config) -> Result<Self, EmbedError> {
        Self::load(
            &config.embed_model_dir(),
            EmbedderOptions::from_config(config),
        )
    }

    /// Load a sentence-transformers model dir.
    pub fn load(dir: &Path, options: EmbedderOptions) -> Result<Self, EmbedError> {
        let spec = ModelSpec::read(dir)?;
        let device = parse_device(&options.device)?;
        let config_path = dir.join("config.json");
        let bert_config: BertConfig =
            serde_json::from_str(&std::fs::read_to_string(&config_path).map_err(|e| {
                EmbedError::BadModelFile {
                    path: config_path.clone(),
                    message: e.to_string(),
                }
            })?)
            .map_err(|e| EmbedError::BadModelFile {
                path: config_path.clone(),
                message: format!("not a BERT config: {e}"),
            })?;
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only; signaldesk never writes model files while
        // they are loaded (fetch-models.sh replaces a model dir by rename, not in place).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(|e| EmbedError::BadModelFile {
            path: weights.clone(),
            message: e.to_string(),
        })?;
        let bad_weights = |e: candle_core::Error| EmbedError::BadModelFile {
            path: weights.clone(),
            message: format!("weights do not match config.json: {e}"),
        };
        let backend = if device.is_cpu() && !options.reference_backend {
            let cpu = CpuFeatures::detect().masked(&options.cpu_features_off);
            let precision = precision::resolve(options.precision, &cpu)?;
            Backend::Cpu(cpu_bert::CpuBert::load(vb, &bert_config, precision).map_err(bad_weights)?)
        } else {
            Backend::Candle(BertModel::load(vb, &bert_config).map_err(bad_weights)?)
        };

        let tokenizer_path = dir.join("tokenizer.json");
        let mut full_tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| EmbedError::BadModelFile {
                path: tokenizer_path.clone(),
                message: e.to_string(),
            })?;
        // tokenizer.json often carries its own padding and truncation (128 for all-MiniLM-L6-v2);
        // sentence-transformers ignores both in favour of max_seq_length, and so does this.
        full_tokenizer.with_padding(None);
        full_tokenizer
            .with_truncation(None)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let mut tokenizer = full_tokenizer.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: spec.max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let special_tokens = tokenizer
            .encode("", true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?
            .len();

        let cache = options
            .cache_path
            .as_deref()
            .map(EmbeddingCache::open)
            .transpose()?;
        tracing::debug!(model = %spec.model_id, dim = spec.dimension, max_seq_length = spec.max_seq_length, pooling = ?spec.pooling, "embedding model loaded");
        Ok(Self {
            spec,
            backend,
            tokenizer,
            full_tokenizer,
            special_tokens,
            device,
            batch_size: options.batch_size.max(1),
            cache,
        })
    }

    /// Length of the vectors this model produces.
    pub fn dimension(&self) -> usize {
        self.spec.dimension
    }

    /// Short model name, recorded with every stored vector.
    pub fn model_id(&self) -> &str {
        &self.spec.model_id
    }

    /// Hash of weights and configs: equal fingerprints give equal vectors.
    pub fn fingerprint(&self) -> &str {
        &self.spec.fingerprint
    }

    /// The arithmetic the forward pass runs at (fp32 on candle-transformers' BERT).
    pub fn precision(&self) -> Precision {
        match &self.backend {
            Backend::Cpu(bert) => bert.precision(),
            Backend::Candle(_) => Precision::Fp32,
        }
    }

    /// The int8 kernel on this CPU, when the forward pass runs int8 (for reports).
    pub fn int8_kernel(&self) -> Option<String> {
        (self.precision() == Precision::Int8).then(cpu_bert::int8_kernel_name)
    }

    /// The embedding cache's key prefix: the model fingerprint, plus the precision when it is not
    /// fp32, so a cached vector is always one this embedder would compute.
    fn cache_namespace(&self) -> String {
        match self.precision() {
            Precision::Fp32 => self.spec.fingerprint.clone(),
            p => format!("{}|{}", self.spec.fingerprint, p.name()),
        }
    }

    /// The model dir's settings.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Tokens per text the model sees, special tokens included.
    pub fn max_seq_length(&self) -> usize {
        self.spec.max_seq_length
    }

    /// Tokens the model adds around every text (`[CLS]` and `[SEP]` for BERT).
    pub fn special_tokens(&self) -> usize {
        self.special_tokens
    }

    /// Number of input ids the model runs for each text: after truncation, special tokens
    /// included, padding excluded. This is the token count that throughput figures use.
    pub fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        Ok(self.encode(texts)?.iter().map(|e| e.len()).collect())
    }

    /// Byte spans of each token of `text`, without special tokens or truncation.
    pub fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>, EmbedError> {
        let enc = self
            .full_tokenizer
            .encode(text, false)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(enc.get_offsets().to_vec())
    }

    /// Token count of `text` without truncation, special tokens included.
    pub fn untruncated_token_count(&self, text: &str) -> Result<usize, EmbedError> {
        let enc = self
            .full_tokenizer
            .encode_fast(text, true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(enc.len())
    }

    /// One vector per text, in order; normalised when the model normalises (all-MiniLM-L6-v2
    /// does). Texts longer than `max_seq_length` tokens are truncated, as sentence-transformers
    /// does; split them with [`crate::chunk`] first to embed all of a long text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(self.embed_counting_hits(texts)?.0)
    }

    /// [`Embedder::embed`], and how many texts the cache answered (so reports can tell model
    /// speed from cache speed).
    pub fn embed_counting_hits(
        &self,
        texts: &[&str],
    ) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        let _stage = crate::observe::stage("embed");
        let Some(cache) = &self.cache else {
            return Ok((self.embed_uncached(texts)?, 0));
        };
        let namespace = self.cache_namespace();
        let keys: Vec<[u8; 32]> = texts
            .iter()
            .map(|t| EmbeddingCache::key(&namespace, t))
            .collect();
        let mut found = cache.get_many(&keys)?;
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| found[i].is_none()).collect();
        let hits = texts.len() - missing.len();
        if !missing.is_empty() {
            let todo: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
            let fresh = self.embed_uncached(&todo)?;
            let entries: Vec<([u8; 32], &[f32])> = missing
                .iter()
                .zip(&fresh)
                .map(|(&i, v)| (keys[i], v.as_slice()))
                .collect();
            cache.put_many(&entries)?;
            for (i, v) in missing.into_iter().zip(fresh) {
                found[i] = Some(v);
            }
        }
        tracing::trace!(texts = texts.len(), hits, "embedded with cache");
        Ok((
            found.into_iter().map(|v| v.unwrap_or_default()).collect(),
            hits,
        ))
    }

    /// [`Embedder::embed`] without the cache: always runs the model (benchmarks use this).
    pub fn embed_uncached(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let _span = tracing::debug_span!("embed", texts = texts.len()).entered();
        let encodings = self.encode(texts)?;
        // Longest first, like sentence-transformers: batches of similar length pad little.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for batch in order.chunks(self.batch_size) {
            let vectors = self.forward_batch(batch.iter().map(|&i| &encodings[i]))?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<tokenizers::Encoding>, EmbedError> {
        let bounded = texts
            .iter()
            .map(|t| self.model_prefix(t))
            .collect::<Result<Vec<_>, _>>()?;
        self.tokenizer
            .encode_batch_fast(bounded, true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))
    }

    /// A prefix of `text` whose truncated encoding is the whole text's: what the model reads
    /// and not much more, so a 20 MB record truncated to 256 tokens costs a few kilobytes of
    /// tokenising, not 20 MB (and gigabytes of token offsets). The prefix ends at whitespace,
    /// where BERT's pre-tokenizer splits anyway, so no word is cut; it is grown until it holds
    /// more tokens than the model keeps. Without such whitespace the whole text is used.
    fn model_prefix<'t>(&self, text: &'t str) -> Result<&'t str, EmbedError> {
        let keep = self.spec.max_seq_length;
        let mut bytes = keep.saturating_mul(16).max(1024);
        while bytes < text.len() {
            let mut cut = bytes;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let Some(space) = text[..cut].rfind(char::is_whitespace) else {
                return Ok(text);
            };
            let prefix = &text[..space];
            let tokens = self
                .full_tokenizer
                .encode_fast(prefix, false)
                .map_err(|e| EmbedError::Tokenizer(e.to_string()))?
                .len();
            if tokens >= keep {
                return Ok(prefix);
            }
            bytes = bytes.saturating_mul(4);
        }
        Ok(text)
    }

    fn forward_batch<'a>(
        &self,
        batch: impl ExactSizeIterator<Item = &'a tokenizers::Encoding> + Clone,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        match &self.backend {
            Backend::Cpu(bert) => self.forward_packed(bert, batch),
            Backend::Candle(bert) => self.forward_padded(bert, batch),
        }
    }

    fn forward_packed<'a>(
        &self,
        bert: &cpu_bert::CpuBert,
        batch: impl ExactSizeIterator<Item = &'a tokenizers::Encoding>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let seqs: Vec<cpu_bert::Sequence<'_>> = batch
            .map(|e| cpu_bert::Sequence {
                ids: e.get_ids(),
                type_ids: e.get_type_ids(),
            })
            .collect();
        let (rows, offsets) = bert.forward(&seqs)?;
        let h = bert.hidden_size();
        Ok(offsets
            .windows(2)
            .map(|w| {
                let mut v = pool_rows(&rows[w[0] * h..w[1] * h], h, self.spec.pooling);
                if self.spec.normalize {
                    normalize(&mut v);
                }
                v
            })
            .collect())
    }

    fn forward_padded<'a>(
        &self,
        bert: &BertModel,
        batch: impl ExactSizeIterator<Item = &'a tokenizers::Encoding> + Clone,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let rows = batch.len();
        let width = batch.clone().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; rows * width];
        let mut types = vec![0u32; rows * width];
        let mut mask = vec![0f32; rows * width];
        for (r, enc) in batch.enumerate() {
            let n = enc.len();
            ids[r * width..r * width + n].copy_from_slice(enc.get_ids());
            types[r * width..r * width + n].copy_from_slice(enc.get_type_ids());
            mask[r * width..r * width + n].fill(1.0);
        }
        let ids = Tensor::from_vec(ids, (rows, width), &self.device)?;
        let types = Tensor::from_vec(types, (rows, width), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, width), &self.device)?;
        let hidden = bert.forward(&ids, &types, Some(&mask))?;
        let pooled = pool(&hidden, &mask, self.spec.pooling)?;
        let mut out = pooled.to_vec2::<f32>()?;
        if self.spec.normalize {
            out.iter_mut().for_each(|v| normalize(v));
        }
        Ok(out)
    }
}

/// Scale to unit length like torch.nn.functional.normalize: x / max(||x||, 1e-12).
fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    v.iter_mut()
        .for_each(|x| *x = (f64::from(*x) / norm) as f32);
}

/// Packed token rows `[n, dim]` of one text to its vector.
fn pool_rows(rows: &[f32], dim: usize, pooling: Pooling) -> Vec<f32> {
    let n = rows.len() / dim;
    match pooling {
        Pooling::Cls => rows[..dim].to_vec(),
        Pooling::Max => {
            let mut out = vec![f32::NEG_INFINITY; dim];
            for row in rows.chunks_exact(dim) {
                out.iter_mut().zip(row).for_each(|(o, v)| *o = o.max(*v));
            }
            out
        }
        Pooling::Mean | Pooling::MeanSqrtLen => {
            let mut sum = vec![0f64; dim];
            for row in rows.chunks_exact(dim) {
                sum.iter_mut()
                    .zip(row)
                    .for_each(|(s, v)| *s += f64::from(*v));
            }
            let div = if pooling == Pooling::Mean {
                n.max(1) as f64
            } else {
                (n.max(1) as f64).sqrt()
            };
            sum.into_iter().map(|s| (s / div) as f32).collect()
        }
    }
}

/// Token vectors `[rows, width, dim]` to text vectors `[rows, dim]`, ignoring padding.
fn pool(hidden: &Tensor, mask: &Tensor, pooling: Pooling) -> candle_core::Result<Tensor> {
    let mask3 = mask.unsqueeze(2)?;
    match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1),
        Pooling::Mean | Pooling::MeanSqrtLen => {
            let sum = hidden.broadcast_mul(&mask3)?.sum(1)?;
            let count = mask.sum_keepdim(1)?.clamp(1e-9, f64::MAX)?;
            let count = if pooling == Pooling::MeanSqrtLen {
                count.sqrt()?
            } else {
                count
            };
            sum.broadcast_div(&count)
        }
        Pooling::Max => {
            // Padding positions get -1e9 so they never win (sentence-transformers does the same).
            let penalty = ((mask3 - 1.0)? * 1e9)?;
            hidden.broadcast_add(&penalty)?.max(1)
        }
    }
}

fn parse_device(spec: &str) -> Result<Device, EmbedError> {
    let err = |message: String| EmbedError::Device {
        device: spec.to_string(),
        message,
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = s
                .strip_prefix("cuda:")
                .map(|n| {
                    n.parse::<usize>()
                        .map_err(|_| err("bad CUDA ordinal".into()))
                })
                .transpose()?
                .unwrap_or(0);
            Device::new_cuda(ordinal).map_err(|e| {
                err(format!(
                    "{e} (CUDA needs a build with `--features cuda` and a GPU)"
                ))
            })
        }
        _ => Err(err("expected cpu, cuda or cuda:N".into())),
    }
}

/// Cosine similarity of two vectors (0 when either is all zeros).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += f64::from(*x) * f64::from(*y);
        na += f64::from(*x) * f64::from(*x);
        nb += f64::from(*y) * f64::from(*y);
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

/// Embedding models loaded once per configuration for the life of a holder: a run of several
/// eval suites loads the model once, and the embedding cache (one redb file) can only be open
/// once per process anyway.
#[derive(Default)]
pub struct LoadedEmbedders {
    loaded: std::sync::Mutex<Vec<(String, std::sync::Arc<Embedder>)>>,
}

impl LoadedEmbedders {
    /// The embedder for `config`'s models, cache and `embed.*`, loaded on first use.
    pub fn get(&self, config: &Config) -> Result<std::sync::Arc<Embedder>, EmbedError> {
        let key =
            serde_json::json!([config.models_dir, config.cache_dir, config.embed]).to_string();
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, e)) = loaded.iter().find(|(k, _)| *k == key) {
            return Ok(e.clone());
        }
        let embedder = std::sync::Arc::new(Embedder::from_config(config)?);
        loaded.push((key, embedder.clone()));
        Ok(embedder)
    }
}

/// The chunker splits texts by this model's tokens.
impl crate::chunk::TokenSpans for Embedder {
    fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>, crate::chunk::ChunkError> {
        Embedder::token_spans(self, text)
            .map_err(|e| crate::chunk::ChunkError::Tokenizer(e.to_string()))
    }
    fn count_tokens(&self, text: &str) -> Result<usize, crate::chunk::ChunkError> {
        self.untruncated_token_count(text)
            .map_err(|e| crate::chunk::ChunkError::Tokenizer(e.to_string()))
    }
}
