//! `signaldesk embed`: a JSONL file in, one vector per record (or chunk) out.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use signaldesk::chunk::Chunker;
use signaldesk::config::ChunkConfig;
use signaldesk::ingest::embed_file::{embed_file, EmbedFileOptions, DEFAULT_MAX_LINE_BYTES};
use signaldesk::ingest::InputFile;
use signaldesk::{Config, Embedder};

use super::output::{open_output, Progress};

#[derive(Args)]
pub struct EmbedArgs {
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

pub fn run(config: &Config, args: EmbedArgs) -> Result<ExitCode> {
    let embedder = Embedder::from_config(config)?;
    // --chunk-tokens and --overlap override chunk.*; the configured chunker rule does the rest.
    let chunk = ChunkConfig {
        enabled: true,
        max_tokens: args.chunk_tokens.unwrap_or(config.chunk.max_tokens),
        overlap_tokens: args.overlap.unwrap_or(config.chunk.overlap_tokens),
    };
    let chunker = Chunker::from_config(&chunk, embedder.max_seq_length(), Some(args.chunk));
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
