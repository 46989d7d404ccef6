//! `signaldesk embed`: a JSONL file in, one vector per record (or per chunk) out.
//!
//! Records are read in groups so that length-sorted batching has texts to sort, and written in
//! input order. A bad record is reported through the caller's callback with its line number and
//! skipped; it never stops the file.

use std::io::Write;

use serde_json::{json, Value};

use crate::chunk::{ChunkError, Chunker};
use crate::embed::{EmbedError, Embedder};
use crate::ingest::jsonl::{id_of, parse_object, text_of};
use crate::ingest::{InputError, InputFile};

/// Default longest line accepted, in bytes. Longer lines are skipped without being held whole.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

/// Errors that stop an embedding job (bad records do not; they are reported and counted).
#[derive(Debug, thiserror::Error)]
pub enum EmbedJobError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// What to read from each record and how to split it.
#[derive(Debug, Clone)]
pub struct EmbedFileOptions {
    /// Field holding the text; `None` follows the title/body/text convention.
    pub text_field: Option<String>,
    pub id_field: String,
    /// Split long texts and embed every chunk instead of truncating.
    pub chunker: Option<Chunker>,
    pub max_line_bytes: usize,
    /// Records embedded together; larger groups pad less, smaller ones show progress sooner.
    pub group_size: usize,
}

impl Default for EmbedFileOptions {
    fn default() -> Self {
        Self {
            text_field: None,
            id_field: "id".into(),
            chunker: None,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            group_size: 256,
        }
    }
}

/// Counts at the end of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EmbedFileSummary {
    /// Non-blank lines read.
    pub read: usize,
    /// Records written (each with one vector, or with its chunks' vectors).
    pub embedded: usize,
    /// Records reported and left out.
    pub skipped: usize,
    /// Vectors written (equals `embedded` unless chunking).
    pub vectors: usize,
}

struct Pending {
    id: Value,
    text: String,
}

/// Embed every record of `input` into `out` as JSONL.
///
/// Without chunking each output line is `{"id", "vector"}`; with chunking it is `{"id", "chunk",
/// "start", "end", "tokens", "vector"}` per chunk, `start..end` being the chunk's byte span in the
/// record's text. `on_skip(line, reason)` hears of each bad record; `on_progress(bytes)` of the
/// input bytes consumed so far.
pub fn embed_file(
    embedder: &Embedder,
    input: InputFile,
    out: &mut impl Write,
    options: &EmbedFileOptions,
    mut on_skip: impl FnMut(usize, String),
    mut on_progress: impl FnMut(u64),
) -> Result<EmbedFileSummary, EmbedJobError> {
    let progress = input.progress();
    let mut summary = EmbedFileSummary::default();
    let mut group: Vec<Pending> = Vec::with_capacity(options.group_size);
    for line in input.lines(options.max_line_bytes) {
        let line = line?;
        let record = match line.content {
            Ok(s) if s.trim().is_empty() => continue,
            Ok(s) => {
                summary.read += 1;
                parse_object(&s).and_then(|obj| {
                    Ok(Pending {
                        id: id_of(&obj, &options.id_field)?,
                        text: text_of(&obj, options.text_field.as_deref())?,
                    })
                })
            }
            Err(problem) => {
                summary.read += 1;
                summary.skipped += 1;
                on_skip(line.number, problem.to_string());
                continue;
            }
        };
        match record {
            Ok(p) => group.push(p),
            Err(e) => {
                summary.skipped += 1;
                on_skip(line.number, e.to_string());
            }
        }
        if group.len() >= options.group_size {
            flush(embedder, &mut group, out, options, &mut summary)?;
            on_progress(progress.load(std::sync::atomic::Ordering::Relaxed));
        }
    }
    flush(embedder, &mut group, out, options, &mut summary)?;
    on_progress(progress.load(std::sync::atomic::Ordering::Relaxed));
    out.flush()?;
    Ok(summary)
}

fn flush(
    embedder: &Embedder,
    group: &mut Vec<Pending>,
    out: &mut impl Write,
    options: &EmbedFileOptions,
    summary: &mut EmbedFileSummary,
) -> Result<(), EmbedJobError> {
    if group.is_empty() {
        return Ok(());
    }
    match options.chunker {
        None => {
            let texts: Vec<&str> = group.iter().map(|p| p.text.as_str()).collect();
            let vectors = embedder.embed(&texts)?;
            for (p, v) in group.iter().zip(vectors) {
                serde_json::to_writer(&mut *out, &json!({"id": p.id, "vector": v}))
                    .map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
            summary.vectors += group.len();
        }
        Some(chunker) => {
            let mut spans = Vec::new();
            for (i, p) in group.iter().enumerate() {
                for c in chunker.chunk(embedder, &p.text)? {
                    spans.push((i, c));
                }
            }
            let texts: Vec<&str> = spans
                .iter()
                .map(|(i, c)| &group[*i].text[c.start..c.end])
                .collect();
            let vectors = embedder.embed(&texts)?;
            for ((i, c), v) in spans.iter().zip(vectors) {
                let record = json!({
                    "id": group[*i].id, "chunk": c.index, "start": c.start, "end": c.end,
                    "tokens": c.tokens, "vector": v,
                });
                serde_json::to_writer(&mut *out, &record).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
            summary.vectors += spans.len();
        }
    }
    summary.embedded += group.len();
    group.clear();
    Ok(())
}
