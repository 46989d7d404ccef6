//! What every command shares for its output: progress on stderr, output files or stdout, and
//! reading small JSONL inputs whole.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use signaldesk::ingest::InputFile;

/// Progress of long work on stderr: an indicatif bar with total, rate and ETA at a terminal; a
/// plain line every ten seconds otherwise (CI logs, `2> file`), never ANSI codes there.
pub struct Progress {
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
    pub fn new(label: &str, total: Option<u64>, unit: &'static str) -> Self {
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

    pub fn set_position(&self, done: u64) {
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
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    pub fn finish(&self) {
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
pub fn count_records(path: &Path) -> Option<u64> {
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

/// Where a command writes its lines: a file, or standard output for "-".
pub fn open_output(path: &Path) -> Result<Box<dyn Write>> {
    Ok(if path == Path::new("-") {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ))
    })
}

/// The objects of a JSONL file with their line numbers, naming the line of a bad one; blank
/// lines skipped.
pub fn read_jsonl_objects(path: &Path) -> Result<Vec<(usize, serde_json::Value)>> {
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

/// Progress of work in stages: a fresh [`Progress`] line for each stage, labelled with it.
pub struct StagedProgress {
    total: Option<u64>,
    unit: &'static str,
    current: std::sync::Mutex<Option<(String, Progress)>>,
}

impl StagedProgress {
    /// Stages of `total` units each, if known.
    pub fn new(total: Option<u64>, unit: &'static str) -> Self {
        Self {
            total,
            unit,
            current: std::sync::Mutex::new(None),
        }
    }

    /// `done` units of stage `label`, with the stage's own total.
    pub fn set_with_total(&self, label: &str, done: u64, total: Option<u64>) {
        let Ok(mut current) = self.current.lock() else {
            return;
        };
        if current.as_ref().is_none_or(|(l, _)| l != label) {
            if let Some((_, bar)) = current.take() {
                bar.finish();
            }
            *current = Some((label.to_string(), Progress::new(label, total, self.unit)));
        }
        if let Some((_, bar)) = current.as_ref() {
            bar.set_position(done);
        }
    }

    /// `done` units of stage `label`.
    pub fn set(&self, label: &str, done: u64) {
        self.set_with_total(label, done, self.total);
    }
}

impl Drop for StagedProgress {
    fn drop(&mut self) {
        if let Ok(mut current) = self.current.lock() {
            if let Some((_, bar)) = current.take() {
                bar.finish();
            }
        }
    }
}
