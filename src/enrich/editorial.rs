//! Editors' decisions on tags: accept, reject or add a label on a stored item. Each decision is
//! one line appended (and synced) to a JSONL log, with who and when, so nothing an editor did is
//! lost and the log can be replayed. The export turns the decisions into the tagging eval's test
//! format, so editors' work becomes golden data.
//!
//! A decision takes effect at once: an item serves the model's tags plus the tags editors added
//! minus the ones they rejected ([`served_tags`]) in its `tags` payload, which search filters,
//! hits, the API's content view and the recommender's tag features all read; the model's own
//! tags stay in `tag_scores` beside the lineage. [`decide`] is the one way a decision is made.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ingest::reindex::read_item;
use crate::store::{StoreError, VectorStore};

/// Where editors' decisions are logged: `data_dir/editorial.jsonl`.
pub fn log_path(config: &crate::Config) -> PathBuf {
    config.data_dir.join("editorial.jsonl")
}

/// Where a deleted item's decisions go ([`EditorialLog::archive_item`]), beside the log.
pub fn archive_path(log: &Path) -> PathBuf {
    log.with_file_name("editorial-archive.jsonl")
}

/// What an editor did to one label of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
// Named apart from `answer::Verdict`, which the API documents as `Verdict`.
#[schema(as = TagVerdict)]
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

    /// Every decision, grouped by item, oldest first within each.
    pub fn by_item(&self) -> Result<BTreeMap<String, Vec<TagDecision>>, EditorialError> {
        let mut out: BTreeMap<String, Vec<TagDecision>> = BTreeMap::new();
        for d in self.all()? {
            out.entry(d.item.clone()).or_default().push(d);
        }
        Ok(out)
    }

    /// Move the decisions on `item` (which was deleted) to the archive beside the log, so an item
    /// posted later under the same id starts unreviewed. The archive is appended and synced
    /// before the log is rewritten (to a temporary file, renamed over it): a crash between the
    /// two leaves the decisions in both places, never in neither. Answers how many moved.
    pub fn archive_item(&self, item: &str) -> Result<usize, EditorialError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EditorialError::Io { path, source }
        };
        let mut file = self.writer.lock().expect("editorial log lock");
        let (moving, staying): (Vec<_>, Vec<_>) = read_log(&self.path)?
            .into_iter()
            .partition(|d| d.item == item);
        if moving.is_empty() {
            return Ok(0);
        }
        let lines = |ds: &[TagDecision]| -> String {
            ds.iter()
                .map(|d| serde_json::to_string(d).expect("a decision serializes") + "\n")
                .collect()
        };
        let archive = archive_path(&self.path);
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&archive)
            .map_err(io(&archive))?;
        out.write_all(lines(&moving).as_bytes())
            .and_then(|()| out.sync_data())
            .map_err(io(&archive))?;
        let tmp = self.path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, lines(&staying)).map_err(io(&tmp))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        *file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        Ok(moving.len())
    }
}

/// The tags an item serves: the model's (in its order), minus the ones editors rejected, plus
/// the ones they added (each label's latest verdict wins).
pub fn served_tags(model: &[String], decisions: &[TagDecision]) -> Vec<String> {
    let verdicts = latest_verdicts(decisions);
    let mut out: Vec<String> = model
        .iter()
        .filter(|l| verdicts.get(*l) != Some(&Verdict::Reject))
        .cloned()
        .collect();
    for (label, verdict) in verdicts {
        if verdict == Verdict::Add && !out.contains(&label) {
            out.push(label);
        }
    }
    out
}

/// The model's tags of a stored item: the labels of its `tag_scores` payload.
pub fn model_tags(payload: &serde_json::Map<String, Value>) -> Vec<String> {
    payload
        .get("tag_scores")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("label").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The labels whose latest verdict is `verdict`, in label order.
fn labels_with(verdicts: &BTreeMap<String, Verdict>, verdict: Verdict) -> Vec<&String> {
    verdicts
        .iter()
        .filter(|(_, v)| **v == verdict)
        .map(|(label, _)| label)
        .collect()
}

/// The payload fields an item's decisions set: `tags` (served) and `editor_tags` (what editors
/// added and rejected, so the served tags can be told from the model's).
pub fn served_fields(
    model: &[String],
    decisions: &[TagDecision],
) -> serde_json::Map<String, Value> {
    let verdicts = latest_verdicts(decisions);
    let with = |v: Verdict| labels_with(&verdicts, v);
    let mut fields = serde_json::Map::new();
    fields.insert("tags".into(), json!(served_tags(model, decisions)));
    fields.insert(
        "editor_tags".into(),
        json!({"added": with(Verdict::Add), "rejected": with(Verdict::Reject)}),
    );
    fields
}

/// Why a decision was refused; each names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("no item {0:?}")]
    NoItem(String),
    #[error("{label:?} is not a tag of item {item:?} (its tags: {tags:?}): accept and reject are for the item's own tags; use add for a new one")]
    NotATag {
        item: String,
        label: String,
        tags: Vec<String>,
    },
    #[error("{label:?} is not a concept of taxonomy {taxonomy}")]
    NotInTaxonomy { label: String, taxonomy: String },
    #[error("the label is empty")]
    EmptyLabel,
    #[error(transparent)]
    Log(#[from] EditorialError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DecisionError {
    /// The request field the refusal is about (`item` or `label`); none for a failure.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            DecisionError::NoItem(_) => Some("item"),
            DecisionError::NotATag { .. }
            | DecisionError::NotInTaxonomy { .. }
            | DecisionError::EmptyLabel => Some("label"),
            DecisionError::Log(_) | DecisionError::Store(_) => None,
        }
    }
}

/// Record an editor's decision on a stored item of `collection` and serve its effect at once:
/// `accept` and `reject` only for the item's own tags (the model's, or ones editors added),
/// `add` only for concepts of `taxonomy` (when there is one; in an exclusive taxonomy an `add`
/// also rejects the label the item served, so it keeps exactly one). Answers the item's served
/// tags and the decisions recorded (the one asked for, after the rejections an exclusive
/// taxonomy's `add` implies): what a replica publishes to the others.
pub async fn decide<S: VectorStore>(
    store: &S,
    collection: &str,
    log: &EditorialLog,
    taxonomy: Option<&super::taxonomy::Taxonomy>,
    decision: TagDecision,
) -> Result<(Vec<String>, Vec<TagDecision>), DecisionError> {
    if decision.label.trim().is_empty() {
        return Err(DecisionError::EmptyLabel);
    }
    let first = match store.get(collection, &[(decision.item.clone(), 0)]).await {
        Ok(found) => found,
        Err(StoreError::NoCollection(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let Some(first) = first.into_iter().next() else {
        return Err(DecisionError::NoItem(decision.item));
    };
    let model = model_tags(&first.payload);
    let mut decisions = log.of_item(&decision.item)?;
    let current = served_tags(&model, &decisions);
    let own = model.contains(&decision.label) || current.contains(&decision.label);
    match decision.verdict {
        Verdict::Accept | Verdict::Reject if !own => {
            return Err(DecisionError::NotATag {
                item: decision.item,
                label: decision.label,
                tags: current,
            })
        }
        Verdict::Add => {
            if let Some(t) = taxonomy.filter(|t| !t.contains(&decision.label)) {
                return Err(DecisionError::NotInTaxonomy {
                    label: decision.label,
                    taxonomy: t.id(),
                });
            }
        }
        _ => {}
    }
    // An exclusive taxonomy serves one label: adding one moves the item there, so the labels
    // it served are rejected by the same editor, each its own line in the log (and its history).
    let mut recorded = Vec::new();
    if decision.verdict == Verdict::Add && taxonomy.is_some_and(|t| t.exclusive) {
        for label in current.iter().filter(|l| **l != decision.label) {
            let moved = TagDecision {
                label: label.clone(),
                verdict: Verdict::Reject,
                ..decision.clone()
            };
            log.record(&moved)?;
            decisions.push(moved.clone());
            recorded.push(moved);
        }
    }
    log.record(&decision)?;
    decisions.push(decision.clone());
    recorded.push(decision.clone());
    let fields = served_fields(&model, &decisions);
    store
        .set_item_fields(collection, &decision.item, fields)
        .await?;
    Ok((served_tags(&model, &decisions), recorded))
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
    /// Items written (reviewed, still stored, with at least one label as decided).
    pub items: usize,
    /// Of those, items with model tags no editor gave a verdict on (exported as served, and
    /// listed under `unreviewed`).
    pub partly_reviewed: usize,
    pub decisions: usize,
    /// Reviewed items no longer in the collection.
    pub missing: usize,
    /// Reviewed items left with no label at all (every tag rejected, none added).
    pub empty: usize,
}

/// Write every reviewed item of `collection` in the tagging eval's test format, one JSON object
/// per line: `{"id", "title", "body", "labels", "rejected", "added", "unreviewed", "editors"}`
/// (`eval tagging --test` reads id, title, body and labels), in item id order. `labels` are the
/// labels as decided, which are the item's served tags ([`served_tags`]): a partly reviewed
/// item keeps the model tags nobody rejected (named in `unreviewed`, for a stricter reader).
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
        let Some((item, payload)) = read_item(store, collection, id).await? else {
            summary.missing += 1;
            continue;
        };
        let model = model_tags(&payload);
        let labels = served_tags(&model, &decisions);
        if labels.is_empty() {
            summary.empty += 1;
            continue;
        }
        let verdicts = latest_verdicts(&decisions);
        let with = |v: Verdict| labels_with(&verdicts, v);
        let unreviewed: Vec<&String> = model
            .iter()
            .filter(|l| !verdicts.contains_key(*l))
            .collect();
        summary.partly_reviewed += usize::from(!unreviewed.is_empty());
        let editors: BTreeSet<&str> = decisions.iter().map(|d| d.editor.as_str()).collect();
        let line = json!({
            "id": item.id, "title": item.title, "body": item.body,
            "labels": labels, "rejected": with(Verdict::Reject), "added": with(Verdict::Add),
            "unreviewed": unreviewed, "editors": editors,
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
