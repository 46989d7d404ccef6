//! Observability shared by the HTTP servers (`serve`, `llm serve`): per-route request latency
//! histograms in Prometheus text format.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Per (route, status): bucket counts, count and sum of seconds.
type RouteHistograms = std::collections::BTreeMap<(String, u16), (Vec<u64>, u64, f64)>;

static ROUTE_LATENCY: std::sync::Mutex<RouteHistograms> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The `q` quantile (nearest rank) of ascending `sorted` latencies, 0 when empty: the one
/// definition of p50/p90/p99 that every benchmark (`bench http`, `bench recommend`,
/// `bench store`) reports.
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Time each request into its route's histogram.
pub async fn time_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    if let Ok(mut h) = ROUTE_LATENCY.lock() {
        let (buckets, count, sum) = h
            .entry((route, response.status().as_u16()))
            .or_insert_with(|| (vec![0; LATENCY_BUCKETS.len()], 0, 0.0));
        for (b, le) in buckets.iter_mut().zip(LATENCY_BUCKETS) {
            *b += u64::from(seconds <= *le);
        }
        *count += 1;
        *sum += seconds;
    }
    response
}

/// The per-route latency histograms in Prometheus text format.
pub fn route_metrics() -> String {
    let name = "signaldesk_http_request_duration_seconds";
    let mut out = format!(
        "# HELP {name} HTTP request latency by route and status\n# TYPE {name} histogram\n"
    );
    let Ok(h) = ROUTE_LATENCY.lock() else {
        return out;
    };
    for ((route, status), (buckets, count, sum)) in h.iter() {
        let labels = format!("route=\"{route}\",status=\"{status}\"");
        for (b, le) in buckets.iter().zip(LATENCY_BUCKETS) {
            out.push_str(&format!("{name}_bucket{{{labels},le=\"{le}\"}} {b}\n"));
        }
        out.push_str(&format!("{name}_bucket{{{labels},le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!(
            "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}\n"
        ));
    }
    out
}

/// Upper bounds (seconds) of the pipeline-stage histograms' buckets: stages are shorter than
/// whole requests.
const STAGE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Per stage: bucket counts, count and sum of seconds.
type StageHistograms = std::collections::BTreeMap<&'static str, (Vec<u64>, u64, f64)>;

static STAGE_LATENCY: std::sync::Mutex<StageHistograms> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Times one pipeline stage (`embed`, `store`, `llm`, `rank`) from creation to drop.
#[must_use = "the stage is timed until the guard is dropped"]
pub struct StageTimer {
    stage: &'static str,
    started: Instant,
}

/// Start timing `stage`; it is recorded when the guard drops.
pub fn stage(stage: &'static str) -> StageTimer {
    StageTimer {
        stage,
        started: Instant::now(),
    }
}

impl Drop for StageTimer {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        if let Ok(mut h) = STAGE_LATENCY.lock() {
            let (buckets, count, sum) = h
                .entry(self.stage)
                .or_insert_with(|| (vec![0; STAGE_BUCKETS.len()], 0, 0.0));
            for (b, le) in buckets.iter_mut().zip(STAGE_BUCKETS) {
                *b += u64::from(seconds <= *le);
            }
            *count += 1;
            *sum += seconds;
        }
    }
}

/// The pipeline-stage histograms in Prometheus text format.
pub fn stage_metrics() -> String {
    let name = "signaldesk_stage_duration_seconds";
    let mut out = format!(
        "# HELP {name} Time spent in each pipeline stage (embed, store, llm, rank)\n# TYPE {name} histogram\n"
    );
    let Ok(h) = STAGE_LATENCY.lock() else {
        return out;
    };
    for (stage, (buckets, count, sum)) in h.iter() {
        let labels = format!("stage=\"{stage}\"");
        for (b, le) in buckets.iter().zip(STAGE_BUCKETS) {
            out.push_str(&format!("{name}_bucket{{{labels},le=\"{le}\"}} {b}\n"));
        }
        out.push_str(&format!("{name}_bucket{{{labels},le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!(
            "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 0.5), 50.0);
        assert_eq!(nearest_rank(&v, 0.99), 99.0);
        assert_eq!(nearest_rank(&[3.0], 0.99), 3.0);
        assert_eq!(nearest_rank(&[], 0.99), 0.0);
    }
}
