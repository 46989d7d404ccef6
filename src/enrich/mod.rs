//! Enrichment: signals computed from stored content, each with its lineage.
//!
//! - [`taxonomy`]: label sets as data (a TSV with `id`/`qcode`, `label`, optional `definition`,
//!   `parent`, `active`), a typed tree versioned by content hash.
//! - [`knn`]: the kNN tagger: the most similar items of a labelled memory collection vote their
//!   labels, weighted by similarity, through the one search path ([`crate::search`]).
//! - [`zeroshot`]: for taxonomies without labelled items: the concepts nearest to an item, from
//!   a collection of the taxonomy's own labels and definitions.
//!
//! Built so far: the taxonomy, the kNN and zero-shot taggers with their eval (`signaldesk eval
//! tagging`) and `signaldesk tag`. The LLM and ensemble taggers, summaries and stored signals
//! build on these.

pub mod knn;
pub mod tag_file;
pub mod taxonomy;
pub mod zeroshot;

use serde::{Deserialize, Serialize};

use crate::search::SearchError;

/// A way of tagging items against a taxonomy: kNN over a labelled memory, zero-shot against the
/// taxonomy's own words. `signaldesk tag` and the evals run any of them alike.
#[allow(async_fn_in_trait)]
pub trait Tagger {
    /// The tagger's name in lineage and in each tag's `source` (`knn`, `zeroshot`).
    fn name(&self) -> &'static str;
    /// Tags for each text, in order, most confident first.
    async fn tag(&self, texts: &[&str]) -> Result<Vec<Vec<Tag>>, SearchError>;
}

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
