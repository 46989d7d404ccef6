//! The offline eval as a CI gate: the suite list (`eval/ci.toml`), a paired comparison of each
//! suite's current report against its committed baseline, and the combined report.
//!
//! A metric fails the gate when it falls by more than its tolerance *and* the fall is
//! significant: a paired bootstrap over the reports' `per_item` data (the same queries,
//! documents or users resampled together in both reports, fixed seed) gives a 95% interval of
//! the change, and the interval must lie below zero. A metric under its floor fails outright.
//! Metrics the per-item data cannot reproduce are compared without a test, strictly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::Report;

/// Resamples per bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// The bootstrap's fixed seed, so a comparison prints the same interval every time.
pub const BOOTSTRAP_SEED: u64 = 15;

/// Why the suite list, a report or a comparison could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The suites the gate runs, as `eval/ci.toml` lists them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteList {
    #[serde(rename = "suite")]
    pub suites: Vec<SuiteSpec>,
}

/// One suite: the `signaldesk eval` command it runs and what the gate holds it to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteSpec {
    /// The report's file stem: `<name>.json` in the output and baseline directories.
    pub name: String,
    /// `signaldesk eval` arguments, without `--output` (the runner names the report).
    pub args: Vec<String>,
    /// Which part of the dataset it scores, in words.
    pub subset: String,
    /// What the command's settings are, in words or values (for the reader; the command's
    /// arguments and the configuration decide).
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
    /// Configuration the suite runs with on top of the shipped one, as dotted keys
    /// (`"llm.cache" = "read"`): the same keys a config file or `SIGNALDESK_*` sets.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// How far a metric may fall below the baseline before the gate fails (if significant).
    #[serde(default)]
    pub tolerance: BTreeMap<String, f64>,
    /// Values a metric may never go below.
    #[serde(default)]
    pub floor: BTreeMap<String, f64>,
    /// More metrics for the combined report (not gated).
    #[serde(default)]
    pub show: Vec<String>,
    /// Outside reference figures on the same data, by reference name then metric.
    #[serde(default)]
    pub references: BTreeMap<String, BTreeMap<String, f64>>,
}

impl SuiteList {
    /// Read and check a suite list.
    pub fn load(path: &Path) -> Result<Self, GateError> {
        let text = std::fs::read_to_string(path).map_err(|source| GateError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let invalid = |message: String| GateError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let list: SuiteList = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let mut names = BTreeSet::new();
        for (i, s) in list.suites.iter().enumerate() {
            let at = format!("suite[{i}] ({})", s.name);
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(format!(
                    "{at}: name must be letters, digits, - or _ (it names the report file)"
                )));
            }
            if !names.insert(s.name.as_str()) {
                return Err(invalid(format!("{at}: the name is used twice")));
            }
            if s.args.is_empty() {
                return Err(invalid(format!(
                    "{at}: args is empty (e.g. [\"retrieval\", \"--dataset\", ...])"
                )));
            }
            if s.args.iter().any(|a| a == "--output" || a == "-o") {
                return Err(invalid(format!(
                    "{at}: args must not set --output: `eval run --output DIR` writes DIR/{}.json",
                    s.name
                )));
            }
        }
        Ok(list)
    }

    /// The suites whose names are in `only` (all when `only` is empty); an unknown name is an
    /// error naming the known ones.
    pub fn select(&self, only: &[String]) -> Result<Vec<&SuiteSpec>, String> {
        if let Some(unknown) = only
            .iter()
            .find(|n| !self.suites.iter().any(|s| &s.name == *n))
        {
            let known: Vec<&str> = self.suites.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "no suite named {unknown}; the list has {}",
                known.join(", ")
            ));
        }
        Ok(self
            .suites
            .iter()
            .filter(|s| only.is_empty() || only.contains(&s.name))
            .collect())
    }
}

/// Where suite `name`'s report lives in `dir`.
pub fn report_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// Read a report written by a suite.
pub fn read_report(path: &Path) -> Result<Report, GateError> {
    let text = std::fs::read_to_string(path).map_err(|source| GateError::Read {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| GateError::Invalid {
        path: path.display().to_string(),
        message: format!("not an eval report: {e}"),
    })
}

/// How a metric is computed from one report's per-item data.
#[derive(Debug, Clone, PartialEq)]
enum Estimator {
    /// The mean of `per_item[id][key]` over the items that have the key.
    Mean(String),
    /// Micro precision, recall or F1 from the items' TP/FP/FN counts.
    Micro(MicroKind),
    /// Macro-F1 over the taxonomy's labels from each item's labelled TP/FP/FN.
    MacroF1,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MicroKind {
    Precision,
    Recall,
    F1,
}

/// One report's per-item data, in the shared item order.
struct Items {
    /// Per item: the metric's value, or None where the item does not count for it.
    values: Vec<Option<f64>>,
    /// Per item: (tp, fp, fn) counts, or per-label lists (index into `labels`).
    counts: Vec<(f64, f64, f64)>,
    labelled: Vec<[Vec<usize>; 3]>,
    labels: usize,
}

impl Estimator {
    fn for_metric(report: &Report, metric: &str) -> Option<Estimator> {
        let any_has = report.per_item.values().any(|row| row.contains_key(metric));
        if any_has {
            return Some(Estimator::Mean(metric.to_string()));
        }
        // Micro figures from per-item tp/fp/fn: tagging's labels, and SciFact's abstract-level
        // label-only counts in `eval grounded`.
        match (report.suite.as_str(), metric) {
            ("tagging", "micro_precision") | ("grounded", "abstract_label_precision") => {
                Some(Estimator::Micro(MicroKind::Precision))
            }
            ("tagging", "micro_recall") | ("grounded", "abstract_label_recall") => {
                Some(Estimator::Micro(MicroKind::Recall))
            }
            ("tagging", "micro_f1") | ("grounded", "abstract_label_f1") => {
                Some(Estimator::Micro(MicroKind::F1))
            }
            ("tagging", "macro_f1") => Some(Estimator::MacroF1),
            _ => None,
        }
    }

    /// The per-item data this estimator needs from `report`, for the items `ids`.
    fn items(&self, report: &Report, ids: &[String]) -> Items {
        let mut items = Items {
            values: Vec::new(),
            counts: Vec::new(),
            labelled: Vec::new(),
            labels: 0,
        };
        match self {
            Estimator::Mean(key) => {
                items.values = ids
                    .iter()
                    .map(|id| report.per_item.get(id).and_then(|r| r.get(key)).copied())
                    .collect();
            }
            Estimator::Micro(_) => {
                items.counts = ids
                    .iter()
                    .map(|id| {
                        let row = report.per_item.get(id);
                        let get = |k: &str| row.and_then(|r| r.get(k)).copied().unwrap_or(0.0);
                        (get("tp"), get("fp"), get("fn"))
                    })
                    .collect();
            }
            Estimator::MacroF1 => {
                let labels: Vec<&String> = report.details["per_label"]
                    .as_object()
                    .map(|m| m.keys().collect())
                    .unwrap_or_default();
                let index: BTreeMap<&str, usize> = labels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (l.as_str(), i))
                    .collect();
                items.labels = labels.len();
                items.labelled = ids
                    .iter()
                    .map(|id| {
                        let row = &report.details["items"][id];
                        let list = |k: &str| -> Vec<usize> {
                            row[k]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|l| l.as_str().and_then(|l| index.get(l)))
                                        .copied()
                                        .collect()
                                })
                                .unwrap_or_default()
                        };
                        [list("tp"), list("fp"), list("fn")]
                    })
                    .collect();
            }
        }
        items
    }

    /// The metric over the items `sample` (indices, repeats allowed).
    fn value(&self, items: &Items, sample: &[usize]) -> f64 {
        match self {
            Estimator::Mean(_) => {
                let (sum, n) = sample
                    .iter()
                    .filter_map(|&i| items.values[i])
                    .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
                if n == 0 {
                    0.0
                } else {
                    sum / n as f64
                }
            }
            Estimator::Micro(kind) => {
                let (tp, fp, fneg) = sample.iter().fold((0.0, 0.0, 0.0), |a, &i| {
                    let c = items.counts[i];
                    (a.0 + c.0, a.1 + c.1, a.2 + c.2)
                });
                let (p, r, f) = prf_f64(tp, fp, fneg);
                match kind {
                    MicroKind::Precision => p,
                    MicroKind::Recall => r,
                    MicroKind::F1 => f,
                }
            }
            Estimator::MacroF1 => {
                let mut counts = vec![(0.0, 0.0, 0.0); items.labels];
                for &i in sample {
                    let [tp, fp, fneg] = &items.labelled[i];
                    tp.iter().for_each(|&l| counts[l].0 += 1.0);
                    fp.iter().for_each(|&l| counts[l].1 += 1.0);
                    fneg.iter().for_each(|&l| counts[l].2 += 1.0);
                }
                let n = counts.len().max(1) as f64;
                counts
                    .iter()
                    .map(|&(a, b, c)| prf_f64(a, b, c).2)
                    .sum::<f64>()
                    / n
            }
        }
    }
}

fn prf_f64(tp: f64, fp: f64, fneg: f64) -> (f64, f64, f64) {
    let p = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
    let r = if tp + fneg > 0.0 {
        tp / (tp + fneg)
    } else {
        0.0
    };
    let f = if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    };
    (p, r, f)
}

/// A paired bootstrap of `current − baseline` for a metric over shared items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedTest {
    /// The 95% percentile interval of the change.
    pub low: f64,
    pub high: f64,
    /// Two-sided p-value of "no change" (share of resamples on the other side of zero, doubled).
    pub p_value: f64,
    /// Items resampled.
    pub items: usize,
}

fn paired_bootstrap(
    estimator: &Estimator,
    baseline: &Items,
    current: &Items,
    n: usize,
    resamples: usize,
    seed: u64,
) -> PairedTest {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sample = vec![0usize; n];
    let mut changes = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for s in sample.iter_mut() {
            *s = rng.random_range(0..n);
        }
        changes.push(estimator.value(current, &sample) - estimator.value(baseline, &sample));
    }
    changes.sort_by(f64::total_cmp);
    let at = |q: f64| changes[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    let below = changes.iter().filter(|&&c| c <= 0.0).count();
    let above = changes.iter().filter(|&&c| c >= 0.0).count();
    let p_value = (2.0 * below.min(above) as f64 / resamples as f64).min(1.0);
    PairedTest {
        low: at(0.025),
        high: at(0.975),
        p_value,
        items: n,
    }
}

/// What the gate decided for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No significant change, or a fall within tolerance.
    Unchanged,
    /// A significant rise.
    Improved,
    /// A fall beyond tolerance that the test cannot tell from noise: passes, flagged.
    FallNotSignificant,
    /// A significant fall beyond tolerance: fails.
    Regressed,
    /// Below the metric's floor: fails.
    BelowFloor,
    /// The metric is missing from the current report: fails.
    Missing,
}

impl Verdict {
    /// Whether this verdict fails the gate.
    pub fn fails(self) -> bool {
        matches!(
            self,
            Verdict::Regressed | Verdict::BelowFloor | Verdict::Missing
        )
    }
}

/// One metric of one suite, before and after.
#[derive(Debug, Clone, Serialize)]
pub struct MetricComparison {
    pub suite: String,
    pub metric: String,
    pub baseline: f64,
    pub current: Option<f64>,
    pub tolerance: Option<f64>,
    pub floor: Option<f64>,
    /// None where the per-item data cannot reproduce the metric (compared without a test).
    pub test: Option<PairedTest>,
    /// What the items are called in this suite (queries, documents, users, articles).
    pub unit: &'static str,
    pub verdict: Verdict,
}

impl MetricComparison {
    /// `current − baseline`.
    pub fn change(&self) -> Option<f64> {
        self.current.map(|c| c - self.baseline)
    }

    /// One sentence on why this metric fails the gate (None when it passes).
    pub fn failure(&self) -> Option<String> {
        let current = self.current.unwrap_or(f64::NAN);
        match self.verdict {
            Verdict::Missing => Some(format!(
                "{}: {} is missing from the current report (baseline {:.4})",
                self.suite, self.metric, self.baseline
            )),
            Verdict::BelowFloor => Some(format!(
                "{}: {} is {current:.4}, below its floor {:.4} (baseline {:.4})",
                self.suite,
                self.metric,
                self.floor.unwrap_or_default(),
                self.baseline
            )),
            Verdict::Regressed => {
                let interval = match self.test {
                    Some(t) => format!(
                        "95% interval of the change [{:+.4}, {:+.4}], paired bootstrap over {} {} (p = {:.4})",
                        t.low, t.high, t.items, self.unit, t.p_value
                    ),
                    None => "no per-item data reproduces this metric, so no test: compared as is".into(),
                };
                Some(format!(
                    "{}: {} dropped {:.4} ({:.4} -> {current:.4}), more than its tolerance {:.4}; {interval}",
                    self.suite,
                    self.metric,
                    self.baseline - current,
                    self.baseline,
                    self.tolerance.unwrap_or_default()
                ))
            }
            _ => None,
        }
    }
}

/// What items are in a suite's report, for messages.
fn unit_of(suite: &str) -> &'static str {
    match suite {
        "retrieval" => "queries",
        "tagging" => "documents",
        "recommend" => "users",
        "summaries" => "articles",
        _ => "items",
    }
}

/// Compare one suite's current report with its baseline on every metric that has a tolerance
/// or a floor. Errors (as failures) when the two reports do not score the same items.
pub fn compare_reports(
    spec: &SuiteSpec,
    baseline: &Report,
    current: &Report,
) -> Result<Vec<MetricComparison>, String> {
    let base_ids: BTreeSet<&String> = baseline.per_item.keys().collect();
    let cur_ids: BTreeSet<&String> = current.per_item.keys().collect();
    if base_ids != cur_ids {
        return Err(format!(
            "{}: the baseline scores {} {unit} and the current report {} ({} in both): the suite's subset changed; \
             `signaldesk eval accept` promotes the current reports when that is intended",
            spec.name,
            base_ids.len(),
            cur_ids.len(),
            base_ids.intersection(&cur_ids).count(),
            unit = unit_of(&current.suite)
        ));
    }
    let ids: Vec<String> = base_ids.into_iter().cloned().collect();
    let metrics: BTreeSet<&String> = spec.tolerance.keys().chain(spec.floor.keys()).collect();
    let mut out = Vec::new();
    for (i, metric) in metrics.into_iter().enumerate() {
        let Some(&base_value) = baseline.metrics.get(metric) else {
            return Err(format!(
                "{}: {metric} has a tolerance or floor in the suite list but is not in the baseline report",
                spec.name
            ));
        };
        let current_value = current.metrics.get(metric).copied();
        let tolerance = spec.tolerance.get(metric).copied();
        let floor = spec.floor.get(metric).copied();
        let test = current_value.and_then(|_| {
            let estimator = Estimator::for_metric(current, metric)?;
            if Estimator::for_metric(baseline, metric).as_ref() != Some(&estimator) {
                return None;
            }
            let all: Vec<usize> = (0..ids.len()).collect();
            let b = estimator.items(baseline, &ids);
            let c = estimator.items(current, &ids);
            // The per-item data must reproduce each report's own figure, or the test would be
            // about some other number.
            let reproduces = |items: &Items, report: &Report| {
                (estimator.value(items, &all) - report.metrics[metric]).abs() < 1e-6
            };
            if ids.is_empty() || !reproduces(&b, baseline) || !reproduces(&c, current) {
                return None;
            }
            Some(paired_bootstrap(
                &estimator,
                &b,
                &c,
                ids.len(),
                BOOTSTRAP_RESAMPLES,
                BOOTSTRAP_SEED + i as u64,
            ))
        });
        let verdict = match current_value {
            None => Verdict::Missing,
            Some(c) if floor.is_some_and(|f| c < f) => Verdict::BelowFloor,
            Some(c) => {
                let fall = base_value - c;
                let beyond = tolerance.is_some_and(|t| fall > t + 1e-12);
                match (beyond, test) {
                    (true, Some(t)) if t.high < 0.0 => Verdict::Regressed,
                    (true, Some(_)) => Verdict::FallNotSignificant,
                    (true, None) => Verdict::Regressed,
                    (false, Some(t)) if t.low > 0.0 => Verdict::Improved,
                    (false, None) if c > base_value + tolerance.unwrap_or(0.0) => Verdict::Improved,
                    _ => Verdict::Unchanged,
                }
            }
        };
        out.push(MetricComparison {
            suite: spec.name.clone(),
            metric: metric.clone(),
            baseline: base_value,
            current: current_value,
            tolerance,
            floor,
            test,
            unit: unit_of(&current.suite),
            verdict,
        });
    }
    Ok(out)
}

/// The gate over every listed suite.
#[derive(Debug, Default, Serialize)]
pub struct GateOutcome {
    pub comparisons: Vec<MetricComparison>,
    /// Suites that could not be compared (missing report, different items), in words.
    pub errors: Vec<String>,
}

impl GateOutcome {
    /// Whether the gate passes.
    pub fn passed(&self) -> bool {
        self.errors.is_empty() && !self.comparisons.iter().any(|c| c.verdict.fails())
    }

    /// Every reason the gate fails, one line each.
    pub fn failures(&self) -> Vec<String> {
        self.errors
            .iter()
            .cloned()
            .chain(
                self.comparisons
                    .iter()
                    .filter_map(MetricComparison::failure),
            )
            .collect()
    }

    /// The before/after table (markdown).
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| suite | metric | baseline | current | change | 95% interval (paired bootstrap) | p | tolerance | verdict |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for c in &self.comparisons {
            let cur = c.current.map_or("-".into(), |v| format!("{v:.4}"));
            let change = c.change().map_or("-".into(), |v| format!("{v:+.4}"));
            let (interval, p) = match c.test {
                Some(t) => (
                    format!(
                        "[{:+.4}, {:+.4}] over {} {}",
                        t.low, t.high, t.items, c.unit
                    ),
                    format!("{:.4}", t.p_value),
                ),
                None => ("no per-item data".into(), "-".into()),
            };
            let tol = c.tolerance.map_or("-".into(), |t| format!("{t:.4}"));
            let verdict = match c.verdict {
                Verdict::Unchanged => "ok",
                Verdict::Improved => "improved",
                Verdict::FallNotSignificant => "fell, not significant",
                Verdict::Regressed => "**REGRESSED**",
                Verdict::BelowFloor => "**BELOW FLOOR**",
                Verdict::Missing => "**MISSING**",
            };
            s.push_str(&format!(
                "| {} | {} | {:.4} | {cur} | {change} | {interval} | {p} | {tol} | {verdict} |\n",
                c.suite, c.metric, c.baseline
            ));
        }
        s
    }
}

/// Compare every suite of `suites` between two report directories.
pub fn compare_dirs(suites: &[&SuiteSpec], baseline_dir: &Path, current_dir: &Path) -> GateOutcome {
    let mut outcome = GateOutcome::default();
    for spec in suites {
        let read = |dir: &Path, what: &str| {
            read_report(&report_path(dir, &spec.name))
                .map_err(|e| format!("{}: {what}: {e}", spec.name))
        };
        let (baseline, current) =
            match (read(baseline_dir, "baseline"), read(current_dir, "current")) {
                (Ok(b), Ok(c)) => (b, c),
                (b, c) => {
                    outcome.errors.extend(b.err());
                    outcome.errors.extend(c.err());
                    continue;
                }
            };
        match compare_reports(spec, &baseline, &current) {
            Ok(c) => outcome.comparisons.extend(c),
            Err(e) => outcome.errors.push(e),
        }
    }
    outcome
}

/// Files that belong to suite `name`'s report in `dir`: the JSON, its markdown and its plots.
pub fn report_files(dir: &Path, name: &str) -> Result<Vec<PathBuf>, GateError> {
    let read_dir = std::fs::read_dir(dir).map_err(|source| GateError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut files: Vec<PathBuf> = read_dir
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let file = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
            file == format!("{name}.json")
                || file == format!("{name}.md")
                || (file.starts_with(&format!("{name}-")) && file.ends_with(".png"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Promote the current reports of `suites` to baselines: each suite's JSON, markdown and plots
/// are copied from `current_dir` to `baseline_dir`. Returns the files written.
pub fn accept(
    suites: &[&SuiteSpec],
    current_dir: &Path,
    baseline_dir: &Path,
) -> Result<Vec<PathBuf>, GateError> {
    // Every report must be there and readable before anything is replaced.
    for spec in suites {
        read_report(&report_path(current_dir, &spec.name))?;
    }
    let mut written = Vec::new();
    std::fs::create_dir_all(baseline_dir).map_err(|source| GateError::Write {
        path: baseline_dir.display().to_string(),
        source,
    })?;
    for spec in suites {
        for from in report_files(current_dir, &spec.name)? {
            let to = baseline_dir.join(from.file_name().unwrap_or_default());
            std::fs::copy(&from, &to).map_err(|source| GateError::Write {
                path: to.display().to_string(),
                source,
            })?;
            written.push(to);
        }
    }
    Ok(written)
}

/// One suite's outcome in `eval run`.
#[derive(Debug, Clone)]
pub struct SuiteRun {
    pub name: String,
    pub seconds: f64,
    /// The report, or why the suite failed.
    pub report: Result<Report, String>,
}

/// What [`run_suites`] did: each suite's outcome, and the combined report written beside them.
#[derive(Debug)]
pub struct GateRun {
    pub runs: Vec<SuiteRun>,
    /// The combined markdown report, as written to `report.md`.
    pub markdown: String,
    pub combined: PathBuf,
}

impl GateRun {
    /// The suites that failed to produce a report.
    pub fn failed(&self) -> Vec<&str> {
        self.runs
            .iter()
            .filter(|r| r.report.is_err())
            .map(|r| r.name.as_str())
            .collect()
    }
}

/// Run every suite into `output` and write the combined report (`report.md`), with `baselines`
/// beside the figures when given. `run_one(index, suite, report_path)` runs one suite's command
/// (given its own copy of the suite, which the returned future may keep),
/// which writes its report at `report_path`; a suite that fails (or writes no readable report)
/// is recorded with its reason and the others still run.
pub async fn run_suites<F, Fut>(
    suites: &[&SuiteSpec],
    output: &Path,
    baselines: Option<&Path>,
    mut run_one: F,
) -> Result<GateRun, GateError>
where
    F: FnMut(usize, SuiteSpec, PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    std::fs::create_dir_all(output).map_err(|source| GateError::Write {
        path: output.display().to_string(),
        source,
    })?;
    let mut runs = Vec::with_capacity(suites.len());
    for (i, spec) in suites.iter().enumerate() {
        let out = report_path(output, &spec.name);
        let started = std::time::Instant::now();
        let report = match run_one(i, (*spec).clone(), out.clone()).await {
            Ok(()) => read_report(&out).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        runs.push(SuiteRun {
            name: spec.name.clone(),
            seconds: started.elapsed().as_secs_f64(),
            report,
        });
    }
    let markdown = combined_markdown(suites, &runs, baselines, output);
    let combined = output.join("report.md");
    std::fs::write(&combined, &markdown).map_err(|source| GateError::Write {
        path: combined.display().to_string(),
        source,
    })?;
    Ok(GateRun {
        runs,
        markdown,
        combined,
    })
}

/// The combined markdown report of an `eval run`: per suite, the headline metrics beside the
/// outside references and the baseline, and the suite's plots.
pub fn combined_markdown(
    suites: &[&SuiteSpec],
    runs: &[SuiteRun],
    baseline_dir: Option<&Path>,
    output_dir: &Path,
) -> String {
    let total: f64 = runs.iter().map(|r| r.seconds).sum();
    let mut s = format!(
        "# signaldesk offline eval\n\n{} suites in {:.0} s.\n",
        runs.len(),
        total
    );
    for run in runs {
        let Some(spec) = suites.iter().find(|s| s.name == run.name) else {
            continue;
        };
        s.push_str(&format!("\n## {} ({:.1} s)\n\n", spec.name, run.seconds));
        let overrides: Vec<String> = spec
            .config
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let with = if overrides.is_empty() {
            String::new()
        } else {
            format!(" with {}", overrides.join(", "))
        };
        s.push_str(&format!(
            "`signaldesk eval {}`{with}  \n{}\n\n",
            spec.args.join(" "),
            spec.subset
        ));
        let report = match &run.report {
            Ok(r) => r,
            Err(e) => {
                s.push_str(&format!("**failed**: {e}\n"));
                continue;
            }
        };
        let baseline = baseline_dir.and_then(|d| read_report(&report_path(d, &spec.name)).ok());
        let mut metrics: BTreeSet<&String> =
            spec.tolerance.keys().chain(spec.floor.keys()).collect();
        metrics.extend(spec.references.values().flat_map(|m| m.keys()));
        metrics.extend(spec.show.iter());
        if metrics.is_empty() {
            metrics = report.metrics.keys().collect();
        }
        let refs: Vec<&String> = spec.references.keys().collect();
        s.push_str("| metric | signaldesk |");
        if baseline.is_some() {
            s.push_str(" baseline |");
        }
        for r in &refs {
            s.push_str(&format!(" {r} |"));
        }
        s.push_str(" floor |\n|---|---|");
        if baseline.is_some() {
            s.push_str("---|");
        }
        s.push_str(&"---|".repeat(refs.len() + 1));
        s.push('\n');
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        for m in metrics {
            s.push_str(&format!(
                "| {m} | {} |",
                fmt(report.metrics.get(m).copied())
            ));
            if let Some(b) = &baseline {
                s.push_str(&format!(" {} |", fmt(b.metrics.get(m).copied())));
            }
            for r in &refs {
                s.push_str(&format!(" {} |", fmt(spec.references[*r].get(m).copied())));
            }
            s.push_str(&format!(" {} |\n", fmt(spec.floor.get(m).copied())));
        }
        if let Ok(files) = report_files(output_dir, &spec.name) {
            for png in files
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "png"))
            {
                let file = png.file_name().unwrap_or_default().to_string_lossy();
                s.push_str(&format!("\n![{file}]({file})\n"));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn spec(tolerance: &[(&str, f64)], floor: &[(&str, f64)]) -> SuiteSpec {
        SuiteSpec {
            name: "s".into(),
            args: vec!["retrieval".into()],
            subset: "all".into(),
            settings: Default::default(),
            config: Default::default(),
            tolerance: tolerance.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            floor: floor.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            show: Vec::new(),
            references: Default::default(),
        }
    }

    /// A retrieval-like report whose per-query `ndcg@10` values are `values`.
    fn report(values: &[f64]) -> Report {
        let per_item: BTreeMap<String, BTreeMap<String, f64>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    format!("q{i}"),
                    BTreeMap::from([("ndcg@10".to_string(), *v)]),
                )
            })
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        Report {
            suite: "retrieval".into(),
            dataset: "d".into(),
            config: Value::Null,
            metrics: BTreeMap::from([("ndcg@10".to_string(), mean)]),
            per_item,
            details: Value::Null,
            extra: Default::default(),
        }
    }

    fn values(seed: u64, n: usize, shift: f64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| (rng.random::<f64>() + shift).clamp(0.0, 1.0))
            .collect()
    }

    #[test]
    fn a_significant_drop_beyond_tolerance_fails_and_names_the_interval() {
        let base = values(1, 300, 0.0);
        let worse: Vec<f64> = base.iter().map(|v| (v - 0.1).max(0.0)).collect();
        let c = compare_reports(
            &spec(&[("ndcg@10", 0.005)], &[]),
            &report(&base),
            &report(&worse),
        )
        .unwrap();
        assert_eq!(c[0].verdict, Verdict::Regressed);
        let t = c[0].test.unwrap();
        assert!(t.high < 0.0 && t.low < t.high, "{t:?}");
        let msg = c[0].failure().unwrap();
        assert!(msg.contains("s: ndcg@10 dropped"), "{msg}");
        assert!(msg.contains("95% interval of the change"), "{msg}");
        assert!(msg.contains("over 300 queries"), "{msg}");
    }

    #[test]
    fn noise_a_small_drop_and_an_improvement_pass() {
        let base = values(1, 300, 0.0);
        let s = spec(&[("ndcg@10", 0.005)], &[]);
        // Same items, unrelated noise per item: no significant change in either direction.
        let noisy: Vec<f64> = base
            .iter()
            .zip(values(2, 300, 0.0))
            .map(|(b, n)| (b + (n - 0.5) * 0.02).clamp(0.0, 1.0))
            .collect();
        let c = compare_reports(&s, &report(&base), &report(&noisy)).unwrap();
        assert!(!c[0].verdict.fails(), "{:?}", c[0]);
        // A drop inside the tolerance passes even though it is consistent.
        let slightly: Vec<f64> = base.iter().map(|v| v - 0.003).collect();
        let c = compare_reports(&s, &report(&base), &report(&slightly)).unwrap();
        assert_eq!(c[0].verdict, Verdict::Unchanged);
        let better: Vec<f64> = base.iter().map(|v| (v + 0.1).min(1.0)).collect();
        let c = compare_reports(&s, &report(&base), &report(&better)).unwrap();
        assert_eq!(c[0].verdict, Verdict::Improved);
    }

    #[test]
    fn a_drop_on_a_few_items_beyond_tolerance_is_not_significant() {
        // Five queries, one falls a lot: the mean drops 0.06, but resampling five items cannot
        // rule out no change.
        let base = vec![0.5, 0.6, 0.7, 0.4, 0.8];
        let cur = vec![0.5, 0.6, 0.7, 0.4, 0.5];
        let c = compare_reports(
            &spec(&[("ndcg@10", 0.005)], &[]),
            &report(&base),
            &report(&cur),
        )
        .unwrap();
        assert_eq!(c[0].verdict, Verdict::FallNotSignificant);
        assert!(c[0].test.unwrap().high >= 0.0);
    }

    #[test]
    fn a_floor_fails_whatever_the_baseline_and_different_items_are_an_error() {
        let base = values(1, 50, 0.0);
        let c = compare_reports(
            &spec(&[], &[("ndcg@10", 0.9)]),
            &report(&base),
            &report(&base),
        )
        .unwrap();
        assert_eq!(c[0].verdict, Verdict::BelowFloor);
        let e = compare_reports(
            &spec(&[("ndcg@10", 0.01)], &[]),
            &report(&base),
            &report(&base[..40]),
        )
        .unwrap_err();
        assert!(e.contains("50 queries and the current report 40"), "{e}");
    }

    /// A tagging report over `docs`, each with gold and predicted label lists.
    fn tagging(docs: &[(&[&str], &[&str])]) -> Report {
        let gold: Vec<Vec<String>> = docs
            .iter()
            .map(|d| d.0.iter().map(|s| s.to_string()).collect())
            .collect();
        let pred: Vec<Vec<String>> = docs
            .iter()
            .map(|d| d.1.iter().map(|s| s.to_string()).collect())
            .collect();
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let (metrics, per_label) = crate::eval::tagging::score(&gold, &pred, &labels);
        let mut per_item = BTreeMap::new();
        let mut items = serde_json::Map::new();
        for (i, (g, p)) in gold.iter().zip(&pred).enumerate() {
            let tp: Vec<&String> = p.iter().filter(|l| g.contains(l)).collect();
            let fp: Vec<&String> = p.iter().filter(|l| !g.contains(l)).collect();
            let fneg: Vec<&String> = g.iter().filter(|l| !p.contains(l)).collect();
            per_item.insert(
                format!("d{i}"),
                BTreeMap::from([
                    ("tp".to_string(), tp.len() as f64),
                    ("fp".to_string(), fp.len() as f64),
                    ("fn".to_string(), fneg.len() as f64),
                ]),
            );
            items.insert(
                format!("d{i}"),
                serde_json::json!({"tp": tp, "fp": fp, "fn": fneg}),
            );
        }
        Report {
            suite: "tagging".into(),
            dataset: "d".into(),
            config: Value::Null,
            metrics,
            per_item,
            details: serde_json::json!({"per_label": per_label, "items": items}),
            extra: Default::default(),
        }
    }

    #[test]
    fn tagging_micro_and_macro_f1_are_tested_from_the_items_labels() {
        let good: Vec<(&[&str], &[&str])> = (0..200)
            .map(|i| match i % 3 {
                0 => (&["a"][..], &["a"][..]),
                1 => (&["b"][..], &["b"][..]),
                _ => (&["c"][..], &["c"][..]),
            })
            .collect();
        // The worse tagger misses c everywhere and says a instead.
        let bad: Vec<(&[&str], &[&str])> = (0..200)
            .map(|i| match i % 3 {
                0 => (&["a"][..], &["a"][..]),
                1 => (&["b"][..], &["b"][..]),
                _ => (&["c"][..], &["a"][..]),
            })
            .collect();
        let s = spec(&[("micro_f1", 0.005), ("macro_f1", 0.01)], &[]);
        let c = compare_reports(&s, &tagging(&good), &tagging(&bad)).unwrap();
        for m in &c {
            assert!(
                m.test.is_some(),
                "{} reproduced from per-item data",
                m.metric
            );
            assert_eq!(m.verdict, Verdict::Regressed, "{m:?}");
        }
        let c = compare_reports(&s, &tagging(&good), &tagging(&good)).unwrap();
        assert!(c.iter().all(|m| m.verdict == Verdict::Unchanged));
    }

    #[test]
    fn the_suite_list_names_bad_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ci.toml");
        std::fs::write(
            &p,
            "[[suite]]\nname = \"a\"\nargs = [\"retrieval\", \"--output\", \"x.json\"]\nsubset = \"all\"\n",
        )
        .unwrap();
        let e = SuiteList::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("suite[0] (a): args must not set --output"),
            "{e}"
        );
        std::fs::write(
            &p,
            "[[suite]]\nname = \"a\"\nargs = [\"x\"]\nsubset = \"all\"\nbogus = 1\n",
        )
        .unwrap();
        let e = SuiteList::load(&p).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let list = SuiteList::load(&crate::eval::gate::tests::repo_ci_toml()).unwrap();
        assert!(list
            .select(&["nope".into()])
            .unwrap_err()
            .contains("no suite named nope"));
    }

    fn repo_ci_toml() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/ci.toml")
    }
}
