//! What LLM calls cost: tokens, latency, retries, cache hits and money, per provider and model.
//!
//! Every call records here (and in its `llm.call` tracing span). The counters live for the
//! process and render in Prometheus' text format, which the API's `/metrics` route exports.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use super::ChatResponse;

pub use crate::config::Price;

/// Totals for one (provider, model).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub calls: u64,
    pub cache_hits: u64,
    pub retries: u64,
    pub repairs: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: f64,
    pub cost_usd: f64,
}

static TOTALS: Mutex<BTreeMap<(String, String), Totals>> = Mutex::new(BTreeMap::new());

/// Count one answered call; `cost_usd` from the price table (0 for local models and hits).
pub fn record(response: &ChatResponse, cost_usd: f64) {
    tracing::info!(
        provider = %response.provider,
        model = %response.model,
        prompt_tokens = response.usage.prompt_tokens,
        completion_tokens = response.usage.completion_tokens,
        latency_ms = response.latency_ms,
        retries = response.retries,
        cache_hit = response.cache_hit,
        cost_usd,
        "llm call"
    );
    let Ok(mut totals) = TOTALS.lock() else {
        return;
    };
    let t = totals
        .entry((response.provider.clone(), response.model.clone()))
        .or_default();
    t.calls += 1;
    t.cache_hits += u64::from(response.cache_hit);
    t.retries += response.retries as u64;
    t.repairs += u64::from(response.repaired);
    t.prompt_tokens += response.usage.prompt_tokens as u64;
    t.completion_tokens += response.usage.completion_tokens as u64;
    t.latency_ms += response.latency_ms;
    t.cost_usd += cost_usd;
}

/// A copy of the totals so far.
pub fn snapshot() -> BTreeMap<(String, String), Totals> {
    TOTALS.lock().map(|t| t.clone()).unwrap_or_default()
}

/// The totals as Prometheus text exposition.
pub fn prometheus() -> String {
    let snap = snapshot();
    let mut out = String::new();
    type Metric = (&'static str, &'static str, fn(&Totals) -> f64);
    let metrics: [Metric; 8] = [
        ("signaldesk_llm_calls_total", "LLM calls answered", |t| {
            t.calls as f64
        }),
        (
            "signaldesk_llm_cache_hits_total",
            "LLM calls served from the response cache",
            |t| t.cache_hits as f64,
        ),
        (
            "signaldesk_llm_retries_total",
            "HTTP retries of LLM calls",
            |t| t.retries as f64,
        ),
        (
            "signaldesk_llm_repairs_total",
            "schema repair rounds",
            |t| t.repairs as f64,
        ),
        ("signaldesk_llm_prompt_tokens_total", "prompt tokens", |t| {
            t.prompt_tokens as f64
        }),
        (
            "signaldesk_llm_completion_tokens_total",
            "completion tokens",
            |t| t.completion_tokens as f64,
        ),
        (
            "signaldesk_llm_latency_seconds_total",
            "summed call latency",
            |t| t.latency_ms / 1e3,
        ),
        (
            "signaldesk_llm_cost_usd_total",
            "cost from the configured price table",
            |t| t.cost_usd,
        ),
    ];
    for (name, help, get) in metrics {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for ((provider, model), t) in &snap {
            out.push_str(&format!(
                "{name}{{provider=\"{}\",model=\"{}\"}} {}\n",
                escape(provider),
                escape(model),
                get(t)
            ));
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
