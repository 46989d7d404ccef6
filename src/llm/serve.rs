//! `signaldesk llm serve`: the local model behind the OpenAI chat-completions protocol.
//!
//! So the `openai` client can be tested end to end against a real model over real HTTP, and so
//! other tools can use the local model. Routes: `POST /v1/chat/completions` (with
//! `response_format` `json_schema` constrained by the schema, `json_object` unconstrained),
//! `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus). Errors are OpenAI-shaped JSON
//! (`{"error": {"message", "type", "code"}}`) with a stable `code`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
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

/// An API error with a stable code.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
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
pub fn router(llm: Arc<LocalLlm>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|| async { super::accounting::prometheus() }),
        )
        .with_state(llm)
}

async fn models(State(llm): State<Arc<LocalLlm>>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": llm.model(), "object": "model", "owned_by": "signaldesk"}]}),
    )
}

async fn completions(
    State(llm): State<Arc<LocalLlm>>,
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
pub async fn serve(llm: Arc<LocalLlm>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(llm))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
