//! The local provider: a GGUF Llama model in process (SmolLM2-135M-Instruct Q4_1 by default).
//!
//! Greedy decoding is deterministic, so answers are reproducible and cacheable. For schema
//! requests each step keeps only the tokens llguidance allows ([`constrain`]), so the answer
//! always parses and always satisfies the schema. The KV cache keeps the longest prompt prefix
//! shared with the previous call: tagging prompts share their instructions and taxonomy, so
//! only the item's part is processed again.

pub mod constrain;
pub mod model;
pub mod q8;
pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::Device;
use rand::{Rng, SeedableRng};
use tracing::Instrument;

use super::{
    accounting, check_json, ChatRequest, ChatResponse, LlmClient, LlmError, Schema, Usage,
};
use constrain::Constraints;
use model::LlamaModel;
use tokenizer::GgufTokenizer;

/// A loaded local model. Clones share the weights and the KV cache.
#[derive(Clone)]
pub struct LocalLlm {
    name: String,
    path: PathBuf,
    tokenizer: Arc<GgufTokenizer>,
    state: Arc<Mutex<State>>,
    context_length: usize,
    /// The constrained-decoding engine, built on the first schema request.
    constraints: Arc<OnceLock<Result<Constraints, String>>>,
}

struct State {
    model: LlamaModel,
    /// Tokens whose keys and values the model's cache holds.
    cached: Vec<u32>,
}

/// Timings of one generation, for the benchmark.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens actually run (the rest came from the prefix cache).
    pub prompt_tokens_processed: usize,
    pub prompt_seconds: f64,
    pub generated_tokens: usize,
    pub generation_seconds: f64,
}

impl LocalLlm {
    /// Load a GGUF file. The name reported is the file stem.
    pub fn load(path: &Path) -> Result<Self, LlmError> {
        let mut file = std::fs::File::open(path).map_err(|e| {
            LlmError::Config(format!(
                "cannot open the local model {}: {e}; run scripts/fetch-models.sh",
                path.display()
            ))
        })?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| LlmError::Model(format!("{}: not a GGUF file: {e}", path.display())))?;
        let tokenizer = GgufTokenizer::from_gguf(&content)?;
        let model = LlamaModel::load(&content, &mut file, &Device::Cpu)
            .map_err(|e| LlmError::Model(format!("{}: {e}", path.display())))?;
        let context_length = model.config.context_length;
        Ok(Self {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "local".into()),
            path: path.to_path_buf(),
            tokenizer: Arc::new(tokenizer),
            state: Arc::new(Mutex::new(State {
                model,
                cached: Vec::new(),
            })),
            context_length,
            constraints: Arc::new(OnceLock::new()),
        })
    }

    /// An llguidance matcher for `schema` over this model's tokens (the engine is built on
    /// first use): what constrained decoding consults at every step. Public so its masks can be
    /// tested directly.
    pub fn matcher(
        &self,
        schema: &serde_json::Value,
        vocab: usize,
    ) -> Result<llguidance::Matcher, LlmError> {
        let engine = self
            .constraints
            .get_or_init(|| {
                Constraints::new(self.tokenizer.clone(), vocab).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| LlmError::Model(e.clone()))?;
        engine.matcher(schema)
    }

    /// The tokenizer (for counting and rendering).
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's context window in tokens.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Generate from an already rendered prompt (blocking). Returns the text, the finish
    /// reason and timings.
    pub fn generate_blocking(
        &self,
        prompt: &str,
        request: &ChatRequest,
        schema: Option<&serde_json::Value>,
    ) -> Result<(String, String, GenerationStats), LlmError> {
        let tok = &self.tokenizer;
        let prompt_ids = tok.encode(prompt)?;
        let sampling = &request.sampling;
        let needed = prompt_ids.len() + sampling.max_tokens;
        if needed > self.context_length {
            return Err(LlmError::ContextOverflow {
                needed,
                context: self.context_length,
            });
        }
        let mut state = self
            .state
            .lock()
            .map_err(|_| LlmError::Model("model lock poisoned by an earlier panic".into()))?;
        let model_err = |e: candle_core::Error| LlmError::Model(e.to_string());
        // Reuse the cached prefix, but always run at least the last prompt token.
        let common = state
            .cached
            .iter()
            .zip(&prompt_ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt_ids.len() - 1);
        let mut stats = GenerationStats {
            prompt_tokens: prompt_ids.len(),
            prompt_tokens_processed: prompt_ids.len() - common,
            ..Default::default()
        };
        state.model.truncate_cache(common).map_err(model_err)?;
        state.cached.truncate(common);
        let started = Instant::now();
        let mut logits = state
            .model
            .forward(&prompt_ids[common..])
            .map_err(model_err)?;
        state.cached.extend_from_slice(&prompt_ids[common..]);
        stats.prompt_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let vocab = logits.len().min(tok.token_bytes().len());
        let mut matcher = schema.map(|s| self.matcher(s, vocab)).transpose()?;
        let llg_err = |e: anyhow::Error| LlmError::Model(format!("constrained decoding: {e}"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(sampling.seed);
        let mut out: Vec<u32> = Vec::new();
        let mut finish = "length";
        for _ in 0..sampling.max_tokens {
            let mask = match matcher.as_mut() {
                Some(m) if m.is_stopped() => {
                    finish = "stop";
                    break;
                }
                Some(m) => Some(m.compute_mask().map_err(llg_err)?),
                None => None,
            };
            let allowed = |id: usize| mask.as_ref().is_none_or(|m| m.is_allowed(id as u32));
            let next = if sampling.temperature <= 0.0 {
                greedy(&logits[..vocab], allowed)
            } else {
                sample(
                    &logits[..vocab],
                    allowed,
                    sampling.temperature,
                    sampling.top_p,
                    &mut rng,
                )
            };
            let Some(next) = next else {
                return Err(LlmError::Model(
                    "constrained decoding found no allowed token".into(),
                ));
            };
            if next == tok.eos_id {
                finish = "stop";
                break;
            }
            if let Some(m) = matcher.as_mut() {
                m.consume_token(next).map_err(llg_err)?;
            }
            out.push(next);
            logits = state.model.forward(&[next]).map_err(model_err)?;
            state.cached.push(next);
        }
        stats.generated_tokens = out.len();
        stats.generation_seconds = started.elapsed().as_secs_f64();
        if let Some(m) = matcher.as_mut() {
            // A constrained answer is finished exactly when its grammar accepts; otherwise it was
            // cut at max_tokens ("length"), which the caller reports as truncated.
            finish = if m.is_accepting().map_err(llg_err)? {
                "stop"
            } else {
                "length"
            };
        }
        Ok((tok.decode(&out)?, finish.to_string(), stats))
    }
}

/// The highest-scoring allowed token: the top token if allowed (the usual case), else one scan
/// for the best allowed token (no sort of the vocabulary).
fn greedy(logits: &[f32], allowed: impl Fn(usize) -> bool) -> Option<u32> {
    let best = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)?;
    if allowed(best) {
        return Some(best as u32);
    }
    logits
        .iter()
        .enumerate()
        .filter(|(i, _)| allowed(*i))
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
}

/// Temperature + nucleus (top-p) sampling over the allowed tokens.
fn sample(
    logits: &[f32],
    allowed: impl Fn(usize) -> bool,
    temperature: f32,
    top_p: f32,
    rng: &mut impl Rng,
) -> Option<u32> {
    let mut cands: Vec<(usize, f32)> = (0..logits.len())
        .filter(|&i| allowed(i))
        .map(|i| (i, logits[i] / temperature))
        .collect();
    if cands.is_empty() {
        return None;
    }
    cands.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    let max = cands[0].1;
    let mut total = 0.0f64;
    for c in &mut cands {
        c.1 = (c.1 - max).exp();
        total += c.1 as f64;
    }
    let mut kept = 0.0f64;
    let mut cut = cands.len();
    for (n, c) in cands.iter().enumerate() {
        kept += c.1 as f64 / total;
        if kept >= top_p as f64 {
            cut = n + 1;
            break;
        }
    }
    cands.truncate(cut);
    let mass: f64 = cands.iter().map(|c| c.1 as f64).sum();
    let mut r = rng.random::<f64>() * mass;
    for (i, p) in &cands {
        r -= *p as f64;
        if r <= 0.0 {
            return Some(*i as u32);
        }
    }
    cands.last().map(|c| c.0 as u32)
}

impl LlmClient for LocalLlm {
    fn provider(&self) -> &str {
        "local"
    }

    fn model(&self) -> &str {
        &self.name
    }

    fn deterministic(&self) -> bool {
        true
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let span = tracing::info_span!("llm.call", provider = "local", model = %self.name,
            prompt = request.context.prompt.as_deref().unwrap_or("-"));
        self.chat_inner(request).instrument(span).await
    }
}

impl LocalLlm {
    async fn chat_inner(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let schema = request
            .json_schema
            .as_ref()
            .map(Schema::parse)
            .transpose()?;
        let prompt = self.tokenizer.render_chat_safe(&request.messages)?;
        let this = self.clone();
        let req = request.clone();
        let (text, finish, stats) = tokio::task::spawn_blocking(move || {
            this.generate_blocking(&prompt, &req, req.json_schema.as_ref())
        })
        .await
        .map_err(|e| LlmError::Model(format!("generation task failed: {e}")))??;
        if schema.is_some() && finish == "length" {
            return Err(LlmError::Truncated);
        }
        let json = match &schema {
            Some(schema) => {
                Some(
                    check_json(&text, schema).map_err(|error| LlmError::SchemaViolation {
                        error,
                        answer: text.clone(),
                    })?,
                )
            }
            None => None,
        };
        let response = ChatResponse {
            text,
            json,
            usage: Usage {
                prompt_tokens: stats.prompt_tokens,
                completion_tokens: stats.generated_tokens,
            },
            provider: "local".into(),
            model: self.name.clone(),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            retries: 0,
            retry_delays_ms: Vec::new(),
            repaired: false,
            cache_hit: false,
            finish_reason: finish,
        };
        accounting::record(&response, 0.0);
        Ok(response)
    }
}
