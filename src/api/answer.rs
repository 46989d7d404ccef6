//! `POST /v1/verify` and `POST /v1/ask`: a claim or a question against the archive, through
//! [`crate::answer::verify::verify`] and [`crate::answer::ask::ask`], the functions
//! `signaldesk verify` and `signaldesk ask` call.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::ErrorCode;
use super::{off_runtime, ApiError, ApiState, Caller, Read};
use crate::answer::ask::{Answer, AskError, AskProgress};
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

/// The items to read (1 to 20; default `answer.k`) and the payload filter of a verify or ask
/// request: one validation for both routes.
fn retrieval(
    state: &ApiState,
    k: Option<usize>,
    filter: &[String],
) -> Result<(usize, Filter), ApiError> {
    let k = match k {
        Some(k) if !(1..=20).contains(&k) => return Err(ApiError::invalid("k", "k is 1 to 20")),
        Some(k) => k,
        None => state.config.answer.k,
    };
    Ok((k, Filter::parse_pairs(filter)?))
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
    let (k, filter) = retrieval(&state, request.k, &request.filter)?;
    settings.k = k;
    let verifier = verifier(&state)?;
    let admission = state.enter()?;
    let _worker = state.worker(&admission).await?;
    let verification = off_runtime(&state, move |s| async move {
        let collection = settings.collection_or(s.collection());
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

/// `POST /v1/ask` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The question.
    pub question: String,
    /// Items retrieved and read (1 to 20; default `answer.k`).
    #[serde(default)]
    pub k: Option<usize>,
    /// Payload filters as `GET /v1/search` takes them (`source=reuters`, `published_at>=2025-03-01`).
    #[serde(default)]
    pub filter: Vec<String>,
    /// Answer as server-sent events: `passages` (the citable context), `text` (`{"text": …}`,
    /// the statements' words as the LLM writes them), one `statement` per statement (with its
    /// citations), then `answer` (the whole answer, citations and lineage), or `error` (the
    /// JSON error) if it fails after the events began.
    #[serde(default)]
    pub stream: bool,
    /// Compose with the server's LLM when it has one (default true); false answers extractively.
    #[serde(default = "yes")]
    pub llm: bool,
}

fn yes() -> bool {
    true
}

/// `POST /v1/ask`: an answer whose every statement cites the passages it rests on (item id +
/// byte span, resolvable with `GET /v1/content/{id}`), or "not in the archive"; with
/// `"stream": true`, server-sent events (`passages`, `text` as the words are written,
/// `statement` per statement, `answer`; `error` if it fails once events have begun).
#[utoipa::path(post, path = "/v1/ask", tag = "content", request_body = AskRequest,
    responses((status = 200, description = "The answer with its citations (JSON, or `text/event-stream` with `stream: true`)", body = crate::answer::ask::Answer)),
    security(("api_key" = ["read"])))]
pub(crate) async fn ask(
    State(state): State<Arc<ApiState>>,
    _caller: Caller<Read>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: AskRequest = super::parse_body(&body)?;
    if request.question.trim().is_empty() {
        return Err(ApiError::invalid("question", "the question is empty"));
    }
    let (k, filter) = retrieval(&state, request.k, &request.filter)?;
    let verifier = verifier(&state)?;
    let admission = state.enter()?;
    let worker = state.worker(&admission).await?;
    let stream = request.stream;
    let (progress, reports) = tokio::sync::mpsc::unbounded_channel();
    let on = state.clone();
    let answering = async move {
        off_runtime(&on, move |s| async move {
            let settings = &s.config.answer;
            let collection = settings.collection_or(s.collection());
            let composer = s.ask_composer.as_ref().filter(|_| request.llm);
            let searcher = Searcher::open(s.store, s.embedder, &collection, &s.config.search)
                .await
                .map_err(|e| AskError::Chain(e.into()))?;
            crate::answer::ask::ask(
                s.store,
                &searcher,
                &verifier,
                composer,
                &settings.ask,
                k,
                &request.question,
                &filter,
                stream.then_some(&progress),
            )
            .await
        })
        .await
    };
    let answering = async move {
        answering.await?.map_err(|e| match e {
            AskError::EmptyQuestion => ApiError::invalid("question", e.to_string()),
            AskError::Chain(VerifyError::Search(e)) => e.into(),
            e => super::unavailable("answering", e),
        })
    };
    if !stream {
        return Ok(Json(answering.await?).into_response());
    }
    let timeout = Duration::from_secs(state.settings.timeout_s.max(1));
    Ok(answer_as_events(
        (admission, worker),
        answering,
        reports,
        timeout,
    ))
}

/// One server-sent event: its name and its data as JSON.
fn sse_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(data).expect("answers serialize"))
}

/// An answer streamed as server-sent events: the work runs beside the response and its
/// progress becomes events as it comes (`passages`, `text`), then `statement`s and `answer`, or
/// `error` (its JSON) when it fails or passes `timeout` once events have begun. A client that
/// goes away closes the channel, and the work is dropped with the task; `held` (the request's
/// admission and worker) is released when the work ends.
fn answer_as_events(
    held: impl Send + 'static,
    answering: impl std::future::Future<Output = Result<Answer, ApiError>> + Send + 'static,
    mut reports: tokio::sync::mpsc::UnboundedReceiver<AskProgress>,
    timeout: Duration,
) -> Response {
    let (events, sent) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let _held = held;
        let forward = async {
            while let Some(report) = reports.recv().await {
                let e = match report {
                    AskProgress::Passages(p) => sse_event("passages", &p),
                    AskProgress::Text(t) => sse_event("text", &json!({ "text": t })),
                };
                if events.send(e).await.is_err() {
                    return;
                }
            }
        };
        let work = async { tokio::join!(answering, forward).0 };
        let last = tokio::select! {
            done = tokio::time::timeout(timeout, work) => match done {
                Ok(Ok(answer)) => {
                    for s in &answer.statements {
                        let _ = events.send(sse_event("statement", s)).await;
                    }
                    sse_event("answer", &answer)
                }
                Ok(Err(e)) => sse_event("error", &json!({ "error": e })),
                Err(_) => {
                    let e = ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        ErrorCode::Timeout,
                        "the answer took longer than api.timeout_s; it was stopped",
                    );
                    sse_event("error", &json!({ "error": e }))
                }
            },
            () = events.closed() => return,
        };
        let _ = events.send(last).await;
    });
    let body = futures_util::stream::unfold(sent, |mut sent| async move {
        sent.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), sent))
    });
    Sse::new(body).into_response()
}
