//! Tagging and summarizing ad-hoc items (`POST /v1/tag`, `POST /v1/summarize`), and the
//! taxonomy editors pick labels from (`GET /v1/taxonomy`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    item_error, off_runtime, unavailable, ApiError, ApiState, Caller, Counters, ErrorCode, Read,
};
use crate::enrich::{AnyTagger, Tagger, TaggerKind};

/// One item of `POST /v1/tag`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagItem {
    /// Echoed back in the answer (a string or a number).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub id: Option<Value>,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: String,
    /// The taxonomy to tag against: it must be the server's (`name` or `name@version`).
    #[serde(default)]
    pub taxonomy: Option<String>,
    /// `knn`, `zeroshot`, `llm`, `ensemble` or `head`: one the server opened (`api.taggers`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub tagger: Option<TaggerKind>,
}

/// One item, or a batch of up to `api.max_batch`.
// The documented shape of the body, which the handler parses item by item (so one bad
// item gets its own error): read by the OpenAPI document only.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TagRequest {
    One(TagItem),
    Batch(Vec<TagItem>),
}

/// One tag of an answer.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TagOut {
    /// The taxonomy concept id.
    pub id: String,
    pub label: String,
    pub confidence: f32,
    /// `llm`, `knn`, `zeroshot`, `head`, `editor`, or several joined by `+`.
    pub source: String,
    /// What it rests on: for kNN the labelled neighbours' ids, for the LLM its quoted spans.
    pub evidence: Vec<String>,
}

/// One item's answer: its tags and their lineage, or its own error.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TagAnswer {
    /// The id as the item gave it (any JSON value; null when it gave none).
    pub id: Option<Value>,
    pub tags: Option<Vec<TagOut>>,
    /// Model, prompt version, taxonomy version, tagger settings.
    #[schema(value_type = Option<Object>)]
    pub lineage: Option<Value>,
    /// Why the LLM's answer is missing, when the other signals answered.
    pub fallback_reason: Option<String>,
    pub error: Option<ApiError>,
}

/// The answers in input order.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TagResponse {
    pub items: Vec<TagAnswer>,
}

/// The items of a one-or-many body: an object, or an array of 1 to `max` objects.
pub(crate) fn batch_of(body: &[u8], max: usize) -> Result<(Vec<Value>, bool), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("not JSON: {e}")))?;
    let (raw, single) = match value {
        Value::Array(items) => (items, false),
        item @ Value::Object(_) => (vec![item], true),
        _ => {
            return Err(ApiError::invalid(
                "body",
                "an item object or an array of items",
            ))
        }
    };
    if raw.is_empty() || raw.len() > max {
        return Err(ApiError::invalid(
            "body",
            format!("a batch holds 1 to {max} items, this one {}", raw.len()),
        ));
    }
    Ok((raw, single))
}

/// A permit for LLM- or model-bound work, or 429 at once.
fn permit(state: &ApiState) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    state.tag_permits.try_acquire().map_err(|_| {
        Counters::add(&state.counters.overloaded, 1);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Overloaded,
            format!(
                "{} tagging or summarizing requests are running; retry after a second",
                state.settings.tag_concurrency
            ),
        )
    })
}

/// `POST /v1/tag`: one item (an object) or a batch (an array of at most `api.max_batch`); the
/// answer is `{"items": [...]}` in input order, each `{id, tags, lineage, fallback_reason?}` or
/// `{id, error}`. A bad item never fails the others.
#[utoipa::path(post, path = "/v1/tag", tag = "tagging", request_body = TagRequest,
    responses((status = 200, description = "Per item, in input order", body = TagResponse)),
    security(("api_key" = ["read"])))]
pub(crate) async fn tag(
    State(state): State<Arc<ApiState>>,
    _caller: Caller<Read>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let _permit = permit(&state)?;
    let (raw, _) = batch_of(&body, state.settings.max_batch)?;
    let mut answers: Vec<Option<Value>> = vec![None; raw.len()];
    // Valid items grouped by tagger, each group tagged in one call.
    let mut groups: HashMap<TaggerKind, Vec<(usize, Option<Value>, String)>> = HashMap::new();
    for (i, v) in raw.into_iter().enumerate() {
        match tag_item_of(&state, i, v) {
            Ok((kind, id, text)) => groups.entry(kind).or_default().push((i, id, text)),
            Err(answer) => answers[i] = Some(answer),
        }
    }
    let admission = state.enter()?;
    for (kind, items) in groups {
        let texts: Vec<String> = items.iter().map(|(_, _, t)| t.clone()).collect();
        let tagged = tag_group(&state, &admission, kind, texts).await?;
        for ((i, id, _), t) in items.into_iter().zip(tagged) {
            answers[i] = Some(tag_answer(&state, kind, id, t));
        }
    }
    let errors = answers
        .iter()
        .flatten()
        .filter(|a| a.get("error").is_some())
        .count();
    Counters::add(&state.counters.item_errors, errors as u64);
    Ok(Json(json!({"items": answers})).into_response())
}

/// Item `i` of a tag request as (tagger, id, text), or its error answer naming the field.
fn tag_item_of(
    state: &ApiState,
    i: usize,
    v: Value,
) -> Result<(TaggerKind, Option<Value>, String), Value> {
    let id = v.get("id").cloned();
    let item = serde_json::from_value::<TagItem>(v)
        .map_err(|e| item_error(id, &ApiError::invalid(format!("items[{i}]"), e.to_string())))?;
    let refuse = |field: &str, message: String| {
        item_error(
            item.id.clone(),
            &ApiError::invalid(format!("items[{i}].{field}"), message),
        )
    };
    let Some(text) = crate::content::item_text(&item.title, &item.body) else {
        return Err(refuse("body", "title and body are both empty".into()));
    };
    if let Some(wanted) = &item.taxonomy {
        let known = state.taxonomy.map(|t| t.id());
        if known
            .as_deref()
            .is_none_or(|k| k != wanted && !k.starts_with(&format!("{wanted}@")))
        {
            let serving = known.unwrap_or_else(|| "no taxonomy".into());
            return Err(refuse(
                "taxonomy",
                format!("this server tags against {serving}"),
            ));
        }
    }
    let kind = item.tagger.unwrap_or(state.default_tagger);
    if !state.taggers.contains_key(&kind) {
        let open: Vec<_> = state
            .taggers
            .keys()
            .map(|k| format!("{k:?}").to_lowercase())
            .collect();
        return Err(refuse(
            "tagger",
            format!("not open on this server (open: {})", open.join(", ")),
        ));
    }
    Ok((kind, item.id, text))
}

/// Tag one tagger's texts. Tagging embeds (CPU-bound) and its future is not provably Send (the
/// LLM tagger's buffered stream trips rustc's higher-ranked lifetime check), so it runs on the
/// blocking pool, driven by the runtime's handle there, off the async workers.
async fn tag_group(
    state: &Arc<ApiState>,
    admission: &super::Admission,
    kind: TaggerKind,
    texts: Vec<String>,
) -> Result<Vec<crate::enrich::Tagged>, ApiError> {
    if matches!(state.taggers[&kind].tagger, AnyTagger::Knn(_)) {
        // kNN: the texts join the embedding batcher with other requests' texts, then the
        // memory is searched with their vectors (the same path as `Tagger::tag`).
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = state
            .batcher
            .embed_many(&refs)
            .await
            .map_err(|e| unavailable("embedding", e))?;
        let _worker = state.worker(admission).await?;
        off_runtime(state, move |s| async move {
            let AnyTagger::Knn(knn) = &s.taggers[&kind].tagger else {
                unreachable!("checked above")
            };
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            knn.tag_embedded(&texts, vectors).await.map(|all| {
                all.into_iter()
                    .map(|tags| crate::enrich::Tagged {
                        tags,
                        ..Default::default()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .await?
        .map_err(|e| unavailable("tagging", e))
    } else {
        let _worker = state.worker(admission).await?;
        off_runtime(state, move |s| async move {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            s.taggers[&kind].tagger.tag_items(&texts).await
        })
        .await?
        .map_err(|e| unavailable("tagging", e))
    }
}

/// One tagged item's answer (tags with their taxonomy labels, lineage, fallback), counted.
fn tag_answer(
    state: &ApiState,
    kind: TaggerKind,
    id: Option<Value>,
    t: crate::enrich::Tagged,
) -> Value {
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
    let lineage = &state.taggers[&kind].lineage;
    let mut answer = json!({"id": id, "tags": tags, "lineage": lineage});
    Counters::add(&state.counters.tagged, 1);
    state
        .counters
        .note_labels(t.tags.iter().map(|tag| tag.label.as_str()));
    if let Some(reason) = t.fallback_reason {
        Counters::add(&state.counters.fallbacks, 1);
        answer["fallback_reason"] = json!(reason);
    }
    answer
}

/// One item of `POST /v1/summarize`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummarizeItem {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub id: Option<Value>,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: String,
}

/// One item, or a batch of up to `api.max_batch`.
// The documented shape of the body, which the handler parses item by item (so one bad
// item gets its own error): read by the OpenAPI document only.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SummarizeRequest {
    One(SummarizeItem),
    Batch(Vec<SummarizeItem>),
}

/// One item's summary, or its own error.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SummaryAnswer {
    /// The id as the item gave it (any JSON value; null when it gave none).
    pub id: Option<Value>,
    pub summary: Option<String>,
    pub standfirst: Option<String>,
    /// `llm`, or `extractive` when the LLM's answer was missing or unusable.
    pub source: Option<String>,
    pub fallback_reason: Option<String>,
    /// Model, provider, prompt version, word limits.
    #[schema(value_type = Option<Object>)]
    pub lineage: Option<Value>,
    pub error: Option<ApiError>,
}

/// The answers in input order.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SummarizeResponse {
    pub items: Vec<SummaryAnswer>,
}

/// `POST /v1/summarize`: summaries of ad-hoc items, synchronously, each with its lineage. The
/// LLM answers; when it fails the extractive summarizer does, and `fallback_reason` says why.
#[utoipa::path(post, path = "/v1/summarize", tag = "tagging", request_body = SummarizeRequest,
    responses((status = 200, description = "Per item, in input order", body = SummarizeResponse)),
    security(("api_key" = ["read"])))]
pub(crate) async fn summarize(
    State(state): State<Arc<ApiState>>,
    _caller: Caller<Read>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if state.summarizer.is_none() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotReady,
            "summaries are off: api.llm is false",
        ));
    }
    let _permit = permit(&state)?;
    let (raw, _) = batch_of(&body, state.settings.max_batch)?;
    let mut answers: Vec<Value> = vec![Value::Null; raw.len()];
    let mut todo = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        let id = v.get("id").cloned();
        match serde_json::from_value::<SummarizeItem>(v) {
            Ok(item) if item.title.trim().is_empty() && item.body.trim().is_empty() => {
                answers[i] = item_error(
                    item.id,
                    &ApiError::invalid(format!("items[{i}].body"), "title and body are both empty"),
                );
            }
            Ok(item) => todo.push((i, item)),
            Err(e) => {
                answers[i] =
                    item_error(id, &ApiError::invalid(format!("items[{i}]"), e.to_string()));
            }
        }
    }
    let work: Vec<(usize, SummarizeItem)> = todo;
    let _admission = state.admit().await?;
    let done = off_runtime(&state, move |s| async move {
        let (summarizer, _) = s.summarizer.as_ref().expect("checked above");
        let mut out = Vec::with_capacity(work.len());
        for (i, item) in work {
            let key = item.id.as_ref().map_or(String::new(), |v| v.to_string());
            let summary = summarizer.summarize(&key, &item.title, &item.body).await;
            out.push((i, item.id, summary));
        }
        out
    })
    .await?;
    let (_, lineage) = state.summarizer.as_ref().expect("checked above");
    for (i, id, s) in done {
        Counters::add(&state.counters.summarized, 1);
        if s.fallback_reason.is_some() {
            Counters::add(&state.counters.summary_fallbacks, 1);
        }
        answers[i] = json!({
            "id": id, "summary": s.summary, "standfirst": s.standfirst, "source": s.source,
            "fallback_reason": s.fallback_reason, "lineage": lineage,
        });
    }
    Ok(Json(json!({ "items": answers })).into_response())
}

/// `GET /v1/taxonomy?q=` query.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaxonomyQuery {
    /// Concepts whose id or label contains this (case-insensitive); empty: all.
    #[serde(default)]
    #[param(required = false)]
    pub q: String,
    /// Most concepts answered (1 to 1000, default 20).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A taxonomy concept.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ConceptOut {
    pub id: String,
    pub label: String,
}

/// The matching concepts.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TaxonomyResponse {
    /// `name@version` of the taxonomy.
    pub taxonomy: Option<String>,
    /// Every item gets exactly one label of this taxonomy (a section, a desk).
    pub exclusive: bool,
    pub concepts: Vec<ConceptOut>,
}

/// `GET /v1/taxonomy?q=`: the active concepts matching `q`, for the editorial page's type-ahead.
#[utoipa::path(get, path = "/v1/taxonomy", tag = "tagging", params(TaxonomyQuery),
    responses((status = 200, description = "Matching concepts", body = TaxonomyResponse)),
    security(("api_key" = ["read"])))]
pub(crate) async fn taxonomy(
    State(state): State<Arc<ApiState>>,
    _caller: Caller<Read>,
    query: Result<Query<TaxonomyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit is 1 to 1000"));
    }
    let needle = query.q.trim().to_lowercase();
    let concepts: Vec<ConceptOut> = state
        .taxonomy
        .map(|t| t.concepts())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.active)
        .filter(|c| {
            needle.is_empty()
                || c.id.to_lowercase().contains(&needle)
                || c.label.to_lowercase().contains(&needle)
        })
        .take(limit)
        .map(|c| ConceptOut {
            id: c.id.clone(),
            label: c.label.clone(),
        })
        .collect();
    Ok(Json(TaxonomyResponse {
        taxonomy: state.taxonomy.map(|t| t.id()),
        exclusive: state.taxonomy.is_some_and(|t| t.exclusive),
        concepts,
    })
    .into_response())
}
