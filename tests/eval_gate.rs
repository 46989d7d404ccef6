//! The CI gate is live: real suites on small real subsets (the first 100 SciFact test queries,
//! the first 300 Reuters test documents) run once with the shipped configuration and once with
//! a deliberately worse one (dense search in place of hybrid, kNN with k = 1), and
//! `eval compare` fails on the second, naming the suite, the metric, the drop and its interval.
//! An improvement, an unchanged run and a drop inside tolerance pass.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{run, signaldesk, stderr};

/// Shared across runs in the build dir (embedding SciFact and Reuters takes minutes cold); the
/// test command's `eval run` uses the same directory afterwards.
fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("eval-embedding-cache")
}

fn suites(tolerance_scale: f64) -> String {
    let root = common::root();
    let scifact = root.join("golden-datasets/scifact");
    let reuters = root.join("golden-datasets/reuters21578/modapte90");
    format!(
        r#"
[[suite]]
name = "retrieval-scifact-100"
args = ["retrieval", "--dataset", "{scifact}", "--limit-queries", "100"]
subset = "the first 100 SciFact test queries"
tolerance = {{ "ndcg@10" = {t_ndcg}, "recall@100" = {t_recall} }}

[[suite]]
name = "tagging-reuters-300"
args = ["tagging", "--tagger", "knn", "--no-tune", "--limit", "300", "--dataset", "{reuters}", "--taxonomy", "{taxonomy}"]
subset = "the first 300 Reuters test documents"
tolerance = {{ "micro_f1" = {t_micro}, "macro_f1" = {t_macro} }}
"#,
        scifact = scifact.display(),
        reuters = reuters.display(),
        taxonomy = reuters.join("taxonomy.tsv").display(),
        t_ndcg = 0.005 * tolerance_scale,
        t_recall = 0.005 * tolerance_scale,
        t_micro = 0.005 * tolerance_scale,
        t_macro = 0.01 * tolerance_scale,
    )
}

fn eval_run(work: &Path, list: &Path, out: &str, worse: bool) -> Output {
    let mut cmd = signaldesk(work);
    cmd.env("SIGNALDESK_CACHE_DIR", cache())
        .args(["eval", "run"])
        .arg(list)
        .args(["--output", out]);
    if worse {
        // Configuration the product reads: dense search instead of hybrid, one neighbour.
        cmd.env("SIGNALDESK_SEARCH__MODE", "dense")
            .env("SIGNALDESK_ENRICH__KNN__K", "1");
    }
    run(&mut cmd)
}

/// A report (or any JSON file) as a value.
fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn compare(work: &Path, list: &Path, baseline: &str, current: &str) -> Output {
    run(signaldesk(work)
        .args(["eval", "compare", baseline, current, "--suites"])
        .arg(list))
}

#[test]
fn the_gate_fails_a_worse_configuration_and_passes_the_shipped_one() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let list = w.join("suites.toml");
    std::fs::write(&list, suites(1.0)).unwrap();

    let o = eval_run(w, &list, "shipped", false);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for f in [
        "retrieval-scifact-100.json",
        "retrieval-scifact-100.md",
        "retrieval-scifact-100-ndcg.png",
        "tagging-reuters-300.json",
        "tagging-reuters-300-labels.png",
        "report.md",
    ] {
        assert!(w.join("shipped").join(f).is_file(), "{f} written");
    }
    let combined = std::fs::read_to_string(w.join("shipped/report.md")).unwrap();
    assert!(combined.contains("## retrieval-scifact-100"), "{combined}");
    assert!(combined.contains("| micro_f1 |"), "{combined}");
    let report = read_json(&w.join("shipped/retrieval-scifact-100.json"));
    assert_eq!(report["config"]["queries"], 100);
    assert_eq!(report["config"]["mode"], "hybrid");

    let o = eval_run(w, &list, "worse", true);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = read_json(&w.join("worse/retrieval-scifact-100.json"));
    assert_eq!(report["config"]["mode"], "dense");

    // The worse configuration fails, and each failure names suite, metric, drop and interval.
    let o = compare(w, &list, "shipped", "worse");
    let err = stderr(&o);
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    for needle in [
        // Dense alone loses 0.033 nDCG@10 on these 100 queries (p = 0.10: passes, flagged "fell,
        // not significant") and 0.035 recall@100 (p = 0.04: fails).
        "FAIL retrieval-scifact-100: recall@100 dropped",
        "FAIL tagging-reuters-300: micro_f1 dropped",
        "more than its tolerance",
        "95% interval of the change [-",
        "paired bootstrap over 100 queries",
        "paired bootstrap over 300 documents",
    ] {
        assert!(err.contains(needle), "{needle:?} in:\n{err}");
    }
    assert!(table.contains("**REGRESSED**"), "{table}");
    assert!(
        table.contains("| retrieval-scifact-100 | ndcg@10 |"),
        "{table}"
    );

    // The same reports, and an improvement (the shipped run against the worse one), pass.
    let o = compare(w, &list, "shipped", "shipped");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = compare(w, &list, "worse", "shipped");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("improved"));

    // A drop inside tolerance passes: the same runs with tolerances wide enough to hold it.
    let wide = w.join("wide.toml");
    std::fs::write(&wide, suites(40.0)).unwrap();
    let o = compare(w, &wide, "shipped", "worse");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Accepting promotes the reports: compared with itself, the gate passes.
    let o = run(signaldesk(w)
        .args([
            "eval",
            "accept",
            "worse",
            "--baselines",
            "accepted",
            "--suites",
        ])
        .arg(&list));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(w.join("accepted/tagging-reuters-300.json").is_file());
    assert!(w.join("accepted/retrieval-scifact-100-ndcg.png").is_file());
    let o = compare(w, &list, "accepted", "worse");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_missing_report_or_an_unknown_suite_is_named() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let list = w.join("suites.toml");
    std::fs::write(&list, suites(1.0)).unwrap();
    std::fs::create_dir_all(w.join("empty")).unwrap();
    let o = compare(w, &list, "empty", "empty");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("FAIL retrieval-scifact-100: baseline: cannot read"),
        "{err}"
    );
    let o = run(signaldesk(w)
        .args(["eval", "run", "--only", "nope", "--output", "x"])
        .arg(&list));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no suite named nope"), "{}", stderr(&o));
}

/// The committed LLM cache replays the recorded provider run exactly, without a provider and
/// without touching the file; with the answers missing, every item falls back and the gate
/// fails the suite on its floor.
#[test]
fn a_committed_llm_cache_replays_a_provider_run_and_a_missing_answer_fails_the_gate() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root = common::root();
    let committed = root.join("eval/cache/llm-responses.redb");
    let copy = w.join("replay.redb");
    std::fs::copy(&committed, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    // The shipped suite list's replay suite, with the cache file pointed at `file`.
    let ci = std::fs::read_to_string(root.join("eval/ci.toml")).unwrap();
    let list: toml::Table = toml::from_str(&ci).unwrap();
    let suite = list["suite"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str() == Some("tagging-reuters-llm-replay"))
        .expect("eval/ci.toml lists the replay suite")
        .clone();
    let write_list = |file: &Path, at: &Path| {
        let mut s = suite.as_table().unwrap().clone();
        let args: Vec<toml::Value> = s["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let a = a.as_str().unwrap();
                toml::Value::String(if a.starts_with("golden-datasets/") {
                    root.join(a).display().to_string()
                } else {
                    a.to_string()
                })
            })
            .collect();
        s.insert("args".into(), toml::Value::Array(args));
        s["config"].as_table_mut().unwrap().insert(
            "llm.cache_file".into(),
            toml::Value::String(file.display().to_string()),
        );
        let mut t = toml::Table::new();
        t.insert(
            "suite".into(),
            toml::Value::Array(vec![toml::Value::Table(s)]),
        );
        std::fs::write(at, toml::to_string(&t).unwrap()).unwrap();
    };
    let list_path = w.join("replay.toml");
    write_list(&copy, &list_path);
    let o = eval_run(w, &list_path, "replayed", false);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = read_json(&w.join("replayed/tagging-reuters-llm-replay.json"));
    assert_eq!(r["config"]["fallbacks"], 0, "{}", r["config"]);
    assert_eq!(r["config"]["llm_provider"], "openai");
    let baseline = read_json(&root.join("eval/baselines/tagging-reuters-llm-replay.json"));
    assert_eq!(r["metrics"], baseline["metrics"]);
    assert!(
        std::fs::read(&copy).unwrap() == before,
        "the replay left the cache file as it was"
    );

    // No recorded answers: each call is a cache miss (never a network call), each item falls
    // back to kNN, and the gate fails the suite on its floor.
    let empty = w.join("empty.redb");
    let list_path = w.join("missing.toml");
    write_list(&empty, &list_path);
    let o = eval_run(w, &list_path, "missing", false);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = read_json(&w.join("missing/tagging-reuters-llm-replay.json"));
    assert_eq!(r["config"]["fallbacks"], 100, "{}", r["config"]);
    let o = run(signaldesk(w)
        .args(["eval", "compare"])
        .arg(root.join("eval/baselines"))
        .arg("missing")
        .arg("--suites")
        .arg(&list_path));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "FAIL tagging-reuters-llm-replay: llm_answered is 0.0000, below its floor 1.0000"
        ),
        "{err}"
    );
}
