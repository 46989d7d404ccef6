//! The interaction log: who engaged with what, how and when.
//!
//! Stored in redb (already the embedding and LLM caches' store): an embedded, crash-safe
//! (copy-on-write B-trees, fsync on commit), single-file key-value store, so the log needs no
//! server and survives a killed ingest. Keys are (user, timestamp, item, event), so one user's
//! history is one ordered range and re-ingesting a file adds nothing twice.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use redb::{Builder, ConcurrencyMode, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RankError;
use crate::config::RankConfig;

const EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("interactions_v1");

/// One engagement of a user with an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    pub user: String,
    pub item: String,
    /// `view`, `click`, `like`, `rating`, or any other type the config weighs.
    pub event: String,
    /// The rating, watch share or other value the event carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Seconds since the Unix epoch.
    pub timestamp: i64,
}

impl Interaction {
    /// The event's weight as an engagement (0: the item was only seen).
    pub fn weight(&self, settings: &RankConfig) -> f64 {
        if self.event == "rating" {
            return match self.value {
                Some(v) if v >= settings.positive_rating => 1.0,
                _ => 0.0,
            };
        }
        settings
            .event_weights
            .get(&self.event)
            .copied()
            .unwrap_or(0.0)
    }
}

/// A line that could not be read as an interaction, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reject {
    pub line: usize,
    pub reason: String,
}

/// Write `rejects` of `file` to `path` as JSON lines (`file`, `line`, `reason`).
pub fn write_rejects(path: &Path, file: &Path, rejects: &[Reject]) -> Result<(), RankError> {
    use std::io::Write;
    let io = |source| RankError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for r in rejects {
        let line = serde_json::json!({"file": file, "line": r.line, "reason": r.reason});
        writeln!(out, "{line}").map_err(io)?;
    }
    out.flush().map_err(io)
}

/// Header names accepted for each field (MovieLens' own names included, so its `ratings.csv`
/// loads as it is).
const USER: &[&str] = &["user", "user_id", "userId"];
const ITEM: &[&str] = &["item", "item_id", "content_id", "movieId"];
const EVENT: &[&str] = &["event", "event_type", "type"];
const VALUE: &[&str] = &["value", "rating"];
const TIME: &[&str] = &["timestamp", "ts", "time"];

/// Read interactions from CSV (with a header) or JSONL (by extension), keeping the lines that
/// pass [`RawEvent::validate`] under `rules` and reporting the others with their line and
/// reason. A `rating` column without an `event` column makes every line a `rating`.
pub fn read_file(
    path: &Path,
    rules: &EventRules<'_>,
) -> Result<(Vec<Interaction>, Vec<Reject>), RankError> {
    let io = |source| RankError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut good = Vec::new();
    let mut rejects = Vec::new();
    if is_csv {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| RankError::Parse(format!("{}: header: {e}", path.display())))?
            .iter()
            .map(str::to_string)
            .collect();
        let col = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
        let (user, item, event, value, time) =
            (col(USER), col(ITEM), col(EVENT), col(VALUE), col(TIME));
        let missing: Vec<&str> = [("user", user), ("item", item)]
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            return Err(RankError::Parse(format!(
                "{}: the header has no {} column (it has: {})",
                path.display(),
                missing.join(", "),
                header.join(", ")
            )));
        }
        let rating_only = event.is_none() && value.is_some_and(|v| header[v] == "rating");
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    rejects.push(Reject {
                        line,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let get = |c: Option<usize>| c.and_then(|c| record.get(c)).map(str::trim);
            let mut fields = serde_json::Map::new();
            for (name, c) in [
                ("user", user),
                ("item", item),
                ("event", event),
                ("value", value),
                ("timestamp", time),
            ] {
                if let Some(v) = get(c).filter(|v| !v.is_empty()) {
                    fields.insert(name.into(), Value::from(v));
                }
            }
            if rating_only {
                fields.insert("event".into(), Value::from("rating"));
            }
            match RawEvent::from_fields(&fields).validate(rules) {
                Ok(x) => good.push(x),
                Err(e) => rejects.push(Reject {
                    line,
                    reason: e.to_string(),
                }),
            }
        }
    } else {
        for (i, text) in BufReader::new(file).lines().enumerate() {
            let line = i + 1;
            let text = text.map_err(io)?;
            if text.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<Value>(&text)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(|v| match v {
                    Value::Object(map) => RawEvent::from_fields(&map)
                        .validate(rules)
                        .map_err(|e| e.to_string()),
                    _ => Err("not a JSON object".to_string()),
                });
            match parsed {
                Ok(x) => good.push(x),
                Err(reason) => rejects.push(Reject { line, reason }),
            }
        }
    }
    Ok((good, rejects))
}

/// Furthest an event's timestamp may lie ahead of the receiving clock, in seconds: clocks of
/// callers drift, but an event from the future would sort after everything that really happens
/// next and never age out of a user's recent history.
pub const MAX_CLOCK_SKEW_S: i64 = 300;

/// An interaction as it arrives (a file line's fields, or `POST /v1/feedback`'s body), before
/// [`RawEvent::validate`] holds it to the one rule for every way in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawEvent {
    pub user: Option<String>,
    pub item: Option<String>,
    pub event: Option<String>,
    /// The value as written (a number, or text that should hold one).
    pub value: Option<String>,
    /// Unix seconds, RFC 3339 or `YYYY-MM-DD`; absent: the time the event is received.
    pub timestamp: Option<String>,
}

/// Why an event was refused: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventError {
    pub field: &'static str,
    pub reason: String,
    /// The event is well-formed but names an item this collection does not hold (the API's
    /// 422); otherwise the event itself is malformed (400).
    pub unknown_item: bool,
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

/// What an event is checked against when it is received.
#[derive(Clone, Copy)]
pub struct EventRules<'a> {
    /// The receiving clock, Unix seconds: the default timestamp and the skew bound's base.
    pub now: i64,
    /// Whether an item id is a stored item; `None` when there is no collection to check
    /// against yet (a log loaded before any content, or a dataset's own interactions).
    pub is_stored: Option<&'a (dyn Fn(&str) -> bool + Sync)>,
    /// The event names accepted (`RankConfig::event_vocabulary`); `None`: any name (a dataset's
    /// own interactions, read by the eval).
    pub vocabulary: Option<&'a [String]>,
}

impl EventRules<'_> {
    /// Rules at the current time with no catalogue and any event name.
    pub fn now() -> Self {
        Self {
            now: chrono::Utc::now().timestamp(),
            is_stored: None,
            vocabulary: None,
        }
    }
}

impl RawEvent {
    /// The fields of one record (strings or numbers; MovieLens' names accepted).
    pub fn from_fields(map: &serde_json::Map<String, Value>) -> Self {
        let text = |names: &[&str]| -> Option<String> {
            names.iter().find_map(|n| match map.get(*n) {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
        };
        Self {
            user: text(USER),
            item: text(ITEM),
            event: text(EVENT),
            value: text(VALUE),
            timestamp: text(TIME),
        }
    }

    /// The one rule for an interaction, whether it comes from `signaldesk interactions ingest`
    /// or `POST /v1/feedback`: `user`, `item` and `event` are present and not blank; `value`, when
    /// given, is a finite number, and a `rating` has one; `timestamp` is Unix seconds, RFC 3339
    /// or `YYYY-MM-DD` (absent: `rules.now`) and at most [`MAX_CLOCK_SKEW_S`] ahead of
    /// `rules.now`; and the item is a stored item of the collection when there is one.
    pub fn validate(&self, rules: &EventRules<'_>) -> Result<Interaction, EventError> {
        let err = |field: &'static str, reason: String| EventError {
            field,
            reason,
            unknown_item: false,
        };
        let present = |field: &'static str, v: &Option<String>, what: &str| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| err(field, format!("missing{what}")))
        };
        let user = present("user", &self.user, "")?;
        let item = present("item", &self.item, "")?;
        let event = present("event", &self.event, " (view, click, like, rating, ...)")?;
        let value = match self.value.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(
                v.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| err("value", format!("{v:?} is not a finite number")))?,
            ),
        };
        if let Some(names) = rules.vocabulary.filter(|n| !n.contains(&event)) {
            return Err(err(
                "event",
                format!(
                    "{event:?} is not an event name here (rank.events: {})",
                    names.join(", ")
                ),
            ));
        }
        if event == "rating" && value.is_none() {
            return Err(err("value", "a `rating` event needs a value".into()));
        }
        let timestamp = match self.timestamp.as_deref().map(str::trim) {
            None | Some("") => rules.now,
            Some(raw) => crate::content::parse_timestamp(raw).ok_or_else(|| {
                err(
                    "timestamp",
                    format!("{raw:?} is neither Unix seconds, RFC 3339 nor YYYY-MM-DD"),
                )
            })?,
        };
        if timestamp > rules.now + MAX_CLOCK_SKEW_S {
            return Err(err(
                "timestamp",
                format!(
                    "{timestamp} is more than {MAX_CLOCK_SKEW_S} s ahead of the receiving clock"
                ),
            ));
        }
        if let Some(is_stored) = rules.is_stored {
            if !is_stored(&item) {
                return Err(EventError {
                    unknown_item: true,
                    ..err("item", format!("{item:?} is not a stored item"))
                });
            }
        }
        Ok(Interaction {
            user,
            item,
            event,
            value,
            timestamp,
        })
    }
}

/// The durable interaction log.
pub struct InteractionStore {
    db: redb::Database,
    path: PathBuf,
}

impl InteractionStore {
    /// Open (or create) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, RankError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| store_err(path, e))?;
        }
        let db = Builder::new()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(|e| store_err(path, e))?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
        })
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Add interactions in one transaction; returns how many were new (an identical
    /// (user, timestamp, item, event) is kept once, its latest value winning).
    pub fn append(&self, events: &[Interaction]) -> Result<usize, RankError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| store_err(&self.path, e))?;
        let mut added = 0;
        {
            let mut table = txn
                .open_table(EVENTS)
                .map_err(|e| store_err(&self.path, e))?;
            for x in events {
                let value = serde_json::to_vec(x).expect("an interaction serializes");
                let old = table
                    .insert(key(x).as_slice(), value.as_slice())
                    .map_err(|e| store_err(&self.path, e))?;
                added += usize::from(old.is_none());
            }
        }
        txn.commit().map_err(|e| store_err(&self.path, e))?;
        Ok(added)
    }

    /// Every interaction, by user then time.
    pub fn all(&self) -> Result<Vec<Interaction>, RankError> {
        let txn = self.db.begin_read().map_err(|e| store_err(&self.path, e))?;
        let table = match txn.open_table(EVENTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(store_err(&self.path, e)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| store_err(&self.path, e))? {
            let (_, v) = entry.map_err(|e| store_err(&self.path, e))?;
            out.push(
                serde_json::from_slice(v.value())
                    .map_err(|e| store_err(&self.path, format!("corrupt record: {e}")))?,
            );
        }
        Ok(out)
    }
}

/// user \0 timestamp (sign-flipped big-endian, so keys sort by time) item \0 event.
fn key(x: &Interaction) -> Vec<u8> {
    let mut k = Vec::with_capacity(x.user.len() + x.item.len() + x.event.len() + 11);
    k.extend_from_slice(x.user.as_bytes());
    k.push(0);
    k.extend_from_slice(&((x.timestamp as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(x.item.as_bytes());
    k.push(0);
    k.extend_from_slice(x.event.as_bytes());
    k
}

fn store_err(path: &Path, e: impl std::fmt::Display) -> RankError {
    RankError::Store(format!("{}: {e}", path.display()))
}

/// Interactions grouped per user, each user's in time order (ties by item id): the shape every
/// signal is computed from.
pub fn by_user(events: &[Interaction]) -> BTreeMap<String, Vec<Interaction>> {
    let mut out: BTreeMap<String, Vec<Interaction>> = BTreeMap::new();
    for x in events {
        out.entry(x.user.clone()).or_default().push(x.clone());
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| (a.timestamp, &a.item).cmp(&(b.timestamp, &b.item)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_jsonl_load_with_rejects_named_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("ratings.csv");
        std::fs::write(
            &csv,
            "userId,movieId,rating,timestamp\n1,10,4.5,964982703\n1,,3,964982703\n2,11,x,5\n",
        )
        .unwrap();
        let (good, bad) = read_file(&csv, &EventRules::now()).unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(
            (good[0].event.as_str(), good[0].value),
            ("rating", Some(4.5))
        );
        assert_eq!(bad.iter().map(|r| r.line).collect::<Vec<_>>(), [3, 4]);
        assert!(bad[0].reason.contains("item"), "{}", bad[0].reason);
        assert!(bad[1].reason.contains("value"), "{}", bad[1].reason);

        let jsonl = dir.path().join("events.jsonl");
        std::fs::write(
            &jsonl,
            concat!(
                "{\"user\":\"u\",\"item\":\"a\",\"event\":\"click\",\"timestamp\":\"2026-01-02T03:04:05Z\"}\n",
                "[1]\n",
                "{\"user\":\"u\",\"item\":\"b\",\"event\":\"view\",\"timestamp\":\"yesterday\"}\n"
            ),
        )
        .unwrap();
        let (good, bad) = read_file(&jsonl, &EventRules::now()).unwrap();
        assert_eq!(good[0].timestamp, 1_767_323_045);
        assert_eq!(bad.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3]);
        assert!(bad[1].reason.contains("timestamp"));
    }

    #[test]
    fn one_rule_for_every_event_field() {
        let vocabulary = crate::config::RankConfig::default().event_vocabulary();
        let rules = EventRules {
            now: 1_800_000_000,
            is_stored: None,
            vocabulary: Some(&vocabulary),
        };
        let event = |timestamp: Option<&str>, value: Option<&str>, event: &str| RawEvent {
            user: Some("u1".into()),
            item: Some("a".into()),
            event: Some(event.into()),
            value: value.map(str::to_string),
            timestamp: timestamp.map(str::to_string),
        };
        // Absent timestamp: the receiving clock; a little skew is tolerated, more is not.
        assert_eq!(
            event(None, None, "click")
                .validate(&rules)
                .unwrap()
                .timestamp,
            rules.now
        );
        let ahead = (rules.now + MAX_CLOCK_SKEW_S).to_string();
        assert!(event(Some(&ahead), None, "click").validate(&rules).is_ok());
        let far = (rules.now + MAX_CLOCK_SKEW_S + 1).to_string();
        let e = event(Some(&far), None, "click")
            .validate(&rules)
            .unwrap_err();
        assert_eq!(e.field, "timestamp", "{e}");
        let e = event(None, None, "rating").validate(&rules).unwrap_err();
        assert_eq!(e.field, "value");
        let e = event(None, Some("NaN"), "click")
            .validate(&rules)
            .unwrap_err();
        assert_eq!(e.field, "value");
        let blank_user = RawEvent {
            user: Some("  ".into()),
            ..event(None, None, "click")
        };
        assert_eq!(blank_user.validate(&rules).unwrap_err().field, "user");
        // Names outside the vocabulary are refused; a stored-item check marks unknown items.
        let e = event(None, None, "clik").validate(&rules).unwrap_err();
        assert_eq!((e.field, e.unknown_item), ("event", false), "{e}");
        assert!(event(None, None, "skip").validate(&rules).is_ok());
        let only_b = |id: &str| id == "b";
        let checked = EventRules {
            is_stored: Some(&only_b),
            ..rules
        };
        let e = event(None, None, "click").validate(&checked).unwrap_err();
        assert_eq!((e.field, e.unknown_item), ("item", true), "{e}");
    }

    #[test]
    fn the_store_keeps_each_event_once_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.redb");
        let x = |user: &str, item: &str, t: i64| Interaction {
            user: user.into(),
            item: item.into(),
            event: "click".into(),
            value: None,
            timestamp: t,
        };
        let events = [x("u", "b", 20), x("u", "a", 10), x("v", "a", -5)];
        {
            let store = InteractionStore::open(&path).unwrap();
            assert_eq!(store.append(&events).unwrap(), 3);
            assert_eq!(store.append(&events[..2]).unwrap(), 0);
        }
        let all = InteractionStore::open(&path).unwrap().all().unwrap();
        let order: Vec<(&str, &str)> = all.iter().map(|x| (&*x.user, &*x.item)).collect();
        assert_eq!(order, [("u", "a"), ("u", "b"), ("v", "a")]);
    }
}
