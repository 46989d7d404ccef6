//! `signaldesk ingest` and `signaldesk reindex`: content into the store, and a collection onto
//! another model.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use signaldesk::embed::EmbedderOptions;
use signaldesk::ingest::pipeline::{ingest_file, IngestOptions};
use signaldesk::ingest::SpooledStdin;
use signaldesk::store::{AnyStore, Filter, VectorStore};
use signaldesk::{Config, Embedder};

use super::output::{count_records, Progress};
use super::{chunker_for, OnOff};

#[derive(Args)]
pub struct IngestArgs {
    /// Input file: .jsonl, .jsonl.gz or .csv (header row names the fields); "-" reads JSONL
    /// from standard input.
    file: PathBuf,
    /// Longest input line accepted, in bytes; longer lines are rejected without being held in
    /// memory [default: ingest.max_line_bytes, 16 MiB].
    #[arg(long)]
    max_line_bytes: Option<usize>,
    /// Collection (default: store.collection).
    #[arg(long)]
    collection: Option<String>,
    /// Split long items into chunks (on) or embed each item truncated at the model limit (off)
    /// [default: chunk.enabled, on].
    #[arg(long, value_enum)]
    chunking: Option<OnOff>,
    /// Where rejected records go (default: FILE.rejects.jsonl beside the input;
    /// stdin.rejects.jsonl in the working directory for "-").
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Largest accepted body, in bytes [default: ingest.max_body_bytes, 4 MiB].
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Items embedded together and upserted as one write-ahead-logged operation [default:
    /// ingest.batch_items, 256].
    #[arg(long)]
    batch_items: Option<usize>,
    /// Validate and publish the records as content events to NATS JetStream (stream.url) and
    /// exit; `signaldesk worker` processes, on any machine, embed and store them. Without it the
    /// records are ingested here. Chunking is then the workers' chunk.* configuration.
    #[arg(long, conflicts_with = "chunking")]
    via_stream: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReindexArgs {
    /// The new model: a sentence-transformers model directory.
    #[arg(long)]
    model: PathBuf,
    /// Collection (default: store.collection).
    #[arg(long)]
    collection: Option<String>,
    /// Chunk items for the new model (on) or embed each truncated at its limit (off).
    #[arg(long, value_enum, default_value = "on")]
    chunking: OnOff,
    /// Items read, embedded and written per step.
    #[arg(long, default_value_t = 256)]
    batch_items: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn ingest(config: &Config, args: IngestArgs) -> Result<ExitCode> {
    let collection = args
        .collection
        .clone()
        .unwrap_or_else(|| config.store.collection.clone());
    if args.via_stream {
        // The workers chunk and embed: no model or store is opened here. The stream first, so
        // a wrong stream.url is said before any input is read.
        let stream = signaldesk::stream::EventStream::connect(&config.stream).await?;
        let (spooled, rejects, name) = input_of(config, &args)?;
        let input = spooled.as_ref().map_or(args.file.as_path(), |s| s.path());
        let options = with_overrides(
            IngestOptions::from_config(config, &collection, None),
            &args,
            rejects,
        );
        return super::stream::publish(&stream, input, &name, &options, args.json).await;
    }
    // The store first: a second process is told at once that the store is busy, before it
    // reads (and, for "-", spools) its input.
    let embedder = Arc::new(Embedder::from_config(config)?);
    let store = AnyStore::open(config)?;
    let (spooled, rejects, name) = input_of(config, &args)?;
    let input = spooled.as_ref().map_or(args.file.as_path(), |s| s.path());
    let options = with_overrides(
        IngestOptions::from_config(
            config,
            &collection,
            chunker_for(config, &embedder, args.chunking),
        ),
        &args,
        rejects.clone(),
    );
    let bar = Progress::new("ingest", count_records(input), "records");
    let summary = ingest_file(
        &store,
        embedder,
        input,
        &options,
        |line, reason| bar.suspend(|| eprintln!("{name}:{line}: rejected: {reason}")),
        |items| bar.set_position(items as u64),
    )
    .await?;
    bar.finish();
    if summary.read == 0 {
        eprintln!("ingest: warning: {name} has no records; nothing was ingested");
    } else if summary.read == summary.rejected {
        eprintln!("ingest: warning: every record of {name} was rejected; nothing was ingested");
    }
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "ingest: read {}, new {}, updated {}, unchanged {}, rejected {} ({} chunks, {} tokens embedded)",
            summary.read, summary.new, summary.updated, summary.unchanged, summary.rejected, summary.chunks, summary.tokens
        );
        if summary.duplicates > 0 {
            eprintln!(
                "ingest: {} records had the id of a later record in the file; the last of each id was kept",
                summary.duplicates
            );
        }
    }
    if summary.rejected > 0 {
        eprintln!(
            "ingest: rejected records are listed in {}",
            rejects.display()
        );
        return Ok(ExitCode::from(1));
    }
    let _ = std::fs::remove_file(&rejects);
    Ok(ExitCode::SUCCESS)
}

/// The input (standard input spooled to a file under `data_dir` for "-"), where its rejects go
/// (`--rejects`, else FILE.rejects.jsonl beside it, else ./stdin.rejects.jsonl) and its name in
/// messages.
fn input_of(config: &Config, args: &IngestArgs) -> Result<(Option<SpooledStdin>, PathBuf, String)> {
    let from_stdin = args.file == Path::new("-");
    let rejects = args.rejects.clone().unwrap_or_else(|| {
        if from_stdin {
            return PathBuf::from("stdin.rejects.jsonl");
        }
        let mut name = args.file.file_name().unwrap_or_default().to_os_string();
        name.push(".rejects.jsonl");
        args.file.with_file_name(name)
    });
    let spooled = from_stdin
        .then(|| SpooledStdin::new(&config.data_dir))
        .transpose()?;
    let name = if from_stdin {
        "<stdin>".to_string()
    } else {
        args.file.display().to_string()
    };
    Ok((spooled, rejects, name))
}

/// The command line's overrides of `ingest.*`.
fn with_overrides(
    mut options: IngestOptions,
    args: &IngestArgs,
    rejects: PathBuf,
) -> IngestOptions {
    options.rejects = Some(rejects);
    if let Some(n) = args.batch_items {
        options.batch_items = n.max(1);
    }
    if let Some(n) = args.max_body_bytes {
        options.limits.max_body_bytes = n;
    }
    if let Some(n) = args.max_line_bytes {
        options.max_line_bytes = n;
    }
    options
}

pub async fn reindex(config: &Config, args: ReindexArgs) -> Result<ExitCode> {
    let options = EmbedderOptions::from_config(config);
    let embedder = Arc::new(Embedder::load(&args.model, options)?);
    let store = AnyStore::open(config)?;
    let name = args
        .collection
        .unwrap_or_else(|| config.store.collection.clone());
    let total = store.count(&name, &Filter::default()).await.ok();
    let bar = Progress::new("reindex", total.map(|t| t as u64), "chunks read");
    let chunker = chunker_for(config, &embedder, Some(args.chunking));
    let summary = signaldesk::ingest::reindex::reindex(
        &store,
        embedder,
        &name,
        chunker,
        args.batch_items,
        |items| bar.set_position(items as u64),
    )
    .await?;
    bar.finish();
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        outln!(
            "reindexed {} items ({} chunks, {} tokens) of {:?}: {} ({}) -> {} ({}, {} dims)",
            summary.items,
            summary.chunks,
            summary.tokens,
            summary.name,
            summary.from,
            summary.from_model,
            summary.to,
            summary.to_model,
            summary.dimension
        );
        outln!(
            "{:?} now points at {}; set embed.model to the new model for ingest and search",
            summary.name,
            summary.to
        );
    }
    Ok(ExitCode::SUCCESS)
}
