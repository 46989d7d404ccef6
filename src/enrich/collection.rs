//! `signaldesk enrich`: tag the items already in a collection and store the tags beside them.
//!
//! Each item's first chunk (its title and the start of its body: what the embedding model reads
//! of a whole item) is tagged by any [`Tagger`]; the result is written into the payload of every
//! chunk of the item: `tags` (concept ids, an indexed field, so `search --filter tags=...`
//! works at once), `tag_scores` (confidence, source, evidence per tag) and `tags_lineage` (tagger,
//! model, settings, taxonomy id@version, time). With `only_stale`, items whose stored lineage
//! equals the current one (time aside) are skipped, so a rerun touches only what a new model,
//! taxonomy or setting changed.

use std::time::Instant;

use serde_json::{json, Map, Value};

use super::Tagger;
use crate::search::SearchError;
use crate::store::{Filter, StoreError, VectorStore};

/// Items read and tagged per step.
const PAGE: usize = 256;

/// Errors that stop an enrichment run.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error("reading stored items: {0}")]
    Items(String),
}

/// How `enrich_collection` runs.
#[derive(Debug, Clone, Default)]
pub struct EnrichOptions {
    /// Skip items whose stored lineage equals the current one.
    pub only_stale: bool,
    /// Stop after this many items (tagged or skipped).
    pub limit: Option<usize>,
    /// The LLM's price (`llm.prices`, see [`crate::llm::AnyLlm::price`]), for each item's stored
    /// cost and the run's; none for local models.
    pub price: Option<crate::config::Price>,
    /// Summaries (LLM calls) in flight at once (`enrich.llm.concurrency`).
    pub concurrency: usize,
    /// Editors' decisions by item: the `tags` an item serves after a run are the model's new
    /// tags with its editors' additions and rejections applied, as [`super::editorial::decide`]
    /// leaves them.
    pub decisions: std::collections::BTreeMap<String, Vec<super::editorial::TagDecision>>,
    /// The LLM summarizes at most this many items of a run; the rest get the extractive
    /// summary (marked, and with a lineage that leaves them stale for a later run).
    pub llm_items: Option<usize>,
    /// Only these items (by id; ids not stored are passed over), read directly rather than by
    /// paging the collection: what a stream worker enriches from one batch of events.
    pub items: Option<Vec<String>>,
}

impl EnrichOptions {
    /// The options of an enrichment `signaldesk enrich` or `POST /v1/enrich` starts: the
    /// configured concurrency and the editors' decisions of `data_dir/editorial.jsonl`.
    pub fn for_run(
        config: &crate::Config,
        only_stale: bool,
        limit: Option<usize>,
        price: Option<crate::config::Price>,
    ) -> Result<Self, super::editorial::EditorialError> {
        let mut decisions: std::collections::BTreeMap<String, Vec<_>> = Default::default();
        for d in super::editorial::read_log(&super::editorial::log_path(config))? {
            decisions.entry(d.item.clone()).or_default().push(d);
        }
        Ok(Self {
            only_stale,
            limit,
            price,
            concurrency: config.enrich.llm.concurrency,
            decisions,
            llm_items: None,
            items: None,
        })
    }
}

/// Which part of [`enrich_stored`] a progress count belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrichStage {
    Tags,
    Summaries,
}

/// What [`enrich_stored`] did: the tagging pass and, when asked for, the summaries pass.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EnrichOutcome {
    pub tags: EnrichSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summaries: Option<SummarizeSummary>,
}

/// The enrichment of stored items that `signaldesk enrich` and `POST /v1/enrich` both run: tag
/// every item of `collection` (see [`enrich_collection`]), then, with a summarizer, summarize
/// them (see [`summarize_collection`]). Each pass stamps its lineage with the time the run
/// started (`tagged_at`, `summarized_at`), so the stored payloads of two runs over the same items
/// differ in those times only.
pub async fn enrich_stored<S: VectorStore, L: crate::llm::LlmClient>(
    store: &S,
    collection: &str,
    tagger: &impl Tagger,
    tag_lineage: &Value,
    summarizer: Option<&super::summarizer::Summarizer<'_, L>>,
    options: &EnrichOptions,
    mut on_progress: impl FnMut(EnrichStage, usize),
) -> Result<EnrichOutcome, EnrichError> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut lineage = tag_lineage.clone();
    lineage["tagged_at"] = json!(now);
    let tags = enrich_collection(store, collection, tagger, &lineage, options, |n| {
        on_progress(EnrichStage::Tags, n)
    })
    .await?;
    let summaries = match summarizer {
        Some(summarizer) => {
            let mut lineage = summarizer.lineage();
            lineage["summarized_at"] = json!(now);
            Some(
                summarize_collection(store, collection, summarizer, &lineage, options, |n| {
                    on_progress(EnrichStage::Summaries, n)
                })
                .await?,
            )
        }
        None => None,
    };
    Ok(EnrichOutcome { tags, summaries })
}

/// Items an enrichment of `collection` looks at: its items, at most `limit`.
pub async fn items_to_enrich<S: VectorStore>(
    store: &S,
    collection: &str,
    limit: Option<usize>,
) -> Result<usize, StoreError> {
    let items = store.count(collection, &Filter::first_chunks()).await?;
    Ok(limit.map_or(items, |l| l.min(items)))
}

/// The items of `collection` an enrichment with these lineages would change (all of them unless
/// `only_stale`): those whose stored lineage, in any of the `(field, lineage)` pairs
/// (`tags_lineage`, `summary_lineage`), is not the current one. With each, its stored content
/// hash. What `signaldesk enrich --via-stream` publishes work for, so a rerun publishes only what
/// is stale.
pub async fn stale_items<S: VectorStore>(
    store: &S,
    collection: &str,
    lineages: &[(&str, &Value)],
    only_stale: bool,
    limit: Option<usize>,
) -> Result<Vec<(String, String)>, StoreError> {
    let current: Vec<(&str, Value)> = lineages
        .iter()
        .map(|(field, lineage)| (*field, lineage_key(lineage)))
        .collect();
    let firsts = Filter::first_chunks();
    let (mut stale, mut offset, mut seen) = (Vec::new(), None, 0usize);
    loop {
        let room = limit.map_or(PAGE, |l| l.saturating_sub(seen).min(PAGE));
        if room == 0 {
            break;
        }
        let (page, next) = store.scroll(collection, &firsts, offset, room).await?;
        seen += page.len();
        for chunk in &page {
            let current_everywhere = current.iter().all(|(field, lineage)| {
                chunk.payload.get(*field).map(lineage_key).as_ref() == Some(lineage)
            });
            if !only_stale || !current_everywhere {
                let hash = chunk.payload.get("content_hash").and_then(Value::as_str);
                stale.push((chunk.content_id.clone(), hash.unwrap_or("").to_string()));
            }
        }
        match next {
            Some(n) if !page.is_empty() => offset = Some(n),
            _ => break,
        }
    }
    Ok(stale)
}

/// The lineages' digest: equal for two enrichments that would store the same signals (times
/// aside), so work published for one is recognised as the same work.
pub fn lineage_digest(lineages: &[&Value]) -> String {
    use sha2::Digest;
    let keys: Vec<Value> = lineages.iter().map(|l| lineage_key(l)).collect();
    let bytes = serde_json::to_vec(&keys).expect("lineages serialize");
    crate::fingerprint::hex(&sha2::Sha256::digest(&bytes)[..8])
}

/// What `usage` cost at `price` (nothing for local models).
fn cost_of(usage: crate::llm::Usage, price: Option<crate::config::Price>) -> f64 {
    price.map_or(0.0, |p| {
        p.cost(usage.prompt_tokens, usage.completion_tokens)
    })
}

/// An item's LLM spend as stored beside its signals.
fn usage_field(usage: crate::llm::Usage, price: Option<crate::config::Price>) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cost_usd": cost_of(usage, price),
    })
}

/// The start of the `fallback_reason` of a summary made extractive by a run's LLM budget.
const OVER_BUDGET: &str = "over the run's LLM budget";

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EnrichSummary {
    /// Items looked at.
    pub items: usize,
    pub tagged: usize,
    /// Items left alone because their tags were already current.
    pub fresh: usize,
    pub seconds: f64,
    pub items_per_s: f64,
    /// LLM tokens spent (taggers that call one).
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Items the LLM failed on, tagged by the other signals (`tags_fallback_reason` stored).
    pub fallbacks: usize,
    /// What this run's LLM calls cost (`llm.prices`; the sum of the items' stored costs).
    pub cost_usd: f64,
}

/// The lineage without its timestamp: what decides whether stored tags are current.
fn lineage_key(lineage: &Value) -> Value {
    let mut key = lineage.clone();
    if let Some(o) = key.as_object_mut() {
        o.remove("tagged_at");
        o.remove("summarized_at");
    }
    key
}

/// Pages through the first chunks of a collection's items, up to `limit` items, handing out
/// those whose stored `lineage_field` differs from the current lineage (all of them unless
/// `only_stale`). Counts the items looked at and those already current.
struct StalePages<'a> {
    collection: &'a str,
    lineage_field: &'static str,
    current: Value,
    firsts: Filter,
    options: &'a EnrichOptions,
    offset: Option<String>,
    /// With `options.items`: how many of them were read.
    listed: usize,
    done: bool,
    items: usize,
    fresh: usize,
}

impl<'a> StalePages<'a> {
    fn new(
        collection: &'a str,
        lineage_field: &'static str,
        lineage: &Value,
        options: &'a EnrichOptions,
    ) -> Result<Self, EnrichError> {
        Ok(Self {
            collection,
            lineage_field,
            current: lineage_key(lineage),
            firsts: Filter::first_chunks(),
            options,
            offset: None,
            listed: 0,
            done: false,
            items: 0,
            fresh: 0,
        })
    }

    /// The stale first chunks of the next page; `None` once every item (or `limit`) is seen.
    async fn next<S: VectorStore>(
        &mut self,
        store: &S,
    ) -> Result<Option<Vec<crate::store::StoredChunk>>, EnrichError> {
        let room = self
            .options
            .limit
            .map_or(PAGE, |l| l.saturating_sub(self.items).min(PAGE));
        if self.done || room == 0 {
            return Ok(None);
        }
        let page = match &self.options.items {
            Some(ids) => {
                let end = (self.listed + room).min(ids.len());
                let keys: Vec<(String, usize)> = ids[self.listed..end]
                    .iter()
                    .map(|id| (id.clone(), 0))
                    .collect();
                self.listed = end;
                self.done = end == ids.len();
                store.get(self.collection, &keys).await?
            }
            None => {
                let (page, next) = store
                    .scroll(self.collection, &self.firsts, self.offset.take(), room)
                    .await?;
                match next {
                    Some(n) if !page.is_empty() => self.offset = Some(n),
                    _ => self.done = true,
                }
                page
            }
        };
        let mut todo = Vec::with_capacity(page.len());
        for chunk in page {
            self.items += 1;
            let stored = chunk.payload.get(self.lineage_field).map(lineage_key);
            if self.options.only_stale && stored.as_ref() == Some(&self.current) {
                self.fresh += 1;
            } else {
                todo.push(chunk);
            }
        }
        Ok(Some(todo))
    }
}

/// Tag every item of `collection` with `tagger` and store the tags with `lineage`.
pub async fn enrich_collection<S: VectorStore>(
    store: &S,
    collection: &str,
    tagger: &impl Tagger,
    lineage: &Value,
    options: &EnrichOptions,
    mut on_progress: impl FnMut(usize),
) -> Result<EnrichSummary, EnrichError> {
    let started = Instant::now();
    let mut pages = StalePages::new(collection, "tags_lineage", lineage, options)?;
    let mut summary = EnrichSummary::default();
    while let Some(todo) = pages.next(store).await? {
        let texts: Vec<&str> = todo
            .iter()
            .map(|c| c.payload.get("text").and_then(Value::as_str).unwrap_or(""))
            .collect();
        // An item with no text left to read gets no tags rather than stopping the run.
        let readable: Vec<usize> = (0..texts.len())
            .filter(|&i| !texts[i].trim().is_empty())
            .collect();
        let tagged = tagger
            .tag_items(&readable.iter().map(|&i| texts[i]).collect::<Vec<_>>())
            .await?;
        let mut tags_of = vec![super::Tagged::default(); texts.len()];
        for (i, t) in readable.into_iter().zip(tagged) {
            tags_of[i] = t;
        }
        for (chunk, tagged) in todo.iter().zip(tags_of) {
            let tags = tagged.tags;
            summary.prompt_tokens += tagged.usage.prompt_tokens;
            summary.completion_tokens += tagged.usage.completion_tokens;
            summary.cost_usd += cost_of(tagged.usage, options.price);
            let mut fields = Map::new();
            // A fallback is stored as such (and cleared when a later run gets the LLM's answer).
            summary.fallbacks += usize::from(tagged.fallback_reason.is_some());
            fields.insert("tags_fallback_reason".into(), json!(tagged.fallback_reason));
            fields.insert(
                "tags_usage".into(),
                usage_field(tagged.usage, options.price),
            );
            let model: Vec<String> = tags.iter().map(|t| t.label.clone()).collect();
            let decided = options
                .decisions
                .get(&chunk.content_id)
                .map_or(&[][..], Vec::as_slice);
            fields.extend(super::editorial::served_fields(&model, decided));
            fields.insert("tag_scores".into(), json!(tags));
            fields.insert("tags_lineage".into(), lineage.clone());
            store
                .set_item_fields(collection, &chunk.content_id, fields)
                .await?;
            summary.tagged += 1;
        }
        on_progress(pages.items);
    }
    summary.items = pages.items;
    summary.fresh = pages.fresh;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.items_per_s = summary.items as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

/// What a summaries run did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SummarizeSummary {
    /// Items looked at.
    pub items: usize,
    pub summarized: usize,
    /// Items left alone because their summaries were already current.
    pub fresh: usize,
    /// Items the LLM failed on, summarized by extraction (`summary_fallback_reason` stored).
    pub fallbacks: usize,
    /// LLM answers over a word limit (cut before storing).
    pub over_limit: usize,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// What this run's LLM calls cost (`llm.prices`; the sum of the items' stored costs).
    pub cost_usd: f64,
    pub seconds: f64,
}

/// Summarize every item of `collection` and store `summary`, `standfirst`, `summary_source`,
/// `summary_fallback_reason` and `summary_lineage` beside it (every chunk), `concurrency` items
/// at a time. Items are rebuilt whole from their chunks first.
pub async fn summarize_collection<S: VectorStore, L: crate::llm::LlmClient>(
    store: &S,
    collection: &str,
    summarizer: &super::summarizer::Summarizer<'_, L>,
    lineage: &Value,
    options: &EnrichOptions,
    mut on_progress: impl FnMut(usize),
) -> Result<SummarizeSummary, EnrichError> {
    use futures_util::stream::{self, StreamExt};
    let started = Instant::now();
    let mut pages = StalePages::new(collection, "summary_lineage", lineage, options)?;
    let mut summary = SummarizeSummary::default();
    while let Some(todo) = pages.next(store).await? {
        let items = crate::ingest::reindex::read_items(store, collection, todo)
            .await
            .map_err(|e| EnrichError::Items(e.to_string()))?;
        // Progress per summary, not per page: each is an LLM call of seconds.
        let before = pages.items.saturating_sub(items.len());
        let budget = options.llm_items.unwrap_or(usize::MAX);
        let done = summary.summarized;
        let mut answers = stream::iter(items.iter().enumerate().map(|(i, (item, _))| {
            let by_llm = done + i < budget;
            async move {
                if by_llm {
                    summarizer
                        .summarize(&item.id, &item.title, &item.body)
                        .await
                } else {
                    summarizer.extractive_summary(
                        &item.title,
                        &item.body,
                        format!("{OVER_BUDGET} of {budget} items (--llm-items)"),
                    )
                }
            }
        }))
        .buffered(options.concurrency.max(1));
        let mut results = Vec::with_capacity(items.len());
        while let Some(s) = answers.next().await {
            results.push(s);
            on_progress(before + results.len());
        }
        for ((item, _), s) in items.iter().zip(results) {
            summary.fallbacks += usize::from(s.fallback_reason.is_some());
            summary.over_limit += usize::from(s.over_limit);
            summary.prompt_tokens += s.usage.prompt_tokens;
            summary.completion_tokens += s.usage.completion_tokens;
            summary.cost_usd += cost_of(s.usage, options.price);
            let mut fields = Map::new();
            fields.insert("summary".into(), json!(s.summary));
            fields.insert("standfirst".into(), json!(s.standfirst));
            fields.insert("summary_source".into(), json!(s.source));
            fields.insert("summary_fallback_reason".into(), json!(s.fallback_reason));
            // A summary the budget made extractive stays stale: a later run gives it the LLM's.
            let mut item_lineage = lineage.clone();
            if s.fallback_reason
                .as_deref()
                .is_some_and(|r| r.starts_with(OVER_BUDGET))
            {
                item_lineage["source"] = json!("extractive");
            }
            fields.insert("summary_lineage".into(), item_lineage);
            fields.insert("summary_usage".into(), usage_field(s.usage, options.price));
            store.set_item_fields(collection, &item.id, fields).await?;
            summary.summarized += 1;
        }
        on_progress(pages.items);
    }
    summary.items = pages.items;
    summary.fresh = pages.fresh;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChunkPoint, CollectionSpec, EdgeStore};

    /// Tags every text with one label, its length in bytes: enough to see which items ran.
    struct LengthTagger;

    impl Tagger for LengthTagger {
        fn name(&self) -> &'static str {
            "length"
        }

        async fn tag(&self, texts: &[&str]) -> Result<Vec<Vec<super::super::Tag>>, SearchError> {
            Ok(texts
                .iter()
                .map(|t| {
                    vec![super::super::Tag {
                        label: t.len().to_string(),
                        confidence: 1.0,
                        source: "length".into(),
                        evidence: Vec::new(),
                    }]
                })
                .collect())
        }
    }

    async fn store_with(ids: &[&str]) -> (tempfile::TempDir, EdgeStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EdgeStore::new(dir.path()).unwrap();
        let spec = CollectionSpec {
            name: "c".into(),
            model_id: "m".into(),
            model_fingerprint: "f".into(),
            dimension: 2,
            bm25_avg_len: 1.0,
            bm25_chunks: 0,
            bm25_total_len: 0.0,
        };
        store.open_collection(&spec).await.unwrap();
        let points = ids
            .iter()
            .map(|id| ChunkPoint {
                content_id: id.to_string(),
                chunk_index: 0,
                dense: vec![1.0, 0.0],
                bm25: Default::default(),
                payload:
                    json!({"text": format!("text of {id}"), "content_hash": format!("h-{id}")})
                        .as_object()
                        .unwrap()
                        .clone(),
            })
            .collect();
        store.upsert("c", points).await.unwrap();
        (dir, store)
    }

    async fn tagged_ids(store: &EdgeStore) -> Vec<String> {
        let (page, _) = store
            .scroll("c", &Filter::first_chunks(), None, 100)
            .await
            .unwrap();
        let mut ids: Vec<String> = page
            .into_iter()
            .filter(|c| c.payload.contains_key("tags_lineage"))
            .map(|c| c.content_id)
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn an_enrichment_of_listed_items_touches_those_alone_and_stale_items_lists_the_rest() {
        let (_dir, store) = store_with(&["a", "b", "c", "d"]).await;
        let lineage = json!({"tagger": "length", "version": 1});
        let options = EnrichOptions {
            only_stale: true,
            items: Some(vec!["b".into(), "gone".into(), "d".into()]),
            ..Default::default()
        };
        let summary = enrich_collection(&store, "c", &LengthTagger, &lineage, &options, |_| {})
            .await
            .unwrap();
        assert_eq!((summary.items, summary.tagged), (2, 2), "{summary:?}");
        assert_eq!(tagged_ids(&store).await, ["b", "d"]);

        // What is stale: the two untagged items, with their stored hashes; under another
        // lineage, all four; without only_stale, all four.
        let mut stale = stale_items(&store, "c", &[("tags_lineage", &lineage)], true, None)
            .await
            .unwrap();
        stale.sort();
        assert_eq!(
            stale,
            [
                ("a".to_string(), "h-a".to_string()),
                ("c".into(), "h-c".into())
            ]
        );
        let newer = json!({"tagger": "length", "version": 2});
        let all = stale_items(&store, "c", &[("tags_lineage", &newer)], true, None)
            .await
            .unwrap();
        assert_eq!(all.len(), 4);
        let limited = stale_items(&store, "c", &[("tags_lineage", &lineage)], false, Some(3))
            .await
            .unwrap();
        assert_eq!(limited.len(), 3);

        // A second run over the same items finds them current (a redelivered event is a no-op).
        let again = enrich_collection(&store, "c", &LengthTagger, &lineage, &options, |_| {})
            .await
            .unwrap();
        assert_eq!((again.items, again.fresh, again.tagged), (2, 2, 0));
        // The digest ignores the run's time and follows everything else.
        let mut stamped = lineage.clone();
        stamped["tagged_at"] = json!("2026-12-07T00:00:00Z");
        assert_eq!(lineage_digest(&[&lineage]), lineage_digest(&[&stamped]));
        assert_ne!(lineage_digest(&[&lineage]), lineage_digest(&[&newer]));
    }
}
