//! Prometheus metrics of the scale-out path: what this process published and processed (counters
//! and the publish latency histogram, process-wide), and the consumer's lag and the dead letters
//! read from JetStream at scrape time (gauges: every replica and worker reports the same shared
//! numbers, so alert on `max`). The API's `/metrics` appends them when `stream.url` is set;
//! `signaldesk worker --metrics-addr` serves them alone.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::EventStream;

/// Upper bounds (seconds) of the publish latency histogram's buckets.
const PUBLISH_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5, 10.0];

/// Process-wide counters, updated where the work happens.
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) publish_retries: AtomicU64,
    publish_buckets: [AtomicU64; PUBLISH_BUCKETS.len()],
    publish_count: AtomicU64,
    publish_micros: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) store_retries: AtomicU64,
    pub(crate) enriched: AtomicU64,
}

pub(crate) static COUNTERS: Counters = Counters {
    published: AtomicU64::new(0),
    publish_retries: AtomicU64::new(0),
    publish_buckets: [const { AtomicU64::new(0) }; PUBLISH_BUCKETS.len()],
    publish_count: AtomicU64::new(0),
    publish_micros: AtomicU64::new(0),
    events: AtomicU64::new(0),
    redelivered: AtomicU64::new(0),
    dead_lettered: AtomicU64::new(0),
    store_retries: AtomicU64::new(0),
    enriched: AtomicU64::new(0),
};

impl Counters {
    /// One publish acknowledged after `took` (from its first send, retries included).
    pub(crate) fn publish_took(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bucket, bound) in self.publish_buckets.iter().zip(PUBLISH_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.publish_count.fetch_add(1, Relaxed);
        self.publish_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
    );
}

/// This process's counters and the publish latency histogram.
pub fn process_metrics() -> String {
    let c = &COUNTERS;
    let mut out = String::new();
    for (name, help, value) in [
        (
            "signaldesk_stream_published_total",
            "Work events (content and enrich) this process published and JetStream stored (duplicates included)",
            &c.published,
        ),
        (
            "signaldesk_stream_publish_retries_total",
            "Publishes sent again because no acknowledgement came (a server failing over)",
            &c.publish_retries,
        ),
        (
            "signaldesk_stream_worker_events_total",
            "Work events this worker fetched, redeliveries included",
            &c.events,
        ),
        (
            "signaldesk_stream_worker_redelivered_total",
            "Fetched events that had been delivered before (a worker died, or an attempt failed)",
            &c.redelivered,
        ),
        (
            "signaldesk_stream_worker_dead_lettered_total",
            "Events this worker moved to the dead letters",
            &c.dead_lettered,
        ),
        (
            "signaldesk_stream_worker_store_retries_total",
            "Event writes retried because the store could not be reached",
            &c.store_retries,
        ),
        (
            "signaldesk_stream_worker_enriched_total",
            "Items this worker tagged (and summarized) from enrich events",
            &c.enriched,
        ),
    ] {
        counter(&mut out, name, help, value.load(Relaxed));
    }
    let name = "signaldesk_stream_publish_duration_seconds";
    let _ = write!(out, "# HELP {name} From a publish's first send to JetStream's acknowledgement\n# TYPE {name} histogram\n");
    for (bucket, bound) in c.publish_buckets.iter().zip(PUBLISH_BUCKETS) {
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{bound}\"}} {}",
            bucket.load(Relaxed)
        );
    }
    let count = c.publish_count.load(Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(
        out,
        "{name}_sum {}\n{name}_count {count}",
        c.publish_micros.load(Relaxed) as f64 / 1e6
    );
    out
}

impl EventStream {
    /// [`process_metrics`] and the shared state read from JetStream now: events waiting for a
    /// worker (the lag), taken and not yet acknowledged, redelivered, and the dead letters. When
    /// JetStream cannot be read, `signaldesk_stream_up` is 0 and the gauges are left out.
    pub async fn prometheus(&self) -> String {
        let mut out = process_metrics();
        match self.read_status(false).await {
            Ok(s) => {
                for (name, help, value) in [
                    (
                        "signaldesk_stream_up",
                        "1 when JetStream answered this scrape",
                        1,
                    ),
                    (
                        "signaldesk_stream_pending_events",
                        "Content events no worker has taken yet (the workers' lag)",
                        s.pending,
                    ),
                    (
                        "signaldesk_stream_ack_pending_events",
                        "Content events taken by a worker and not yet acknowledged",
                        s.ack_pending as u64,
                    ),
                    (
                        "signaldesk_stream_redelivered_events",
                        "Content events delivered more than once and not yet acknowledged",
                        s.redelivered as u64,
                    ),
                    (
                        "signaldesk_stream_dead_letters",
                        "Events in the dead-letter stream",
                        s.dead_letters,
                    ),
                ] {
                    gauge(&mut out, name, help, value);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "stream metrics: JetStream did not answer");
                gauge(
                    &mut out,
                    "signaldesk_stream_up",
                    "1 when JetStream answered this scrape",
                    0,
                );
            }
        }
        out
    }
}

/// Serve `GET /metrics` (and `GET /healthz`) on `listener` until the process ends: the worker's
/// metrics endpoint.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    stream: Arc<EventStream>,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(s): axum::extract::State<Arc<EventStream>>| async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        s.prometheus().await,
                    )
                },
            ),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(stream);
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_latencies_fill_cumulative_buckets() {
        let before = process_metrics();
        COUNTERS.publish_took(Duration::from_millis(3));
        let after = process_metrics();
        let bucket = |text: &str, le: &str| -> u64 {
            let key = format!("signaldesk_stream_publish_duration_seconds_bucket{{le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(key.as_str()))
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(bucket(&after, "0.0025") - bucket(&before, "0.0025"), 0);
        assert_eq!(bucket(&after, "0.005") - bucket(&before, "0.005"), 1);
        assert_eq!(bucket(&after, "+Inf") - bucket(&before, "+Inf"), 1);
    }
}
