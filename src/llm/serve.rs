//! `signaldesk llm serve`: the local model behind the OpenAI chat-completions protocol.
//!
//! So the official `openai` SDK (and any other OpenAI-compatible client) can drive a real model
//! over real HTTP, and so other tools can use the local model. `scripts/openai_compat.py` holds
//! it to the SDK in the test command. Routes: `POST /v1/chat/completions`, `GET /v1/models`,
//! `GET /health`, `GET /metrics` (Prometheus).
//!
//! What a request may ask for, and what it gets (the README's compatibility table):
//! - `stream` (server-sent `chat.completion.chunk` deltas, a last chunk per choice with its
//!   `finish_reason`, `data: [DONE]`; `stream_options.include_usage` adds a usage chunk), with or
//!   without a schema; `n` (1–8 choices); `stop` (up to 4 strings); `max_tokens` /
//!   `max_completion_tokens` (clamped to the room the prompt leaves in the context);
//!   `temperature` (0–2), `top_p` (0–1], `seed`.
//! - `response_format`: `json_schema` constrains decoding to the schema (`anyOf`, nullable
//!   types and `$defs`/`$ref` as pydantic writes them), `json_object` to any JSON object.
//! - Messages: `system`, `developer` (as system), `user`, `assistant` (`content` may be null);
//!   `content` as a string or an array of text parts.
//! - Refused with 400, never ignored: tools and functions, logprobs, logit_bias, non-zero
//!   penalties, audio and other modalities, image parts, and any field OpenAI does not define.
//!
//! Every error is OpenAI-shaped JSON (`{"error": {"message", "type", "param", "code"}}`) with the
//! right status: 400 bad request, 404 unknown route, 405 wrong method, 413 body over 2 MiB, 429
//! queue full (with `Retry-After`), 504 past the deadline.
//!
//! Overload is an answer: one request generates at a time and at most `queue` more wait; beyond
//! that a request gets 429 at once. Generation stops when the client goes away (a closed
//! connection drops the request, which cancels it at the next token), at the server's deadline
//! (`llm.serve_timeout_s`), at `max_tokens` or at a stop string, so an abandoned request never
//! holds the model. Every request is traced (tower-http) and timed into a per-route latency
//! histogram on `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};

use crate::observe::{route_metrics, time_route};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::local::{CancelOnDrop, Control, Finish, LocalLlm};
use super::{
    accounting, ChatRequest, ChatResponse, LlmClient, LlmError, Message, Role, Sampling, Usage,
};

/// Largest request body: far more than the model's context can hold as text.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Most choices one request may ask for (`n`).
const MAX_CHOICES: usize = 8;
/// Most stop strings, as OpenAI allows.
const MAX_STOP: usize = 4;

/// How `llm serve` bounds its work.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Requests that may wait behind the one generating.
    pub queue: usize,
    /// Longest a request may take: a plain answer still unanswered gets 504, and a stream is
    /// ended with `finish_reason: "length"`.
    pub timeout: Duration,
}

impl ServeOptions {
    /// As configured (`llm.serve_queue`, `llm.serve_timeout_s`).
    pub fn from_config(config: &crate::config::LlmConfig) -> Self {
        Self {
            queue: config.serve_queue,
            timeout: Duration::from_secs_f64(config.serve_timeout_s.max(0.001)),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
struct ServeState {
    llm: Arc<LocalLlm>,
    /// One permit per request admitted: the one generating plus the queue.
    admission: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
}

/// An API error with a stable code, answered as OpenAI does.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    /// The request field at fault, if one is.
    param: Option<String>,
    message: String,
}

impl ApiError {
    /// A 400 about one field.
    fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            param: Some(param.into()),
            message: message.into(),
        }
    }

    /// A 400 for a parameter this server does not implement.
    fn unsupported(param: &str, why: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "unsupported_parameter",
            param: Some(param.into()),
            message: format!("{param} is not supported by signaldesk llm serve: {why}"),
        }
    }

    fn overloaded() -> Response {
        let mut r = Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "overloaded",
            param: None,
            message:
                "the model is busy and its queue is full: retry after the delay in Retry-After"
                    .into(),
        }
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        r
    }

    fn body(&self) -> Value {
        let kind = if self.status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<LlmError> for ApiError {
    fn from(e: LlmError) -> Self {
        let (status, code, param) = match &e {
            LlmError::Schema(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_schema",
                Some("response_format.json_schema.schema"),
            ),
            LlmError::ContextOverflow { .. } => (
                StatusCode::BAD_REQUEST,
                "context_length_exceeded",
                Some("messages"),
            ),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "model_error", None),
        };
        Self {
            status,
            code,
            param: param.map(str::to_string),
            message: e.to_string(),
        }
    }
}

/// `POST /v1/chat/completions` and `GET /v1/models` over one loaded model, with its admission
/// queue and deadline: what `llm serve` answers, and what `signaldesk serve` mounts (behind its
/// API keys) when its LLM is the local one.
pub fn chat_routes(llm: Arc<LocalLlm>, options: ServeOptions) -> Router {
    let state = ServeState {
        llm,
        admission: Arc::new(tokio::sync::Semaphore::new(options.queue + 1)),
        timeout: options.timeout,
    };
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .with_state(state)
}

/// The router over one loaded model.
pub fn router(llm: Arc<LocalLlm>, options: ServeOptions) -> Router {
    Router::new()
        .merge(chat_routes(llm, options))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|| async { super::accounting::prometheus() + &route_metrics() }),
        )
        .fallback(|request: Request| async move {
            ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                param: None,
                message: format!(
                    "no route {} {}: this server answers POST /v1/chat/completions, GET /v1/models, GET /health and GET /metrics",
                    request.method(),
                    request.uri().path()
                ),
            }
        })
        .method_not_allowed_fallback(|request: Request| async move {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                param: None,
                message: format!(
                    "{} is not allowed on {}",
                    request.method(),
                    request.uri().path()
                ),
            }
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(time_route))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            options.timeout,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Bodies for the errors produced below the handlers (the timeout layer's 504): JSON like the
/// rest, never an empty body.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == StatusCode::GATEWAY_TIMEOUT
        && response.headers().get(header::CONTENT_TYPE).is_none()
    {
        return ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            code: "timeout",
            param: None,
            message: "the answer took longer than the server's deadline (llm.serve_timeout_s)"
                .into(),
        }
        .into_response();
    }
    response
}

async fn models(State(ServeState { llm, .. }): State<ServeState>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": llm.model(), "object": "model", "owned_by": "signaldesk"}]}),
    )
}

/// A request, checked: everything generation needs.
#[derive(Debug)]
struct Completion {
    messages: Vec<Message>,
    sampling: Sampling,
    /// The schema decoding is constrained to (`json_object` is `{"type": "object"}`).
    schema: Option<Value>,
    choices: usize,
    stream: bool,
    include_usage: bool,
}

/// Fields OpenAI defines that have no effect on a local answer: accepted.
const HARMLESS: &[&str] = &[
    "model",
    "user",
    "metadata",
    "store",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "parallel_tool_calls",
];

/// Parse and check a request body; every refusal names the field.
fn parse_completion(body: &[u8]) -> Result<Completion, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("the body is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::invalid("body", "the body must be a JSON object"));
    };
    let known = [
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "seed",
        "n",
        "stop",
        "stream",
        "stream_options",
        "response_format",
    ];
    for key in obj.keys() {
        let key = key.as_str();
        if known.contains(&key) || HARMLESS.contains(&key) || obj[key].is_null() {
            continue;
        }
        refuse_unsupported(key, &obj[key])?;
    }
    let messages = parse_messages(
        obj.get("messages")
            .ok_or_else(|| ApiError::invalid("messages", "messages is required"))?,
    )?;
    let number = |k: &str| -> Result<Option<f64>, ApiError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| ApiError::invalid(k, format!("{k} must be a number, not {v}"))),
        }
    };
    let integer = |k: &str| -> Result<Option<i64>, ApiError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| {
                ApiError::invalid(k, format!("{k} must be a whole number, not {v}"))
            }),
        }
    };
    let boolean = |k: &str| -> Result<Option<bool>, ApiError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| ApiError::invalid(k, format!("{k} must be true or false, not {v}"))),
        }
    };
    let defaults = Sampling::default();
    let temperature = number("temperature")?.unwrap_or(0.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            format!("temperature must be between 0 and 2, not {temperature}"),
        ));
    }
    let top_p = number("top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            format!("top_p must be above 0 and at most 1, not {top_p}"),
        ));
    }
    let max_tokens = match (integer("max_completion_tokens")?, integer("max_tokens")?) {
        (Some(n), _) => Some(("max_completion_tokens", n)),
        (None, Some(n)) => Some(("max_tokens", n)),
        (None, None) => None,
    };
    let max_tokens = match max_tokens {
        None => defaults.max_tokens,
        Some((k, n)) if n < 1 => {
            return Err(ApiError::invalid(
                k,
                format!("{k} must be at least 1, not {n}"),
            ))
        }
        Some((_, n)) => n as usize,
    };
    let choices = integer("n")?.unwrap_or(1);
    if !(1..=MAX_CHOICES as i64).contains(&choices) {
        return Err(ApiError::invalid(
            "n",
            format!("n must be between 1 and {MAX_CHOICES}, not {choices}"),
        ));
    }
    let stop = parse_stop(obj.get("stop"))?;
    // Seeds are 64-bit on the wire; a negative one is as good a seed as any.
    let seed = integer("seed")?.unwrap_or(0) as u64;
    let stream = boolean("stream")?.unwrap_or(false);
    let include_usage = parse_stream_options(obj.get("stream_options"), stream)?;
    let schema = parse_response_format(obj.get("response_format"))?;
    if let Some(schema) = &schema {
        super::Schema::parse(schema)?;
    }
    Ok(Completion {
        messages,
        sampling: Sampling {
            max_tokens,
            temperature: temperature as f32,
            top_p: top_p as f32,
            seed,
            stop,
        },
        schema,
        choices: choices as usize,
        stream,
        include_usage,
    })
}

/// `stop`: a string or a list of at most [`MAX_STOP`] non-empty strings.
fn parse_stop(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let stop = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::invalid("stop", "stop must list strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(ApiError::invalid(
                "stop",
                format!("stop must be a string or an array of strings, not {v}"),
            ))
        }
    };
    if stop.len() > MAX_STOP || stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            format!("stop takes at most {MAX_STOP} strings, none empty"),
        ));
    }
    Ok(stop)
}

/// `stream_options` (only with `stream: true`): whether the last chunk carries the usage.
fn parse_stream_options(value: Option<&Value>, stream: bool) -> Result<bool, ApiError> {
    let include_usage = match value {
        None | Some(Value::Null) => false,
        Some(_) if !stream => {
            return Err(ApiError::invalid(
                "stream_options",
                "stream_options is only allowed with stream: true",
            ))
        }
        Some(Value::Object(o)) => {
            for k in o.keys() {
                if k != "include_usage" && k != "include_obfuscation" {
                    return Err(ApiError::unsupported(
                        &format!("stream_options.{k}"),
                        "only include_usage is",
                    ));
                }
            }
            o.get("include_usage")
                .map(|v| {
                    v.as_bool().ok_or_else(|| {
                        ApiError::invalid(
                            "stream_options.include_usage",
                            "include_usage must be true or false",
                        )
                    })
                })
                .transpose()?
                .unwrap_or(false)
        }
        Some(v) => {
            return Err(ApiError::invalid(
                "stream_options",
                format!("stream_options must be an object, not {v}"),
            ))
        }
    };
    Ok(include_usage)
}

/// The 400 for a field this server cannot honour, or for one OpenAI does not define. Fields
/// whose value asks for nothing (an empty tool list, `logprobs: false`, a zero penalty) pass.
fn refuse_unsupported(key: &str, value: &Value) -> Result<(), ApiError> {
    let empty = match value {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s == "none",
        Value::Null => true,
    };
    match key {
        "tools" | "functions" | "tool_choice" | "function_call" if empty => Ok(()),
        "tools" | "functions" | "tool_choice" | "function_call" => Err(ApiError::unsupported(
            key,
            "this server has no tool calling; leave tools out",
        )),
        "logprobs" | "top_logprobs" if empty => Ok(()),
        "logprobs" | "top_logprobs" => Err(ApiError::unsupported(key, "no log probabilities")),
        "logit_bias" if empty => Ok(()),
        "logit_bias" => Err(ApiError::unsupported(key, "no logit bias")),
        "presence_penalty" | "frequency_penalty" if empty => Ok(()),
        "presence_penalty" | "frequency_penalty" => Err(ApiError::unsupported(
            key,
            "no repetition penalties; leave it out or set 0",
        )),
        "modalities" if value == &json!(["text"]) => Ok(()),
        "modalities" | "audio" => Err(ApiError::unsupported(key, "the model only writes text")),
        "prediction" | "reasoning_effort" | "verbosity" | "web_search_options" => Err(
            ApiError::unsupported(key, "it has no meaning for this model"),
        ),
        _ => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "unknown_parameter",
            param: Some(key.to_string()),
            message: format!("unrecognized request argument supplied: {key}"),
        }),
    }
}

/// `response_format` as the schema decoding is constrained to.
fn parse_response_format(format: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let kind = format
        .get("type")
        .ok_or_else(|| ApiError::invalid("response_format.type", "response_format needs a type"))?;
    match kind.as_str() {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "object"}))),
        Some("json_schema") => format
            .pointer("/json_schema/schema")
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    "response_format.json_schema.schema",
                    "response_format.json_schema.schema is missing",
                )
            }),
        _ => Err(ApiError::invalid(
            "response_format.type",
            format!(
                "response_format.type {kind} is not supported: use \"text\", \"json_object\" or \"json_schema\""
            ),
        )),
    }
}

/// The messages as the model's chat template takes them.
fn parse_messages(value: &Value) -> Result<Vec<Message>, ApiError> {
    let items = value
        .as_array()
        .ok_or_else(|| ApiError::invalid("messages", "messages must be an array"))?;
    if items.is_empty() {
        return Err(ApiError::invalid("messages", "messages is empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, m)| parse_message(m, &format!("messages[{i}]")))
        .collect()
}

fn parse_message(m: &Value, at: &str) -> Result<Message, ApiError> {
    let obj = m
        .as_object()
        .ok_or_else(|| ApiError::invalid(at, format!("{at} must be an object")))?;
    let role_name = obj
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(format!("{at}.role"), format!("{at}.role is required")))?;
    let role = match role_name {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" | "function" => {
            return Err(ApiError::unsupported(
                &format!("{at}.role"),
                "tool results need tool calling, which this server does not have",
            ))
        }
        other => {
            return Err(ApiError::invalid(
                format!("{at}.role"),
                format!("{at}.role {other:?} is not one of system, developer, user, assistant"),
            ))
        }
    };
    for key in obj.keys() {
        match key.as_str() {
            "role" | "content" | "name" | "refusal" => {}
            "tool_calls" | "function_call" if obj[key].is_null() => {}
            "tool_calls" | "function_call" => {
                return Err(ApiError::unsupported(
                    &format!("{at}.{key}"),
                    "this server has no tool calling",
                ))
            }
            other => {
                return Err(ApiError::invalid(
                    format!("{at}.{other}"),
                    format!("{at} has an unknown field {other:?}"),
                ))
            }
        }
    }
    let content = match obj.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) if role == Role::Assistant => String::new(),
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                format!("{at}.content"),
                format!("{at}.content is required for a {role_name} message"),
            ))
        }
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let here = format!("{at}.content[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(
                        part.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                ApiError::invalid(
                                    format!("{here}.text"),
                                    format!("{here} has type text but no text string"),
                                )
                            })?
                            .to_string(),
                    ),
                    Some(other) => {
                        return Err(ApiError::unsupported(
                            &here,
                            &format!("content parts of type {other:?}: the model reads only text"),
                        ))
                    }
                    None => {
                        return Err(ApiError::invalid(
                            format!("{here}.type"),
                            format!("{here} needs a type"),
                        ))
                    }
                }
            }
            texts.join("\n")
        }
        Some(v) => {
            return Err(ApiError::invalid(
                format!("{at}.content"),
                format!("{at}.content must be a string, an array of text parts or null, not {v}"),
            ))
        }
    };
    Ok(Message { role, content })
}

async fn completions(
    State(state): State<ServeState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // Admission first: a full queue is answered at once, before any parsing.
    let Ok(admitted) = state.admission.clone().try_acquire_owned() else {
        return ApiError::overloaded();
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let status = e.status();
            return ApiError {
                status,
                code: if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "request_too_large"
                } else {
                    "invalid_body"
                },
                param: None,
                message: if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!("the request body is over the limit of {MAX_BODY_BYTES} bytes")
                } else {
                    e.body_text()
                },
            }
            .into_response();
        }
    };
    let completion = match parse_completion(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let prompt = match state.llm.tokenizer().render_chat_safe(&completion.messages) {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let deadline = Instant::now() + state.timeout;
    if completion.stream {
        return stream(state.llm, completion, prompt, deadline, admitted);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let llm = state.llm.clone();
    let started = Instant::now();
    let generated = tokio::task::spawn_blocking(move || {
        let _admitted = admitted;
        let cancelled = || cancel.load(Ordering::Relaxed);
        let mut answers = Vec::with_capacity(completion.choices);
        for choice in 0..completion.choices {
            let request = choice_request(&completion, choice);
            let mut control = Control::default().cancelled(&cancelled).deadline(deadline);
            let g = llm.generate(&prompt, &request, completion.schema.as_ref(), &mut control)?;
            if g.finish == Finish::Cancelled {
                break;
            }
            answers.push(g);
        }
        Ok::<_, LlmError>(answers)
    })
    .await;
    let answers = match generated {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Err(e) => {
            return ApiError::from(LlmError::Model(format!("generation task failed: {e}")))
                .into_response()
        }
    };
    let prompt_tokens = answers.first().map_or(0, |a| a.stats.prompt_tokens);
    let completion_tokens: usize = answers.iter().map(|a| a.stats.generated_tokens).sum();
    record(&state.llm, prompt_tokens, completion_tokens, started);
    let choices: Vec<Value> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({"index": i, "finish_reason": a.finish.as_str(), "logprobs": null,
                   "message": {"role": "assistant", "content": a.text, "refusal": null}})
        })
        .collect();
    Json(json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": state.llm.model(),
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }))
    .into_response()
}

/// The request for choice `index`: its own seed, so sampled choices differ.
fn choice_request(completion: &Completion, index: usize) -> ChatRequest {
    let mut request = ChatRequest::new(completion.messages.clone());
    request.sampling = completion.sampling.clone();
    request.sampling.seed = request.sampling.seed.wrapping_add(index as u64);
    request.json_schema = completion.schema.clone();
    request
}

fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
           "total_tokens": prompt_tokens + completion_tokens})
}

/// Count a served request in the LLM accounting (`/metrics`), as a library call would be.
fn record(llm: &LocalLlm, prompt_tokens: usize, completion_tokens: usize, started: Instant) {
    accounting::record(
        &ChatResponse {
            text: String::new(),
            json: None,
            usage: Usage {
                prompt_tokens,
                completion_tokens,
            },
            provider: "local".into(),
            model: llm.model().to_string(),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            retries: 0,
            retry_delays_ms: Vec::new(),
            repaired: false,
            cache_hit: false,
            finish_reason: String::new(),
        },
        0.0,
    );
}

/// A streamed answer: generation runs on a blocking thread and sends each event through a
/// bounded channel; the response body reads it. A client that goes away drops the body, which
/// closes the channel, which stops generation at the next token.
fn stream(
    llm: Arc<LocalLlm>,
    completion: Completion,
    prompt: String,
    deadline: Instant,
    admitted: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let id = completion_id();
    let created = chrono::Utc::now().timestamp();
    let model = llm.model().to_string();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        let _admitted = admitted;
        let include_usage = completion.include_usage;
        let chunk = |choices: Value, usage: Option<Value>| {
            let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                               "model": model, "choices": choices});
            if include_usage {
                c["usage"] = usage.unwrap_or(Value::Null);
            }
            Event::default().data(c.to_string())
        };
        let delta = |index: usize, delta: Value, finish: Option<&str>| {
            chunk(
                json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]),
                None,
            )
        };
        let (mut prompt_tokens, mut completion_tokens) = (0, 0);
        for index in 0..completion.choices {
            if tx
                .blocking_send(delta(
                    index,
                    json!({"role": "assistant", "content": ""}),
                    None,
                ))
                .is_err()
            {
                return;
            }
            let request = choice_request(&completion, index);
            let mut send_text = |text: &str| {
                tx.blocking_send(delta(index, json!({"content": text}), None))
                    .is_ok()
            };
            let closed = || tx.is_closed();
            let mut control = Control::default()
                .cancelled(&closed)
                .deadline(deadline)
                .on_text(&mut send_text);
            let generated =
                llm.generate(&prompt, &request, completion.schema.as_ref(), &mut control);
            match generated {
                Ok(g) if g.finish == Finish::Cancelled => return,
                Ok(g) => {
                    prompt_tokens = g.stats.prompt_tokens;
                    completion_tokens += g.stats.generated_tokens;
                    if tx
                        .blocking_send(delta(index, json!({}), Some(g.finish.as_str())))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    // Headers are sent: the error goes in the stream, as OpenAI does.
                    let body = ApiError::from(e).body();
                    let _ = tx.blocking_send(Event::default().data(body.to_string()));
                    return;
                }
            }
        }
        record(&llm, prompt_tokens, completion_tokens, started);
        if include_usage {
            let _ = tx.blocking_send(chunk(
                json!([]),
                Some(usage(prompt_tokens, completion_tokens)),
            ));
        }
        let _ = tx.blocking_send(Event::default().data("[DONE]"));
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, std::convert::Infallible>(event), rx))
    });
    Sse::new(events).into_response()
}

/// Serve until Ctrl-C. `listener` is already bound (so callers can use port 0 and read it).
pub async fn serve(
    llm: Arc<LocalLlm>,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
) -> std::io::Result<()> {
    axum::serve(listener, router(llm, options))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
