//! The OpenAPI 3 document (`/openapi.json`), generated from the handlers' annotations and the
//! request and answer types. Every operation also lists the JSON errors any route can answer
//! (added once here, so no route can forget one).

use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use super::{content, feedback, tagging, ApiError, ErrorCode};

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
    ),
    components(schemas(ErrorBody, ApiError, ErrorCode)),
    modifiers(&Common),
    tags(
        (name = "content", description = "Content in and out, search, enrichment jobs"),
        (name = "tagging", description = "Tags and summaries of ad-hoc items"),
        (name = "recommend", description = "Recommendations and feedback"),
        (name = "operations", description = "Health, readiness, metrics"),
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
                    ("415", "Not JSON"),
                    ("503", "Not ready, or the store or LLM failed"),
                    ("504", "Over api.timeout_s"),
                ];
                if secured {
                    codes.extend([
                        ("401", "No API key, or an unknown one"),
                        ("403", "The key lacks the route's scope"),
                        ("409", "Busy (an enrichment job is running)"),
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

/// The document as JSON.
pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes")
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
    }
}
