//! `signaldesk eval ...` and `signaldesk pipeline`: the suites (in [`suites`]), the gate's
//! run / compare / accept, and the main job's smoke check.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use signaldesk::embed::LoadedEmbedders;
use signaldesk::eval::gate::{accept, compare_dirs, run_suites, SuiteList};
use signaldesk::eval::retrieval::BeirDataset;
use signaldesk::eval::smoke;
use signaldesk::store::AnyStore;
use signaldesk::{Config, Embedder};

use super::output::{count_records, Progress};

use super::eval_suites as suites;

#[derive(Subcommand)]
pub enum EvalCommand {
    #[command(flatten)]
    Suite(Suite),
    /// Run every suite a suite list names (eval/ci.toml), in one process that shares the loaded
    /// embedding model and the embedding cache.
    ///
    /// Each suite is the `signaldesk eval` command its `args` give, run exactly as a user runs
    /// it, with its report written to OUTPUT/<name>.json (+ .md and plots). Then writes
    /// OUTPUT/report.md, the combined report (each suite's metrics beside the outside
    /// references and the baseline), and prints it. Exits 1 when a suite fails to run; whether
    /// the figures are good enough is `eval compare`'s question.
    Run(EvalRunArgs),
    /// The CI gate: compare current reports with baselines, metric by metric, with a paired
    /// bootstrap over each report's per-item data (2,000 resamples, fixed seed).
    ///
    /// Prints a before/after table. Exits 1 when a metric falls below its floor, or falls by
    /// more than its tolerance (both from the suite list) and the fall is significant at 95%
    /// (the interval of the change lies below zero); each failure is named with its suite,
    /// metric, drop and interval. A fall within tolerance, or one the test cannot tell from
    /// noise, passes.
    Compare(EvalCompareArgs),
    /// Promote current reports to baselines (for an intended change of figures): copies each
    /// listed suite's report, markdown and plots into the baseline directory.
    Accept(EvalAcceptArgs),
}

/// One eval suite: the commands `eval run` runs from a suite list (eval/ci.toml).
#[derive(Subcommand)]
pub enum Suite {
    /// Retrieval quality on a BEIR-layout dataset (corpus, queries, qrels/SPLIT.tsv).
    ///
    /// Ingests the corpus into a fresh collection with the configured ingest settings (the
    /// code `signaldesk ingest` runs), searches every query of the split through the code
    /// `signaldesk search` runs, with the configured `search.*` settings, and writes a report
    /// (JSON + markdown beside it) with nDCG@10, recall@100, MRR@10, MAP@10, P@10 and per-query
    /// values.
    Retrieval(suites::EvalRetrievalArgs),
    /// Tagging quality on a labelled dataset (train.jsonl and test.jsonl with labels[]).
    ///
    /// The training documents are ingested into a labelled memory collection (memory-<dataset>,
    /// the code `signaldesk ingest` runs) and every test document is tagged by the kNN tagger
    /// through the code `signaldesk search` runs. k and the threshold are tuned on a 1,500-document
    /// validation split of train (seed 0, leave-one-out) unless --no-tune, which takes
    /// enrich.knn. Writes micro/macro P/R/F1, per-label scores and per-item TP/FP/FN (JSON +
    /// markdown beside it).
    Tagging(suites::EvalTaggingArgs),
    /// Summary quality on FRANK (frank_articles.jsonl[.gz]: CNN/DailyMail and XSum articles
    /// with reference summaries).
    ///
    /// Summarizes every article with lead-3 and the extractive summarizer (the most central
    /// sentences by embedding, within enrich.summary.max_words) and writes ROUGE-1/2/L F1 per
    /// summarizer and source (rouge-score's rules, Porter stemming), mean lengths and the share
    /// within the word limit, with every summary kept for checking (JSON + markdown beside it).
    Summaries(suites::EvalSummariesArgs),
    /// Recommendation quality on MovieLens (movies.csv, ratings.csv; ml-latest-small).
    ///
    /// The chain as the product runs it: movies (title + genres) are ingested as content,
    /// tagged by the zero-shot tagger against the IAB taxonomy (`enrich`'s code), read back as
    /// the catalogue; ratings >= rank.positive_rating are positives. Per user with >= 5
    /// positives, the last 20% (by time) are test and that user's later events leave training.
    /// The blend is trained on training interactions only (an inner split, as `rank train`).
    /// Reports nDCG@10, P@10, recall@10/50, MRR, coverage and diversity for popularity,
    /// co-occurrence, dense and the blend, an ablation without tag features, a diversity sweep
    /// over MMR λ (with a PNG plot beside the report) and outside references
    /// (DATASET/references.json, from scripts/recommend_reference.py).
    Recommend(suites::EvalRecommendArgs),
    /// Claim verification over SciFact: the chain `signaldesk verify` runs, with SciFact's own
    /// metrics (Wadden et al. 2020, section 4).
    ///
    /// The corpus is ingested (once, as `eval retrieval` ingests it); every tuning and evaluation
    /// claim (CLAIMS/tune.jsonl, CLAIMS/eval.jsonl) is verified through the same library function
    /// as `signaldesk verify`; the evaluation claims are scored with abstract-level label-only
    /// and label+rationale P/R/F1, sentence-level selection and selection+label P/R/F1, and
    /// NOT_ENOUGH_INFO precision/recall, beside two baselines on the same retrieval (the top-1
    /// hit labelled SUPPORT, and the same abstaining below a search score tuned on the tuning
    /// claims) and the chain given the gold abstracts. answer.threshold is tuned on the tuning
    /// claims (and evaluated with, unless --no-tune).
    Grounded(suites::EvalGroundedArgs),
}

#[derive(Args)]
pub struct EvalRunArgs {
    /// The suite list.
    #[arg(default_value = "eval/ci.toml")]
    suites: PathBuf,
    /// Directory for the reports.
    #[arg(long, short, default_value = "eval/reports")]
    output: PathBuf,
    /// Run only these suites (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Baselines shown beside the figures in the combined report (skipped when absent).
    #[arg(long, default_value = "eval/baselines")]
    baselines: PathBuf,
}

#[derive(Args)]
pub struct EvalCompareArgs {
    /// Directory of baseline reports (<suite>.json).
    baseline: PathBuf,
    /// Directory of current reports, as `eval run --output` wrote them.
    current: PathBuf,
    /// The suite list holding each metric's tolerance and floor.
    #[arg(long, default_value = "eval/ci.toml")]
    suites: PathBuf,
    /// Compare only these suites (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Print the comparison as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EvalAcceptArgs {
    /// Directory of current reports.
    #[arg(default_value = "eval/reports")]
    current: PathBuf,
    /// Where baselines live.
    #[arg(long, default_value = "eval/baselines")]
    baselines: PathBuf,
    /// The suite list (which suites to promote).
    #[arg(long, default_value = "eval/ci.toml")]
    suites: PathBuf,
    /// Promote only these suites (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Args)]
pub struct PipelineArgs {
    /// Reference sample to embed and check.
    #[arg(long, default_value = smoke::SAMPLE_PATH)]
    sample: PathBuf,
    /// BEIR dataset for the retrieval stage.
    #[arg(long, default_value = smoke::RETRIEVAL_DATASET)]
    dataset: PathBuf,
    /// Skip the retrieval stage (ingest + search + eval), which embeds the whole corpus on a
    /// cold cache (about 3 minutes on 2 cores).
    #[arg(long)]
    no_retrieval: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `signaldesk eval ...`.
pub fn run(config: &Config, cmd: EvalCommand) -> Result<ExitCode> {
    match cmd {
        EvalCommand::Suite(suite) => {
            let embedders = LoadedEmbedders::default();
            super::runtime()?.block_on(run_suite(config, suite, &embedders))
        }
        EvalCommand::Run(args) => super::runtime()?.block_on(eval_run(config, args)),
        EvalCommand::Compare(args) => eval_compare(args),
        EvalCommand::Accept(args) => eval_accept(args),
    }
}

/// A suite list's `args`, parsed as the `signaldesk eval` suite command they name.
#[derive(Parser)]
#[command(name = "signaldesk eval", no_binary_name = true)]
struct SuiteArgv {
    #[command(subcommand)]
    suite: Suite,
}

async fn eval_run(config: &Config, args: EvalRunArgs) -> Result<ExitCode> {
    let list = SuiteList::load(&args.suites)?;
    let suites = list.select(&args.only).map_err(anyhow::Error::msg)?;
    let baselines = Some(args.baselines.as_path()).filter(|d| d.is_dir());
    // One embedding model for every suite of the run.
    let embedders = LoadedEmbedders::default();
    let total = suites.len();
    let gate = run_suites(&suites, &args.output, baselines, |i, spec, out| {
        let embedders = &embedders;
        async move {
            eprintln!(
                "== suite {}/{total}: {} (signaldesk eval {} --output {})",
                i + 1,
                spec.name,
                spec.args.join(" "),
                out.display()
            );
            let started = std::time::Instant::now();
            let mut argv = spec.args.clone();
            argv.extend(["--output".to_string(), out.display().to_string()]);
            let outcome = match (
                SuiteArgv::try_parse_from(&argv),
                config.with_overrides(&spec.config),
            ) {
                (_, Err(e)) => Err(format!("the suite's config: {e}")),
                (Err(e), _) => Err(format!("args do not parse: {e}")),
                (Ok(parsed), Ok(config)) => {
                    match Box::pin(run_suite(&config, parsed.suite, embedders)).await {
                        Ok(code) if code == ExitCode::SUCCESS => Ok(()),
                        Ok(_) => {
                            Err("the suite's command exited with a failure (see above)".into())
                        }
                        Err(e) => Err(super::describe(&e)),
                    }
                }
            };
            let seconds = started.elapsed().as_secs_f64();
            match &outcome {
                Ok(()) => eprintln!("== {} done in {seconds:.1} s", spec.name),
                Err(e) => eprintln!("== {} FAILED after {seconds:.1} s: {e}", spec.name),
            }
            outcome
        }
    })
    .await?;
    outln!("{}", gate.markdown);
    outln!("combined report: {}", gate.combined.display());
    let failed = gate.failed();
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} suite(s) failed: {}",
            failed.len(),
            failed.join(", ")
        );
        Ok(ExitCode::from(1))
    }
}

fn eval_compare(args: EvalCompareArgs) -> Result<ExitCode> {
    let list = SuiteList::load(&args.suites)?;
    let suites = list.select(&args.only).map_err(anyhow::Error::msg)?;
    let outcome = compare_dirs(&suites, &args.baseline, &args.current);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        outln!(
            "eval gate: {} against {} ({} suites)\n",
            args.current.display(),
            args.baseline.display(),
            suites.len()
        );
        outln!("{}", outcome.table());
    }
    let failures = outcome.failures();
    if failures.is_empty() {
        eprintln!("eval gate passed: no metric fell significantly beyond its tolerance");
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        eprintln!(
            "eval gate failed ({} failure(s)); if the change is intended, `signaldesk eval accept {}` promotes these reports",
            failures.len(),
            args.current.display()
        );
        Ok(ExitCode::from(1))
    }
}

fn eval_accept(args: EvalAcceptArgs) -> Result<ExitCode> {
    let list = SuiteList::load(&args.suites)?;
    let suites = list.select(&args.only).map_err(anyhow::Error::msg)?;
    let written = accept(&suites, &args.current, &args.baselines)?;
    for w in &written {
        outln!("{}", w.display());
    }
    eprintln!(
        "{} suite(s) promoted to baselines in {} ({} files); commit them with the change that moved the figures",
        suites.len(),
        args.baselines.display(),
        written.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `signaldesk pipeline`: the smoke check of the main job (parity, then retrieval).
pub fn pipeline(config: &Config, args: PipelineArgs) -> Result<ExitCode> {
    let mut report = smoke::run_parity(config, &args.sample)?;
    if !args.no_retrieval {
        let embedder = Arc::new(Embedder::from_config(config)?);
        let store = AnyStore::from_config(&config.store, &config.data_dir.join("pipeline"))?;
        let corpus = BeirDataset::open(&args.dataset)?.corpus;
        let bar = Progress::new("pipeline: ingest", count_records(&corpus), "documents");
        report.retrieval = Some(super::runtime()?.block_on(smoke::run_retrieval(
            &store,
            embedder.clone(),
            &args.dataset,
            config,
            |n| bar.set_position(n as u64),
        ))?);
        bar.finish();
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_pipeline(&report)?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_pipeline(r: &smoke::PipelineReport) -> Result<()> {
    outln!("signaldesk pipeline report");
    outln!("  model            {} ({} dims)", r.model, r.dimension);
    outln!("  sample           {}", r.sample);
    outln!("  texts embedded   {} ({} tokens)", r.texts, r.tokens);
    match r.tokens_per_s {
        Some(speed) => outln!(
            "  embed time       {:.2} s ({speed:.0} tokens/s)",
            r.embed_seconds
        ),
        None => outln!(
            "  embed time       {:.2} s ({} of {} texts from the embedding cache)",
            r.embed_seconds,
            r.cache_hits,
            r.texts
        ),
    }
    outln!(
        "  parity vs sentence-transformers: min cosine {:.6}, mean {:.6}, below {}: {}",
        r.parity_min_cosine,
        r.parity_mean_cosine,
        smoke::PARITY_MIN_COSINE,
        r.parity_failures
    );
    if let Some(ret) = &r.retrieval {
        outln!(
            "  retrieval        {} on {}: {} items (new {}, unchanged {}, {} tokens embedded) in {:.1} s; {} test queries",
            ret.dataset,
            ret.backend,
            ret.ingest.read,
            ret.ingest.new,
            ret.ingest.unchanged,
            ret.ingest.tokens,
            ret.ingest_seconds,
            ret.queries
        );
        for (mode, m) in &ret.metrics {
            outln!(
                "    {mode:<8} nDCG@10 {:.4}  recall@100 {:.4}  MRR@10 {:.4}",
                m.get("ndcg@10").copied().unwrap_or(0.0),
                m.get("recall@100").copied().unwrap_or(0.0),
                m.get("mrr@10").copied().unwrap_or(0.0)
            );
        }
        outln!(
            "    dense nDCG@10 vs sentence-transformers' {} (+-{}): {}",
            smoke::DENSE_NDCG_REFERENCE,
            smoke::DENSE_NDCG_TOLERANCE,
            if ret.dense_matches_reference {
                "match"
            } else {
                "MISMATCH"
            }
        );
    }
    outln!(
        "  result           {}",
        if r.passed() { "PASS" } else { "FAIL" }
    );
    Ok(())
}

/// Run one suite; `embedders` shares the embedding model between the suites of a run.
async fn run_suite(config: &Config, suite: Suite, embedders: &LoadedEmbedders) -> Result<ExitCode> {
    match suite {
        Suite::Retrieval(args) => suites::retrieval(config, args, embedders).await,
        Suite::Tagging(args) => suites::tagging(config, args, embedders).await,
        Suite::Recommend(args) => suites::recommend(config, args, embedders).await,
        Suite::Summaries(args) => suites::summaries(config, args, embedders).await,
        Suite::Grounded(args) => suites::grounded(config, args, embedders).await,
    }
}
