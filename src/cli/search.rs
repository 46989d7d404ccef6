//! `signaldesk search`: one query, or a file of them, through the one search path.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use signaldesk::config::SearchMode;
use signaldesk::search::Searcher;
use signaldesk::store::{AnyStore, Filter};
use signaldesk::{Config, Embedder};

use super::output::read_jsonl_objects;

#[derive(Args)]
pub struct SearchArgs {
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

pub async fn run(config: &Config, args: SearchArgs) -> Result<ExitCode> {
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
    let store = AnyStore::open(config)?;
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
