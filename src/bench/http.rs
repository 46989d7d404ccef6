//! An open-loop load generator for the API (`signaldesk bench http`): requests start at a fixed
//! rate whatever the server's latency (a closed loop would slow down with the server and hide
//! its queueing), each request's latency is measured from its scheduled start (so a stalled
//! client or server cannot hide delays: no coordinated omission), and inputs are taken in turn
//! from a file so that no answer is served from a cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

/// The route a run loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LoadRoute {
    /// `GET /v1/search?q=...&mode=dense&k=10`; inputs `{"q"}`.
    Search,
    /// `POST /v1/recommend {"user", "k": 10}`; inputs `{"user"}`.
    Recommend,
    /// `POST /v1/tag` with one item; inputs `{"title"?, "body"}`.
    Tag,
}

/// One run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// The server, `http://host:port`.
    pub url: String,
    pub key: String,
    pub route: LoadRoute,
    /// Requests started per second.
    pub rate: f64,
    pub duration: Duration,
    /// Inputs, one JSON object each, used in turn from `start`.
    pub inputs: Vec<Value>,
    /// Where in `inputs` this run starts (consecutive runs continue where the last stopped).
    pub start: usize,
    /// Most requests in flight; a request due beyond it is counted as dropped (an error).
    pub max_in_flight: usize,
}

/// What a run measured. Latencies are in milliseconds from each request's scheduled start.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub route: LoadRoute,
    pub rate: f64,
    pub seconds: f64,
    pub sent: usize,
    pub ok: usize,
    /// Non-2xx answers by status, transport failures as status 0, dropped requests as 1.
    pub errors: BTreeMap<u16, usize>,
    pub achieved_rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LoadReport {
    /// Requests that did not get a 2xx.
    pub fn error_count(&self) -> usize {
        self.errors.values().sum()
    }
}

/// Errors preparing a run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("input {0}: {1}")]
    Input(usize, String),
    #[error("no inputs")]
    NoInputs,
    #[error("the rate must be positive")]
    Rate,
}

fn request_of(
    client: &reqwest::Client,
    plan: &LoadPlan,
    input: &Value,
) -> Result<reqwest::RequestBuilder, String> {
    let base = plan.url.trim_end_matches('/');
    Ok(match plan.route {
        LoadRoute::Search => {
            let q = input["q"].as_str().ok_or("no \"q\" string")?;
            client.get(format!("{base}/v1/search")).query(&[
                ("q", q),
                ("mode", "dense"),
                ("k", "10"),
            ])
        }
        LoadRoute::Recommend => {
            let user = input["user"].as_str().ok_or("no \"user\" string")?;
            client
                .post(format!("{base}/v1/recommend"))
                .json(&json!({"user": user, "k": 10}))
        }
        LoadRoute::Tag => {
            if !input.is_object() {
                return Err("not an object".into());
            }
            client.post(format!("{base}/v1/tag")).json(input)
        }
    }
    .bearer_auth(&plan.key))
}

/// Run `plan`: requests start every `1 / rate` seconds for `duration`, then the run waits for
/// the last answers.
pub async fn run(plan: &LoadPlan) -> Result<LoadReport, LoadError> {
    if plan.inputs.is_empty() {
        return Err(LoadError::NoInputs);
    }
    if !plan.rate.is_finite() || plan.rate <= 0.0 {
        return Err(LoadError::Rate);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.max_in_flight)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain HTTP client builds");
    let total = (plan.rate * plan.duration.as_secs_f64()).round() as usize;
    let mut requests = Vec::with_capacity(total);
    for i in plan.start..plan.start + total {
        let input = &plan.inputs[i % plan.inputs.len()];
        requests.push(
            request_of(&client, plan, input)
                .map_err(|e| LoadError::Input(i % plan.inputs.len() + 1, e))?,
        );
    }
    let in_flight = Arc::new(tokio::sync::Semaphore::new(plan.max_in_flight.max(1)));
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    let mut handles = Vec::with_capacity(total);
    let mut dropped = 0usize;
    for (i, request) in requests.into_iter().enumerate() {
        let due = started + period.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        handles.push(tokio::spawn(async move {
            let status = match request.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    // The whole body is part of the answer.
                    let _ = r.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            drop(permit);
            (status, due.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(handles.len());
    let mut errors: BTreeMap<u16, usize> = BTreeMap::new();
    let mut ok = 0;
    for h in handles {
        let (status, latency) = h.await.expect("a request task never panics");
        if (200..300).contains(&status) {
            ok += 1;
        } else {
            *errors.entry(status).or_default() += 1;
        }
        latencies.push(latency.as_secs_f64() * 1000.0);
    }
    if dropped > 0 {
        errors.insert(1, dropped);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| crate::observe::nearest_rank(&latencies, q);
    Ok(LoadReport {
        route: plan.route,
        rate: plan.rate,
        seconds,
        sent: latencies.len(),
        ok,
        errors,
        achieved_rps: latencies.len() as f64 / plan.duration.as_secs_f64(),
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
    })
}

/// Run `plan` at each of `rates` in turn, inputs continuing where the last rate stopped;
/// `on_report` sees each rate's report as it lands, and `on_wrap(inputs, needed)` is told when
/// the inputs run out and start to repeat (answers may then come from caches). Returns the
/// highest rate whose p99 stayed under `p99_ms` with no errors, when a target is given.
pub async fn run_rates(
    mut plan: LoadPlan,
    rates: &[f64],
    p99_ms: Option<f64>,
    mut on_report: impl FnMut(&LoadReport),
    mut on_wrap: impl FnMut(usize, usize),
) -> Result<Option<f64>, LoadError> {
    let mut best: Option<f64> = None;
    for &rate in rates {
        plan.rate = rate;
        let needed = (rate * plan.duration.as_secs_f64()).round() as usize;
        if plan.start + needed > plan.inputs.len() {
            on_wrap(plan.inputs.len(), plan.start + needed);
        }
        let report = run(&plan).await?;
        plan.start += needed;
        on_report(&report);
        if p99_ms.is_some_and(|t| report.p99_ms < t && report.error_count() == 0) {
            best = Some(best.map_or(rate, |b: f64| b.max(rate)));
        }
    }
    Ok(best)
}
