//! `signaldesk worker`: work events from JetStream into the store: content through the one ingest
//! path, enrichment through the one enrichment path.
//!
//! A fetched batch is grouped by kind and collection. Content: within a group the last event of
//! each item id wins (as in a file), and the group goes through [`ingest_items`] as one call;
//! with an enrichment, an enrich event per item is then published. Enrich events: the group's
//! stale items are tagged (and summarized) in one call, after the editors' decisions were copied
//! from their stream. Only after the store acknowledged the write are the events acknowledged,
//! so a worker killed at any point leaves its events to be delivered again. Failures are sorted
//! by kind:
//! - a store that cannot be reached is no event's fault: the worker keeps the batch, tells NATS
//!   it is still working on it (an in-progress acknowledgement restarts `ack_wait` without
//!   counting a delivery) and retries the write with a growing delay until it succeeds or the
//!   worker is stopped;
//! - an item that fails on its own (a batch that failed is retried one item at a time to find
//!   it) is put back with a delay, and dead-lettered with the reason at its
//!   `stream.max_deliver`-th delivery;
//! - an event delivered more than `stream.max_deliver` times without ever being acknowledged
//!   (it kills or stalls every worker that takes it) is dead-lettered as soon as it is fetched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;
use serde::Serialize;

use super::enrichment::Enrichment;
use super::metrics::COUNTERS;
use super::{js_err, parse_enrich_event, parse_event, EventStream, StreamError, WorkKind};
use crate::embed::Embedder;
use crate::enrich::collection::EnrichError;
use crate::ingest::pipeline::{ingest_items, IngestError, IngestOptions, ItemStatus};
use crate::search::SearchError;
use crate::store::VectorStore;

/// How a worker runs.
#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Stop once no event is waiting and none is being processed anywhere (a backfill's end;
    /// tests). Otherwise the worker waits for events until it is told to stop.
    pub exit_when_idle: bool,
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkerSummary {
    /// Events fetched, redeliveries included.
    pub events: usize,
    /// Events this worker received that had been delivered before (another worker died, or an
    /// earlier attempt failed).
    pub redelivered: usize,
    pub new: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Events skipped because a later event of the same batch had the same item id.
    pub superseded: usize,
    pub dead_letters: usize,
    /// Event writes retried because the store could not be reached.
    pub retried: usize,
    pub batches: usize,
    /// Enrich events published for the items this worker ingested.
    pub enrich_published: usize,
    /// Items tagged (and summarized) from enrich events.
    pub enriched: usize,
    /// Items of enrich events that were already current (a redelivery, a second publish).
    pub enrich_current: usize,
}

/// Run a worker until `stop` is set (checked between batches: a batch being written is
/// finished and acknowledged first) or, with `exit_when_idle`, until the work is done.
/// With an `enrichment`, every ingested item is published as an enrich event and enrich events
/// are tagged (and summarized) with it; without one, enrich events are dead-lettered.
/// `on_batch` hears the running summary after each batch.
#[allow(clippy::too_many_arguments)]
pub async fn run_worker<S: VectorStore>(
    stream: &EventStream,
    store: &S,
    embedder: Arc<Embedder>,
    enrichment: Option<&Enrichment<'_, S>>,
    config: &crate::Config,
    options: &WorkerOptions,
    stop: &AtomicBool,
    mut on_batch: impl FnMut(&WorkerSummary),
) -> Result<WorkerSummary, StreamError> {
    let consumer = stream.work_consumer().await?;
    let mut summary = WorkerSummary::default();
    let decisions_after = AtomicU64::new(0);
    while !stop.load(Ordering::Relaxed) {
        let mut fetched = consumer
            .fetch()
            .max_messages(config.stream.fetch_batch)
            .messages()
            .await
            .map_err(|e| js_err("fetch")(&e))?;
        let mut messages = Vec::new();
        while let Some(m) = fetched.next().await {
            messages.push(m.map_err(|e| js_err("fetch")(&e))?);
        }
        if messages.is_empty() {
            if options.exit_when_idle {
                let info = consumer
                    .get_info()
                    .await
                    .map_err(|e| js_err("consumer info")(&e))?;
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let redelivered = messages
            .iter()
            .filter(|m| m.info().is_ok_and(|i| i.delivered > 1))
            .count();
        summary.events += messages.len();
        summary.redelivered += redelivered;
        COUNTERS
            .events
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        COUNTERS
            .redelivered
            .fetch_add(redelivered as u64, Ordering::Relaxed);
        let work = Work {
            stream,
            store,
            embedder: &embedder,
            enrichment,
            decisions_after: &decisions_after,
            config,
            stop,
        };
        process_batch(&work, messages, &mut summary).await?;
        summary.batches += 1;
        on_batch(&summary);
    }
    Ok(summary)
}

/// What processing a batch needs.
struct Work<'a, S> {
    stream: &'a EventStream,
    store: &'a S,
    embedder: &'a Arc<Embedder>,
    enrichment: Option<&'a Enrichment<'a, S>>,
    /// The last decisions-stream sequence copied into the local editors' log.
    decisions_after: &'a AtomicU64,
    config: &'a crate::Config,
    stop: &'a AtomicBool,
}

type Event = (Message, crate::content::ContentItem);

/// One fetched batch: parse (bad events to the dead letters), group by kind and collection,
/// process, acknowledge.
async fn process_batch<S: VectorStore>(
    work: &Work<'_, S>,
    messages: Vec<Message>,
    summary: &mut WorkerSummary,
) -> Result<(), StreamError> {
    let config = work.config;
    let mut groups: Vec<(String, Vec<Event>)> = Vec::new();
    let mut enrich_groups: Vec<(String, Vec<(Message, String)>)> = Vec::new();
    let base = IngestOptions::configured(config, &config.store.collection, work.embedder);
    for message in messages {
        let kind = WorkKind::of_subject(&message.subject);
        let deliveries = message.info().map_or(1, |i| i.delivered);
        if deliveries > config.stream.max_deliver {
            let reason = format!(
                "unacknowledged: delivered {deliveries} times without an acknowledgement (workers died or timed out on it)"
            );
            dead_letter(work.stream, kind, &message, &reason, summary).await?;
            continue;
        }
        let parsed = match kind {
            WorkKind::Content => parse_event(&message.payload, &base).map(|e| Parsed::Content(Box::new(e))),
            WorkKind::Enrich if work.enrichment.is_none() => Err(
                "not enriching: this worker runs with stream.enrich = false; run workers with it on"
                    .to_string(),
            ),
            WorkKind::Enrich => parse_enrich_event(&message.payload).map(Parsed::Enrich),
        };
        match parsed {
            Ok(Parsed::Content(e)) => {
                let super::ContentEvent {
                    collection, item, ..
                } = *e;
                push_to(&mut groups, collection, (message, item))
            }
            Ok(Parsed::Enrich(e)) => push_to(&mut enrich_groups, e.collection, (message, e.id)),
            Err(reason) => dead_letter(work.stream, kind, &message, &reason, summary).await?,
        }
    }
    for (collection, group) in groups {
        let options = IngestOptions {
            collection,
            ..base.clone()
        };
        ingest_group(work, &options, group, summary).await?;
    }
    for (collection, group) in enrich_groups {
        enrich_group(work, &collection, group, summary).await?;
    }
    Ok(())
}

/// A delivered work event, parsed.
enum Parsed {
    Content(Box<super::ContentEvent>),
    Enrich(super::EnrichEvent),
}

/// Add `event` to its collection's group, groups in order of first appearance.
fn push_to<T>(groups: &mut Vec<(String, Vec<T>)>, collection: String, event: T) {
    match groups.iter_mut().find(|(c, _)| *c == collection) {
        Some((_, group)) => group.push(event),
        None => groups.push((collection, vec![event])),
    }
}

/// Ingest one collection's events: the whole group in one call, or, when that fails for a reason
/// other than the store, one item at a time so only the failing item is retried.
async fn ingest_group<S: VectorStore>(
    work: &Work<'_, S>,
    options: &IngestOptions,
    group: Vec<Event>,
    summary: &mut WorkerSummary,
) -> Result<(), StreamError> {
    // The last event of each id wins; earlier ones are acknowledged with it.
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, (_, item)) in group.iter().enumerate() {
        last.insert(item.id.as_str(), i);
    }
    let keep: Vec<bool> = group
        .iter()
        .enumerate()
        .map(|(i, (_, item))| last[item.id.as_str()] == i)
        .collect();
    let items: Vec<_> = group
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|((_, item), _)| item.clone())
        .collect();
    let messages: Vec<&Message> = group.iter().map(|(m, _)| m).collect();
    let ids_and_hashes: Vec<(String, String)> = items
        .iter()
        .map(|item| (item.id.clone(), item.content_hash("event")))
        .collect();
    let attempt = || ingest_items(work.store, work.embedder.clone(), items.clone(), options);
    let result = match retrying_the_store(work, &messages, summary, attempt, |e| {
        matches!(e, IngestError::Store(_))
    })
    .await?
    {
        Some(result) => result,
        // Stopped while the store was down: the events go back when their ack_wait ends.
        None => return Ok(()),
    };
    match result {
        Ok(statuses) => {
            count(summary, &statuses);
            summary.superseded += keep.iter().filter(|k| !**k).count();
            // Enrich events for every item, unchanged ones too (an earlier delivery may have
            // written the item and died before publishing them); before the acknowledgement, so
            // a crash between the two repeats work rather than losing it.
            if let Some(enrichment) = work.enrichment {
                let mut published = super::PublishSummary::default();
                work.stream
                    .publish_enrich(
                        &options.collection,
                        ids_and_hashes,
                        &enrichment.digest(),
                        &mut published,
                    )
                    .await?;
                summary.enrich_published += published.published;
            }
            for message in messages {
                ack(message).await?;
            }
        }
        Err(e) if group.len() == 1 => {
            fail_one(
                work,
                WorkKind::Content,
                &group[0].0,
                &format!("ingest failed: {e}"),
                summary,
            )
            .await?;
        }
        Err(e) => {
            tracing::warn!(error = %e, events = group.len(), "batch failed; retrying its items one by one");
            for one in group {
                Box::pin(ingest_group(work, options, vec![one], summary)).await?;
            }
        }
    }
    Ok(())
}

/// One event that failed on its own: put back with a growing delay, or dead-lettered with
/// `reason` at its `stream.max_deliver`-th delivery.
async fn fail_one<S>(
    work: &Work<'_, S>,
    kind: WorkKind,
    message: &Message,
    reason: &str,
    summary: &mut WorkerSummary,
) -> Result<(), StreamError> {
    let deliveries = message.info().map_or(1, |i| i.delivered);
    if deliveries >= work.config.stream.max_deliver {
        return dead_letter(work.stream, kind, message, reason, summary).await;
    }
    let backoff = Duration::from_secs(1 << deliveries.clamp(0, 5));
    message
        .ack_with(AckKind::Nak(Some(backoff)))
        .await
        .map_err(|e| js_err("nak")(&e))
}

/// `attempt`, retried with a growing delay (up to 30 s) for as long as it fails because the
/// store cannot be reached (`is_store`), telling NATS after each failure that the events are
/// still being worked on. `None` when the worker was stopped meanwhile.
async fn retrying_the_store<S, T, E, Fut>(
    work: &Work<'_, S>,
    messages: &[&Message],
    summary: &mut WorkerSummary,
    mut attempt: impl FnMut() -> Fut,
    is_store: impl Fn(&E) -> bool,
) -> Result<Option<Result<T, E>>, StreamError>
where
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut failures = 0u32;
    loop {
        match attempt().await {
            Err(e) if is_store(&e) => {
                failures += 1;
                summary.retried += messages.len();
                COUNTERS
                    .store_retries
                    .fetch_add(messages.len() as u64, Ordering::Relaxed);
                let wait = Duration::from_millis((250u64 << failures.min(7)).min(30_000));
                tracing::warn!(error = %e, ?wait, "the store could not be reached; holding the batch and retrying");
                for message in messages {
                    message
                        .ack_with(AckKind::Progress)
                        .await
                        .map_err(|e| js_err("in-progress acknowledgement")(&e))?;
                }
                tokio::time::sleep(wait).await;
                if work.stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
            }
            other => return Ok(Some(other)),
        }
    }
}

/// Enrich one collection's enrich events: the stale items among them in one call, or, when that
/// fails for a reason other than the store, one event at a time.
async fn enrich_group<S: VectorStore>(
    work: &Work<'_, S>,
    collection: &str,
    group: Vec<(Message, String)>,
    summary: &mut WorkerSummary,
) -> Result<(), StreamError> {
    let Some(enrichment) = work.enrichment else {
        return Ok(());
    };
    let mut ids: Vec<String> = group.iter().map(|(_, id)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    let messages: Vec<&Message> = group.iter().map(|(m, _)| m).collect();
    // Editors' decisions made on any replica are applied to the new tags: copy what the local
    // log lacks first (a failure here is NATS's, like a failed acknowledgement).
    let log = crate::enrich::editorial::log_path(work.config);
    let after = work.decisions_after.load(Ordering::Relaxed);
    let last = work.stream.sync_decisions(&log, after).await?;
    work.decisions_after.store(last, Ordering::Relaxed);
    let attempt = || enrichment.enrich(work.store, collection, ids.clone());
    let is_store = |e: &EnrichError| {
        matches!(
            e,
            EnrichError::Store(_) | EnrichError::Search(SearchError::Store(_))
        )
    };
    let Some(result) = retrying_the_store(work, &messages, summary, attempt, is_store).await?
    else {
        return Ok(());
    };
    match result {
        Ok(outcome) => {
            summary.enriched += outcome.tags.tagged;
            summary.enrich_current += outcome.tags.fresh;
            COUNTERS
                .enriched
                .fetch_add(outcome.tags.tagged as u64, Ordering::Relaxed);
            for message in messages {
                ack(message).await?;
            }
        }
        Err(e) if group.len() == 1 => {
            fail_one(
                work,
                WorkKind::Enrich,
                &group[0].0,
                &format!("enrich failed: {e}"),
                summary,
            )
            .await?;
        }
        Err(e) => {
            tracing::warn!(error = %e, events = group.len(), "enrichment failed; retrying its items one by one");
            for one in group {
                Box::pin(enrich_group(work, collection, vec![one], summary)).await?;
            }
        }
    }
    Ok(())
}

fn count(summary: &mut WorkerSummary, statuses: &[ItemStatus]) {
    for s in statuses {
        match s {
            ItemStatus::New => summary.new += 1,
            ItemStatus::Updated => summary.updated += 1,
            ItemStatus::Unchanged => summary.unchanged += 1,
        }
    }
}

/// Acknowledge and wait for the server's confirmation.
async fn ack(message: &Message) -> Result<(), StreamError> {
    message
        .double_ack()
        .await
        .map_err(|e| js_err("acknowledgement")(&e))
}

/// Copy the event to the dead letters with `reason`, then acknowledge it (in that order: a crash
/// between the two leaves a dead letter *and* a redelivery, never neither).
async fn dead_letter(
    stream: &EventStream,
    kind: WorkKind,
    message: &Message,
    reason: &str,
    summary: &mut WorkerSummary,
) -> Result<(), StreamError> {
    let deliveries = message.info().map_or(1, |i| i.delivered);
    tracing::warn!(reason, deliveries, "event dead-lettered");
    stream
        .dead_letter(kind, &message.payload, reason, deliveries)
        .await?;
    ack(message).await?;
    summary.dead_letters += 1;
    COUNTERS.dead_lettered.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
