//! The `openai` provider: OpenAI-compatible `POST {base_url}/v1/chat/completions`.
//!
//! Behaviour, each part tested against a scripted server (`tests/llm_openai.rs`):
//! - **Structured output** through `response_format: {type: "json_schema", strict: true}`. A
//!   server that answers 400 to it (older vLLM, llama.cpp builds, many proxies) gets the same
//!   request with `{type: "json_object"}` and the schema in a system message, for that request
//!   only, and only when the 400's body is about `response_format` (a 400 for a too-long context
//!   stays an error). Answers are always validated locally.
//! - **Repair**: an answer that is not JSON or breaks the schema is sent back once, with the
//!   validation error; a second failure is [`LlmError::SchemaViolation`].
//! - **Timeouts**: connect, and per attempt (request sent to body read).
//! - **Retries** on 429, 5xx, timeouts, connection failures and truncated or unreadable bodies:
//!   exponential backoff with full jitter (`rand(0, min(cap, base·2^n))`), or exactly the
//!   server's `Retry-After`, capped in attempts and in total time (a delay that would pass the
//!   total budget is not slept: the call fails at once with [`LlmError::RetriesExhausted`]).
//!   Other 4xx are final ([`LlmError::Http`]).
//! - **Limits**: at most `concurrency` requests in flight; optional requests-per-minute and
//!   tokens-per-minute windows (tokens estimated with tiktoken before sending).
//! - The API key comes from an environment variable and is never logged or shown by `Debug`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use super::accounting::{self, Price};
use super::{
    check_json, ChatRequest, ChatResponse, LlmClient, LlmError, Message, Role, Schema, TextDeltas,
    Usage,
};
use crate::chunk::{count_llm_tokens, LlmEncoding};

/// How the client behaves; defaults suit a hosted API.
#[derive(Clone)]
pub struct OpenAiOptions {
    /// Server root, e.g. `https://api.openai.com` or `http://127.0.0.1:8080` (a trailing
    /// `/v1` is accepted).
    pub base_url: String,
    pub model: String,
    /// The key itself (read from the environment by the caller), sent as a bearer token.
    pub api_key: Option<String>,
    pub connect_timeout: Option<Duration>,
    /// Per attempt, from sending the request to reading the whole body.
    pub timeout: Option<Duration>,
    /// Attempts in all, the first included.
    pub max_attempts: usize,
    /// No retry delay is slept past this much time since the call began.
    pub max_retry_time: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub concurrency: usize,
    pub requests_per_minute: Option<usize>,
    pub tokens_per_minute: Option<usize>,
    pub price: Option<Price>,
    /// Seed of the jitter generator (`None`: from entropy). Tests fix it.
    pub jitter_seed: Option<u64>,
}

impl std::fmt::Debug for OpenAiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiOptions")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl Default for OpenAiOptions {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com".into(),
            model: "gpt-4o-mini".into(),
            api_key: None,
            connect_timeout: Some(Duration::from_secs(10)),
            timeout: Some(Duration::from_secs(120)),
            max_attempts: 5,
            max_retry_time: Duration::from_secs(300),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            concurrency: 8,
            requests_per_minute: None,
            tokens_per_minute: None,
            price: None,
            jitter_seed: None,
        }
    }
}

/// A sliding one-minute window of spent capacity (requests or tokens).
struct Window {
    per_minute: usize,
    spent: Mutex<VecDeque<(Instant, usize)>>,
}

impl Window {
    async fn acquire(&self, cost: usize) {
        let cost = cost.min(self.per_minute);
        loop {
            let wait = {
                let Ok(mut spent) = self.spent.lock() else {
                    return;
                };
                let now = Instant::now();
                while spent
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) >= Duration::from_secs(60))
                {
                    spent.pop_front();
                }
                let used: usize = spent.iter().map(|(_, c)| c).sum();
                if used + cost <= self.per_minute {
                    spent.push_back((now, cost));
                    return;
                }
                spent
                    .front()
                    .map(|(t, _)| Duration::from_secs(60).saturating_sub(now.duration_since(*t)))
                    .unwrap_or(Duration::from_millis(10))
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The client. Cheap to share: one connection pool, one set of limits.
pub struct OpenAiClient {
    options: OpenAiOptions,
    url: String,
    http: reqwest::Client,
    slots: Semaphore,
    rpm: Option<Window>,
    tpm: Option<Window>,
    rng: Mutex<rand::rngs::StdRng>,
}

/// One attempt's failure, and whether another attempt may help.
struct AttemptError {
    retryable: bool,
    retry_after: Option<Duration>,
    error: LlmError,
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

impl OpenAiClient {
    /// A client for `options.base_url`.
    pub fn new(options: OpenAiOptions) -> Result<Self, LlmError> {
        let base = options.base_url.trim_end_matches('/');
        if base.is_empty() {
            return Err(LlmError::Config("llm.base_url is empty".into()));
        }
        let url = if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        };
        let mut builder = reqwest::Client::builder().user_agent("signaldesk");
        if let Some(t) = options.connect_timeout {
            builder = builder.connect_timeout(t);
        }
        let http = builder
            .build()
            .map_err(|e| LlmError::Config(format!("HTTP client: {e}")))?;
        let window = |n: Option<usize>| {
            n.filter(|&n| n > 0).map(|per_minute| Window {
                per_minute,
                spent: Mutex::new(VecDeque::new()),
            })
        };
        let rng = match options.jitter_seed {
            Some(s) => rand::rngs::StdRng::seed_from_u64(s),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        Ok(Self {
            url,
            http,
            slots: Semaphore::new(options.concurrency.max(1)),
            rpm: window(options.requests_per_minute),
            tpm: window(options.tokens_per_minute),
            rng: Mutex::new(rng),
            options,
        })
    }

    /// The endpoint requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn body(&self, request: &ChatRequest, messages: &[Message], json_object: bool) -> Value {
        let s = &request.sampling;
        let mut body = json!({
            "model": self.options.model,
            "messages": messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content})).collect::<Vec<_>>(),
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
        });
        if !s.stop.is_empty() {
            body["stop"] = json!(s.stop);
        }
        if let Some(schema) = &request.json_schema {
            body["response_format"] = if json_object {
                json!({"type": "json_object"})
            } else {
                json!({"type": "json_schema", "json_schema": {
                    "name": request.schema_name, "schema": schema, "strict": true}})
            };
        }
        body
    }

    /// One HTTP attempt. With `deltas` the answer is requested as server-sent events and each
    /// piece of content is handed on as it arrives.
    async fn attempt(
        &self,
        body: &Value,
        deltas: Option<&TextDeltas>,
    ) -> Result<Answer, AttemptError> {
        let transient = |message: String| AttemptError {
            retryable: true,
            retry_after: None,
            error: LlmError::Transport {
                url: self.url.clone(),
                message,
            },
        };
        let mut req = match deltas {
            Some(_) => {
                let mut streamed = body.clone();
                streamed["stream"] = json!(true);
                streamed["stream_options"] = json!({"include_usage": true});
                self.http.post(&self.url).json(&streamed)
            }
            None => self.http.post(&self.url).json(body),
        };
        if let Some(key) = &self.options.api_key {
            req = req.bearer_auth(key);
        }
        let exchange = async {
            let mut response = req
                .send()
                .await
                .map_err(|e| transient(format!("request failed: {}", error_chain(&e))))?;
            let status = response.status();
            let headers = response.headers().clone();
            if let (Some(deltas), true) = (deltas, status.is_success()) {
                let streamed = self.read_stream(&mut response, deltas).await;
                return Ok::<_, AttemptError>((status, headers, Read::Streamed(streamed?)));
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| transient(format!("body cut off: {}", error_chain(&e))))?;
            Ok((status, headers, Read::Whole(bytes)))
        };
        let (status, headers, read) = match self.options.timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| transient(format!("no complete answer within {t:?}")))??,
            None => exchange.await?,
        };
        let bytes = match read {
            Read::Streamed(answer) => return Ok(answer),
            Read::Whole(bytes) => bytes,
        };
        if !status.is_success() {
            let body = String::from_utf8_lossy(&bytes).chars().take(500).collect();
            let code = status.as_u16();
            return Err(AttemptError {
                retryable: code == 429 || status.is_server_error(),
                retry_after: retry_after(&headers),
                error: LlmError::Http {
                    status: code,
                    url: self.url.clone(),
                    body,
                },
            });
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            transient(format!(
                "answer body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))
        })?;
        let protocol = |m: &str| AttemptError {
            retryable: false,
            retry_after: None,
            error: LlmError::Protocol(format!(
                "{m}: {}",
                value.to_string().chars().take(300).collect::<String>()
            )),
        };
        let choice = value
            .get("choices")
            .and_then(|c| c.get(0))
            .ok_or_else(|| protocol("no choices[0]"))?;
        let text = choice
            .pointer("/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| protocol("no choices[0].message.content"))?
            .to_string();
        let finish = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("stop")
            .to_string();
        Ok(Answer {
            text,
            usage: usage_of(&value),
            finish,
            model: model_of(&value),
        })
    }

    /// A streamed answer (`data: {chunk}` lines, then `data: [DONE]`): the content pieces of
    /// choice 0 are handed to `deltas` and joined. A failure before any content is retryable
    /// like any cut-off body; after content was handed on it is final, since a retry would
    /// repeat the pieces already shown.
    async fn read_stream(
        &self,
        response: &mut reqwest::Response,
        deltas: &TextDeltas,
    ) -> Result<Answer, AttemptError> {
        let mut answer = Answer {
            text: String::new(),
            usage: Usage::default(),
            finish: "stop".into(),
            model: None,
        };
        let fail = |answer: &Answer, message: String| AttemptError {
            retryable: answer.text.is_empty(),
            retry_after: None,
            error: LlmError::Transport {
                url: self.url.clone(),
                message,
            },
        };
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| fail(&answer, format!("stream cut off: {}", error_chain(&e))))?;
            let Some(chunk) = chunk else {
                return Err(fail(&answer, "stream ended before data: [DONE]".into()));
            };
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim().strip_prefix("data:").map(str::trim) else {
                    continue;
                };
                if data == "[DONE]" {
                    return Ok(answer);
                }
                let value: Value = serde_json::from_str(data).map_err(|e| AttemptError {
                    retryable: false,
                    retry_after: None,
                    error: LlmError::Protocol(format!(
                        "a streamed chunk is not JSON ({e}): {data}"
                    )),
                })?;
                if let Some(error) = value.get("error") {
                    return Err(AttemptError {
                        retryable: false,
                        retry_after: None,
                        error: LlmError::Protocol(format!("the stream reports an error: {error}")),
                    });
                }
                let choice = value.pointer("/choices/0");
                if let Some(piece) = choice
                    .and_then(|c| c.pointer("/delta/content"))
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                {
                    answer.text.push_str(piece);
                    let _ = deltas.send(piece.to_string());
                }
                if let Some(finish) = choice
                    .and_then(|c| c.get("finish_reason"))
                    .and_then(Value::as_str)
                {
                    answer.finish = finish.to_string();
                }
                if value.get("usage").is_some_and(Value::is_object) {
                    answer.usage = usage_of(&value);
                }
                answer.model = model_of(&value).or(answer.model.take());
            }
        }
    }

    /// One logical request: attempts with backoff until success, a final error, or the caps.
    async fn send(
        &self,
        body: &Value,
        deltas: Option<&TextDeltas>,
        started: Instant,
        delays: &mut Vec<u64>,
    ) -> Result<Answer, LlmError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = {
                let _slot = self
                    .slots
                    .acquire()
                    .await
                    .map_err(|_| LlmError::Config("client closed".into()))?;
                if let Some(w) = &self.rpm {
                    w.acquire(1).await;
                }
                self.attempt(body, deltas).await
            };
            let failure = match result {
                Ok(answer) => return Ok(answer),
                Err(f) => f,
            };
            tracing::warn!(url = %self.url, attempt = attempts, retryable = failure.retryable,
                error = %failure.error, "LLM request failed");
            if !failure.retryable {
                return Err(failure.error);
            }
            let exhausted = |last: &LlmError| LlmError::RetriesExhausted {
                url: self.url.clone(),
                attempts,
                elapsed_ms: started.elapsed().as_millis() as u64,
                last: last.to_string(),
            };
            if attempts >= self.options.max_attempts {
                return Err(exhausted(&failure.error));
            }
            let delay = failure.retry_after.unwrap_or_else(|| {
                let ceiling = self
                    .options
                    .backoff_base
                    .saturating_mul(1u32 << (attempts - 1).min(20))
                    .min(self.options.backoff_cap);
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                Duration::from_millis(rng.random_range(0..=ceiling.as_millis() as u64))
            });
            if started.elapsed() + delay > self.options.max_retry_time {
                return Err(exhausted(&failure.error));
            }
            delays.push(delay.as_millis() as u64);
            tokio::time::sleep(delay).await;
        }
    }
}

/// What an attempt read: the whole body, or a stream already parsed.
enum Read {
    Whole(axum::body::Bytes),
    Streamed(Answer),
}

/// Token counts of a completion or of a stream's usage chunk (zero where the server sent none).
fn usage_of(value: &Value) -> Usage {
    let count =
        |pointer: &str| value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0) as usize;
    Usage {
        prompt_tokens: count("/usage/prompt_tokens"),
        completion_tokens: count("/usage/completion_tokens"),
    }
}

/// The model that answered, as the server names it (a proxy or a local server may serve
/// another model than the one configured).
fn model_of(value: &Value) -> Option<String> {
    value
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

/// One successful HTTP exchange, as parsed.
struct Answer {
    text: String,
    usage: Usage,
    finish: String,
    /// The `model` field of the answer, if the server sent one.
    model: Option<String>,
}

/// An error with its sources ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

impl LlmClient for OpenAiClient {
    fn provider(&self) -> &str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.options.model
    }

    fn endpoint(&self) -> String {
        self.url.clone()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let span = tracing::info_span!("llm.call", provider = "openai", model = %self.options.model,
            prompt = request.context.prompt.as_deref().unwrap_or("-"));
        self.chat_inner(request, None).instrument(span).await
    }

    /// Asks for `stream: true` (with `stream_options.include_usage`); the repair round, when
    /// one is needed, is not streamed.
    async fn chat_streaming(
        &self,
        request: &ChatRequest,
        deltas: &TextDeltas,
    ) -> Result<ChatResponse, LlmError> {
        let span = tracing::info_span!("llm.call", provider = "openai", model = %self.options.model,
            prompt = request.context.prompt.as_deref().unwrap_or("-"), stream = true);
        self.chat_inner(request, Some(deltas))
            .instrument(span)
            .await
    }
}

impl OpenAiClient {
    async fn chat_inner(
        &self,
        request: &ChatRequest,
        deltas: Option<&TextDeltas>,
    ) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let schema = request
            .json_schema
            .as_ref()
            .map(Schema::parse)
            .transpose()?;
        if let Some(w) = &self.tpm {
            let estimate: usize = request
                .messages
                .iter()
                .map(|m| count_llm_tokens(&m.content, LlmEncoding::O200kBase) + 4)
                .sum::<usize>()
                + request.sampling.max_tokens;
            w.acquire(estimate).await;
        }
        let mut messages = request.messages.clone();
        let mut delays = Vec::new();
        let mut json_object = false;
        let mut usage = Usage::default();
        let mut repaired = false;
        let mut reported_model = None;
        let (text, json, finish) = loop {
            let body = self.body(request, &messages, json_object);
            let streamed = deltas.filter(|_| !repaired);
            let sent = self.send(&body, streamed, started, &mut delays).await;
            let Answer {
                text,
                usage: u,
                finish,
                model,
            } = match sent {
                Err(LlmError::Http {
                    status: 400,
                    ref body,
                    ..
                }) if schema.is_some() && !json_object && refuses_response_format(body) => {
                    // The fallback path: the server does not take json_schema.
                    tracing::warn!(url = %self.url, %body, "server refused json_schema; retrying this request with json_object");
                    json_object = true;
                    messages.insert(0, schema_instruction(request));
                    continue;
                }
                other => other?,
            };
            reported_model = model.or(reported_model);
            usage.prompt_tokens += u.prompt_tokens;
            usage.completion_tokens += u.completion_tokens;
            if usage.prompt_tokens == 0 && u.prompt_tokens == 0 {
                // The server sent no usage: count it ourselves.
                usage.prompt_tokens += messages
                    .iter()
                    .map(|m| count_llm_tokens(&m.content, LlmEncoding::O200kBase) + 4)
                    .sum::<usize>();
                usage.completion_tokens += count_llm_tokens(&text, LlmEncoding::O200kBase);
            }
            let Some(schema) = &schema else {
                break (text, None, finish);
            };
            match check_json(&text, schema) {
                Ok(v) => break (text, Some(v), finish),
                Err(error) if !repaired => {
                    tracing::info!(%error, "answer breaks the schema; asking for a repair");
                    repaired = true;
                    messages.push(Message {
                        role: Role::Assistant,
                        content: text,
                    });
                    messages.push(Message::user(format!(
                        "That answer is invalid: {error}. Reply with only the corrected JSON, \
                         satisfying the schema."
                    )));
                }
                Err(error) => {
                    return Err(LlmError::SchemaViolation {
                        error,
                        answer: text,
                    })
                }
            }
        };
        let cost = self.options.price.map_or(0.0, |p| {
            p.cost(usage.prompt_tokens, usage.completion_tokens)
        });
        let response = ChatResponse {
            text,
            json,
            usage,
            provider: "openai".into(),
            model: reported_model.unwrap_or_else(|| self.options.model.clone()),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            retries: delays.len(),
            retry_delays_ms: delays,
            repaired,
            cache_hit: false,
            finish_reason: finish,
        };
        accounting::record(&response, cost);
        Ok(response)
    }
}

/// For servers without `json_schema`: the schema as an instruction.
fn schema_instruction(request: &ChatRequest) -> Message {
    Message::system(format!(
        "Answer with a single JSON value, and nothing else, that satisfies this JSON Schema:\n{}",
        request.json_schema.clone().unwrap_or(Value::Null)
    ))
}

/// Whether a 400's body says the server does not take `response_format: json_schema` (as
/// opposed to any other bad request, such as a context that is too long).
fn refuses_response_format(body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    [
        "response_format",
        "json_schema",
        "json schema",
        "structured output",
    ]
    .iter()
    .any(|k| body.contains(k))
}
