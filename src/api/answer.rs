//! `POST /v1/verify`: a claim against the archive, through [`crate::answer::verify::verify`],
//! the function `signaldesk verify` calls.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{off_runtime, ApiError, ApiState, Caller, Read};
use crate::answer::verifier::Verifier;
use crate::answer::verify::VerifyError;
use crate::search::Searcher;
use crate::store::Filter;

/// Where the server's verifier stands: it is trained (or read from its cache) once, in the
/// background, at the first request that needs it.
#[derive(Default)]
pub enum VerifierState {
    #[default]
    Idle,
    Training,
    Ready(Arc<Verifier>),
    Failed(String),
}

/// `POST /v1/verify` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The claim to verify.
    pub claim: String,
    /// Items retrieved and read (1 to 20; default `answer.k`).
    #[serde(default)]
    pub k: Option<usize>,
    /// Payload filters as `GET /v1/search` takes them (`source=reuters`, `published_at>=2025-03-01`).
    #[serde(default)]
    pub filter: Vec<String>,
}

/// The verifier, or why not yet: the first call starts its training (about a minute; cached
/// under `cache_dir/verifier/` for later starts) and answers 503 with Retry-After until it is
/// ready.
fn verifier(state: &Arc<ApiState>) -> Result<Arc<Verifier>, ApiError> {
    let mut slot = state.verifier.lock().expect("verifier lock");
    match &*slot {
        VerifierState::Ready(v) => return Ok(v.clone()),
        VerifierState::Failed(e) => {
            return Err(ApiError::not_ready(format!(
                "the verifier could not be trained: {e}"
            )))
        }
        VerifierState::Training => {}
        VerifierState::Idle => {
            *slot = VerifierState::Training;
            let shared = state.verifier.clone();
            let embedder: Arc<crate::embed::Embedder> = Arc::clone(state.embedder);
            let config = state.config;
            tokio::task::spawn_blocking(move || {
                let a = &config.answer;
                let done = Verifier::load_or_train(
                    &embedder,
                    &a.training_claims,
                    &a.training_corpus,
                    &config.cache_dir,
                    |status| tracing::info!("{status}"),
                );
                *shared.lock().expect("verifier lock") = match done {
                    Ok(v) => VerifierState::Ready(Arc::new(v)),
                    Err(e) => {
                        tracing::error!(error = %e, "training the verifier failed");
                        VerifierState::Failed(e.to_string())
                    }
                };
            });
        }
    }
    Err(ApiError {
        retry_after: Some(30),
        ..ApiError::not_ready(
            "the verifier is being trained (first use, about a minute; cached after): retry",
        )
    })
}

/// `POST /v1/verify`: SUPPORT, CONTRADICT or NOT_ENOUGH_INFO for a claim, with the items that
/// decide it and their rationale sentences as byte spans into each item's text (resolvable with
/// `GET /v1/content/{id}`), every retrieved item's probabilities, the lineage and stage timings.
#[utoipa::path(post, path = "/v1/verify", tag = "content", request_body = VerifyRequest,
    responses((status = 200, description = "The verdict and its evidence", body = crate::answer::verify::Verification)),
    security(("api_key" = ["read"])))]
pub(crate) async fn verify(
    State(state): State<Arc<ApiState>>,
    _caller: Caller<Read>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: VerifyRequest = super::parse_body(&body)?;
    if request.claim.trim().is_empty() {
        return Err(ApiError::invalid("claim", "the claim is empty"));
    }
    let mut settings = state.config.answer.clone();
    if let Some(k) = request.k {
        if !(1..=20).contains(&k) {
            return Err(ApiError::invalid("k", "k is 1 to 20"));
        }
        settings.k = k;
    }
    let filter = Filter::parse_pairs(&request.filter)?;
    let verifier = verifier(&state)?;
    let admission = state.enter()?;
    let _worker = state.worker(&admission).await?;
    let verification = off_runtime(&state, move |s| async move {
        let collection = if settings.collection.is_empty() {
            s.collection().to_string()
        } else {
            settings.collection.clone()
        };
        let searcher = Searcher::open(s.store, s.embedder, &collection, &s.config.search).await?;
        crate::answer::verify::verify(
            s.store,
            &searcher,
            &verifier,
            &settings,
            &request.claim,
            &filter,
        )
        .await
    })
    .await?
    .map_err(|e| match e {
        VerifyError::EmptyClaim => ApiError::invalid("claim", e.to_string()),
        VerifyError::Search(e) => e.into(),
        e => super::unavailable("verifying", e),
    })?;
    Ok(Json(verification).into_response())
}
