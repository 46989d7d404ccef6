//! Labelled claims in SciFact's format and the corpus they point to: what the verifier is trained
//! on and `eval grounded` scores against.
//!
//! A claim line: `{"id", "claim", "evidence": {DOC: [{"sentences": [i, ...], "label":
//! "SUPPORT"|"CONTRADICT"}]}, "cited_doc_ids": [...]}`; the corpus is BEIR's `corpus.jsonl(.gz)`
//! (`_id`, `title`, `text`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Verdict;

/// Why labelled claims or their corpus cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ClaimsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One gold rationale: sentence indices into the abstract that together decide the claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldRationale {
    pub sentences: Vec<usize>,
    pub label: Verdict,
}

/// A claim's gold evidence: document id → its rationale sets (all with one label). Empty:
/// nothing in the corpus decides it (NOT_ENOUGH_INFO).
pub type GoldEvidence = BTreeMap<String, Vec<GoldRationale>>;

/// One labelled claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledClaim {
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    pub claim: String,
    #[serde(default)]
    pub evidence: GoldEvidence,
    /// Documents the claim's author cited: for a NOT_ENOUGH_INFO claim, near misses.
    #[serde(default, rename = "cited_doc_ids", deserialize_with = "ids_strings")]
    pub cited: Vec<String>,
}

impl LabelledClaim {
    /// The claim's gold verdict on `doc` (NOT_ENOUGH_INFO when it is not evidence).
    pub fn verdict_on(&self, doc: &str) -> Verdict {
        self.evidence
            .get(doc)
            .and_then(|sets| sets.first())
            .map_or(Verdict::NotEnoughInfo, |s| s.label)
    }
}

fn id_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(v.as_str().map_or_else(|| v.to_string(), str::to_string))
}

fn ids_strings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v: Vec<serde_json::Value> = Vec::deserialize(d)?;
    Ok(v.iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .collect())
}

/// Lines of a `.jsonl` or `.jsonl.gz` file.
fn lines(path: &Path) -> Result<Vec<String>, ClaimsError> {
    let read = |source| ClaimsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    BufReader::new(reader)
        .lines()
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)
}

/// The labelled claims of `path`.
pub fn read_claims(path: &Path) -> Result<Vec<LabelledClaim>, ClaimsError> {
    lines(path)?
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| ClaimsError::Invalid {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// A corpus document: its title and its text (the abstract, sentences joined by spaces).
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusDoc {
    pub title: String,
    pub text: String,
}

impl CorpusDoc {
    /// The document as a content item `id` (title, and the text as its body), as ingest reads a
    /// BEIR corpus line.
    pub fn to_item(&self, id: &str) -> crate::content::ContentItem {
        crate::content::ContentItem {
            id: id.to_string(),
            title: self.title.clone(),
            body: self.text.clone(),
            url: None,
            source: None,
            content_type: Default::default(),
            language: None,
            published_at: None,
            metadata: Default::default(),
        }
    }
}

/// The documents of a BEIR corpus whose ids are in `wanted` (all when `None`).
pub fn read_corpus(
    path: &Path,
    wanted: Option<&HashSet<String>>,
) -> Result<HashMap<String, CorpusDoc>, ClaimsError> {
    let mut out = HashMap::new();
    for (i, line) in lines(path)?.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| ClaimsError::Invalid {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?;
        let id = match &v["_id"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if wanted.is_some_and(|w| !w.contains(&id)) {
            continue;
        }
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        out.insert(
            id,
            CorpusDoc {
                title: text("title"),
                text: text("text"),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_read_with_numeric_ids_and_their_verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claims.jsonl");
        std::fs::write(
            &path,
            r#"{"id": 2, "claim": "A", "evidence": {"13": [{"sentences": [4], "label": "CONTRADICT"}]}, "cited_doc_ids": [13]}
{"id": 3, "claim": "B", "evidence": {}, "cited_doc_ids": [7, 8]}
"#,
        )
        .unwrap();
        let claims = read_claims(&path).unwrap();
        assert_eq!(claims[0].id, "2");
        assert_eq!(claims[0].verdict_on("13"), Verdict::Contradict);
        assert_eq!(claims[0].evidence["13"][0].sentences, [4]);
        assert_eq!(claims[1].verdict_on("7"), Verdict::NotEnoughInfo);
        assert_eq!(claims[1].cited, ["7", "8"]);
        std::fs::write(&path, "{\"id\": 1}\n").unwrap();
        let e = read_claims(&path).unwrap_err().to_string();
        assert!(e.contains("claims.jsonl:1:") && e.contains("claim"), "{e}");
    }
}
