//! The JSON Schema subset signaldesk asks LLMs for, with a validator for every answer (remote
//! ones, and local ones as a second check). Decoding of local answers is constrained by
//! llguidance from the same schema ([`crate::llm::local::constrain`]).
//!
//! Supported: `type` (object, array, string, integer, number, boolean, null, or a list of them as
//! for nullable fields), `anyOf`, `$ref` into the root's `$defs` / `definitions` (pydantic's
//! nested models; recursive references are refused), `properties`,
//! `required`, `additionalProperties` (false is enforced, true allowed), `items`, `minItems`,
//! `maxItems`, `enum`, `const`, `minLength`, `maxLength`, `minimum`, `maximum`, and the
//! annotations `title`, `description`, `$schema`, `default`, `examples`. Anything else is refused
//! when the schema is loaded, so a schema never silently means less than it says.

use serde_json::Value;

use super::LlmError;

/// A parsed schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Schema {
    Object {
        properties: Vec<(String, Schema)>,
        required: Vec<String>,
        additional: bool,
    },
    Array {
        items: Box<Schema>,
        min_items: usize,
        max_items: Option<usize>,
    },
    String {
        min_length: usize,
        max_length: Option<usize>,
    },
    Integer {
        minimum: Option<f64>,
        maximum: Option<f64>,
    },
    Number {
        minimum: Option<f64>,
        maximum: Option<f64>,
    },
    Boolean,
    Null,
    /// `enum` / `const`: one of these values exactly.
    Enum(Vec<Value>),
    /// `anyOf` (and a list of types): at least one of these.
    AnyOf(Vec<Schema>),
}

/// Deepest chain of `$ref`s followed: deeper means a recursive schema, which the validator and
/// the constrained decoder would unroll without end.
const MAX_REF_DEPTH: usize = 16;

const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$schema",
    "default",
    "examples",
    "$id",
];

fn schema_err(path: &str, msg: impl std::fmt::Display) -> LlmError {
    LlmError::Schema(format!(
        "{}: {msg}",
        if path.is_empty() { "$" } else { path }
    ))
}

impl Schema {
    /// Parse a JSON Schema document, refusing keywords this subset does not implement.
    pub fn parse(v: &Value) -> Result<Self, LlmError> {
        Self::parse_at(v, "$", v, 0)
    }

    fn parse_at(v: &Value, path: &str, root: &Value, refs: usize) -> Result<Self, LlmError> {
        let obj = v
            .as_object()
            .ok_or_else(|| schema_err(path, "a schema must be an object"))?;
        if let Some(target) = obj.get("$ref") {
            return Self::parse_ref(obj, target, path, root, refs);
        }
        if let Some(branches) = obj.get("anyOf") {
            return Self::parse_any_of(obj, branches, path, root, refs);
        }
        if let Some(Value::Array(types)) = obj.get("type") {
            return Self::parse_type_list(obj, types, path, root, refs);
        }
        let known: &[&str] = &[
            "$defs",
            "definitions",
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "minItems",
            "maxItems",
            "enum",
            "const",
            "minLength",
            "maxLength",
            "minimum",
            "maximum",
        ];
        for k in obj.keys() {
            if !known.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()) {
                return Err(schema_err(path, format!("keyword {k:?} is not supported")));
            }
        }
        if let Some(values) = obj.get("enum") {
            let values = values
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| schema_err(path, "enum must be a non-empty array"))?;
            return Ok(Self::Enum(values.clone()));
        }
        if let Some(c) = obj.get("const") {
            return Ok(Self::Enum(vec![c.clone()]));
        }
        let usize_of = |k: &str| -> Result<Option<usize>, LlmError> {
            obj.get(k)
                .map(|v| {
                    v.as_u64()
                        .map(|n| n as usize)
                        .ok_or_else(|| schema_err(path, format!("{k} must be a whole number")))
                })
                .transpose()
        };
        let f64_of = |k: &str| -> Result<Option<f64>, LlmError> {
            obj.get(k)
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| schema_err(path, format!("{k} must be a number")))
                })
                .transpose()
        };
        let ty = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| schema_err(path, "needs a \"type\" (one string) or an enum"))?;
        Ok(match ty {
            "object" => Self::parse_object(obj, path, root, refs)?,
            "array" => Self::Array {
                items: Box::new(Self::parse_at(
                    obj.get("items")
                        .ok_or_else(|| schema_err(path, "an array needs items"))?,
                    &format!("{path}[]"),
                    root,
                    refs,
                )?),
                min_items: usize_of("minItems")?.unwrap_or(0),
                max_items: usize_of("maxItems")?,
            },
            "string" => Self::String {
                min_length: usize_of("minLength")?.unwrap_or(0),
                max_length: usize_of("maxLength")?,
            },
            "integer" => Self::Integer {
                minimum: f64_of("minimum")?,
                maximum: f64_of("maximum")?,
            },
            "number" => Self::Number {
                minimum: f64_of("minimum")?,
                maximum: f64_of("maximum")?,
            },
            "boolean" => Self::Boolean,
            "null" => Self::Null,
            other => return Err(schema_err(path, format!("unknown type {other:?}"))),
        })
    }

    /// A `$ref` into the root's `$defs`, resolved (at most [`MAX_REF_DEPTH`] deep).
    fn parse_ref(
        obj: &serde_json::Map<String, Value>,
        target: &Value,
        path: &str,
        root: &Value,
        refs: usize,
    ) -> Result<Self, LlmError> {
        let target = target
            .as_str()
            .ok_or_else(|| schema_err(path, "$ref must be a string"))?;
        if let Some(k) = obj
            .keys()
            .find(|k| *k != "$ref" && !ANNOTATIONS.contains(&k.as_str()) && *k != "$defs")
        {
            return Err(schema_err(
                path,
                format!("keyword {k:?} beside $ref is not supported"),
            ));
        }
        if refs >= MAX_REF_DEPTH {
            return Err(schema_err(
                path,
                format!("$ref {target:?} nests more than {MAX_REF_DEPTH} deep: recursive schemas are not supported"),
            ));
        }
        let resolved = target
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .ok_or_else(|| {
                schema_err(
                    path,
                    format!("$ref {target:?} does not point into this schema (only \"#/$defs/...\" references are supported)"),
                )
            })?;
        Self::parse_at(resolved, path, root, refs + 1)
    }

    /// `anyOf`: each branch parsed at the same path.
    fn parse_any_of(
        obj: &serde_json::Map<String, Value>,
        branches: &Value,
        path: &str,
        root: &Value,
        refs: usize,
    ) -> Result<Self, LlmError> {
        if let Some(k) = obj
            .keys()
            .find(|k| *k != "anyOf" && !ANNOTATIONS.contains(&k.as_str()) && *k != "$defs")
        {
            return Err(schema_err(
                path,
                format!("keyword {k:?} beside anyOf is not supported"),
            ));
        }
        let branches = branches
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| schema_err(path, "anyOf must be a non-empty array"))?;
        Ok(Self::AnyOf(
            branches
                .iter()
                .map(|b| Self::parse_at(b, path, root, refs))
                .collect::<Result<_, _>>()?,
        ))
    }

    /// `"type": [..]`: one branch per type, the other keywords shared.
    fn parse_type_list(
        obj: &serde_json::Map<String, Value>,
        types: &[Value],
        path: &str,
        root: &Value,
        refs: usize,
    ) -> Result<Self, LlmError> {
        if types.is_empty() {
            return Err(schema_err(path, "type must not be an empty list"));
        }
        let mut branches = Vec::with_capacity(types.len());
        for t in types {
            let mut one = obj.clone();
            one.insert("type".into(), t.clone());
            branches.push(Self::parse_at(&Value::Object(one), path, root, refs)?);
        }
        Ok(if branches.len() == 1 {
            branches.remove(0)
        } else {
            Self::AnyOf(branches)
        })
    }

    /// An object's properties, required list and additionalProperties.
    fn parse_object(
        obj: &serde_json::Map<String, Value>,
        path: &str,
        root: &Value,
        refs: usize,
    ) -> Result<Self, LlmError> {
        let mut properties = Vec::new();
        if let Some(props) = obj.get("properties") {
            let props = props
                .as_object()
                .ok_or_else(|| schema_err(path, "properties must be an object"))?;
            for (name, sub) in props {
                properties.push((
                    name.clone(),
                    Self::parse_at(sub, &format!("{path}.{name}"), root, refs)?,
                ));
            }
        }
        let required: Vec<String> = match obj.get("required") {
            None => Vec::new(),
            Some(r) => r
                .as_array()
                .ok_or_else(|| schema_err(path, "required must be an array"))?
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| schema_err(path, "required must list property names"))
                })
                .collect::<Result<_, _>>()?,
        };
        for r in &required {
            if !properties.iter().any(|(n, _)| n == r) {
                return Err(schema_err(
                    path,
                    format!("required property {r:?} is not in properties"),
                ));
            }
        }
        let additional = match obj.get("additionalProperties") {
            None | Some(Value::Bool(true)) => true,
            Some(Value::Bool(false)) => false,
            Some(_) => {
                return Err(schema_err(
                    path,
                    "additionalProperties must be true or false",
                ))
            }
        };
        Ok(Self::Object {
            properties,
            required,
            additional,
        })
    }

    /// Check `v`; the error names the JSON path at fault.
    pub fn validate(&self, v: &Value) -> Result<(), String> {
        self.validate_at(v, "$")
    }

    fn validate_at(&self, v: &Value, path: &str) -> Result<(), String> {
        let fail = |msg: String| Err(format!("{path}: {msg}"));
        match self {
            Self::Enum(values) => {
                if values.contains(v) {
                    Ok(())
                } else {
                    fail(format!("{v} is not one of {}", Value::from(values.clone())))
                }
            }
            Self::Object {
                properties,
                required,
                additional,
            } => {
                let Some(obj) = v.as_object() else {
                    return fail(format!("expected an object, got {v}"));
                };
                for r in required {
                    if !obj.contains_key(r) {
                        return fail(format!("missing required property {r:?}"));
                    }
                }
                for (k, val) in obj {
                    match properties.iter().find(|(n, _)| n == k) {
                        Some((_, s)) => s.validate_at(val, &format!("{path}.{k}"))?,
                        None if !additional => {
                            return fail(format!("property {k:?} is not allowed"))
                        }
                        None => {}
                    }
                }
                Ok(())
            }
            Self::Array {
                items,
                min_items,
                max_items,
            } => {
                let Some(arr) = v.as_array() else {
                    return fail(format!("expected an array, got {v}"));
                };
                if arr.len() < *min_items {
                    return fail(format!("{} items, fewer than {min_items}", arr.len()));
                }
                if max_items.is_some_and(|m| arr.len() > m) {
                    return fail(format!("{} items, more than {:?}", arr.len(), max_items));
                }
                for (i, item) in arr.iter().enumerate() {
                    items.validate_at(item, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            Self::String {
                min_length,
                max_length,
            } => {
                let Some(s) = v.as_str() else {
                    return fail(format!("expected a string, got {v}"));
                };
                let n = s.chars().count();
                if n < *min_length || max_length.is_some_and(|m| n > m) {
                    return fail(format!(
                        "string of {n} characters is outside the allowed length"
                    ));
                }
                Ok(())
            }
            Self::Integer { minimum, maximum } | Self::Number { minimum, maximum } => {
                let ok_type = match self {
                    Self::Integer { .. } => v.is_i64() || v.is_u64(),
                    _ => v.is_number(),
                };
                if !ok_type {
                    return fail(format!(
                        "expected {}, got {v}",
                        if matches!(self, Self::Integer { .. }) {
                            "an integer"
                        } else {
                            "a number"
                        }
                    ));
                }
                let x = v.as_f64().unwrap_or(0.0);
                if minimum.is_some_and(|m| x < m) || maximum.is_some_and(|m| x > m) {
                    return fail(format!("{x} is out of range"));
                }
                Ok(())
            }
            Self::AnyOf(branches) => {
                let mut first_error = None;
                for b in branches {
                    match b.validate_at(v, path) {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                fail(format!(
                    "{v} matches none of the {} allowed forms (first: {})",
                    branches.len(),
                    first_error.unwrap_or_default()
                ))
            }
            Self::Boolean => v
                .is_boolean()
                .then_some(())
                .ok_or_else(|| format!("{path}: expected a boolean, got {v}")),
            Self::Null => v
                .is_null()
                .then_some(())
                .ok_or_else(|| format!("{path}: expected null, got {v}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tag_schema() -> Schema {
        Schema::parse(&json!({
            "type": "object",
            "properties": {
                "label": {"enum": ["economy", "sport", "science"]},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "keywords": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 2},
                "ok": {"type": "boolean"}
            },
            "required": ["label"],
            "additionalProperties": false
        }))
        .unwrap()
    }

    #[test]
    fn validation_names_the_path_at_fault() {
        let s = tag_schema();
        let e = s
            .validate(&json!({"label": "sport", "keywords": ["ok", "toolong"]}))
            .unwrap_err();
        assert!(e.starts_with("$.keywords[1]"), "{e}");
        let e = s.validate(&json!({"confidence": 0.5})).unwrap_err();
        assert!(e.contains("missing required property \"label\""), "{e}");
        let e = s
            .validate(&json!({"label": "sport", "extra": 1}))
            .unwrap_err();
        assert!(e.contains("not allowed"), "{e}");
        let e = s
            .validate(&json!({"label": "sport", "confidence": 2}))
            .unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn unsupported_keywords_are_refused_at_load() {
        let e = Schema::parse(&json!({"type": "string", "pattern": "^a"})).unwrap_err();
        assert!(
            e.to_string().contains("\"pattern\" is not supported"),
            "{e}"
        );
        let e = Schema::parse(&json!({"$ref": "#/$defs/Node", "$defs": {"Node": {
            "type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}}))
        .unwrap_err();
        assert!(e.to_string().contains("recursive"), "{e}");
        let e = Schema::parse(&json!({"$ref": "https://example.com/s.json"})).unwrap_err();
        assert!(e.to_string().contains("does not point into"), "{e}");
    }

    /// What pydantic writes (through the openai SDK's strict conversion): nullable fields as
    /// `anyOf` with null, nested models as `$defs` references, lists of types.
    #[test]
    fn pydantic_shapes_are_understood() {
        let s = Schema::parse(&json!({
            "type": "object",
            "$defs": {"Author": {"type": "object", "title": "Author",
                "properties": {"name": {"type": "string"}},
                "required": ["name"], "additionalProperties": false}},
            "properties": {
                "title": {"type": "string"},
                "subtitle": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Subtitle"},
                "score": {"type": ["number", "null"], "minimum": 0},
                "author": {"$ref": "#/$defs/Author"}
            },
            "required": ["title", "subtitle", "score", "author"],
            "additionalProperties": false
        }))
        .unwrap();
        let ok = json!({"title": "t", "subtitle": null, "score": null, "author": {"name": "a"}});
        assert_eq!(s.validate(&ok), Ok(()));
        let ok = json!({"title": "t", "subtitle": "s", "score": 1.5, "author": {"name": "a"}});
        assert_eq!(s.validate(&ok), Ok(()));
        let bad = json!({"title": "t", "subtitle": 3, "score": null, "author": {"name": "a"}});
        assert!(s.validate(&bad).unwrap_err().starts_with("$.subtitle"));
        let bad = json!({"title": "t", "subtitle": null, "score": -1, "author": {"name": "a"}});
        assert!(s.validate(&bad).is_err());
        let bad = json!({"title": "t", "subtitle": null, "score": 0, "author": {}});
        assert!(s.validate(&bad).unwrap_err().contains("name"));
    }
}
