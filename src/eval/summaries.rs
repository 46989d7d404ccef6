//! The summaries suite: FRANK's news articles (CNN/DailyMail and XSum) against their reference
//! summaries, ROUGE-1/2/L F1 ([`super::rouge`], as `rouge-score` computes them) for each
//! summarizer, per source and overall, with length statistics and the share of summaries within
//! their word limit.
//!
//! Summarizers: the extractive one (`enrich::summary::extractive`, the LLM summarizer's
//! fallback) at `enrich.summary.max_words`, and lead-3 (the first three sentences), the standard
//! news baseline. Every summary is kept in the report's `details` with its reference, so
//! `scripts/rouge_agreement.py` can score it again with the Python package.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::rouge::{self, Rouge};
use super::Report;
use crate::embed::{EmbedError, Embedder};
use crate::enrich::summarizer::Summarizer;
use crate::enrich::summary::{extractive, lead};
use crate::llm::LlmClient;

/// Why the summaries suite could not run.
#[derive(Debug, thiserror::Error)]
pub enum SummariesEvalError {
    #[error("{}: {message}", path.display())]
    Dataset { path: PathBuf, message: String },
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// One article with its reference summary.
#[derive(Debug, Clone)]
pub struct Article {
    pub id: String,
    /// `cnndm` or `xsum`.
    pub source: String,
    pub text: String,
    pub reference: String,
}

/// The articles of `dataset/frank_articles.jsonl[.gz]`, in file order.
pub fn read_articles(dataset: &Path) -> Result<Vec<Article>, SummariesEvalError> {
    let path = ["frank_articles.jsonl", "frank_articles.jsonl.gz"]
        .iter()
        .map(|f| dataset.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| SummariesEvalError::Dataset {
            path: dataset.to_path_buf(),
            message: "no frank_articles.jsonl or frank_articles.jsonl.gz".into(),
        })?;
    let err = |message: String| SummariesEvalError::Dataset {
        path: path.clone(),
        message,
    };
    let file = std::fs::File::open(&path).map_err(|e| err(e.to_string()))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| err(format!("line {}: {e}", i + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(&line).map_err(|e| err(format!("line {}: {e}", i + 1)))?;
        let field = |k: &str| -> Result<String, SummariesEvalError> {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| err(format!("line {}: no string field {k:?}", i + 1)))
        };
        out.push(Article {
            id: field("id")?,
            source: field("source_dataset")?,
            text: field("article")?,
            reference: field("reference")?,
        });
    }
    Ok(out)
}

/// How `eval summaries` runs.
pub struct SummariesEvalOptions {
    /// Word limit of the extractive summary.
    pub max_words: usize,
    /// Only the first N articles of each source.
    pub limit: Option<usize>,
}

/// Run the suite: lead-3 and the extractive summarizer on every article, and the LLM
/// summarizer too when one is given.
pub async fn evaluate<L: LlmClient>(
    embedder: &Embedder,
    dataset: &Path,
    options: &SummariesEvalOptions,
    llm: Option<&Summarizer<'_, L>>,
    mut on_progress: impl FnMut(usize),
) -> Result<Report, SummariesEvalError> {
    let mut articles = read_articles(dataset)?;
    if let Some(n) = options.limit {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        articles.retain(|a| {
            let k = seen.entry(a.source.clone()).or_default();
            *k += 1;
            *k <= n
        });
    }
    let started = std::time::Instant::now();
    // system → source → scores
    let mut scores: BTreeMap<&str, BTreeMap<String, Vec<Rouge>>> = BTreeMap::new();
    let mut lengths: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut per_item = BTreeMap::new();
    let mut summaries = serde_json::Map::new();
    let (mut llm_over, mut llm_fallbacks, mut llm_parts) = (0usize, 0usize, 0usize);
    let mut llm_usage = crate::llm::Usage::default();
    for (done, a) in articles.iter().enumerate() {
        let lead3 = lead(&a.text, 3);
        let extracted = extractive(embedder, &a.text, options.max_words)?;
        let mut item = BTreeMap::new();
        let mut systems = vec![("lead3", lead3.clone()), ("extractive", extracted.clone())];
        let mut record = json!({"source": a.source, "reference": a.reference, "lead3": lead3, "extractive": extracted});
        if let Some(summarizer) = llm {
            let s = summarizer.summarize(&a.id, "", &a.text).await;
            llm_over += usize::from(s.over_limit);
            llm_fallbacks += usize::from(s.fallback_reason.is_some());
            llm_parts += usize::from(s.parts > 0);
            llm_usage.prompt_tokens += s.usage.prompt_tokens;
            llm_usage.completion_tokens += s.usage.completion_tokens;
            record["llm"] = json!(s.summary);
            record["llm_standfirst"] = json!(s.standfirst);
            if let Some(reason) = &s.fallback_reason {
                record["llm_fallback_reason"] = json!(reason);
            }
            systems.push(("llm", s.summary));
        }
        for (system, summary) in &systems {
            let system: &str = system;
            let r = rouge::score(summary, &a.reference);
            for (name, s) in [
                ("rouge1", r.rouge1),
                ("rouge2", r.rouge2),
                ("rougeL", r.rouge_l),
            ] {
                // Keyed by source too, so every source's mean is reproducible from per_item
                // (the CI gate's paired test resamples these).
                item.insert(format!("{system}.{name}"), s.f1);
                item.insert(format!("{system}.{}.{name}", a.source), s.f1);
            }
            let words = summary.split_whitespace().count();
            item.insert(
                format!("{system}.within_limit"),
                f64::from(u8::from(words <= options.max_words)),
            );
            scores
                .entry(system)
                .or_default()
                .entry(a.source.clone())
                .or_default()
                .push(r);
            lengths
                .entry(system)
                .or_default()
                .push(summary.split_whitespace().count());
        }
        per_item.insert(a.id.clone(), item);
        summaries.insert(a.id.clone(), record);
        on_progress(done + 1);
    }
    let mut metrics = BTreeMap::new();
    for (system, by_source) in &scores {
        let mut all: Vec<&Rouge> = Vec::new();
        for (source, rs) in by_source {
            mean_into(&mut metrics, &format!("{system}.{source}"), rs.iter());
            all.extend(rs);
        }
        mean_into(&mut metrics, system, all.into_iter());
        let l = &lengths[system];
        metrics.insert(
            format!("{system}.mean_words"),
            l.iter().sum::<usize>() as f64 / l.len().max(1) as f64,
        );
        metrics.insert(
            format!("{system}.within_limit"),
            l.iter().filter(|&&n| n <= options.max_words).count() as f64 / l.len().max(1) as f64,
        );
    }
    if llm.is_some() {
        let n = articles.len().max(1) as f64;
        // The model's own answers within both limits (before any cut), and the fallbacks.
        metrics.insert(
            "llm.within_limit_as_generated".into(),
            1.0 - llm_over as f64 / n,
        );
        metrics.insert("llm.fallbacks".into(), llm_fallbacks as f64);
        metrics.insert("llm.map_reduced".into(), llm_parts as f64);
        metrics.insert("llm.prompt_tokens".into(), llm_usage.prompt_tokens as f64);
        metrics.insert(
            "llm.completion_tokens".into(),
            llm_usage.completion_tokens as f64,
        );
    }
    let config = json!({
        "summarizers": {"extractive": format!("most central sentences by embedding, at most {} words", options.max_words),
                        "lead3": "first three sentences"},
        "max_words": options.max_words,
        "articles": articles.len(),
        "limit_per_source": options.limit,
        "rouge": "F1, rouge-score rules: lowercase, [^a-z0-9] to spaces, Porter stemming of tokens over 3 characters; rougeL over the whole text",
        "model": embedder.model_id(),
        "llm": llm.map(|s| json!({"provider": s.llm().provider(), "model": s.llm().model(), "prompt": s.prompt_reference()})),
        "seconds": started.elapsed().as_secs_f64(),
    });
    Ok(Report {
        suite: "summaries".into(),
        dataset: dataset.display().to_string(),
        config,
        metrics,
        per_item,
        details: json!({"summaries": summaries}),
        extra: Default::default(),
    })
}

/// Mean F1 of `rs` under `prefix.rouge1` etc.
fn mean_into<'a>(
    metrics: &mut BTreeMap<String, f64>,
    prefix: &str,
    rs: impl Iterator<Item = &'a Rouge>,
) {
    let (mut n, mut r1, mut r2, mut rl) = (0.0, 0.0, 0.0, 0.0);
    for r in rs {
        n += 1.0;
        r1 += r.rouge1.f1;
        r2 += r.rouge2.f1;
        rl += r.rouge_l.f1;
    }
    if n > 0.0 {
        metrics.insert(format!("{prefix}.rouge1"), r1 / n);
        metrics.insert(format!("{prefix}.rouge2"), r2 / n);
        metrics.insert(format!("{prefix}.rougeL"), rl / n);
    }
}
