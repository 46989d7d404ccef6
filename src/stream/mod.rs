//! Beyond one process: the work queue (content and enrich events) and the shared logs
//! ([`logs`]) on NATS JetStream (`stream.url`).
//!
//! With `stream.url` unset nothing here runs and every command works in process, as before. Set,
//! `signaldesk ingest --via-stream` and `POST /v1/content` validate items exactly as the
//! in-process path does and publish one **content event** per item to `<prefix>.content`, kept by
//! the `<PREFIX>_CONTENT` stream (work-queue retention: an event is removed once a worker
//! acknowledged it). `signaldesk worker` processes, on any machine, share the durable pull
//! consumer `workers`: each fetches a batch, runs it through [`crate::ingest::pipeline::ingest_items`]
//! (the one ingest path: change detection, chunking, embedding, crash-safe upsert) and only then
//! acknowledges it.
//!
//! **Nothing lost, nothing doubled.** An event a worker took and did not acknowledge (it was
//! killed, or the store failed) is delivered again after `stream.ack_wait_s`. A second delivery is
//! harmless: point ids come from (item id, chunk index) and an item whose stored content hash
//! matches is skipped, so the store ends with each item once. A publisher that retries is
//! de-duplicated by NATS itself within `stream.duplicate_window_s`: the message id is the
//! collection, the item id and its content hash. An event that fails `stream.max_deliver` times
//! (or can never succeed: it does not parse, or an item fails validation) is moved to
//! `<prefix>.dead.content` (the `<PREFIX>_DEAD` stream) with the reason in its headers, and
//! counted by `signaldesk stream status`.
//!
//! **Consumer loop.** Workers fetch at most `stream.fetch_batch` events at a time and hold no
//! buffer beyond it: a prefetching consumer starts events' `ack_wait` clocks while they sit in a
//! local buffer, and a slow batch then sees its later events redelivered to another worker while
//! it still works on them (a known trap of JetStream clients). Acknowledgements are *double* acks
//! (the server confirms each), so an acknowledgement lost on the wire cannot be mistaken for a
//! processed event.

pub mod enrichment;
pub mod logs;
pub mod metrics;
pub mod worker;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::StreamConfig;
use crate::content::ContentItem;
use crate::ingest::pipeline::{read_records, write_reject, IngestError, IngestOptions};

/// The durable consumer every worker shares.
pub const WORKERS_CONSUMER: &str = "workers";
/// Header naming why an event was dead-lettered.
pub const DEAD_REASON_HEADER: &str = "Signaldesk-Dead-Reason";
/// Header with the deliveries an event had when it was dead-lettered.
pub const DEAD_DELIVERIES_HEADER: &str = "Signaldesk-Deliveries";
/// Version of the content event's JSON shape.
pub const CONTENT_EVENT_VERSION: u32 = 1;
/// Version of the enrich event's JSON shape.
pub const ENRICH_EVENT_VERSION: u32 = 1;

/// The kinds of work events on the work-queue stream, by subject (`<prefix>.<kind>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    /// An item to ingest ([`ContentEvent`]).
    Content,
    /// A stored item to tag and summarize ([`EnrichEvent`]).
    Enrich,
}

impl WorkKind {
    /// The subject's last token and the dead letters' subject (`<prefix>.dead.<kind>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Content => "content",
            Self::Enrich => "enrich",
        }
    }

    /// The kind of a delivered event, from its subject.
    pub fn of_subject(subject: &str) -> Self {
        if subject.ends_with(".enrich") {
            Self::Enrich
        } else {
            Self::Content
        }
    }
}

/// One enrich event: a stored item for the workers to tag (and summarize) with their
/// configured enrichment. Published by the worker that ingested the item and by
/// `signaldesk enrich --via-stream`; a worker enriches only what is stale, so a second delivery
/// or a second publish costs one read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrichEvent {
    /// [`ENRICH_EVENT_VERSION`].
    pub v: u32,
    pub collection: String,
    /// The item's id.
    pub id: String,
}

impl EnrichEvent {
    /// The de-duplication id: the item, the version of its content (`content_hash`) and the
    /// digest of the enrichment that was asked for, so one piece of work is stored once per
    /// window while a changed item or a changed enrichment goes through.
    pub fn message_id(&self, content_hash: &str, digest: &str) -> String {
        format!(
            "enrich:{}:{}:{content_hash}:{digest}",
            self.collection, self.id
        )
    }
}

/// Why a stream operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "stream.url is not set: scale-out needs a NATS server (stream.url = \"nats://HOST:4222\")"
    )]
    NotConfigured,
    #[error("cannot reach NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("JetStream {what}: {message}")]
    JetStream { what: &'static str, message: String },
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

fn js_err(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> StreamError {
    move |e| StreamError::JetStream {
        what,
        message: e.to_string(),
    }
}

/// One content event: an item to ingest into a collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentEvent {
    /// [`CONTENT_EVENT_VERSION`].
    pub v: u32,
    pub collection: String,
    pub item: ContentItem,
}

impl ContentEvent {
    /// The de-duplication id: the collection, the item id and a hash of its content, so a
    /// retried publish of the same item is dropped while a changed item, or the same item for
    /// another collection, goes through.
    pub fn message_id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.collection,
            self.item.id,
            self.item.content_hash("event")
        )
    }
}

/// What publishing did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PublishSummary {
    pub read: usize,
    /// Events the stream stored.
    pub published: usize,
    /// Events NATS dropped as already published (same id and content within the window).
    pub duplicates: usize,
    pub rejected: usize,
    /// Publishes sent again because the first was not acknowledged (a server failing over).
    pub retries: usize,
    /// Stream sequence of the last stored event.
    pub last_sequence: u64,
}

/// Where one published event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Published {
    /// Its sequence in the content stream (for a duplicate, the first copy's).
    pub sequence: u64,
    /// NATS dropped it as already published (same item id and content within the window).
    pub duplicate: bool,
}

/// The state of the streams and the workers' consumer (`signaldesk stream status`).
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub url: String,
    pub content_stream: String,
    /// Events stored and not yet acknowledged by a worker.
    pub content_events: u64,
    pub replicas: usize,
    /// Events no worker has taken yet.
    pub pending: u64,
    /// Events taken and not yet acknowledged.
    pub ack_pending: usize,
    /// Events delivered more than once so far.
    pub redelivered: usize,
    /// Workers waiting for events right now.
    pub waiting_pulls: usize,
    pub dead_stream: String,
    pub dead_letters: u64,
    /// Dead letters by reason (the last 1,000 read).
    pub dead_reasons: BTreeMap<String, u64>,
    /// Users' events in the shared interactions stream (every replica's log copies it).
    pub interactions: u64,
    /// Editors' decisions in the shared decisions stream.
    pub decisions: u64,
    /// Lists served by every replica, in the shared exposures stream.
    pub exposures: u64,
}

/// A publish waiting for its acknowledgement, kept so it can be sent again.
struct InFlight {
    payload: Vec<u8>,
    id: String,
    sent: std::time::Instant,
    ack: Option<Result<jetstream::context::PublishAckFuture, StreamError>>,
}

/// A connection to JetStream with the project's streams in place.
pub struct EventStream {
    config: StreamConfig,
    js: jetstream::Context,
}

impl EventStream {
    /// Connect to `stream.url` and create or update the content and dead-letter streams (and
    /// nothing else: consumers are the workers' business).
    pub async fn connect(config: &StreamConfig) -> Result<Self, StreamError> {
        if !config.enabled() {
            return Err(StreamError::NotConfigured);
        }
        let connect_err = |message: String| StreamError::Connect {
            url: config.url.clone(),
            message,
        };
        let addrs = config
            .url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| connect_err(format!("stream.url: {e}")))?;
        let timeout = Duration::from_secs(config.timeout_s);
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .name("signaldesk")
            .connect(addrs)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .build(client);
        let this = Self {
            config: config.clone(),
            js,
        };
        this.ensure_streams().await?;
        Ok(this)
    }

    fn subject(&self, kind: &str) -> String {
        format!("{}.{kind}", self.config.prefix)
    }

    fn stream_name(&self, kind: &str) -> String {
        format!(
            "{}_{kind}",
            self.config.prefix.to_uppercase().replace('-', "_")
        )
    }

    async fn ensure_streams(&self) -> Result<(), StreamError> {
        let content = stream::Config {
            name: self.stream_name("CONTENT"),
            subjects: vec![self.subject("content"), self.subject("enrich")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            duplicate_window: Duration::from_secs(self.config.duplicate_window_s),
            ..Default::default()
        };
        let dead = stream::Config {
            name: self.stream_name("DEAD"),
            subjects: vec![self.subject("dead.>")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            ..Default::default()
        };
        // Kept whole (limits retention): every process's local log is a copy of one of them.
        let shared = logs::SharedLog::ALL.map(|log| stream::Config {
            name: self.stream_name(log.stream()),
            subjects: vec![self.subject(log.as_str())],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            duplicate_window: Duration::from_secs(self.config.duplicate_window_s),
            ..Default::default()
        });
        for config in [content, dead].into_iter().chain(shared) {
            self.js
                .create_or_update_stream(config)
                .await
                .map_err(|e| js_err("stream setup")(&e))?;
        }
        Ok(())
    }

    /// The workers' durable pull consumer, created on first use.
    pub async fn work_consumer(&self) -> Result<consumer::PullConsumer, StreamError> {
        let config = consumer::pull::Config {
            durable_name: Some(WORKERS_CONSUMER.to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(self.config.ack_wait_s),
            // Unlimited on the server: the workers dead-letter an event themselves after
            // `stream.max_deliver` deliveries, so none is left stranded in the stream, never
            // delivered again and never dead-lettered.
            max_deliver: -1,
            // Bounded, so a stalled worker cannot hold the whole backlog.
            max_ack_pending: (self.config.fetch_batch * 64) as i64,
            ..Default::default()
        };
        let stream = self
            .js
            .get_stream(self.stream_name("CONTENT"))
            .await
            .map_err(|e| js_err("content stream")(&e))?;
        stream
            .get_or_create_consumer(WORKERS_CONSUMER, config)
            .await
            .map_err(|e| js_err("workers consumer")(&e))
    }

    /// Publish one event per item, pipelined (up to 256 acknowledgements in flight), and wait
    /// until the stream has stored every one. When an acknowledgement fails or does not come (a
    /// NATS server died, the stream is electing a new leader), every publish still in flight is
    /// sent again, with the same message ids so none is stored twice, for up to
    /// `stream.publish_retry_s`.
    pub async fn publish_items(
        &self,
        collection: &str,
        items: impl IntoIterator<Item = ContentItem>,
        summary: &mut PublishSummary,
    ) -> Result<Vec<Published>, StreamError> {
        let events = items.into_iter().map(|item| {
            let event = ContentEvent {
                v: CONTENT_EVENT_VERSION,
                collection: collection.to_string(),
                item,
            };
            let id = event.message_id();
            (serde_json::to_vec(&event).expect("events serialize"), id)
        });
        self.publish_events(&self.subject(WorkKind::Content.as_str()), events, summary)
            .await
    }

    /// Publish one enrich event per `(item id, content hash)` of `collection`, for the
    /// enrichment whose [`crate::enrich::collection::lineage_digest`] is `digest`, as
    /// [`Self::publish_items`] publishes content.
    pub async fn publish_enrich(
        &self,
        collection: &str,
        items: impl IntoIterator<Item = (String, String)>,
        digest: &str,
        summary: &mut PublishSummary,
    ) -> Result<Vec<Published>, StreamError> {
        let events = items.into_iter().map(|(id, content_hash)| {
            let event = EnrichEvent {
                v: ENRICH_EVENT_VERSION,
                collection: collection.to_string(),
                id,
            };
            let message_id = event.message_id(&content_hash, digest);
            (
                serde_json::to_vec(&event).expect("events serialize"),
                message_id,
            )
        });
        self.publish_events(&self.subject(WorkKind::Enrich.as_str()), events, summary)
            .await
    }

    /// Publish `(payload, message id)` events to `subject`, pipelined, until every one is
    /// stored (see [`Self::publish_items`]).
    async fn publish_events(
        &self,
        subject: &str,
        events: impl IntoIterator<Item = (Vec<u8>, String)>,
        summary: &mut PublishSummary,
    ) -> Result<Vec<Published>, StreamError> {
        let mut pending = std::collections::VecDeque::new();
        let mut published = Vec::new();
        for (payload, id) in events {
            let sent = std::time::Instant::now();
            let ack = Some(self.send(subject, &payload, &id).await);
            pending.push_back(InFlight {
                payload,
                id,
                sent,
                ack,
            });
            if pending.len() >= 256 {
                published.push(self.confirm_first(subject, &mut pending, summary).await?);
            }
        }
        while !pending.is_empty() {
            published.push(self.confirm_first(subject, &mut pending, summary).await?);
        }
        Ok(published)
    }

    async fn send(
        &self,
        subject: &str,
        payload: &[u8],
        id: &str,
    ) -> Result<jetstream::context::PublishAckFuture, StreamError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.to_vec().into())
            .message_id(id);
        self.js
            .send_publish(subject.to_string(), publish)
            .await
            .map_err(|e| js_err("publish")(&e))
    }

    /// Wait for the oldest publish's acknowledgement; while it fails, send every publish in
    /// flight again (one failover costs one wait, not one per event).
    async fn confirm_first(
        &self,
        subject: &str,
        pending: &mut std::collections::VecDeque<InFlight>,
        summary: &mut PublishSummary,
    ) -> Result<Published, StreamError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(self.config.publish_retry_s);
        let ack = loop {
            let first = pending.front_mut().expect("a publish in flight");
            let result = match first.ack.take().expect("each publish is awaited once") {
                Ok(ack) => ack.await.map_err(|e| js_err("publish acknowledgement")(&e)),
                Err(e) => Err(e),
            };
            match result {
                Ok(ack) => break ack,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, in_flight = pending.len(), "publish not acknowledged; sending what is in flight again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    for p in pending.iter_mut() {
                        p.ack = Some(self.send(subject, &p.payload, &p.id).await);
                        summary.retries += 1;
                        metrics::COUNTERS.publish_retries.fetch_add(1, Relaxed);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let done = pending.pop_front().expect("a publish in flight");
        metrics::COUNTERS.published.fetch_add(1, Relaxed);
        metrics::COUNTERS.publish_took(done.sent.elapsed());
        if ack.duplicate {
            summary.duplicates += 1;
        } else {
            summary.published += 1;
        }
        summary.last_sequence = summary.last_sequence.max(ack.sequence);
        Ok(Published {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Publish every valid record of a file (`.jsonl`, `.jsonl.gz`, `.csv`) as it is read,
    /// validated as `signaldesk ingest` validates it; rejected lines go to `on_reject` and to
    /// `options.rejects` as `ingest` writes them.
    pub async fn publish_file(
        &self,
        path: &Path,
        options: &IngestOptions,
        mut on_reject: impl FnMut(usize, &str),
        mut on_progress: impl FnMut(usize),
    ) -> Result<PublishSummary, StreamError> {
        let rejects_err = |source| {
            StreamError::Ingest(IngestError::Rejects {
                path: options.rejects.clone().unwrap_or_default(),
                source,
            })
        };
        let mut rejects = match &options.rejects {
            Some(p) => Some(std::io::BufWriter::new(
                std::fs::File::create(p).map_err(rejects_err)?,
            )),
            None => None,
        };
        let mut summary = PublishSummary::default();
        let mut records = read_records(path, options.limits, options.max_line_bytes)?;
        loop {
            let mut batch = Vec::with_capacity(1024);
            for r in records.by_ref() {
                summary.read += 1;
                match r? {
                    Ok(record) => batch.push(record.item),
                    Err((line, reason)) => {
                        summary.rejected += 1;
                        on_reject(line, &reason);
                        write_reject(&mut rejects, path, line, &reason).map_err(rejects_err)?;
                    }
                }
                if batch.len() >= 1024 {
                    break;
                }
            }
            if batch.is_empty() {
                if let Some(w) = rejects.as_mut() {
                    std::io::Write::flush(w).map_err(rejects_err)?;
                }
                return Ok(summary);
            }
            self.publish_items(&options.collection, batch, &mut summary)
                .await?;
            on_progress(summary.read);
        }
    }

    /// Move an event to the dead letters with its reason. The original payload is kept as it
    /// was, so it can be inspected and republished.
    pub async fn dead_letter(
        &self,
        kind: WorkKind,
        payload: &[u8],
        reason: &str,
        deliveries: i64,
    ) -> Result<(), StreamError> {
        let mut headers = HeaderMap::new();
        // Header values are one line.
        let reason: String = reason
            .replace(['\r', '\n'], " ")
            .chars()
            .take(500)
            .collect();
        headers.insert(DEAD_REASON_HEADER, reason.as_str());
        headers.insert(DEAD_DELIVERIES_HEADER, deliveries.to_string().as_str());
        self.js
            .publish_with_headers(
                self.subject(&format!("dead.{}", kind.as_str())),
                headers,
                payload.to_vec().into(),
            )
            .await
            .map_err(|e| js_err("dead-letter publish")(&e))?
            .await
            .map_err(|e| js_err("dead-letter acknowledgement")(&e))?;
        Ok(())
    }

    /// A stream of ours and its current info.
    async fn stream_info(
        &self,
        kind: &'static str,
    ) -> Result<(stream::Stream, stream::Info), StreamError> {
        let mut handle = self
            .js
            .get_stream(self.stream_name(kind))
            .await
            .map_err(|e| js_err("stream")(&e))?;
        let info = handle
            .info()
            .await
            .map_err(|e| js_err("stream info")(&e))?
            .clone();
        Ok((handle, info))
    }

    /// Work events not yet done: waiting for a worker or taken and not yet acknowledged (what a
    /// batch run's progress and ETA follow).
    pub async fn work_left(&self) -> Result<u64, StreamError> {
        let status = self.read_status(false).await?;
        Ok(status.pending + status.ack_pending as u64)
    }

    /// The streams' and the workers' consumer's counts, and the dead letters by reason.
    /// Retried for up to `stream.publish_retry_s` while the servers do not answer: a stream
    /// whose leader died answers nothing until the cluster elected another (seconds), and an
    /// operator asking then wants the answer, not the timeout. (A metrics scrape asks once.)
    pub async fn status(&self) -> Result<StreamStatus, StreamError> {
        self.patiently(|| self.read_status(true)).await
    }

    /// `request`, asked again every 200 ms for up to `stream.publish_retry_s` while it fails:
    /// for reads, which are safe to repeat, during a cluster's failover.
    pub(crate) async fn patiently<T, Fut>(
        &self,
        mut request: impl FnMut() -> Fut,
    ) -> Result<T, StreamError>
    where
        Fut: std::future::Future<Output = Result<T, StreamError>>,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(self.config.publish_retry_s);
        loop {
            match request().await {
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "the streams are not answering; asking again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    /// The counts alone (`dead_reasons` left empty): what a metrics scrape reads, without
    /// fetching dead letters one by one.
    async fn read_status(&self, with_reasons: bool) -> Result<StreamStatus, StreamError> {
        let (content, info) = self.stream_info("CONTENT").await?;
        let consumer = content.consumer_info(WORKERS_CONSUMER).await.ok();
        let (dead, dead_info) = self.stream_info("DEAD").await?;
        let dead_reasons = if with_reasons {
            dead_reasons(&dead, &dead_info).await
        } else {
            BTreeMap::new()
        };
        Ok(StreamStatus {
            url: self.config.url.clone(),
            content_stream: info.config.name.clone(),
            content_events: info.state.messages,
            replicas: info.config.num_replicas,
            pending: consumer
                .as_ref()
                .map_or(info.state.messages, |c| c.num_pending),
            ack_pending: consumer.as_ref().map_or(0, |c| c.num_ack_pending),
            redelivered: consumer.as_ref().map_or(0, |c| c.num_redelivered),
            waiting_pulls: consumer.as_ref().map_or(0, |c| c.num_waiting),
            dead_stream: dead_info.config.name.clone(),
            dead_letters: dead_info.state.messages,
            dead_reasons,
            interactions: self.stream_info("INTERACTIONS").await?.1.state.messages,
            decisions: self.stream_info("DECISIONS").await?.1.state.messages,
            exposures: self.stream_info("EXPOSURES").await?.1.state.messages,
        })
    }
}

/// Dead letters counted by reason kind (the reason's text before its first ':'), read without
/// consuming them (the last 1,000).
async fn dead_reasons(dead: &stream::Stream, info: &stream::Info) -> BTreeMap<String, u64> {
    let mut reasons = BTreeMap::new();
    if info.state.messages == 0 {
        return reasons;
    }
    let first = info
        .state
        .last_sequence
        .saturating_sub(999)
        .max(info.state.first_sequence);
    for seq in first..=info.state.last_sequence {
        let Ok(message) = dead.get_raw_message(seq).await else {
            continue;
        };
        let reason = message
            .headers
            .get(DEAD_REASON_HEADER)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let kind = reason.split(':').next().unwrap_or("").trim().to_string();
        *reasons.entry(kind).or_insert(0) += 1;
    }
    reasons
}

/// Parse a delivered event, validating its item as the publisher did (a worker may run with other
/// limits than the publisher). The error is the dead-letter reason.
pub fn parse_event(payload: &[u8], options: &IngestOptions) -> Result<ContentEvent, String> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| format!("invalid event: not JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("invalid event: not a JSON object".into());
    };
    let v = obj.get("v").and_then(Value::as_u64);
    if v != Some(u64::from(CONTENT_EVENT_VERSION)) {
        return Err(format!(
            "invalid event: field v: expected {CONTENT_EVENT_VERSION}, got {v:?}"
        ));
    }
    let collection = match obj.remove("collection") {
        Some(Value::String(c)) if !c.is_empty() => c,
        _ => return Err("invalid event: field collection: missing or not a string".into()),
    };
    let Some(Value::Object(item)) = obj.remove("item") else {
        return Err("invalid event: field item: missing or not an object".into());
    };
    let item = ContentItem::from_json(item, options.limits)
        .map_err(|e| format!("invalid item: field item.{}: {}", e.field, e.message))?;
    Ok(ContentEvent {
        v: CONTENT_EVENT_VERSION,
        collection,
        item,
    })
}

/// Parse a delivered enrich event; the error is the dead-letter reason.
pub fn parse_enrich_event(payload: &[u8]) -> Result<EnrichEvent, String> {
    let event: EnrichEvent =
        serde_json::from_slice(payload).map_err(|e| format!("invalid enrich event: {e}"))?;
    if event.v != ENRICH_EVENT_VERSION {
        return Err(format!(
            "invalid enrich event: field v: expected {ENRICH_EVENT_VERSION}, got {}",
            event.v
        ));
    }
    if event.collection.is_empty() || event.id.is_empty() {
        return Err("invalid enrich event: field collection or id: empty".into());
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Limits;

    #[test]
    fn an_enrich_event_round_trips_and_a_bad_one_names_its_field() {
        let event = EnrichEvent {
            v: ENRICH_EVENT_VERSION,
            collection: "news".into(),
            id: "a-1".into(),
        };
        let back = parse_enrich_event(&serde_json::to_vec(&event).unwrap()).unwrap();
        assert_eq!(back, event);
        assert_ne!(event.message_id("h1", "d"), event.message_id("h2", "d"));
        assert_ne!(event.message_id("h1", "d"), event.message_id("h1", "e"));
        let e = parse_enrich_event(br#"{"v":1,"collection":"c"}"#).unwrap_err();
        assert!(e.contains("missing field `id`"), "{e}");
        let e = parse_enrich_event(br#"{"v":2,"collection":"c","id":"x"}"#).unwrap_err();
        assert!(e.contains("field v"), "{e}");
        assert_eq!(WorkKind::of_subject("signaldesk.enrich"), WorkKind::Enrich);
        assert_eq!(
            WorkKind::of_subject("signaldesk.content"),
            WorkKind::Content
        );
    }

    fn options() -> IngestOptions {
        IngestOptions::from_config(&crate::Config::default(), "content", None)
    }

    #[test]
    fn an_event_round_trips_and_its_message_id_follows_the_content() {
        let item = ContentItem::from_json(
            serde_json::json!({"id": "a-1", "title": "T", "body": "B", "published_at": "2025-03-01"})
                .as_object()
                .unwrap()
                .clone(),
            Limits::default(),
        )
        .unwrap();
        let event = ContentEvent {
            v: CONTENT_EVENT_VERSION,
            collection: "news".into(),
            item: item.clone(),
        };
        let back = parse_event(&serde_json::to_vec(&event).unwrap(), &options()).unwrap();
        assert_eq!(back.item, item);
        assert_eq!(back.collection, "news");
        assert_eq!(back.message_id(), event.message_id());
        let mut changed = event.clone();
        changed.item.body.push('!');
        assert_ne!(changed.message_id(), event.message_id());
        assert!(event.message_id().starts_with("news:a-1:"));
        let mut elsewhere = event.clone();
        elsewhere.collection = "archive".into();
        assert_ne!(elsewhere.message_id(), event.message_id());
    }

    #[test]
    fn a_bad_event_is_refused_with_the_field_named() {
        let o = options();
        assert!(parse_event(b"{", &o).unwrap_err().contains("not JSON"));
        let e = parse_event(br#"{"v":2,"collection":"c","item":{}}"#, &o).unwrap_err();
        assert!(e.contains("field v"), "{e}");
        let e = parse_event(br#"{"v":1,"item":{}}"#, &o).unwrap_err();
        assert!(e.contains("field collection"), "{e}");
        let e = parse_event(br#"{"v":1,"collection":"c","item":{"title":"t"}}"#, &o).unwrap_err();
        assert!(e.starts_with("invalid item: field item.id"), "{e}");
    }
}
