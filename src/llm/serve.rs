//! `signaldesk llm serve`: the local model behind the OpenAI chat-completions protocol.
//!
//! So the `openai` client can be tested end to end against a real model over real HTTP, and so
//! other tools can use the local model. Routes: `POST /v1/chat/completions` (with
//! `response_format` `json_schema` constrained by the schema, `json_object` unconstrained),
//! `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus). Errors are OpenAI-shaped JSON
//! (`{"error": {"message", "type", "code"}}`) with a stable `code`.
//!
//! Overload is an answer: one request generates at a time and at most `queue` more wait; beyond
//! that a request gets 429 with `Retry-After` at once. Every request is traced (tower-http) and
//! timed into a per-route latency histogram on `/metrics`; one that runs past the timeout gets
//! 504.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::local::LocalLlm;
use super::{ChatRequest, LlmClient, LlmError, Message, Sampling};

/// A request body as OpenAI defines it (the fields the local model uses).
#[derive(Debug, Deserialize)]
struct CompletionBody {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Message>,
    #[serde(default, alias = "max_completion_tokens")]
    max_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    response_format: Option<Value>,
}

/// How `llm serve` bounds its work.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Requests that may wait behind the one generating.
    pub queue: usize,
    /// Longest a request may take before it is answered 504.
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
}

/// An API error with a stable code.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn overloaded() -> Response {
        let mut r = Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "overloaded",
            message:
                "the model is busy and its queue is full: retry after the delay in Retry-After"
                    .into(),
        }
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        r
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        (
            self.status,
            Json(json!({"error": {"message": self.message, "type": kind, "code": self.code}})),
        )
            .into_response()
    }
}

impl From<LlmError> for ApiError {
    fn from(e: LlmError) -> Self {
        let (status, code) = match &e {
            LlmError::Schema(_) => (StatusCode::BAD_REQUEST, "invalid_schema"),
            LlmError::ContextOverflow { .. } => {
                (StatusCode::BAD_REQUEST, "context_length_exceeded")
            }
            LlmError::Truncated => (StatusCode::UNPROCESSABLE_ENTITY, "truncated"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "model_error"),
        };
        Self {
            status,
            code,
            message: e.to_string(),
        }
    }
}

/// The router over one loaded model.
pub fn router(llm: Arc<LocalLlm>, options: ServeOptions) -> Router {
    let state = ServeState {
        llm,
        admission: Arc::new(tokio::sync::Semaphore::new(options.queue + 1)),
    };
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|| async { super::accounting::prometheus() + &route_metrics() }),
        )
        .with_state(state)
        .layer(axum::middleware::from_fn(time_route))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            options.timeout,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Per (route, status): bucket counts, count and sum of seconds.
type RouteHistograms = std::collections::BTreeMap<(String, u16), (Vec<u64>, u64, f64)>;

static ROUTE_LATENCY: std::sync::Mutex<RouteHistograms> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Time each request into its route's histogram.
async fn time_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    if let Ok(mut h) = ROUTE_LATENCY.lock() {
        let (buckets, count, sum) = h
            .entry((route, response.status().as_u16()))
            .or_insert_with(|| (vec![0; LATENCY_BUCKETS.len()], 0, 0.0));
        for (b, le) in buckets.iter_mut().zip(LATENCY_BUCKETS) {
            *b += u64::from(seconds <= *le);
        }
        *count += 1;
        *sum += seconds;
    }
    response
}

/// The per-route latency histograms in Prometheus text format.
fn route_metrics() -> String {
    let name = "signaldesk_http_request_duration_seconds";
    let mut out = format!(
        "# HELP {name} HTTP request latency by route and status\n# TYPE {name} histogram\n"
    );
    let Ok(h) = ROUTE_LATENCY.lock() else {
        return out;
    };
    for ((route, status), (buckets, count, sum)) in h.iter() {
        let labels = format!("route=\"{route}\",status=\"{status}\"");
        for (b, le) in buckets.iter().zip(LATENCY_BUCKETS) {
            out.push_str(&format!("{name}_bucket{{{labels},le=\"{le}\"}} {b}\n"));
        }
        out.push_str(&format!("{name}_bucket{{{labels},le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!(
            "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}\n"
        ));
    }
    out
}

async fn models(State(ServeState { llm, .. }): State<ServeState>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": llm.model(), "object": "model", "owned_by": "signaldesk"}]}),
    )
}

async fn completions(
    State(state): State<ServeState>,
    body: Result<Json<CompletionBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    // Admission first: a full queue is answered at once, before any parsing.
    let Ok(_admitted) = state.admission.clone().try_acquire_owned() else {
        return ApiError::overloaded();
    };
    match complete(&state.llm, body).await {
        Ok(answer) => answer.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn complete(
    llm: &LocalLlm,
    body: Result<Json<CompletionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_body",
        message: e.body_text(),
    })?;
    if body.messages.is_empty() {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_body",
            message: "messages is empty".into(),
        });
    }
    let schema = match &body.response_format {
        None => None,
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("text") | Some("json_object") => None,
            Some("json_schema") => Some(f.pointer("/json_schema/schema").cloned().ok_or_else(
                || ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "invalid_schema",
                    message: "response_format.json_schema.schema is missing".into(),
                },
            )?),
            other => {
                return Err(ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "invalid_body",
                    message: format!("response_format.type {other:?} is not supported"),
                })
            }
        },
    };
    let defaults = Sampling::default();
    let mut request = ChatRequest::new(body.messages);
    request.sampling = Sampling {
        max_tokens: body.max_tokens.unwrap_or(defaults.max_tokens),
        temperature: body.temperature.unwrap_or(0.0),
        top_p: body.top_p.unwrap_or(1.0),
        seed: body.seed.unwrap_or(0),
    };
    request.json_schema = schema;
    let answer = llm.chat(&request).await?;
    let _ = body.model;
    Ok(Json(json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": llm.model(),
        "choices": [{"index": 0, "finish_reason": answer.finish_reason,
                     "message": {"role": "assistant", "content": answer.text}}],
        "usage": {"prompt_tokens": answer.usage.prompt_tokens,
                  "completion_tokens": answer.usage.completion_tokens,
                  "total_tokens": answer.usage.prompt_tokens + answer.usage.completion_tokens}
    })))
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
