//! The local provider: a GGUF Llama model in process (SmolLM2-135M-Instruct Q4_1 by default).
//!
//! Greedy decoding is deterministic, so answers are reproducible and cacheable. For schema
//! requests each step keeps only the tokens whose bytes the [`Matcher`] accepts, so the answer
//! always parses and always satisfies the schema. The KV cache keeps the longest prompt prefix
//! shared with the previous call: tagging prompts share their instructions and taxonomy, so
//! only the item's part is processed again.

pub mod model;
pub mod q8;
pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::Device;
use rand::{Rng, SeedableRng};
use tracing::Instrument;

use super::schema::Matcher;
use super::{
    accounting, check_json, ChatRequest, ChatResponse, LlmClient, LlmError, Schema, Usage,
};
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
        })
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
        schema: Option<&Schema>,
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
        let mut matcher = schema.map(Matcher::new);
        let mut rng = rand::rngs::StdRng::seed_from_u64(sampling.seed);
        let mut out: Vec<u32> = Vec::new();
        let mut finish = "length";
        let bytes = tok.token_bytes();
        let vocab = logits.len().min(bytes.len());
        for _ in 0..sampling.max_tokens {
            if matcher.as_ref().is_some_and(Matcher::is_closed) {
                finish = "stop";
                break;
            }
            let allowed = |id: usize| -> bool {
                match &matcher {
                    None => true,
                    Some(m) => {
                        (id as u32 == tok.eos_id && m.is_complete()) || m.accepts(&bytes[id])
                    }
                }
            };
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
                m.feed(&bytes[next as usize]);
            }
            out.push(next);
            logits = state.model.forward(&[next]).map_err(model_err)?;
            state.cached.push(next);
        }
        stats.generated_tokens = out.len();
        stats.generation_seconds = started.elapsed().as_secs_f64();
        if matcher.as_ref().is_some_and(|m| m.is_complete()) {
            finish = "stop";
        } else if matcher.is_some() {
            return Err(LlmError::Truncated);
        }
        Ok((tok.decode(&out)?, finish.to_string(), stats))
    }
}

/// The highest-scoring allowed token: the top token if allowed (the usual case), else a scan in
/// score order.
fn greedy(logits: &[f32], allowed: impl Fn(usize) -> bool) -> Option<u32> {
    let best = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)?;
    if allowed(best) {
        return Some(best as u32);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.into_iter().find(|&i| allowed(i)).map(|i| i as u32)
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
        let parsed = schema.clone();
        let req = request.clone();
        let (text, finish, stats) = tokio::task::spawn_blocking(move || {
            this.generate_blocking(&prompt, &req, parsed.as_ref())
        })
        .await
        .map_err(|e| LlmError::Model(format!("generation task failed: {e}")))??;
        let json = match &request.json_schema {
            Some(s) => {
                let schema = Schema::parse(s)?;
                Some(
                    check_json(&text, &schema).map_err(|error| LlmError::SchemaViolation {
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
