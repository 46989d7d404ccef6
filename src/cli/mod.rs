//! The `signaldesk` command line: one file per command family, each with its clap arguments,
//! one call into the library, and the printing. Nothing here decides what a user of the library
//! would need too; output and progress helpers live in [`output`].
//!
//! Exit codes: 0 success; 1 the job ran but left something out or a check failed (skipped input
//! lines, parity below the bar); 2 the job could not run (bad config, missing model, unreadable
//! input).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use signaldesk::chunk::Chunker;
use signaldesk::Config;

/// `println!` that returns the write's error instead of panicking: a closed pipe (`| head`) ends
/// the command quietly (see `main`), never with a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

/// `print!` that returns the write's error instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        write!(std::io::stdout().lock(), $($arg)*)?
    };
}

mod answer;
mod bench;
mod collections;
mod embed;
mod eval;
mod eval_suites;
mod ingest;
mod llm;
mod output;
mod rank;
mod search;
mod serve;
mod stream;
mod tag;

/// Content intelligence for newsrooms and audio platforms: embed, store, tag, rank, evaluate.
///
/// Configuration comes from signaldesk.toml (or --config), overridden by SIGNALDESK_* environment
/// variables (SIGNALDESK_EMBED__BATCH_SIZE=16: double underscore for nesting). Defaults run
/// offline: models under ./models (fetched by scripts/fetch-models.sh), caches under ./.cache.
#[derive(Parser)]
#[command(name = "signaldesk", version, max_term_width = 100)]
pub struct Cli {
    /// Config file (default: signaldesk.toml in the working directory, if present).
    #[arg(long, global = true, env = "SIGNALDESK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log more (-v info, -vv debug); SIGNALDESK_LOG takes a full tracing filter instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log lines as text for people, or as JSON objects (one per line, with each span's fields:
    /// the server's request id) for a log pipeline.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SIGNALDESK_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Inspect configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Embed each record of a JSONL file; writes {"id", "vector"} per line in input order.
    ///
    /// A record's text is --text-field if given, else title + "\n" + body when those exist, else
    /// text. Texts longer than the model's max_seq_length tokens are truncated (as
    /// sentence-transformers does) unless --chunk is given, which splits them on paragraph and
    /// sentence boundaries and writes one line per chunk with its byte span ("start", "end").
    /// Bad lines (not JSON, no id, no text, over --max-line-bytes) are reported on stderr with
    /// their line number and skipped; the run then exits 1. Blank lines are ignored.
    Embed(embed::EmbedArgs),
    /// Measure speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run the main job end to end on the embedded defaults and print a report.
    ///
    /// Stages: embed the bundled SciFact sample and check every vector against
    /// sentence-transformers' (cosine >= 0.9999); ingest the SciFact corpus into the embedded
    /// store (idempotent) and evaluate dense, BM25 and hybrid search on its test queries.
    /// Exits 1 if parity fails or dense nDCG@10 is off sentence-transformers' 0.6451 by > 0.005.
    Pipeline(eval::PipelineArgs),
    /// Ingest content (.jsonl, .jsonl.gz or .csv) into the vector store.
    ///
    /// Each record needs an id and a title or body; optional: url, source, content_type
    /// (article | episode | other), language, published_at (RFC 3339 or YYYY-MM-DD), metadata
    /// (other fields are kept in metadata). Items are chunked to the model's limit, embedded
    /// (dense + BM25) and upserted. Re-running is idempotent: unchanged items are skipped,
    /// changed ones re-embedded with their stale chunks removed. Bad records go to the rejects
    /// file with their line and reason; the run then exits 1.
    Ingest(ingest::IngestArgs),
    /// Re-embed a collection with another model and switch over to it.
    ///
    /// Every item is read back from the store (nothing needs the original files), embedded with
    /// the model in --model into a new collection <name>-<model fingerprint>, counted, and only
    /// then does <name> become an alias of the new collection and the old vectors get dropped.
    /// Until that switch, searches keep using the old collection. Afterwards set embed.model to
    /// the new model so ingest and search use it too.
    Reindex(ingest::ReindexArgs),
    /// Search the store: dense, BM25 or hybrid (reciprocal rank fusion), one result per item.
    ///
    /// Each result is a content item with its best chunk and that chunk's byte span. Settings
    /// come from the configuration (search.mode, search.exact, search.hybrid.rrf_k,
    /// search.hybrid.dense_weight, search.hybrid.candidates): the same path `eval retrieval`
    /// measures.
    Search(search::SearchArgs),
    /// Verify a claim against the archive: SUPPORT, CONTRADICT or NOT_ENOUGH_INFO, with the
    /// items that decide it and their rationale sentences (byte spans into each item's text).
    ///
    /// The claim is searched (hybrid, answer.k items), each item split into sentences and read
    /// by the local verifier (no LLM: rationale and stance models over the embedder's vectors,
    /// trained at first use on answer.training_claims and cached under cache_dir/verifier/); an
    /// item is evidence when the verifier's probability, discounted by answer.rank_decay for each
    /// search rank below the first, reaches answer.threshold.
    Verify(answer::VerifyArgs),
    /// Answer a question from the archive: statements that cite the passages they rest on
    /// (item id + byte span), or "not in the archive" when nothing retrieved is relevant enough.
    ///
    /// The question is searched (hybrid, answer.k items), the items' sentences scored against it
    /// by the local verifier, and the best answer.ask.passages put before the LLM (llm.*), whose
    /// answer may cite only those passages; statements without a citation are dropped. Without
    /// an LLM (--no-llm, answer.ask.llm = false) or when it fails, the answer is the best
    /// passages themselves, cited, and says why. Below answer.ask.threshold nothing is composed.
    Ask(answer::AskArgs),
    /// Offline evaluation against golden datasets.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Talk to the configured LLM, or serve the local one over the OpenAI protocol.
    #[command(subcommand)]
    Llm(llm::LlmCommand),
    /// Tag the items of a file by their nearest labelled neighbours; one JSON line per item.
    ///
    /// Each item ({"id", "title", "body"}, .jsonl[.gz] or .csv, "-" for stdin) is embedded and
    /// tagged by the kNN tagger against the labelled memory collection (--memory, default
    /// enrich.knn.memory: items ingested with a "labels" field). Output: {"id", "tags": [{"label",
    /// "confidence", "source", "evidence"}], "lineage"}; speed on stderr. Settings: enrich.knn.
    Tag(tag::TagArgs),
    /// Tag the items already stored in a collection and keep the tags beside them.
    ///
    /// Each item is tagged (from its first chunk) by --tagger, and its chunks get `tags` (concept
    /// ids, filterable: `search --filter tags=ID`), `tag_scores` and `tags_lineage` (tagger,
    /// model, settings, taxonomy, time). --only-stale skips items whose lineage is current.
    Enrich(tag::EnrichArgs),
    /// See and manage the collections of the configured store (store.backend).
    #[command(subcommand)]
    Collections(collections::CollectionsCommand),
    /// The interaction log (views, clicks, likes, ratings) recommendations learn from.
    #[command(subcommand)]
    Interactions(rank::InteractionsCommand),
    /// Train the recommender's learned blend.
    #[command(subcommand)]
    Rank(rank::RankCommand),
    /// Recommend items of the collection (rank.collection, else store.collection) to a user.
    ///
    /// Candidates come from co-occurrence, popularity and the user's profile vector (or, with
    /// --seed, the items nearest that item); the trained blend (rank.model) orders them, then
    /// rank.objectives apply (boosts, demotions, per-source cap, MMR diversity, embargo and
    /// excluded-tag filters). Each item shows its features and every objective's contribution.
    /// With --experiment, the user's variant (hash of user and the experiment's salt) decides
    /// ranker, model and objectives. Every list is logged as an exposure (rank.exposures).
    Recommend(rank::RecommendArgs),
    /// Controlled experiments (rank.experiments, experiments.toml).
    #[command(subcommand)]
    Experiments(rank::ExperimentsCommand),
    /// Editors' feedback: export their tag decisions as golden data.
    #[command(subcommand)]
    Feedback(rank::FeedbackCommand),
    /// Serve the HTTP API (api.*), the editorial page (/editorial) and the API docs (/docs).
    ///
    /// Routes: /v1/content (ingest, get, delete), /v1/search, /v1/tag, /v1/summarize,
    /// /v1/enrich and /v1/jobs/{id}, /v1/taxonomy, /v1/recommend, /v1/feedback (users' events,
    /// editors' tag decisions), /v1/chat/completions (the local model), /healthz, /readyz,
    /// /metrics (Prometheus) and /openapi.json. Every /v1 route needs an API key (Authorization:
    /// Bearer KEY or X-Api-Key) from api.keys, stored as its sha256 (--hash-key prints it); no key
    /// or an unknown one is 401, a key without the route's scope 403. Errors are JSON {"error":
    /// {"code", "message", "field"?}}. Tagging beyond api.tag_concurrency requests at once, or a
    /// key over api.rate_per_key, is answered 429 with Retry-After at once. Logs: --log-format
    /// json gives one JSON object per line with the request id (X-Request-Id) on every span.
    Serve(serve::ServeArgs),
    /// Process content events from NATS JetStream (stream.url): each batch is chunked, embedded
    /// and upserted to the configured store exactly as `ingest` does, then acknowledged. Run
    /// as many as you like, on any machine, against a Qdrant server or cluster: they share the
    /// work; a worker that dies leaves its unacknowledged events to the others (after
    /// stream.ack_wait_s). Events that keep failing go to the dead letters (stream.max_deliver).
    Worker(stream::WorkerArgs),
    /// The scale-out streams on NATS JetStream.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (defaults, then file, then environment).
    Show {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// A switch given on the command line (`--chunking on|off`).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    /// As a boolean override of a configured switch.
    pub fn as_override(on: Option<OnOff>) -> Option<bool> {
        on.map(|o| o == OnOff::On)
    }
}

/// The configured chunker for `embedder`; `on` (a command's --chunking) overrides chunk.enabled.
pub fn chunker_for(
    config: &Config,
    embedder: &signaldesk::Embedder,
    on: Option<OnOff>,
) -> Option<Chunker> {
    Chunker::from_config(
        &config.chunk,
        embedder.max_seq_length(),
        OnOff::as_override(on),
    )
}

/// Run one parsed command to its exit code.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Config(ConfigCommand::Show { json }) => {
            if json {
                outln!("{}", serde_json::to_string_pretty(&config)?);
            } else {
                out!("{}", config.to_toml());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Embed(args) => embed::run(&config, args),
        Command::Bench(cmd) => bench::run(&config, cmd),
        Command::Pipeline(args) => eval::pipeline(&config, args),
        Command::Ingest(args) => runtime()?.block_on(ingest::ingest(&config, args)),
        Command::Reindex(args) => runtime()?.block_on(ingest::reindex(&config, args)),
        Command::Search(args) => runtime()?.block_on(search::run(&config, args)),
        Command::Verify(args) => runtime()?.block_on(answer::run(&config, args)),
        Command::Ask(args) => runtime()?.block_on(answer::run_ask(&config, args)),
        Command::Eval(cmd) => eval::run(&config, cmd),
        Command::Llm(cmd) => runtime()?.block_on(llm::run(&config, cmd)),
        Command::Tag(args) => runtime()?.block_on(tag::tag(&config, args)),
        Command::Enrich(args) => runtime()?.block_on(tag::enrich(&config, args)),
        Command::Collections(cmd) => runtime()?.block_on(collections::run(&config, cmd)),
        Command::Interactions(cmd) => rank::interactions(&config, cmd),
        Command::Rank(cmd) => runtime()?.block_on(rank::rank(&config, cmd)),
        Command::Recommend(args) => runtime()?.block_on(rank::recommend(&config, args)),
        Command::Experiments(cmd) => rank::experiments(&config, cmd),
        Command::Feedback(cmd) => runtime()?.block_on(rank::feedback(&config, cmd)),
        Command::Serve(args) => serve::run(config, args),
        Command::Worker(args) => runtime()?.block_on(stream::worker(&config, args)),
        Command::Stream(cmd) => runtime()?.block_on(stream::run(&config, cmd)),
    }
}

/// The runtime async commands run on: two workers, as many as the machines this runs on have
/// cores to spare.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Whether an error comes from writing to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause.to_string().contains("Broken pipe (os error 32)")
    })
}

/// An error and its causes on one line, each cause said once: library errors often quote their
/// source in their own message, and printing the chain would repeat it
/// ("No such file or directory (os error 2): No such file or directory (os error 2)").
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Logs on stderr: `-v`/`-vv` or SIGNALDESK_LOG for the filter, text or JSON lines.
pub fn init_tracing(verbose: u8, format: LogFormat) {
    // qdrant-edge warns on every shard open that its global feature flags and an mmap check are
    // not initialised; both live in a private module and fall back to their defaults, so its
    // warnings are hidden unless asked for (SIGNALDESK_LOG=qdrant_edge=warn).
    // The API's access log (target `access`, one line per request) is on at every level.
    let default = match verbose {
        0 => "warn,qdrant_edge=error,access=info",
        1 => "info,qdrant_edge=error",
        _ => "debug",
    };
    let filter = std::env::var("SIGNALDESK_LOG").unwrap_or_else(|_| default.to_string());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: log files and CI logs get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand and every option, as `--help` shows them, with nothing unexplained.
    fn unexplained(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if builtin || arg.is_hide_set() {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path}: {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.get_name() != "help" && sub.get_about().is_none() {
                out.push(name.clone());
            }
            unexplained(sub, &name, out);
        }
    }

    #[test]
    fn every_command_and_option_explains_itself() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut missing = Vec::new();
        unexplained(&cli, "signaldesk", &mut missing);
        assert!(
            missing.is_empty(),
            "without help text:\n{}",
            missing.join("\n")
        );
    }
}
