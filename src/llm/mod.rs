//! LLM calls: one [`LlmClient`] trait, two providers, a response cache and accounting.
//!
//! - [`openai::OpenAiClient`]: any OpenAI-compatible `/v1/chat/completions` server (OpenAI,
//!   Azure OpenAI, vLLM, Ollama, llama.cpp, LM Studio, or `signaldesk llm serve`), with
//!   timeouts, retries, rate limits and a schema-repair round.
//! - [`local::LocalLlm`]: a GGUF Llama model run in process with candle (SmolLM2-135M-Instruct
//!   by default), with constrained decoding for JSON-schema answers. The offline default.
//!
//! [`cache::CachedClient`] wraps either with an on-disk response cache, and every call is
//! counted by [`accounting`]. Enrichment (tagging, summaries) is written against the trait.

pub mod accounting;
pub mod cache;
pub mod local;
pub mod openai;
pub mod schema;
pub mod serve;

use serde::{Deserialize, Serialize};

pub use crate::config::{CacheMode, LlmProvider};
use serde_json::Value;

pub use schema::Schema;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The role's name on the wire and in chat templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
}

/// Decoding settings. Temperature 0 means greedy (deterministic, cacheable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// Strings that end the answer where they first appear (not included), as OpenAI's `stop`.
    /// Left out of the serialized form when empty, so cache keys of requests without it keep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

/// Which versioned prompt a call came from and for which item: for lineage, cache keys and
/// error messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallContext {
    /// `id@version` of the prompt template, if one was used.
    pub prompt: Option<String>,
    /// The content item the call is about.
    pub item: Option<String>,
}

/// A request: messages, and optionally a JSON schema the answer must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub sampling: Sampling,
    /// The raw JSON Schema (sent to servers) ...
    pub json_schema: Option<Value>,
    /// ... and its name, for `response_format.json_schema.name`.
    pub schema_name: String,
    pub context: CallContext,
}

impl ChatRequest {
    /// A plain-text request with default sampling.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            sampling: Sampling::default(),
            json_schema: None,
            schema_name: "answer".into(),
            context: CallContext::default(),
        }
    }

    /// Ask for JSON satisfying `schema`.
    pub fn with_schema(mut self, schema: Value) -> Self {
        self.json_schema = Some(schema);
        self
    }
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// An answer with everything accounting and lineage need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub text: String,
    /// The parsed answer, for schema requests (already validated).
    pub json: Option<Value>,
    pub usage: Usage,
    pub provider: String,
    pub model: String,
    pub latency_ms: f64,
    /// HTTP attempts beyond the first (remote providers).
    pub retries: usize,
    /// Delays slept before each retry, in milliseconds.
    pub retry_delays_ms: Vec<u64>,
    /// A schema-repair round was needed.
    pub repaired: bool,
    pub cache_hit: bool,
    /// `stop` (end of turn), `length` (max tokens), or what the server said.
    pub finish_reason: String,
}

/// Why a call failed; each variant is a distinct, stable outcome callers can act on.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("LLM configuration: {0}")]
    Config(String),
    #[error("invalid JSON schema: {0}")]
    Schema(String),
    #[error("local model: {0}")]
    Model(String),
    #[error("the prompt is {prompt_tokens} tokens, which leaves no room for an answer in the model's context of {context} tokens")]
    ContextOverflow {
        prompt_tokens: usize,
        context: usize,
    },
    #[error("HTTP {status} from {url}: {body}")]
    Http {
        status: u16,
        url: String,
        body: String,
    },
    #[error("{url}: gave up after {attempts} attempts over {elapsed_ms} ms; last error: {last}")]
    RetriesExhausted {
        url: String,
        attempts: usize,
        elapsed_ms: u64,
        last: String,
    },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("the server's answer is not a chat completion: {0}")]
    Protocol(String),
    #[error(
        "the answer does not satisfy the schema after a repair attempt: {error} (answer: {answer})"
    )]
    SchemaViolation { error: String, answer: String },
    #[error("the answer was cut off at max_tokens before the JSON was complete")]
    Truncated,
    #[error(
        "cache miss in read-only mode for prompt {prompt} on item {item} ({provider}/{model})"
    )]
    CacheMiss {
        prompt: String,
        item: String,
        provider: String,
        model: String,
    },
    #[error("response cache: {0}")]
    Cache(String),
}

/// A chat model. `chat` answers one request; for schema requests `ChatResponse::json` holds a
/// value that satisfies the schema, or the call fails.
#[allow(async_fn_in_trait)]
pub trait LlmClient {
    /// Provider name (`openai`, `local`).
    fn provider(&self) -> &str;
    /// Model name as configured (answers carry the name the server reports).
    fn model(&self) -> &str;
    /// Where answers come from: the server's base URL, or the local model file. Part of the
    /// cache key, so two servers configured with the same model name never share answers.
    fn endpoint(&self) -> String;
    /// Whether greedy answers are reproducible by recomputing (a read-only cache may miss).
    fn deterministic(&self) -> bool {
        false
    }
    /// Answer one request.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;
    /// [`Self::chat`], handing the answer's text to `deltas` as it is generated, so a reader
    /// sees the first words while the rest is still being written. The pieces are a preview:
    /// the returned response is the answer (a schema-repair round is not streamed). A provider
    /// that cannot stream sends the whole text at the end.
    async fn chat_streaming(
        &self,
        request: &ChatRequest,
        deltas: &TextDeltas,
    ) -> Result<ChatResponse, LlmError> {
        let response = self.chat(request).await?;
        let _ = deltas.send(response.text.clone());
        Ok(response)
    }
}

/// Where [`LlmClient::chat_streaming`] sends the pieces of text as they are generated. A
/// receiver that went away does not stop the call (the answer is still returned).
pub type TextDeltas = tokio::sync::mpsc::UnboundedSender<String>;

/// Parse and validate an answer against `schema`: the value, or the error to send back.
pub fn check_json(text: &str, schema: &Schema) -> Result<Value, String> {
    let trimmed = text
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim();
    let value: Value =
        serde_json::from_str(trimmed).map_err(|e| format!("the answer is not valid JSON: {e}"))?;
    schema.validate(&value)?;
    Ok(value)
}

/// The configured provider, ready to call: local or OpenAI-compatible, behind the cache.
pub enum AnyLlm {
    /// Shared (`Arc`) so a server can also answer `/v1/chat/completions` from the same weights.
    Local(cache::CachedClient<std::sync::Arc<local::LocalLlm>>),
    OpenAi(Box<cache::CachedClient<openai::OpenAiClient>>),
}

impl AnyLlm {
    /// Build from config. `provider` overrides `llm.provider`; `cache` overrides `llm.cache`.
    pub fn from_config(
        config: &crate::Config,
        provider: Option<LlmProvider>,
        cache: Option<CacheMode>,
    ) -> Result<Self, LlmError> {
        let llm = &config.llm;
        let mode = cache.unwrap_or(llm.cache);
        let cache_path = if llm.cache_file.trim().is_empty() {
            config.cache_dir.join("llm-responses.redb")
        } else {
            std::path::PathBuf::from(&llm.cache_file)
        };
        let provider = match provider.unwrap_or(llm.provider) {
            LlmProvider::Auto if llm.base_url.trim().is_empty() => LlmProvider::Local,
            LlmProvider::Auto => LlmProvider::Openai,
            p => p,
        };
        match provider {
            LlmProvider::Local | LlmProvider::Auto => Ok(Self::Local(cache::CachedClient::new(
                std::sync::Arc::new(local::LocalLlm::from_config(config)?),
                &cache_path,
                mode,
            )?)),
            LlmProvider::Openai => {
                if llm.base_url.trim().is_empty() {
                    return Err(LlmError::Config(
                        "provider openai needs llm.base_url (SIGNALDESK_LLM__BASE_URL)".into(),
                    ));
                }
                let secs = |s: f64| (s > 0.0).then(|| std::time::Duration::from_secs_f64(s));
                let options = openai::OpenAiOptions {
                    base_url: llm.base_url.clone(),
                    model: llm.model.clone(),
                    api_key: std::env::var(&llm.api_key_env)
                        .ok()
                        .filter(|k| !k.is_empty()),
                    connect_timeout: secs(llm.connect_timeout_s),
                    timeout: secs(llm.timeout_s),
                    max_attempts: llm.max_attempts.max(1),
                    max_retry_time: std::time::Duration::from_secs_f64(
                        llm.max_retry_time_s.max(0.0),
                    ),
                    concurrency: llm.concurrency.max(1),
                    requests_per_minute: Some(llm.requests_per_minute).filter(|&n| n > 0),
                    tokens_per_minute: Some(llm.tokens_per_minute).filter(|&n| n > 0),
                    price: llm.prices.get(&llm.model).copied(),
                    ..openai::OpenAiOptions::default()
                };
                Ok(Self::OpenAi(Box::new(cache::CachedClient::new(
                    openai::OpenAiClient::new(options)?,
                    &cache_path,
                    mode,
                )?)))
            }
        }
    }
}

impl AnyLlm {
    /// The local model's weights, when this is the local model: what a server mounts
    /// `/v1/chat/completions` over without loading them twice.
    pub fn local_model(&self) -> Option<std::sync::Arc<local::LocalLlm>> {
        match self {
            Self::Local(c) => Some(c.inner().clone()),
            Self::OpenAi(_) => None,
        }
    }

    /// What this client's calls cost per token: `llm.prices[llm.model]` for a remote server,
    /// nothing for the local model. The one price rule behind every stored and reported cost.
    pub fn price(&self, config: &crate::config::LlmConfig) -> Option<crate::config::Price> {
        match self {
            Self::OpenAi(_) => config.prices.get(&config.model).copied(),
            Self::Local(_) => None,
        }
    }
}

/// A shared client answers as the client does.
impl<C: LlmClient> LlmClient for std::sync::Arc<C> {
    fn provider(&self) -> &str {
        (**self).provider()
    }
    fn model(&self) -> &str {
        (**self).model()
    }
    fn endpoint(&self) -> String {
        (**self).endpoint()
    }
    fn deterministic(&self) -> bool {
        (**self).deterministic()
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        (**self).chat(request).await
    }
    async fn chat_streaming(
        &self,
        request: &ChatRequest,
        deltas: &TextDeltas,
    ) -> Result<ChatResponse, LlmError> {
        (**self).chat_streaming(request, deltas).await
    }
}

impl LlmClient for AnyLlm {
    fn provider(&self) -> &str {
        match self {
            Self::Local(c) => c.provider(),
            Self::OpenAi(c) => c.provider(),
        }
    }
    fn model(&self) -> &str {
        match self {
            Self::Local(c) => c.model(),
            Self::OpenAi(c) => c.model(),
        }
    }
    fn endpoint(&self) -> String {
        match self {
            Self::Local(c) => c.endpoint(),
            Self::OpenAi(c) => c.endpoint(),
        }
    }
    fn deterministic(&self) -> bool {
        match self {
            Self::Local(c) => c.deterministic(),
            Self::OpenAi(c) => c.deterministic(),
        }
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let _stage = crate::observe::stage("llm");
        match self {
            Self::Local(c) => c.chat(request).await,
            Self::OpenAi(c) => c.chat(request).await,
        }
    }
    async fn chat_streaming(
        &self,
        request: &ChatRequest,
        deltas: &TextDeltas,
    ) -> Result<ChatResponse, LlmError> {
        let _stage = crate::observe::stage("llm");
        match self {
            Self::Local(c) => c.chat_streaming(request, deltas).await,
            Self::OpenAi(c) => c.chat_streaming(request, deltas).await,
        }
    }
}
