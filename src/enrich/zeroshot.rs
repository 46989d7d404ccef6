//! The zero-shot tagger: for a taxonomy with no labelled items (IPTC Media Topics, IAB), an item
//! is compared with the taxonomy's own words. Each active concept becomes a searchable item of a
//! labels collection (title: its label; body: its definition and its ancestors' labels), ingested
//! once per taxonomy version; an item's candidates are the concepts nearest to it through
//! [`Searcher`] (dense), kept at `enrich.zeroshot.threshold` cosine or above, at most
//! `max_labels`, at least `min_labels`. The threshold is calibrated by `eval tagging --tagger
//! zeroshot` on a labelled validation split where one exists.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use super::taxonomy::Taxonomy;
use super::Tag;
use crate::config::{Config, SearchMode, ZeroShotConfig};
use crate::embed::Embedder;
use crate::ingest::pipeline::{ingest_file, IngestError, IngestOptions};
use crate::search::{Hit, SearchError, Searcher};
use crate::store::{Filter, VectorStore};

/// Queries per store round trip.
const BATCH: usize = 256;

/// The labels collection of `taxonomy` (`labels-<name>-<version>`), ingested from the
/// taxonomy's active concepts if it is not there yet (ingest is idempotent: a second call finds
/// every concept unchanged).
pub async fn prepare_labels<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    config: &Config,
    taxonomy: &Taxonomy,
) -> Result<String, IngestError> {
    let collection = format!("labels-{}-{}", taxonomy.name, taxonomy.version)
        .to_ascii_lowercase()
        .replace(
            |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "-",
        );
    // The name carries the taxonomy's version: a collection already holding every active
    // concept is this taxonomy's, so nothing is read, spooled or checked again.
    let active = taxonomy.concepts().iter().filter(|c| c.active).count();
    let firsts = Filter::first_chunks();
    if store.count(&collection, &firsts).await.ok() == Some(active) {
        return Ok(collection);
    }
    let spool =
        SpooledConcepts::write(config, taxonomy).map_err(|source| IngestError::Rejects {
            path: config.data_dir.clone(),
            source,
        })?;
    let options = IngestOptions::from_config(config, &collection, None);
    ingest_file(store, embedder, &spool.0, &options, |_, _| {}, |_| {}).await?;
    Ok(collection)
}

/// The concepts as a JSONL file to ingest, removed when dropped.
struct SpooledConcepts(PathBuf);

impl SpooledConcepts {
    fn write(config: &Config, taxonomy: &Taxonomy) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)?;
        let path = config
            .data_dir
            .join(format!(".labels-{}.jsonl", std::process::id()));
        let mut lines = String::new();
        for c in taxonomy.concepts().iter().filter(|c| c.active) {
            lines.push_str(
                &json!({"id": c.id, "title": c.label, "body": concept_text(taxonomy, &c.id)})
                    .to_string(),
            );
            lines.push('\n');
        }
        std::fs::write(&path, lines)?;
        Ok(Self(path))
    }
}

impl Drop for SpooledConcepts {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a concept is compared by, beside its label: its definition, then where it sits
/// ("Part of: sport > football").
pub fn concept_text(taxonomy: &Taxonomy, id: &str) -> String {
    let Some(c) = taxonomy.get(id) else {
        return String::new();
    };
    let mut text = c.definition.clone().unwrap_or_default();
    let path: Vec<&str> = taxonomy
        .ancestors(id)
        .into_iter()
        .rev()
        .filter_map(|a| taxonomy.get(a).map(|c| c.label.as_str()))
        .collect();
    if !path.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("Part of: {}", path.join(" > ")));
    }
    text
}

/// Tags items by their nearest concepts.
pub struct ZeroShotTagger<'a, S> {
    searcher: Searcher<'a, S>,
    settings: ZeroShotConfig,
}

impl<'a, S: VectorStore> ZeroShotTagger<'a, S> {
    /// A tagger over the labels collection behind `searcher`.
    pub fn new(searcher: Searcher<'a, S>, settings: ZeroShotConfig) -> Self {
        Self { searcher, settings }
    }

    /// The `candidates` nearest concepts of each text, most similar first.
    pub async fn candidates(&self, texts: &[&str]) -> Result<Vec<Vec<Hit>>, SearchError> {
        let mut out = Vec::with_capacity(texts.len());
        for slice in texts.chunks(BATCH) {
            out.extend(
                self.searcher
                    .search_many(
                        slice,
                        SearchMode::Dense,
                        &Filter::default(),
                        self.settings.candidates.max(1),
                    )
                    .await?,
            );
        }
        Ok(out)
    }
}

impl<S: VectorStore> super::Tagger for ZeroShotTagger<'_, S> {
    fn name(&self) -> &'static str {
        "zeroshot"
    }

    /// Tags for each text, by the configured threshold and limits.
    async fn tag(&self, texts: &[&str]) -> Result<Vec<Vec<Tag>>, SearchError> {
        Ok(self
            .candidates(texts)
            .await?
            .iter()
            .map(|c| pick(c, &self.settings))
            .collect())
    }
}

/// The concepts of `candidates` at `threshold` cosine or above, at most `max_labels`, at least
/// `min_labels`, most similar first.
pub fn pick(candidates: &[Hit], settings: &ZeroShotConfig) -> Vec<Tag> {
    let above = candidates
        .iter()
        .take_while(|h| h.score >= settings.threshold)
        .count();
    let keep = above
        .max(settings.min_labels)
        .min(settings.max_labels.max(settings.min_labels))
        .min(candidates.len());
    candidates[..keep]
        .iter()
        .map(|h| Tag {
            label: h.id.clone(),
            confidence: h.score,
            source: "zeroshot".into(),
            evidence: Vec::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32) -> Hit {
        Hit {
            id: id.into(),
            score,
            title: None,
            chunk: 0,
            start: 0,
            end: 0,
            text: String::new(),
            metadata: Default::default(),
            tags: Vec::new(),
            summary: None,
            standfirst: None,
        }
    }

    #[test]
    fn picks_respect_the_threshold_and_both_limits() {
        let c = [hit("a", 0.6), hit("b", 0.5), hit("c", 0.45), hit("d", 0.2)];
        let s = |threshold, max_labels, min_labels| ZeroShotConfig {
            threshold,
            max_labels,
            min_labels,
            candidates: 10,
        };
        let ids = |tags: Vec<Tag>| tags.into_iter().map(|t| t.label).collect::<Vec<_>>();
        assert_eq!(ids(pick(&c, &s(0.44, 5, 1))), ["a", "b", "c"]);
        assert_eq!(ids(pick(&c, &s(0.44, 2, 1))), ["a", "b"]);
        assert_eq!(ids(pick(&c, &s(0.9, 3, 1))), ["a"], "the nearest always");
        assert!(pick(&c, &s(0.9, 3, 0)).is_empty());
        assert_eq!(pick(&c, &s(0.0, 3, 1))[0].source, "zeroshot");
    }

    #[test]
    fn a_concept_is_described_by_its_definition_and_its_place_in_the_tree() {
        let t = Taxonomy::parse(
            "tree",
            "tree.tsv",
            "id\tlabel\tdefinition\tparent\nsport\tSport\tAll sport\t\nfootball\tFootball\tThe game with a round ball\tsport\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            concept_text(&t, "football"),
            "The game with a round ball\nPart of: Sport"
        );
        assert_eq!(concept_text(&t, "sport"), "All sport");
    }
}
