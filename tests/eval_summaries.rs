//! `signaldesk eval summaries` on FRANK, as a user runs it: lead-3 reproduces the reference
//! ROUGE figures measured with `rouge-score` (so the tokenizer, stemmer and scoring agree), and
//! the extractive summarizer keeps every summary within its word limit.

mod common;

use std::path::Path;

use common::{run, signaldesk, stderr};
use serde_json::Value;

#[test]
fn lead3_reproduces_the_reference_rouge_and_extractive_summaries_fit_their_limit() {
    let work = tempfile::tempdir().unwrap();
    let data = common::root().join("golden-datasets/frank");
    let report = work.path().join("summaries.json");
    let o = run(signaldesk(work.path())
        .env(
            "SIGNALDESK_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("frank-embedding-cache"),
        )
        .args(["eval", "summaries", "--dataset"])
        .arg(&data)
        .arg("--output")
        .arg(&report));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let m = |k: &str| r["metrics"][k].as_f64().unwrap_or_else(|| panic!("no {k}"));
    // Measured with rouge-score (Porter stemming, mean F1) on the same 501 articles.
    for (key, want) in [
        ("lead3.cnndm.rouge1", 0.412),
        ("lead3.cnndm.rouge2", 0.187),
        ("lead3.cnndm.rougeL", 0.264),
        ("lead3.xsum.rouge1", 0.186),
        ("lead3.xsum.rouge2", 0.024),
        ("lead3.xsum.rougeL", 0.118),
    ] {
        assert!((m(key) - want).abs() < 0.002, "{key}: {} vs {want}", m(key));
    }
    assert_eq!(m("extractive.within_limit"), 1.0);
    assert!(m("extractive.mean_words") <= 60.0);
    // The extractive summary is a real summary of CNN/DM news, not noise.
    assert!(
        m("extractive.cnndm.rouge1") > 0.30,
        "{}",
        m("extractive.cnndm.rouge1")
    );
    assert_eq!(r["per_item"].as_object().unwrap().len(), 501);
    let first = r["details"]["summaries"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    for k in ["reference", "lead3", "extractive", "source"] {
        assert!(first[k].is_string(), "{first}");
    }
}
