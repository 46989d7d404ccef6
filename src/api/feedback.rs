//! Recommendations (`POST /v1/recommend`) and feedback (`POST /v1/feedback`): a user's event,
//! recorded at once so their next list reflects it, or an editor's decision on a tag.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    off_runtime, parse_body, unavailable, ApiError, ApiState, Caller, Counters, ErrorCode, Read,
    Write,
};
use crate::enrich::editorial::{decide, TagDecision, Verdict};
use crate::rank::interactions::{EventRules, RawEvent};
use crate::rank::recommender::RankerKind;
use crate::rank::service::RecommendService;
use crate::store::AnyStore;

/// `POST /v1/recommend` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendBody {
    /// The user the list is for (their history shapes it).
    pub user: String,
    /// Items (1 to 100, default 10).
    #[serde(default = "ten")]
    pub k: usize,
    /// A seed item: items like it ("more like this").
    #[serde(default)]
    pub seed: Option<String>,
    /// Serve through this experiment's variants (`rank.experiments`).
    #[serde(default)]
    pub experiment: Option<String>,
    /// `blend`, `popularity`, `cooccurrence`, `dense` (default: the blend when trained).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ranker: Option<RankerKind>,
}

fn ten() -> usize {
    10
}

/// A served list: the variant, and per item its features and each objective's contribution.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RecommendResponse {
    pub user: String,
    pub exposure_id: String,
    pub ranker: String,
    pub model_version: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub assignment: Option<Value>,
    #[schema(value_type = Vec<Object>)]
    pub items: Value,
    /// Each item's probability of being at its position under the serving policy: 1 for a
    /// deterministic list, an exploring variant's marginals; empty for an interleaved list.
    pub propensities: Vec<f64>,
    /// An interleaving experiment's list: the variant each item was drafted for.
    pub teams: Option<Vec<String>>,
}

fn recommender(state: &ApiState) -> Result<Arc<RecommendService<'static, AnyStore>>, ApiError> {
    state.recommender().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotReady,
            "recommendations are off: the collection holds no items yet (POST /v1/content)",
        )
    })
}

/// `POST /v1/recommend`: `{user, k?, seed?, experiment?, ranker?}`; the answer carries the
/// experiment variant and, per item, its features and each objective's contribution.
#[utoipa::path(post, path = "/v1/recommend", tag = "recommend", request_body = RecommendBody,
    responses((status = 200, description = "The list", body = RecommendResponse)),
    security(("api_key" = ["read"])))]
pub(crate) async fn recommend(
    State(state): State<Arc<ApiState>>,
    _caller: Caller<Read>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let service = recommender(&state)?;
    let request: RecommendBody = parse_body(&body)?;
    if request.k == 0 || request.k > 100 {
        return Err(ApiError::invalid("k", "k is 1 to 100"));
    }
    let _admission = state.admit().await?;
    let served = off_runtime(&state, move |_| async move {
        service
            .recommend(
                &request.user,
                request.k,
                request.seed.as_deref(),
                request.experiment.as_deref(),
                request.ranker,
                None,
            )
            .await
    })
    .await??;
    // Every replica's lists in one place for experiments; off the response's path (the list is
    // answered whether or not the stream took its exposure, as the local log does).
    if let (Some(exposure), Some(_)) = (&served.exposure, &state.stream) {
        let (state, exposure) = (state.clone(), exposure.clone());
        tokio::spawn(async move {
            if let Some(stream) = &state.stream {
                if let Err(e) = stream.publish_exposure(&exposure, &state.origin).await {
                    tracing::warn!(error = %e, exposure = %exposure.id, "the exposure was not published");
                }
            }
        });
    }
    Ok(Json(served).into_response())
}

/// `POST /v1/feedback` body: a user's event or an editor's tag decision.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeedbackBody {
    /// A user's interaction, into the interaction log at once. `user`, `item` and `event` are
    /// required; they are checked by the one event rule (`signaldesk interactions ingest`'s
    /// too), which names the field at fault.
    Event {
        /// The user (not blank).
        user: Option<String>,
        /// A stored item's id.
        item: Option<String>,
        /// `view`, `click`, `play`, `like`, `share`, `rating`, `skip`... (`rank.event_weights`).
        event: Option<String>,
        value: Option<f64>,
        /// Unix seconds, RFC 3339 or YYYY-MM-DD (default: now).
        timestamp: Option<String>,
    },
    /// An editor accepts, rejects or adds a tag on a stored item; the editor is the key's name.
    Tag {
        item: String,
        /// The taxonomy concept id.
        label: String,
        /// `accept`, `reject` or `add`.
        verdict: Verdict,
    },
}

/// `POST /v1/feedback`: a user's event (recorded in the interaction log; their next list
/// reflects it) or an editor's tag decision (logged with who and when; `signaldesk feedback
/// export` turns decisions into golden data).
#[utoipa::path(post, path = "/v1/feedback", tag = "recommend", request_body = FeedbackBody,
    responses((status = 202, description = "Recorded", body = Object)),
    security(("api_key" = ["write"])))]
pub(crate) async fn feedback(
    State(state): State<Arc<ApiState>>,
    caller: Caller<Write>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let who = caller.name;
    match parse_body::<FeedbackBody>(&body)? {
        FeedbackBody::Event {
            user,
            item,
            event,
            value,
            timestamp,
        } => {
            let service = recommender(&state)?;
            let raw = RawEvent {
                user,
                item,
                event,
                value: value.map(|v| v.to_string()),
                timestamp,
            };
            let recommender = service.recommender();
            let is_stored = |id: &str| recommender.catalogue.position(id).is_some();
            let vocabulary = state.config.rank.event_vocabulary();
            let rules = EventRules {
                now: chrono::Utc::now().timestamp(),
                is_stored: Some(&is_stored),
                vocabulary: Some(&vocabulary),
            };
            let event = raw.validate(&rules)?;
            // Durable in the stream before it is answered, so every replica gets it; this
            // replica applies it at once (and skips it when following the stream).
            if let Some(stream) = &state.stream {
                stream
                    .publish_interaction(&event, &state.origin)
                    .await
                    .map_err(|e| unavailable("publishing the event", e))?;
            }
            service
                .record(&event)
                .map_err(|e| unavailable("recording the event", e))?;
            Counters::add(&state.counters.events, 1);
            Ok((StatusCode::ACCEPTED, Json(json!({"recorded": event}))).into_response())
        }
        FeedbackBody::Tag {
            item,
            label,
            verdict,
        } => {
            let decision = TagDecision {
                item,
                label,
                verdict,
                editor: who,
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            };
            let recorded = decision.clone();
            let (served, logged) = off_runtime(&state, move |s| async move {
                decide(s.store, s.collection(), &s.editorial, s.taxonomy, recorded).await
            })
            .await??;
            // The other replicas' editors' logs and the workers' re-tagging get it from the
            // stream (the served tags are in the shared store already).
            if let Some(stream) = &state.stream {
                stream
                    .publish_decisions(&logged, &state.origin)
                    .await
                    .map_err(|e| unavailable("publishing the decision", e))?;
            }
            state.catalogue_changed().await;
            let verdict_name = serde_json::to_value(decision.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *state
                .counters
                .verdicts
                .lock()
                .expect("verdicts lock")
                .entry((decision.label.clone(), verdict_name))
                .or_insert(0) += 1;
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({"recorded": decision, "tags": served})),
            )
                .into_response())
        }
    }
}
