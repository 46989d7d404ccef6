//! What stream workers enrich with, opened from the configuration alone (`stream.tagger`,
//! `stream.summaries`, `api.taxonomy`, `enrich.*`, `llm.*`), so every worker stores the same
//! lineage and `signaldesk enrich --via-stream` can tell, before publishing, which stored items
//! the workers would change.

use std::sync::Arc;

use serde_json::Value;

use crate::embed::Embedder;
use crate::enrich::collection::{
    enrich_stored, lineage_digest, stale_items, EnrichError, EnrichOptions, EnrichOutcome,
};
use crate::enrich::summarizer::Summarizer;
use crate::enrich::taxonomy::{Taxonomy, TaxonomyError};
use crate::enrich::{open_tagger, tagger_llm, AnyTagger, TaggerSetupError};
use crate::llm::AnyLlm;
use crate::store::{StoreError, VectorStore};
use crate::Config;

/// Why the workers' enrichment could not be opened (a worker refuses to start: every item it
/// took would fail the same way).
#[derive(Debug, thiserror::Error)]
pub enum EnrichSetupError {
    #[error("api.taxonomy: {0}")]
    Taxonomy(#[from] TaxonomyError),
    #[error("llm: {0}")]
    Llm(#[from] crate::llm::LlmError),
    #[error("stream.tagger = {kind:?}: {source} (or set stream.enrich = false: workers then only ingest)")]
    Tagger {
        kind: crate::enrich::TaggerKind,
        source: Box<TaggerSetupError>,
    },
    #[error("stream.summaries: {0}")]
    Prompt(#[from] crate::prompts::PromptError),
}

/// What an [`Enrichment`] borrows: the taxonomy, the LLM client (when the tagger or the
/// summaries call one) and the configuration they were opened with.
pub struct EnrichmentParts {
    config: Config,
    taxonomy: Option<Taxonomy>,
    llm: Option<AnyLlm>,
}

impl EnrichmentParts {
    /// Load the taxonomy (`api.taxonomy`) and open the LLM when `stream.tagger` or
    /// `stream.summaries` needs one.
    pub fn load(config: &Config) -> Result<Self, EnrichSetupError> {
        let taxonomy = if config.api.taxonomy.as_os_str().is_empty() {
            None
        } else {
            Some(Taxonomy::load(&config.api.taxonomy)?)
        };
        let (config, mut llm) = tagger_llm(config, config.stream.tagger, None, None)?;
        if config.stream.summaries && llm.is_none() {
            llm = Some(AnyLlm::from_config(&config, None, None)?);
        }
        Ok(Self {
            config,
            taxonomy,
            llm,
        })
    }
}

/// The workers' tagger, summarizer and their lineages.
pub struct Enrichment<'a, S> {
    tagger: AnyTagger<'a, S>,
    tag_lineage: Value,
    summarizer: Option<(Summarizer<'a, AnyLlm>, Value)>,
    config: &'a Config,
    price: Option<crate::config::Price>,
}

impl<'a, S: VectorStore> Enrichment<'a, S> {
    /// Open the configured tagger (and summarizer) over `store`.
    pub async fn open(
        parts: &'a EnrichmentParts,
        store: &'a S,
        embedder: &'a Arc<Embedder>,
    ) -> Result<Self, EnrichSetupError> {
        let config = &parts.config;
        let kind = config.stream.tagger;
        let (tagger, tag_lineage) = open_tagger(
            kind,
            store,
            embedder,
            config,
            parts.taxonomy.as_ref(),
            None,
            parts.llm.as_ref(),
        )
        .await
        .map_err(|source| EnrichSetupError::Tagger {
            kind,
            source: Box::new(source),
        })?;
        let summarizer = match (&parts.llm, config.stream.summaries) {
            (Some(llm), true) => Some(Summarizer::configured(llm, embedder, config)?),
            _ => None,
        };
        Ok(Self {
            tagger,
            tag_lineage,
            summarizer,
            config,
            price: parts.llm.as_ref().and_then(|l| l.price(&config.llm)),
        })
    }

    /// The stored lineage fields this enrichment writes, with their current values.
    pub fn lineages(&self) -> Vec<(&'static str, &Value)> {
        let mut lineages = vec![("tags_lineage", &self.tag_lineage)];
        if let Some((_, lineage)) = &self.summarizer {
            lineages.push(("summary_lineage", lineage));
        }
        lineages
    }

    /// The digest enrich events for this enrichment carry in their message ids.
    pub fn digest(&self) -> String {
        let lineages: Vec<&Value> = self.lineages().into_iter().map(|(_, l)| l).collect();
        lineage_digest(&lineages)
    }

    /// The stored items of `collection` this enrichment would change (all with
    /// `only_stale = false`), with their content hashes.
    pub async fn stale(
        &self,
        store: &S,
        collection: &str,
        only_stale: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        stale_items(store, collection, &self.lineages(), only_stale, limit).await
    }

    /// Publish an enrich event for each item of `collection` this enrichment would change (all
    /// of them without `only_stale`; at most `limit` items looked at): `signaldesk enrich
    /// --via-stream`. A rerun publishes only what is still stale, and work already waiting is
    /// de-duplicated by NATS (same item, content and enrichment within the window).
    pub async fn publish_stale(
        &self,
        stream: &super::EventStream,
        store: &S,
        collection: &str,
        only_stale: bool,
        limit: Option<usize>,
    ) -> Result<super::PublishSummary, super::StreamError> {
        let stale = self
            .stale(store, collection, only_stale, limit)
            .await
            .map_err(|e| super::StreamError::Ingest(e.into()))?;
        let mut summary = super::PublishSummary {
            read: stale.len(),
            ..Default::default()
        };
        stream
            .publish_enrich(collection, stale, &self.digest(), &mut summary)
            .await?;
        Ok(summary)
    }

    /// Tag (and summarize) the items `ids` of `collection` that are stale: what one batch of
    /// enrich events asks for. Editors' decisions are applied as `signaldesk enrich` applies
    /// them, read afresh for each call (a worker runs for days).
    pub async fn enrich(
        &self,
        store: &S,
        collection: &str,
        ids: Vec<String>,
    ) -> Result<EnrichOutcome, EnrichError> {
        let options = EnrichOptions::for_run(self.config, true, None, self.price)
            .map_err(|e| EnrichError::Items(format!("editors' decisions: {e}")))?;
        let options = EnrichOptions {
            items: Some(ids),
            ..options
        };
        enrich_stored(
            store,
            collection,
            &self.tagger,
            &self.tag_lineage,
            self.summarizer.as_ref().map(|(s, _)| s),
            &options,
            |_, _| {},
        )
        .await
    }
}
