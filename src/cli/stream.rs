//! `signaldesk worker`, `signaldesk stream status` and `signaldesk ingest --via-stream`: the
//! scale-out path on NATS JetStream (`stream.url`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use signaldesk::ingest::pipeline::IngestOptions;
use signaldesk::store::AnyStore;
use signaldesk::stream::enrichment::{Enrichment, EnrichmentParts};
use signaldesk::stream::worker::{run_worker, WorkerOptions};
use signaldesk::stream::EventStream;
use signaldesk::{Config, Embedder};

use super::output::{count_records, Progress};

#[derive(Args)]
pub struct WorkerArgs {
    /// Exit once no event waits and none is being processed by any worker (the end of a
    /// backfill); without it the worker waits for events until SIGTERM or Ctrl-C.
    #[arg(long)]
    exit_when_idle: bool,
    /// Print the summary as JSON when the worker exits.
    #[arg(long)]
    json: bool,
    /// Serve Prometheus metrics (`GET /metrics`: events processed, redelivered, dead-lettered,
    /// the consumer's lag) on this address, e.g. 0.0.0.0:9091.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
}

#[derive(Subcommand)]
pub enum StreamCommand {
    /// The content stream (events stored, waiting, taken and not yet acknowledged, redelivered),
    /// the workers waiting for events, and the dead letters by reason.
    Status {
        /// Print the status as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Stop between batches on SIGTERM or Ctrl-C: the batch being written is finished and
/// acknowledged first.
fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("worker: stopping after the current batch");
        flag.store(true, Ordering::Relaxed);
    });
    stop
}

pub async fn worker(config: &Config, args: WorkerArgs) -> Result<ExitCode> {
    let stream = Arc::new(EventStream::connect(&config.stream).await?);
    if let Some(addr) = &args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
        eprintln!(
            "worker metrics on http://{}/metrics",
            listener.local_addr()?
        );
        tokio::spawn(signaldesk::stream::metrics::serve_metrics(
            listener,
            stream.clone(),
        ));
    }
    let embedder = Arc::new(Embedder::from_config(config)?);
    let store = AnyStore::open(config)?;
    let parts = config
        .stream
        .enrich
        .then(|| EnrichmentParts::load(config))
        .transpose()?;
    let enrichment = match &parts {
        Some(parts) => Some(Enrichment::open(parts, &store, &embedder).await?),
        None => None,
    };
    let stop = stop_on_signal();
    let bar = Progress::new("worker", None, "events");
    let options = WorkerOptions {
        exit_when_idle: args.exit_when_idle,
    };
    let summary = run_worker(
        &stream,
        &store,
        embedder.clone(),
        enrichment.as_ref(),
        config,
        &options,
        &stop,
        |s| bar.set_position(s.events as u64),
    )
    .await?;
    bar.finish();
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "worker: {} events in {} batches: new {}, updated {}, unchanged {}, superseded {}, enriched {} (already current {}), dead letters {}, redelivered to this worker {}",
            summary.events, summary.batches, summary.new, summary.updated, summary.unchanged,
            summary.superseded, summary.enriched, summary.enrich_current, summary.dead_letters,
            summary.redelivered
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(config: &Config, command: StreamCommand) -> Result<ExitCode> {
    let StreamCommand::Status { json } = command;
    let stream = EventStream::connect(&config.stream).await?;
    let status = stream.status().await?;
    if json {
        outln!("{}", serde_json::to_string(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{} at {} ({} replica(s)): {} events stored, {} waiting, {} taken and not yet acknowledged, {} redelivered, {} workers waiting",
        status.content_stream, status.url, status.replicas, status.content_events, status.pending,
        status.ack_pending, status.redelivered, status.waiting_pulls
    );
    outln!(
        "{}: {} dead letters",
        status.dead_stream,
        status.dead_letters
    );
    for (reason, n) in &status.dead_reasons {
        outln!("  {n:>8}  {reason}");
    }
    outln!(
        "shared logs: {} users' events, {} editors' decisions",
        status.interactions,
        status.decisions
    );
    Ok(ExitCode::SUCCESS)
}

/// `signaldesk ingest --via-stream`: validate and publish; the workers ingest.
pub async fn publish(
    stream: &EventStream,
    input: &Path,
    name: &str,
    options: &IngestOptions,
    json: bool,
) -> Result<ExitCode> {
    let bar = Progress::new("publish", count_records(input), "records");
    let summary = stream
        .publish_file(
            input,
            options,
            |line, reason| bar.suspend(|| eprintln!("{name}:{line}: rejected: {reason}")),
            |read| bar.set_position(read as u64),
        )
        .await?;
    bar.finish();
    if json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "ingest: read {}, published {}, already published {}, rejected {}; the workers ingest them (signaldesk stream status shows progress)",
            summary.read, summary.published, summary.duplicates, summary.rejected
        );
    }
    if summary.rejected > 0 {
        if let Some(rejects) = &options.rejects {
            eprintln!(
                "ingest: rejected records are listed in {}",
                rejects.display()
            );
        }
        return Ok(ExitCode::from(1));
    }
    if let Some(rejects) = &options.rejects {
        let _ = std::fs::remove_file(rejects);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `signaldesk enrich --via-stream` was asked for.
pub struct EnrichViaStream {
    pub collection: Option<String>,
    pub only_stale: bool,
    pub limit: Option<usize>,
    pub wait: bool,
    pub json: bool,
}

/// `signaldesk enrich --via-stream`: publish the items to enrich, then follow the work left.
pub async fn enrich(config: &Config, args: EnrichViaStream) -> Result<ExitCode> {
    anyhow::ensure!(
        config.stream.enrich,
        "stream.enrich is false: the workers would refuse enrich events (set it to true for the workers and here)"
    );
    let stream = EventStream::connect(&config.stream).await?;
    let embedder = Arc::new(Embedder::from_config(config)?);
    let store = AnyStore::open(config)?;
    let collection = args
        .collection
        .unwrap_or_else(|| config.store.collection.clone());
    let parts = EnrichmentParts::load(config)?;
    let enrichment = Enrichment::open(&parts, &store, &embedder).await?;
    let summary = enrichment
        .publish_stale(&stream, &store, &collection, args.only_stale, args.limit)
        .await?;
    eprintln!(
        "enrich: {} items of {collection:?} to enrich: published {}, already waiting {}",
        summary.read, summary.published, summary.duplicates
    );
    if args.wait && summary.read > 0 {
        let total = summary.read as u64;
        let bar = Progress::new("enrich via stream", Some(total), "items");
        loop {
            let left = stream.work_left().await?;
            bar.set_position(total.saturating_sub(left));
            if left == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        bar.finish();
    }
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    }
    Ok(ExitCode::SUCCESS)
}
