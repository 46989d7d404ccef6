//! The OpenAPI 3 document (`/openapi.json`), generated from the handlers' annotations and the
//! request and answer types. Every operation also lists the JSON errors any route can answer
//! (added once here, so no route can forget one).

use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use super::{answer, content, feedback, tagging, ApiError, ErrorCode};

/// The error body every failure carries.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ApiError,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "signaldesk",
        description = "Content intelligence: ingest, tag, summarize, search and recommend. Every /v1 route needs an API key (Authorization: Bearer KEY, or X-Api-Key) with the route's scope."
    ),
    paths(
        super::healthz,
        super::ready,
        super::metrics,
        content::ingest,
        content::get_item,
        content::delete_item,
        content::search,
        content::enrich,
        content::job,
        tagging::tag,
        tagging::summarize,
        tagging::taxonomy,
        feedback::recommend,
        feedback::feedback,
        answer::verify,
        answer::ask,
    ),
    components(schemas(ErrorBody, ApiError, ErrorCode)),
    modifiers(&Common),
    tags(
        (name = "content", description = "Content in and out, search, enrichment jobs"),
        (name = "tagging", description = "Tags and summaries of ad-hoc items"),
        (name = "recommend", description = "Recommendations and feedback"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "llm", description = "The local model's OpenAI-compatible routes"),
    )
)]
struct ApiDoc;

/// Adds the API-key scheme and, to every operation, the JSON errors it may answer.
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = doc.components.as_mut() {
            components.add_security_scheme(
                "api_key",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
            components.add_security_scheme(
                "api_key_header",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
            );
        }
        let error = |description: &str| {
            let mut r = Response::new(description);
            r.content.insert(
                "application/json".into(),
                RefOr::T(Content::new(Some(Ref::from_schema_name("ErrorBody")))),
            );
            RefOr::T(r)
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let secured = path.starts_with("/v1/");
            for op in [&mut item.get, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                let mut codes = vec![
                    ("400", "Bad request (the field at fault is named)"),
                    ("404", "Not found"),
                    ("405", "Method not allowed"),
                    ("413", "Body over api.body_limit_bytes"),
                    (
                        "414",
                        "Request target over 16 KiB (send long input in a POST body)",
                    ),
                    ("415", "Not JSON"),
                    (
                        "503",
                        "Not ready (the verifier training at first use: Retry-After), or the store or LLM failed",
                    ),
                    ("504", "Over api.timeout_s"),
                ];
                if secured {
                    codes.extend([
                        ("401", "No API key, or an unknown one"),
                        ("403", "The key lacks the route's scope"),
                        ("409", "Busy (an enrichment job is running)"),
                        (
                            "422",
                            "Names an item that is not stored, or a label the item lacks",
                        ),
                        ("429", "Over the key's rate, or overloaded (Retry-After)"),
                    ]);
                }
                for (code, description) in codes {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error(description));
                }
            }
        }
    }
}

/// The document as JSON: the annotated routes, the local model's OpenAI-compatible routes, and
/// on every secured operation the key in either header (`Authorization: Bearer` or `X-Api-Key`).
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    add_chat_routes(&mut doc);
    for item in doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|p| p.values_mut())
    {
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|i| i.values_mut())
        {
            let Some(security) = op.get_mut("security").and_then(Value::as_array_mut) else {
                continue;
            };
            let header: Vec<Value> = security
                .iter()
                .filter_map(|r| r.get("api_key"))
                .map(|scopes| serde_json::json!({ "api_key_header": scopes }))
                .collect();
            security.extend(header);
        }
    }
    doc
}

/// `POST /v1/chat/completions` and `GET /v1/models`: the local model's routes (`llm.provider =
/// "local"` with `api.llm`; otherwise 404), behind the `llm` scope. Their request and answer
/// follow OpenAI's chat completions (the official SDK is the contract test), so they are
/// described here rather than derived from types; their errors are OpenAI's shape, which also
/// carries `code` and `message`.
fn add_chat_routes(doc: &mut Value) {
    use serde_json::json;
    doc["components"]["schemas"]["ChatErrorBody"] = json!({
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "type": {"type": "string"}, "param": {"type": ["string", "null"]},
            "field": {"type": "string"}}}}});
    let error = |description: &str| {
        json!({"description": description, "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/ChatErrorBody"}}}})
    };
    let mut errors = serde_json::Map::new();
    for (code, description) in [
        ("400", "Bad request (the field at fault is named in param)"),
        ("401", "No API key, or an unknown one"),
        ("403", "The key lacks the llm scope"),
        ("404", "Not found (the server's LLM is not the local model)"),
        ("405", "Method not allowed"),
        ("413", "Body too large"),
        ("414", "Request target over 16 KiB"),
        ("415", "Not JSON"),
        (
            "429",
            "Over the key's rate, or the model's queue is full (Retry-After)",
        ),
        ("500", "The model failed"),
        ("503", "Not ready"),
        ("504", "Over the deadline"),
    ] {
        errors.insert(code.into(), error(description));
    }
    let security = json!([{"api_key": ["llm"]}, {"api_key_header": ["llm"]}]);
    let message = json!({"type": "object", "required": ["role", "content"], "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant"]},
        "content": {"type": "string"}}});
    let mut completion_responses = errors.clone();
    completion_responses.insert("200".into(), json!({
        "description": "The completion (or, with stream: true, server-sent chunks)",
        "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "id": {"type": "string"}, "object": {"type": "string"},
                "model": {"type": "string"}, "choices": {"type": "array", "items": {"type": "object"}},
                "usage": {"type": "object"}}}},
            "text/event-stream": {"schema": {"type": "string"}}}}));
    let mut model_responses = errors;
    model_responses.insert("200".into(), json!({"description": "The one loaded model",
        "content": {"application/json": {"schema": {"type": "object", "properties": {
            "object": {"type": "string"}, "data": {"type": "array", "items": {"type": "object"}}}}}}}));
    let paths = doc["paths"]
        .as_object_mut()
        .expect("the document has paths");
    paths.insert(
        "/v1/chat/completions".into(),
        json!({"post": {
        "tags": ["llm"], "operationId": "chat_completions",
        "summary": "OpenAI-compatible chat completions from the local model",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["messages"], "properties": {
                "model": {"type": "string"},
                "messages": {"type": "array", "minItems": 1, "items": message},
                "max_tokens": {"type": "integer", "minimum": 1},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                "seed": {"type": "integer"},
                "n": {"type": "integer", "minimum": 1},
                "stream": {"type": "boolean"},
                "response_format": {"type": "object"}}}}}},
        "responses": completion_responses, "security": security.clone()}}),
    );
    paths.insert(
        "/v1/models".into(),
        json!({"get": {
        "tags": ["llm"], "operationId": "list_models",
        "summary": "The local model, as OpenAI's model list",
        "responses": model_responses, "security": security}}),
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented_with_its_errors() {
        let doc = super::document();
        let paths = doc["paths"].as_object().unwrap();
        for route in [
            "/v1/content",
            "/v1/content/{id}",
            "/v1/search",
            "/v1/enrich",
            "/v1/jobs/{id}",
            "/v1/tag",
            "/v1/summarize",
            "/v1/taxonomy",
            "/v1/recommend",
            "/v1/feedback",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(paths.contains_key(route), "{route} is missing");
        }
        let tag = &doc["paths"]["/v1/tag"]["post"]["responses"];
        for code in ["200", "400", "401", "403", "429", "503", "504"] {
            assert!(tag.get(code).is_some(), "POST /v1/tag lacks {code}");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["api_key"]["scheme"],
            "bearer"
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["api_key_header"]["name"],
            "X-Api-Key"
        );
    }

    /// The defects a generated client trips on: query parameters declared as path parameters,
    /// routed paths missing, bounds the server does not keep.
    #[test]
    fn parameters_bounds_and_the_llm_routes_are_as_served() {
        let doc = super::document();
        for (path, names) in [
            ("/v1/search", vec!["q", "mode", "filter", "k"]),
            ("/v1/taxonomy", vec!["q", "limit"]),
        ] {
            let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
            for name in names {
                let p = params.iter().find(|p| p["name"] == name).unwrap();
                assert_eq!(p["in"], "query", "{path} {name}");
            }
        }
        let params = doc["paths"]["/v1/taxonomy"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["minimum"], 1, "{limit}");
        assert_eq!(limit["schema"]["maximum"], 1000, "{limit}");
        let q = params.iter().find(|p| p["name"] == "q").unwrap();
        assert_ne!(q["required"], true, "{q}");
        for (path, method) in [("/v1/chat/completions", "post"), ("/v1/models", "get")] {
            let op = &doc["paths"][path][method];
            assert_eq!(op["security"][0]["api_key"][0], "llm", "{path}");
            assert!(op["responses"]["403"].is_object(), "{path}");
        }
        // Every secured operation takes the key in either header.
        let search = &doc["paths"]["/v1/search"]["get"]["security"];
        assert_eq!(search[1]["api_key_header"][0], "read", "{search}");
        assert_eq!(
            doc["paths"]["/v1/content/{id}"]["delete"]["security"][0]["api_key"][0],
            "delete"
        );
        assert_eq!(
            doc["paths"]["/v1/enrich"]["post"]["security"][0]["api_key"][0],
            "jobs"
        );
    }
}
