//! The HTTP API (`signaldesk serve`): a thin shell over the library. This first slice holds the
//! contract other services call first, `POST /v1/tag`, with API keys and scopes, JSON errors with
//! stable codes, per-item errors in a batch, overload answered with 429, and the health routes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::config::{ApiConfig, Scope};
use crate::enrich::taxonomy::Taxonomy;
use crate::enrich::{AnyTagger, Tagger, TaggerKind};
use crate::rank::interactions::{parse_timestamp, Interaction};
use crate::rank::recommender::RankerKind;
use crate::rank::service::RecommendService;
use crate::store::AnyStore;

/// An API error: HTTP status and the JSON body `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `rate_limited`, `invalid_request`, `overloaded`,
    /// `too_large`, `timeout`, `not_found`, `internal`.
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds for the Retry-After header of a 429 (1 when unset).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self }))).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            let seconds = self.retry_after.unwrap_or(1).to_string();
            response.headers_mut().insert(
                "retry-after",
                HeaderValue::from_str(&seconds).expect("digits are a valid header value"),
            );
        }
        response
    }
}

/// A tagger the server opened at start, with the lineage its tags carry.
pub struct OpenTagger {
    pub tagger: AnyTagger<'static, AnyStore>,
    pub lineage: Value,
}

/// What every handler shares.
pub struct ApiState {
    pub taggers: HashMap<TaggerKind, OpenTagger>,
    pub default_tagger: TaggerKind,
    /// The taxonomy tags are labelled from (none: concept ids stand for labels).
    pub taxonomy: Option<&'static Taxonomy>,
    pub settings: ApiConfig,
    /// Recommendations (none when the collection holds nothing to recommend).
    pub recommender: Option<RecommendService<'static, AnyStore>>,
    /// Tagging requests running at once; beyond it, 429 at once (never a queue).
    tag_permits: Semaphore,
    counters: Counters,
    /// Per-key request rate (GCRA); none when `api.rate_per_key` is 0.
    limiter: Option<KeyedLimiter>,
}

type KeyedLimiter = governor::RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    governor::clock::DefaultClock,
>;

/// What `/metrics` counts beyond latency.
#[derive(Default)]
struct Counters {
    tagged: std::sync::atomic::AtomicU64,
    item_errors: std::sync::atomic::AtomicU64,
    fallbacks: std::sync::atomic::AtomicU64,
    overloaded: std::sync::atomic::AtomicU64,
    events: std::sync::atomic::AtomicU64,
}

impl ApiState {
    /// State over opened taggers.
    pub fn new(
        taggers: HashMap<TaggerKind, OpenTagger>,
        default_tagger: TaggerKind,
        taxonomy: Option<&'static Taxonomy>,
        settings: ApiConfig,
        recommender: Option<RecommendService<'static, AnyStore>>,
    ) -> Self {
        let limiter = std::num::NonZeroU32::new(settings.rate_per_key).map(|rate| {
            let burst = std::num::NonZeroU32::new(settings.rate_burst).unwrap_or(rate);
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            counters: Counters::default(),
            recommender,
            tag_permits: Semaphore::new(settings.tag_concurrency.max(1)),
            taggers,
            default_tagger,
            taxonomy,
            settings,
        }
    }
}

/// The hex sha256 of an API key: what the configuration stores instead of the key.
pub fn key_hash(key: &str) -> String {
    crate::embed::hex(&Sha256::digest(key.as_bytes()))
}

/// The caller's key must exist (401) and carry `scope` or `admin` (403).
fn authorize(state: &ApiState, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required (Authorization: Bearer KEY, or X-Api-Key)",
        ));
    };
    let hash = key_hash(presented.trim());
    let Some(key) = state.settings.keys.iter().find(|k| k.sha256 == hash) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown API key",
        ));
    };
    if let Some(limiter) = &state.limiter {
        if let Err(not_until) = limiter.check_key(&key.name) {
            use governor::clock::Clock;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            return Err(ApiError {
                retry_after: Some(wait.as_secs().max(1)),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "key {:?} is over api.rate_per_key ({}/s)",
                        key.name, state.settings.rate_per_key
                    ),
                )
            });
        }
    }
    if key.scopes.contains(&scope) || key.scopes.contains(&Scope::Admin) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("key {:?} lacks the {scope:?} scope", key.name).to_lowercase(),
        ))
    }
}

/// The router.
pub fn router(state: Arc<ApiState>) -> Router {
    let limit = state.settings.body_limit_bytes;
    let timeout = Duration::from_secs(state.settings.timeout_s.max(1));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/tag", post(tag))
        .route("/v1/recommend", post(recommend))
        .route("/v1/feedback", post(feedback))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(crate::observe::time_route))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            timeout,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Errors axum and tower answer in plain text (body limits, bad JSON, timeouts) become the JSON
/// error with a stable code.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.is_success() || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the body is over the size limit"),
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => {
            ("timeout", "the request took too long")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "invalid_request",
            "the body must be JSON (Content-Type: application/json)",
        ),
        s if s.is_client_error() => ("invalid_request", "the request is malformed"),
        _ => ("internal", "internal error"),
    };
    let status = if status == StatusCode::REQUEST_TIMEOUT {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        status
    };
    ApiError::new(status, code, message).into_response()
}

/// Prometheus text: per-route latency histograms and the API's counters.
async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &state.counters;
    let mut out = crate::observe::route_metrics();
    for (name, help, value) in [
        (
            "signaldesk_tag_items_total",
            "Items tagged through POST /v1/tag",
            c.tagged.load(Relaxed),
        ),
        (
            "signaldesk_tag_item_errors_total",
            "Batch items answered with their own error",
            c.item_errors.load(Relaxed),
        ),
        (
            "signaldesk_tag_fallbacks_total",
            "Items tagged without the LLM's answer (fallback)",
            c.fallbacks.load(Relaxed),
        ),
        (
            "signaldesk_tag_overloaded_total",
            "Tagging requests answered 429",
            c.overloaded.load(Relaxed),
        ),
        (
            "signaldesk_feedback_events_total",
            "User events recorded through POST /v1/feedback",
            c.events.load(Relaxed),
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    if state.taggers.is_empty() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no tagger is open",
        )
        .into_response();
    }
    Json(json!({"status": "ready", "taggers": state.taggers.keys().collect::<Vec<_>>()}))
        .into_response()
}

/// One item of `POST /v1/tag`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TagItem {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    taxonomy: Option<String>,
    #[serde(default)]
    tagger: Option<TaggerKind>,
}

/// `POST /v1/tag`: one item (an object) or a batch (an array of at most `api.max_batch`); the
/// answer is `{"items": [...]}` in input order, each `{id, tags, lineage, fallback_reason?}` or
/// `{id, error}`. A bad item never fails the others.
async fn tag(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let Ok(_permit) = state.tag_permits.try_acquire() else {
        state
            .counters
            .overloaded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            format!(
                "{} tagging requests are running; retry after a second",
                state.settings.tag_concurrency
            ),
        ));
    };
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("body", format!("not JSON: {e}")))?;
    let raw: Vec<Value> = match value {
        Value::Array(items) => items,
        item @ Value::Object(_) => vec![item],
        _ => {
            return Err(ApiError::invalid(
                "body",
                "an item object or an array of items",
            ))
        }
    };
    if raw.is_empty() || raw.len() > state.settings.max_batch {
        return Err(ApiError::invalid(
            "body",
            format!(
                "a batch holds 1 to {} items, this one {}",
                state.settings.max_batch,
                raw.len()
            ),
        ));
    }
    let mut answers: Vec<Option<Value>> = vec![None; raw.len()];
    // Valid items grouped by tagger, each group tagged in one call.
    let mut groups: HashMap<TaggerKind, Vec<(usize, Option<Value>, String)>> = HashMap::new();
    for (i, v) in raw.into_iter().enumerate() {
        let id = v.get("id").cloned();
        let item = match serde_json::from_value::<TagItem>(v) {
            Ok(item) => item,
            Err(e) => {
                answers[i] = Some(item_error(
                    id,
                    &ApiError::invalid(format!("items[{i}]"), e.to_string()),
                ));
                continue;
            }
        };
        let text = match (item.title.trim(), item.body.trim()) {
            ("", "") => {
                answers[i] = Some(item_error(
                    item.id,
                    &ApiError::invalid(format!("items[{i}].body"), "title and body are both empty"),
                ));
                continue;
            }
            (t, "") => t.to_string(),
            ("", b) => b.to_string(),
            (t, b) => format!("{t}\n{b}"),
        };
        if let Some(wanted) = &item.taxonomy {
            let known = state.taxonomy.map(|t| t.id());
            if known
                .as_deref()
                .is_none_or(|k| k != wanted && !k.starts_with(&format!("{wanted}@")))
            {
                answers[i] = Some(item_error(
                    item.id,
                    &ApiError::invalid(
                        format!("items[{i}].taxonomy"),
                        format!(
                            "this server tags against {}",
                            known.unwrap_or_else(|| "no taxonomy".into())
                        ),
                    ),
                ));
                continue;
            }
        }
        let kind = item.tagger.unwrap_or(state.default_tagger);
        if !state.taggers.contains_key(&kind) {
            let open: Vec<_> = state
                .taggers
                .keys()
                .map(|k| format!("{k:?}").to_lowercase())
                .collect();
            answers[i] = Some(item_error(
                item.id,
                &ApiError::invalid(
                    format!("items[{i}].tagger"),
                    format!("not open on this server (open: {})", open.join(", ")),
                ),
            ));
            continue;
        }
        groups.entry(kind).or_default().push((i, item.id, text));
    }
    for (kind, items) in groups {
        let open = &state.taggers[&kind];
        let texts: Vec<String> = items.iter().map(|(_, _, t)| t.clone()).collect();
        // Tagging embeds (CPU-bound) and its future is not provably Send (the LLM tagger's
        // buffered stream trips rustc's higher-ranked lifetime check), so it runs on the
        // blocking pool, driven by the runtime's handle there, off the async workers.
        let worker = state.clone();
        let tagged = tokio::task::spawn_blocking(move || {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            tokio::runtime::Handle::current()
                .block_on(worker.taggers[&kind].tagger.tag_items(&texts))
        })
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("tagging stopped: {e}"),
            )
        })?
        .map_err(|e| {
            tracing::error!(error = %e, "tagging failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("tagging failed: {e}"),
            )
        })?;
        for ((i, id, _), t) in items.into_iter().zip(tagged) {
            let tags: Vec<Value> = t
                .tags
                .iter()
                .map(|tag| {
                    let label = state
                        .taxonomy
                        .and_then(|tx| tx.get(&tag.label))
                        .map_or(tag.label.clone(), |c| c.label.clone());
                    json!({"id": tag.label, "label": label, "confidence": tag.confidence, "source": tag.source, "evidence": tag.evidence})
                })
                .collect();
            let mut answer = json!({"id": id, "tags": tags, "lineage": open.lineage});
            state
                .counters
                .tagged
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(reason) = t.fallback_reason {
                state
                    .counters
                    .fallbacks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                answer["fallback_reason"] = json!(reason);
            }
            answers[i] = Some(answer);
        }
    }
    let errors = answers
        .iter()
        .flatten()
        .filter(|a| a.get("error").is_some())
        .count();
    state
        .counters
        .item_errors
        .fetch_add(errors as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(Json(json!({"items": answers})).into_response())
}

/// `POST /v1/recommend` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecommendBody {
    user: String,
    #[serde(default = "ten")]
    k: usize,
    #[serde(default)]
    seed: Option<String>,
    #[serde(default)]
    experiment: Option<String>,
    #[serde(default)]
    ranker: Option<RankerKind>,
}

fn ten() -> usize {
    10
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("not JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| {
        let message = e.to_string();
        let field = message
            .split('`')
            .nth(1)
            .map_or("body".to_string(), str::to_string);
        ApiError::invalid(field, message)
    })
}

fn recommender(state: &ApiState) -> Result<&RecommendService<'static, AnyStore>, ApiError> {
    state.recommender.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "recommendations are off: the collection holds no items (ingest content, then restart)",
        )
    })
}

/// `POST /v1/recommend`: `{user, k?, seed?, experiment?, ranker?}`; the answer carries the
/// experiment variant and, per item, its features and each objective's contribution.
async fn recommend(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    recommender(&state)?;
    let request: RecommendBody = parse_body(&body)?;
    if request.k == 0 || request.k > 100 {
        return Err(ApiError::invalid("k", "k is 1 to 100"));
    }
    // As tagging: the store query's future is driven on the blocking pool.
    let worker = state.clone();
    let served = tokio::task::spawn_blocking(move || {
        let service = worker.recommender.as_ref().expect("checked above");
        tokio::runtime::Handle::current().block_on(service.recommend(
            &request.user,
            request.k,
            request.seed.as_deref(),
            request.experiment.as_deref(),
            request.ranker,
            None,
        ))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("recommend stopped: {e}"),
        )
    })?
    .map_err(|e| match e {
        crate::rank::RankError::UnknownItem(_) => ApiError::invalid("seed", e.to_string()),
        crate::rank::RankError::Experiments(_) => ApiError::invalid("experiment", e.to_string()),
        crate::rank::RankError::NoModel => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e.to_string())
        }
        e => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    })?;
    Ok(Json(served).into_response())
}

/// `POST /v1/feedback` body: a user's event (`{"type": "event", user, item, event, value?,
/// timestamp?}`), recorded in the interaction log at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    #[serde(rename = "type")]
    kind: String,
    user: String,
    item: String,
    event: String,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    timestamp: Option<String>,
}

async fn feedback(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Write)?;
    let service = recommender(&state)?;
    let body: FeedbackBody = parse_body(&body)?;
    if body.kind != "event" {
        return Err(ApiError::invalid(
            "type",
            "only \"event\" (a user's interaction) is accepted so far",
        ));
    }
    if body.event == "rating" && body.value.is_none() {
        return Err(ApiError::invalid("value", "a rating needs a value"));
    }
    let timestamp = match &body.timestamp {
        None => chrono::Utc::now().timestamp(),
        Some(raw) => parse_timestamp(raw).ok_or_else(|| {
            ApiError::invalid("timestamp", "Unix seconds, RFC 3339 or YYYY-MM-DD")
        })?,
    };
    let event = Interaction {
        user: body.user,
        item: body.item,
        event: body.event,
        value: body.value,
        timestamp,
    };
    service.record(&event).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })?;
    state
        .counters
        .events
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok((StatusCode::ACCEPTED, Json(json!({"recorded": event}))).into_response())
}

fn item_error(id: Option<Value>, e: &ApiError) -> Value {
    json!({"id": id, "error": e})
}

/// Serve until Ctrl-C, draining in-flight requests.
pub async fn serve(state: Arc<ApiState>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
