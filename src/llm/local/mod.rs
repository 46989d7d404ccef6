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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::Device;
use rand::{Rng, SeedableRng};
use tracing::Instrument;

use super::{
    accounting, check_json, ChatRequest, ChatResponse, LlmClient, LlmError, Schema, TextDeltas,
    Usage,
};
use crate::embed::Precision;
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
    /// Tokens that can be generated: the model's vocabulary as its embeddings define it (padded
    /// output rows are not tokens), within the tokenizer's. Sampling and the engine share it.
    vocab: usize,
    /// The constrained-decoding engine, built in the background from load (or by the first
    /// schema request, whichever comes first).
    constraints: Arc<OnceLock<Result<Constraints, String>>>,
    /// The arithmetic prompts run in.
    precision: Precision,
}

struct State {
    model: LlamaModel,
    /// Tokens whose keys and values the model's cache holds.
    cached: Vec<u32>,
}

impl State {
    /// Run the prompt through the model, reusing the cached prefix it shares with the last one
    /// (but always running at least its last token); the logits after it, and the prompt's
    /// share of the stats.
    fn process_prompt(
        &mut self,
        prompt_ids: &[u32],
    ) -> candle_core::Result<(Vec<f32>, GenerationStats)> {
        let common = self
            .cached
            .iter()
            .zip(prompt_ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt_ids.len() - 1);
        let mut stats = GenerationStats {
            prompt_tokens: prompt_ids.len(),
            prompt_tokens_processed: prompt_ids.len() - common,
            ..Default::default()
        };
        self.model.truncate_cache(common)?;
        self.cached.truncate(common);
        let started = Instant::now();
        let logits = self.model.forward(&prompt_ids[common..])?;
        self.cached.extend_from_slice(&prompt_ids[common..]);
        stats.prompt_seconds = started.elapsed().as_secs_f64();
        Ok((logits, stats))
    }
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
    /// Load a GGUF file, prompts in fp32. The name reported is the file stem.
    pub fn load(path: &Path) -> Result<Self, LlmError> {
        Self::load_with(path, Precision::Fp32)
    }

    /// The configured local model (`llm.local_model` under `models_dir`) with its prompt
    /// precision (`llm.local_precision`, resolved against this CPU): what the provider and
    /// `llm serve` load (`bench llm` resolves its `--precision` through the same
    /// [`LocalLlm::configured_precision`]).
    pub fn from_config(config: &crate::Config) -> Result<Self, LlmError> {
        Self::load_with(
            &config.models_dir.join(&config.llm.local_model),
            Self::configured_precision(config, config.llm.local_precision)?,
        )
    }

    /// `requested` resolved against this CPU, with `embed.cpu_features_off` applied.
    pub fn configured_precision(
        config: &crate::Config,
        requested: crate::config::EmbedPrecision,
    ) -> Result<Precision, LlmError> {
        let cpu = crate::embed::CpuFeatures::detect().masked(&config.embed.cpu_features_off);
        crate::embed::precision::resolve(requested, &cpu)
            .map_err(|e| LlmError::Config(format!("llm.local_precision: {e}")))
    }

    /// Load a GGUF file with prompts processed at `precision` (resolved against the CPU by
    /// the caller: [`crate::embed::precision::resolve`]).
    pub fn load_with(path: &Path, precision: Precision) -> Result<Self, LlmError> {
        let mut file = std::fs::File::open(path).map_err(|e| {
            LlmError::Config(format!(
                "cannot open the local model {}: {e}; run scripts/fetch-models.sh",
                path.display()
            ))
        })?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| LlmError::Model(format!("{}: not a GGUF file: {e}", path.display())))?;
        let tokenizer = GgufTokenizer::from_gguf(&content)?;
        let model = LlamaModel::load(&content, &mut file, &Device::Cpu, precision)
            .map_err(|e| LlmError::Model(format!("{}: {e}", path.display())))?;
        let context_length = model.config.context_length;
        let tokenizer = Arc::new(tokenizer);
        let constraints = Arc::new(OnceLock::new());
        // The engine's token trie takes most of a second to build: it is built beside whatever
        // the caller does next (loading the embedder, retrieving), so the first constrained
        // answer does not wait for it. A request that comes first waits on the same lock.
        let vocab = model.vocab_size().min(tokenizer.token_bytes().len());
        let (early, engine_tokenizer) = (constraints.clone(), tokenizer.clone());
        std::thread::spawn(move || {
            early.get_or_init(|| {
                Constraints::new(engine_tokenizer, vocab).map_err(|e| e.to_string())
            });
        });
        Ok(Self {
            // int8 prompts answer a little differently: the name (lineage, and the response
            // cache's key) says so, and fp32 keeps the plain stem its cached answers were under.
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "local".into())
                + if precision == Precision::Int8 {
                    "+int8"
                } else {
                    ""
                },
            path: path.to_path_buf(),
            tokenizer,
            state: Arc::new(Mutex::new(State {
                model,
                cached: Vec::new(),
            })),
            context_length,
            vocab,
            constraints,
            precision,
        })
    }

    /// The precision prompts run at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// An llguidance matcher for `schema` over this model's tokens (the engine is built from
    /// load, in the background): what constrained decoding consults at every step. Public so
    /// its masks can be tested directly.
    pub fn matcher(&self, schema: &serde_json::Value) -> Result<llguidance::Matcher, LlmError> {
        let engine = self
            .constraints
            .get_or_init(|| {
                Constraints::new(self.tokenizer.clone(), self.vocab).map_err(|e| e.to_string())
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
        let g = self.generate(prompt, request, schema, &mut Control::default())?;
        Ok((g.text, g.finish.as_str().to_string(), g.stats))
    }

    /// Generate from an already rendered prompt (blocking), under `control`: text is handed
    /// to `control.on_text` as it is decoded, and generation stops at `max_tokens` (clamped to
    /// the room the prompt leaves in the context), a `stop` string, the end of a constrained
    /// answer, the deadline, or when the caller cancels (a client that went away).
    pub fn generate(
        &self,
        prompt: &str,
        request: &ChatRequest,
        schema: Option<&serde_json::Value>,
        control: &mut Control<'_>,
    ) -> Result<Generated, LlmError> {
        let tok = &self.tokenizer;
        let prompt_ids = tok.encode(prompt)?;
        let sampling = &request.sampling;
        if prompt_ids.len() >= self.context_length {
            return Err(LlmError::ContextOverflow {
                prompt_tokens: prompt_ids.len(),
                context: self.context_length,
            });
        }
        let max_tokens = sampling
            .max_tokens
            .min(self.context_length - prompt_ids.len());
        let mut state = self
            .state
            .lock()
            .map_err(|_| LlmError::Model("model lock poisoned by an earlier panic".into()))?;
        let model_err = |e: candle_core::Error| LlmError::Model(e.to_string());
        let (mut logits, mut stats) = state.process_prompt(&prompt_ids).map_err(model_err)?;
        let started = Instant::now();
        let vocab = self.vocab.min(logits.len());
        let mut matcher = schema.map(|s| self.matcher(s)).transpose()?;
        let llg_err = |e: anyhow::Error| LlmError::Model(format!("constrained decoding: {e}"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(sampling.seed);
        let mut out: Vec<u32> = Vec::new();
        let mut text = TextStream::new(&sampling.stop);
        let mut finish = Finish::Length;
        for _ in 0..max_tokens {
            if control.stopped() {
                finish = Finish::Cancelled;
                break;
            }
            let mask = match matcher.as_mut() {
                Some(m) if m.is_stopped() => {
                    finish = Finish::Stop;
                    break;
                }
                Some(m) => Some(m.compute_mask().map_err(llg_err)?),
                None => None,
            };
            let allowed = |id: usize| mask.as_ref().is_none_or(|m| m.is_allowed(id as u32));
            let next = pick_token(&logits[..vocab], allowed, sampling, &mut rng)?;
            if next == tok.eos_id {
                finish = Finish::Stop;
                break;
            }
            if let Some(m) = matcher.as_mut() {
                m.consume_token(next).map_err(llg_err)?;
            }
            out.push(next);
            let bytes = tok.token_bytes().get(next as usize).map_or(&[][..], |b| b);
            let (delta, stopped) = text.push(bytes);
            if !delta.is_empty() {
                control.emit(&delta);
            }
            if stopped {
                finish = Finish::Stop;
                break;
            }
            logits = state.model.forward(&[next]).map_err(model_err)?;
            state.cached.push(next);
        }
        stats.generated_tokens = out.len();
        stats.generation_seconds = started.elapsed().as_secs_f64();
        if let Some(m) = matcher.as_mut() {
            // A constrained answer is finished exactly when its grammar accepts; otherwise it was
            // cut short ("length"), which callers report as truncated.
            if finish != Finish::Cancelled && !text.stopped() {
                finish = if m.is_accepting().map_err(llg_err)? {
                    Finish::Stop
                } else {
                    Finish::Length
                };
            }
        }
        let rest = text.finish();
        if !rest.is_empty() {
            control.emit(&rest);
        }
        Ok(Generated {
            text: text.into_text(),
            finish,
            stats,
        })
    }
}

/// Sets its flag when dropped: a request future dropped because the client went away (or a
/// deadline passed) stops its generation at the next token.
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How a generation is watched and stopped from outside: the serving layer streams text
/// through `on_text` and stops work for clients that went away through `cancel` or `deadline`.
#[derive(Default)]
pub struct Control<'a> {
    /// Asked before every token: true stops generation (the client went away).
    cancelled: Option<&'a dyn Fn() -> bool>,
    /// No token is generated after this instant.
    deadline: Option<Instant>,
    /// Receives the answer's text as it is decoded, in order, whole characters only; returns
    /// false when nobody is listening any more, which stops generation.
    on_text: Option<&'a mut dyn FnMut(&str) -> bool>,
    gone: bool,
}

impl<'a> Control<'a> {
    /// Stop when `cancelled` answers true.
    pub fn cancelled(mut self, cancelled: &'a dyn Fn() -> bool) -> Self {
        self.cancelled = Some(cancelled);
        self
    }

    /// Stop at `deadline`.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Hand the text to `on_text` as it is decoded.
    pub fn on_text(mut self, on_text: &'a mut dyn FnMut(&str) -> bool) -> Self {
        self.on_text = Some(on_text);
        self
    }

    fn stopped(&self) -> bool {
        self.gone
            || self.cancelled.is_some_and(|c| c())
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn emit(&mut self, text: &str) {
        if let Some(f) = self.on_text.as_mut() {
            if !f(text) {
                self.gone = true;
            }
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// End of turn, a stop string, or a complete constrained answer.
    Stop,
    /// `max_tokens` (or the context) ran out, or the deadline passed.
    Length,
    /// The caller cancelled (the client went away).
    Cancelled,
}

impl Finish {
    /// The OpenAI `finish_reason` ("cancelled" is never sent to a client: it left).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One generation's result.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The answer, cut before any stop string.
    pub text: String,
    pub finish: Finish,
    pub stats: GenerationStats,
}

/// Token bytes in, text out: whole UTF-8 characters only, cut at the first stop string, and
/// holding back any tail that could still become a stop string, so a streamed answer never
/// shows part of one.
struct TextStream<'s> {
    bytes: Vec<u8>,
    /// Bytes already handed out.
    emitted: usize,
    stop: &'s [String],
    /// Where a stop string was found (the answer ends there).
    cut: Option<usize>,
}

impl<'s> TextStream<'s> {
    fn new(stop: &'s [String]) -> Self {
        Self {
            bytes: Vec::new(),
            emitted: 0,
            stop,
            cut: None,
        }
    }

    fn stopped(&self) -> bool {
        self.cut.is_some()
    }

    /// Add one token's bytes: the new text that is safe to show, and whether a stop string
    /// ended the answer.
    fn push(&mut self, token: &[u8]) -> (String, bool) {
        self.bytes.extend_from_slice(token);
        let valid = match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        // The bytes up to `valid` are UTF-8 by construction.
        let text = std::str::from_utf8(&self.bytes[..valid]).unwrap_or_default();
        // A stop string can only end in the new part; search from where it could start.
        let from = self
            .emitted
            .saturating_sub(self.stop.iter().map(String::len).max().unwrap_or(0));
        let found = self
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                let start = (from..=text.len()).find(|&i| text.is_char_boundary(i))?;
                text[start..].find(s.as_str()).map(|p| start + p)
            })
            .min();
        if let Some(at) = found {
            self.cut = Some(at);
            let delta = text[self.emitted.min(at)..at].to_string();
            self.emitted = at;
            return (delta, true);
        }
        // Hold back the longest tail that is a proper prefix of a stop string.
        let hold = self
            .stop
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(|&k| s.is_char_boundary(k))
                    .map(move |k| &s[..k])
            })
            .filter(|p| text.ends_with(p))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let safe = text.len() - hold;
        if safe <= self.emitted {
            return (String::new(), false);
        }
        let delta = text[self.emitted..safe].to_string();
        self.emitted = safe;
        (delta, false)
    }

    /// Whatever was held back, at the end (any invalid trailing bytes shown as U+FFFD).
    fn finish(&mut self) -> String {
        let end = self.cut.unwrap_or(self.bytes.len());
        if end <= self.emitted {
            return String::new();
        }
        let rest = String::from_utf8_lossy(&self.bytes[self.emitted..end]).into_owned();
        self.emitted = end;
        rest
    }

    fn into_text(self) -> String {
        let end = self.cut.unwrap_or(self.bytes.len());
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }
}

/// The highest-scoring allowed token: the top token if allowed (the usual case), else one scan
/// for the best allowed token (no sort of the vocabulary).
/// The next token: greedy at temperature 0, else sampled; an error when a constraint allows none.
fn pick_token(
    logits: &[f32],
    allowed: impl Fn(usize) -> bool,
    sampling: &crate::llm::Sampling,
    rng: &mut rand::rngs::StdRng,
) -> Result<u32, LlmError> {
    let next = if sampling.temperature <= 0.0 {
        greedy(logits, allowed)
    } else {
        sample(logits, allowed, sampling.temperature, sampling.top_p, rng)
    };
    next.ok_or_else(|| LlmError::Model("constrained decoding found no allowed token".into()))
}

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

    fn endpoint(&self) -> String {
        self.path.display().to_string()
    }

    fn deterministic(&self) -> bool {
        true
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let span = tracing::info_span!("llm.call", provider = "local", model = %self.name,
            prompt = request.context.prompt.as_deref().unwrap_or("-"));
        self.chat_inner(request, None).instrument(span).await
    }

    /// Each decoded piece goes to `deltas` from the generating thread as it is decoded.
    async fn chat_streaming(
        &self,
        request: &ChatRequest,
        deltas: &TextDeltas,
    ) -> Result<ChatResponse, LlmError> {
        let span = tracing::info_span!("llm.call", provider = "local", model = %self.name,
            prompt = request.context.prompt.as_deref().unwrap_or("-"), stream = true);
        self.chat_inner(request, Some(deltas.clone()))
            .instrument(span)
            .await
    }
}

impl LocalLlm {
    async fn chat_inner(
        &self,
        request: &ChatRequest,
        deltas: Option<TextDeltas>,
    ) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let schema = request
            .json_schema
            .as_ref()
            .map(Schema::parse)
            .transpose()?;
        let prompt = self.tokenizer.render_chat_safe(&request.messages)?;
        let this = self.clone();
        let req = request.clone();
        // A dropped future (a timed-out or abandoned request) stops generation at the next token
        // instead of generating on for nobody.
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let (text, finish, stats) = tokio::task::spawn_blocking(move || {
            let stop = || cancel.load(Ordering::Relaxed);
            let mut send = |piece: &str| {
                if let Some(d) = &deltas {
                    let _ = d.send(piece.to_string());
                }
                true
            };
            let mut control = Control::default().cancelled(&stop).on_text(&mut send);
            let g = this.generate(&prompt, &req, req.json_schema.as_ref(), &mut control)?;
            Ok::<_, LlmError>((g.text, g.finish.as_str().to_string(), g.stats))
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

#[cfg(test)]
mod tests {
    use super::TextStream;

    /// Feed `pieces` as token bytes; the deltas, whether a stop string ended it, and the text.
    fn run(pieces: &[&[u8]], stop: &[&str]) -> (Vec<String>, bool, String) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut t = TextStream::new(&stop);
        let mut deltas = Vec::new();
        let mut stopped = false;
        for p in pieces {
            let (d, s) = t.push(p);
            if !d.is_empty() {
                deltas.push(d);
            }
            if s {
                stopped = true;
                break;
            }
        }
        let rest = t.finish();
        if !rest.is_empty() {
            deltas.push(rest);
        }
        (deltas, stopped, t.into_text())
    }

    #[test]
    fn a_character_split_across_tokens_is_sent_whole() {
        let e_acute = "é".as_bytes();
        let (deltas, stopped, text) = run(&[b"caf", &e_acute[..1], &e_acute[1..], b"!"], &[]);
        assert_eq!(deltas, ["caf", "é", "!"]);
        assert!(!stopped);
        assert_eq!(text, "café!");
    }

    #[test]
    fn a_stop_string_across_tokens_ends_the_text_and_is_never_streamed() {
        let (deltas, stopped, text) = run(&[b"one two", b" ST", b"OP three"], &["STOP"]);
        assert!(stopped);
        assert_eq!(text, "one two ");
        assert_eq!(deltas.concat(), "one two ");
        assert!(deltas.iter().all(|d| !d.contains('S')), "{deltas:?}");
    }

    #[test]
    fn a_held_back_prefix_that_is_not_a_stop_string_is_released() {
        let (deltas, stopped, text) = run(&[b"a S", b"TONE b"], &["STOP"]);
        assert!(!stopped);
        assert_eq!(text, "a STONE b");
        assert_eq!(deltas.concat(), text);
        // The earliest of several stop strings wins.
        let (_, stopped, text) = run(&[b"x, y. z"], &[".", ","]);
        assert!(stopped);
        assert_eq!(text, "x");
    }
}
