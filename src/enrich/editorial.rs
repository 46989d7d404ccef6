//! Editors' decisions on tags: accept, reject or add a label on a stored item. Each decision is
//! one line appended (and synced) to a JSONL log, with who and when, so nothing an editor did is
//! lost and the log can be replayed. The export turns the decisions into the tagging eval's test
//! format, so editors' work becomes golden data.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ingest::reindex::read_item;
use crate::store::VectorStore;

/// What an editor did to one label of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The model's tag is right.
    Accept,
    /// The model's tag is wrong.
    Reject,
    /// A tag the model missed.
    Add,
}

/// One decision, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagDecision {
    pub item: String,
    /// The taxonomy concept id.
    pub label: String,
    pub verdict: Verdict,
    /// The editor (the API key's name).
    pub editor: String,
    /// RFC 3339, UTC.
    pub at: String,
}

/// Errors reading or writing the log.
#[derive(Debug, thiserror::Error)]
pub enum EditorialError {
    #[error("editorial log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("editorial log {path}:{line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Ingest(#[from] crate::ingest::pipeline::IngestError),
}

/// The append-only log of decisions (`data_dir/editorial.jsonl`).
pub struct EditorialLog {
    path: PathBuf,
    writer: Mutex<std::fs::File>,
}

impl EditorialLog {
    /// Open (creating) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, EditorialError> {
        let io = |source| EditorialError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(file),
        })
    }

    /// Append one decision; it is on disk (synced) when this returns.
    pub fn record(&self, decision: &TagDecision) -> Result<(), EditorialError> {
        let mut line = serde_json::to_string(decision).expect("a decision serializes");
        line.push('\n');
        let mut file = self.writer.lock().expect("editorial log lock");
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|source| EditorialError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Every decision, oldest first.
    pub fn all(&self) -> Result<Vec<TagDecision>, EditorialError> {
        read_log(&self.path)
    }

    /// The decisions on one item, oldest first.
    pub fn of_item(&self, item: &str) -> Result<Vec<TagDecision>, EditorialError> {
        Ok(self.all()?.into_iter().filter(|d| d.item == item).collect())
    }
}

/// Read a decisions log; a missing file holds none.
pub fn read_log(path: &Path) -> Result<Vec<TagDecision>, EditorialError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(EditorialError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| EditorialError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|e| EditorialError::Corrupt {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

/// Each label's latest verdict on one item (a later decision overrides an earlier one).
pub fn latest_verdicts(decisions: &[TagDecision]) -> BTreeMap<String, Verdict> {
    let mut out = BTreeMap::new();
    for d in decisions {
        out.insert(d.label.clone(), d.verdict);
    }
    out
}

/// The gold labels of a reviewed item: the model's tags the editor accepted, plus the tags they
/// added, minus the ones they rejected (latest verdict per label). Model tags nobody reviewed are
/// not gold: an editor's silence is not a judgement.
pub fn gold_labels(decisions: &[TagDecision]) -> Vec<String> {
    latest_verdicts(decisions)
        .into_iter()
        .filter(|(_, v)| matches!(v, Verdict::Accept | Verdict::Add))
        .map(|(label, _)| label)
        .collect()
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExportSummary {
    /// Items written (reviewed, still stored, with at least one gold label).
    pub items: usize,
    pub decisions: usize,
    /// Reviewed items no longer in the collection.
    pub missing: usize,
    /// Reviewed items whose every label was rejected (no gold labels to write).
    pub empty: usize,
}

/// Write every reviewed item of `collection` in the tagging eval's test format, one JSON object
/// per line: `{"id", "title", "body", "labels", "rejected", "editors"}` (`eval tagging --test`
/// reads id, title, body and labels), in item id order.
pub async fn export_tagging_gold<S: VectorStore>(
    store: &S,
    collection: &str,
    decisions: &[TagDecision],
    out: &mut impl Write,
) -> Result<ExportSummary, EditorialError> {
    let mut by_item: BTreeMap<&str, Vec<TagDecision>> = BTreeMap::new();
    for d in decisions {
        by_item.entry(d.item.as_str()).or_default().push(d.clone());
    }
    let mut summary = ExportSummary {
        decisions: decisions.len(),
        ..ExportSummary::default()
    };
    for (id, decisions) in by_item {
        let Some((item, _)) = read_item(store, collection, id).await? else {
            summary.missing += 1;
            continue;
        };
        let labels = gold_labels(&decisions);
        if labels.is_empty() {
            summary.empty += 1;
            continue;
        }
        let rejected: Vec<String> = latest_verdicts(&decisions)
            .into_iter()
            .filter(|(_, v)| *v == Verdict::Reject)
            .map(|(l, _)| l)
            .collect();
        let editors: BTreeSet<&str> = decisions.iter().map(|d| d.editor.as_str()).collect();
        let line = json!({
            "id": item.id, "title": item.title, "body": item.body,
            "labels": labels, "rejected": rejected, "editors": editors,
        });
        writeln!(out, "{line}").map_err(|source| EditorialError::Io {
            path: PathBuf::from("<export>"),
            source,
        })?;
        summary.items += 1;
    }
    Ok(summary)
}

/// An item's tags as an editor sees them: the model's stored tags (`tag_scores`) with each
/// one's latest verdict, then the tags editors added (source `editor`).
pub fn reviewed_tags(stored_tag_scores: Option<&Value>, decisions: &[TagDecision]) -> Vec<Value> {
    let verdicts = latest_verdicts(decisions);
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for tag in stored_tag_scores
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(label) = tag.get("label").and_then(Value::as_str) else {
            continue;
        };
        seen.insert(label.to_string());
        let mut tag = tag.clone();
        tag["verdict"] = json!(verdicts.get(label));
        out.push(tag);
    }
    for (label, verdict) in &verdicts {
        if *verdict == Verdict::Add && !seen.contains(label) {
            out.push(json!({"label": label, "confidence": 1.0, "source": "editor", "evidence": [], "verdict": verdict}));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(label: &str, verdict: Verdict) -> TagDecision {
        TagDecision {
            item: "a".into(),
            label: label.into(),
            verdict,
            editor: "ed".into(),
            at: "2026-11-30T00:00:00Z".into(),
        }
    }

    #[test]
    fn gold_is_accepted_plus_added_minus_rejected_latest_wins() {
        let log = [
            d("earn", Verdict::Accept),
            d("acq", Verdict::Reject),
            d("grain", Verdict::Add),
            d("earn", Verdict::Reject),
            d("acq", Verdict::Accept),
        ];
        assert_eq!(gold_labels(&log), vec!["acq", "grain"]);
    }

    #[test]
    fn log_round_trips_and_reviewed_tags_show_verdicts_and_additions() {
        let dir = tempfile::tempdir().unwrap();
        let log = EditorialLog::open(&dir.path().join("sub/editorial.jsonl")).unwrap();
        log.record(&d("earn", Verdict::Reject)).unwrap();
        log.record(&d("grain", Verdict::Add)).unwrap();
        let back = log.of_item("a").unwrap();
        assert_eq!(back.len(), 2);
        assert!(log.of_item("b").unwrap().is_empty());
        let stored = json!([{"label": "earn", "confidence": 0.9, "source": "knn", "evidence": []}]);
        let tags = reviewed_tags(Some(&stored), &back);
        assert_eq!(tags[0]["verdict"], "reject");
        assert_eq!(tags[1]["label"], "grain");
        assert_eq!(tags[1]["source"], "editor");
    }
}
