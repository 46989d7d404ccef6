//! The `signaldesk` command line: parses arguments, calls the library, prints results.
//!
//! Exit codes: 0 success; 1 the job ran but left something out or a check failed (skipped input
//! lines, parity below the bar); 2 the job could not run (bad config, missing model, unreadable
//! input).

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use signaldesk::chunk::Chunker;
use signaldesk::config::SearchMode;
use signaldesk::embed::EmbedderOptions;
use signaldesk::enrich::TaggerKind;
use signaldesk::eval::retrieval::{
    evaluate, ingest_corpus, write_trec, BeirDataset, RetrievalEvalOptions,
};
use signaldesk::ingest::pipeline::{ingest_file, IngestOptions};
use signaldesk::ingest::InputFile;
use signaldesk::jobs::bench_embed::{bench_embed, load_texts};
use signaldesk::jobs::embed_file::{embed_file, EmbedFileOptions, DEFAULT_MAX_LINE_BYTES};
use signaldesk::search::Searcher;
use signaldesk::store::{AnyStore, Filter, VectorStore};
use signaldesk::{pipeline, Config, Embedder};
use std::sync::Arc;

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

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Content intelligence for newsrooms and audio platforms: embed, store, tag, rank, evaluate.
///
/// Configuration comes from signaldesk.toml (or --config), overridden by SIGNALDESK_* environment
/// variables (SIGNALDESK_EMBED__BATCH_SIZE=16: double underscore for nesting). Defaults run
/// offline: models under ./models (fetched by scripts/fetch-models.sh), caches under ./.cache.
#[derive(Parser)]
#[command(name = "signaldesk", version, max_term_width = 100)]
struct Cli {
    /// Config file (default: signaldesk.toml in the working directory, if present).
    #[arg(long, global = true, env = "SIGNALDESK_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log more (-v info, -vv debug); SIGNALDESK_LOG takes a full tracing filter instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log lines as text for people, or as JSON objects (one per line, with each span's fields:
    /// the server's request id) for a log pipeline.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SIGNALDESK_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
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
    Embed(EmbedArgs),
    /// Measure speed.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the main job end to end on the embedded defaults and print a report.
    ///
    /// Stages: embed the bundled SciFact sample and check every vector against
    /// sentence-transformers' (cosine >= 0.9999); ingest the SciFact corpus into the embedded
    /// store (idempotent) and evaluate dense, BM25 and hybrid search on its test queries.
    /// Exits 1 if parity fails or dense nDCG@10 is off sentence-transformers' 0.6451 by > 0.005.
    Pipeline(PipelineArgs),
    /// Ingest content (.jsonl, .jsonl.gz or .csv) into the vector store.
    ///
    /// Each record needs an id and a title or body; optional: url, source, content_type
    /// (article | episode | other), language, published_at (RFC 3339 or YYYY-MM-DD), metadata
    /// (other fields are kept in metadata). Items are chunked to the model's limit, embedded
    /// (dense + BM25) and upserted. Re-running is idempotent: unchanged items are skipped,
    /// changed ones re-embedded with their stale chunks removed. Bad records go to the rejects
    /// file with their line and reason; the run then exits 1.
    Ingest(IngestArgs),
    /// Re-embed a collection with another model and switch over to it.
    ///
    /// Every item is read back from the store (nothing needs the original files), embedded with
    /// the model in --model into a new collection <name>-<model fingerprint>, counted, and only
    /// then does <name> become an alias of the new collection and the old vectors get dropped.
    /// Until that switch, searches keep using the old collection. Afterwards set embed.model to
    /// the new model so ingest and search use it too.
    Reindex(ReindexArgs),
    /// Search the store: dense, BM25 or hybrid (reciprocal rank fusion), one result per item.
    ///
    /// Each result is a content item with its best chunk and that chunk's byte span. Settings
    /// come from the configuration (search.mode, search.exact, search.hybrid.rrf_k,
    /// search.hybrid.dense_weight, search.hybrid.candidates): the same path `eval retrieval`
    /// measures.
    Search(SearchArgs),
    /// Offline evaluation against golden datasets.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Talk to the configured LLM, or serve the local one over the OpenAI protocol.
    #[command(subcommand)]
    Llm(LlmCommand),
    /// Tag the items of a file by their nearest labelled neighbours; one JSON line per item.
    ///
    /// Each item ({"id", "title", "body"}, .jsonl[.gz] or .csv, "-" for stdin) is embedded and
    /// tagged by the kNN tagger against the labelled memory collection (--memory, default
    /// enrich.knn.memory: items ingested with a "labels" field). Output: {"id", "tags": [{"label",
    /// "confidence", "source", "evidence"}], "lineage"}; speed on stderr. Settings: enrich.knn.
    Tag(TagArgs),
    /// Tag the items already stored in a collection and keep the tags beside them.
    ///
    /// Each item is tagged (from its first chunk) by --tagger, and its chunks get `tags` (concept
    /// ids, filterable: `search --filter tags=ID`), `tag_scores` and `tags_lineage` (tagger,
    /// model, settings, taxonomy, time). --only-stale skips items whose lineage is current.
    Enrich(EnrichArgs),
    /// See and manage the collections of the configured store (store.backend).
    #[command(subcommand)]
    Collections(CollectionsCommand),
    /// The interaction log (views, clicks, likes, ratings) recommendations learn from.
    #[command(subcommand)]
    Interactions(InteractionsCommand),
    /// Train the recommender's learned blend.
    #[command(subcommand)]
    Rank(RankCommand),
    /// Recommend items of the collection (rank.collection, else store.collection) to a user.
    ///
    /// Candidates come from co-occurrence, popularity and the user's profile vector (or, with
    /// --seed, the items nearest that item); the trained blend (rank.model) orders them, then
    /// rank.objectives apply (boosts, demotions, per-source cap, MMR diversity, embargo and
    /// excluded-tag filters). Each item shows its features and every objective's contribution.
    /// With --experiment, the user's variant (hash of user and the experiment's salt) decides
    /// ranker, model and objectives. Every list is logged as an exposure (rank.exposures).
    Recommend(RecommendArgs),
    /// Controlled experiments (rank.experiments, experiments.toml).
    #[command(subcommand)]
    Experiments(ExperimentsCommand),
    /// Editors' feedback: export their tag decisions as golden data.
    #[command(subcommand)]
    Feedback(FeedbackCommand),
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
    Serve {
        /// Listen here instead of api.addr.
        #[arg(long)]
        addr: Option<String>,
        /// Print the sha256 of KEY (what api.keys stores) and exit.
        #[arg(long, value_name = "KEY")]
        hash_key: Option<String>,
    },
}

#[derive(Subcommand)]
enum FeedbackCommand {
    /// Write editors' tag decisions (data_dir/editorial.jsonl) as golden data.
    ///
    /// One line per reviewed item of store.collection, in the tagging eval's test format:
    /// {"id", "title", "body", "labels", "rejected", "editors"}, where labels are the model's
    /// tags the editors accepted plus the tags they added, minus the ones they rejected (the
    /// latest decision per label counts). `eval tagging --test FILE` reads it as it is.
    Export {
        /// The output format (only tagging-gold so far).
        #[arg(long, value_enum, default_value = "tagging-gold")]
        format: ExportFormat,
        /// Where to write the JSONL ("-" for stdout).
        #[arg(long, short)]
        output: PathBuf,
    },
}

/// What `feedback export` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// The tagging eval's test format.
    TaggingGold,
}

#[derive(Subcommand)]
enum InteractionsCommand {
    /// Add interactions from a file to the log (data_dir/interactions.redb, redb).
    ///
    /// CSV with a header or JSONL; fields user, item, event (view, click, like, rating, ...),
    /// value (a rating's stars), timestamp (Unix seconds, RFC 3339 or YYYY-MM-DD). MovieLens'
    /// userId, movieId, rating, timestamp load as they are. Re-ingesting adds nothing twice. Bad
    /// lines go to stderr and the rejects file with their line and reason; the run then exits 1.
    Ingest {
        /// The file (.csv or .jsonl).
        file: PathBuf,
        /// Where rejected lines go (JSONL: line, reason).
        #[arg(long, default_value = "interactions-rejects.jsonl")]
        rejects: PathBuf,
    },
}

#[derive(Subcommand)]
enum RankCommand {
    /// Learn the blend from the interaction log alone and save it (rank.model, versioned).
    ///
    /// An inner temporal split of the log (each user's latest 20% of positives, users with at
    /// least 5) gives clicks; the candidates the recommender proposes from the earlier part are
    /// the examples, trained pairwise (logistic loss on feature differences).
    Train {
        /// Leave these features out (e.g. tag_overlap).
        #[arg(long, value_delimiter = ',')]
        drop_features: Vec<String>,
        /// Write the model here instead of rank.model.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Args)]
struct RecommendArgs {
    /// The user to recommend to.
    #[arg(long)]
    user: String,
    /// Items to return.
    #[arg(long, short, default_value_t = 10)]
    k: usize,
    /// "More like this": recommend around this item instead of the user's profile.
    #[arg(long)]
    seed: Option<String>,
    /// Serve through this experiment's variants.
    #[arg(long)]
    experiment: Option<String>,
    /// Rank with this instead of the blend (ignored inside an experiment).
    #[arg(long, value_enum)]
    ranker: Option<signaldesk::rank::recommender::RankerKind>,
    /// Print JSON (items with features and contributions) instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ExperimentsCommand {
    /// Per-variant exposures, clicks, CTR with a 95% interval, the difference to control with
    /// its interval, and a sample-ratio-mismatch check, from the exposure log joined with later
    /// interactions (a click: a positive engagement with a shown item within
    /// rank.attribution_window_hours).
    Report {
        /// Only this experiment.
        #[arg(long)]
        experiment: Option<String>,
        /// The exposure log (default rank.exposures).
        #[arg(long)]
        exposures: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CollectionsCommand {
    /// Every collection with its item and chunk counts, model and aliases.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One collection (or alias): model, dimension, counts, BM25 statistics, aliases.
    Info {
        /// Collection or alias name.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete a collection (an alias drops the collection it points at) and its aliases.
    Drop {
        /// Collection or alias name.
        name: String,
        /// Confirm: without it nothing is deleted.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum LlmCommand {
    /// Send one message and print the answer (and, with --json, usage and latency).
    ///
    /// The provider is llm.provider (auto: the OpenAI-compatible server at llm.base_url if set,
    /// else the local model). With --json-schema the answer is JSON satisfying the schema:
    /// constrained while decoding locally, validated (and repaired once) from a server.
    Chat {
        /// The user message.
        message: String,
        /// Which LLM answers (default: llm.provider).
        #[arg(long, value_enum)]
        provider: Option<signaldesk::llm::LlmProvider>,
        /// A JSON Schema file the answer must satisfy.
        #[arg(long, value_name = "FILE")]
        json_schema: Option<PathBuf>,
        /// A system message.
        #[arg(long)]
        system: Option<String>,
        /// Most tokens in the answer (clamped to the room the prompt leaves in the context).
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// 0 is greedy (deterministic).
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Nucleus sampling: sample only from the most likely tokens holding this much
        /// probability (with a temperature above 0).
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Seed of the sampler, for reproducible sampled answers.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Response cache (default: llm.cache).
        #[arg(long, value_enum)]
        cache: Option<signaldesk::llm::CacheMode>,
        /// Print the whole response as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Answer OpenAI-compatible /v1/chat/completions with the local model until Ctrl-C.
    Serve {
        /// Address to listen on (port 0 picks a free one; the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
    },
}

#[derive(Args)]
struct IngestArgs {
    /// Input file: .jsonl, .jsonl.gz or .csv (header row names the fields); "-" reads JSONL
    /// from standard input.
    file: PathBuf,
    /// Longest input line accepted, in bytes; longer lines are rejected without being held in
    /// memory [default: ingest.max_line_bytes, 16 MiB].
    #[arg(long)]
    max_line_bytes: Option<usize>,
    /// Collection (default: store.collection).
    #[arg(long)]
    collection: Option<String>,
    /// Split long items into chunks (on) or embed each item truncated at the model limit (off)
    /// [default: chunk.enabled, on].
    #[arg(long, value_enum)]
    chunking: Option<OnOff>,
    /// Where rejected records go (default: FILE.rejects.jsonl beside the input;
    /// stdin.rejects.jsonl in the working directory for "-").
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Largest accepted body, in bytes [default: ingest.max_body_bytes, 4 MiB].
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Items embedded together and upserted as one write-ahead-logged operation [default:
    /// ingest.batch_items, 256].
    #[arg(long)]
    batch_items: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ReindexArgs {
    /// The new model: a sentence-transformers model directory.
    #[arg(long)]
    model: PathBuf,
    /// Collection (default: store.collection).
    #[arg(long)]
    collection: Option<String>,
    /// Chunk items for the new model (on) or embed each truncated at its limit (off).
    #[arg(long, value_enum, default_value = "on")]
    chunking: OnOff,
    /// Items read, embedded and written per step.
    #[arg(long, default_value_t = 256)]
    batch_items: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Args)]
struct SearchArgs {
    /// The query text (or use --queries).
    #[arg(required_unless_present = "queries")]
    query: Option<String>,
    /// Search every query of a JSONL file ({"id", "text"} or BEIR's {"_id", "text"} per line)
    /// and print one JSON line per query: {"query_id", "hits"}.
    #[arg(long, value_name = "FILE", conflicts_with = "query")]
    queries: Option<PathBuf>,
    /// How chunks are scored [default: search.mode, hybrid].
    #[arg(long, value_enum)]
    mode: Option<SearchMode>,
    /// Payload filter (repeatable, or comma-separated; all must hold): field=value,
    /// field>=value or field<value. Fields: content_id, source, content_type, language, tags,
    /// published_at, and metadata.KEY for an input's other fields (a record's "desk" is
    /// metadata.desk). Dates take RFC 3339 or YYYY-MM-DD; published_at=2025-03-01 is that whole
    /// day. E.g. --filter source=reuters,language=en --filter published_at>=2025-03-01.
    #[arg(long)]
    filter: Vec<String>,
    /// Results (content items) per query.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Collection (default: store.collection).
    #[arg(long)]
    collection: Option<String>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Retrieval quality on a BEIR-layout dataset (corpus, queries, qrels/SPLIT.tsv).
    ///
    /// Ingests the corpus into a fresh collection with the configured ingest settings (the
    /// code `signaldesk ingest` runs), searches every query of the split through the code
    /// `signaldesk search` runs, with the configured `search.*` settings, and writes a report
    /// (JSON + markdown beside it) with nDCG@10, recall@100, MRR@10, MAP@10, P@10 and per-query
    /// values.
    Retrieval(EvalRetrievalArgs),
    /// Tagging quality on a labelled dataset (train.jsonl and test.jsonl with labels[]).
    ///
    /// The training documents are ingested into a labelled memory collection (memory-<dataset>,
    /// the code `signaldesk ingest` runs) and every test document is tagged by the kNN tagger
    /// through the code `signaldesk search` runs. k and the threshold are tuned on a 1,500-document
    /// validation split of train (seed 0, leave-one-out) unless --no-tune, which takes
    /// enrich.knn. Writes micro/macro P/R/F1, per-label scores and per-item TP/FP/FN (JSON +
    /// markdown beside it).
    Tagging(EvalTaggingArgs),
    /// Summary quality on FRANK (frank_articles.jsonl[.gz]: CNN/DailyMail and XSum articles
    /// with reference summaries).
    ///
    /// Summarizes every article with lead-3 and the extractive summarizer (the most central
    /// sentences by embedding, within enrich.summary.max_words) and writes ROUGE-1/2/L F1 per
    /// summarizer and source (rouge-score's rules, Porter stemming), mean lengths and the share
    /// within the word limit, with every summary kept for checking (JSON + markdown beside it).
    Summaries(EvalSummariesArgs),
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
    Recommend(EvalRecommendArgs),
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

#[derive(Args)]
struct EvalRunArgs {
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
struct EvalCompareArgs {
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
struct EvalAcceptArgs {
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
struct EvalRecommendArgs {
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

#[derive(Args)]
struct EvalSummariesArgs {
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
struct EnrichArgs {
    /// Collection whose items are tagged [default: store.collection].
    #[arg(long)]
    collection: Option<String>,
    /// Which tagger runs.
    #[arg(long, value_enum, default_value = "knn")]
    tagger: TaggerKind,
    #[command(flatten)]
    llm: LlmTagArgs,
    /// The labelled memory collection for knn [default: enrich.knn.memory].
    #[arg(long)]
    memory: Option<String>,
    /// A taxonomy TSV (required for zeroshot); its name@version goes in the lineage.
    #[arg(long)]
    taxonomy: Option<PathBuf>,
    /// Tag only items whose stored tags come from another tagger, model, setting or taxonomy
    /// (and, with --summaries, summarize only items whose summaries are not current).
    #[arg(long)]
    only_stale: bool,
    /// Also write each item's summary and standfirst (the LLM summarizer, prompts/summarize.vN.md;
    /// the extractive summary when a call fails, marked), after tagging.
    #[arg(long)]
    summaries: bool,
    /// Stop after N items.
    #[arg(long)]
    limit: Option<usize>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TagArgs {
    /// Items to tag: .jsonl, .jsonl.gz or .csv; "-" reads JSONL from standard input.
    file: PathBuf,
    /// The labelled memory collection [default: enrich.knn.memory].
    #[arg(long)]
    memory: Option<String>,
    /// Which tagger runs.
    #[arg(long, value_enum, default_value = "knn")]
    tagger: TaggerKind,
    #[command(flatten)]
    llm: LlmTagArgs,
    /// A taxonomy TSV: labels outside it are dropped, and its name@version goes in the lineage.
    #[arg(long)]
    taxonomy: Option<PathBuf>,
    /// With a tree taxonomy: add every tag's ancestors (a child implies its parents).
    #[arg(long, requires = "taxonomy")]
    with_ancestors: bool,
    /// With a tree taxonomy: replace tags deeper than N by their ancestor at depth N (1: the top
    /// concepts); implies --with-ancestors.
    #[arg(long, requires = "taxonomy", value_name = "N")]
    max_depth: Option<usize>,
    /// Output JSONL; "-" (the default) writes to stdout.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
    /// Print the closing summary as JSON on stderr.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvalTaggingArgs {
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

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults, then file, then environment).
    Show {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct EmbedArgs {
    /// JSONL input (.jsonl or .jsonl.gz), one record per line; "-" reads standard input.
    #[arg(long, short)]
    input: PathBuf,
    /// JSONL output; "-" writes to stdout.
    #[arg(long, short)]
    output: PathBuf,
    /// Field holding the text (default: title + "\n" + body, else text).
    #[arg(long)]
    text_field: Option<String>,
    /// Field holding the record id (a string or an integer).
    #[arg(long, default_value = "id")]
    id_field: String,
    /// Split long texts into chunks that fit the model and embed every chunk.
    #[arg(long)]
    chunk: bool,
    /// Most tokens per chunk, special tokens included (default: chunk.max_tokens, else the
    /// model's max_seq_length).
    #[arg(long, requires = "chunk")]
    chunk_tokens: Option<usize>,
    /// Tokens repeated between consecutive chunks (default: chunk.overlap_tokens).
    #[arg(long, requires = "chunk")]
    overlap: Option<usize>,
    /// Longest input line accepted, in bytes; longer lines are reported and skipped.
    #[arg(long, default_value_t = DEFAULT_MAX_LINE_BYTES)]
    max_line_bytes: usize,
}

#[derive(Subcommand)]
enum BenchCommand {
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
        #[arg(long, value_enum)]
        route: signaldesk::api::load::LoadRoute,
        /// Requests per second; several (comma-separated) run one after another.
        #[arg(long, value_delimiter = ',', required = true)]
        rate: Vec<f64>,
        /// Seconds per rate.
        #[arg(long, default_value_t = 60.0)]
        duration_s: f64,
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
        #[arg(
            long,
            default_value = "golden-datasets/iab-content-taxonomy/content_taxonomy_3.1.tsv"
        )]
        taxonomy: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
        #[arg(long, short, default_value_t = 10)]
        k: usize,
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
        /// JSONL files whose "vector" arrays are the shapes copied (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        base: Vec<PathBuf>,
        /// Collection sizes in points (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        sizes: Vec<usize>,
        /// Quantizations to measure (comma-separated); overrides store.quantization.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "none,int8")]
        quantization: Vec<signaldesk::config::Quantization>,
        /// Queries timed per configuration (and as many warm-up queries before them).
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(long, short, default_value_t = 10)]
        k: usize,
        /// Standard deviation of the noise added to each coordinate before renormalising.
        #[arg(long, default_value_t = 0.02)]
        noise: f32,
        #[arg(long, default_value_t = 20261201)]
        seed: u64,
        /// Points per upsert call.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Pid of the Qdrant server, whose resident memory is then reported.
        #[arg(long)]
        server_pid: Option<u32>,
        /// The server's storage directory, whose collection size is then reported.
        #[arg(long)]
        server_storage: Option<PathBuf>,
        /// Append each row as a JSON line to this file.
        #[arg(long)]
        output: Option<PathBuf>,
        /// After the runs, draw every row of --output (earlier runs' too) as the scale-curve
        /// PNG here, and print them all as the table.
        #[arg(long, requires = "output")]
        plot: Option<PathBuf>,
        /// Keep the collections instead of dropping them.
        #[arg(long)]
        keep: bool,
        /// Search passes with these search.hnsw_ef values (comma-separated; 0: the store's
        /// default) on each collection built, instead of the configured one.
        #[arg(long, value_delimiter = ',')]
        hnsw_ef: Vec<usize>,
        /// Search passes with these search.oversampling values (comma-separated; 0: the
        /// store's default), combined with each --hnsw-ef.
        #[arg(long, value_delimiter = ',')]
        oversampling: Vec<f64>,
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
        /// Print one JSON object {docs, tokens, seconds, docs_per_s, tokens_per_s}.
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
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct PipelineArgs {
    /// Reference sample to embed and check.
    #[arg(long, default_value = pipeline::SAMPLE_PATH)]
    sample: PathBuf,
    /// BEIR dataset for the retrieval stage.
    #[arg(long, default_value = pipeline::RETRIEVAL_DATASET)]
    dataset: PathBuf,
    /// Skip the retrieval stage (ingest + search + eval), which embeds the whole corpus on a
    /// cold cache (about 3 minutes on 2 cores).
    #[arg(long)]
    no_retrieval: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.log_format);
    match run(cli) {
        Ok(code) => code,
        // The reader went away (`signaldesk search ... | head -1`): nothing to say, nobody to
        // say it to.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(2)
        }
    }
}

/// Whether an error comes from writing to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
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
fn describe(e: &anyhow::Error) -> String {
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

fn init_tracing(verbose: u8, format: LogFormat) {
    // qdrant-edge warns on every shard open that its global feature flags and an mmap check are
    // not initialised; both live in a private module and fall back to their defaults, so its
    // warnings are hidden unless asked for (SIGNALDESK_LOG=qdrant_edge=warn).
    let default = match verbose {
        0 => "warn,qdrant_edge=error",
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

fn run(cli: Cli) -> Result<ExitCode> {
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
        Command::Embed(args) => embed(&config, args),
        Command::Bench(BenchCommand::Embed {
            input,
            text_field,
            limit,
            json,
        }) => {
            let path = input.unwrap_or_else(|| PathBuf::from(pipeline::SAMPLE_PATH));
            let (texts, skipped) =
                load_texts(InputFile::open(&path)?, text_field.as_deref(), limit)?;
            anyhow::ensure!(!texts.is_empty(), "{}: no usable texts", path.display());
            if skipped > 0 {
                eprintln!(
                    "bench: skipped {skipped} unusable lines of {}",
                    path.display()
                );
            }
            let options = EmbedderOptions {
                cache_path: None,
                ..EmbedderOptions::from_config(&config)
            };
            let embedder = Embedder::load(&config.embed_model_dir(), options)?;
            let report = bench_embed(&embedder, &texts)?;
            if json {
                outln!("{}", serde_json::to_string(&report)?);
            } else {
                outln!("model       {}", embedder.model_id());
                outln!("docs        {}", report.docs);
                outln!("tokens      {}", report.tokens);
                outln!("seconds     {:.3}", report.seconds);
                outln!("docs/s      {:.1}", report.docs_per_s);
                outln!("tokens/s    {:.0}", report.tokens_per_s);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Llm {
            prompt_tokens,
            gen_tokens,
            rounds,
            json,
        }) => {
            anyhow::ensure!(rounds >= 1, "--rounds must be at least 1");
            anyhow::ensure!(gen_tokens >= 1, "--gen-tokens must be at least 1");
            let path = config.models_dir.join(&config.llm.local_model);
            let r = signaldesk::llm::bench::run(&path, prompt_tokens, gen_tokens, rounds)?;
            if json {
                outln!("{}", serde_json::to_string(&r)?);
            } else {
                outln!("model              {}", r.model);
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
        Command::Llm(cmd) => runtime()?.block_on(llm_command(&config, cmd)),
        Command::Ingest(args) => runtime()?.block_on(ingest(&config, args)),
        Command::Collections(cmd) => runtime()?.block_on(collections(&config, cmd)),
        Command::Interactions(InteractionsCommand::Ingest { file, rejects }) => {
            interactions_ingest(&config, &file, &rejects)
        }
        Command::Rank(RankCommand::Train {
            drop_features,
            output,
        }) => runtime()?.block_on(rank_train(&config, &drop_features, output)),
        Command::Recommend(args) => runtime()?.block_on(recommend(&config, args)),
        Command::Bench(BenchCommand::Http {
            url,
            key,
            route,
            rate,
            duration_s,
            inputs,
            max_in_flight,
            p99_ms,
            json,
        }) => {
            let inputs = read_jsonl_objects(&inputs)?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            runtime()?.block_on(bench_http(
                signaldesk::api::load::LoadPlan {
                    url,
                    key,
                    route,
                    rate: 0.0,
                    duration: std::time::Duration::from_secs_f64(duration_s.max(0.1)),
                    inputs,
                    start: 0,
                    max_in_flight,
                },
                &rate,
                p99_ms,
                json,
            ))
        }
        Command::Feedback(FeedbackCommand::Export { format, output }) => {
            runtime()?.block_on(feedback_export(&config, format, &output))
        }
        Command::Serve { addr, hash_key } => match hash_key {
            Some(key) => {
                outln!("{}", signaldesk::api::key_hash(&key));
                Ok(ExitCode::SUCCESS)
            }
            None => runtime()?.block_on(serve_api(config, addr)),
        },
        Command::Experiments(ExperimentsCommand::Report {
            experiment,
            exposures,
            json,
        }) => experiments_report(&config, experiment, exposures, json),
        Command::Bench(BenchCommand::Recommend {
            dataset,
            taxonomy,
            calls,
            k,
            json,
        }) => runtime()?.block_on(bench_recommend(
            &config, &dataset, &taxonomy, calls, k, json,
        )),
        Command::Bench(store @ BenchCommand::Store { .. }) => {
            runtime()?.block_on(bench_store(&config, store))
        }
        Command::Tag(args) => runtime()?.block_on(tag(&config, args)),
        Command::Enrich(args) => runtime()?.block_on(enrich(&config, args)),
        Command::Search(args) => runtime()?.block_on(search(&config, args)),
        Command::Reindex(args) => runtime()?.block_on(reindex(&config, args)),
        Command::Eval(EvalCommand::Run(args)) => runtime()?.block_on(eval_run(&config, args)),
        Command::Eval(EvalCommand::Compare(args)) => eval_compare(args),
        Command::Eval(EvalCommand::Accept(args)) => eval_accept(args),
        Command::Eval(suite) => runtime()?.block_on(eval_suite(&config, suite)),
        Command::Pipeline(args) => {
            let embedder = Arc::new(Embedder::from_config(&config)?);
            let mut report = pipeline::run(&embedder, &args.sample)?;
            if !args.no_retrieval {
                let store =
                    AnyStore::from_config(&config.store, &config.data_dir.join("pipeline"))?;
                let corpus = BeirDataset::open(&args.dataset)?.corpus;
                let bar = Progress::new("pipeline: ingest", count_records(&corpus), "documents");
                report.retrieval = Some(runtime()?.block_on(pipeline::run_retrieval(
                    &store,
                    embedder.clone(),
                    &args.dataset,
                    &config,
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
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The configured chunker for `embedder`; `on` (a command's --chunking) overrides chunk.enabled.
fn chunker_for(config: &Config, embedder: &Embedder, on: Option<OnOff>) -> Option<Chunker> {
    Chunker::from_config(
        &config.chunk,
        embedder.max_seq_length(),
        on.map(|o| o == OnOff::On),
    )
}

async fn llm_command(config: &Config, cmd: LlmCommand) -> Result<ExitCode> {
    use signaldesk::llm::{AnyLlm, ChatRequest, LlmClient, Message, Sampling};
    match cmd {
        LlmCommand::Chat {
            message,
            provider,
            json_schema,
            system,
            max_tokens,
            temperature,
            top_p,
            seed,
            cache,
            json,
        } => {
            let llm = AnyLlm::from_config(config, provider, cache)?;
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(Message::system(s));
            }
            messages.push(Message::user(message));
            let mut request = ChatRequest::new(messages);
            request.sampling = Sampling {
                max_tokens,
                temperature,
                top_p,
                seed,
                ..Sampling::default()
            };
            if let Some(path) = json_schema {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let schema: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                signaldesk::llm::Schema::parse(&schema)
                    .with_context(|| format!("{}", path.display()))?;
                request.schema_name = path
                    .file_stem()
                    .map(|s| {
                        s.to_string_lossy()
                            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                    })
                    .unwrap_or_else(|| "answer".into());
                request.json_schema = Some(schema);
            }
            let answer = llm.chat(&request).await?;
            if json {
                outln!("{}", serde_json::to_string(&answer)?);
            } else {
                outln!("{}", answer.text);
                eprintln!(
                    "[{} {} | {} prompt + {} completion tokens | {:.0} ms | retries {} | cache {}]",
                    answer.provider,
                    answer.model,
                    answer.usage.prompt_tokens,
                    answer.usage.completion_tokens,
                    answer.latency_ms,
                    answer.retries,
                    if answer.cache_hit { "hit" } else { "miss" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LlmCommand::Serve { addr } => {
            let path = config.models_dir.join(&config.llm.local_model);
            let llm = Arc::new(signaldesk::llm::local::LocalLlm::load(&path)?);
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let bound = listener.local_addr()?;
            outln!(
                "signaldesk llm serve: {} on http://{bound}/v1/chat/completions",
                llm.model()
            );
            std::io::stdout().flush()?;
            let options = signaldesk::llm::serve::ServeOptions::from_config(&config.llm);
            signaldesk::llm::serve::serve(llm, listener, options).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The configured vector store (`edge` under data_dir/edge, or a Qdrant server).
fn configured_store(config: &Config) -> Result<AnyStore> {
    Ok(AnyStore::from_config(
        &config.store,
        &config.data_dir.join("edge"),
    )?)
}

/// What `collections list` and `info` show of one collection.
async fn describe_collection(store: &AnyStore, name: &str) -> Result<serde_json::Value> {
    let physical = store.resolve(name).await?;
    let spec = store
        .collection_spec(&physical)
        .await?
        .ok_or_else(|| signaldesk::store::StoreError::NoCollection(name.to_string()))?;
    let items = store
        .count(&physical, &Filter::parse_pairs(&["chunk_index=0".into()])?)
        .await?;
    let chunks = store.count(&physical, &Filter::default()).await?;
    let aliases: Vec<String> = store
        .list_aliases()
        .await?
        .into_iter()
        .filter(|(_, c)| *c == physical)
        .map(|(a, _)| a)
        .collect();
    Ok(serde_json::json!({
        "name": physical, "backend": store.backend(), "items": items, "chunks": chunks,
        "model": spec.model_id, "model_fingerprint": spec.model_fingerprint,
        "dimension": spec.dimension, "bm25_avg_len": spec.bm25_avg_len, "aliases": aliases,
    }))
}

async fn collections(config: &Config, cmd: CollectionsCommand) -> Result<ExitCode> {
    let store = configured_store(config)?;
    match cmd {
        CollectionsCommand::List { json } => {
            let names = store.list_collections().await?;
            if names.is_empty() && !json {
                eprintln!(
                    "no collections in the {} store yet: `signaldesk ingest FILE` creates one",
                    store.backend()
                );
            }
            if !json && !names.is_empty() {
                outln!(
                    "{:<32} {:>8} {:>8} {:>5}  {:<24} aliases",
                    "collection",
                    "items",
                    "chunks",
                    "dims",
                    "model"
                );
            }
            for name in names {
                let d = describe_collection(&store, &name).await?;
                if json {
                    outln!("{d}");
                } else {
                    let aliases: Vec<&str> = d["aliases"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                        .unwrap_or_default();
                    outln!(
                        "{:<32} {:>8} {:>8} {:>5}  {:<24} {}",
                        name,
                        d["items"],
                        d["chunks"],
                        d["dimension"],
                        d["model"].as_str().unwrap_or("-"),
                        aliases.join(", ")
                    );
                }
            }
        }
        CollectionsCommand::Info { name, json } => {
            let d = describe_collection(&store, &name).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&d)?);
            } else if let serde_json::Value::Object(fields) = d {
                for (k, v) in fields {
                    outln!(
                        "{k:<18} {}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_string)
                    );
                }
            }
        }
        CollectionsCommand::Drop { name, yes } => {
            let physical = store.resolve(&name).await?;
            if store.collection_spec(&physical).await?.is_none() {
                anyhow::bail!("no collection {name:?} in the {} store", store.backend());
            }
            if !yes {
                anyhow::bail!(
                    "this deletes collection {physical:?} and its aliases for good: add --yes to do it"
                );
            }
            store.drop_collection(&name).await?;
            eprintln!("dropped {physical:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn reindex(config: &Config, args: ReindexArgs) -> Result<ExitCode> {
    let options = EmbedderOptions::from_config(config);
    let embedder = Arc::new(Embedder::load(&args.model, options)?);
    let store = configured_store(config)?;
    let name = args
        .collection
        .unwrap_or_else(|| config.store.collection.clone());
    let total = store.count(&name, &Filter::default()).await.ok();
    let bar = Progress::new("reindex", total.map(|t| t as u64), "chunks read");
    let chunker = chunker_for(config, &embedder, Some(args.chunking));
    let summary = signaldesk::ingest::reindex::reindex(
        &store,
        embedder,
        &name,
        chunker,
        args.batch_items,
        |items| bar.set_position(items as u64),
    )
    .await?;
    bar.finish();
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        outln!(
            "reindexed {} items ({} chunks, {} tokens) of {:?}: {} ({}) -> {} ({}, {} dims)",
            summary.items,
            summary.chunks,
            summary.tokens,
            summary.name,
            summary.from,
            summary.from_model,
            summary.to,
            summary.to_model,
            summary.dimension
        );
        outln!(
            "{:?} now points at {}; set embed.model to the new model for ingest and search",
            summary.name,
            summary.to
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a command writes its lines: a file, or standard output for "-".
fn open_output(path: &Path) -> Result<Box<dyn Write>> {
    Ok(if path == Path::new("-") {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ))
    })
}

/// Standard input copied to a file under the data dir (ingest reads its input twice: once to
/// find the last record of each id, once to ingest), removed when dropped.
struct SpooledStdin(PathBuf);

impl SpooledStdin {
    fn new(config: &Config) -> Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        let path = config
            .data_dir
            .join(format!(".stdin-{}.jsonl", std::process::id()));
        let spooled = Self(path);
        let mut file = std::fs::File::create(&spooled.0)
            .with_context(|| format!("cannot create {}", spooled.0.display()))?;
        std::io::copy(&mut std::io::stdin().lock(), &mut file)
            .with_context(|| format!("cannot copy standard input to {}", spooled.0.display()))?;
        Ok(spooled)
    }
}

impl Drop for SpooledStdin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn ingest(config: &Config, args: IngestArgs) -> Result<ExitCode> {
    let embedder = Arc::new(Embedder::from_config(config)?);
    let store = configured_store(config)?;
    let from_stdin = args.file == Path::new("-");
    let rejects = args.rejects.unwrap_or_else(|| {
        if from_stdin {
            return PathBuf::from("stdin.rejects.jsonl");
        }
        let mut name = args.file.file_name().unwrap_or_default().to_os_string();
        name.push(".rejects.jsonl");
        args.file.with_file_name(name)
    });
    let spooled = from_stdin.then(|| SpooledStdin::new(config)).transpose()?;
    let input = spooled
        .as_ref()
        .map_or(args.file.as_path(), |s| s.0.as_path());
    let collection = args
        .collection
        .unwrap_or_else(|| config.store.collection.clone());
    let mut options = IngestOptions::from_config(
        config,
        &collection,
        chunker_for(config, &embedder, args.chunking),
    );
    options.rejects = Some(rejects.clone());
    if let Some(n) = args.batch_items {
        options.batch_items = n.max(1);
    }
    if let Some(n) = args.max_body_bytes {
        options.limits.max_body_bytes = n;
    }
    if let Some(n) = args.max_line_bytes {
        options.max_line_bytes = n;
    }
    let bar = Progress::new("ingest", count_records(input), "records");
    let name = if from_stdin {
        "<stdin>".to_string()
    } else {
        args.file.display().to_string()
    };
    let summary = ingest_file(
        &store,
        embedder,
        input,
        &options,
        |line, reason| bar.suspend(|| eprintln!("{name}:{line}: rejected: {reason}")),
        |items| bar.set_position(items as u64),
    )
    .await?;
    bar.finish();
    if summary.read == 0 {
        eprintln!("ingest: warning: {name} has no records; nothing was ingested");
    } else if summary.read == summary.rejected {
        eprintln!("ingest: warning: every record of {name} was rejected; nothing was ingested");
    }
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "ingest: read {}, new {}, updated {}, unchanged {}, rejected {} ({} chunks, {} tokens embedded)",
            summary.read, summary.new, summary.updated, summary.unchanged, summary.rejected, summary.chunks, summary.tokens
        );
        if summary.duplicates > 0 {
            eprintln!(
                "ingest: {} records had the id of a later record in the file; the last of each id was kept",
                summary.duplicates
            );
        }
    }
    if summary.rejected > 0 {
        eprintln!(
            "ingest: rejected records are listed in {}",
            rejects.display()
        );
        return Ok(ExitCode::from(1));
    }
    let _ = std::fs::remove_file(&rejects);
    Ok(ExitCode::SUCCESS)
}

async fn search(config: &Config, args: SearchArgs) -> Result<ExitCode> {
    if let Some(q) = &args.query {
        anyhow::ensure!(
            !q.trim().is_empty(),
            "the query is empty: give the text to search for (or --queries FILE)"
        );
    }
    anyhow::ensure!(args.k >= 1, "-k must be at least 1");
    let mode = args.mode.unwrap_or(config.search.mode);
    let filter = Filter::parse_pairs(&args.filter)?;
    let embedder = Embedder::from_config(config)?;
    let store = configured_store(config)?;
    let collection = args
        .collection
        .unwrap_or_else(|| config.store.collection.clone());
    let searcher = Searcher::open(&store, &embedder, &collection, &config.search).await?;
    if let Some(path) = args.queries {
        let queries = read_queries(&path)?;
        let texts: Vec<&str> = queries.iter().map(|(_, t)| t.as_str()).collect();
        let results = searcher.search_many(&texts, mode, &filter, args.k).await?;
        let mut out = BufWriter::new(std::io::stdout().lock());
        for ((id, _), hits) in queries.iter().zip(results) {
            writeln!(out, "{}", serde_json::json!({"query_id": id, "hits": hits}))?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let query = args.query.unwrap_or_default();
    let hits = searcher.search(&query, mode, &filter, args.k).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&hits)?);
    } else {
        for (i, h) in hits.iter().enumerate() {
            outln!(
                "{:>2}. {:.4}  {}  {}  [chunk {} bytes {}..{}]",
                i + 1,
                h.score,
                h.id,
                h.title.as_deref().unwrap_or(""),
                h.chunk,
                h.start,
                h.end
            );
        }
        if hits.is_empty() {
            outln!("no results");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Queries from a JSONL file: `{"id"|"_id", "text"}` per line; blank lines skipped.
fn read_queries(path: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, v) in read_jsonl_objects(path)? {
        let id = match v.get("id").or_else(|| v.get("_id")) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(x)) => x.to_string(),
            _ => anyhow::bail!("{}:{n}: no \"id\" (or \"_id\") field", path.display()),
        };
        let q = v
            .get("text")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| anyhow::anyhow!("{}:{n}: no \"text\" field", path.display()))?;
        out.push((id, q.to_string()));
    }
    Ok(out)
}

/// `signaldesk eval retrieval`'s arguments.
#[derive(Args)]
struct EvalRetrievalArgs {
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

/// `enrich --summaries`: summarize the stored items and keep the summaries beside them.
async fn summarize_stored(
    config: &Config,
    store: &AnyStore,
    embedder: &Embedder,
    collection: &str,
    args: &EnrichArgs,
    total: usize,
) -> Result<()> {
    use signaldesk::enrich::signals::{summarize_collection, EnrichOptions};
    use signaldesk::enrich::summarizer::Summarizer;
    let mut config = config.clone();
    if let Some(n) = args.llm.concurrency {
        config.llm.concurrency = config.llm.concurrency.max(n);
    }
    let llm = signaldesk::llm::AnyLlm::from_config(&config, args.llm.provider, None)?;
    let summarizer = Summarizer::new(
        &llm,
        embedder,
        &config.prompts_dir,
        config.enrich.summary.clone(),
    )?;
    let mut lineage = summarizer.lineage();
    lineage["summarized_at"] =
        serde_json::json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let bar = Progress::new("summaries", Some(total as u64), "items");
    let options = EnrichOptions {
        only_stale: args.only_stale,
        limit: args.limit,
        price: llm_price(&config, Some(&llm)),
    };
    let spent_before = llm_cost();
    let s = summarize_collection(
        store,
        collection,
        &summarizer,
        &lineage,
        &options,
        args.llm
            .concurrency
            .unwrap_or(config.enrich.llm.concurrency),
        |n| bar.set_position(n as u64),
    )
    .await?;
    bar.finish();
    eprintln!(
        "enrich: summarized {} of {} items ({} already current) in {:.1} s; {} fell back to extraction, {} cut to their word limits; LLM {} prompt + {} completion tokens, ${:.4}",
        s.summarized, s.items, s.fresh, s.seconds, s.fallbacks, s.over_limit,
        s.prompt_tokens, s.completion_tokens, llm_cost() - spent_before
    );
    Ok(())
}

/// The configured price of a remote LLM (`llm.prices[llm.model]`); local models cost nothing.
fn llm_price(
    config: &Config,
    llm: Option<&signaldesk::llm::AnyLlm>,
) -> Option<signaldesk::config::Price> {
    match llm? {
        signaldesk::llm::AnyLlm::OpenAi(_) => config.llm.prices.get(&config.llm.model).copied(),
        signaldesk::llm::AnyLlm::Local(_) => None,
    }
}

/// Dollars spent on LLM calls so far in this process (`llm.prices`).
fn llm_cost() -> f64 {
    signaldesk::llm::accounting::snapshot()
        .values()
        .map(|t| t.cost_usd)
        .sum()
}

/// How taggers that call an LLM (`llm`, `ensemble` with enrich.ensemble.llm_weight > 0) reach it.
#[derive(Debug, Clone, clap::Args)]
struct LlmTagArgs {
    /// Which LLM answers (default: llm.provider; auto = the server at llm.base_url if set, else
    /// the local model).
    #[arg(long, value_enum)]
    provider: Option<signaldesk::llm::LlmProvider>,
    /// LLM calls in flight at once [default: enrich.llm.concurrency].
    #[arg(long)]
    concurrency: Option<usize>,
}

/// The LLM client a tagger of `kind` needs (none for taggers that do not call one), and the
/// config with `--concurrency` applied.
fn tagger_llm(
    config: &Config,
    kind: TaggerKind,
    args: &LlmTagArgs,
) -> Result<(Config, Option<signaldesk::llm::AnyLlm>)> {
    let mut config = config.clone();
    if let Some(n) = args.concurrency {
        anyhow::ensure!(n > 0, "--concurrency must be at least 1");
        config.enrich.llm.concurrency = n;
        config.llm.concurrency = config.llm.concurrency.max(n);
    }
    if !kind.calls_llm(&config) {
        return Ok((config, None));
    }
    let llm = signaldesk::llm::AnyLlm::from_config(&config, args.provider, None)?;
    Ok((config, Some(llm)))
}

async fn tag(config: &Config, args: TagArgs) -> Result<ExitCode> {
    use signaldesk::enrich::taxonomy::Taxonomy;
    let taxonomy = args.taxonomy.as_deref().map(Taxonomy::load).transpose()?;
    let embedder = Arc::new(Embedder::from_config(config)?);
    let store = configured_store(config)?;
    let (config, llm) = tagger_llm(config, args.tagger, &args.llm)?;
    let config = &config;
    let (tagger, lineage) = signaldesk::enrich::open_tagger(
        args.tagger,
        &store,
        &embedder,
        config,
        taxonomy.as_ref(),
        args.memory.clone(),
        llm.as_ref(),
    )
    .await?;
    run_tag_file(
        config,
        &args,
        &tagger,
        &embedder,
        taxonomy.as_ref(),
        &lineage,
    )
    .await
}

async fn enrich(config: &Config, args: EnrichArgs) -> Result<ExitCode> {
    use signaldesk::enrich::signals::{enrich_collection, EnrichOptions};
    use signaldesk::enrich::taxonomy::Taxonomy;
    let taxonomy = args.taxonomy.as_deref().map(Taxonomy::load).transpose()?;
    let embedder = Arc::new(Embedder::from_config(config)?);
    let store = configured_store(config)?;
    let collection = args
        .collection
        .clone()
        .unwrap_or_else(|| config.store.collection.clone());
    let total = store
        .count(
            &collection,
            &Filter::parse_pairs(&["chunk_index=0".into()])?,
        )
        .await?;
    let (config, llm) = tagger_llm(config, args.tagger, &args.llm)?;
    let config = &config;
    let (tagger, lineage) = signaldesk::enrich::open_tagger(
        args.tagger,
        &store,
        &embedder,
        config,
        taxonomy.as_ref(),
        args.memory.clone(),
        llm.as_ref(),
    )
    .await?;
    let total = args.limit.map_or(total, |l| l.min(total));
    let bar = Progress::new("enrich", Some(total as u64), "items");
    let options = EnrichOptions {
        only_stale: args.only_stale,
        limit: args.limit,
        price: llm_price(config, llm.as_ref()),
    };
    let summary = enrich_collection(&store, &collection, &tagger, &lineage, &options, |n| {
        bar.set_position(n as u64)
    })
    .await?;
    bar.finish();
    if args.summaries {
        summarize_stored(config, &store, &embedder, &collection, &args, total).await?;
    }
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "enrich: {} items of {collection:?}: tagged {}, already current {} in {:.1} s ({:.1} items/s)",
            summary.items, summary.tagged, summary.fresh, summary.seconds, summary.items_per_s
        );
        if summary.prompt_tokens + summary.completion_tokens > 0 || summary.fallbacks > 0 {
            eprintln!(
                "enrich: LLM {} prompt + {} completion tokens, ${:.4}; {} items fell back to the other signals",
                summary.prompt_tokens, summary.completion_tokens, llm_cost(), summary.fallbacks
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `signaldesk tag`'s file loop and summary, for any tagger.
async fn run_tag_file(
    config: &Config,
    args: &TagArgs,
    tagger: &impl signaldesk::enrich::Tagger,
    embedder: &Embedder,
    taxonomy: Option<&signaldesk::enrich::taxonomy::Taxonomy>,
    lineage: &serde_json::Value,
) -> Result<ExitCode> {
    let from_stdin = args.file == Path::new("-");
    let spooled = from_stdin.then(|| SpooledStdin::new(config)).transpose()?;
    let input = spooled
        .as_ref()
        .map_or(args.file.as_path(), |s| s.0.as_path());
    let name = if from_stdin {
        "<stdin>".to_string()
    } else {
        args.file.display().to_string()
    };
    let bar = Progress::new("tag", count_records(input), "items");
    let mut out = open_output(&args.output)?;
    let options = signaldesk::enrich::tag_file::TagFileOptions {
        taxonomy,
        with_ancestors: args.with_ancestors,
        max_depth: args.max_depth,
        limits: signaldesk::content::Limits {
            max_body_bytes: config.ingest.max_body_bytes,
        },
        max_line_bytes: config.ingest.max_line_bytes,
        lineage: lineage.clone(),
    };
    let spent_before = llm_cost();
    let mut summary = signaldesk::enrich::tag_file::tag_file(
        tagger,
        embedder,
        input,
        &options,
        &mut out,
        |line, reason| bar.suspend(|| eprintln!("{name}:{line}: rejected: {reason}")),
        |n| bar.set_position(n as u64),
    )
    .await?;
    summary.cost_usd = llm_cost() - spent_before;
    bar.finish();
    drop(out);
    if args.json {
        eprintln!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "tag: read {}, tagged {}, rejected {} in {:.1} s ({:.1} items/s, {:.0} tokens/s, embedding included)",
            summary.read, summary.tagged, summary.rejected, summary.seconds, summary.items_per_s, summary.tokens_per_s
        );
        if summary.prompt_tokens + summary.completion_tokens > 0 || summary.fallbacks > 0 {
            eprintln!(
                "tag: LLM {} prompt + {} completion tokens, ${:.4}; {} items fell back to the other signals",
                summary.prompt_tokens, summary.completion_tokens, summary.cost_usd, summary.fallbacks
            );
        }
    }
    Ok(if summary.rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One suite command (`eval retrieval|tagging|summaries|recommend`).
async fn eval_suite(config: &Config, command: EvalCommand) -> Result<ExitCode> {
    match command {
        EvalCommand::Retrieval(args) => eval_retrieval(config, args).await,
        EvalCommand::Tagging(args) => eval_tagging(config, args).await,
        EvalCommand::Recommend(args) => eval_recommend(config, args).await,
        EvalCommand::Summaries(args) => eval_summaries(config, args).await,
        EvalCommand::Run(_) | EvalCommand::Compare(_) | EvalCommand::Accept(_) => {
            anyhow::bail!(
                "not a suite: a suite's args start with retrieval, tagging, summaries or recommend"
            )
        }
    }
}

/// The embedding model, loaded once per process and configuration: `eval run` runs several
/// suites, and the embedding cache (one redb file) can only be open once.
fn shared_embedder(config: &Config) -> Result<Arc<Embedder>> {
    static LOADED: std::sync::Mutex<Vec<(String, Arc<Embedder>)>> =
        std::sync::Mutex::new(Vec::new());
    let key = serde_json::json!([config.models_dir, config.cache_dir, config.embed]).to_string();
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, e)) = loaded.iter().find(|(k, _)| *k == key) {
        return Ok(e.clone());
    }
    let embedder = Arc::new(Embedder::from_config(config)?);
    loaded.push((key, embedder.clone()));
    Ok(embedder)
}

async fn eval_run(config: &Config, args: EvalRunArgs) -> Result<ExitCode> {
    use signaldesk::eval::gate::{
        combined_markdown, read_report, report_path, SuiteList, SuiteRun,
    };
    let list = SuiteList::load(&args.suites)?;
    let suites = list.select(&args.only).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut runs = Vec::new();
    for (i, spec) in suites.iter().enumerate() {
        let out = report_path(&args.output, &spec.name);
        eprintln!(
            "== suite {}/{}: {} (signaldesk eval {} --output {})",
            i + 1,
            suites.len(),
            spec.name,
            spec.args.join(" "),
            out.display()
        );
        let mut argv = vec!["signaldesk".to_string(), "eval".to_string()];
        argv.extend(spec.args.iter().cloned());
        argv.extend(["--output".to_string(), out.display().to_string()]);
        let started = std::time::Instant::now();
        let outcome = match (
            Cli::try_parse_from(&argv),
            config.with_overrides(&spec.config),
        ) {
            (_, Err(e)) => Err(anyhow::anyhow!("the suite's config: {e}")),
            (
                Ok(Cli {
                    command: Command::Eval(command),
                    ..
                }),
                Ok(config),
            ) => Box::pin(eval_suite(&config, command)).await,
            (Ok(_), _) => Err(anyhow::anyhow!("args must name an eval suite")),
            (Err(e), _) => Err(anyhow::anyhow!("args do not parse: {e}")),
        };
        let report = match outcome {
            Ok(code) if code == ExitCode::SUCCESS => read_report(&out).map_err(|e| e.to_string()),
            Ok(_) => Err("the suite's command exited with a failure (see above)".to_string()),
            Err(e) => Err(describe(&e)),
        };
        let seconds = started.elapsed().as_secs_f64();
        match &report {
            Ok(_) => eprintln!("== {} done in {seconds:.1} s", spec.name),
            Err(e) => eprintln!("== {} FAILED after {seconds:.1} s: {e}", spec.name),
        }
        runs.push(SuiteRun {
            name: spec.name.clone(),
            seconds,
            report,
        });
    }
    let baselines = Some(args.baselines.as_path()).filter(|d| d.is_dir());
    let markdown = combined_markdown(&suites, &runs, baselines, &args.output);
    let combined = args.output.join("report.md");
    std::fs::write(&combined, &markdown)
        .with_context(|| format!("cannot write {}", combined.display()))?;
    outln!("{markdown}");
    outln!("combined report: {}", combined.display());
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| r.report.is_err())
        .map(|r| r.name.as_str())
        .collect();
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
    use signaldesk::eval::gate::{compare_dirs, SuiteList};
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
    use signaldesk::eval::gate::{accept, SuiteList};
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

async fn eval_tagging(config: &Config, args: EvalTaggingArgs) -> Result<ExitCode> {
    use signaldesk::enrich::taxonomy::Taxonomy;
    use signaldesk::eval::tagging::{
        evaluate_ensemble, evaluate_knn, evaluate_llm, evaluate_zeroshot, split_file,
        TaggingEvalOptions,
    };
    let taxonomy = Taxonomy::load(&args.taxonomy)?;
    // Missing splits fail now, not after a long ingest.
    let train = split_file(&args.dataset, "train")?;
    split_file(&args.dataset, "test")?;
    let embedder = shared_embedder(config)?;
    let store = AnyStore::from_config(&config.store, &config.data_dir.join("eval"))?;
    let bar = Progress::new("eval: memory ingest", count_records(&train), "documents");
    let options = TaggingEvalOptions {
        tune: !args.no_tune,
        objective: args.objective,
        validation: args.validation,
        limit: args.limit,
    };
    let report = match args.tagger {
        TaggerKind::Knn => {
            evaluate_knn(
                &store,
                embedder,
                config,
                &args.dataset,
                &taxonomy,
                &options,
                |n| bar.set_position(n as u64),
            )
            .await?
        }
        TaggerKind::Zeroshot => {
            evaluate_zeroshot(&store, embedder, config, &args.dataset, &taxonomy, &options).await?
        }
        TaggerKind::Llm => {
            let (config, llm) = tagger_llm(config, args.tagger, &args.llm)?;
            let llm = llm.context("the llm tagger needs an LLM")?;
            evaluate_llm(
                &store,
                embedder,
                &config,
                &args.dataset,
                &taxonomy,
                &options,
                &llm,
                |n| bar.set_position(n as u64),
            )
            .await?
        }
        TaggerKind::Ensemble => {
            evaluate_ensemble(
                &store,
                embedder,
                config,
                &args.dataset,
                &taxonomy,
                &options,
                |n| bar.set_position(n as u64),
            )
            .await?
        }
    };
    bar.finish();
    report
        .write(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let c = &report.config;
    let settings = match args.tagger {
        TaggerKind::Knn => format!(
            "knn k={} threshold={:.2} weighting={}",
            c["k"],
            c["threshold"].as_f64().unwrap_or_default(),
            c["weighting"].as_str().unwrap_or("-")
        ),
        TaggerKind::Zeroshot => format!(
            "zeroshot threshold={:.3} max_labels={}",
            c["threshold"].as_f64().unwrap_or_default(),
            c["max_labels"]
        ),
        TaggerKind::Llm => format!(
            "llm {} via {} (candidates from knn k={}; {} of {} items fell back to knn)",
            c["llm_model"].as_str().unwrap_or("-"),
            c["prompt"].as_str().unwrap_or("-"),
            c["k"],
            c["fallbacks"],
            c["test_documents"]
        ),
        TaggerKind::Ensemble => format!(
            "ensemble head_weight={:.2} knn_weight={:.2} threshold={:.3} (knn k={})",
            c["head_weight"].as_f64().unwrap_or_default(),
            c["knn_weight"].as_f64().unwrap_or_default(),
            c["threshold"].as_f64().unwrap_or_default(),
            c["k"]
        ),
    };
    outln!(
        "tagging on {} ({} test documents, taxonomy {}): {settings}",
        report.dataset,
        c["test_documents"],
        c["taxonomy"].as_str().unwrap_or("-"),
    );
    if let Some(v) = c["validation_metrics"].as_object() {
        outln!(
            "  tuned on validation for {}: micro-F1 {:.4}, macro-F1 {:.4} (set them in enrich.* to use them)",
            c["tune_objective"].as_str().unwrap_or("-"),
            v["micro_f1"].as_f64().unwrap_or_default(),
            v["macro_f1"].as_f64().unwrap_or_default()
        );
    }
    for key in ["micro_precision", "micro_recall", "micro_f1", "macro_f1"] {
        outln!(
            "  {key:<16} {:.4}",
            report.metrics.get(key).copied().unwrap_or(0.0)
        );
    }
    outln!("report: {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

async fn serve_api(config: Config, addr: Option<String>) -> Result<ExitCode> {
    use signaldesk::api::{ApiParts, ApiState, OpenTagger};
    use signaldesk::enrich::taxonomy::Taxonomy;
    anyhow::ensure!(
        !config.api.taggers.is_empty(),
        "api.taggers is empty: name at least one tagger"
    );
    if config.api.keys.is_empty() {
        tracing::warn!("api.keys is empty: every /v1 request will be refused with 401");
    }
    // The server lives as long as the process: the store, embedder, taxonomy and LLM are leaked
    // once so the taggers can borrow them from every request.
    let store: &'static AnyStore = Box::leak(Box::new(configured_store(&config)?));
    let embedder: &'static Arc<Embedder> =
        Box::leak(Box::new(Arc::new(Embedder::from_config(&config)?)));
    let taxonomy: Option<&'static Taxonomy> = if config.api.taxonomy.as_os_str().is_empty() {
        None
    } else {
        Some(Box::leak(Box::new(Taxonomy::load(&config.api.taxonomy)?)))
    };
    let config: &'static Config = Box::leak(Box::new(config));
    let llm: Option<&'static signaldesk::llm::AnyLlm> = if config.api.llm {
        let llm = signaldesk::llm::AnyLlm::from_config(config, None, None)
            .context("opening the LLM (api.llm = false turns summaries off)")?;
        Some(Box::leak(Box::new(llm)))
    } else {
        None
    };
    let mut taggers = std::collections::HashMap::new();
    for &kind in &config.api.taggers {
        let (tagger, lineage) =
            signaldesk::enrich::open_tagger(kind, store, embedder, config, taxonomy, None, llm)
                .await
                .with_context(|| format!("opening the {kind:?} tagger"))?;
        taggers.insert(kind, OpenTagger { tagger, lineage });
    }
    let summarizer = match llm {
        Some(llm) => {
            let summarizer = signaldesk::enrich::summarizer::Summarizer::new(
                llm,
                embedder,
                &config.prompts_dir,
                config.enrich.summary.clone(),
            )?;
            let lineage = summarizer.lineage();
            Some((summarizer, lineage))
        }
        None => None,
    };
    let recommender =
        match signaldesk::rank::service::RecommendService::open(store, config, true).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "recommendations are off until content is ingested");
                None
            }
        };
    let state = Arc::new(ApiState::new(ApiParts {
        store,
        embedder,
        config,
        taggers,
        default_tagger: config.api.taggers[0],
        taxonomy,
        recommender,
        llm,
        summarizer,
    })?);
    let addr = addr.unwrap_or_else(|| config.api.addr.clone());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("signaldesk API on http://{}", listener.local_addr()?);
    signaldesk::api::serve(state, listener).await?;
    Ok(ExitCode::SUCCESS)
}

/// The objects of a JSONL file with their line numbers, naming the line of a bad one; blank
/// lines skipped.
fn read_jsonl_objects(path: &Path) -> Result<Vec<(usize, serde_json::Value)>> {
    let mut out = Vec::new();
    for line in InputFile::open(path)?.lines(1 << 20) {
        let line = line?;
        let n = line.number;
        let text = line
            .content
            .map_err(|e| anyhow::anyhow!("{}:{n}: {e}", path.display()))?;
        if text.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}:{n}: not JSON: {e}", path.display()))?;
        anyhow::ensure!(v.is_object(), "{}:{n}: not a JSON object", path.display());
        out.push((n, v));
    }
    Ok(out)
}

async fn bench_http(
    mut plan: signaldesk::api::load::LoadPlan,
    rates: &[f64],
    p99_ms: Option<f64>,
    json: bool,
) -> Result<ExitCode> {
    let mut best: Option<f64> = None;
    for &rate in rates {
        plan.rate = rate;
        let needed = (rate * plan.duration.as_secs_f64()).round() as usize;
        if plan.start + needed > plan.inputs.len() {
            eprintln!(
                "bench http: warning: {} inputs for {} requests so far; inputs repeat from here",
                plan.inputs.len(),
                plan.start + needed
            );
        }
        let r = signaldesk::api::load::run(&plan).await?;
        plan.start += needed;
        if json {
            outln!("{}", serde_json::to_string(&r)?);
        } else {
            outln!(
                "{:?} at {rate}/s for {:.0} s: {} sent, {:.1}/s achieved, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, errors {:?}",
                r.route, plan.duration.as_secs_f64(), r.sent, r.achieved_rps, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.errors
            );
        }
        if p99_ms.is_some_and(|t| r.p99_ms < t && r.error_count() == 0) {
            best = Some(best.map_or(rate, |b: f64| b.max(rate)));
        }
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

async fn feedback_export(config: &Config, format: ExportFormat, output: &Path) -> Result<ExitCode> {
    use signaldesk::enrich::editorial::{export_tagging_gold, read_log};
    let ExportFormat::TaggingGold = format;
    let log = signaldesk::api::editorial_log_path(config);
    let decisions = read_log(&log)?;
    if decisions.is_empty() {
        eprintln!(
            "feedback export: {} holds no decisions; nothing to export",
            log.display()
        );
    }
    let store = configured_store(config)?;
    let mut out = open_output(output)?;
    let summary =
        export_tagging_gold(&store, &config.store.collection, &decisions, &mut out).await?;
    out.flush()?;
    eprintln!(
        "feedback export: {} items from {} decisions{}{}",
        summary.items,
        summary.decisions,
        if summary.missing > 0 {
            format!("; {} reviewed items are no longer stored", summary.missing)
        } else {
            String::new()
        },
        if summary.empty > 0 {
            format!("; {} items had every label rejected", summary.empty)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn interactions_ingest(config: &Config, file: &Path, rejects_path: &Path) -> Result<ExitCode> {
    use signaldesk::rank::interactions::{read_file, InteractionStore};
    use signaldesk::rank::service::RankPaths;
    let (events, rejects) = read_file(file)?;
    let store = InteractionStore::open(&RankPaths::of(config).interactions)?;
    let mut added = 0;
    for batch in events.chunks(10_000) {
        added += store.append(batch)?;
    }
    if !rejects.is_empty() {
        let mut out = BufWriter::new(
            std::fs::File::create(rejects_path)
                .with_context(|| format!("cannot write {}", rejects_path.display()))?,
        );
        for r in &rejects {
            eprintln!("{}:{}: {}", file.display(), r.line, r.reason);
            writeln!(
                out,
                "{}",
                serde_json::json!({"file": file, "line": r.line, "reason": r.reason})
            )?;
        }
        out.flush()?;
    }
    outln!(
        "{} interactions read, {added} new, {} already in the log, {} rejected{} ({})",
        events.len(),
        events.len() - added,
        rejects.len(),
        if rejects.is_empty() {
            String::new()
        } else {
            format!(" (see {})", rejects_path.display())
        },
        store.path().display()
    );
    Ok(if rejects.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn rank_train(config: &Config, drop: &[String], output: Option<PathBuf>) -> Result<ExitCode> {
    use signaldesk::rank::catalogue::Catalogue;
    use signaldesk::rank::interactions::InteractionStore;
    use signaldesk::rank::service::{collection_name, RankPaths};
    let paths = RankPaths::of(config);
    let store = configured_store(config)?;
    let collection = store.resolve(&collection_name(config)).await?;
    let catalogue = Catalogue::load(&store, &collection).await?;
    let events = InteractionStore::open(&paths.interactions)?.all()?;
    anyhow::ensure!(
        !events.is_empty(),
        "the interaction log is empty: run `signaldesk interactions ingest FILE` first"
    );
    let bar = Progress::new("rank train", None, "users");
    let drop: Vec<&str> = drop.iter().map(String::as_str).collect();
    let model = signaldesk::rank::train_blend(
        &store,
        &collection,
        &catalogue,
        &events,
        &config.rank,
        &drop,
        |d, _| bar.set_position(d as u64),
    )
    .await?;
    bar.finish();
    let path = output.unwrap_or(paths.model);
    model.save(&path)?;
    outln!(
        "blend {} trained on {} ({} items, {} interactions): {}",
        model.version,
        collection,
        catalogue.len(),
        events.len(),
        model.training
    );
    for (f, w) in model.features.iter().zip(&model.weights) {
        outln!("  {f:<14} {w:+.4}");
    }
    outln!("saved: {}", path.display());
    Ok(ExitCode::SUCCESS)
}

async fn recommend(config: &Config, args: RecommendArgs) -> Result<ExitCode> {
    use signaldesk::rank::service::RecommendService;
    let store = configured_store(config)?;
    let service = RecommendService::open(&store, config, true).await?;
    let served = service
        .recommend(
            &args.user,
            args.k,
            args.seed.as_deref(),
            args.experiment.as_deref(),
            args.ranker,
            None,
        )
        .await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&served)?);
        return Ok(ExitCode::SUCCESS);
    }
    let arm = served
        .assignment
        .as_ref()
        .map(|a| format!(", experiment {} variant {}", a.experiment, a.served))
        .unwrap_or_default();
    outln!(
        "{} for user {} (ranker {}{}{arm}):",
        served.items.len(),
        served.user,
        served.ranker.name(),
        served
            .model_version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default()
    );
    for (rank, item) in served.items.iter().enumerate() {
        let parts: Vec<String> = item
            .contributions
            .iter()
            .filter(|(k, _)| *k != "relevance")
            .map(|(k, v)| format!("{k} {v:+.3}"))
            .collect();
        outln!(
            "{:>3}. {:<12} {:>8.4}  {}  [{}]",
            rank + 1,
            item.id,
            item.score,
            item.title,
            item.sources.join("+")
        );
        outln!("     {}", parts.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn experiments_report(
    config: &Config,
    only: Option<String>,
    exposures: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    use signaldesk::rank::experiments::{read_exposures, readout, ExperimentsFile};
    use signaldesk::rank::interactions::InteractionStore;
    use signaldesk::rank::service::RankPaths;
    let paths = RankPaths::of(config);
    let text = std::fs::read_to_string(&paths.experiments)
        .with_context(|| format!("cannot read {}", paths.experiments.display()))?;
    let file = ExperimentsFile::parse(&text, &paths.experiments.display().to_string())?;
    let exposures = read_exposures(&exposures.unwrap_or(paths.exposures))?;
    let interactions = InteractionStore::open(&paths.interactions)?.all()?;
    let readouts: Vec<_> = file
        .experiments
        .iter()
        .filter(|x| only.as_ref().is_none_or(|n| *n == x.name))
        .map(|x| readout(x, &exposures, &interactions, &config.rank))
        .collect();
    anyhow::ensure!(
        !readouts.is_empty(),
        "no such experiment in {}",
        paths.experiments.display()
    );
    if json {
        outln!("{}", serde_json::to_string_pretty(&readouts)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in &readouts {
        outln!("experiment {} (control {}):", r.experiment, r.control);
        outln!(
            "  {:<12} {:>9} {:>7} {:>7} {:>8} {:>19} {:>9} {:>21}",
            "variant",
            "exposures",
            "users",
            "clicks",
            "CTR",
            "95% CI",
            "diff",
            "95% CI"
        );
        for a in &r.arms {
            let diff = a.diff.map(|d| format!("{d:+.4}")).unwrap_or("-".into());
            let ci = match (a.diff_low, a.diff_high) {
                (Some(l), Some(h)) => format!("[{l:+.4}, {h:+.4}]"),
                _ => "-".into(),
            };
            outln!(
                "  {:<12} {:>9} {:>7} {:>7} {:>8.4} {:>19} {:>9} {:>21}",
                a.variant,
                a.exposures,
                a.users,
                a.clicks,
                a.ctr,
                format!("[{:.4}, {:.4}]", a.ctr_low, a.ctr_high),
                diff,
                ci
            );
        }
        outln!(
            "  sample ratio: chi2 {:.2}, p {:.4}{}",
            r.srm_chi2,
            r.srm_p,
            if r.srm {
                "  MISMATCH: users are not split as allocated; do not trust the differences"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `signaldesk bench store`: see [`BenchCommand::Store`].
async fn bench_store(config: &Config, command: BenchCommand) -> Result<ExitCode> {
    use signaldesk::jobs::bench_store::{
        exact_top_k, markdown_table, read_base, Footprint, Rss, ScaleRun, SearchSetting, Synthetic,
    };
    let BenchCommand::Store {
        base,
        mut sizes,
        quantization,
        queries,
        k,
        noise,
        seed,
        batch,
        server_pid,
        server_storage,
        output,
        plot,
        keep,
        hnsw_ef,
        oversampling,
        plot_only,
    } = command
    else {
        unreachable!("bench_store is called with BenchCommand::Store")
    };
    if let (true, Some(path), Some(output)) = (plot_only, &plot, &output) {
        return plot_rows(output, path);
    }
    anyhow::ensure!(
        k > 0 && queries > 0 && batch > 0,
        "--k, --queries and --batch must be > 0"
    );
    sizes.sort_unstable();
    sizes.dedup();
    anyhow::ensure!(
        sizes.first().is_some_and(|&s| s >= k),
        "every size must be at least --k"
    );
    let synthetic = Synthetic {
        base: read_base(&base)?,
        noise,
        seed,
    };
    eprintln!(
        "bench store: {} base vectors of dimension {}, noise {noise}, {queries} queries, k {k}",
        synthetic.base.len(),
        synthetic.dimension()
    );
    let query_vectors: Vec<Vec<f32>> = (0..queries).map(|n| synthetic.query(n)).collect();
    let largest = *sizes.last().unwrap_or(&0);
    let bar = Progress::new("exact top-k", Some(largest as u64), "points");
    let truth = exact_top_k(&synthetic, &query_vectors, &sizes, k, |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish();
    // The configured search settings, or each combination of the lists given (0: the default).
    let efs = if hnsw_ef.is_empty() {
        vec![config.search.hnsw_ef]
    } else {
        hnsw_ef
    };
    let overs = if oversampling.is_empty() {
        vec![config.search.oversampling]
    } else {
        oversampling
    };
    let settings: Vec<SearchSetting> = efs
        .iter()
        .flat_map(|&ef| {
            overs.iter().map(move |&o| SearchSetting {
                hnsw_ef: (ef > 0).then_some(ef),
                oversampling: (o > 0.0).then_some(o),
            })
        })
        .collect();
    anyhow::ensure!(
        settings
            .iter()
            .all(|s| s.oversampling.is_none_or(|o| o >= 1.0)),
        "--oversampling values are 0 (the store's default) or >= 1"
    );
    // Opened before the long runs, so a bad path fails at once; each row is appended as measured.
    let mut rows_file = match &output {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => None,
    };
    let edge_root = config.data_dir.join("bench");
    let baseline = Rss::of(None).unwrap_or_default();
    let mut rows = Vec::new();
    for &q in &quantization {
        let mut store_config = config.store.clone();
        store_config.quantization = q;
        let store = AnyStore::from_config(&store_config, &edge_root)?;
        let footprint = match store {
            AnyStore::Edge(_) => Footprint::InProcess {
                root: edge_root.clone(),
                baseline,
            },
            AnyStore::Qdrant(_) => Footprint::Server {
                pid: server_pid,
                storage: server_storage.clone(),
            },
        };
        let q_name = serde_json::to_value(q)?
            .as_str()
            .unwrap_or("none")
            .to_string();
        for (&points, truth) in sizes.iter().zip(&truth) {
            let run = ScaleRun {
                synthetic: &synthetic,
                queries: &query_vectors,
                truth,
                points,
                k,
                settings: &settings,
                quantization: &q_name,
                batch,
                footprint: &footprint,
            };
            let label = format!("{} {points} {q_name}", store.backend());
            let bar = Progress::new(&label, Some(points as u64), "points");
            let mut stage = String::new();
            let measured = run
                .measure(
                    &store,
                    &format!("bench-scale-{points}-{q_name}"),
                    keep,
                    |s, done| {
                        if s != stage {
                            stage = s.to_string();
                            bar.suspend(|| eprintln!("{label}: {s}"));
                        }
                        if s == "upsert" {
                            bar.set_position(done as u64);
                        }
                    },
                )
                .await?;
            bar.finish();
            for row in measured {
                eprintln!(
                    "{label} ({}): {:.0} points/s, index {:.1} s, p50 {:.2} ms, p99 {:.2} ms, recall@{k} {:.4}",
                    row.settings(),
                    row.upsert_points_per_s,
                    row.index_s,
                    row.search_p50_ms,
                    row.search_p99_ms,
                    row.recall
                );
                if let Some(file) = &mut rows_file {
                    writeln!(file, "{}", serde_json::to_string(&row)?)?;
                }
                rows.push(row);
            }
        }
    }
    drop(rows_file);
    let Some((path, output)) = plot.zip(output) else {
        print!("{}", markdown_table(&rows));
        return Ok(ExitCode::SUCCESS);
    };
    plot_rows(&output, &path)
}

/// Print every row of `output` as the scale table and draw them as the PNG at `path`.
fn plot_rows(output: &Path, path: &Path) -> Result<ExitCode> {
    use signaldesk::jobs::bench_store::{markdown_table, read_rows, scale_series};
    let all = read_rows(output)?;
    print!("{}", markdown_table(&all));
    signaldesk::eval::plot::scale_curve(&scale_series(&all), path)?;
    eprintln!(
        "bench store: plot of {} rows written to {}",
        all.len(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn bench_recommend(
    config: &Config,
    dataset: &Path,
    taxonomy: &Path,
    calls: usize,
    k: usize,
    json: bool,
) -> Result<ExitCode> {
    use signaldesk::eval::recommend::prepare;
    use signaldesk::rank::recommender::{RankerKind, RecommendRequest, Recommender};
    use signaldesk::rank::signals::InteractionSignals;
    anyhow::ensure!(calls >= 1, "--calls must be at least 1");
    let embedder = Arc::new(Embedder::from_config(config)?);
    let store = AnyStore::from_config(&config.store, &config.data_dir.join("eval"))?;
    let prepared = prepare(&store, embedder, config, dataset, taxonomy, |_, _, _| {}).await?;
    let model = signaldesk::rank::train_blend(
        &store,
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
        store: &store,
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
    // Warm-up: one pass over the users, not timed.
    for u in users.iter().take(50) {
        request.user = u.clone();
        recommender.recommend(&request).await?;
    }
    let bar = Progress::new("bench recommend", Some(calls as u64), "calls");
    let mut millis = Vec::with_capacity(calls);
    let started = std::time::Instant::now();
    for i in 0..calls {
        request.user = users[(i * 7919) % users.len()].clone();
        let t = std::time::Instant::now();
        let list = recommender.recommend(&request).await?;
        millis.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            !list.is_empty(),
            "no recommendations for user {}",
            request.user
        );
        bar.set_position(i as u64 + 1);
    }
    bar.finish();
    let total = started.elapsed().as_secs_f64();
    millis.sort_by(f64::total_cmp);
    let pct = |q: f64| signaldesk::observe::nearest_rank(&millis, q);
    let report = serde_json::json!({
        "calls": calls,
        "users": users.len(),
        "items": recommender.catalogue.len(),
        "k": k,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": millis[millis.len() - 1],
        "mean_ms": millis.iter().sum::<f64>() / millis.len() as f64,
        "calls_per_s": calls as f64 / total,
        "backend": store.backend(),
        "model": model.version,
    });
    if json {
        outln!("{report}");
    } else {
        outln!(
            "recommend, k = {k}, {} items, {} users, {calls} calls: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, mean {:.2} ms ({:.0} calls/s, one at a time)",
            report["items"], report["users"], pct(0.5), pct(0.9), pct(0.99), report["max_ms"].as_f64().unwrap_or(0.0), report["mean_ms"].as_f64().unwrap_or(0.0), report["calls_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn eval_recommend(config: &Config, args: EvalRecommendArgs) -> Result<ExitCode> {
    use signaldesk::eval::recommend::{evaluate, RecommendEvalOptions};
    for file in ["movies.csv", "ratings.csv"] {
        let path = args.dataset.join(file);
        anyhow::ensure!(path.is_file(), "{} is missing", path.display());
    }
    let embedder = shared_embedder(config)?;
    let store = AnyStore::from_config(&config.store, &config.data_dir.join("eval"))?;
    let options = RecommendEvalOptions {
        taxonomy: args.taxonomy.clone(),
        variants: args.variants.clone(),
        lambdas: args.lambdas.clone(),
        limit_users: args.limit_users,
    };
    let mut bar: Option<(String, Progress)> = None;
    let (mut report, sweep) = evaluate(
        &store,
        embedder,
        config,
        &args.dataset,
        &options,
        |stage, done, total| {
            if bar.as_ref().is_none_or(|(s, _)| s != stage) {
                bar = Some((
                    stage.to_string(),
                    Progress::new(&format!("eval: {stage}"), Some(total as u64), ""),
                ));
            }
            if let Some((_, b)) = &bar {
                b.set_position(done as u64);
            }
        },
    )
    .await?;
    drop(bar);
    let plot = plot_path(&args.output);
    signaldesk::eval::plot::diversity_sweep(&sweep, &plot)?;
    report.extra.insert(
        "diversity_plot".into(),
        serde_json::json!(plot.display().to_string()),
    );
    report.write(&args.output)?;
    let c = &report.config;
    outln!(
        "recommend on {} ({} test users, {} movies, {} tagged):",
        report.dataset,
        c["test_users"],
        c["movies"],
        c["tagged_movies"]
    );
    outln!(
        "  {:<14} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "ranker",
        "nDCG@10",
        "P@10",
        "R@10",
        "R@50",
        "MRR",
        "cover",
        "divers"
    );
    let rankers = report.extra["rankers"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let ablation = &report.extra["ablation"]["blend_without_tags"];
    for (name, m) in rankers
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .chain([("blend, no tags", ablation)])
    {
        let g = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
        outln!(
            "  {name:<14} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4}",
            g("ndcg@10"),
            g("precision@10"),
            g("recall@10"),
            g("recall@50"),
            g("mrr"),
            g("coverage"),
            g("diversity")
        );
    }
    for (lambda, ndcg, diversity) in &sweep {
        outln!("  λ = {lambda:<5} nDCG@10 {ndcg:.4}  diversity {diversity:.4}");
    }
    outln!(
        "report: {} (plot {})",
        args.output.display(),
        plot.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `report.json` → `report-diversity.png`.
fn plot_path(output: &Path) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!("{stem}-diversity.png"))
}

async fn eval_summaries(config: &Config, args: EvalSummariesArgs) -> Result<ExitCode> {
    use signaldesk::enrich::summarizer::Summarizer;
    use signaldesk::eval::summaries::{evaluate, read_articles, SummariesEvalOptions};
    let articles = read_articles(&args.dataset)?;
    let total = match args.limit {
        Some(n) => ["cnndm", "xsum"]
            .iter()
            .map(|s| articles.iter().filter(|a| a.source == *s).count().min(n))
            .sum(),
        None => articles.len(),
    };
    let embedder = shared_embedder(config)?;
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
    let m = &report.metrics;
    outln!(
        "summaries on {} ({} articles): ROUGE F1 (1 / 2 / L), mean words, within {} words",
        report.dataset,
        report.config["articles"],
        options.max_words
    );
    let systems: &[&str] = if args.llm {
        &["llm", "extractive", "lead3"]
    } else {
        &["extractive", "lead3"]
    };
    for &system in systems {
        for source in ["cnndm", "xsum"] {
            let key = |k: &str| {
                m.get(&format!("{system}.{source}.{k}"))
                    .copied()
                    .unwrap_or(0.0)
            };
            outln!(
                "  {system:<10} {source:<6} {:.4} / {:.4} / {:.4}",
                key("rouge1"),
                key("rouge2"),
                key("rougeL")
            );
        }
        outln!(
            "  {system:<10} words {:.1}, within limit {:.1}%",
            m.get(&format!("{system}.mean_words"))
                .copied()
                .unwrap_or(0.0),
            100.0
                * m.get(&format!("{system}.within_limit"))
                    .copied()
                    .unwrap_or(0.0)
        );
    }
    if args.llm {
        outln!(
            "  llm: within limits as generated {:.1}%, {} fallbacks to extractive, {} map-reduced, {} prompt + {} completion tokens",
            100.0 * m.get("llm.within_limit_as_generated").copied().unwrap_or(0.0),
            m.get("llm.fallbacks").copied().unwrap_or(0.0),
            m.get("llm.map_reduced").copied().unwrap_or(0.0),
            m.get("llm.prompt_tokens").copied().unwrap_or(0.0),
            m.get("llm.completion_tokens").copied().unwrap_or(0.0)
        );
    }
    outln!("report: {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

async fn eval_retrieval(config: &Config, args: EvalRetrievalArgs) -> Result<ExitCode> {
    let embedder = shared_embedder(config)?;
    let data = BeirDataset::open(&args.dataset)?;
    // A missing split fails now, not after a long ingest.
    data.qrels(&args.split)?;
    let chunker = chunker_for(config, &embedder, args.chunking);
    let mut extra = serde_json::Map::new();
    let (store, collection) = match args.collection {
        Some(name) => (configured_store(config)?, name),
        None => {
            let store = AnyStore::from_config(&config.store, &config.data_dir.join("eval"))?;
            let name = data
                .dir
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "dataset".into());
            let collection = format!(
                "eval-{name}-{}",
                if chunker.is_some() {
                    "chunked"
                } else {
                    "whole"
                }
            );
            eprintln!(
                "eval: ingesting {} into {collection}",
                data.corpus.display()
            );
            let options = IngestOptions::from_config(config, &collection, chunker);
            let bar = Progress::new("eval: ingest", count_records(&data.corpus), "documents");
            let (summary, seconds) =
                ingest_corpus(&store, embedder.clone(), &data, &options, true, |n| {
                    bar.set_position(n as u64)
                })
                .await?;
            bar.finish();
            eprintln!(
                "eval: {} documents, {} chunks in {seconds:.1} s; searching",
                summary.read, summary.chunks
            );
            extra.insert("ingest".into(), serde_json::json!({"documents": summary.read, "chunks": summary.chunks, "tokens": summary.tokens, "seconds": seconds}));
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

fn embed(config: &Config, args: EmbedArgs) -> Result<ExitCode> {
    let embedder = Embedder::from_config(config)?;
    let chunker = args.chunk.then(|| {
        let configured = args.chunk_tokens.unwrap_or(config.chunk.max_tokens);
        Chunker {
            max_tokens: if configured == 0 {
                embedder.max_seq_length()
            } else {
                configured.min(embedder.max_seq_length())
            },
            overlap_tokens: args.overlap.unwrap_or(config.chunk.overlap_tokens),
        }
    });
    let options = EmbedFileOptions {
        text_field: args.text_field,
        id_field: args.id_field,
        chunker,
        max_line_bytes: args.max_line_bytes,
        ..EmbedFileOptions::default()
    };
    let input = InputFile::open(&args.input)?;
    let bar = Progress::new(
        "embed",
        (input.size > 0).then_some(input.size),
        "bytes read",
    );
    let mut out = open_output(&args.output)?;
    let input_name = args.input.display().to_string();
    let summary = embed_file(
        &embedder,
        input,
        &mut out,
        &options,
        |line, reason| bar.suspend(|| eprintln!("{input_name}:{line}: skipped: {reason}")),
        |bytes| bar.set_position(bytes),
    )?;
    bar.finish();
    drop(out);
    let chunks = if options.chunker.is_some() {
        format!(", {} vectors", summary.vectors)
    } else {
        String::new()
    };
    eprintln!(
        "embed: read {}, embedded {}, skipped {}{chunks}",
        summary.read, summary.embedded, summary.skipped
    );
    if summary.read == 0 {
        eprintln!("embed: warning: {input_name} has no records");
    }
    Ok(if summary.skipped > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Progress of long work on stderr: an indicatif bar with total, rate and ETA at a terminal; a
/// plain line every ten seconds otherwise (CI logs, `2> file`), never ANSI codes there.
struct Progress {
    bar: ProgressBar,
    /// Set when stderr is not a terminal.
    plain: Option<std::sync::Mutex<PlainProgress>>,
}

struct PlainProgress {
    label: String,
    unit: &'static str,
    total: Option<u64>,
    started: std::time::Instant,
    last_line: std::time::Instant,
}

impl Progress {
    /// `total` units of work, if known (a spinner with a rate if not).
    fn new(label: &str, total: Option<u64>, unit: &'static str) -> Self {
        if !std::io::stderr().is_terminal() {
            let now = std::time::Instant::now();
            return Self {
                bar: ProgressBar::hidden(),
                plain: Some(std::sync::Mutex::new(PlainProgress {
                    label: label.to_string(),
                    unit,
                    total,
                    started: now,
                    last_line: now,
                })),
            };
        }
        let (bar, template) = match total {
            Some(total) => (
                ProgressBar::new(total),
                format!("{{spinner}} {label} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, ETA {{eta}})"),
            ),
            None => (
                ProgressBar::new_spinner(),
                format!("{{spinner}} {label} [{{elapsed_precise}}] {{human_pos}} {unit} ({{per_sec}})"),
            ),
        };
        bar.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Self { bar, plain: None }
    }

    fn set_position(&self, done: u64) {
        self.bar.set_position(done);
        let Some(plain) = &self.plain else { return };
        let Ok(mut p) = plain.lock() else { return };
        if p.last_line.elapsed() < plain_progress_interval() {
            return;
        }
        p.last_line = std::time::Instant::now();
        let seconds = p.started.elapsed().as_secs_f64();
        let rate = done as f64 / seconds.max(1e-9);
        let line = match p.total {
            Some(total) if rate > 0.0 => format!(
                "{}: {done}/{total} {} ({rate:.0}/s, ETA {:.0} s)",
                p.label,
                p.unit,
                total.saturating_sub(done) as f64 / rate
            ),
            _ => format!("{}: {done} {} ({rate:.0}/s)", p.label, p.unit),
        };
        eprintln!("{line}");
    }

    /// Print around the bar.
    fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// How often the plain progress line is printed: every 10 s (tests set
/// `SIGNALDESK_TEST_PROGRESS_EVERY_S` to see every step).
fn plain_progress_interval() -> std::time::Duration {
    std::env::var("SIGNALDESK_TEST_PROGRESS_EVERY_S")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs_f64,
        )
}

/// Records in a JSONL file (plain or gzip'd), for a progress total: one quick pass over it.
/// `None` for CSV (records may span lines) or an unreadable file.
fn count_records(path: &Path) -> Option<u64> {
    let name = path.to_string_lossy();
    if name.ends_with(".csv") || name.ends_with(".csv.gz") {
        return None;
    }
    let input = InputFile::open(path).ok()?;
    let mut n = 0u64;
    for line in input.lines(0) {
        line.ok()?;
        n += 1;
    }
    Some(n)
}

fn print_pipeline(r: &pipeline::PipelineReport) -> Result<()> {
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
        pipeline::PARITY_MIN_COSINE,
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
            pipeline::DENSE_NDCG_REFERENCE,
            pipeline::DENSE_NDCG_TOLERANCE,
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
