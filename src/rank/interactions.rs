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

/// Header names accepted for each field (MovieLens' own names included, so its `ratings.csv`
/// loads as it is).
const USER: &[&str] = &["user", "user_id", "userId"];
const ITEM: &[&str] = &["item", "item_id", "content_id", "movieId"];
const EVENT: &[&str] = &["event", "event_type", "type"];
const VALUE: &[&str] = &["value", "rating"];
const TIME: &[&str] = &["timestamp", "ts", "time"];

/// Read interactions from CSV (with a header) or JSONL (by extension), keeping good lines and
/// reporting bad ones. A `rating` column without an `event` column makes every line a `rating`.
pub fn read_file(path: &Path) -> Result<(Vec<Interaction>, Vec<Reject>), RankError> {
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
        let missing: Vec<&str> = [("user", user), ("item", item), ("timestamp", time)]
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
            match parse_fields(&fields) {
                Ok(x) => good.push(x),
                Err(reason) => rejects.push(Reject { line, reason }),
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
                    Value::Object(map) => parse_fields(&map),
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

/// One record's fields (strings or numbers) as an interaction, or the reason it is not one.
fn parse_fields(map: &serde_json::Map<String, Value>) -> Result<Interaction, String> {
    let text = |names: &[&str]| -> Option<String> {
        names.iter().find_map(|n| match map.get(*n) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    };
    let user = text(USER).ok_or("missing field `user`")?;
    let item = text(ITEM).ok_or("missing field `item`")?;
    let event = text(EVENT).ok_or("missing field `event` (view, click, like, rating, ...)")?;
    let value = match text(VALUE) {
        None => None,
        Some(v) => Some(
            v.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("field `value`: {v:?} is not a number"))?,
        ),
    };
    if event == "rating" && value.is_none() {
        return Err("a `rating` event needs a `value`".into());
    }
    let raw = text(TIME).ok_or("missing field `timestamp`")?;
    let timestamp = parse_timestamp(&raw).ok_or_else(|| {
        format!("field `timestamp`: {raw:?} is neither Unix seconds nor RFC 3339")
    })?;
    Ok(Interaction {
        user,
        item,
        event,
        value,
        timestamp,
    })
}

/// Unix seconds, or what ingest's one date parser takes (RFC 3339 or `YYYY-MM-DD`).
pub fn parse_timestamp(raw: &str) -> Option<i64> {
    if let Ok(n) = raw.trim().parse::<i64>() {
        return Some(n);
    }
    let rfc3339 = crate::content::parse_date(raw)?;
    chrono::DateTime::parse_from_rfc3339(&rfc3339)
        .ok()
        .map(|t| t.timestamp())
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
        let (good, bad) = read_file(&csv).unwrap();
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
        let (good, bad) = read_file(&jsonl).unwrap();
        assert_eq!(good[0].timestamp, 1_767_323_045);
        assert_eq!(bad.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3]);
        assert!(bad[1].reason.contains("timestamp"));
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
