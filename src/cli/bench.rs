//! `signaldesk bench embed|llm|http|recommend|store`: the README's speed and memory figures,
//! each measured by the library's [`signaldesk::bench`] on the code path users run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;
use signaldesk::bench::embed::{compare_precisions, load_texts};
use signaldesk::bench::http::{run_rates, LoadPlan};
use signaldesk::bench::recommend::bench_recommend;
use signaldesk::bench::store::{
    markdown_table, read_rows, scale_curve, scale_series, CurveEvent, CurveOptions,
};
use signaldesk::config::EmbedPrecision;
use signaldesk::embed::{CpuFeatures, EmbedderOptions};
use signaldesk::eval::smoke;
use signaldesk::ingest::InputFile;
use signaldesk::store::AnyStore;
use signaldesk::{Config, Embedder};

use super::output::{read_jsonl_objects, Progress, StagedProgress};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Open-loop load on a running `signaldesk serve`: requests start at a fixed rate for a
    /// fixed time whatever the latency, each timed from its scheduled start.
    ///
    /// Inputs (JSONL) are used in turn: {"q"} for search (dense, k 10), {"user"} for recommend
    /// (k 10), an item {"title", "body"} for tag. Give more inputs than requests so that no
    /// answer comes from a cache. Prints one line per rate: achieved rate, p50/p90/p99/max and
    /// errors by status; with --p99-ms, also the highest rate whose p99 met it with no errors.
    Http {
        /// The server, http://HOST:PORT.
        #[arg(long)]
        url: String,
        /// An API key with the read scope.
        #[arg(long, env = "BENCH_API_KEY", hide_env_values = true)]
        key: String,
        /// The route loaded (inputs as described above).
        #[arg(long, value_enum)]
        route: signaldesk::bench::http::LoadRoute,
        /// Requests per second; several (comma-separated) run one after another.
        #[arg(long, value_delimiter = ',', required = true)]
        rate: Vec<f64>,
        /// Seconds per rate.
        #[arg(long, default_value_t = 60.0)]
        duration_s: f64,
        /// JSONL inputs, one request's each, used in turn.
        #[arg(long)]
        inputs: PathBuf,
        /// Most requests in flight; later ones are dropped and counted as errors.
        #[arg(long, default_value_t = 2048)]
        max_in_flight: usize,
        /// The p99 target in milliseconds, for the summary line.
        #[arg(long)]
        p99_ms: Option<f64>,
        /// One JSON object per rate instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Warm, in-process recommend latency on MovieLens: p50/p99/mean over --calls calls with
    /// users taken in turn (the blend ranker, rank.* as configured, no exposure logging).
    ///
    /// Prepares as `eval recommend` does (movies ingested and tagged in data_dir/eval, skipped
    /// when current), trains the blend on all ratings, then times `recommend` end to end.
    Recommend {
        /// Dataset directory with movies.csv and ratings.csv.
        #[arg(long, default_value = "golden-datasets/movielens")]
        dataset: PathBuf,
        /// The taxonomy the movies are tagged against (zero-shot, as `eval recommend`).
        #[arg(
            long,
            default_value = "golden-datasets/iab-content-taxonomy/content_taxonomy_3.1.tsv"
        )]
        taxonomy: PathBuf,
        /// Recommend calls timed (after 50 untimed warm-up calls).
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
        /// Items per list.
        #[arg(long, short, default_value_t = 10)]
        k: usize,
        /// Print one JSON object instead of the line.
        #[arg(long)]
        json: bool,
    },
    /// The vector store's scale curve: upsert throughput, indexing time, search p50/p99 at k,
    /// recall@k against exact search, memory and disk, at each size and quantization.
    ///
    /// Points are synthetic but shaped like real embeddings: copies of the --base vectors (JSONL
    /// with a "vector" per line, such as `signaldesk embed` writes) with Gaussian noise,
    /// renormalised; no model runs. Each configuration builds a collection
    /// `bench-scale-<points>-<quantization>` in the configured store (store.backend, store.url;
    /// Edge under data_dir/bench), with the layout a user's ingest gets (store.shards, ...,
    /// quantization as given here) and search.hnsw_ef as configured, indexes it, queries it one
    /// query at a time after a warm-up pass, and drops it. scripts/bench-store.sh runs the whole
    /// curve on both backends.
    Store {
        #[command(flatten)]
        curve: CurveOptions,
        /// After the runs, draw every row of --output (earlier runs' too) as the scale-curve
        /// PNG here, and print them all as the table.
        #[arg(long, requires = "output")]
        plot: Option<PathBuf>,
        /// Measure nothing: draw and print the rows already in --output (needs --plot).
        #[arg(long, requires = "plot")]
        plot_only: bool,
    },
    /// Embedding throughput: docs/s and tokens/s (input ids after truncation, special tokens
    /// included, padding excluded), without the embedding cache.
    Embed {
        /// JSONL input (default: the bundled SciFact sample).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Field holding the text (default: title + "\n" + body, else text).
        #[arg(long)]
        text_field: Option<String>,
        /// Use only the first N documents.
        #[arg(long)]
        limit: Option<usize>,
        /// Precisions to run, comma-separated (default: embed.precision). With several, rounds
        /// alternate between them and each is compared with the first by cosine, text by text.
        #[arg(long, value_enum, value_delimiter = ',')]
        precision: Vec<EmbedPrecision>,
        /// Timed passes per precision; min/median/max are reported.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Print one JSON object per precision: {precision, kernel, docs, tokens, seconds,
        /// docs_per_s, tokens_per_s (the median round), tokens_per_s_min, tokens_per_s_max,
        /// rounds, cosine_to_first}.
        #[arg(long)]
        json: bool,
    },
    /// Local LLM speed: prompt processing and generation, tokens/s (medians over rounds).
    Llm {
        /// Prompt length in tokens (chat template included).
        #[arg(long, default_value_t = 500)]
        prompt_tokens: usize,
        /// Tokens to generate (fewer if the model ends its answer first).
        #[arg(long, default_value_t = 128)]
        gen_tokens: usize,
        /// Measurements to take; the medians are reported (at least 1).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The prompt path's arithmetic (default: llm.local_precision): fp32 (dequantized
        /// weights) or int8 (the embedder's int8 GEMM); auto: int8 where the CPU has int8 dot
        /// products
        #[arg(long, value_enum)]
        precision: Option<EmbedPrecision>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// `signaldesk bench ...`.
pub fn run(config: &Config, cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Embed {
            input,
            text_field,
            limit,
            precision,
            rounds,
            json,
        } => embed(config, input, text_field, limit, precision, rounds, json),
        BenchCommand::Llm {
            prompt_tokens,
            gen_tokens,
            rounds,
            precision,
            json,
        } => {
            anyhow::ensure!(rounds >= 1, "--rounds must be at least 1");
            anyhow::ensure!(gen_tokens >= 1, "--gen-tokens must be at least 1");
            let path = config.models_dir.join(&config.llm.local_model);
            let precision = signaldesk::llm::local::LocalLlm::configured_precision(
                config,
                precision.unwrap_or(config.llm.local_precision),
            )?;
            let r =
                signaldesk::bench::llm::run(&path, precision, prompt_tokens, gen_tokens, rounds)?;
            if json {
                outln!("{}", serde_json::to_string(&r)?);
            } else {
                outln!(
                    "model              {} (prompts in {})",
                    r.model,
                    r.precision
                );
                outln!("load               {:.2} s", r.load_seconds);
                outln!(
                    "prompt             {} tokens, {:.0} tokens/s",
                    r.prompt_tokens,
                    r.prompt_tokens_per_s
                );
                outln!(
                    "generation         {} tokens, {:.1} tokens/s",
                    r.generated_tokens,
                    r.generation_tokens_per_s
                );
                outln!(
                    "constrained        {:.1} tokens/s (JSON schema via llguidance; {:+.1}% time per token)",
                    r.constrained_generation_tokens_per_s,
                    r.constrained_overhead * 100.0
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Http {
            url,
            key,
            route,
            rate,
            duration_s,
            inputs,
            max_in_flight,
            p99_ms,
            json,
        } => {
            let inputs = read_jsonl_objects(&inputs)?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            let plan = LoadPlan {
                url,
                key,
                route,
                rate: 0.0,
                duration: std::time::Duration::from_secs_f64(duration_s.max(0.1)),
                inputs,
                start: 0,
                max_in_flight,
            };
            super::runtime()?.block_on(http(plan, &rate, p99_ms, json))
        }
        BenchCommand::Recommend {
            dataset,
            taxonomy,
            calls,
            k,
            json,
        } => super::runtime()?.block_on(recommend(config, &dataset, &taxonomy, calls, k, json)),
        store @ BenchCommand::Store { .. } => {
            super::runtime()?.block_on(store_curve(config, store))
        }
    }
}

async fn http(plan: LoadPlan, rates: &[f64], p99_ms: Option<f64>, json: bool) -> Result<ExitCode> {
    let duration = plan.duration.as_secs_f64();
    let mut failed = None;
    let best = run_rates(
        plan,
        rates,
        p99_ms,
        |r| {
            let line = if json {
                serde_json::to_string(r).map_err(anyhow::Error::from)
            } else {
                Ok(format!(
                    "{:?} at {}/s for {duration:.0} s: {} sent, {:.1}/s achieved, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, errors {:?}",
                    r.route, r.rate, r.sent, r.achieved_rps, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.errors
                ))
            };
            let written = line.and_then(|l| Ok(writeln!(std::io::stdout().lock(), "{l}")?));
            if let Err(e) = written {
                failed.get_or_insert(e);
            }
        },
        |inputs, needed| {
            eprintln!(
                "bench http: warning: {inputs} inputs for {needed} requests so far; inputs repeat from here"
            )
        },
    )
    .await?;
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some(target) = p99_ms {
        match best {
            Some(rate) => {
                eprintln!("bench http: highest rate with p99 < {target} ms and no errors: {rate}/s")
            }
            None => eprintln!("bench http: no rate met p99 < {target} ms with no errors"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn recommend(
    config: &Config,
    dataset: &Path,
    taxonomy: &Path,
    calls: usize,
    k: usize,
    json: bool,
) -> Result<ExitCode> {
    let embedder = Arc::new(Embedder::from_config(config)?);
    let store = AnyStore::open_for_eval(config)?;
    let bar = Progress::new("bench recommend", Some(calls as u64), "calls");
    let r = bench_recommend(&store, embedder, config, dataset, taxonomy, calls, k, |n| {
        bar.set_position(n as u64)
    })
    .await?;
    bar.finish();
    if json {
        outln!("{}", serde_json::to_string(&r)?);
    } else {
        outln!(
            "recommend, k = {k}, {} items, {} users, {calls} calls: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, mean {:.2} ms ({:.0} calls/s, one at a time)",
            r.items, r.users, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.mean_ms, r.calls_per_s
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `signaldesk bench store`: see [`BenchCommand::Store`].
async fn store_curve(config: &Config, command: BenchCommand) -> Result<ExitCode> {
    let BenchCommand::Store {
        curve: options,
        plot,
        plot_only,
    } = command
    else {
        unreachable!("store_curve is called with BenchCommand::Store")
    };
    let (k, noise, queries) = (options.k, options.noise, options.queries);
    let output = options.rows_file.clone();
    if let (true, Some(path), Some(output)) = (plot_only, &plot, &output) {
        return plot_rows(output, path);
    }
    let progress = StagedProgress::new(None, "points");
    let mut stage_seen = String::new();
    let rows = scale_curve(config, &options, |event| match event {
        CurveEvent::Base { vectors, dimension } => eprintln!(
            "bench store: {vectors} base vectors of dimension {dimension}, noise {noise}, {queries} queries, k {k}"
        ),
        CurveEvent::Exact { done, total } => {
            progress.set_with_total("exact top-k", done as u64, Some(total as u64))
        }
        CurveEvent::Stage { label, stage, done, total } => {
            if stage != stage_seen {
                stage_seen = stage.to_string();
                eprintln!("{label}: {stage}");
            }
            if stage == "upsert" {
                progress.set_with_total(label, done as u64, Some(total as u64));
            }
        }
        CurveEvent::Row { label, row } => eprintln!(
            "{label} ({}): {:.0} points/s, index {:.1} s, p50 {:.2} ms, p99 {:.2} ms, recall@{k} {:.4}",
            row.settings(),
            row.upsert_points_per_s,
            row.index_s,
            row.search_p50_ms,
            row.search_p99_ms,
            row.recall
        ),
    })
    .await?;
    drop(progress);
    let Some((path, output)) = plot.zip(output) else {
        out!("{}", markdown_table(&rows));
        return Ok(ExitCode::SUCCESS);
    };
    plot_rows(&output, &path)
}

/// Print every row of `output` as the scale table and draw them as the PNG at `path`.
fn plot_rows(output: &Path, path: &Path) -> Result<ExitCode> {
    let all = read_rows(output)?;
    out!("{}", markdown_table(&all));
    signaldesk::eval::plot::scale_curve(&scale_series(&all), path)?;
    eprintln!(
        "bench store: plot of {} rows written to {}",
        all.len(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `signaldesk bench embed`: every requested precision over the same texts, alternated.
fn embed(
    config: &Config,
    input: Option<PathBuf>,
    text_field: Option<String>,
    limit: Option<usize>,
    precision: Vec<EmbedPrecision>,
    rounds: usize,
    json: bool,
) -> Result<ExitCode> {
    anyhow::ensure!(rounds >= 1, "--rounds must be at least 1");
    let path = input.unwrap_or_else(|| PathBuf::from(smoke::SAMPLE_PATH));
    let (texts, skipped) = load_texts(InputFile::open(&path)?, text_field.as_deref(), limit)?;
    anyhow::ensure!(!texts.is_empty(), "{}: no usable texts", path.display());
    if skipped > 0 {
        eprintln!(
            "bench: skipped {skipped} unusable lines of {}",
            path.display()
        );
    }
    let precisions = if precision.is_empty() {
        vec![config.embed.precision]
    } else {
        precision
    };
    let embedders = precisions
        .iter()
        .map(|&precision| {
            let options = EmbedderOptions {
                cache_path: None,
                precision,
                ..EmbedderOptions::from_config(config)
            };
            Embedder::load(&config.embed_model_dir(), options)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let runs = compare_precisions(&embedders, &texts, rounds)?;
    if json {
        for run in &runs {
            outln!("{}", serde_json::to_string(run)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    outln!("model       {}", embedders[0].model_id());
    let cpu = CpuFeatures::detect().masked(&config.embed.cpu_features_off);
    outln!("cpu         {}", cpu.names().join(" "));
    outln!(
        "texts       {} docs, {} tokens, {rounds} round(s) each",
        runs[0].median.docs,
        runs[0].median.tokens
    );
    outln!(
        "{:<10} {:>10} {:>10} {:>10} {:>12}  kernel",
        "precision",
        "min tok/s",
        "median",
        "max",
        "min cosine"
    );
    for run in &runs {
        let cosine = run
            .cosine_to_first
            .as_ref()
            .map_or("-".to_string(), |c| format!("{:.5}", c.min));
        outln!(
            "{:<10} {:>10.0} {:>10.0} {:>10.0} {:>12}  {}",
            run.precision,
            run.tokens_per_s_min,
            run.median.tokens_per_s,
            run.tokens_per_s_max,
            cosine,
            run.kernel.as_deref().unwrap_or("gemm f32")
        );
    }
    Ok(ExitCode::SUCCESS)
}
