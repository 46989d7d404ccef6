//! `signaldesk tag` (items of a file) and `signaldesk enrich` (items already stored).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use signaldesk::enrich::collection::{enrich_stored, items_to_enrich, EnrichOptions, EnrichStage};
use signaldesk::enrich::summarizer::Summarizer;
use signaldesk::enrich::tag_file::{tag_file, TagFileOptions};
use signaldesk::enrich::taxonomy::Taxonomy;
use signaldesk::enrich::{open_tagger, tagger_llm, TaggerKind};
use signaldesk::ingest::SpooledStdin;
use signaldesk::llm::AnyLlm;
use signaldesk::store::AnyStore;
use signaldesk::{Config, Embedder};

use super::output::{count_records, open_output, Progress, StagedProgress};

#[derive(Args)]
pub struct TagArgs {
    /// Items to tag: .jsonl, .jsonl.gz or .csv; "-" reads JSONL from standard input.
    file: PathBuf,
    /// The labelled memory collection [default: enrich.knn.memory].
    #[arg(long)]
    memory: Option<String>,
    /// Which tagger runs.
    #[arg(long, value_enum, default_value = "knn")]
    tagger: TaggerKind,
    #[command(flatten)]
    llm: LlmTagArgs,
    /// A taxonomy TSV: labels outside it are dropped, and its name@version goes in the lineage.
    #[arg(long)]
    taxonomy: Option<PathBuf>,
    /// With a tree taxonomy: add every tag's ancestors (a child implies its parents).
    #[arg(long, requires = "taxonomy")]
    with_ancestors: bool,
    /// With a tree taxonomy: replace tags deeper than N by their ancestor at depth N (1: the top
    /// concepts); implies --with-ancestors.
    #[arg(long, requires = "taxonomy", value_name = "N")]
    max_depth: Option<usize>,
    /// Output JSONL; "-" (the default) writes to stdout.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
    /// Print the closing summary as JSON on stderr.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EnrichArgs {
    /// Collection whose items are tagged [default: store.collection].
    #[arg(long)]
    collection: Option<String>,
    /// Which tagger runs.
    #[arg(long, value_enum, default_value = "knn")]
    tagger: TaggerKind,
    #[command(flatten)]
    llm: LlmTagArgs,
    /// The labelled memory collection for knn [default: enrich.knn.memory].
    #[arg(long)]
    memory: Option<String>,
    /// A taxonomy TSV (required for zeroshot); its name@version goes in the lineage.
    #[arg(long)]
    taxonomy: Option<PathBuf>,
    /// Tag only items whose stored tags come from another tagger, model, setting or taxonomy
    /// (and, with --summaries, summarize only items whose summaries are not current).
    #[arg(long)]
    only_stale: bool,
    /// Also write each item's summary and standfirst (the LLM summarizer, prompts/summarize.vN.md;
    /// the extractive summary when a call fails, marked), after tagging.
    #[arg(long)]
    summaries: bool,
    /// With --summaries: the LLM summarizes at most N items, the rest are summarized
    /// extractively at once (marked, with fallback_reason, and stale for a later run), so a
    /// first look at a collection does not wait minutes per hundred items on a local model.
    #[arg(long, value_name = "N")]
    llm_items: Option<usize>,
    /// Stop after N items.
    #[arg(long)]
    limit: Option<usize>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// With stream.url set: publish one enrich event per item to enrich (with --only-stale,
    /// only the stale ones) and let the workers share the work, with their configured
    /// enrichment (stream.tagger, stream.summaries, api.taxonomy); progress and ETA follow the
    /// work left in the stream.
    #[arg(long, conflicts_with_all = ["tagger", "memory", "taxonomy", "summaries", "llm_items"])]
    via_stream: bool,
    /// With --via-stream: exit once published instead of following the workers' progress.
    #[arg(long, requires = "via_stream")]
    no_wait: bool,
}

/// How taggers that call an LLM (`llm`, `ensemble` with enrich.ensemble.llm_weight > 0) reach it.
#[derive(Debug, Clone, clap::Args)]
pub struct LlmTagArgs {
    /// Which LLM answers (default: llm.provider; auto = the server at llm.base_url if set, else
    /// the local model).
    #[arg(long, value_enum)]
    pub provider: Option<signaldesk::llm::LlmProvider>,
    /// LLM calls in flight at once [default: enrich.llm.concurrency].
    #[arg(long)]
    pub concurrency: Option<usize>,
}

/// `signaldesk tag`: tag the items of a file.
pub async fn tag(config: &Config, args: TagArgs) -> Result<ExitCode> {
    let taxonomy = args.taxonomy.as_deref().map(Taxonomy::load).transpose()?;
    let embedder = Arc::new(Embedder::from_config(config)?);
    let store = AnyStore::open(config)?;
    let (config, llm) = tagger_llm(config, args.tagger, args.llm.provider, args.llm.concurrency)?;
    let (tagger, lineage) = open_tagger(
        args.tagger,
        &store,
        &embedder,
        &config,
        taxonomy.as_ref(),
        args.memory.clone(),
        llm.as_ref(),
    )
    .await?;
    let from_stdin = args.file == Path::new("-");
    let spooled = from_stdin
        .then(|| SpooledStdin::new(&config.data_dir))
        .transpose()?;
    let input = spooled.as_ref().map_or(args.file.as_path(), |s| s.path());
    let name = if from_stdin {
        "<stdin>".to_string()
    } else {
        args.file.display().to_string()
    };
    let bar = Progress::new("tag", count_records(input), "items");
    let mut out = open_output(&args.output)?;
    let options = TagFileOptions {
        taxonomy: taxonomy.as_ref(),
        with_ancestors: args.with_ancestors,
        max_depth: args.max_depth,
        limits: signaldesk::content::Limits {
            max_body_bytes: config.ingest.max_body_bytes,
        },
        max_line_bytes: config.ingest.max_line_bytes,
        lineage,
        price: llm.as_ref().and_then(|l| l.price(&config.llm)),
    };
    let summary = tag_file(
        &tagger,
        &embedder,
        input,
        &options,
        &mut out,
        |line, reason| bar.suspend(|| eprintln!("{name}:{line}: rejected: {reason}")),
        |n| bar.set_position(n as u64),
    )
    .await?;
    bar.finish();
    drop(out);
    if args.json {
        eprintln!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "tag: read {}, tagged {}, rejected {} in {:.1} s ({:.1} items/s, {:.0} tokens/s, embedding included)",
            summary.read, summary.tagged, summary.rejected, summary.seconds, summary.items_per_s, summary.tokens_per_s
        );
        if summary.prompt_tokens + summary.completion_tokens > 0 || summary.fallbacks > 0 {
            eprintln!(
                "tag: LLM {} prompt + {} completion tokens, ${:.4}; {} items fell back to the other signals",
                summary.prompt_tokens, summary.completion_tokens, summary.cost_usd, summary.fallbacks
            );
        }
    }
    Ok(if summary.rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `signaldesk enrich`: tag (and summarize) the stored items, through the library's one
/// enrichment path ([`enrich_stored`], which `POST /v1/enrich` runs too).
pub async fn enrich(config: &Config, args: EnrichArgs) -> Result<ExitCode> {
    if args.via_stream {
        let via = super::stream::EnrichViaStream {
            collection: args.collection,
            only_stale: args.only_stale,
            limit: args.limit,
            wait: !args.no_wait,
            json: args.json,
        };
        return super::stream::enrich(config, via).await;
    }
    let taxonomy = args.taxonomy.as_deref().map(Taxonomy::load).transpose()?;
    let embedder = Arc::new(Embedder::from_config(config)?);
    let store = AnyStore::open(config)?;
    let collection = args
        .collection
        .clone()
        .unwrap_or_else(|| config.store.collection.clone());
    let total = items_to_enrich(&store, &collection, args.limit).await?;
    let (config, llm) = tagger_llm(config, args.tagger, args.llm.provider, args.llm.concurrency)?;
    let (tagger, lineage) = open_tagger(
        args.tagger,
        &store,
        &embedder,
        &config,
        taxonomy.as_ref(),
        args.memory.clone(),
        llm.as_ref(),
    )
    .await?;
    // Summaries need an LLM even when the tagger calls none; one the tagger opened is shared.
    let own_llm = match (&llm, args.summaries) {
        (None, true) => Some(AnyLlm::from_config(&config, args.llm.provider, None)?),
        _ => None,
    };
    let summary_llm = llm.as_ref().or(own_llm.as_ref()).filter(|_| args.summaries);
    let summarizer = summary_llm
        .map(|llm| {
            Summarizer::new(
                llm,
                &embedder,
                &config.prompts_dir,
                config.enrich.summary.clone(),
            )
        })
        .transpose()?;
    let options = EnrichOptions::for_run(
        &config,
        args.only_stale,
        args.limit,
        summary_llm
            .or(llm.as_ref())
            .and_then(|l| l.price(&config.llm)),
    )?;
    let options = EnrichOptions {
        llm_items: args.llm_items,
        ..options
    };
    let progress = StagedProgress::new(Some(total as u64), "items");
    let outcome = enrich_stored(
        &store,
        &collection,
        &tagger,
        &lineage,
        summarizer.as_ref(),
        &options,
        |stage, n| {
            let label = match stage {
                EnrichStage::Tags => "enrich",
                EnrichStage::Summaries => "summaries",
            };
            progress.set(label, n as u64)
        },
    )
    .await?;
    drop(progress);
    let tags = &outcome.tags;
    if args.json {
        outln!("{}", serde_json::to_string(&outcome)?);
    } else {
        eprintln!(
            "enrich: {} items of {collection:?}: tagged {}, already current {} in {:.1} s ({:.1} items/s)",
            tags.items, tags.tagged, tags.fresh, tags.seconds, tags.items_per_s
        );
        if tags.prompt_tokens + tags.completion_tokens > 0 || tags.fallbacks > 0 {
            eprintln!(
                "enrich: LLM {} prompt + {} completion tokens, ${:.4}; {} items fell back to the other signals",
                tags.prompt_tokens, tags.completion_tokens, tags.cost_usd, tags.fallbacks
            );
        }
    }
    if let Some(s) = &outcome.summaries {
        eprintln!(
            "enrich: summarized {} of {} items ({} already current) in {:.1} s; {} fell back to extraction, {} cut to their word limits; LLM {} prompt + {} completion tokens, ${:.4}",
            s.summarized, s.items, s.fresh, s.seconds, s.fallbacks, s.over_limit,
            s.prompt_tokens, s.completion_tokens, s.cost_usd
        );
    }
    Ok(ExitCode::SUCCESS)
}
