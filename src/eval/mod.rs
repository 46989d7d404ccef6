//! Offline evaluation against golden datasets.
//!
//! Every suite writes the same report shape, which later tooling (compare, accept, the CI gate)
//! relies on: `{"suite", "dataset", "config", "metrics", "per_item"}` as JSON, with a markdown
//! summary beside it. Metric keys are lower case with an `@k` suffix; `per_item` holds, per
//! query (or document, or user), what a paired significance test needs.

pub mod metrics;
pub mod plot;
pub mod porter;
pub mod recommend;
pub mod retrieval;
pub mod rouge;
pub mod summaries;
pub mod tagging;

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
        std::fs::write(path.with_extension("md"), self.markdown())
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
