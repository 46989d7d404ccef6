//! Enrichment: signals computed from stored content, each with its lineage.
//!
//! - [`taxonomy`]: label sets as data (a TSV with `id`/`qcode`, `label`, optional `definition`,
//!   `parent`, `active`), a typed tree versioned by content hash.
//! - [`knn`]: the kNN tagger: the most similar items of a labelled memory collection vote their
//!   labels, weighted by similarity, through the one search path ([`crate::search`]).
//!
//! Built so far: the taxonomy and the kNN tagger with its eval (`signaldesk eval tagging`). The
//! LLM, zero-shot and ensemble taggers, summaries and stored signals build on these.

pub mod knn;
pub mod tag_file;
pub mod taxonomy;

use serde::{Deserialize, Serialize};

/// One label given to an item, with what it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    /// The concept's id in the taxonomy.
    pub label: String,
    /// The tagger's confidence, 0 to 1 (for kNN: the label's share of the weighted votes).
    pub confidence: f32,
    /// Which tagger gave it (`knn`, ...).
    pub source: String,
    /// What it rests on: for kNN, the ids of the neighbours that voted for it.
    pub evidence: Vec<String>,
}
