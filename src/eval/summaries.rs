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

/// Articles a run summarizes: all of them, or at most `limit` of each source.
pub fn articles_to_summarize(articles: &[Article], limit: Option<usize>) -> usize {
    match limit {
        Some(n) => ["cnndm", "xsum"]
            .iter()
            .map(|s| articles.iter().filter(|a| a.source == *s).count().min(n))
            .sum(),
        None => articles.len(),
    }
}

/// The console summary of a summaries report: ROUGE per system and source, lengths, and the
/// LLM's own figures when it ran.
pub fn console_summary(report: &Report, max_words: usize, with_llm: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let m = &report.metrics;
    let _ = writeln!(
        out,
        "summaries on {} ({} articles): ROUGE F1 (1 / 2 / L), mean words, within {} words",
        report.dataset, report.config["articles"], max_words
    );
    let systems: &[&str] = if with_llm {
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
            let _ = writeln!(
                out,
                "  {system:<10} {source:<6} {:.4} / {:.4} / {:.4}",
                key("rouge1"),
                key("rouge2"),
                key("rougeL")
            );
        }
        let _ = writeln!(
            out,
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
    if with_llm {
        let _ = writeln!(out,
            "  llm: within limits as generated {:.1}%, {:.1}% passed the publishability guard, {} fallbacks to extractive (the served `llm` scores count them), {} map-reduced, {} prompt + {} completion tokens",
            100.0 * m.get("llm.within_limit_as_generated").copied().unwrap_or(0.0),
            100.0 * m.get("llm.guard_passed").copied().unwrap_or(0.0),
            m.get("llm.fallbacks").copied().unwrap_or(0.0),
            m.get("llm.map_reduced").copied().unwrap_or(0.0),
            m.get("llm.prompt_tokens").copied().unwrap_or(0.0),
            m.get("llm.completion_tokens").copied().unwrap_or(0.0)
        );
    }
    out
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
    let mut tally = Tally::default();
    let mut per_item = BTreeMap::new();
    let mut summaries = serde_json::Map::new();
    for (done, a) in articles.iter().enumerate() {
        let lead3 = lead(&a.text, 3);
        let extracted = extractive(embedder, &a.text, options.max_words)?;
        let mut item = BTreeMap::new();
        let mut systems = vec![("lead3", lead3.clone()), ("extractive", extracted.clone())];
        let mut record = json!({"source": a.source, "reference": a.reference, "lead3": lead3, "extractive": extracted});
        if let Some(summarizer) = llm {
            let s = summarizer.summarize(&a.id, "", &a.text).await;
            tally.llm_over += usize::from(s.over_limit);
            tally.llm_fallbacks += usize::from(s.fallback_reason.is_some());
            tally.llm_guarded += usize::from(
                s.fallback_reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("guard:")),
            );
            tally.llm_parts += usize::from(s.parts > 0);
            tally.llm_usage.prompt_tokens += s.usage.prompt_tokens;
            tally.llm_usage.completion_tokens += s.usage.completion_tokens;
            record["llm"] = json!(s.summary);
            record["llm_standfirst"] = json!(s.standfirst);
            if let Some(reason) = &s.fallback_reason {
                record["llm_fallback_reason"] = json!(reason);
            }
            systems.push(("llm", s.summary));
        }
        for &(system, ref summary) in &systems {
            tally.add(system, summary, a, options.max_words, &mut item);
        }
        per_item.insert(a.id.clone(), item);
        summaries.insert(a.id.clone(), record);
        on_progress(done + 1);
    }
    let metrics = tally.metrics(options.max_words, llm.is_some(), articles.len());
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

/// ROUGE and lengths per summarizer (system) and source, and the LLM's own counts.
#[derive(Default)]
struct Tally<'s> {
    /// system → source → scores.
    scores: BTreeMap<&'s str, BTreeMap<String, Vec<Rouge>>>,
    lengths: BTreeMap<&'s str, Vec<usize>>,
    llm_over: usize,
    llm_fallbacks: usize,
    /// Answers the publishability guard refused (served extractively).
    llm_guarded: usize,
    llm_parts: usize,
    llm_usage: crate::llm::Usage,
}

impl<'s> Tally<'s> {
    /// Score `system`'s summary of `a` against its reference, into the tally and `item` (the
    /// article's per-item row).
    fn add(
        &mut self,
        system: &'s str,
        summary: &str,
        a: &Article,
        max_words: usize,
        item: &mut BTreeMap<String, f64>,
    ) {
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
            f64::from(u8::from(words <= max_words)),
        );
        self.scores
            .entry(system)
            .or_default()
            .entry(a.source.clone())
            .or_default()
            .push(r);
        self.lengths.entry(system).or_default().push(words);
    }

    /// The report's metrics: mean ROUGE per system (and source), lengths, and with an LLM its
    /// share within limits as generated, fallbacks, map-reduced articles and tokens.
    fn metrics(&self, max_words: usize, with_llm: bool, articles: usize) -> BTreeMap<String, f64> {
        let mut metrics = BTreeMap::new();
        for (system, by_source) in &self.scores {
            let mut all: Vec<&Rouge> = Vec::new();
            for (source, rs) in by_source {
                mean_into(&mut metrics, &format!("{system}.{source}"), rs.iter());
                all.extend(rs);
            }
            mean_into(&mut metrics, system, all.into_iter());
            let l = &self.lengths[system];
            metrics.insert(
                format!("{system}.mean_words"),
                l.iter().sum::<usize>() as f64 / l.len().max(1) as f64,
            );
            metrics.insert(
                format!("{system}.within_limit"),
                l.iter().filter(|&&n| n <= max_words).count() as f64 / l.len().max(1) as f64,
            );
        }
        if with_llm {
            let n = articles.max(1) as f64;
            // The model's own answers within both limits (before any cut), and the fallbacks.
            metrics.insert(
                "llm.within_limit_as_generated".into(),
                1.0 - self.llm_over as f64 / n,
            );
            metrics.insert("llm.fallbacks".into(), self.llm_fallbacks as f64);
            // Of the model's answers, the share the guard let through (served as written).
            metrics.insert("llm.guard_passed".into(), 1.0 - self.llm_guarded as f64 / n);
            metrics.insert("llm.map_reduced".into(), self.llm_parts as f64);
            metrics.insert(
                "llm.prompt_tokens".into(),
                self.llm_usage.prompt_tokens as f64,
            );
            metrics.insert(
                "llm.completion_tokens".into(),
                self.llm_usage.completion_tokens as f64,
            );
        }
        metrics
    }
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
