//! Content in and out (`/v1/content`), search (`/v1/search`) and enrichment jobs over stored
//! items (`/v1/enrich`, `/v1/jobs/{id}`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::tagging::batch_of;
use super::{
    item_error, off_runtime, off_runtime_to_end, unavailable, ApiError, ApiState, Caller, Counters,
    DeleteScope, ErrorCode, JobsScope, Read, Write,
};
use crate::config::SearchMode;
use crate::content::{ContentItem, Limits};
use crate::enrich::editorial::reviewed_tags;
use crate::ingest::pipeline::{ingest_items, IngestOptions};
use crate::ingest::reindex::read_item;
use crate::search::Searcher;
use crate::store::{Filter, VectorStore};

/// One item's status in a `POST /v1/content` answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IngestAnswer {
    /// The id as the item gave it (any JSON value; null when it gave none).
    pub id: Option<Value>,
    /// `new`, `updated`, `unchanged`, or `superseded` (a later item of this batch had the id);
    /// with `stream.url` set, `queued` (published for the workers; the answer is then 202).
    pub status: Option<String>,
    pub error: Option<ApiError>,
    /// `queued` items: the event's sequence in the content stream.
    pub sequence: Option<u64>,
    /// `queued` items: NATS dropped the event as already published (same id and content).
    pub duplicate: Option<bool>,
    /// `queued` items: where the item can be read once a worker has ingested it.
    pub location: Option<String>,
}

/// The statuses in input order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IngestResponse {
    pub collection: String,
    pub items: Vec<IngestAnswer>,
}

/// An item as ingested: `id`, `title`, `body` (or `text`), and optionally `url`, `source`,
/// `content_type` (`article`, `episode`, `other`), `language`, `published_at`, `metadata`.
// The documented shape of the body, which the handler parses item by item (so one bad
// item gets its own error): read by the OpenAPI document only.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct ContentIn {
    #[schema(value_type = String)]
    pub id: Value,
    pub title: Option<String>,
    pub body: Option<String>,
    pub url: Option<String>,
    pub source: Option<String>,
    pub content_type: Option<String>,
    pub language: Option<String>,
    pub published_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// One item, or a batch of up to `api.max_batch`.
// The documented shape of the body, which the handler parses item by item (so one bad
// item gets its own error): read by the OpenAPI document only.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ContentRequest {
    One(Box<ContentIn>),
    Batch(Vec<ContentIn>),
}

/// `POST /v1/content`: ingest one item or a batch, exactly as `signaldesk ingest` does (same
/// validation, chunking, embedding and change detection). Each item gets its status or its own
/// error (naming the field); a bad item never fails the others.
#[utoipa::path(post, path = "/v1/content", tag = "content", request_body = ContentRequest,
    responses((status = 200, description = "Per item, in input order", body = IngestResponse),
        (status = 202, description = "With stream.url set: per item, in input order, queued for the workers", body = IngestResponse)),
    security(("api_key" = ["write"])))]
pub(crate) async fn ingest(
    State(state): State<Arc<ApiState>>,
    _caller: Caller<Write>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (raw, _) = batch_of(&body, state.settings.max_batch)?;
    let limits = Limits {
        max_body_bytes: state.config.ingest.max_body_bytes,
    };
    let mut answers: Vec<Value> = vec![Value::Null; raw.len()];
    let mut valid: Vec<(usize, ContentItem)> = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        let id = v.get("id").cloned();
        let Value::Object(obj) = v else {
            answers[i] = item_error(
                id,
                &ApiError::invalid(format!("items[{i}]"), "not an object"),
            );
            continue;
        };
        match ContentItem::from_json(obj, limits) {
            Ok(item) => valid.push((i, item)),
            Err(e) => {
                answers[i] = item_error(
                    id,
                    &ApiError::invalid(format!("items[{i}].{}", e.field), e.message),
                );
            }
        }
    }
    // The last item of each id wins, as in a file.
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, item) in &valid {
        last.insert(item.id.clone(), *i);
    }
    let mut order = Vec::new();
    let mut items = Vec::new();
    for (i, item) in valid {
        if last[&item.id] == i {
            order.push(i);
            items.push(item);
        } else {
            answers[i] = json!({"id": item.id, "status": "superseded"});
        }
    }
    if let (Some(stream), false) = (&state.stream, items.is_empty()) {
        return queue(&state, stream, order, items, answers).await;
    }
    if !items.is_empty() {
        let admission = state.admit().await?;
        let write = state.write_lock().await;
        // To the end, holding the lock and its worker: a write that outlives api.timeout_s
        // finishes before the next one starts (the caller got a 504 and may retry: ingest is
        // idempotent), and still counts against api.workers while it runs.
        let statuses = off_runtime_to_end(&state, move |s| async move {
            let (_write, _admission) = (write, admission);
            let options = IngestOptions::configured(s.config, s.collection(), s.embedder);
            let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
            let statuses = ingest_items(s.store, (*s.embedder).clone(), items, &options)
                .await
                .map(|statuses| ids.into_iter().zip(statuses).collect::<Vec<_>>());
            if let Ok(written) = &statuses {
                Counters::add(&s.counters.ingested, written.len() as u64);
                s.catalogue_changed().await;
            }
            statuses
        })
        .await?
        .map_err(|e| unavailable("ingest", e))?;
        for (i, (id, status)) in order.into_iter().zip(statuses) {
            answers[i] = json!({"id": id, "status": status});
        }
    }
    Ok(Json(json!({"collection": state.collection(), "items": answers})).into_response())
}

/// `POST /v1/content` with `stream.url` set: the items are published as content events for the
/// workers and the answer is 202; each item says `queued`, its stream sequence, whether NATS
/// dropped it as already published, and where it can be read once a worker has ingested it.
async fn queue(
    state: &ApiState,
    stream: &crate::stream::EventStream,
    order: Vec<usize>,
    items: Vec<ContentItem>,
    mut answers: Vec<Value>,
) -> Result<Response, ApiError> {
    let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    let mut summary = crate::stream::PublishSummary::default();
    let published = stream
        .publish_items(state.collection(), items, &mut summary)
        .await
        .map_err(|e| unavailable("publishing to the event stream", e))?;
    for ((i, id), p) in order.into_iter().zip(ids).zip(published) {
        let location = format!(
            "/v1/content/{}",
            percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
        );
        answers[i] = json!({
            "id": id, "status": "queued", "sequence": p.sequence, "duplicate": p.duplicate,
            "location": location,
        });
    }
    let body = json!({"collection": state.collection(), "items": answers});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// A stored item with its enrichment and editors' decisions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoredItem {
    #[schema(value_type = Object)]
    pub item: Value,
    /// The stored tags (`tag_scores`) with each one's latest editor verdict, then editors'
    /// additions (source `editor`).
    #[schema(value_type = Vec<Object>)]
    pub tags: Value,
    /// The concept ids the item serves (search filters, hits, recommendations): the model's
    /// tags minus editors' rejections plus their additions.
    pub served_tags: Vec<String>,
    pub summary: Option<String>,
    pub standfirst: Option<String>,
    /// `tags` and `summary` lineage as enrichment stored them.
    #[schema(value_type = Object)]
    pub lineage: Value,
    /// Editors' decisions on this item, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub decisions: Value,
}

/// `GET /v1/content/{id}`: the item, its tags (with editors' verdicts), summaries and lineage.
#[utoipa::path(get, path = "/v1/content/{id}", tag = "content",
    params(("id" = String, Path, description = "The item's id")),
    responses((status = 200, description = "The stored item", body = StoredItem)),
    security(("api_key" = ["read"])))]
pub(crate) async fn get_item(
    State(state): State<Arc<ApiState>>,
    _caller: Caller<Read>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (item, extra) = read_stored(&state, &id).await?;
    let decisions = state
        .editorial
        .of_item(&id)
        .map_err(|e| unavailable("the editorial log", e))?;
    let mut labelled = reviewed_tags(extra.get("tag_scores"), &decisions);
    let titles = evidence_titles(&state, &extra, &labelled).await;
    for tag in &mut labelled {
        // The neighbours behind a kNN tag, by title (an editor cannot judge a bare id).
        if let Some(evidence) = tag.get("evidence").and_then(Value::as_array) {
            let named: Vec<Value> = evidence
                .iter()
                .filter_map(Value::as_str)
                .map(|id| json!({"id": id, "title": titles.get(id)}))
                .collect();
            tag["evidence_titles"] = json!(named);
        }
        let label = tag["label"].as_str().unwrap_or_default().to_string();
        let name = state
            .taxonomy
            .and_then(|t| t.get(&label))
            .map_or(label.clone(), |c| c.label.clone());
        tag["id"] = json!(label);
        tag["label"] = json!(name);
    }
    let text = |k: &str| extra.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Json(json!({
        "item": item,
        "tags": labelled,
        "served_tags": extra.get("tags").cloned().unwrap_or_else(|| json!([])),
        "summary": text("summary"),
        "standfirst": text("standfirst"),
        "lineage": {"tags": extra.get("tags_lineage"), "summary": extra.get("summary_lineage")},
        "decisions": decisions,
    }))
    .into_response())
}

/// Titles of the labelled-memory items the tags cite as evidence (the memory the tags' lineage
/// names); an id the memory no longer holds has none.
async fn evidence_titles(
    state: &Arc<ApiState>,
    extra: &Map<String, Value>,
    tags: &[Value],
) -> HashMap<String, String> {
    let Some(memory) = extra
        .get("tags_lineage")
        .and_then(|l| l.get("memory"))
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return HashMap::new();
    };
    let ids: Vec<(String, usize)> = tags
        .iter()
        .filter_map(|t| t.get("evidence").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .map(|id| (id.to_string(), 0))
        .collect();
    if ids.is_empty() {
        return HashMap::new();
    }
    let found = off_runtime(state, move |s| async move {
        use crate::store::VectorStore;
        s.store.get(&memory, &ids).await
    })
    .await;
    match found {
        Ok(Ok(chunks)) => chunks
            .into_iter()
            .filter_map(|c| {
                let title = c.payload.get("title")?.as_str()?.to_string();
                Some((c.content_id, title))
            })
            .collect(),
        _ => HashMap::new(),
    }
}

/// The stored item `id`, or 404.
async fn read_stored(
    state: &Arc<ApiState>,
    id: &str,
) -> Result<(ContentItem, Map<String, Value>), ApiError> {
    let id_owned = id.to_string();
    match off_runtime(state, move |s| async move {
        read_item(s.store, s.collection(), &id_owned).await
    })
    .await?
    {
        Ok(Some(found)) => Ok(found),
        Ok(None)
        | Err(crate::ingest::pipeline::IngestError::Store(
            crate::store::StoreError::NoCollection(_),
        )) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no item {id:?}"),
        )),
        Err(e) => Err(unavailable("reading the item", e)),
    }
}

/// `DELETE /v1/content/{id}`: remove the item and all its chunks.
#[utoipa::path(delete, path = "/v1/content/{id}", tag = "content",
    params(("id" = String, Path, description = "The item's id")),
    responses((status = 200, description = "Deleted", body = Object)),
    security(("api_key" = ["delete"])))]
pub(crate) async fn delete_item(
    State(state): State<Arc<ApiState>>,
    _caller: Caller<DeleteScope>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    read_stored(&state, &id).await?;
    let write = state.write_lock().await;
    let target = id.clone();
    off_runtime_to_end(&state, move |s| async move {
        let _write = write;
        s.store
            .delete_content(s.collection(), &target, 0)
            .await
            .map_err(|e| e.to_string())?;
        // Its decisions go with it: an item posted later under this id starts unreviewed.
        s.editorial
            .archive_item(&target)
            .map_err(|e| e.to_string())?;
        s.catalogue_changed().await;
        Ok::<_, String>(())
    })
    .await?
    .map_err(|e| unavailable("deleting", e))?;
    Ok(Json(json!({"deleted": id})).into_response())
}

/// `GET /v1/search` query.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The query text (not blank).
    #[param(min_length = 1, pattern = "\\S")]
    pub q: String,
    /// `dense`, `bm25` or `hybrid` (default: `search.mode`).
    #[param(value_type = Option<String>)]
    pub mode: Option<SearchMode>,
    /// Payload filters, comma-separated `field=value` pairs (`source=reuters,language=en`).
    pub filter: Option<String>,
    /// Results (1 to 100, default 10).
    #[param(minimum = 1, maximum = 100)]
    pub k: Option<usize>,
}

/// Search hits, best first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    #[schema(value_type = Vec<Object>)]
    pub hits: Value,
}

/// `GET /v1/search?q=&mode=&filter=&k=`: the library's one search path, as `signaldesk search`.
#[utoipa::path(get, path = "/v1/search", tag = "content", params(SearchQuery),
    responses((status = 200, description = "Hits, best first", body = SearchResponse)),
    security(("api_key" = ["read"])))]
pub(crate) async fn search(
    State(state): State<Arc<ApiState>>,
    _caller: Caller<Read>,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    if query.q.trim().is_empty() {
        return Err(ApiError::invalid("q", "the query is empty"));
    }
    let k = query.k.unwrap_or(10);
    if !(1..=100).contains(&k) {
        return Err(ApiError::invalid("k", "k is 1 to 100"));
    }
    let pairs: Vec<String> = query
        .filter
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let filter = Filter::parse_pairs(&pairs)?;
    let mode = query.mode.unwrap_or(state.config.search.mode);
    let admission = state.enter()?;
    let dense = match mode {
        SearchMode::Bm25 => Vec::new(),
        _ => state
            .batcher
            .embed(&query.q)
            .await
            .map_err(|e| unavailable("embedding the query", e))?,
    };
    let _worker = state.worker(&admission).await?;
    let hits = off_runtime(&state, move |s| async move {
        let searcher =
            Searcher::open(s.store, s.embedder, s.collection(), &s.config.search).await?;
        searcher
            .search_embedded(&[query.q.as_str()], vec![dense], mode, &filter, k)
            .await
            .map(|mut all| all.pop().unwrap_or_default())
    })
    .await??;

    Ok(Json(json!({ "hits": hits })).into_response())
}

/// `POST /v1/enrich` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrichRequest {
    /// A tagger the server opened (default: the first of `api.taggers`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub tagger: Option<crate::enrich::TaggerKind>,
    /// Only items whose stored tags came from another lineage (default true).
    #[serde(default)]
    pub only_stale: Option<bool>,
    /// At most this many items.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Summarize the items too (needs `api.llm`).
    #[serde(default)]
    pub summaries: bool,
}

/// A background job's state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub id: String,
    pub kind: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Items done so far, and the total when known.
    pub done: usize,
    pub total: Option<usize>,
    pub started_at: String,
    pub finished_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<String>,
}

/// The server's background jobs (kept for the process's life; one enrichment at a time).
#[derive(Default)]
pub(crate) struct Jobs {
    status: Mutex<BTreeMap<String, JobStatus>>,
    progress: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    running: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Jobs {
    fn get(&self, id: &str) -> Option<JobStatus> {
        let mut status = self.status.lock().expect("jobs lock").get(id).cloned()?;
        if let Some(p) = self.progress.lock().expect("jobs lock").get(id) {
            status.done = status.done.max(p.load(Ordering::Relaxed));
        }
        Some(status)
    }

    fn busy(&self) -> Option<String> {
        self.status
            .lock()
            .expect("jobs lock")
            .values()
            .find(|j| j.state == "running")
            .map(|j| j.id.clone())
    }

    fn finish(&self, id: &str, result: Result<Value, String>) {
        let mut all = self.status.lock().expect("jobs lock");
        let Some(job) = all.get_mut(id) else { return };
        job.finished_at = Some(now());
        match result {
            Ok(v) => {
                job.state = "done".into();
                job.done = job.total.unwrap_or(job.done).max(job.done);
                job.result = Some(v);
            }
            Err(e) => {
                job.state = "failed".into();
                job.error = Some(e);
            }
        }
    }

    /// Wait for every job still running (graceful shutdown).
    pub(crate) async fn wait_all(&self) {
        let handles: Vec<_> = std::mem::take(&mut *self.running.lock().expect("jobs lock"));
        for h in handles {
            let _ = h.await;
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `POST /v1/enrich`: tag (and optionally summarize) the stored items in the background, as
/// `signaldesk enrich` does; answers 202 with the job, whose progress `GET /v1/jobs/{id}` shows.
/// One enrichment runs at a time: another request meanwhile gets 409 `busy`.
#[utoipa::path(post, path = "/v1/enrich", tag = "content", request_body = EnrichRequest,
    responses((status = 202, description = "The job started", body = JobStatus)),
    security(("api_key" = ["jobs"])))]
pub(crate) async fn enrich(
    State(state): State<Arc<ApiState>>,
    _caller: Caller<JobsScope>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: EnrichRequest = if body.iter().all(u8::is_ascii_whitespace) {
        EnrichRequest::default()
    } else {
        super::parse_body(&body)?
    };
    let kind = request.tagger.unwrap_or(state.default_tagger);
    if !state.taggers.contains_key(&kind) {
        return Err(ApiError::invalid(
            "tagger",
            "not open on this server (api.taggers)",
        ));
    }
    if request.summaries && state.summarizer.is_none() {
        return Err(ApiError::invalid(
            "summaries",
            "summaries are off: api.llm is false",
        ));
    }
    if request.limit == Some(0) {
        return Err(ApiError::invalid("limit", "limit is at least 1"));
    }
    if let Some(running) = state.jobs.busy() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Busy,
            format!("enrichment job {running} is running; poll /v1/jobs/{running}"),
        ));
    }
    let total = match crate::enrich::collection::items_to_enrich(
        state.store,
        state.collection(),
        request.limit,
    )
    .await
    {
        Ok(n) => n,
        Err(crate::store::StoreError::NoCollection(_)) => 0,
        Err(e) => return Err(unavailable("counting items", e)),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let job = JobStatus {
        id: id.clone(),
        kind: "enrich".into(),
        state: "running".into(),
        done: 0,
        total: Some(total),
        started_at: now(),
        finished_at: None,
        result: None,
        error: None,
    };
    let progress = Arc::new(AtomicUsize::new(0));
    state
        .jobs
        .status
        .lock()
        .expect("jobs lock")
        .insert(id.clone(), job.clone());
    state
        .jobs
        .progress
        .lock()
        .expect("jobs lock")
        .insert(id.clone(), progress.clone());
    let worker = state.clone();
    let job_id = id.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let result = tokio::runtime::Handle::current()
            .block_on(run_enrich(&worker, kind, &request, &progress));
        if result.is_ok() {
            tokio::runtime::Handle::current().block_on(worker.catalogue_changed());
        }
        worker.jobs.finish(&job_id, result);
    });
    state.jobs.running.lock().expect("jobs lock").push(handle);
    let mut response = (StatusCode::ACCEPTED, Json(job)).into_response();
    response.headers_mut().insert(
        "location",
        axum::http::HeaderValue::from_str(&format!("/v1/jobs/{id}")).expect("a valid header"),
    );
    Ok(response)
}

async fn run_enrich(
    state: &ApiState,
    kind: crate::enrich::TaggerKind,
    request: &EnrichRequest,
    progress: &AtomicUsize,
) -> Result<Value, String> {
    use crate::enrich::collection::{enrich_stored, EnrichOptions};
    let open = &state.taggers[&kind];
    let options = EnrichOptions::for_run(
        state.config,
        request.only_stale.unwrap_or(true),
        request.limit,
        state.llm.and_then(|llm| llm.price(&state.config.llm)),
    )
    .map_err(|e| e.to_string())?;
    let summarizer = match (request.summaries, &state.summarizer) {
        (true, Some((summarizer, _))) => Some(summarizer),
        _ => None,
    };
    let outcome = enrich_stored(
        state.store,
        state.collection(),
        &open.tagger,
        &open.lineage,
        summarizer,
        &options,
        |_, n| progress.store(n, Ordering::Relaxed),
    )
    .await
    .map_err(|e| e.to_string())?;
    Counters::add(&state.counters.enriched, outcome.tags.tagged as u64);
    Ok(json!(outcome))
}

/// `GET /v1/jobs/{id}`: a background job's progress and, once done, its result.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "content",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The job", body = JobStatus)),
    security(("api_key" = ["read"])))]
pub(crate) async fn job(
    State(state): State<Arc<ApiState>>,
    _caller: Caller<Read>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state
        .jobs
        .get(&id)
        .map(|j| Json(j).into_response())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("no job {id:?}"),
            )
        })
}
