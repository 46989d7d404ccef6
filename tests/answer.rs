//! `signaldesk verify` as a user runs it on the quickstart sample: the verifier trains itself at
//! first use (and says so), later runs load it from the cache, and every rationale sentence is a
//! byte span of the stored item's text.

mod common;

use common::{run, signaldesk, stderr};
use serde_json::Value;

fn verify(work: &std::path::Path, claim: &str) -> std::process::Output {
    let root = common::root();
    run(signaldesk(work)
        .env(
            "SIGNALDESK_ANSWER__TRAINING_CLAIMS",
            root.join("golden-datasets/scifact-claims/tune.jsonl"),
        )
        .env(
            "SIGNALDESK_ANSWER__TRAINING_CORPUS",
            root.join("golden-datasets/scifact/corpus.jsonl.gz"),
        )
        .args(["verify", "--json", claim]))
}

#[test]
fn verify_names_evidence_with_rationale_spans_and_trains_once() {
    let work = tempfile::tempdir().unwrap();
    let sample = common::root().join("golden-datasets/quickstart/sample.jsonl");
    let o = run(signaldesk(work.path()).arg("ingest").arg(&sample));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let texts: std::collections::HashMap<String, String> = std::fs::read_to_string(&sample)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let (title, body) = (
                v["title"].as_str().unwrap_or(""),
                v["body"].as_str().unwrap_or(""),
            );
            (
                v["id"].as_str().unwrap().to_string(),
                signaldesk::content::item_text(title, body).unwrap(),
            )
        })
        .collect();

    // A claim of the training claims whose gold evidence (SUPPORT) is in the sample.
    let o = verify(work.path(), "TNFAIP3 is a glioblastoma tumor enhancer.");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("training the verifier"),
        "{}",
        stderr(&o)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["considered"].as_array().unwrap().len(),
        5,
        "answer.k items read: {v}"
    );
    assert_eq!(v["considered"][0]["id"], "scifact-33370", "{v}");
    assert_eq!(v["verdict"], "SUPPORT", "{v}");
    assert_eq!(v["evidence"][0]["id"], "scifact-33370", "{v}");
    for e in v["evidence"].as_array().unwrap() {
        let text = &texts[e["id"].as_str().unwrap()];
        let rationale = e["rationale"].as_array().unwrap();
        assert!(!rationale.is_empty() && rationale.len() <= 3, "{e}");
        for s in rationale {
            let (a, b) = (
                s["start"].as_u64().unwrap() as usize,
                s["end"].as_u64().unwrap() as usize,
            );
            assert_eq!(&text[a..b], s["text"].as_str().unwrap(), "{s}");
        }
    }
    assert!(
        v["lineage"]["verifier"]
            .as_str()
            .unwrap()
            .starts_with("v2-"),
        "{v}"
    );
    for stage in ["retrieve", "read", "judge"] {
        assert!(v["timings_ms"][stage].is_number(), "{v}");
    }

    // The second run loads the trained verifier from the cache.
    let o = verify(work.path(), "TNFAIP3 is a glioblastoma tumor suppressor.");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("loaded from"), "{}", stderr(&o));
    let again: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again["lineage"]["verifier"], v["lineage"]["verifier"]);

    let o = verify(work.path(), "   ");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("claim is empty"), "{}", stderr(&o));
}
