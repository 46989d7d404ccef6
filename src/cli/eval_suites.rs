//! The eval suites: `signaldesk eval retrieval|tagging|summaries|recommend`, each the command a
//! user runs and the gate's `eval run` runs from a suite list.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use signaldesk::config::SearchMode;
use signaldesk::embed::LoadedEmbedders;
use signaldesk::enrich::taxonomy::Taxonomy;
use signaldesk::enrich::{tagger_llm, TaggerKind};
use signaldesk::eval::retrieval::{
    eval_collection_name, evaluate, ingest_eval_collection, write_trec, BeirDataset,
    RetrievalEvalOptions,
};
use signaldesk::store::AnyStore;
use signaldesk::Config;

use super::output::{count_records, Progress, StagedProgress};
use super::tag::LlmTagArgs;
use super::{chunker_for, OnOff};

/// `signaldesk eval retrieval`'s arguments.
#[derive(Args)]
pub struct EvalRetrievalArgs {
    /// BEIR-layout dataset directory.
    #[arg(long)]
    dataset: PathBuf,
    /// How chunks are scored [default: search.mode, hybrid].
    #[arg(long, value_enum)]
    mode: Option<SearchMode>,
    /// Chunk the corpus (on) or embed documents whole (off) [default: chunk.enabled, on].
    #[arg(long, value_enum)]
    chunking: Option<OnOff>,
    /// Which qrels file to evaluate: qrels/SPLIT.tsv.
    #[arg(long, default_value = "test")]
    split: String,
    /// Report path (JSON); the markdown summary goes beside it as <output>.md.
    #[arg(long)]
    output: PathBuf,
    /// Also write the run in TREC format.
    #[arg(long)]
    run_out: Option<PathBuf>,
    /// Results kept per query.
    #[arg(long, default_value_t = 100)]
    depth: usize,
    /// Evaluate this existing collection as it is instead of ingesting the corpus.
    #[arg(long)]
    collection: Option<String>,
    /// Score only the first N queries of the split, in query-id order (the corpus is still
    /// ingested whole).
    #[arg(long, value_name = "N")]
    limit_queries: Option<usize>,
    /// Also choose fusion settings on qrels/train.tsv and report them (to copy into
    /// search.hybrid); the configured settings are the ones evaluated.
    #[arg(long)]
    tune_fusion: bool,
}

#[derive(Args)]
pub struct EvalTaggingArgs {
    /// Dataset directory with train.jsonl[.gz] and test.jsonl[.gz] ({"id", "title", "body",
    /// "labels"} per line).
    #[arg(long)]
    dataset: PathBuf,
    /// The taxonomy TSV every label belongs to (id or qcode, label, [definition, parent,
    /// active]).
    #[arg(long)]
    taxonomy: PathBuf,
    /// Which tagger is evaluated.
    #[arg(long, value_enum, default_value = "knn")]
    tagger: TaggerKind,
    #[command(flatten)]
    llm: LlmTagArgs,
    /// Evaluate only the first N test documents.
    #[arg(long)]
    limit: Option<usize>,
    /// Use enrich.knn's k and threshold as configured instead of tuning them on validation.
    #[arg(long)]
    no_tune: bool,
    /// Validation documents drawn from train for tuning.
    #[arg(long, default_value_t = 1500)]
    validation: usize,
    /// What tuning maximises on validation.
    #[arg(long, value_enum, default_value = "mean-f1")]
    objective: signaldesk::eval::tagging::TuneObjective,
    /// Report path (JSON); the markdown summary goes beside it as <output>.md.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args)]
pub struct EvalGroundedArgs {
    /// The BEIR-layout corpus the claims point to.
    #[arg(long, default_value = "golden-datasets/scifact")]
    dataset: PathBuf,
    /// Directory with tune.jsonl and eval.jsonl (SciFact's claim format).
    #[arg(long, default_value = "golden-datasets/scifact-claims")]
    claims: PathBuf,
    /// Evaluate at answer.threshold as configured instead of the value tuned on tune.jsonl.
    #[arg(long)]
    no_tune: bool,
    /// Evaluate only the first N evaluation claims.
    #[arg(long)]
    limit: Option<usize>,
    /// Also ask the first N evaluation claims with the configured LLM composing (llm.*, the
    /// local model by default; the response cache off, so times are generation's): citations,
    /// fallbacks, time to the first words, tokens/s.
    #[arg(long, default_value_t = 0)]
    llm_questions: usize,
    /// Chunk the corpus (on) or embed documents whole (off) [default: chunk.enabled, on].
    #[arg(long, value_enum)]
    chunking: Option<OnOff>,
    /// Report path (JSON); the markdown summary goes beside it as <output>.md.
    #[arg(long)]
    output: PathBuf,
}

/// `signaldesk eval grounded`: claims verified over SciFact, scored with SciFact's metrics.
pub async fn grounded(
    config: &Config,
    args: EvalGroundedArgs,
    embedders: &LoadedEmbedders,
) -> Result<ExitCode> {
    use signaldesk::eval::grounded::{evaluate, GroundedEvalOptions};
    let embedder = embedders.get(config)?;
    let store = AnyStore::open_for_eval(config)?;
    // The response cache is off for these questions: their times are the LLM's, not a replay's.
    let no_cache = Some(signaldesk::llm::CacheMode::Off);
    let llm = (args.llm_questions > 0)
        .then(|| signaldesk::llm::AnyLlm::from_config(config, None, no_cache))
        .transpose()?;
    let composer = llm
        .as_ref()
        .map(|llm| signaldesk::answer::ask::Composer::configured(llm, config))
        .transpose()?;
    let options = GroundedEvalOptions {
        tune: !args.no_tune,
        limit: args.limit,
        chunker: chunker_for(config, &embedder, args.chunking),
        llm_questions: args.llm_questions,
        composer: composer.as_ref(),
    };

    let report = evaluate(
        &store,
        embedder,
        config,
        &args.dataset,
        &args.claims,
        &options,
        |status| eprintln!("eval grounded: {status}"),
    )
    .await?;
    report
        .write(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let c = &report.config;
    outln!(
        "grounded on {} ({} evaluation claims, verifier {}, threshold {} and rank decay {}; tuned on the tuning claims: {} and {})",
        report.dataset,
        c["evaluation_claims"],
        c["verifier"].as_str().unwrap_or("-"),
        c["threshold"],
        c["rank_decay"],
        c["tuned_threshold"],
        c["tuned_rank_decay"]
    );
    for key in [
        "abstract_label_f1",
        "abstract_rationale_f1",
        "sentence_selection_f1",
        "sentence_label_f1",
        "nei_precision",
        "nei_recall",
        "top1_support.abstract_label_f1",
        "top1_abstaining.abstract_label_f1",
        "gold_abstracts.abstract_label_f1",
        "ask_citations_retrieved",
        "ask_citation_precision",
        "ask_citation_recall",
        "ask_not_in_archive",
        "ask_llm.citations_retrieved",
        "ask_llm.answered_by_llm",
        "ask_llm.fallbacks",
        "ask_llm.first_text_ms_p50",
        "ask_llm.first_text_ms_max",
        "ask_llm.completion_tokens_per_s_p50",
    ] {
        if let Some(v) = report.metrics.get(key) {
            outln!("  {key:<34} {v:.4}");
        }
    }
    outln!(
        "  verify latency p50 {:.1} ms, p99 {:.1} ms",
        c["verify_ms_p50"].as_f64().unwrap_or_default(),
        c["verify_ms_p99"].as_f64().unwrap_or_default()
    );
    outln!("report: {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct EvalSummariesArgs {
    /// Dataset directory holding frank_articles.jsonl[.gz].
    #[arg(long)]
    dataset: PathBuf,
    /// Summarize only the first N articles of each source.
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate the LLM summarizer too (prompts/summarize.vN.md; llm.* picks the model).
    #[arg(long)]
    llm: bool,
    /// Which LLM answers with --llm (default: llm.provider).
    #[arg(long, value_enum)]
    provider: Option<signaldesk::llm::LlmProvider>,
    /// Report path (JSON; markdown written beside it).
    #[arg(long, short)]
    output: PathBuf,
}

#[derive(Args)]
pub struct EvalRecommendArgs {
    /// Dataset directory with movies.csv and ratings.csv.
    #[arg(long)]
    dataset: PathBuf,
    /// The taxonomy the movies are tagged against.
    #[arg(
        long,
        default_value = "golden-datasets/iab-content-taxonomy/content_taxonomy_3.1.tsv"
    )]
    taxonomy: PathBuf,
    /// Variants of rank.experiments (experiments.toml) to score beside the rankers, by name.
    #[arg(long, value_delimiter = ',')]
    variants: Vec<String>,
    /// MMR λ values of the diversity sweep (1 = no diversity).
    #[arg(long, value_delimiter = ',', default_value = "1.0,0.75,0.5,0.25")]
    lambdas: Vec<f32>,
    /// Score only the first N test users (a quick look; the report says how many).
    #[arg(long)]
    limit_users: Option<usize>,
    /// Report path (JSON); the markdown summary goes beside it as <output>.md and the
    /// diversity plot as <output>-diversity.png.
    #[arg(long)]
    output: PathBuf,
}

/// `signaldesk eval tagging`: the tagger on a labelled dataset, report and summary lines.
pub async fn tagging(
    config: &Config,
    args: EvalTaggingArgs,
    embedders: &LoadedEmbedders,
) -> Result<ExitCode> {
    use signaldesk::eval::tagging::{evaluate, settings_line, split_file, TaggingEvalOptions};
    let taxonomy = Taxonomy::load(&args.taxonomy)?;
    // Missing splits fail now, not after a long ingest.
    let train = split_file(&args.dataset, "train")?;
    split_file(&args.dataset, "test")?;
    let embedder = embedders.get(config)?;
    let store = AnyStore::open_for_eval(config)?;
    let (config, llm) = tagger_llm(config, args.tagger, args.llm.provider, args.llm.concurrency)?;
    let bar = Progress::new("eval: memory ingest", count_records(&train), "documents");
    let options = TaggingEvalOptions {
        tune: !args.no_tune,
        objective: args.objective,
        validation: args.validation,
        limit: args.limit,
    };
    let report = evaluate(
        args.tagger,
        &store,
        embedder,
        &config,
        &args.dataset,
        &taxonomy,
        &options,
        llm.as_ref(),
        |n| bar.set_position(n as u64),
    )
    .await?;
    bar.finish();
    report
        .write(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let c = &report.config;
    outln!(
        "tagging on {} ({} test documents, taxonomy {}): {}",
        report.dataset,
        c["test_documents"],
        c["taxonomy"].as_str().unwrap_or("-"),
        settings_line(args.tagger, &report)
    );
    if let Some(v) = c["validation_metrics"].as_object() {
        outln!(
            "  tuned on validation for {}: micro-F1 {:.4}, macro-F1 {:.4} (set them in enrich.* to use them)",
            c["tune_objective"].as_str().unwrap_or("-"),
            v["micro_f1"].as_f64().unwrap_or_default(),
            v["macro_f1"].as_f64().unwrap_or_default()
        );
    }
    for key in [
        "micro_precision",
        "micro_recall",
        "micro_f1",
        "macro_f1",
        "accuracy",
    ] {
        // accuracy: only an exclusive taxonomy's report has it.
        if let Some(value) = report.metrics.get(key) {
            outln!("  {key:<16} {value:.4}");
        }
    }
    outln!("report: {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// `signaldesk eval recommend`: the rankers on MovieLens, report, plot and table.
pub async fn recommend(
    config: &Config,
    args: EvalRecommendArgs,
    embedders: &LoadedEmbedders,
) -> Result<ExitCode> {
    use signaldesk::eval::recommend::{
        console_summary, diversity_plot_path, evaluate, RecommendEvalOptions,
    };
    for file in ["movies.csv", "ratings.csv"] {
        let path = args.dataset.join(file);
        anyhow::ensure!(path.is_file(), "{} is missing", path.display());
    }
    let embedder = embedders.get(config)?;
    let store = AnyStore::open_for_eval(config)?;
    let options = RecommendEvalOptions {
        taxonomy: args.taxonomy.clone(),
        variants: args.variants.clone(),
        lambdas: args.lambdas.clone(),
        limit_users: args.limit_users,
    };
    let progress = StagedProgress::new(None, "");
    let (mut report, sweep) = evaluate(
        &store,
        embedder,
        config,
        &args.dataset,
        &options,
        |stage, done, total| {
            progress.set_with_total(&format!("eval: {stage}"), done as u64, Some(total as u64))
        },
    )
    .await?;
    drop(progress);
    let plot = diversity_plot_path(&args.output);
    signaldesk::eval::plot::diversity_sweep(&sweep, &plot)?;
    report.extra.insert(
        "diversity_plot".into(),
        serde_json::json!(plot.display().to_string()),
    );
    report.write(&args.output)?;
    out!("{}", console_summary(&report, &sweep));
    outln!(
        "report: {} (plot {})",
        args.output.display(),
        plot.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `signaldesk eval summaries`: ROUGE on FRANK, report and summary lines.
pub async fn summaries(
    config: &Config,
    args: EvalSummariesArgs,
    embedders: &LoadedEmbedders,
) -> Result<ExitCode> {
    use signaldesk::enrich::summarizer::Summarizer;
    use signaldesk::eval::summaries::{
        articles_to_summarize, console_summary, evaluate, read_articles, SummariesEvalOptions,
    };
    let articles = read_articles(&args.dataset)?;
    let total = articles_to_summarize(&articles, args.limit);
    let embedder = embedders.get(config)?;
    let llm = if args.llm {
        Some(signaldesk::llm::AnyLlm::from_config(
            config,
            args.provider,
            None,
        )?)
    } else {
        None
    };
    let summarizer = match &llm {
        Some(llm) => Some(Summarizer::new(
            llm,
            &embedder,
            &config.prompts_dir,
            config.enrich.summary.clone(),
        )?),
        None => None,
    };
    let bar = Progress::new("eval: summaries", Some(total as u64), "articles");
    let options = SummariesEvalOptions {
        max_words: config.enrich.summary.max_words,
        limit: args.limit,
    };
    let report = evaluate(
        &embedder,
        &args.dataset,
        &options,
        summarizer.as_ref(),
        |n| bar.set_position(n as u64),
    )
    .await?;
    bar.finish();
    report
        .write(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    out!("{}", console_summary(&report, options.max_words, args.llm));
    outln!("report: {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// `signaldesk eval retrieval`: search quality on a BEIR dataset (its corpus ingested first,
/// unless `--collection`), report and markdown.
pub async fn retrieval(
    config: &Config,
    args: EvalRetrievalArgs,
    embedders: &LoadedEmbedders,
) -> Result<ExitCode> {
    let embedder = embedders.get(config)?;
    let data = BeirDataset::open(&args.dataset)?;
    // A missing split fails now, not after a long ingest.
    data.qrels(&args.split)?;
    let chunker = chunker_for(config, &embedder, args.chunking);
    let mut extra = serde_json::Map::new();
    let (store, collection) = match args.collection {
        Some(name) => (AnyStore::open(config)?, name),
        None => {
            let store = AnyStore::open_for_eval(config)?;
            eprintln!(
                "eval: ingesting {} into {}",
                data.corpus.display(),
                eval_collection_name(&data, chunker.is_some())
            );
            let bar = Progress::new("eval: ingest", count_records(&data.corpus), "documents");
            let (collection, summary, entry) =
                ingest_eval_collection(&store, embedder.clone(), &data, config, chunker, |n| {
                    bar.set_position(n as u64)
                })
                .await?;
            bar.finish();
            eprintln!(
                "eval: {} documents, {} chunks in {:.1} s; searching",
                summary.read,
                summary.chunks,
                entry["seconds"].as_f64().unwrap_or(0.0)
            );
            extra.insert("ingest".into(), entry);
            (store, collection)
        }
    };
    let options = RetrievalEvalOptions {
        mode: args.mode.unwrap_or(config.search.mode),
        chunker,
        split: args.split,
        collection,
        depth: args.depth,
        search: config.search.clone(),
        tune_fusion: args.tune_fusion,
        limit_queries: args.limit_queries,
    };
    let (report, runs) = evaluate(&store, &embedder, &data, &options, extra).await?;
    report.write(&args.output)?;
    if let Some(path) = args.run_out {
        write_trec(&path, &runs, "signaldesk")?;
    }
    out!("{}", report.markdown());
    Ok(ExitCode::SUCCESS)
}
