//! The HTTP API (`signaldesk serve`): a thin shell over the library. Content in and out
//! (`/v1/content`), tagging and summaries of ad-hoc items (`/v1/tag`, `/v1/summarize`), enrichment
//! jobs over stored items (`/v1/enrich`, `/v1/jobs/{id}`), search, recommendations, feedback (users'
//! events and editors' tag decisions), the local model's `/v1/chat/completions`, the editorial page,
//! and the operational routes (health, readiness, metrics, OpenAPI and its docs page).
//!
//! Every `/v1` route needs an API key with a scope (401 without one, 403 without the scope); every
//! error is JSON `{"error": {"code", "message", "field"?}}` with a stable code; overload is an
//! answer (429 with Retry-After), never an unbounded queue.

mod answer;
mod content;
mod error;
mod feedback;
pub mod openapi;
mod pages;
mod state;

pub(crate) use error::{item_error, parse_body, unavailable};
pub use error::{ApiError, ErrorCode};
pub use state::ApiSetupError;
mod tagging;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::config::{ApiConfig, Scope};
use crate::embed::Embedder;
use crate::enrich::editorial::EditorialLog;
use crate::enrich::summarizer::Summarizer;
use crate::enrich::taxonomy::Taxonomy;
use crate::enrich::{AnyTagger, TaggerKind};
use crate::llm::AnyLlm;
use crate::rank::service::RecommendService;
use crate::store::AnyStore;
use crate::Config;

/// A tagger the server opened at start, with the lineage its tags carry.
pub struct OpenTagger {
    pub tagger: AnyTagger<'static, AnyStore>,
    pub lineage: Value,
}

/// What the server opened at start, handed to [`ApiState::new`].
pub struct ApiParts {
    /// The store, embedder and configuration live as long as the process.
    pub store: &'static AnyStore,
    pub embedder: &'static Arc<Embedder>,
    pub config: &'static Config,
    pub taggers: HashMap<TaggerKind, OpenTagger>,
    pub default_tagger: TaggerKind,
    /// The taxonomy tags are labelled from (none: concept ids stand for labels).
    pub taxonomy: Option<&'static Taxonomy>,
    /// Recommendations (none while the collection holds nothing: opened at the first ingest).
    pub recommender: Option<RecommendService<'static, AnyStore>>,
    /// The LLM summaries use (and, when local, `/v1/chat/completions`); none: `api.llm` is off.
    pub llm: Option<&'static AnyLlm>,
    /// The summarizer over that LLM, with the lineage its summaries carry.
    pub summarizer: Option<(Summarizer<'static, AnyLlm>, Value)>,
    /// `POST /v1/ask`'s composer over that LLM (its prompt read once, at start).
    pub ask_composer: Option<crate::answer::ask::Composer<'static, AnyLlm>>,
    /// Content events go here instead of being ingested in the request (`stream.url` set).
    pub stream: Option<crate::stream::EventStream>,
    /// The last interactions-stream sequence the interaction log holds (0 without a stream).
    pub interactions_synced: u64,
    /// The last decisions-stream sequence the editors' log holds (0 without a stream).
    pub decisions_synced: u64,
}

/// What every handler shares.
pub struct ApiState {
    pub(crate) store: &'static AnyStore,
    pub(crate) embedder: &'static Arc<Embedder>,
    pub(crate) config: &'static Config,
    pub(crate) taggers: HashMap<TaggerKind, OpenTagger>,
    pub(crate) default_tagger: TaggerKind,
    pub(crate) taxonomy: Option<&'static Taxonomy>,
    pub(crate) settings: ApiConfig,
    recommender: std::sync::RwLock<Option<Arc<RecommendService<'static, AnyStore>>>>,
    pub(crate) llm: Option<&'static AnyLlm>,
    pub(crate) summarizer: Option<(Summarizer<'static, AnyLlm>, Value)>,
    pub(crate) ask_composer: Option<crate::answer::ask::Composer<'static, AnyLlm>>,
    pub(crate) editorial: EditorialLog,
    /// Query embeddings of concurrent requests, batched.
    pub(crate) batcher: crate::embed::batcher::EmbedBatcher,
    pub(crate) jobs: content::Jobs,
    /// Writes to the collection (ingest, delete) one at a time: each updates the collection's
    /// BM25 statistics, which two concurrent writers would race on. See [`Self::write_lock`].
    writes: Arc<tokio::sync::Mutex<()>>,
    /// Tagging and summarizing requests running at once; beyond it, 429 at once (never a queue).
    pub(crate) tag_permits: Semaphore,
    pub(crate) counters: Counters,
    /// Per-key request rate (GCRA); none when `api.rate_per_key` is 0.
    limiter: Option<KeyedLimiter>,
    /// CPU-bound requests computing at once (`api.workers`), and how many that is.
    workers: Arc<Semaphore>,
    worker_count: usize,
    /// Requests computing or waiting for a worker; at most `api.workers + api.queue`.
    admitted: Arc<std::sync::atomic::AtomicUsize>,
    /// The claim verifier: trained (or loaded from its cache) at the first `POST /v1/verify`.
    pub(crate) verifier: Arc<std::sync::Mutex<answer::VerifierState>>,
    /// `POST /v1/content` publishes here and answers 202 (`stream.url` set).
    pub(crate) stream: Option<crate::stream::EventStream>,
    /// This replica's name on the interactions it publishes (a random id per process): it
    /// applies its own events at once and skips them when following the stream.
    pub(crate) origin: String,
    /// The last interactions-stream sequence copied into the log at start: the follower
    /// continues after it.
    interactions_synced: u64,
    /// The same for the decisions stream and the editors' log.
    decisions_synced: u64,
}

/// A request's place among the workers: held while it computes, released on drop.
pub(crate) struct Admission {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    admitted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.admitted
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

type KeyedLimiter = governor::RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    governor::clock::DefaultClock,
>;

/// What `/metrics` counts beyond latency.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) tagged: std::sync::atomic::AtomicU64,
    pub(crate) item_errors: std::sync::atomic::AtomicU64,
    pub(crate) fallbacks: std::sync::atomic::AtomicU64,
    pub(crate) overloaded: std::sync::atomic::AtomicU64,
    pub(crate) events: std::sync::atomic::AtomicU64,
    pub(crate) ingested: std::sync::atomic::AtomicU64,
    pub(crate) summarized: std::sync::atomic::AtomicU64,
    pub(crate) summary_fallbacks: std::sync::atomic::AtomicU64,
    pub(crate) enriched: std::sync::atomic::AtomicU64,
    /// Label counts of recent tagging (the last [`RECENT_LABELS`] tags).
    pub(crate) recent_labels: std::sync::Mutex<std::collections::VecDeque<String>>,
    /// Editors' verdicts per (label, verdict).
    pub(crate) verdicts: std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>,
}

/// How many recent tags the label distribution on `/metrics` covers.
pub(crate) const RECENT_LABELS: usize = 1000;

impl Counters {
    pub(crate) fn add(counter: &std::sync::atomic::AtomicU64, n: u64) {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn note_labels<'a>(&self, labels: impl IntoIterator<Item = &'a str>) {
        let mut recent = self.recent_labels.lock().expect("labels lock");
        for l in labels {
            if recent.len() == RECENT_LABELS {
                recent.pop_front();
            }
            recent.push_back(l.to_string());
        }
    }
}

impl ApiState {
    /// State over what the server opened; opens the editorial log (`data_dir/editorial.jsonl`).
    pub fn new(parts: ApiParts) -> Result<Self, crate::enrich::editorial::EditorialError> {
        let settings = parts.config.api.clone();
        let limiter = std::num::NonZeroU32::new(settings.rate_per_key).map(|rate| {
            let burst = std::num::NonZeroU32::new(settings.rate_burst).unwrap_or(rate);
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        });
        let workers = match settings.workers {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        Ok(Self {
            workers: Arc::new(Semaphore::new(workers)),
            worker_count: workers,
            admitted: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            store: parts.store,
            embedder: parts.embedder,
            config: parts.config,
            editorial: EditorialLog::open(&crate::enrich::editorial::log_path(parts.config))?,
            batcher: crate::embed::batcher::EmbedBatcher::spawn(
                (*parts.embedder).clone(),
                parts.config.api.embed_batch.max(1),
            ),
            jobs: content::Jobs::default(),
            writes: Arc::new(tokio::sync::Mutex::new(())),
            limiter,
            counters: Counters::default(),
            recommender: std::sync::RwLock::new(parts.recommender.map(Arc::new)),
            llm: parts.llm,
            summarizer: parts.summarizer,
            ask_composer: parts.ask_composer,
            stream: parts.stream,
            origin: uuid::Uuid::new_v4().to_string(),
            interactions_synced: parts.interactions_synced,
            decisions_synced: parts.decisions_synced,
            tag_permits: Semaphore::new(settings.tag_concurrency.max(1)),
            taggers: parts.taggers,
            default_tagger: parts.default_tagger,
            taxonomy: parts.taxonomy,
            verifier: Arc::default(),
            settings,
        })
    }

    /// Wait for a worker to compute on (embedding, search, tagging, ranking), or 429 at once when
    /// `api.workers + api.queue` requests already compute or wait.
    pub(crate) async fn admit(&self) -> Result<Admission, ApiError> {
        let mut admission = self.enter()?;
        admission.permit = Some(self.worker(&admission).await?);
        Ok(admission)
    }

    /// A place in the bound of `api.workers + api.queue` without a worker yet: for a request
    /// whose first step is the embedding batcher (which batches whatever is admitted).
    pub(crate) fn enter(&self) -> Result<Admission, ApiError> {
        use std::sync::atomic::Ordering;
        let bound = self.settings.queue + self.worker_count;
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= bound {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            Counters::add(&self.counters.overloaded, 1);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::Overloaded,
                format!(
                    "{bound} requests are computing or waiting (api.workers + api.queue); retry after a second"
                ),
            ));
        }
        Ok(Admission {
            permit: None,
            admitted: self.admitted.clone(),
        })
    }

    /// A worker for an admitted request.
    pub(crate) async fn worker(
        &self,
        _admitted: &Admission,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.workers.clone().acquire_owned().await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "shutting down",
            )
        })
    }

    /// The one-writer lock, owned: moved into the write's work (run by [`off_runtime_to_end`]),
    /// it is held until the write ends, even when the request that started it timed out.
    pub(crate) async fn write_lock(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.writes.clone().lock_owned().await
    }

    /// The collection content goes into and is read from (`store.collection`).
    pub(crate) fn collection(&self) -> &str {
        &self.config.store.collection
    }

    /// The recommender, if one is open.
    pub(crate) fn recommender(&self) -> Option<Arc<RecommendService<'static, AnyStore>>> {
        self.recommender.read().expect("recommender lock").clone()
    }

    /// After the catalogue changed: reload it into the open recommender, or open one (the
    /// first content of an empty store).
    /// The recommender over the interaction log, with `stream.url` set the log first brought up
    /// to date with the interactions stream (every replica's events).
    pub(crate) async fn open_recommender(
        &self,
    ) -> Result<RecommendService<'static, AnyStore>, crate::rank::RankError> {
        open_recommender(self.store, self.config, self.stream.as_ref()).await
    }

    pub(crate) async fn catalogue_changed(&self) {
        let result = match self.recommender() {
            Some(service) => service.refresh().await,
            None => match self.open_recommender().await {
                Ok(service) => {
                    *self.recommender.write().expect("recommender lock") = Some(Arc::new(service));
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "recommendations were not refreshed");
        }
    }
}

/// [`ApiState::open_recommender`] before there is a state.
pub(crate) async fn open_recommender(
    store: &'static AnyStore,
    config: &'static Config,
    stream: Option<&crate::stream::EventStream>,
) -> Result<RecommendService<'static, AnyStore>, crate::rank::RankError> {
    sync_interactions(config, stream).await?;
    RecommendService::open(store, config, true).await
}

/// With a stream, copy the interactions this replica's log lacks into it; the last stream
/// sequence copied (0 without a stream).
pub(crate) async fn sync_interactions(
    config: &Config,
    stream: Option<&crate::stream::EventStream>,
) -> Result<u64, crate::rank::RankError> {
    let Some(stream) = stream else {
        return Ok(0);
    };
    let path = crate::rank::service::RankPaths::of(config).interactions;
    stream
        .sync_log(&path)
        .await
        .map_err(|e| crate::rank::RankError::Store(format!("the interactions stream: {e}")))
}

/// Follow the shared logs and apply the other replicas' events here: users' events to the
/// recommender, editors' decisions to the local editors' log (served tags are in the shared
/// store already); started by [`serve`] when `stream.url` is set. Each follower restarts after a
/// stream failure from the last event it applied.
fn follow_shared_logs(state: &Arc<ApiState>) {
    use crate::stream::logs::SharedLog;
    for (log, start) in [
        (SharedLog::Interactions, state.interactions_synced),
        (SharedLog::Decisions, state.decisions_synced),
    ] {
        let state = state.clone();
        tokio::spawn(async move {
            let Some(stream) = state.stream.as_ref() else {
                return;
            };
            let mut after = start;
            loop {
                let result = stream
                    .follow(log, after, &state.origin, |sequence, payload| {
                        after = sequence;
                        apply_followed(&state, log, payload);
                    })
                    .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, after, log = log.as_str(), "following a shared log failed; starting again");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

/// One event another replica published to a shared log, applied here.
fn apply_followed(state: &ApiState, log: crate::stream::logs::SharedLog, payload: &[u8]) {
    use crate::stream::logs::SharedLog;
    let applied = match log {
        SharedLog::Interactions => match serde_json::from_slice(payload) {
            // Without a recommender yet, it is copied into the log when one opens.
            Ok(event) => state
                .recommender()
                .map_or(Ok(()), |service| service.record(&event))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        SharedLog::Decisions => match serde_json::from_slice(payload) {
            Ok(decision) => state.editorial.record(&decision).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        // Read by experiments' readouts (which copy the stream), not by serving.
        SharedLog::Exposures => Ok(()),
    };
    if let Err(e) = applied {
        tracing::warn!(error = %e, log = log.as_str(), "a followed event was not applied");
    }
}

/// The hex sha256 of an API key: what the configuration stores instead of the key.
pub fn key_hash(key: &str) -> String {
    crate::fingerprint::hex(&Sha256::digest(key.as_bytes()))
}

/// A route's scope as a type, for [`Caller`]: a handler's arguments say which scope it needs.
pub(crate) trait RouteScope {
    const SCOPE: Scope;
}

/// The read scope: search, tagging, summaries, recommendations.
pub(crate) struct Read;
/// The write scope: content in and out, enrichment jobs, feedback.
pub(crate) struct Write;

impl RouteScope for Read {
    const SCOPE: Scope = Scope::Read;
}

impl RouteScope for Write {
    const SCOPE: Scope = Scope::Write;
}

/// The delete scope: `DELETE /v1/content/{id}`.
pub(crate) struct DeleteScope;
/// The jobs scope: collection-wide enrichment.
pub(crate) struct JobsScope;

impl RouteScope for DeleteScope {
    const SCOPE: Scope = Scope::Delete;
}

impl RouteScope for JobsScope {
    const SCOPE: Scope = Scope::Jobs;
}

/// The caller of a route that needs scope `S`, authorized (see [`authorize`]) before the handler
/// runs and before its body is read.
pub(crate) struct Caller<S> {
    /// The key's name (`api.keys[].name`): who an editor's decision is recorded under.
    pub name: String,
    scope: std::marker::PhantomData<S>,
}

impl<S: RouteScope + Send + Sync> axum::extract::FromRequestParts<Arc<ApiState>> for Caller<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        authorize(state, &parts.headers, S::SCOPE).map(|name| Caller {
            name,
            scope: std::marker::PhantomData,
        })
    }
}

/// The key a request presents: `Authorization: Bearer KEY` (the scheme in any case, as HTTP's
/// auth schemes are case-insensitive) or `X-Api-Key: KEY`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(key)
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// The rate bucket every request without a known key shares: guessing keys is rate-limited
/// like using one, and cannot use up a known key's bucket.
const UNKNOWN_KEY_BUCKET: &str = "\0unknown";

/// Spend one request of `bucket`'s rate (`api.rate_per_key`), or the 429 that says how long to
/// wait.
fn spend_rate(state: &ApiState, bucket: &str) -> Result<(), ApiError> {
    let Some(limiter) = &state.limiter else {
        return Ok(());
    };
    limiter.check_key(&bucket.to_string()).map_err(|not_until| {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let who = if bucket == UNKNOWN_KEY_BUCKET {
            "requests without a known key are".to_string()
        } else {
            format!("key {bucket:?} is")
        };
        ApiError {
            retry_after: Some(wait.as_secs().max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                format!(
                    "{who} over api.rate_per_key ({}/s)",
                    state.settings.rate_per_key
                ),
            )
        }
    })
}

/// The caller's key must exist (401) and carry `scope` or `admin` (403); answers the key's name.
/// Every attempt spends rate: a known key its own bucket, the rest one shared bucket.
fn authorize(state: &ApiState, headers: &HeaderMap, scope: Scope) -> Result<String, ApiError> {
    let Some(presented) = presented_key(headers) else {
        spend_rate(state, UNKNOWN_KEY_BUCKET)?;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "an API key is required (Authorization: Bearer KEY, or X-Api-Key)",
        ));
    };
    let hash = key_hash(presented);
    let Some(key) = state.settings.keys.iter().find(|k| k.sha256 == hash) else {
        spend_rate(state, UNKNOWN_KEY_BUCKET)?;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "unknown API key",
        ));
    };
    spend_rate(state, &key.name)?;
    if key.scopes.contains(&scope) || key.scopes.contains(&Scope::Admin) {
        Ok(key.name.clone())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!("key {:?} lacks the {scope:?} scope", key.name).to_lowercase(),
        ))
    }
}

/// The router: `/v1` routes behind API keys, the pages, and the operational routes.
pub fn router(state: Arc<ApiState>) -> Router {
    let limit = state.settings.body_limit_bytes;
    let timeout = Duration::from_secs(state.settings.timeout_s.max(1));
    let mut v1 = Router::new()
        .route("/v1/content", post(content::ingest))
        .route(
            "/v1/content/{id}",
            get(content::get_item).delete(content::delete_item),
        )
        .route("/v1/search", get(content::search))
        .route("/v1/enrich", post(content::enrich))
        .route("/v1/jobs/{id}", get(content::job))
        .route("/v1/tag", post(tagging::tag))
        .route("/v1/summarize", post(tagging::summarize))
        .route("/v1/taxonomy", get(tagging::taxonomy))
        .route("/v1/recommend", post(feedback::recommend))
        .route("/v1/feedback", post(feedback::feedback))
        .route("/v1/verify", post(answer::verify))
        .route("/v1/ask", post(answer::ask))
        .with_state(state.clone());
    if let Some(local) = state.llm.and_then(AnyLlm::local_model) {
        // The local model's OpenAI-compatible routes, behind this server's keys (llm scope).
        let options = crate::llm::serve::ServeOptions::from_config(&state.config.llm);
        let guard = state.clone();
        v1 = v1.merge(crate::llm::serve::chat_routes(local, options).layer(
            axum::middleware::from_fn(move |request: Request, next: Next| {
                let guard = guard.clone();
                async move {
                    match authorize(&guard, request.headers(), Scope::Llm) {
                        Ok(_) => next.run(request).await,
                        Err(e) => e.into_response(),
                    }
                }
            }),
        ));
    }
    let mut operations = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready));
    if state.settings.metrics_addr.is_empty() {
        operations = operations.route("/metrics", get(metrics));
    }
    operations
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/docs", get(pages::docs))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/editorial") }),
        )
        .route("/editorial", get(pages::editorial))
        .with_state(state)
        .merge(v1)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "this route does not answer that method (see /openapi.json)",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(crate::observe::time_route))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            timeout,
        ))
        // Outside the timeout, so its 504 becomes the JSON error too.
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(limit_uri))
        .layer(axum::middleware::from_fn(access_log))
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(request_span)
                // The access log below says how each request ended; no second line per request.
                .on_response(())
                .on_failure(()),
        )
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
            tower_http::request_id::MakeRequestUuid,
        ))
}

/// The router of the separate metrics listener (`api.metrics_addr`): `/metrics` and the health
/// probes, no keys, no API routes.
pub fn metrics_router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .with_state(state)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "the metrics listener serves /metrics, /healthz and /readyz only",
            )
        })
}

/// The span every request's log lines carry (its id, method and path). At ERROR level, so it is
/// recorded whenever any line is logged (at the default `warn`, an INFO span would be off and
/// error lines would lose their request id).
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::error_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// The access log: one line per request, at INFO under the `access` target, which the default
/// log filter keeps (`SIGNALDESK_LOG` can turn it off with `access=off`).
async fn access_log(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let key = request.headers().get("authorization").is_some()
        || request.headers().get("x-api-key").is_some();
    let response = next.run(request).await;
    tracing::info!(
        target: "access",
        %method,
        %path,
        status = response.status().as_u16(),
        ms = (started.elapsed().as_secs_f64() * 1e3).round() as u64,
        key,
        "served"
    );
    response
}

/// The longest request target the API reads (path and query): longer ones are answered 414 with
/// the JSON error naming `uri`. hyper itself refuses request lines over 64 KiB before any of
/// this runs (its empty-bodied 414; not configurable), so the API's own bound sits below it.
pub const MAX_URI_BYTES: usize = 16 * 1024;

async fn limit_uri(request: Request, next: Next) -> Response {
    let len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if len > MAX_URI_BYTES {
        return ApiError {
            field: Some("uri".into()),
            ..ApiError::new(
                StatusCode::URI_TOO_LONG,
                ErrorCode::TooLarge,
                format!("the request target is {len} bytes, over {MAX_URI_BYTES}: send long input in a POST body"),
            )
        }
        .into_response();
    }
    next.run(request).await
}

/// Errors axum and tower answer in plain text (body limits, bad JSON, timeouts) become the JSON
/// error with a stable code. Redirects and other non-errors pass as they are.
///
/// An error answering a request that carried a body says `Connection: close`: a key or rate
/// check refuses before the body is read, the server then cannot reuse the connection, and a
/// client that pooled it would send its next request into a closing socket (seen as an
/// incomplete message right after a 401).
async fn json_errors(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let carries_body = headers.contains_key(axum::http::header::TRANSFER_ENCODING)
        || headers
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let mut response = rewrite_error(next.run(request).await);
    if carries_body && (response.status().is_client_error() || response.status().is_server_error())
    {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A plain-text error as the JSON error (see [`json_errors`]).
fn rewrite_error(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::TooLarge, "the body is over the size limit"),
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => (
            ErrorCode::Timeout,
            "the request took longer than api.timeout_s; its work was stopped (a write finishes first)",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ErrorCode::InvalidRequest,
            "the body must be JSON (Content-Type: application/json)",
        ),
        s if s.is_client_error() => (ErrorCode::InvalidRequest, "the request is malformed"),
        _ => (ErrorCode::Internal, "internal error"),
    };
    let status = if status == StatusCode::REQUEST_TIMEOUT {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        status
    };
    if status.is_server_error() {
        // In the request's span: the line carries its request id.
        tracing::warn!(status = status.as_u16(), code = ?code, "{message}");
    }
    ApiError::new(status, code, message).into_response()
}

/// Prometheus text: per-route latency histograms, pipeline stages, LLM usage by provider and
/// model, the API's counters and its quality signals (fallback rate, editors' verdicts per label,
/// the label distribution of recent tagging).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let c = &state.counters;
    let mut out = crate::observe::route_metrics();
    out.push_str(&crate::observe::stage_metrics());
    out.push_str(&crate::llm::accounting::prometheus());
    if let Some(stream) = &state.stream {
        out.push_str(&stream.prometheus().await);
    }
    for (name, help, value) in [
        (
            "signaldesk_tag_items_total",
            "Items tagged through POST /v1/tag",
            &c.tagged,
        ),
        (
            "signaldesk_tag_item_errors_total",
            "Batch items answered with their own error",
            &c.item_errors,
        ),
        (
            "signaldesk_tag_fallbacks_total",
            "Items tagged without the LLM's answer (fallback)",
            &c.fallbacks,
        ),
        (
            "signaldesk_overloaded_total",
            "Tagging and summarizing requests answered 429",
            &c.overloaded,
        ),
        (
            "signaldesk_feedback_events_total",
            "User events recorded through POST /v1/feedback",
            &c.events,
        ),
        (
            "signaldesk_ingested_items_total",
            "Items written through POST /v1/content",
            &c.ingested,
        ),
        (
            "signaldesk_summarized_items_total",
            "Items summarized through POST /v1/summarize",
            &c.summarized,
        ),
        (
            "signaldesk_summary_fallbacks_total",
            "Summaries the extractive summarizer answered (LLM fallback)",
            &c.summary_fallbacks,
        ),
        (
            "signaldesk_enriched_items_total",
            "Stored items tagged by enrichment jobs",
            &c.enriched,
        ),
    ] {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            value.load(Relaxed)
        );
    }
    let name = "signaldesk_editor_verdicts_total";
    let _ = write!(
        out,
        "# HELP {name} Editors' tag decisions by label and verdict (rejection rate: reject / all)\n# TYPE {name} counter\n"
    );
    for ((label, verdict), n) in c.verdicts.lock().expect("verdicts lock").iter() {
        let _ = writeln!(
            out,
            "{name}{{label=\"{}\",verdict=\"{verdict}\"}} {n}",
            escape_label(label)
        );
    }
    let name = "signaldesk_recent_tag_labels";
    let _ = write!(
        out,
        "# HELP {name} Label distribution of the last {RECENT_LABELS} tags given\n# TYPE {name} gauge\n"
    );
    let mut counts = std::collections::BTreeMap::new();
    for l in c.recent_labels.lock().expect("labels lock").iter() {
        *counts.entry(l.clone()).or_insert(0u64) += 1;
    }
    for (label, n) in counts {
        let _ = writeln!(out, "{name}{{label=\"{}\"}} {n}", escape_label(&label));
    }
    let _ = write!(
        out,
        "# HELP signaldesk_ready Whether the server is ready (1) or not (0)\n# TYPE signaldesk_ready gauge\nsignaldesk_ready {}\n",
        u8::from(readiness(&state).await.is_ok())
    );
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

/// A Prometheus label value with its backslashes, quotes and newlines escaped.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Ready when the store answers, a tagger is open and the LLM is configured (or local).
async fn readiness(state: &ApiState) -> Result<Value, String> {
    use crate::store::VectorStore;
    if state.taggers.is_empty() {
        return Err("no tagger is open".into());
    }
    state
        .store
        .list_collections()
        .await
        .map_err(|e| format!("the store does not answer: {e}"))?;
    let llm = state.llm.map(|l| {
        use crate::llm::LlmClient;
        json!({"provider": l.provider(), "model": l.model()})
    });
    Ok(json!({
        "status": "ready",
        "store": state.store.backend(),
        "embedder": state.embedder.model_id(),
        "taggers": state.taggers.keys().collect::<Vec<_>>(),
        "llm": llm,
        "recommender": state.recommender().is_some(),
    }))
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = Object)))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store answers, a tagger is open, the LLM is configured (or local).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Object)))]
async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    match readiness(&state).await {
        Ok(v) => Json(v).into_response(),
        Err(reason) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotReady, reason)
            .into_response(),
    }
}

/// Run a library future on the blocking pool, driven by the runtime's handle there, in the
/// request's span (its log lines carry the request id). Taggers' and the recommender's futures
/// are not provably `Send` (the LLM tagger's buffered stream trips rustc's higher-ranked lifetime
/// check), and tagging embeds (CPU-bound), so this also keeps that work off the async workers.
///
/// The work stops when the request does: a request dropped at `api.timeout_s` (or by a client
/// that went away) drops the work's future, which stops a search, an embedding batch between
/// batches, an LLM call (the local model at its next token). Writes use [`off_runtime_to_end`].
pub(crate) async fn off_runtime<T, F>(
    state: &Arc<ApiState>,
    work: impl FnOnce(Arc<ApiState>) -> F + Send + 'static,
) -> Result<T, ApiError>
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    // Dropped with this future: the blocking side sees its receiver fail and drops the work.
    let (_running, stopped) = tokio::sync::oneshot::channel::<()>();
    let out = off_runtime_to_end(state, move |state| async move {
        tokio::select! {
            out = work(state) => Some(out),
            _ = stopped => None,
        }
    })
    .await?;
    out.ok_or_else(|| ApiError::new(StatusCode::GATEWAY_TIMEOUT, ErrorCode::Timeout, "stopped"))
}

/// [`off_runtime`] for writes: the work runs to its end even when the request is dropped at
/// `api.timeout_s`, so whatever it holds (the write lock: see [`ApiState::write_lock`]) is held
/// until the write is done and no second writer runs beside it.
pub(crate) async fn off_runtime_to_end<T, F>(
    state: &Arc<ApiState>,
    work: impl FnOnce(Arc<ApiState>) -> F + Send + 'static,
) -> Result<T, ApiError>
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    use tracing::Instrument;
    let state = state.clone();
    // The request's span, so the work's log lines carry its request id.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current().block_on(work(state).instrument(span))
    })
    .await
    .map_err(stopped_work)
}

fn stopped_work(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        format!("the work stopped: {e}"),
    )
}

/// Serve until Ctrl-C or SIGTERM, draining in-flight requests; background jobs are waited for
/// (each writes as it goes) before returning. `metrics`: the separate listener `/metrics` is
/// served on when `api.metrics_addr` is set (the caller binds it, as it binds the API's).
pub async fn serve(
    state: Arc<ApiState>,
    listener: tokio::net::TcpListener,
    metrics: Option<tokio::net::TcpListener>,
) -> std::io::Result<()> {
    if let Some(metrics) = metrics {
        let app = metrics_router(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, app).await {
                tracing::error!("the metrics listener stopped: {e}");
            }
        });
    }
    if state.stream.is_some() {
        follow_shared_logs(&state);
    }
    if state.settings.refresh_s > 0 {
        let worker = state.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs(worker.settings.refresh_s);
            let mut seen = 0;
            loop {
                tokio::time::sleep(period).await;
                let events = worker
                    .counters
                    .events
                    .load(std::sync::atomic::Ordering::Relaxed);
                if events != seen {
                    seen = events;
                    let w = worker.clone();
                    // The refresh's future is not provably Send (see `off_runtime`).
                    let _ = tokio::task::spawn_blocking(move || {
                        tokio::runtime::Handle::current().block_on(w.catalogue_changed())
                    })
                    .await;
                }
            }
        });
    }
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    state.jobs.wait_all().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down: draining in-flight requests");
}
