//! Offline evaluation against golden datasets.
//!
//! Every suite writes the same report shape, which later tooling (compare, accept, the CI gate)
//! relies on: `{"suite", "dataset", "config", "metrics", "per_item"}` as JSON, with a markdown
//! summary beside it. Metric keys are lower case with an `@k` suffix; `per_item` holds, per
//! query (or document, or user), what a paired significance test needs.

pub mod gate;
pub mod grounded;
pub mod metrics;
pub mod plot;
pub mod porter;
pub mod recommend;
pub mod retrieval;
pub mod rouge;
pub mod smoke;
pub mod summaries;
pub mod tagging;
pub mod traffic;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The report every suite writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub suite: String,
    pub dataset: String,
    pub config: Value,
    pub metrics: BTreeMap<String, f64>,
    pub per_item: BTreeMap<String, BTreeMap<String, f64>>,
    /// What a suite reports beyond numbers per item: per-label tables, the labels behind each
    /// item's counts.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
    /// Suite-specific top-level sections (the recommendation report's `rankers`, `references`,
    /// `diversity_sweep`, `ablation`).
    #[serde(flatten, default)]
    pub extra: serde_json::Map<String, Value>,
}

impl Report {
    /// Write `path` (JSON) and the markdown summary beside it (`path` with `.md`).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")?;
        std::fs::write(path.with_extension("md"), self.markdown())?;
        self.plot(path).map_err(std::io::Error::other)
    }

    /// The suite's plot beside the report (`<stem>-labels.png`: per-label F1 for tagging;
    /// `<stem>-ndcg.png`: the per-query nDCG@10 histogram for retrieval). The recommendation
    /// suite draws its diversity sweep itself.
    fn plot(&self, path: &Path) -> Result<(), plot::PlotError> {
        let stem = path.with_extension("");
        let beside = |suffix: &str| {
            let mut s = stem.clone().into_os_string();
            s.push(suffix);
            std::path::PathBuf::from(s)
        };
        match self.suite.as_str() {
            "tagging" => {
                let labels: Vec<(String, f64, u64)> = self.details["per_label"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(l, s)| {
                                (
                                    l.clone(),
                                    s["f1"].as_f64().unwrap_or(0.0),
                                    s["support"].as_u64().unwrap_or(0),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if labels.is_empty() {
                    return Ok(());
                }
                let title = format!(
                    "per-label F1, {} tagger ({} test documents)",
                    self.config["tagger"].as_str().unwrap_or("?"),
                    self.per_item.len()
                );
                plot::label_f1_bars(&title, &labels, &beside("-labels.png"))
            }
            "retrieval" => {
                let values: Vec<f64> = self
                    .per_item
                    .values()
                    .filter_map(|r| r.get("ndcg@10").copied())
                    .collect();
                let title = format!(
                    "per-query nDCG@10, {} search (mean {:.4})",
                    self.config["mode"].as_str().unwrap_or("?"),
                    self.metrics.get("ndcg@10").copied().unwrap_or(0.0)
                );
                plot::ndcg_histogram(&title, &values, &beside("-ndcg.png"))
            }
            _ => Ok(()),
        }
    }

    /// A human summary: the headline metrics and the configuration.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# {} eval: {}\n\n| metric | value |\n|---|---|\n",
            self.suite, self.dataset
        );
        for (k, v) in &self.metrics {
            s.push_str(&format!("| {k} | {v:.4} |\n"));
        }
        s.push_str(&format!(
            "\n{} items evaluated.\n\nConfiguration:\n\n```json\n{}\n```\n",
            self.per_item.len(),
            serde_json::to_string_pretty(&self.config).unwrap_or_default()
        ));
        s
    }
}
