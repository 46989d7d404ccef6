//! Interactions shared by API replicas: every replica publishes the users' events it receives to
//! `<prefix>.interactions` (the `<PREFIX>_INTERACTIONS` stream, kept whole: limits retention,
//! `stream.replicas` copies) and follows the stream to apply the other replicas' events to its
//! own recommender, so a click sent to replica A changes the next list replica B serves. A
//! replica's interaction log is a copy of the stream: at start it copies what it misses
//! ([`EventStream::sync_interactions`]), so a restarted or new replica loses nothing; `rank
//! train` copies it the same way before training.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use async_nats::HeaderMap;
use futures_util::StreamExt;

use super::{js_err, EventStream, StreamError};
use crate::rank::interactions::{Interaction, InteractionStore};

/// Header naming the replica that published an interaction (it applied the event itself).
pub const ORIGIN_HEADER: &str = "Signaldesk-Origin";

/// The de-duplication id of an interaction: the interaction log's own key (user, time, item,
/// event), so a retried publish is stored once.
pub fn interaction_id(event: &Interaction) -> String {
    format!(
        "interaction:{}:{}:{}:{}",
        event.user, event.timestamp, event.item, event.event
    )
}

impl EventStream {
    /// Publish one user's event and wait until the stream stored it (a `202` means it is
    /// durable), sending it again while a NATS cluster fails over, for up to
    /// `stream.publish_retry_s`. `origin` names the publishing replica.
    pub async fn publish_interaction(
        &self,
        event: &Interaction,
        origin: &str,
    ) -> Result<u64, StreamError> {
        let payload = serde_json::to_vec(event).expect("an interaction serializes");
        let deadline = std::time::Instant::now() + Duration::from_secs(self.config.publish_retry_s);
        loop {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", interaction_id(event).as_str());
            headers.insert(ORIGIN_HEADER, origin);
            let sent = std::time::Instant::now();
            let result = match self
                .js
                .publish_with_headers(
                    self.subject("interactions"),
                    headers,
                    payload.clone().into(),
                )
                .await
            {
                Ok(ack) => ack
                    .await
                    .map_err(|e| js_err("interaction acknowledgement")(&e)),
                Err(e) => Err(js_err("interaction publish")(&e)),
            };
            match result {
                Ok(ack) => {
                    super::metrics::COUNTERS.publish_took(sent.elapsed());
                    return Ok(ack.sequence);
                }
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "interaction not acknowledged; sending it again");
                    super::metrics::COUNTERS
                        .publish_retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
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

    /// [`Self::sync_interactions`] into the interaction log at `path` (opened for the copy and
    /// closed again): what a replica does before it builds its recommender, and `rank train`
    /// before it trains.
    pub async fn sync_log(&self, path: &std::path::Path) -> Result<u64, StreamError> {
        let log = InteractionStore::open(path).map_err(|e| js_err("interaction log")(&e))?;
        self.sync_interactions(&log).await
    }

    /// Copy every interaction the stream holds into `log` (an event already there is kept
    /// once), returning the last stream sequence copied (0: none): where to follow from.
    pub async fn sync_interactions(&self, log: &InteractionStore) -> Result<u64, StreamError> {
        let (_, info) = self.stream_info("INTERACTIONS").await?;
        let last = info.state.last_sequence;
        if info.state.messages == 0 {
            return Ok(last);
        }
        let mut batch = Vec::with_capacity(1024);
        let mut messages = self.interactions_after(0).await?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| js_err("interactions")(&e))?;
            let sequence = message.info().map_or(last, |i| i.stream_sequence);
            match serde_json::from_slice::<Interaction>(&message.payload) {
                Ok(event) => batch.push(event),
                Err(e) => tracing::warn!(sequence, error = %e, "an unreadable interaction skipped"),
            }
            if batch.len() >= 1024 || sequence >= last {
                log.append(&batch)
                    .map_err(|e| js_err("interaction log")(&e))?;
                batch.clear();
            }
            if sequence >= last {
                break;
            }
        }
        Ok(last)
    }

    /// Apply every interaction stored after sequence `after` that another replica published
    /// (not `origin`), as it arrives; returns only when the stream fails (the caller starts
    /// again from the last sequence it saw).
    pub async fn follow_interactions(
        &self,
        after: u64,
        origin: &str,
        mut apply: impl FnMut(u64, Interaction),
    ) -> Result<(), StreamError> {
        let mut messages = self.interactions_after(after).await?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| js_err("interactions")(&e))?;
            let sequence = message.info().map_or(after, |i| i.stream_sequence);
            let mine = message
                .headers
                .as_ref()
                .and_then(|h| h.get(ORIGIN_HEADER))
                .is_some_and(|o| o.as_str() == origin);
            if mine {
                continue;
            }
            match serde_json::from_slice::<Interaction>(&message.payload) {
                Ok(event) => apply(sequence, event),
                Err(e) => tracing::warn!(sequence, error = %e, "an unreadable interaction skipped"),
            }
        }
        Ok(())
    }

    /// An ordered consumer (ephemeral, recreated by the client after a gap or a failover) of
    /// the interactions after sequence `after`.
    async fn interactions_after(&self, after: u64) -> Result<consumer::push::Ordered, StreamError> {
        let (stream, _) = self.stream_info("INTERACTIONS").await?;
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
            .map_err(|e| js_err("interactions consumer")(&e))?;
        consumer
            .messages()
            .await
            .map_err(|e| js_err("interactions consumer")(&e))
    }
}

/// With `stream.url` set, bring the interaction log at `path` up to date with the interactions
/// stream (what `rank train` and `experiments report` read); nothing without it.
pub async fn sync_configured_log(
    config: &crate::Config,
    path: &std::path::Path,
) -> Result<Option<u64>, StreamError> {
    if !config.stream.enabled() {
        return Ok(None);
    }
    let stream = EventStream::connect(&config.stream).await?;
    stream.sync_log(path).await.map(Some)
}
