//! The shared logs: users' interactions and editors' decisions, each a stream kept whole
//! (limits retention, `stream.replicas` copies) that every process copies.
//!
//! Every API replica publishes the events it receives (`<prefix>.interactions`,
//! `<prefix>.decisions`), applies them itself at once, and follows both streams to apply the
//! other replicas' events, so a click sent to replica A changes the next list replica B serves,
//! and a decision made on A is in B's review view and in the decisions a worker applies when it
//! re-tags the item. A process's local log (the interaction log, `editorial.jsonl`) is a copy of
//! its stream: at start it copies what it lacks, so a restarted or new replica loses nothing;
//! `rank train` copies the interactions the same way before training, and a worker copies the
//! decisions before each enrichment. The lists replicas serve go to a third shared log,
//! `<prefix>.exposures`, which `experiments report` and `estimate` copy before reading.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use async_nats::HeaderMap;
use futures_util::StreamExt;

use super::{js_err, EventStream, StreamError};
use crate::enrich::editorial::{read_log, EditorialLog, TagDecision};
use crate::rank::experiments::{read_exposures, Exposure, ExposureLog};
use crate::rank::interactions::{Interaction, InteractionStore};

/// Header naming the replica that published an event (it applied the event itself).
pub const ORIGIN_HEADER: &str = "Signaldesk-Origin";

/// The shared logs, by stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedLog {
    /// Users' events (`<PREFIX>_INTERACTIONS`).
    Interactions,
    /// Editors' tag decisions (`<PREFIX>_DECISIONS`).
    Decisions,
    /// The lists served, with what experiments read (`<PREFIX>_EXPOSURES`).
    Exposures,
}

impl SharedLog {
    /// Every shared log: the streams a connection makes sure of.
    pub const ALL: [Self; 3] = [Self::Interactions, Self::Decisions, Self::Exposures];

    /// Its subject's last token; upper-cased, its stream's name after the prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interactions => "interactions",
            Self::Decisions => "decisions",
            Self::Exposures => "exposures",
        }
    }

    pub(crate) fn stream(self) -> &'static str {
        match self {
            Self::Interactions => "INTERACTIONS",
            Self::Decisions => "DECISIONS",
            Self::Exposures => "EXPOSURES",
        }
    }
}

/// The de-duplication id of an interaction: the interaction log's own key (user, time, item,
/// event), so a retried publish is stored once.
pub fn interaction_id(event: &Interaction) -> String {
    format!(
        "interaction:{}:{}:{}:{}",
        event.user, event.timestamp, event.item, event.event
    )
}

/// The de-duplication id of a decision: all of it (item, label, verdict, editor, time).
pub fn decision_id(d: &TagDecision) -> String {
    format!(
        "decision:{}:{}:{:?}:{}:{}",
        d.item, d.label, d.verdict, d.editor, d.at
    )
}

impl EventStream {
    /// Publish one event to a shared log and wait until the stream stored it (answered means
    /// durable), sending it again while a NATS cluster fails over, for up to
    /// `stream.publish_retry_s`. `origin` names the publishing replica. Returns its sequence.
    pub async fn publish_to_log(
        &self,
        log: SharedLog,
        payload: Vec<u8>,
        id: &str,
        origin: &str,
    ) -> Result<u64, StreamError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(self.config.publish_retry_s);
        loop {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id);
            headers.insert(ORIGIN_HEADER, origin);
            let sent = std::time::Instant::now();
            let result = match self
                .js
                .publish_with_headers(self.subject(log.as_str()), headers, payload.clone().into())
                .await
            {
                Ok(ack) => ack.await.map_err(|e| js_err("log acknowledgement")(&e)),
                Err(e) => Err(js_err("log publish")(&e)),
            };
            match result {
                Ok(ack) => {
                    super::metrics::COUNTERS.publish_took(sent.elapsed());
                    return Ok(ack.sequence);
                }
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, log = log.as_str(), "not acknowledged; sending it again");
                    super::metrics::COUNTERS
                        .publish_retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Publish one user's event ([`Self::publish_to_log`]).
    pub async fn publish_interaction(
        &self,
        event: &Interaction,
        origin: &str,
    ) -> Result<u64, StreamError> {
        let payload = serde_json::to_vec(event).expect("an interaction serializes");
        self.publish_to_log(
            SharedLog::Interactions,
            payload,
            &interaction_id(event),
            origin,
        )
        .await
    }

    /// Publish editors' decisions, in order ([`Self::publish_to_log`]).
    pub async fn publish_decisions(
        &self,
        decisions: &[TagDecision],
        origin: &str,
    ) -> Result<(), StreamError> {
        for d in decisions {
            let payload = serde_json::to_vec(d).expect("a decision serializes");
            self.publish_to_log(SharedLog::Decisions, payload, &decision_id(d), origin)
                .await?;
        }
        Ok(())
    }

    /// Publish a served list's exposure ([`Self::publish_to_log`]; its id is the exposure's).
    pub async fn publish_exposure(
        &self,
        exposure: &Exposure,
        origin: &str,
    ) -> Result<u64, StreamError> {
        let payload = serde_json::to_vec(exposure).expect("an exposure serializes");
        let id = format!("exposure:{}", exposure.id);
        self.publish_to_log(SharedLog::Exposures, payload, &id, origin)
            .await
    }

    /// Append to the exposure log at `path` every exposure of the stream it does not hold yet
    /// (by id): every replica's lists, for `experiments report` and `estimate`. Returns the
    /// last sequence copied.
    pub async fn sync_exposures(&self, path: &Path) -> Result<u64, StreamError> {
        let (all, last) = self
            .copy_parsed::<Exposure>(SharedLog::Exposures, 0)
            .await?;
        let rank = |e: crate::rank::RankError| js_err("exposure log")(&e);
        let held: HashSet<String> = if path.exists() {
            read_exposures(path)
                .map_err(rank)?
                .into_iter()
                .map(|e| e.id)
                .collect()
        } else {
            HashSet::new()
        };
        let log = ExposureLog::open(path).map_err(rank)?;
        for e in all.iter().filter(|e| !held.contains(&e.id)) {
            log.write(e).map_err(rank)?;
        }
        Ok(last)
    }

    /// Publish a file's worth of interactions (`signaldesk interactions ingest`), pipelined as
    /// content is, each with its log key as message id: every replica applies them.
    pub async fn publish_interactions(
        &self,
        events: &[Interaction],
    ) -> Result<super::PublishSummary, StreamError> {
        let mut summary = super::PublishSummary {
            read: events.len(),
            ..Default::default()
        };
        let payloads = events.iter().map(|event| {
            let payload = serde_json::to_vec(event).expect("an interaction serializes");
            (payload, interaction_id(event))
        });
        self.publish_events(&self.subject("interactions"), payloads, &mut summary)
            .await?;
        Ok(summary)
    }

    /// Read `log`'s events stored after sequence `after`, up to its last one now, handing each
    /// payload to `apply`; returns that last sequence (`after` when nothing is new).
    async fn copy_after(
        &self,
        log: SharedLog,
        after: u64,
        mut apply: impl FnMut(u64, &[u8]),
    ) -> Result<u64, StreamError> {
        let (_, info) = self.patiently(|| self.stream_info(log.stream())).await?;
        let last = info.state.last_sequence;
        if info.state.messages == 0 || last <= after {
            return Ok(last.max(after));
        }
        let mut messages = self.patiently(|| self.log_after(log, after)).await?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| js_err("shared log")(&e))?;
            let sequence = message.info().map_or(last, |i| i.stream_sequence);
            apply(sequence, &message.payload);
            if sequence >= last {
                break;
            }
        }
        Ok(last)
    }

    /// [`Self::copy_after`], each event parsed as a `T` (an unreadable one is skipped, said in
    /// the log): the events and the last sequence.
    async fn copy_parsed<T: serde::de::DeserializeOwned>(
        &self,
        log: SharedLog,
        after: u64,
    ) -> Result<(Vec<T>, u64), StreamError> {
        let mut events = Vec::new();
        let last = self
            .copy_after(log, after, |sequence, payload| {
                match serde_json::from_slice::<T>(payload) {
                    Ok(event) => events.push(event),
                    Err(e) => {
                        tracing::warn!(sequence, error = %e, log = log.as_str(), "an unreadable event skipped")
                    }
                }
            })
            .await?;
        Ok((events, last))
    }

    /// Copy every interaction the stream holds into `log` (an event already there is kept
    /// once), returning the last stream sequence copied (0: none): where to follow from.
    pub async fn sync_interactions(&self, log: &InteractionStore) -> Result<u64, StreamError> {
        let (batch, last) = self
            .copy_parsed::<Interaction>(SharedLog::Interactions, 0)
            .await?;
        for chunk in batch.chunks(10_000) {
            log.append(chunk)
                .map_err(|e| js_err("interaction log")(&e))?;
        }
        Ok(last)
    }

    /// [`Self::sync_interactions`] into the interaction log at `path` (opened for the copy and
    /// closed again): what a replica does before it builds its recommender, and `rank train`
    /// before it trains.
    pub async fn sync_log(&self, path: &Path) -> Result<u64, StreamError> {
        let log = InteractionStore::open(path).map_err(|e| js_err("interaction log")(&e))?;
        self.sync_interactions(&log).await
    }

    /// Append to the editors' log at `path` the decisions stored after sequence `after` that it
    /// does not hold yet; returns the last sequence copied (the next call's `after`).
    pub async fn sync_decisions(&self, path: &Path, after: u64) -> Result<u64, StreamError> {
        let (new, last) = self
            .copy_parsed::<TagDecision>(SharedLog::Decisions, after)
            .await?;
        if new.is_empty() {
            return Ok(last);
        }
        let editorial = |e: crate::enrich::editorial::EditorialError| js_err("editors' log")(&e);
        let held: HashSet<String> = read_log(path)
            .map_err(editorial)?
            .iter()
            .map(decision_id)
            .collect();
        let log = EditorialLog::open(path).map_err(editorial)?;
        for d in new.iter().filter(|d| !held.contains(&decision_id(d))) {
            log.record(d).map_err(editorial)?;
        }
        Ok(last)
    }

    /// Hand every event of `log` stored after sequence `after` that another replica published
    /// (not `origin`) to `apply` as it arrives; returns only when the stream fails (the caller
    /// starts again from the last sequence it saw).
    pub async fn follow(
        &self,
        log: SharedLog,
        after: u64,
        origin: &str,
        mut apply: impl FnMut(u64, &[u8]),
    ) -> Result<(), StreamError> {
        let mut messages = self.log_after(log, after).await?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| js_err("shared log")(&e))?;
            let sequence = message.info().map_or(after, |i| i.stream_sequence);
            let mine = message
                .headers
                .as_ref()
                .and_then(|h| h.get(ORIGIN_HEADER))
                .is_some_and(|o| o.as_str() == origin);
            if !mine {
                apply(sequence, &message.payload);
            }
        }
        Ok(())
    }

    /// An ordered consumer (ephemeral, recreated by the client after a gap or a failover) of
    /// `log`'s events after sequence `after`.
    async fn log_after(
        &self,
        log: SharedLog,
        after: u64,
    ) -> Result<consumer::push::Ordered, StreamError> {
        let (stream, _) = self.stream_info(log.stream()).await?;
        let deliver_policy = if after == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            }
        };
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| js_err("shared log consumer")(&e))?;
        consumer
            .messages()
            .await
            .map_err(|e| js_err("shared log consumer")(&e))
    }
}

/// With `stream.url` set, bring each local copy up to date with its shared log over one
/// connection — `rank train` its interaction log, `experiments` the exposure and interaction
/// logs it reads; nothing without a stream (returns whether it synced).
pub async fn sync_configured(
    config: &crate::Config,
    copies: &[(SharedLog, &Path)],
) -> Result<bool, StreamError> {
    if !config.stream.enabled() {
        return Ok(false);
    }
    let stream = EventStream::connect(&config.stream).await?;
    for (log, path) in copies {
        match log {
            SharedLog::Interactions => stream.sync_log(path).await?,
            SharedLog::Exposures => stream.sync_exposures(path).await?,
            SharedLog::Decisions => stream.sync_decisions(path, 0).await?,
        };
    }
    Ok(true)
}
