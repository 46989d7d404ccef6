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
use signaldesk::embed::bench::{bench_embed, load_texts};
use signaldesk::embed::job::{embed_file, EmbedFileOptions, DEFAULT_MAX_LINE_BYTES};
use signaldesk::embed::EmbedderOptions;
use signaldesk::ingest::InputFile;
use signaldesk::{pipeline, Config, Embedder};

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
    #[command(subcommand)]
    command: Command,
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
    /// Today: embed the bundled SciFact sample and check every vector against
    /// sentence-transformers' (cosine >= 0.9999). Exits 1 if a check fails.
    Pipeline(PipelineArgs),
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
    /// JSONL input (.jsonl or .jsonl.gz), one record per line.
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
}

#[derive(Args)]
struct PipelineArgs {
    /// Reference sample to embed and check.
    #[arg(long, default_value = pipeline::SAMPLE_PATH)]
    sample: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = std::env::var("SIGNALDESK_LOG").unwrap_or_else(|_| default.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Config(ConfigCommand::Show { json }) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&config)?);
            } else {
                print!("{}", config.to_toml());
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
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("model       {}", embedder.model_id());
                println!("docs        {}", report.docs);
                println!("tokens      {}", report.tokens);
                println!("seconds     {:.3}", report.seconds);
                println!("docs/s      {:.1}", report.docs_per_s);
                println!("tokens/s    {:.0}", report.tokens_per_s);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pipeline(args) => {
            let embedder = Embedder::from_config(&config)?;
            let report = pipeline::run(&embedder, &args.sample)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_pipeline(&report);
            }
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
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
    let bar = progress_bar(input.size);
    let mut out: Box<dyn Write> = if args.output == Path::new("-") {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(BufWriter::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("cannot create {}", args.output.display()))?,
        ))
    };
    let input_name = args.input.display().to_string();
    let summary = embed_file(
        &embedder,
        input,
        &mut out,
        &options,
        |line, reason| bar.suspend(|| eprintln!("{input_name}:{line}: skipped: {reason}")),
        |bytes| bar.set_position(bytes),
    )?;
    bar.finish_and_clear();
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

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn print_pipeline(r: &pipeline::PipelineReport) {
    println!("signaldesk pipeline report");
    println!("  model            {} ({} dims)", r.model, r.dimension);
    println!("  sample           {}", r.sample);
    println!("  texts embedded   {} ({} tokens)", r.texts, r.tokens);
    println!(
        "  embed time       {:.2} s ({:.0} tokens/s, embedding cache on)",
        r.embed_seconds, r.tokens_per_s
    );
    println!(
        "  parity vs sentence-transformers: min cosine {:.6}, mean {:.6}, below {}: {}",
        r.parity_min_cosine,
        r.parity_mean_cosine,
        pipeline::PARITY_MIN_COSINE,
        r.parity_failures
    );
    println!(
        "  result           {}",
        if r.passed() { "PASS" } else { "FAIL" }
    );
}
