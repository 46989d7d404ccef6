//! The unit of content signaldesk works on: an article, a podcast episode, or anything else with
//! an id and text.
//!
//! Every source (JSONL, CSV, HTTP) produces a [`ContentItem`] through [`ContentItem::from_json`],
//! so validation happens once and every error names the field at fault. Fields that the model
//! does not know are kept in `metadata`: nothing a source sends is lost.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// What kind of content an item is; ranking and enrichment treat them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    #[default]
    Article,
    Episode,
    Other,
}

impl ContentType {
    /// The payload value stored with every chunk.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Article => "article",
            Self::Episode => "episode",
            Self::Other => "other",
        }
    }
}

/// One piece of content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentItem {
    pub id: String,
    pub title: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default)]
    pub content_type: ContentType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// RFC 3339, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// Limits applied while validating.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest accepted body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
        }
    }
}

/// A field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field:?}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

const KNOWN: &[&str] = &[
    "id",
    "title",
    "body",
    "url",
    "source",
    "content_type",
    "language",
    "published_at",
    "metadata",
];

impl ContentItem {
    /// Validate a JSON object into an item. `text` stands in for `body` when there is no body
    /// (BEIR corpora), and `_id` for `id`.
    pub fn from_json(mut obj: Map<String, Value>, limits: Limits) -> Result<Self, FieldError> {
        let id_field = if obj.contains_key("id") { "id" } else { "_id" };
        let id = match obj.remove(id_field) {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            None | Some(Value::Null) => return Err(field_err("id", "is required")),
            Some(Value::String(_)) => return Err(field_err("id", "is empty")),
            Some(other) => {
                return Err(field_err(
                    "id",
                    format!("must be a string or an integer, got {other}"),
                ))
            }
        };
        let title = opt_string(&mut obj, "title")?.unwrap_or_default();
        let body = match opt_string(&mut obj, "body")? {
            Some(b) => b,
            None => opt_string(&mut obj, "text")?.unwrap_or_default(),
        };
        if title.trim().is_empty() && body.trim().is_empty() {
            return Err(field_err("body", "title and body are both empty"));
        }
        if body.len() > limits.max_body_bytes {
            return Err(field_err(
                "body",
                format!(
                    "is {} bytes, over the limit of {}",
                    body.len(),
                    limits.max_body_bytes
                ),
            ));
        }
        let content_type = match opt_string(&mut obj, "content_type")?.as_deref() {
            None | Some("") => ContentType::default(),
            Some("article") => ContentType::Article,
            Some("episode") => ContentType::Episode,
            Some("other") => ContentType::Other,
            Some(other) => {
                return Err(field_err(
                    "content_type",
                    format!("must be article, episode or other, got {other:?}"),
                ))
            }
        };
        let published_at = opt_string(&mut obj, "published_at")?
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                parse_date(&s).ok_or_else(|| {
                    field_err(
                        "published_at",
                        format!("{s:?} is not an RFC 3339 date-time or a YYYY-MM-DD date"),
                    )
                })
            })
            .transpose()?;
        let mut metadata = match obj.remove("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(field_err(
                    "metadata",
                    format!("must be an object, got {other}"),
                ))
            }
        };
        let url = opt_string(&mut obj, "url")?;
        let source = opt_string(&mut obj, "source")?;
        let language = opt_string(&mut obj, "language")?;
        // Everything else is kept, not dropped.
        for (k, v) in obj {
            if !KNOWN.contains(&k.as_str()) {
                metadata.entry(k).or_insert(v);
            }
        }
        Ok(Self {
            id,
            title,
            body,
            url,
            source,
            content_type,
            language,
            published_at,
            metadata,
        })
    }

    /// The text that is embedded: see [`item_text`].
    pub fn text(&self) -> String {
        item_text(&self.title, &self.body).unwrap_or_default()
    }

    /// The body that [`Self::text`] joined with `title` into `text`: the inverse of that rule,
    /// kept beside it so the two cannot drift apart. `None` if `text` cannot have come from it.
    pub fn body_from_text(title: &str, text: &str) -> Option<String> {
        if title.trim().is_empty() {
            Some(text.to_string())
        } else if let Some(rest) = text.strip_prefix(&format!("{title}\n")) {
            Some(rest.to_string())
        } else if text == title {
            Some(String::new())
        } else {
            None
        }
    }

    /// The item-level fields as stored in every chunk's payload (the one place their layout is
    /// written down; chunk-level fields are added by ingest).
    pub fn to_payload(&self) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("title".into(), Value::from(self.title.as_str()));
        p.insert(
            "content_type".into(),
            Value::from(self.content_type.as_str()),
        );
        for (k, v) in [
            ("url", &self.url),
            ("source", &self.source),
            ("language", &self.language),
            ("published_at", &self.published_at),
        ] {
            if let Some(v) = v {
                p.insert(k.into(), Value::from(v.as_str()));
            }
        }
        if !self.metadata.is_empty() {
            p.insert("metadata".into(), Value::Object(self.metadata.clone()));
        }
        p
    }

    /// Payload keys that [`Self::to_payload`] writes.
    pub const PAYLOAD_KEYS: &'static [&'static str] = &[
        "title",
        "content_type",
        "url",
        "source",
        "language",
        "published_at",
        "metadata",
    ];

    /// The item `to_payload` stored, given its id and full text: the inverse of
    /// [`Self::to_payload`] and [`Self::text`]. Fails if the text does not start with the title.
    pub fn from_payload(id: String, text: String, p: &Map<String, Value>) -> Result<Self, String> {
        let string = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
        let title = string("title").unwrap_or_default();
        let body = Self::body_from_text(&title, &text)
            .ok_or_else(|| format!("item {id:?}: stored text does not start with its title"))?;
        let content_type = match p.get("content_type").and_then(Value::as_str) {
            Some("episode") => ContentType::Episode,
            Some("other") => ContentType::Other,
            _ => ContentType::Article,
        };
        Ok(Self {
            id,
            title,
            body,
            url: string("url"),
            source: string("source"),
            content_type,
            language: string("language"),
            published_at: string("published_at"),
            metadata: p
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// Hash of everything that shapes the stored points, plus `salt` (the chunking settings):
    /// equal hashes mean re-ingesting the item would change nothing.
    pub fn content_hash(&self, salt: &str) -> String {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(self).unwrap_or_default());
        h.update([0u8]);
        h.update(salt.as_bytes());
        crate::fingerprint::hex(&h.finalize())
    }
}

fn opt_string(obj: &mut Map<String, Value>, field: &str) -> Result<Option<String>, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(field_err(field, format!("must be a string, got {other}"))),
    }
}

/// The text of an item as it is embedded, tagged and summarized, everywhere (ingest, the tag
/// command, the tagging eval, the API): title + "\n" + body, or whichever of the two is not
/// blank; `None` when both are.
pub fn item_text(title: &str, body: &str) -> Option<String> {
    match (title.trim().is_empty(), body.trim().is_empty()) {
        (false, false) => Some(format!("{title}\n{body}")),
        (false, true) => Some(title.to_string()),
        (true, false) => Some(body.to_string()),
        (true, true) => None,
    }
}

/// Unix seconds, or what ingest's one date parser takes (RFC 3339 or `YYYY-MM-DD`).
pub fn parse_timestamp(raw: &str) -> Option<i64> {
    if let Ok(n) = raw.trim().parse::<i64>() {
        return Some(n);
    }
    let rfc3339 = parse_date(raw)?;
    chrono::DateTime::parse_from_rfc3339(&rfc3339)
        .ok()
        .map(|t| t.timestamp())
}

/// RFC 3339 date-time or a plain date (`YYYY-MM-DD`, midnight UTC), as RFC 3339 UTC: the one
/// date parser for ingest and for filter bounds on every store backend.
pub fn parse_date(s: &str) -> Option<String> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(
            dt.with_timezone(&Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let dt = date.and_hms_opt(0, 0, 0)?.and_utc();
    Some(dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(json: &str) -> Result<ContentItem, FieldError> {
        ContentItem::from_json(serde_json::from_str(json).unwrap(), Limits::default())
    }

    #[test]
    fn valid_items_normalise_and_keep_unknown_fields() {
        let i = item(
            r#"{"id": 42, "title": "T", "content_type": "episode", "published_at": "2026-03-01T10:00:00+02:00",
                "labels": ["earn"], "metadata": {"desk": "business"}}"#,
        )
        .unwrap();
        assert_eq!(i.id, "42");
        assert_eq!(i.content_type, ContentType::Episode);
        assert_eq!(i.published_at.as_deref(), Some("2026-03-01T08:00:00Z"));
        assert_eq!(i.metadata["labels"], serde_json::json!(["earn"]));
        assert_eq!(i.metadata["desk"], "business");
        assert_eq!(i.text(), "T", "a title-only item is valid");
        let beir = item(r#"{"_id": "d1", "title": "A", "text": "B"}"#).unwrap();
        assert_eq!((beir.id.as_str(), beir.text().as_str()), ("d1", "A\nB"));
        assert_eq!(
            item(r#"{"id": "x", "body": "b", "published_at": "2026-01-31"}"#)
                .unwrap()
                .published_at
                .as_deref(),
            Some("2026-01-31T00:00:00Z")
        );
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases = [
            (r#"{"title": "no id"}"#, "id"),
            (r#"{"id": ""}"#, "id"),
            (r#"{"id": 1.5, "title": "t"}"#, "id"),
            (r#"{"id": "a"}"#, "body"),
            (
                r#"{"id": "a", "title": "t", "published_at": "yesterday"}"#,
                "published_at",
            ),
            (
                r#"{"id": "a", "title": "t", "content_type": "video"}"#,
                "content_type",
            ),
            (r#"{"id": "a", "title": 5}"#, "title"),
            (r#"{"id": "a", "title": "t", "metadata": [1]}"#, "metadata"),
        ];
        for (json, field) in cases {
            let e = item(json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
        let big = format!(r#"{{"id": "a", "body": "{}"}}"#, "x".repeat(100));
        let e = ContentItem::from_json(
            serde_json::from_str(&big).unwrap(),
            Limits { max_body_bytes: 10 },
        )
        .unwrap_err();
        assert!(e.to_string().contains("over the limit of 10"));
    }

    #[test]
    fn content_hash_changes_with_content_and_salt() {
        let a = item(r#"{"id": "a", "title": "t", "body": "b"}"#).unwrap();
        let mut b = a.clone();
        assert_eq!(a.content_hash("s"), b.content_hash("s"));
        b.body.push('!');
        assert_ne!(a.content_hash("s"), b.content_hash("s"));
        assert_ne!(a.content_hash("s"), a.content_hash("t"));
    }
}
