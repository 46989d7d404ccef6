//! Enrichment: signals computed from stored content, each with its lineage.
//!
//! - [`taxonomy`]: label sets as data (a TSV with `id`/`qcode`, `label`, optional `definition`,
//!   `parent`, `active`), a typed tree versioned by content hash.
//! - [`knn`]: the kNN tagger: the most similar items of a labelled memory collection vote their
//!   labels, weighted by similarity, through the one search path ([`crate::search`]).
//! - [`zeroshot`]: for taxonomies without labelled items: the concepts nearest to an item, from
//!   a collection of the taxonomy's own labels and definitions.
//!
//! - [`head`] and [`ensemble`]: a linear head trained in-process on the memory's stored vectors,
//!   averaged with kNN's votes.
//!
//! `signaldesk tag`, `signaldesk enrich` and `signaldesk eval tagging` run any of them.

pub mod collection;
pub mod editorial;
pub mod ensemble;
pub mod head;
pub mod knn;
pub mod llm_tagger;
pub mod summarizer;
pub mod summary;
pub mod tag_file;
pub mod taxonomy;
pub mod zeroshot;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::Config;
use crate::embed::Embedder;
use crate::llm::LlmClient;
use crate::search::{SearchError, Searcher};
use crate::store::VectorStore;

/// A way of tagging items against a taxonomy: kNN over a labelled memory, zero-shot against the
/// taxonomy's own words. `signaldesk tag` and the evals run any of them alike.
#[allow(async_fn_in_trait)]
pub trait Tagger {
    /// The tagger's name in lineage and in each tag's `source` (`knn`, `zeroshot`).
    fn name(&self) -> &'static str;
    /// Tags for each text, in order, most confident first.
    async fn tag(&self, texts: &[&str]) -> Result<Vec<Vec<Tag>>, SearchError>;
    /// [`Self::tag`] with what each item cost and whether a fallback tagged it (taggers that
    /// call an LLM say; the others cost nothing and never fall back).
    async fn tag_items(&self, texts: &[&str]) -> Result<Vec<Tagged>, SearchError> {
        Ok(self
            .tag(texts)
            .await?
            .into_iter()
            .map(|tags| Tagged {
                tags,
                ..Tagged::default()
            })
            .collect())
    }
}

/// One item's tags with how they came about.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tagged {
    pub tags: Vec<Tag>,
    /// Why the LLM's answer is missing (it failed after its retries); the tags then come from
    /// the other signals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// LLM tokens spent on the item.
    pub usage: crate::llm::Usage,
}

pub use crate::config::TaggerKind;

/// Either tagger, chosen at run time.
pub enum AnyTagger<'a, S> {
    Knn(knn::KnnTagger<'a, S>),
    ZeroShot(zeroshot::ZeroShotTagger<'a, S>),
    Ensemble(ensemble::EnsembleTagger<'a, S>),
    Llm(llm_tagger::LlmTagger<'a, S>),
}

impl<S: VectorStore> Tagger for AnyTagger<'_, S> {
    fn name(&self) -> &'static str {
        match self {
            Self::Knn(t) => t.name(),
            Self::ZeroShot(t) => t.name(),
            Self::Ensemble(t) => t.name(),
            Self::Llm(t) => t.name(),
        }
    }

    async fn tag(&self, texts: &[&str]) -> Result<Vec<Vec<Tag>>, SearchError> {
        match self {
            Self::Knn(t) => t.tag(texts).await,
            Self::ZeroShot(t) => t.tag(texts).await,
            Self::Ensemble(t) => t.tag(texts).await,
            Self::Llm(t) => t.tag(texts).await,
        }
    }

    async fn tag_items(&self, texts: &[&str]) -> Result<Vec<Tagged>, SearchError> {
        match self {
            Self::Knn(t) => t.tag_items(texts).await,
            Self::ZeroShot(t) => t.tag_items(texts).await,
            Self::Ensemble(t) => t.tag_items(texts).await,
            Self::Llm(t) => t.tag_items(texts).await,
        }
    }
}

/// Why a tagger could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TaggerSetupError {
    #[error("the zero-shot tagger needs a taxonomy (--taxonomy FILE)")]
    NeedsTaxonomy,
    #[error("the labelled memory {collection:?}: {source}")]
    Memory {
        collection: String,
        source: SearchError,
    },
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::pipeline::IngestError),
    #[error("the {tagger} tagger calls an LLM: {0}", tagger = "llm")]
    NeedsLlm(String),
    #[error(transparent)]
    Prompt(#[from] crate::prompts::PromptError),
    #[error("the ensemble's head on {collection:?}: {source}")]
    Head {
        collection: String,
        source: ensemble::EnsembleError,
    },
}

/// The configuration and LLM client a tagger of `kind` runs with. `concurrency` (a command's
/// `--concurrency`) sets enrich.llm.concurrency and raises the client's own limit to match;
/// `provider` overrides llm.provider. Taggers that call no LLM get none: loading a local model
/// they would not use costs seconds and memory.
pub fn tagger_llm(
    config: &Config,
    kind: TaggerKind,
    provider: Option<crate::llm::LlmProvider>,
    concurrency: Option<usize>,
) -> Result<(Config, Option<crate::llm::AnyLlm>), crate::llm::LlmError> {
    let mut config = config.clone();
    if let Some(n) = concurrency {
        if n == 0 {
            return Err(crate::llm::LlmError::Config(
                "concurrency must be at least 1".into(),
            ));
        }
        config.enrich.llm.concurrency = n;
        config.llm.concurrency = config.llm.concurrency.max(n);
    }
    if !kind.calls_llm(&config) {
        return Ok((config, None));
    }
    let llm = crate::llm::AnyLlm::from_config(&config, provider, None)?;
    Ok((config, Some(llm)))
}

/// The tagger `kind` as configured, and the lineage its tags carry (tagger, model, settings,
/// memory or labels collection, taxonomy id@version, time). `memory` overrides
/// `enrich.knn.memory`.
pub async fn open_tagger<'a, S: VectorStore>(
    kind: TaggerKind,
    store: &'a S,
    embedder: &'a Arc<Embedder>,
    config: &Config,
    taxonomy: Option<&'a taxonomy::Taxonomy>,
    memory: Option<String>,
    llm: Option<&'a crate::llm::AnyLlm>,
) -> Result<(AnyTagger<'a, S>, Value), TaggerSetupError> {
    let config = &for_taxonomy(config, taxonomy);
    let setup = TaggerSetup {
        store,
        embedder,
        config,
        taxonomy,
        llm,
        tagged_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let (tagger, mut lineage) = match kind {
        TaggerKind::Knn => setup.knn(memory).await,
        TaggerKind::Ensemble => setup.ensemble(memory, kind.calls_llm(config)).await,
        TaggerKind::Llm => setup.llm_tagger(memory).await,
        TaggerKind::Zeroshot => setup.zeroshot().await,
    }?;
    if taxonomy.is_some_and(|t| t.exclusive) {
        lineage["exclusive"] = json!(true);
    }
    Ok((tagger, lineage))
}

/// What [`open_tagger`] opens taggers from.
struct TaggerSetup<'a, 'c, S> {
    store: &'a S,
    embedder: &'a Arc<Embedder>,
    config: &'c Config,
    taxonomy: Option<&'a taxonomy::Taxonomy>,
    llm: Option<&'a crate::llm::AnyLlm>,
    tagged_at: String,
}

impl<'a, S: VectorStore> TaggerSetup<'a, '_, S> {
    fn taxonomy_id(&self) -> Option<String> {
        self.taxonomy.map(taxonomy::Taxonomy::id)
    }

    /// The labelled memory (`memory`, else enrich.knn.memory) opened for searching.
    async fn memory(
        &self,
        memory: Option<String>,
    ) -> Result<(Searcher<'a, S>, String), TaggerSetupError> {
        let config = self.config;
        let memory = memory.unwrap_or_else(|| config.enrich.knn.memory.clone());
        Searcher::open(self.store, self.embedder, &memory, &config.search)
            .await
            .map(|searcher| (searcher, memory.clone()))
            .map_err(|source| TaggerSetupError::Memory {
                collection: memory,
                source,
            })
    }

    /// The LLM side of a tagger that calls one: the labeller and the taxonomy's concepts.
    async fn llm_parts(&self) -> Result<llm_tagger::LlmParts<'a, S>, TaggerSetupError> {
        let config = self.config;
        let llm = self.llm.ok_or_else(|| {
            TaggerSetupError::NeedsLlm("no LLM client was configured for it".into())
        })?;
        let labeller = llm_tagger::LlmLabeller::new(
            llm,
            &config.prompts_dir,
            self.taxonomy,
            config.enrich.llm.clone(),
        )?;
        let concepts = match self.taxonomy {
            Some(t) => {
                let labels =
                    zeroshot::prepare_labels(self.store, self.embedder.clone(), config, t).await?;
                let searcher =
                    Searcher::open(self.store, self.embedder, &labels, &config.search).await?;
                Some(zeroshot::ZeroShotTagger::new(
                    searcher,
                    crate::config::ZeroShotConfig {
                        candidates: config.enrich.llm.candidates,
                        ..config.enrich.zeroshot.clone()
                    },
                ))
            }
            None => None,
        };
        Ok(llm_tagger::LlmParts { labeller, concepts })
    }

    fn llm_lineage(&self, parts: &llm_tagger::LlmParts<'a, S>) -> Value {
        json!({
            "provider": parts.labeller.llm().provider(),
            "model": parts.labeller.llm().model(),
            "prompt": parts.labeller.prompt_reference(),
            "candidates": self.config.enrich.llm.candidates,
            "examples": self.config.enrich.llm.examples,
        })
    }

    async fn knn(
        &self,
        memory: Option<String>,
    ) -> Result<(AnyTagger<'a, S>, Value), TaggerSetupError> {
        let settings = self.config.enrich.knn.clone();
        let (searcher, memory) = self.memory(memory).await?;
        let lineage = json!({
            "tagger": "knn", "model": self.embedder.model_id(), "memory": memory,
            "k": settings.k, "threshold": settings.threshold, "weighting": settings.weighting,
            "taxonomy": self.taxonomy_id(), "tagged_at": self.tagged_at,
        });
        Ok((
            AnyTagger::Knn(knn::KnnTagger::new(searcher, settings)),
            lineage,
        ))
    }

    async fn ensemble(
        &self,
        memory: Option<String>,
        calls_llm: bool,
    ) -> Result<(AnyTagger<'a, S>, Value), TaggerSetupError> {
        let config = self.config;
        let (searcher, memory) = self.memory(memory).await?;
        let head = ensemble::train_head(
            self.store,
            &memory,
            &Default::default(),
            &config.enrich.head,
        )
        .await
        .map_err(|source| TaggerSetupError::Head {
            collection: memory.clone(),
            source,
        })?;
        let knn = config.enrich.knn.clone();
        let settings = config.enrich.ensemble.clone();
        let parts = if calls_llm {
            Some(self.llm_parts().await?)
        } else {
            None
        };
        let lineage = json!({
            "tagger": "ensemble", "model": self.embedder.model_id(), "memory": memory,
            "k": knn.k, "weighting": knn.weighting,
            "head_weight": settings.head_weight, "knn_weight": settings.knn_weight,
            "llm_weight": settings.llm_weight,
            "llm": parts.as_ref().map(|p| self.llm_lineage(p)),
            "threshold": settings.threshold, "head": config.enrich.head,
            "taxonomy": self.taxonomy_id(), "tagged_at": self.tagged_at,
        });
        let tagger =
            ensemble::EnsembleTagger::new(knn::KnnTagger::new(searcher, knn), head, settings)
                .with_llm(parts);
        Ok((AnyTagger::Ensemble(tagger), lineage))
    }

    async fn llm_tagger(
        &self,
        memory: Option<String>,
    ) -> Result<(AnyTagger<'a, S>, Value), TaggerSetupError> {
        let (searcher, memory) = self.memory(memory).await?;
        let knn = self.config.enrich.knn.clone();
        let parts = self.llm_parts().await?;
        let lineage = json!({
            "tagger": "llm", "model": self.embedder.model_id(), "memory": memory,
            "k": knn.k, "llm": self.llm_lineage(&parts), "fallback": "knn",
            "taxonomy": self.taxonomy_id(), "tagged_at": self.tagged_at,
        });
        Ok((
            AnyTagger::Llm(llm_tagger::LlmTagger::new(
                knn::KnnTagger::new(searcher, knn),
                parts,
            )),
            lineage,
        ))
    }

    async fn zeroshot(&self) -> Result<(AnyTagger<'a, S>, Value), TaggerSetupError> {
        let config = self.config;
        let taxonomy = self.taxonomy.ok_or(TaggerSetupError::NeedsTaxonomy)?;
        let labels =
            zeroshot::prepare_labels(self.store, self.embedder.clone(), config, taxonomy).await?;
        let searcher = Searcher::open(self.store, self.embedder, &labels, &config.search).await?;
        let settings = config.enrich.zeroshot.clone();
        let lineage = json!({
            "tagger": "zeroshot", "model": self.embedder.model_id(), "labels": labels,
            "threshold": settings.threshold, "max_labels": settings.max_labels,
            "taxonomy": taxonomy.id(), "tagged_at": self.tagged_at,
        });
        Ok((
            AnyTagger::ZeroShot(zeroshot::ZeroShotTagger::new(searcher, settings)),
            lineage,
        ))
    }
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

/// `tags` most confident first (ties by label id, so results are stable), cut to those at
/// `threshold` or above but never fewer than `min_labels` nor more than `max_labels`: the rule
/// every tagger applies last.
pub fn keep_confident(
    mut tags: Vec<Tag>,
    threshold: f32,
    min_labels: usize,
    max_labels: Option<usize>,
) -> Vec<Tag> {
    tags.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then_with(|| a.label.cmp(&b.label))
    });
    let keep = tags
        .iter()
        .filter(|t| t.confidence >= threshold)
        .count()
        .max(min_labels.min(tags.len()))
        .min(max_labels.unwrap_or(usize::MAX).max(min_labels));
    tags.truncate(keep);
    tags
}

/// The configuration taggers run with against `taxonomy`: as given, except that an exclusive
/// taxonomy (a section, a desk: `# exclusive = true` in its file) makes every tagger give exactly
/// one label, its most confident (at least one and at most one, whatever the thresholds). The
/// one place the rule lives: [`open_tagger`] and `eval tagging` both take their settings from it.
pub fn for_taxonomy(config: &Config, taxonomy: Option<&taxonomy::Taxonomy>) -> Config {
    let mut config = config.clone();
    if taxonomy.is_some_and(|t| t.exclusive) {
        let e = &mut config.enrich;
        (e.knn.min_labels, e.knn.max_labels) = (1, Some(1));
        (e.ensemble.min_labels, e.ensemble.max_labels) = (1, Some(1));
        (e.zeroshot.min_labels, e.zeroshot.max_labels) = (1, 1);
        e.llm.max_labels = 1;
    }
    config
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
    fn confident_tags_are_kept_between_the_minimum_and_the_maximum() {
        let labels = |tags: Vec<Tag>| tags.into_iter().map(|t| t.label).collect::<Vec<_>>();
        let tags = || vec![tag("b", 0.2), tag("a", 0.9), tag("c", 0.6)];
        assert_eq!(labels(keep_confident(tags(), 0.5, 1, None)), ["a", "c"]);
        assert_eq!(labels(keep_confident(tags(), 0.95, 1, None)), ["a"]);
        assert_eq!(
            labels(keep_confident(tags(), 0.95, 0, None)),
            Vec::<String>::new()
        );
        assert_eq!(labels(keep_confident(tags(), 0.1, 1, Some(2))), ["a", "c"]);
        assert_eq!(labels(keep_confident(tags(), 0.1, 1, Some(1))), ["a"]);
    }

    #[test]
    fn an_exclusive_taxonomy_sets_every_tagger_to_one_label() {
        let desks = taxonomy::Taxonomy::parse(
            "desks",
            "desks.tsv",
            b"# exclusive = true\nid\tlabel\nsport\tSport\nbusiness\tBusiness\n",
        )
        .unwrap();
        let config = Config::default();
        let e = for_taxonomy(&config, Some(&desks)).enrich;
        assert_eq!((e.knn.min_labels, e.knn.max_labels), (1, Some(1)));
        assert_eq!((e.ensemble.min_labels, e.ensemble.max_labels), (1, Some(1)));
        assert_eq!((e.zeroshot.min_labels, e.zeroshot.max_labels), (1, 1));
        assert_eq!(e.llm.max_labels, 1);
        assert_eq!(
            for_taxonomy(&config, None),
            config,
            "other taxonomies change nothing"
        );
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
