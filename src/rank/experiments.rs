//! Controlled experiments: variants with allocations, deterministic bucketing, live ramps,
//! exposure logging, and the readout (CTR with intervals, difference to control, and a
//! sample-ratio-mismatch check).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::explore::ExploreConfig;
use super::interactions::Interaction;
use super::recommender::{RankerKind, Recommended};
use super::RankError;
use crate::config::{Boost, ObjectivesConfig, RankConfig};

/// `experiments.toml`: `[[experiment]]` tables, each with `[[experiment.variant]]`s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentsFile {
    #[serde(default, rename = "experiment")]
    pub experiments: Vec<Experiment>,
}

/// One experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    /// Mixed into every user's hash; a new salt reshuffles users (default: the name), and two
    /// experiments with different salts bucket independently.
    #[serde(default)]
    pub salt: Option<String>,
    /// Off: nobody is in it (everyone gets the default ranking, no exposures name it).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The variant users fall back to (switched-off variants, unallocated share).
    pub control: String,
    /// `split` (each user sees one variant) or `interleave` (every user in the experiment
    /// sees the two variants' lists merged by team draft; allocations are not used).
    #[serde(default)]
    pub kind: ExperimentKind,
    #[serde(rename = "variant")]
    pub variants: Vec<Variant>,
}

fn yes() -> bool {
    true
}

/// How an experiment compares its variants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExperimentKind {
    /// An A/B split: users are bucketed into variants by their allocations.
    #[default]
    Split,
    /// Team-draft interleaving of exactly two variants ([`super::interleave`]): each click
    /// credits the variant that contributed the item, so every user compares both.
    Interleave,
}

/// The variant name interleaved users are assigned and served.
pub const INTERLEAVED: &str = "interleaved";

/// One arm: its share of users and what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    /// Share of users, 0 to 1; what allocations leave over goes to control.
    pub allocation: f64,
    /// Off: its users are served control (and still counted as assigned to it).
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub ranker: Option<RankerKind>,
    /// A blend model file other than `rank.model`.
    #[serde(default)]
    pub model: Option<PathBuf>,
    #[serde(default)]
    pub mmr_lambda: Option<f32>,
    #[serde(default)]
    pub boosts: Option<Vec<Boost>>,
    #[serde(default)]
    pub max_per_source: Option<usize>,
    #[serde(default)]
    pub demote_older_than_days: Option<f64>,
    /// Serve a stochastic list with logged propensities (ε-greedy lists over the ranker's
    /// pool), so other rankers can be estimated off-policy from this variant's exposures.
    #[serde(default)]
    pub explore: Option<ExploreConfig>,
}

impl Variant {
    /// The objectives this variant serves with, over the configured ones.
    pub fn objectives(&self, base: &ObjectivesConfig) -> ObjectivesConfig {
        let mut o = base.clone();
        if let Some(l) = self.mmr_lambda {
            o.mmr_lambda = l;
        }
        if let Some(b) = &self.boosts {
            o.boosts = b.clone();
        }
        if let Some(cap) = self.max_per_source {
            o.max_per_source = cap;
        }
        if let Some(days) = self.demote_older_than_days {
            o.demote_older_than_days = days;
        }
        o
    }
}

impl ExperimentsFile {
    /// Parse and check a file's text.
    pub fn parse(text: &str, origin: &str) -> Result<Self, RankError> {
        let file: Self =
            toml::from_str(text).map_err(|e| RankError::Experiments(format!("{origin}: {e}")))?;
        for x in &file.experiments {
            let fail = |m: String| {
                Err(RankError::Experiments(format!(
                    "{origin}: experiment {:?}: {m}",
                    x.name
                )))
            };
            let total: f64 = x.variants.iter().map(|v| v.allocation).sum();
            if x.variants
                .iter()
                .any(|v| !(0.0..=1.0).contains(&v.allocation))
                || total > 1.0 + 1e-9
            {
                return fail(format!("allocations must be between 0 and 1 and sum to at most 1 (they sum to {total})"));
            }
            if !x.variants.iter().any(|v| v.name == x.control) {
                return fail(format!(
                    "control {:?} is not one of its variants",
                    x.control
                ));
            }
            if x.kind == ExperimentKind::Interleave && x.variants.len() != 2 {
                return fail(format!(
                    "an interleaving experiment compares exactly two variants (it has {})",
                    x.variants.len()
                ));
            }
            for v in &x.variants {
                if let Some(Err(m)) = v.explore.as_ref().map(ExploreConfig::check) {
                    return fail(format!("variant {:?}: {m}", v.name));
                }
            }
            let mut names: Vec<&str> = x.variants.iter().map(|v| v.name.as_str()).collect();
            names.sort();
            if names.windows(2).any(|w| w[0] == w[1]) {
                return fail("two variants share a name".into());
            }
        }
        Ok(file)
    }

    /// The experiment called `name`.
    pub fn get(&self, name: &str) -> Option<&Experiment> {
        self.experiments.iter().find(|x| x.name == name)
    }
}

/// A user's place in an experiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub experiment: String,
    /// The variant the user's hash falls in.
    pub assigned: String,
    /// The variant served: `assigned`, or control when that is switched off.
    pub served: String,
}

/// Where `user` falls in [0, 1) for `salt`: the first 8 bytes of sha256(salt, 0x1f, user).
/// Same answer in every process and on every machine; different salts are independent.
pub fn bucket(salt: &str, user: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0x1f]);
    h.update(user.as_bytes());
    let d = h.finalize();
    let x = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Experiment {
    /// The variant `user` is in (none when the experiment is off).
    pub fn assign(&self, user: &str) -> Option<Assignment> {
        if !self.enabled {
            return None;
        }
        if self.kind == ExperimentKind::Interleave {
            return Some(Assignment {
                experiment: self.name.clone(),
                assigned: INTERLEAVED.into(),
                served: INTERLEAVED.into(),
            });
        }
        let b = bucket(self.salt.as_deref().unwrap_or(&self.name), user);
        let mut edge = 0.0;
        let mut assigned = &self.control;
        for v in &self.variants {
            edge += v.allocation;
            if b < edge {
                assigned = &v.name;
                break;
            }
        }
        let served = match self.variant(assigned) {
            Some(v) if v.enabled => assigned.clone(),
            _ => self.control.clone(),
        };
        Some(Assignment {
            experiment: self.name.clone(),
            assigned: assigned.clone(),
            served,
        })
    }

    /// The variant called `name`.
    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// Each variant's expected share of users (control takes what is unallocated).
    pub fn expected_shares(&self) -> BTreeMap<String, f64> {
        let total: f64 = self.variants.iter().map(|v| v.allocation).sum();
        self.variants
            .iter()
            .map(|v| {
                let extra = if v.name == self.control {
                    1.0 - total
                } else {
                    0.0
                };
                (v.name.clone(), v.allocation + extra)
            })
            .collect()
    }
}

/// `experiments.toml`, re-read whenever its modification time changes: a ramp or a switched-off
/// variant takes effect on the next request, without a restart.
pub struct LiveExperiments {
    path: PathBuf,
    state: Mutex<(Option<SystemTime>, Arc<ExperimentsFile>)>,
}

impl LiveExperiments {
    /// Watch `path` (a missing file means no experiments).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            state: Mutex::new((None, Arc::new(ExperimentsFile::default()))),
        }
    }

    /// The file as it is now.
    pub fn current(&self) -> Result<Arc<ExperimentsFile>, RankError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut state = self.state.lock().expect("experiments lock");
        if modified != state.0 || modified.is_none() {
            let file = match std::fs::read_to_string(&self.path) {
                Ok(text) => ExperimentsFile::parse(&text, &self.path.display().to_string())?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => ExperimentsFile::default(),
                Err(source) => {
                    return Err(RankError::Read {
                        path: self.path.clone(),
                        source,
                    })
                }
            };
            *state = (modified, Arc::new(file));
        }
        Ok(state.1.clone())
    }
}

/// One recommendation as shown: who, in which arm, what, with what scores and features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    pub id: String,
    pub timestamp: i64,
    pub user: String,
    #[serde(default)]
    pub experiment: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub assigned: Option<String>,
    pub ranker: RankerKind,
    #[serde(default)]
    pub model_version: Option<String>,
    pub items: Vec<String>,
    pub scores: Vec<f32>,
    /// Each shown item's features, in `items` order.
    #[serde(default)]
    pub features: Vec<BTreeMap<String, f32>>,
    /// Each shown item's probability of being at its position under the serving policy: 1 for
    /// a deterministic list, the ε-greedy marginals for an exploring one
    /// ([`super::explore::propensity`]); empty for an interleaved list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub propensities: Vec<f64>,
    /// An exploring list's pool: what an off-policy estimate replays other rankers over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<LoggedPool>,
    /// An interleaved list: the variant each shown item was drafted for, in `items` order
    /// (`(both)` for an item both variants would have drafted next: credited to neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<Vec<String>>,
}

/// The pool an exploring list was drawn from, in the serving ranker's order, with what any
/// ranker needs to score it again: each item's sources and features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedPool {
    pub epsilon: f64,
    pub items: Vec<String>,
    pub sources: Vec<Vec<String>>,
    pub feature_names: Vec<String>,
    /// One row per item, in `feature_names` order.
    pub features: Vec<Vec<f32>>,
}

impl LoggedPool {
    /// The pool of served items (in the serving ranker's order), as the exposure log keeps it.
    pub fn of(epsilon: f64, items: &[Recommended]) -> Self {
        let feature_names: Vec<String> = items
            .first()
            .map(|c| c.features.keys().cloned().collect())
            .unwrap_or_default();
        Self {
            epsilon,
            items: items.iter().map(|c| c.id.clone()).collect(),
            sources: items
                .iter()
                .map(|c| c.sources.iter().map(|s| s.to_string()).collect())
                .collect(),
            features: items
                .iter()
                .map(|c| {
                    feature_names
                        .iter()
                        .map(|n| c.features.get(n).copied().unwrap_or(0.0))
                        .collect()
                })
                .collect(),
            feature_names,
        }
    }
}

/// The append-only exposure log (JSONL, one line per list, flushed per write).
pub struct ExposureLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl ExposureLog {
    /// Open `path` for appending.
    pub fn open(path: &Path) -> Result<Self, RankError> {
        let io = |source| RankError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Append one exposure.
    pub fn write(&self, exposure: &Exposure) -> Result<(), RankError> {
        let line = serde_json::to_string(exposure).expect("an exposure serializes") + "\n";
        let mut f = self.file.lock().expect("exposure log lock");
        f.write_all(line.as_bytes())
            .map_err(|source| RankError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

/// Read an exposure log.
pub fn read_exposures(path: &Path) -> Result<Vec<Exposure>, RankError> {
    let text = std::fs::read_to_string(path).map_err(|source| RankError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| RankError::Parse(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// One arm's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmReadout {
    pub variant: String,
    pub exposures: usize,
    pub users: usize,
    /// Exposures followed by a click on a shown item within the attribution window.
    pub clicks: usize,
    pub ctr: f64,
    /// 95% interval of the CTR (normal approximation).
    pub ctr_low: f64,
    pub ctr_high: f64,
    /// CTR minus control's, with its 95% interval (none for control).
    pub diff: Option<f64>,
    pub diff_low: Option<f64>,
    pub diff_high: Option<f64>,
}

/// An experiment's readout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readout {
    pub experiment: String,
    pub control: String,
    pub arms: Vec<ArmReadout>,
    /// Users per assigned variant against the allocations: chi-square statistic and p-value;
    /// `srm` is true when p < 0.001 (the split is broken; do not trust the differences).
    pub srm_chi2: f64,
    pub srm_p: f64,
    pub srm: bool,
}

/// The 97.5th percentile of the standard normal: 95% two-sided intervals.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Which shown items were clicked: positive engagements (or `click` events) by the exposure's
/// user with the item within `rank.attribution_window_hours` after the exposure. Every readout
/// and estimate attributes clicks through it.
pub struct Clicks<'a> {
    engaged: HashMap<(&'a str, &'a str), Vec<i64>>,
    window: i64,
}

impl<'a> Clicks<'a> {
    /// Index the interactions.
    pub fn new(interactions: &'a [Interaction], settings: &RankConfig) -> Self {
        let mut engaged: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
        for x in interactions
            .iter()
            .filter(|x| x.weight(settings) > 0.0 || x.event == "click")
        {
            engaged
                .entry((&x.user, &x.item))
                .or_default()
                .push(x.timestamp);
        }
        Self {
            engaged,
            window: (settings.attribution_window_hours * 3600.0) as i64,
        }
    }

    /// For each shown item of `e`, in order, whether it was clicked.
    pub fn of(&self, e: &Exposure) -> Vec<bool> {
        e.items
            .iter()
            .map(|item| {
                self.engaged
                    .get(&(e.user.as_str(), item.as_str()))
                    .is_some_and(|ts| {
                        ts.iter()
                            .any(|&t| t >= e.timestamp && t <= e.timestamp + self.window)
                    })
            })
            .collect()
    }
}

/// Join exposures of `experiment` with later interactions and read the experiment out.
pub fn readout(
    experiment: &Experiment,
    exposures: &[Exposure],
    interactions: &[Interaction],
    settings: &RankConfig,
) -> Readout {
    let clicks = Clicks::new(interactions, settings);
    let mut arms: BTreeMap<&str, (usize, std::collections::HashSet<&str>, usize)> = experiment
        .variants
        .iter()
        .map(|v| (v.name.as_str(), (0, Default::default(), 0)))
        .collect();
    let mut assigned_users: BTreeMap<&str, std::collections::HashSet<&str>> = BTreeMap::new();
    for e in exposures
        .iter()
        .filter(|e| e.experiment.as_deref() == Some(&experiment.name))
    {
        let (Some(served), Some(assigned)) = (e.variant.as_deref(), e.assigned.as_deref()) else {
            continue;
        };
        assigned_users.entry(assigned).or_default().insert(&e.user);
        let Some(arm) = arms.get_mut(served) else {
            continue;
        };
        arm.0 += 1;
        arm.1.insert(&e.user);
        let clicked = clicks.of(e).into_iter().any(|c| c);
        arm.2 += usize::from(clicked);
    }
    let rate = |n: usize, c: usize| if n == 0 { 0.0 } else { c as f64 / n as f64 };
    let control = arms
        .get(experiment.control.as_str())
        .map(|a| (a.0, a.2))
        .unwrap_or((0, 0));
    let p0 = rate(control.0, control.1);
    let var0 = if control.0 > 0 {
        p0 * (1.0 - p0) / control.0 as f64
    } else {
        0.0
    };
    let arms_out = experiment
        .variants
        .iter()
        .map(|v| {
            let (n, users, c) = &arms[v.name.as_str()];
            let p = rate(*n, *c);
            let var = if *n > 0 {
                p * (1.0 - p) / *n as f64
            } else {
                0.0
            };
            let half = Z95 * var.sqrt();
            let is_control = v.name == experiment.control;
            let diff = (!is_control).then_some(p - p0);
            let dhalf = Z95 * (var + var0).sqrt();
            ArmReadout {
                variant: v.name.clone(),
                exposures: *n,
                users: users.len(),
                clicks: *c,
                ctr: p,
                ctr_low: p - half,
                ctr_high: p + half,
                diff,
                diff_low: diff.map(|d| d - dhalf),
                diff_high: diff.map(|d| d + dhalf),
            }
        })
        .collect();
    let (srm_chi2, srm_p) = sample_ratio(experiment, &assigned_users);
    Readout {
        experiment: experiment.name.clone(),
        control: experiment.control.clone(),
        arms: arms_out,
        srm_chi2,
        srm_p,
        srm: srm_p < 0.001,
    }
}

/// Chi-square goodness of fit of users per assigned variant against the expected shares.
fn sample_ratio(
    experiment: &Experiment,
    assigned: &BTreeMap<&str, std::collections::HashSet<&str>>,
) -> (f64, f64) {
    let shares = experiment.expected_shares();
    let total: usize = assigned.values().map(|u| u.len()).sum();
    let observed: Vec<(f64, f64)> = shares
        .iter()
        .filter(|(_, &s)| s > 0.0)
        .map(|(name, &s)| {
            let o = assigned.get(name.as_str()).map_or(0, |u| u.len()) as f64;
            (o, s * total as f64)
        })
        .collect();
    chi_square_p(&observed)
}

/// Pearson's chi-square over (observed, expected) cells and its p-value with cells − 1
/// degrees of freedom.
pub fn chi_square_p(cells: &[(f64, f64)]) -> (f64, f64) {
    if cells.len() < 2 || cells.iter().any(|c| c.1 <= 0.0) {
        return (0.0, 1.0);
    }
    let chi2: f64 = cells.iter().map(|(o, e)| (o - e).powi(2) / e).sum();
    let dist = ChiSquared::new((cells.len() - 1) as f64).expect("positive degrees of freedom");
    (chi2, 1.0 - dist.cdf(chi2))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[experiment]]
name = "ranker"
salt = "s1"
control = "control"
[[experiment.variant]]
name = "control"
allocation = 0.5
ranker = "popularity"
[[experiment.variant]]
name = "blend"
allocation = 0.3
[[experiment.variant]]
name = "diverse"
allocation = 0.2
mmr_lambda = 0.5

[[experiment]]
name = "layout"
salt = "s2"
control = "a"
[[experiment.variant]]
name = "a"
allocation = 0.5
[[experiment.variant]]
name = "b"
allocation = 0.5
"#;

    #[test]
    fn a_million_users_land_within_a_fifth_of_a_point_of_each_allocation() {
        let file = ExperimentsFile::parse(FILE, "test").unwrap();
        let x = file.get("ranker").unwrap();
        let n = 1_000_000;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for u in 0..n {
            *counts
                .entry(x.assign(&format!("user-{u}")).unwrap().assigned)
                .or_default() += 1;
        }
        for (name, share) in x.expected_shares() {
            let got = counts[&name] as f64 / n as f64;
            assert!((got - share).abs() < 0.002, "{name}: {got} vs {share}");
        }
    }

    #[test]
    fn two_experiments_bucket_independently() {
        let file = ExperimentsFile::parse(FILE, "test").unwrap();
        let (a, b) = (file.get("ranker").unwrap(), file.get("layout").unwrap());
        let mut table: BTreeMap<(String, String), f64> = BTreeMap::new();
        let n = 200_000;
        for u in 0..n {
            let user = format!("u{u}");
            let key = (
                a.assign(&user).unwrap().assigned,
                b.assign(&user).unwrap().assigned,
            );
            *table.entry(key).or_default() += 1.0;
        }
        let row = |r: &str| {
            table
                .iter()
                .filter(|((x, _), _)| x == r)
                .map(|(_, c)| c)
                .sum::<f64>()
        };
        let col = |c: &str| {
            table
                .iter()
                .filter(|((_, y), _)| y == c)
                .map(|(_, c)| c)
                .sum::<f64>()
        };
        let mut chi2 = 0.0;
        for r in ["control", "blend", "diverse"] {
            for c in ["a", "b"] {
                let expected = row(r) * col(c) / n as f64;
                let observed = table
                    .get(&(r.to_string(), c.to_string()))
                    .copied()
                    .unwrap_or(0.0);
                chi2 += (observed - expected).powi(2) / expected;
            }
        }
        // (3 − 1)·(2 − 1) = 2 degrees of freedom.
        let p = 1.0 - ChiSquared::new(2.0).unwrap().cdf(chi2);
        assert!(
            p > 0.001,
            "assignments depend on each other: chi2 {chi2}, p {p}"
        );
        // Dependence would be caught: the same salt twice gives identical assignments.
        assert_eq!(bucket("s", "u1"), bucket("s", "u1"));
    }

    #[test]
    fn assignment_is_pinned_so_every_process_agrees() {
        // Golden values: a change to the hash would move users between arms mid-experiment.
        assert_eq!(bucket("s1", "alice"), bucket("s1", "alice"));
        let file = ExperimentsFile::parse(FILE, "test").unwrap();
        let x = file.get("ranker").unwrap();
        let got: Vec<String> = ["alice", "bob", "carol", "dave", "erin", "frank"]
            .iter()
            .map(|u| x.assign(u).unwrap().assigned)
            .collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [&str; 6] = [
        "diverse", "diverse", "blend", "control", "control", "control",
    ];

    #[test]
    fn a_switched_off_variant_serves_control_and_bad_files_are_refused() {
        let text = FILE.replace(
            "name = \"blend\"\nallocation = 0.3",
            "name = \"blend\"\nallocation = 0.3\nenabled = false",
        );
        let file = ExperimentsFile::parse(&text, "test").unwrap();
        let x = file.get("ranker").unwrap();
        let user = (0..1000)
            .map(|u| format!("u{u}"))
            .find(|u| x.assign(u).unwrap().assigned == "blend")
            .unwrap();
        assert_eq!(x.assign(&user).unwrap().served, "control");
        let bad = FILE.replace("allocation = 0.2", "allocation = 0.4");
        let err = ExperimentsFile::parse(&bad, "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sum to at most 1"), "{err}");
    }

    #[test]
    fn a_live_file_is_reread_when_it_changes_so_ramps_need_no_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("experiments.toml");
        std::fs::write(&path, FILE).unwrap();
        let live = LiveExperiments::new(&path);
        let before = live.current().unwrap();
        assert!(
            before
                .get("ranker")
                .unwrap()
                .variant("blend")
                .unwrap()
                .enabled
        );
        std::fs::write(
            &path,
            FILE.replace("allocation = 0.3", "allocation = 0.3\nenabled = false"),
        )
        .unwrap();
        // Make sure the modification time moves even on coarse-grained filesystems.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let after = live.current().unwrap();
        assert!(
            !after
                .get("ranker")
                .unwrap()
                .variant("blend")
                .unwrap()
                .enabled
        );
    }

    /// A simulated log: treatment clicks 12% of the time, control 10%; 20,000 exposures each.
    fn simulated(
        control_users: usize,
        treatment_users: usize,
    ) -> (Experiment, Vec<Exposure>, Vec<Interaction>) {
        use rand::{Rng, SeedableRng};
        let x = Experiment {
            name: "e".into(),
            salt: None,
            enabled: true,
            control: "c".into(),
            kind: ExperimentKind::Split,
            variants: vec![
                Variant {
                    name: "c".into(),
                    allocation: 0.5,
                    enabled: true,
                    ranker: None,
                    model: None,
                    mmr_lambda: None,
                    boosts: None,
                    max_per_source: None,
                    demote_older_than_days: None,
                    explore: None,
                },
                Variant {
                    name: "t".into(),
                    allocation: 0.5,
                    enabled: true,
                    ranker: None,
                    model: None,
                    mmr_lambda: None,
                    boosts: None,
                    max_per_source: None,
                    demote_older_than_days: None,
                    explore: None,
                },
            ],
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut exposures = Vec::new();
        let mut clicks = Vec::new();
        for (arm, users, rate) in [("c", control_users, 0.10), ("t", treatment_users, 0.12)] {
            for u in 0..users {
                let user = format!("{arm}{u}");
                for k in 0..2 {
                    let t = 1_000_000 + k * 200_000;
                    exposures.push(Exposure {
                        id: format!("{user}-{k}"),
                        timestamp: t,
                        user: user.clone(),
                        experiment: Some("e".into()),
                        variant: Some(arm.into()),
                        assigned: Some(arm.into()),
                        ranker: RankerKind::Blend,
                        model_version: None,
                        items: vec!["i1".into(), "i2".into()],
                        scores: vec![0.5, 0.4],
                        features: vec![],
                        propensities: vec![],
                        pool: None,
                        teams: None,
                    });
                    if rng.random::<f64>() < rate {
                        clicks.push(Interaction {
                            user: user.clone(),
                            item: "i2".into(),
                            event: "click".into(),
                            value: None,
                            timestamp: t + 60,
                        });
                    }
                }
            }
        }
        // A click two days later is outside the 24-hour window and counts for nothing.
        clicks.push(Interaction {
            user: "c0".into(),
            item: "i1".into(),
            event: "click".into(),
            value: None,
            timestamp: 1_000_000 + 200_000 + 2 * 86_400,
        });
        (x, exposures, clicks)
    }

    #[test]
    fn the_readout_finds_a_planted_lift_and_a_planted_sample_ratio_mismatch() {
        let settings = RankConfig::default();
        let (x, exposures, clicks) = simulated(10_000, 10_000);
        let r = readout(&x, &exposures, &clicks, &settings);
        let t = &r.arms[1];
        assert_eq!((r.arms[0].exposures, t.exposures), (20_000, 20_000));
        assert!(
            (t.ctr - 0.12).abs() < 0.01 && (r.arms[0].ctr - 0.10).abs() < 0.01,
            "{r:?}"
        );
        assert!(
            t.diff_low.unwrap() > 0.0,
            "the interval excludes zero: {t:?}"
        );
        assert!(t.ctr_low < t.ctr && t.ctr < t.ctr_high);
        assert!(!r.srm, "a 50/50 split is fine: p {}", r.srm_p);

        let (x, exposures, clicks) = simulated(9_000, 11_000);
        let r = readout(&x, &exposures, &clicks, &settings);
        assert!(r.srm && r.srm_p < 0.001, "45/55 trips the check: {r:?}");
    }
}
