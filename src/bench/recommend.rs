//! `signaldesk bench recommend`: warm, in-process recommend latency on MovieLens.
//!
//! Prepares as `eval recommend` does (movies ingested and tagged, skipped when current), trains
//! the blend on all ratings, then times the recommender's `recommend` end to end, one call at a
//! time, users taken in a fixed stride so that consecutive calls rarely share a user.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::embed::Embedder;
use crate::eval::recommend::{prepare, RecommendEvalError};
use crate::observe::nearest_rank;
use crate::rank::recommender::{RankerKind, RecommendRequest, Recommender};
use crate::rank::signals::InteractionSignals;
use crate::rank::RankError;
use crate::store::VectorStore;
use crate::Config;

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum RecommendBenchError {
    #[error("calls must be at least 1")]
    NoCalls,
    #[error(transparent)]
    Prepare(#[from] RecommendEvalError),
    #[error(transparent)]
    Rank(#[from] RankError),
    #[error("no recommendations for user {0}")]
    Empty(String),
}

/// The measured latencies.
#[derive(Debug, Clone, Serialize)]
pub struct RecommendBench {
    pub calls: usize,
    pub users: usize,
    pub items: usize,
    pub k: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub calls_per_s: f64,
    pub backend: &'static str,
    pub model: String,
}

/// Time `calls` blend recommendations of `k` items (after 50 untimed warm-up calls);
/// `on_progress(done)` after each timed call.
#[allow(clippy::too_many_arguments)]
pub async fn bench_recommend<S: VectorStore>(
    store: &S,
    embedder: Arc<Embedder>,
    config: &Config,
    dataset: &Path,
    taxonomy: &Path,
    calls: usize,
    k: usize,
    mut on_progress: impl FnMut(usize),
) -> Result<RecommendBench, RecommendBenchError> {
    if calls == 0 {
        return Err(RecommendBenchError::NoCalls);
    }
    let prepared = prepare(store, embedder, config, dataset, taxonomy, |_, _, _| {}).await?;
    let model = crate::rank::train_blend(
        store,
        &prepared.collection,
        &prepared.catalogue,
        &prepared.events,
        &config.rank,
        &[],
        |_, _| {},
    )
    .await?;
    let signals = InteractionSignals::build(&prepared.events, &prepared.catalogue, &config.rank);
    let mut users: Vec<String> = signals.users.keys().cloned().collect();
    users.sort();
    let recommender = Recommender {
        store,
        collection: prepared.collection.clone(),
        catalogue: prepared.catalogue,
        signals,
        settings: config.rank.clone(),
    };
    let mut request = RecommendRequest {
        user: String::new(),
        k,
        seed: None,
        ranker: RankerKind::Blend,
        model: Some(&model),
        objectives: config.rank.objectives.clone(),
        now: None,
        history: None,
    };
    // Warm-up: one pass over some users, not timed.
    for u in users.iter().take(50) {
        request.user = u.clone();
        recommender.recommend(&request).await?;
    }
    let mut millis = Vec::with_capacity(calls);
    let started = std::time::Instant::now();
    for i in 0..calls {
        request.user = users[(i * 7919) % users.len()].clone();
        let t = std::time::Instant::now();
        let list = recommender.recommend(&request).await?;
        millis.push(t.elapsed().as_secs_f64() * 1e3);
        if list.is_empty() {
            return Err(RecommendBenchError::Empty(request.user.clone()));
        }
        on_progress(i + 1);
    }
    let total = started.elapsed().as_secs_f64();
    millis.sort_by(f64::total_cmp);
    Ok(RecommendBench {
        calls,
        users: users.len(),
        items: recommender.catalogue.len(),
        k,
        p50_ms: nearest_rank(&millis, 0.50),
        p90_ms: nearest_rank(&millis, 0.90),
        p99_ms: nearest_rank(&millis, 0.99),
        max_ms: millis[millis.len() - 1],
        mean_ms: millis.iter().sum::<f64>() / millis.len() as f64,
        calls_per_s: calls as f64 / total,
        backend: store.backend(),
        model: model.version,
    })
}
