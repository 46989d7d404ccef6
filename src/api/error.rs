//! The API's one error type: an HTTP status, a stable code from [`ErrorCode`] (the only list of
//! codes; the OpenAPI document's schema is derived from it) and, for bad input, the JSON path
//! or parameter at fault. Library errors convert with `From`, so handlers use `?`: bad input a
//! caller can fix is a 400 naming its field, a missing collection a 404, a failing dependency
//! (store, embedder, LLM) a logged 503.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

/// Every error code the API answers with; stable, machine-readable, snake_case in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No API key, or an unknown one (401).
    Unauthorized,
    /// The key lacks the route's scope (403).
    Forbidden,
    /// The key is over `api.rate_per_key` (429, Retry-After).
    RateLimited,
    /// Bad input; `field` names the JSON path or parameter (400, 415).
    InvalidRequest,
    /// Too much work in flight (429, Retry-After).
    Overloaded,
    /// The body is over `api.body_limit_bytes` (413).
    TooLarge,
    /// The request took longer than `api.timeout_s` (504).
    Timeout,
    /// No such item, job, collection or route (404).
    NotFound,
    /// The route exists but not with this method (405).
    MethodNotAllowed,
    /// The server cannot answer this yet (no content, no trained model) (503).
    NotReady,
    /// A dependency failed: the store, the embedder or the LLM (503).
    Unavailable,
    /// One enrichment job at a time (409).
    Busy,
    /// A well-formed event or decision about an item the collection does not hold (422).
    UnknownItem,
    /// A decision on a label the item does not have, or an addition outside the taxonomy (422).
    InvalidLabel,
    /// A bug (500).
    Internal,
}

/// An API error: HTTP status and the JSON body `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// The JSON path (`items[2].title`) or query parameter at fault, for bad input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds for the Retry-After header (a 429 always has one, 1 when unset; a 503 when set).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// A 400 `invalid_request` naming the field at fault.
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
        }
    }

    /// A 404 `not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// A 503 `not_ready`.
    pub(crate) fn not_ready(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotReady,
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self }))).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.retry_after.is_some() {
            let seconds = self.retry_after.unwrap_or(1).to_string();
            response.headers_mut().insert(
                "retry-after",
                HeaderValue::from_str(&seconds).expect("digits are a valid header value"),
            );
        }
        response
    }
}

/// A store failure: a bad filter is the caller's (400 naming `filter`), a missing collection
/// a 404, anything else the store's (503).
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Filter(_) => ApiError::invalid("filter", e.to_string()),
            StoreError::NoCollection(_) => {
                ApiError::not_found("the collection holds nothing yet: POST /v1/content first")
            }
            e => unavailable("the store", e),
        }
    }
}

/// A search failure: an empty query or zero k is the caller's, store failures as the store's.
impl From<crate::search::SearchError> for ApiError {
    fn from(e: crate::search::SearchError) -> Self {
        use crate::search::SearchError;
        match e {
            SearchError::NoCollection(_) => {
                ApiError::not_found("the collection holds nothing yet: POST /v1/content first")
            }
            SearchError::EmptyQuery => ApiError::invalid("q", e.to_string()),
            SearchError::ZeroK => ApiError::invalid("k", e.to_string()),
            SearchError::Store(e) => e.into(),
            e => unavailable("search", e),
        }
    }
}

/// A recommender failure: an unknown seed or experiment is the caller's, no model yet is
/// `not_ready`, the rest the store's or the log's.
impl From<crate::rank::RankError> for ApiError {
    fn from(e: crate::rank::RankError) -> Self {
        use crate::rank::RankError;
        match e {
            RankError::UnknownItem(_) => ApiError::invalid("seed", e.to_string()),
            RankError::Experiments(_) => ApiError::invalid("experiment", e.to_string()),
            RankError::NoModel => ApiError::not_ready(e.to_string()),
            e => unavailable("recommend", e),
        }
    }
}

/// An interaction refused by the one event rule names its field.
/// A malformed event is a 400 naming its field; an event about an item the collection does not
/// hold is a 422 `unknown_item` naming `item`.
impl From<crate::rank::interactions::EventError> for ApiError {
    fn from(e: crate::rank::interactions::EventError) -> Self {
        if e.unknown_item {
            ApiError {
                field: Some(e.field.into()),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::UnknownItem,
                    e.reason,
                )
            }
        } else {
            ApiError::invalid(e.field, e.reason)
        }
    }
}

/// An editor's decision: refused ones name their field (an item not stored: 422
/// `unknown_item`; a label the item lacks, or outside the taxonomy: 422 `invalid_label`).
impl From<crate::enrich::editorial::DecisionError> for ApiError {
    fn from(e: crate::enrich::editorial::DecisionError) -> Self {
        use crate::enrich::editorial::DecisionError;
        let code = match &e {
            DecisionError::NoItem(_) => ErrorCode::UnknownItem,
            DecisionError::EmptyLabel => return ApiError::invalid("label", e.to_string()),
            DecisionError::NotATag { .. } | DecisionError::NotInTaxonomy { .. } => {
                ErrorCode::InvalidLabel
            }
            DecisionError::Log(_) | DecisionError::Store(_) => {
                return unavailable("recording the decision", e)
            }
        };
        ApiError {
            field: e.field().map(str::to_string),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
        }
    }
}

/// The JSON body as `T`. Not JSON: 400 naming `body`. JSON of the wrong shape: 400 naming the
/// JSON path of the value at fault (`k`, `items[2].title`), or the missing or unknown field.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    if parsed.is_ok() {
        // Anything after the value is not JSON either.
        deserializer
            .end()
            .map_err(|e| ApiError::invalid("body", format!("not JSON: {e}")))?;
    }
    parsed.map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid("body", format!("not JSON: {inner}"));
        }
        let path = e.path().to_string();
        let message = inner.to_string();
        // serde names a missing field in backticks, at the path of the object that lacks it.
        let missing = message
            .split('`')
            .nth(1)
            .filter(|_| message.starts_with("missing field"));
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_string(),
            (".", None) => "body".to_string(),
            (p, Some(name)) => format!("{p}.{name}"),
            (p, None) => p.to_string(),
        };
        ApiError::invalid(field, message)
    })
}

/// A batch item's own error entry.
pub(crate) fn item_error(id: Option<Value>, e: &ApiError) -> Value {
    json!({"id": id, "error": e})
}

/// A 503 for a failure of the store, the embedder or the LLM (logged).
pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{what} failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        format!("{what} failed: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        user: String,
        k: usize,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        title: String,
    }

    fn field_of(body: &str) -> Option<String> {
        parse_body::<Body>(body.as_bytes()).unwrap_err().field
    }

    #[test]
    fn a_bad_body_names_the_json_path_not_the_value() {
        assert_eq!(field_of(r#"{"user":"u1","k":-1}"#).as_deref(), Some("k"));
        assert_eq!(
            field_of(r#"{"user":"u1","k":1,"items":[{"title":"a"},{"title":7}]}"#).as_deref(),
            Some("items[1].title")
        );
        assert_eq!(field_of(r#"{"k":1}"#).as_deref(), Some("user"));
        assert_eq!(
            field_of(r#"{"user":"u","k":1,"x":0}"#).as_deref(),
            Some("x")
        );
        assert_eq!(
            field_of(r#"{"user":"u","k":1,"items":[{}]}"#).as_deref(),
            Some("items[0].title")
        );
        assert_eq!(field_of(r#"{"user":"#).as_deref(), Some("body"));
        assert_eq!(
            field_of(r#"{"user":"u","k":1} trailing"#).as_deref(),
            Some("body")
        );
    }
}
