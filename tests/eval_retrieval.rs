//! `signaldesk eval retrieval` end to end on a small slice of SciFact with the real model.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

use common::{root, run, signaldesk, stderr};
use serde_json::Value;

fn gunzip(path: &Path) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// 40 test queries, their relevant documents and 300 other documents, in BEIR layout. The
/// same 40 queries serve as "train" so hybrid tuning has judgments to work on.
fn mini_scifact(dir: &Path) -> usize {
    let src = root().join("golden-datasets/scifact");
    let qrels = std::fs::read_to_string(src.join("qrels/test.tsv")).unwrap();
    let mut lines = qrels.lines();
    let header = lines.next().unwrap();
    let mut queries = BTreeSet::new();
    let mut kept = vec![header.to_string()];
    let mut docs = BTreeSet::new();
    for l in lines {
        let cols: Vec<&str> = l.split('\t').collect();
        if queries.len() >= 40 && !queries.contains(cols[0]) {
            continue;
        }
        queries.insert(cols[0].to_string());
        docs.insert(cols[1].to_string());
        kept.push(l.to_string());
    }
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    std::fs::write(dir.join("qrels/test.tsv"), kept.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("qrels/train.tsv"), kept.join("\n") + "\n").unwrap();
    let corpus = gunzip(&src.join("corpus.jsonl.gz"));
    let mut out = std::fs::File::create(dir.join("corpus.jsonl")).unwrap();
    let mut others = 0;
    for l in corpus.lines() {
        let id = serde_json::from_str::<Value>(l).unwrap()["_id"]
            .as_str()
            .unwrap()
            .to_string();
        if docs.contains(&id) || others < 300 {
            if !docs.contains(&id) {
                others += 1;
            }
            writeln!(out, "{l}").unwrap();
        }
    }
    std::fs::write(
        dir.join("queries.jsonl"),
        gunzip(&src.join("queries.jsonl.gz")),
    )
    .unwrap();
    queries.len()
}

#[test]
fn retrieval_eval_writes_the_report_format_with_per_query_values() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("mini-scifact");
    let n = mini_scifact(&data);
    let mut ndcg = std::collections::BTreeMap::new();
    for mode in ["dense", "bm25", "hybrid"] {
        let out = work.path().join(format!("{mode}.json"));
        let trec = work.path().join(format!("{mode}.trec"));
        let mut cmd = signaldesk(work.path());
        cmd.args(["eval", "retrieval", "--mode", mode, "--dataset"])
            .arg(&data)
            .arg("--output")
            .arg(&out)
            .arg("--run-out")
            .arg(&trec);
        if mode == "hybrid" {
            cmd.arg("--tune-fusion");
        }
        let o = run(&mut cmd);
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(r["suite"], "retrieval");
        assert_eq!(r["dataset"], "mini-scifact");
        assert_eq!(r["config"]["mode"], mode);
        for k in ["ndcg@10", "recall@100", "mrr@10", "map@10", "p@10"] {
            let v = r["metrics"][k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{k} = {v}");
        }
        let per_item = r["per_item"].as_object().unwrap();
        assert_eq!(per_item.len(), n);
        // The headline is the mean of the per-query values.
        let mean: f64 = per_item
            .values()
            .map(|m| m["ndcg@10"].as_f64().unwrap())
            .sum::<f64>()
            / n as f64;
        assert!((mean - r["metrics"]["ndcg@10"].as_f64().unwrap()).abs() < 1e-9);
        assert!(out.with_extension("md").is_file());
        let trec_lines = std::fs::read_to_string(&trec).unwrap();
        let first: Vec<&str> = trec_lines.lines().next().unwrap().split(' ').collect();
        assert_eq!((first[1], first[3], first[5]), ("Q0", "1", "signaldesk"));
        // The report says how it searched: the configured settings, which `search` uses too.
        assert_eq!(r["config"]["backend"], "qdrant-edge");
        assert_eq!(r["config"]["search"], "hnsw");
        assert_eq!(r["config"]["chunking"]["max_tokens"], 256);
        if mode == "hybrid" {
            assert_eq!(r["config"]["fusion"]["k"], 10);
            assert_eq!(r["config"]["fusion"]["dense_weight"], 1.25);
            // --tune-fusion reports what train would choose, without changing what is measured.
            let tuned = &r["config"]["fusion_tuned_on_train"];
            assert!(tuned["rrf_k"].as_u64().is_some(), "{tuned}");
            assert!(tuned["ndcg@10"].as_f64().unwrap() > 0.5, "{tuned}");
        }
        ndcg.insert(mode, r["metrics"]["ndcg@10"].as_f64().unwrap());
    }
    // On this slice every method finds most relevant documents (340 docs in all).
    for (mode, v) in &ndcg {
        assert!(*v > 0.5, "{mode}: nDCG@10 {v}");
    }
}

#[test]
fn the_pipeline_ingests_idempotently_and_flags_a_dense_score_off_the_reference() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("mini-scifact");
    mini_scifact(&data);
    // A 3-line parity sample keeps the first stage short.
    let sample = work.path().join("sample.jsonl");
    let reference =
        gunzip(&root().join("golden-datasets/scifact-minilm-reference/scifact_minilm_st.jsonl.gz"));
    std::fs::write(
        &sample,
        reference.lines().take(3).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let pipeline = || {
        run(signaldesk(work.path())
            .args(["pipeline", "--json", "--sample"])
            .arg(&sample)
            .arg("--dataset")
            .arg(&data))
    };
    let first = pipeline();
    let r: Value =
        serde_json::from_slice(&first.stdout).unwrap_or_else(|_| panic!("{}", stderr(&first)));
    let ret = &r["retrieval"];
    assert!(ret["ingest"]["new"].as_u64().unwrap() > 300);
    for mode in ["dense", "bm25", "hybrid"] {
        let v = ret["metrics"][mode]["ndcg@10"].as_f64().unwrap();
        assert!(v > 0.5, "{mode}: {v}");
    }
    // 40 easy queries score far above SciFact's full-test 0.6451: the run must say so and fail.
    assert_eq!(ret["dense_matches_reference"], false);
    assert_eq!(first.status.code(), Some(1));

    let second = pipeline();
    let r2: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(r2["retrieval"]["ingest"]["new"], 0);
    assert_eq!(
        r2["retrieval"]["ingest"]["unchanged"],
        r["retrieval"]["ingest"]["new"]
    );
    assert_eq!(r2["retrieval"]["metrics"], r["retrieval"]["metrics"]);
}
