//! The JSON Schema subset signaldesk asks LLMs for, with a validator (for remote answers) and
//! a byte-level matcher (for constrained decoding of local answers).
//!
//! Supported: `type` (object, array, string, integer, number, boolean, null), `properties`,
//! `required`, `additionalProperties` (false is enforced, true allowed), `items`, `minItems`,
//! `maxItems`, `enum`, `const`, `minLength`, `maxLength`, `minimum`, `maximum`, and the
//! annotations `title`, `description`, `$schema`, `default`, `examples`. Anything else is refused
//! when the schema is loaded, so a schema never silently means less than it says.
//!
//! Constrained decoding writes compact JSON (no whitespace) and every declared property in
//! declared order (optional ones too): the output always parses and always satisfies the
//! schema, enums included. Strings and numbers are bounded (`maxLength`, else 2,000 characters;
//! 15 digits), so a constrained answer always terminates.

use serde_json::Value;

use super::LlmError;

/// Longest free string the matcher allows when the schema sets no `maxLength`.
pub const DEFAULT_MAX_STRING: usize = 2000;
const MAX_DIGITS: usize = 15;

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
}

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
        Self::parse_at(v, "$")
    }

    fn parse_at(v: &Value, path: &str) -> Result<Self, LlmError> {
        let obj = v
            .as_object()
            .ok_or_else(|| schema_err(path, "a schema must be an object"))?;
        let known: &[&str] = &[
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
            "object" => {
                let mut properties = Vec::new();
                if let Some(props) = obj.get("properties") {
                    let props = props
                        .as_object()
                        .ok_or_else(|| schema_err(path, "properties must be an object"))?;
                    for (name, sub) in props {
                        properties.push((
                            name.clone(),
                            Self::parse_at(sub, &format!("{path}.{name}"))?,
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
                            s.as_str().map(str::to_string).ok_or_else(|| {
                                schema_err(path, "required must list property names")
                            })
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
                Self::Object {
                    properties,
                    required,
                    additional,
                }
            }
            "array" => Self::Array {
                items: Box::new(Self::parse_at(
                    obj.get("items")
                        .ok_or_else(|| schema_err(path, "an array needs items"))?,
                    &format!("{path}[]"),
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

/// One pending piece of output.
#[derive(Debug, Clone)]
enum Goal<'s> {
    Value(&'s Schema),
    Lit(Vec<u8>, usize),
    /// One of several literals; bytes matched so far.
    Alt(std::rc::Rc<Vec<Vec<u8>>>, Vec<u8>),
    Str(StrState),
    Num(NumState),
    ArrayStart(&'s Schema, usize, Option<usize>),
    ArrayNext(&'s Schema, usize, usize, Option<usize>),
}

#[derive(Debug, Clone)]
struct StrState {
    started: bool,
    chars: usize,
    min: usize,
    max: usize,
    escape: bool,
    hex_left: u8,
    utf8_left: u8,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum NumPhase {
    Start,
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

#[derive(Debug, Clone)]
struct NumState {
    integer: bool,
    phase: NumPhase,
    digits: usize,
    text: Vec<u8>,
    minimum: Option<f64>,
    maximum: Option<f64>,
}

impl NumState {
    fn in_range(&self) -> bool {
        let Some(x) = std::str::from_utf8(&self.text)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
        else {
            return false;
        };
        !(self.minimum.is_some_and(|m| x < m) || self.maximum.is_some_and(|m| x > m))
    }

    fn accepting(&self) -> bool {
        matches!(
            self.phase,
            NumPhase::Zero | NumPhase::Int | NumPhase::Frac | NumPhase::Exp
        ) && self.in_range()
    }

    /// Whether the integer part already exceeds every bound's magnitude (no continuation can
    /// come back into range).
    fn hopeless(&self) -> bool {
        let bound = match (self.minimum, self.maximum) {
            (Some(a), Some(b)) => a.abs().max(b.abs()),
            _ => return false,
        };
        let int: String = self
            .text
            .iter()
            .take_while(|c| c.is_ascii_digit() || **c == b'-')
            .map(|&c| c as char)
            .collect();
        int.trim_start_matches('-')
            .parse::<f64>()
            .is_ok_and(|x| x > bound.floor() + 1.0)
    }

    /// Consume `b` if the number can continue with it.
    fn step(&mut self, b: u8) -> bool {
        use NumPhase::*;
        let digit = b.is_ascii_digit();
        if digit && self.digits >= MAX_DIGITS {
            return false;
        }
        let next = match (self.phase, b) {
            (Start, b'-') => Minus,
            (Start | Minus, b'0') => Zero,
            (Start | Minus, _) if digit => Int,
            (Int, _) if digit => Int,
            (Zero | Int, b'.') if !self.integer => Dot,
            (Dot | Frac, _) if digit => Frac,
            (Zero | Int | Frac, b'e' | b'E') if !self.integer => E,
            (E, b'+' | b'-') => ESign,
            (E | ESign | Exp, _) if digit => Exp,
            _ => return false,
        };
        if digit {
            self.digits += 1;
        }
        self.phase = next;
        self.text.push(b);
        !self.hopeless()
    }
}

impl StrState {
    fn step(&mut self, b: u8) -> StrStep {
        if !self.started {
            if b == b'"' {
                self.started = true;
                return StrStep::Continue;
            }
            return StrStep::Reject;
        }
        if self.utf8_left > 0 {
            if (0x80..0xC0).contains(&b) {
                self.utf8_left -= 1;
                return StrStep::Continue;
            }
            return StrStep::Reject;
        }
        if self.hex_left > 0 {
            if b.is_ascii_hexdigit() {
                self.hex_left -= 1;
                return StrStep::Continue;
            }
            return StrStep::Reject;
        }
        if self.escape {
            self.escape = false;
            return match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => StrStep::Continue,
                b'u' => {
                    self.hex_left = 4;
                    StrStep::Continue
                }
                _ => StrStep::Reject,
            };
        }
        if b == b'"' {
            return if self.chars >= self.min {
                StrStep::Done
            } else {
                StrStep::Reject
            };
        }
        if b < 0x20 || self.chars >= self.max {
            return StrStep::Reject;
        }
        self.chars += 1;
        match b {
            b'\\' => self.escape = true,
            0x80..=0xBF | 0xC0 | 0xC1 | 0xF5..=0xFF => return StrStep::Reject,
            0xC2..=0xDF => self.utf8_left = 1,
            0xE0..=0xEF => self.utf8_left = 2,
            0xF0..=0xF4 => self.utf8_left = 3,
            _ => {}
        }
        StrStep::Continue
    }
}

enum StrStep {
    Continue,
    Done,
    Reject,
}

/// The byte-level matcher: which bytes may come next so the output stays a prefix of some
/// schema-valid compact JSON document.
#[derive(Debug, Clone)]
pub struct Matcher<'s> {
    stack: Vec<Goal<'s>>,
}

fn compact(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl<'s> Matcher<'s> {
    /// A matcher for one document of `schema`.
    pub fn new(schema: &'s Schema) -> Self {
        Self {
            stack: vec![Goal::Value(schema)],
        }
    }

    /// Whether the document is complete (the model must stop now).
    pub fn is_complete(&self) -> bool {
        match self.stack.as_slice() {
            [] => true,
            [Goal::Num(n)] => n.accepting(),
            [Goal::Alt(options, prefix)] => options.iter().any(|o| o == prefix),
            _ => false,
        }
    }

    /// The literal alternatives (enum values, booleans) the next output must choose among, if
    /// the matcher stands right at the start of such a choice: the decoder then scores each
    /// whole alternative instead of committing to one by its first token.
    pub fn choice(&self) -> Option<Vec<Vec<u8>>> {
        let mut probe = self.clone();
        while let Some(Goal::Value(s)) = probe.stack.last() {
            let s = *s;
            probe.stack.pop();
            probe.expand(s);
        }
        match probe.stack.last() {
            Some(Goal::Alt(options, prefix)) if prefix.is_empty() && options.len() > 1 => {
                Some(options.as_ref().clone())
            }
            _ => None,
        }
    }

    /// Whether nothing more can follow (a complete object, array, string or literal).
    pub fn is_closed(&self) -> bool {
        self.stack.is_empty()
    }

    /// Whether `bytes` can come next; consumes them if so.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.step(b))
    }

    /// Whether `bytes` can come next, without consuming them.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        !bytes.is_empty() && self.clone().feed(bytes)
    }

    fn expand(&mut self, schema: &'s Schema) {
        match schema {
            Schema::Object { properties, .. } => {
                self.stack.push(Goal::Lit(b"}".to_vec(), 0));
                for (i, (name, sub)) in properties.iter().enumerate().rev() {
                    self.stack.push(Goal::Value(sub));
                    let mut key = if i == 0 { Vec::new() } else { b",".to_vec() };
                    key.extend(compact(&Value::from(name.as_str())));
                    key.push(b':');
                    self.stack.push(Goal::Lit(key, 0));
                }
                self.stack.push(Goal::Lit(b"{".to_vec(), 0));
            }
            Schema::Array {
                items,
                min_items,
                max_items,
            } => {
                self.stack
                    .push(Goal::ArrayStart(items, *min_items, *max_items));
                self.stack.push(Goal::Lit(b"[".to_vec(), 0));
            }
            Schema::String {
                min_length,
                max_length,
            } => self.stack.push(Goal::Str(StrState {
                started: false,
                chars: 0,
                min: *min_length,
                max: max_length.unwrap_or(DEFAULT_MAX_STRING),
                escape: false,
                hex_left: 0,
                utf8_left: 0,
            })),
            Schema::Integer { minimum, maximum } | Schema::Number { minimum, maximum } => {
                self.stack.push(Goal::Num(NumState {
                    integer: matches!(schema, Schema::Integer { .. }),
                    phase: NumPhase::Start,
                    digits: 0,
                    text: Vec::new(),
                    minimum: *minimum,
                    maximum: *maximum,
                }))
            }
            Schema::Boolean => self.stack.push(Goal::Alt(
                std::rc::Rc::new(vec![b"true".to_vec(), b"false".to_vec()]),
                Vec::new(),
            )),
            Schema::Null => self.stack.push(Goal::Lit(b"null".to_vec(), 0)),
            Schema::Enum(values) => self.stack.push(Goal::Alt(
                std::rc::Rc::new(values.iter().map(compact).collect()),
                Vec::new(),
            )),
        }
    }

    fn step(&mut self, b: u8) -> bool {
        loop {
            let Some(top) = self.stack.pop() else {
                return false;
            };
            match top {
                Goal::Value(s) => {
                    self.expand(s);
                    continue;
                }
                Goal::Lit(bytes, pos) => {
                    if bytes[pos] != b {
                        return false;
                    }
                    if pos + 1 < bytes.len() {
                        self.stack.push(Goal::Lit(bytes, pos + 1));
                    }
                    return true;
                }
                Goal::Alt(options, mut prefix) => {
                    prefix.push(b);
                    if options.iter().any(|o| o.starts_with(&prefix)) {
                        let exact = options.contains(&prefix);
                        let longer = options
                            .iter()
                            .any(|o| o.len() > prefix.len() && o.starts_with(&prefix));
                        if !exact || longer {
                            self.stack.push(Goal::Alt(options, prefix));
                        }
                        return true;
                    }
                    prefix.pop();
                    if options.contains(&prefix) {
                        // Complete, and `b` belongs to what follows.
                        continue;
                    }
                    return false;
                }
                Goal::Str(mut st) => match st.step(b) {
                    StrStep::Continue => {
                        self.stack.push(Goal::Str(st));
                        return true;
                    }
                    StrStep::Done => return true,
                    StrStep::Reject => return false,
                },
                Goal::Num(mut n) => {
                    if n.step(b) {
                        self.stack.push(Goal::Num(n));
                        return true;
                    }
                    if n.accepting() {
                        continue;
                    }
                    return false;
                }
                Goal::ArrayStart(items, min, max) => {
                    if b == b']' && min == 0 {
                        return true;
                    }
                    if max == Some(0) {
                        return false;
                    }
                    self.stack.push(Goal::ArrayNext(items, 1, min, max));
                    self.stack.push(Goal::Value(items));
                    continue;
                }
                Goal::ArrayNext(items, count, min, max) => {
                    if b == b']' && count >= min {
                        return true;
                    }
                    if b == b',' && max.is_none_or(|m| count < m) {
                        self.stack.push(Goal::ArrayNext(items, count + 1, min, max));
                        self.stack.push(Goal::Value(items));
                        return true;
                    }
                    return false;
                }
            }
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
    fn matcher_accepts_exactly_the_schema_valid_compact_documents() {
        let s = tag_schema();
        let good = br#"{"label":"sport","confidence":0.75,"keywords":["a\"b","\u00e9"],"ok":true}"#;
        let mut m = Matcher::new(&s);
        assert!(m.feed(good));
        assert!(m.is_complete());
        let v: Value = serde_json::from_slice(good).unwrap();
        s.validate(&v).unwrap();

        for bad in [
            &br#"{"label":"spor"#[..],
            br#"{"label":"politics""#,
            br#"{"label": "sport""#,
            br#"{"label":"sport","confidence":01"#,
            br#"{"label":"sport","confidence":0.5,"keywords":["abcdef"#,
            br#"{"label":"sport","confidence":0.5,"keywords":["a","b","#,
            br#"{"label":"sport","confidence":0.5,"keywords":[],"ok":yes"#,
        ] {
            let mut m = Matcher::new(&s);
            let fed = m.feed(bad);
            let complete_prefix = bad == br#"{"label":"spor"#;
            assert_eq!(fed, complete_prefix, "{}", String::from_utf8_lossy(bad));
        }
        let m = Matcher::new(&s);
        assert!(!m.is_complete());
        assert!(m.accepts(b"{\"lab"));
        assert!(!m.accepts(b"{\"x"));
    }

    #[test]
    fn numbers_end_when_what_follows_arrives() {
        let s = Schema::parse(&json!({"type": "array", "items": {"type": "integer"}})).unwrap();
        let mut m = Matcher::new(&s);
        assert!(m.feed(b"[12,-3,0"));
        assert!(!m.accepts(b"5"), "no leading zeros");
        assert!(!m.accepts(b".5"), "integers have no fraction");
        assert!(m.feed(b"]"));
        assert!(m.is_complete());
        let top = Schema::parse(&json!({"type": "number"})).unwrap();
        let mut m = Matcher::new(&top);
        assert!(m.feed(b"-1.5e3"));
        assert!(m.is_complete());
        let ranged = Schema::parse(
            &json!({"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}}),
        )
        .unwrap();
        let mut m = Matcher::new(&ranged);
        assert!(m.feed(b"[0.5,1"));
        assert!(!m.accepts(b".5]"), "1.5 is out of range");
        assert!(m.accepts(b"]"));
        assert!(!m.accepts(b"5"), "15 can never come back into range");
    }

    #[test]
    fn strings_stay_valid_utf8_and_escaped() {
        let s = Schema::parse(&json!({"type": "string"})).unwrap();
        let m = Matcher::new(&s);
        assert!(m.accepts("\"café ✓".as_bytes()));
        assert!(!m.accepts(b"\"\xff"));
        assert!(!m.accepts(b"\"a\nb"), "raw control characters are not JSON");
        assert!(m.accepts(b"\"a\\nb\""));
        assert!(!m.accepts(b"\"\\x"));
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
        assert!(Schema::parse(&json!({"type": ["string", "null"]})).is_err());
    }
}
