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

/// Tags in a tree taxonomy as the tree says: each tag's ancestors are implied (with the best
/// confidence of the tags that imply them, and those tags as evidence), and, with `max_depth`,
/// tags below that depth are replaced by their ancestor at it (depth 1: the top concepts). Labels
/// unknown to the taxonomy pass through unchanged. Most confident first, each label once.
pub fn in_hierarchy(
    tags: Vec<Tag>,
    taxonomy: &taxonomy::Taxonomy,
    max_depth: Option<usize>,
) -> Vec<Tag> {
    let mut out: Vec<Tag> = Vec::new();
    let merge = |tag: Tag, out: &mut Vec<Tag>| match out.iter_mut().find(|t| t.label == tag.label) {
        Some(t) => {
            t.confidence = t.confidence.max(tag.confidence);
            for e in tag.evidence {
                if !t.evidence.contains(&e) {
                    t.evidence.push(e);
                }
            }
        }
        None => out.push(tag),
    };
    for tag in tags {
        if !taxonomy.contains(&tag.label) {
            merge(tag, &mut out);
            continue;
        }
        // Root first: the concept's path from the top.
        let mut path: Vec<String> = taxonomy
            .ancestors(&tag.label)
            .into_iter()
            .rev()
            .map(str::to_string)
            .collect();
        path.push(tag.label.clone());
        if let Some(depth) = max_depth {
            path.truncate(depth.max(1));
        }
        let own = path.last() == Some(&tag.label);
        for (i, concept) in path.iter().enumerate() {
            let is_tag = own && i + 1 == path.len();
            merge(
                Tag {
                    label: concept.clone(),
                    confidence: tag.confidence,
                    source: tag.source.clone(),
                    evidence: if is_tag {
                        tag.evidence.clone()
                    } else {
                        vec![format!("implied by {}", tag.label)]
                    },
                },
                &mut out,
            );
        }
    }
    out.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then_with(|| a.label.cmp(&b.label))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(label: &str, confidence: f32) -> Tag {
        Tag {
            label: label.into(),
            confidence,
            source: "knn".into(),
            evidence: vec!["n1".into()],
        }
    }

    #[test]
    fn children_imply_their_ancestors_and_deep_tags_are_cut() {
        let t = taxonomy::Taxonomy::parse(
            "tree",
            "tree.tsv",
            b"id\tlabel\tparent\nsport\tSport\t\nfootball\tFootball\tsport\ncup\tCup\tfootball\ntennis\tTennis\tsport\n",
        )
        .unwrap();
        let labels = |tags: &[Tag]| tags.iter().map(|t| t.label.clone()).collect::<Vec<_>>();
        let full = in_hierarchy(vec![tag("cup", 0.9), tag("tennis", 0.5)], &t, None);
        assert_eq!(labels(&full), ["cup", "football", "sport", "tennis"]);
        assert_eq!(
            full[2].confidence, 0.9,
            "sport takes the best confidence implying it"
        );
        assert_eq!(full[2].evidence, ["implied by cup", "implied by tennis"]);
        assert_eq!(full[0].evidence, ["n1"]);
        let cut = in_hierarchy(vec![tag("cup", 0.9), tag("tennis", 0.5)], &t, Some(1));
        assert_eq!(labels(&cut), ["sport"]);
        let two = in_hierarchy(vec![tag("cup", 0.9), tag("elsewhere", 0.1)], &t, Some(2));
        assert_eq!(labels(&two), ["football", "sport", "elsewhere"]);
    }
}
