//! `signaldesk tag`: tag every item of a file with any [`Tagger`] and write one JSON line per
//! item (`{"id", "tags", "lineage"}`), in input order. Bad records are reported with their line
//! and skipped; items are embedded and searched in groups, so throughput is the embedder's.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use super::taxonomy::Taxonomy;
use super::Tagger;
use crate::content::Limits;
use crate::embed::{EmbedError, Embedder};
use crate::ingest::pipeline::{read_records, IngestError};
use crate::search::SearchError;

/// Items embedded and searched together.
const GROUP: usize = 256;

/// Errors that stop a tagging job (bad records do not).
#[derive(Debug, thiserror::Error)]
pub enum TagJobError {
    #[error(transparent)]
    Input(#[from] IngestError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Counts and speed of a tagging job.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TagSummary {
    /// Records read (rejected ones included).
    pub read: usize,
    pub tagged: usize,
    pub rejected: usize,
    /// Model tokens embedded (after truncation, special tokens included).
    pub tokens: usize,
    pub seconds: f64,
    pub items_per_s: f64,
    pub tokens_per_s: f64,
    /// LLM tokens spent (taggers that call one).
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Items the LLM failed on, tagged by the other signals (`fallback_reason` on their line).
    pub fallbacks: usize,
    /// What the LLM calls cost, by `llm.prices` (0 for local models and cache hits).
    pub cost_usd: f64,
}

/// How `tag_file` reads its input and shapes its output.
pub struct TagFileOptions<'a> {
    /// Labels outside it are dropped, so every label is a concept.
    pub taxonomy: Option<&'a Taxonomy>,
    /// Add every tag's ancestors (see [`super::in_hierarchy`]).
    pub with_ancestors: bool,
    /// Cut tags below this depth to their ancestor at it.
    pub max_depth: Option<usize>,
    pub limits: Limits,
    pub max_line_bytes: usize,
    /// Written with every item's tags: tagger, model, settings, taxonomy, time.
    pub lineage: Value,
    /// The LLM's price ([`crate::llm::AnyLlm::price`]), for the run's cost; none for local models.
    pub price: Option<crate::config::Price>,
}

/// Tag the items of `path` (`.jsonl`, `.jsonl.gz`, `.csv`).
pub async fn tag_file(
    tagger: &impl Tagger,
    embedder: &Embedder,
    path: &Path,
    options: &TagFileOptions<'_>,
    out: &mut impl Write,
    mut on_reject: impl FnMut(usize, &str),
    mut on_progress: impl FnMut(usize),
) -> Result<TagSummary, TagJobError> {
    let started = Instant::now();
    let mut summary = TagSummary::default();
    let mut records = read_records(path, options.limits, options.max_line_bytes)?;
    loop {
        let mut group = Vec::with_capacity(GROUP);
        for r in records.by_ref() {
            summary.read += 1;
            match r? {
                Ok(rec) => group.push(rec.item),
                Err((line, reason)) => {
                    summary.rejected += 1;
                    on_reject(line, &reason);
                }
            }
            if group.len() == GROUP {
                break;
            }
        }
        if group.is_empty() {
            break;
        }
        let texts: Vec<String> = group.iter().map(|i| i.text()).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        summary.tokens += embedder.token_counts(&texts)?.iter().sum::<usize>();
        let tagged = tagger.tag_items(&texts).await?;
        for (item, tagged) in group.iter().zip(tagged) {
            let mut tags = tagged.tags;
            summary.prompt_tokens += tagged.usage.prompt_tokens;
            summary.completion_tokens += tagged.usage.completion_tokens;
            summary.cost_usd += options.price.map_or(0.0, |p| {
                p.cost(tagged.usage.prompt_tokens, tagged.usage.completion_tokens)
            });
            summary.fallbacks += usize::from(tagged.fallback_reason.is_some());
            if let Some(t) = options.taxonomy {
                tags.retain(|tag| t.contains(&tag.label));
                if options.with_ancestors || options.max_depth.is_some() {
                    tags = super::in_hierarchy(tags, t, options.max_depth);
                }
            }
            let mut line = json!({"id": item.id, "tags": tags, "lineage": options.lineage});
            if let Some(reason) = tagged.fallback_reason {
                line["fallback_reason"] = json!(reason);
            }
            writeln!(out, "{line}")?;
        }
        summary.tagged += group.len();
        on_progress(summary.read);
    }
    out.flush()?;
    summary.seconds = started.elapsed().as_secs_f64();
    let per_s = |n: usize| n as f64 / summary.seconds.max(1e-9);
    summary.items_per_s = per_s(summary.tagged);
    summary.tokens_per_s = per_s(summary.tokens);
    Ok(summary)
}
