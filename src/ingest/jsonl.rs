//! JSONL records: which field is the id, which text gets embedded, and what makes a line bad.
//!
//! The text convention is shared by every command (`embed`, `bench embed`, later `ingest`):
//! `title` + "\n" + `body` when those exist, else `text`, unless a field is named explicitly.

use serde_json::{Map, Value};

/// Why one record is unusable; shown with its line number and the record is skipped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("expected a JSON object, got {0}")]
    NotObject(&'static str),
    #[error("missing field {0:?}")]
    MissingField(String),
    #[error("field {field:?} must be {expected}, got {got}")]
    WrongType {
        field: String,
        expected: &'static str,
        got: &'static str,
    },
    #[error("no text: field {0} is empty")]
    EmptyText(String),
}

/// Parse one line as a JSON object.
pub fn parse_object(line: &str) -> Result<Map<String, Value>, RecordError> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(RecordError::NotObject(kind(&other))),
        Err(e) => Err(RecordError::NotJson(e.to_string())),
    }
}

/// The record's id: a string or an integer (kept as the JSON value it was).
pub fn id_of(record: &Map<String, Value>, field: &str) -> Result<Value, RecordError> {
    match record.get(field) {
        None | Some(Value::Null) => Err(RecordError::MissingField(field.to_string())),
        Some(v @ Value::String(s)) if !s.is_empty() => Ok(v.clone()),
        Some(Value::String(_)) => Err(RecordError::EmptyText(format!("{field:?} (the id)"))),
        Some(v @ Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(v.clone()),
        Some(other) => Err(RecordError::WrongType {
            field: field.to_string(),
            expected: "a string or an integer",
            got: kind(other),
        }),
    }
}

/// The text to embed: `field` when given; else `title` + "\n" + `body` (either alone when the
/// other is absent or empty); else `text`.
pub fn text_of(record: &Map<String, Value>, field: Option<&str>) -> Result<String, RecordError> {
    if let Some(field) = field {
        let text = string_field(record, field)?
            .ok_or_else(|| RecordError::MissingField(field.to_string()))?;
        if text.trim().is_empty() {
            return Err(RecordError::EmptyText(format!("{field:?}")));
        }
        return Ok(text.to_string());
    }
    let title = string_field(record, "title")?.filter(|s| !s.trim().is_empty());
    // `text` stands in for a missing body (BEIR corpora: title + text), as in `ContentItem`.
    let body = match string_field(record, "body")?.filter(|s| !s.trim().is_empty()) {
        Some(b) => Some(b),
        None if title.is_some() => string_field(record, "text")?.filter(|s| !s.trim().is_empty()),
        None => None,
    };
    let joined = crate::content::item_text(title.unwrap_or(""), body.unwrap_or(""));
    let text = match joined {
        Some(text) => text,
        None => match string_field(record, "text")? {
            Some(t) if !t.trim().is_empty() => t.to_string(),
            Some(_) => return Err(RecordError::EmptyText("\"text\"".into())),
            None if record.contains_key("title") || record.contains_key("body") => {
                return Err(RecordError::EmptyText("\"title\" and \"body\"".into()))
            }
            None => {
                return Err(RecordError::MissingField(
                    "text (or title/body; name another with --text-field)".into(),
                ))
            }
        },
    };
    Ok(text)
}

fn string_field<'a>(
    record: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, RecordError> {
    match record.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(RecordError::WrongType {
            field: field.to_string(),
            expected: "a string",
            got: kind(other),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> Map<String, Value> {
        parse_object(s).unwrap()
    }

    #[test]
    fn text_follows_the_title_body_text_convention() {
        assert_eq!(
            text_of(&obj(r#"{"title":"T","body":"B","text":"x"}"#), None).unwrap(),
            "T\nB"
        );
        assert_eq!(
            text_of(&obj(r#"{"title":"T","body":""}"#), None).unwrap(),
            "T"
        );
        assert_eq!(text_of(&obj(r#"{"body":"B"}"#), None).unwrap(), "B");
        assert_eq!(text_of(&obj(r#"{"text":"X"}"#), None).unwrap(), "X");
        assert_eq!(
            text_of(&obj(r#"{"title":"T","text":"X"}"#), None).unwrap(),
            "T\nX"
        );
        assert_eq!(
            text_of(&obj(r#"{"title":"T","abstract":"A"}"#), Some("abstract")).unwrap(),
            "A"
        );
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        assert!(matches!(
            parse_object("{nope"),
            Err(RecordError::NotJson(_))
        ));
        assert_eq!(parse_object("[1]"), Err(RecordError::NotObject("an array")));
        assert_eq!(
            text_of(&obj(r#"{"id":1}"#), Some("text")),
            Err(RecordError::MissingField("text".into()))
        );
        assert!(matches!(
            text_of(&obj(r#"{"text":5}"#), None),
            Err(RecordError::WrongType { .. })
        ));
        assert!(matches!(
            text_of(&obj(r#"{"text":"  "}"#), None),
            Err(RecordError::EmptyText(_))
        ));
        assert_eq!(id_of(&obj(r#"{"id":7}"#), "id").unwrap(), Value::from(7));
        assert!(matches!(
            id_of(&obj(r#"{"id":1.5}"#), "id"),
            Err(RecordError::WrongType { .. })
        ));
        assert_eq!(
            id_of(&obj(r#"{}"#), "id"),
            Err(RecordError::MissingField("id".into()))
        );
    }
}
