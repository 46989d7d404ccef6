//! Opening what the server serves from configuration: the store, embedder, taxonomy, LLM,
//! taggers, summarizer and recommender. `signaldesk serve` calls [`ApiState::open`] and nothing
//! else, so a program embedding the API opens it the same way.

use std::collections::HashMap;
use std::sync::Arc;

use super::{ApiParts, ApiState, OpenTagger};
use crate::embed::Embedder;
use crate::enrich::summarizer::Summarizer;
use crate::enrich::taxonomy::Taxonomy;
use crate::enrich::TaggerKind;
use crate::llm::AnyLlm;
use crate::rank::service::RecommendService;
use crate::store::AnyStore;
use crate::Config;

/// Why the server could not open; each names the part and the setting behind it.
#[derive(Debug, thiserror::Error)]
pub enum ApiSetupError {
    #[error("api.taggers is empty: name at least one tagger")]
    NoTaggers,
    #[error("opening the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("loading the embedding model: {0}")]
    Embed(#[from] crate::embed::EmbedError),
    #[error("api.taxonomy: {0}")]
    Taxonomy(#[from] crate::enrich::taxonomy::TaxonomyError),
    #[error("opening the LLM (api.llm = false turns summaries off): {0}")]
    Llm(#[from] crate::llm::LlmError),
    #[error("opening the {kind:?} tagger: {source}")]
    Tagger {
        kind: TaggerKind,
        source: crate::enrich::TaggerSetupError,
    },
    #[error("the summary or ask prompt: {0}")]
    Prompt(#[from] crate::prompts::PromptError),
    #[error("the event stream: {0}")]
    Stream(#[from] crate::stream::StreamError),
    #[error("the editorial log: {0}")]
    Editorial(#[from] crate::enrich::editorial::EditorialError),
    #[error("api.keys: key {0:?} is the documented example key (dev-key-change-me), which anyone who read the docs holds: make a key with `signaldesk serve --hash-key NEW_KEY`, or set api.development = true (SIGNALDESK_API__DEVELOPMENT=true) for a development run")]
    ExampleKey(String),
}

/// The hash of the example key the docs and deploy/signaldesk.toml show.
const EXAMPLE_KEY_SHA256: &str = "57c8139db7290a9064aa57837c951138a32df40cca3aca526319f55651368823";

/// Moves a value to the heap for the rest of the process. The taggers, summarizer and
/// recommender borrow the store, embedder, taxonomy, configuration and LLM, and a server's state
/// must be `'static`; these are opened once per process, by [`ApiState::open`] only.
fn for_the_process<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

impl ApiState {
    /// Open everything the API serves from `config`: the configured store, the embedding model,
    /// `api.taxonomy`, the LLM when `api.llm`, every tagger of `api.taggers` (the first is the
    /// default), the summarizer and, once the collection holds content, the recommender.
    pub async fn open(config: Config) -> Result<Self, ApiSetupError> {
        let Some(&default_tagger) = config.api.taggers.first() else {
            return Err(ApiSetupError::NoTaggers);
        };
        if let Some(key) = config
            .api
            .keys
            .iter()
            .find(|k| k.sha256.eq_ignore_ascii_case(EXAMPLE_KEY_SHA256))
        {
            if !config.api.development {
                return Err(ApiSetupError::ExampleKey(key.name.clone()));
            }
            tracing::warn!(key = %key.name, "a development run: the example key is accepted");
        }
        if config.api.keys.is_empty() {
            tracing::warn!("api.keys is empty: every /v1 request will be refused with 401");
        }
        let store = for_the_process(AnyStore::open(&config)?);
        let embedder = for_the_process(Arc::new(Embedder::from_config(&config)?));
        let taxonomy = if config.api.taxonomy.as_os_str().is_empty() {
            None
        } else {
            Some(for_the_process(Taxonomy::load(&config.api.taxonomy)?))
        };
        let config = for_the_process(config);
        let llm = if config.api.llm {
            Some(for_the_process(AnyLlm::from_config(config, None, None)?))
        } else {
            None
        };
        let mut taggers = HashMap::new();
        for &kind in &config.api.taggers {
            let (tagger, lineage) =
                crate::enrich::open_tagger(kind, store, embedder, config, taxonomy, None, llm)
                    .await
                    .map_err(|source| ApiSetupError::Tagger { kind, source })?;
            taggers.insert(kind, OpenTagger { tagger, lineage });
        }
        let summarizer = llm
            .map(|llm| Summarizer::configured(llm, embedder, config))
            .transpose()?;
        let ask_composer = llm
            .map(|llm| crate::answer::ask::Composer::configured(llm, config))
            .transpose()?;
        let stream = if config.stream.enabled() {
            Some(crate::stream::EventStream::connect(&config.stream).await?)
        } else {
            None
        };
        // Every replica's interactions first: the recommender is built from the log.
        let interactions_synced = match super::sync_interactions(config, stream.as_ref()).await {
            Ok(last) => last,
            Err(e) => {
                tracing::warn!(error = %e, "the interaction log was not brought up to date");
                0
            }
        };
        let decisions_synced = match &stream {
            Some(stream) => stream
                .sync_decisions(&crate::enrich::editorial::log_path(config), 0)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "the editors' log was not brought up to date");
                    0
                }),
            None => 0,
        };
        let recommender = match RecommendService::open(store, config, true).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "recommendations are off until content is ingested");
                None
            }
        };
        Ok(Self::new(ApiParts {
            store,
            embedder,
            config,
            taggers,
            default_tagger,
            taxonomy,
            recommender,
            llm,
            summarizer,
            ask_composer,
            stream,
            interactions_synced,
            decisions_synced,
        })?)
    }
}
