//! The pages the server renders: the editorial review page (a static page whose script calls
//! the same `/v1` routes other services do, with the editor's key) and the API docs, rendered
//! from the OpenAPI document so they cannot drift from it.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde_json::Value;

const EDITORIAL: &str = include_str!("editorial.html");

/// The editorial page's Content-Security-Policy: its one inline script and one inline style by
/// hash, requests to this origin only, and no framing (clickjacking an editor's clicks).
fn editorial_policy() -> &'static str {
    static POLICY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let inline = |open: &str, close: &str| {
            let start = EDITORIAL.find(open).expect("the page has it") + open.len();
            let end = start + EDITORIAL[start..].find(close).expect("closed");
            let digest = sha2::Sha256::digest(&EDITORIAL.as_bytes()[start..end]);
            format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
        };
        format!(
            "default-src 'none'; connect-src 'self'; img-src 'self' data:; script-src {}; style-src {}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            inline("<script>", "</script>"),
            inline("<style>", "</style>")
        )
    })
}

/// `GET /editorial`: search the catalogue, open an item, review its tags.
pub(crate) async fn editorial() -> impl IntoResponse {
    (
        [
            (header::CONTENT_SECURITY_POLICY, editorial_policy()),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(EDITORIAL),
    )
}

/// `GET /docs`: every operation of `/openapi.json` with its parameters, body and answers.
pub(crate) async fn docs() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        Html(render_docs(&super::openapi::document())),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render_docs(doc: &Value) -> String {
    let mut out = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>signaldesk API</title>\
         <style>body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:1rem auto;padding:0 1rem}\
         code{background:#f1f3f5;padding:0 .2rem}.op{border-top:1px solid #dde1e6;padding:.5rem 0}\
         .m{font-weight:700;display:inline-block;width:4.5rem}</style></head><body>",
    );
    let info = &doc["info"];
    out.push_str(&format!(
        "<h1>{} {}</h1><p>{}</p><p>The machine-readable document: <a href=\"/openapi.json\">/openapi.json</a>. \
         Editors: <a href=\"/editorial\">/editorial</a>.</p>",
        escape(info["title"].as_str().unwrap_or("")),
        escape(info["version"].as_str().unwrap_or("")),
        escape(info["description"].as_str().unwrap_or(""))
    ));
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let summary = op["summary"].as_str().unwrap_or("");
            let description = op["description"].as_str().unwrap_or("");
            let scopes: Vec<String> = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["api_key"].as_array())
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            let codes: Vec<&str> = op["responses"]
                .as_object()
                .map(|r| r.keys().map(String::as_str).collect())
                .unwrap_or_default();
            out.push_str(&format!(
                "<div class=\"op\"><span class=\"m\">{}</span><code>{}</code>{}<p>{}</p><p>{}</p>",
                method.to_uppercase(),
                escape(path),
                if scopes.is_empty() {
                    String::new()
                } else {
                    format!(" — scope <code>{}</code>", escape(&scopes.join(", ")))
                },
                escape(summary),
                escape(description)
            ));
            for p in op["parameters"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "<div><code>{}</code> ({}){}: {}</div>",
                    escape(p["name"].as_str().unwrap_or("")),
                    escape(p["in"].as_str().unwrap_or("")),
                    if p["required"].as_bool() == Some(true) {
                        ", required"
                    } else {
                        ""
                    },
                    escape(p["description"].as_str().unwrap_or(""))
                ));
            }
            out.push_str(&format!(
                "<div>Answers: {}</div></div>",
                escape(&codes.join(", "))
            ));
        }
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn docs_list_every_documented_route() {
        let doc = super::super::openapi::document();
        let html = super::render_docs(&doc);
        for path in doc["paths"].as_object().unwrap().keys() {
            assert!(
                html.contains(&super::escape(path)),
                "{path} is not on /docs"
            );
        }
    }
}
