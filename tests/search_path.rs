//! One search path: what `signaldesk search` returns is what `signaldesk eval retrieval` scores.
//!
//! SciFact is ingested with `signaldesk ingest` (defaults), the eval runs with the same
//! configuration (its own ingest into its own collection, through the same code), and for 50
//! test queries in each mode the ranked ids of `signaldesk search` equal the eval's run file.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use common::{read_trec, root, run, signaldesk, stderr};
use serde_json::Value;

fn gunzip(path: &Path) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    s
}

#[test]
fn search_returns_exactly_what_the_retrieval_eval_scores_in_every_mode() {
    let work = tempfile::tempdir().unwrap();
    let dataset = root().join("golden-datasets/scifact");
    // Embeddings are keyed by model and text, so a cache kept in the build dir between runs
    // only saves time (about 4 minutes of embedding on 2 cores), never changes a vector.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scifact-embedding-cache");
    let signaldesk = |work: &Path| {
        let mut cmd = signaldesk(work);
        cmd.env("SIGNALDESK_CACHE_DIR", &cache);
        cmd
    };
    let ingest = run(signaldesk(work.path())
        .arg("ingest")
        .arg(dataset.join("corpus.jsonl.gz"))
        .arg("--json"));
    assert!(ingest.status.success(), "{}", stderr(&ingest));
    let summary: Value = serde_json::from_slice(&ingest.stdout).unwrap();
    assert_eq!(summary["new"], 5183, "{summary}");

    // 50 fixed test queries.
    let qrels = std::fs::read_to_string(dataset.join("qrels/test.tsv")).unwrap();
    let mut ids: Vec<String> = qrels
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    ids.dedup();
    ids.truncate(50);
    let texts: BTreeMap<String, String> = gunzip(&dataset.join("queries.jsonl.gz"))
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["_id"].as_str().unwrap().to_string(),
                v["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let queries_file = work.path().join("queries.jsonl");
    std::fs::write(
        &queries_file,
        ids.iter()
            .map(|id| serde_json::json!({"id": id, "text": texts[id]}).to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();

    for mode in ["dense", "bm25", "hybrid"] {
        let report = work.path().join(format!("{mode}.json"));
        let trec = work.path().join(format!("{mode}.trec"));
        let eval = run(signaldesk(work.path())
            .args(["eval", "retrieval", "--mode", mode, "--dataset"])
            .arg(&dataset)
            .arg("--output")
            .arg(&report)
            .arg("--run-out")
            .arg(&trec));
        assert!(eval.status.success(), "{mode}: {}", stderr(&eval));
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        // The eval's own ingest equals the user's: same chunking, same BM25 statistics.
        assert_eq!(r["config"]["ingest"]["chunks"], summary["chunks"], "{mode}");
        let eval_runs = read_trec(&trec);

        let found = run(signaldesk(work.path())
            .args(["search", "--mode", mode, "-k", "10", "--queries"])
            .arg(&queries_file));
        assert!(found.status.success(), "{mode}: {}", stderr(&found));
        let lines: Vec<Value> = String::from_utf8(found.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 50);
        for line in &lines {
            let qid = line["query_id"].as_str().unwrap();
            let got: Vec<&str> = line["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_str().unwrap())
                .collect();
            let want: Vec<&str> = eval_runs[qid].iter().take(10).map(String::as_str).collect();
            assert_eq!(got, want, "{mode}, query {qid}");
        }
        // Single queries on the command line (`search --json "text"`) take the same path.
        for qid in ids.iter().step_by(10) {
            let one = run(signaldesk(work.path())
                .args(["search", "--json", "--mode", mode, "-k", "10"])
                .arg(&texts[qid]));
            assert!(one.status.success(), "{}", stderr(&one));
            let hits: Vec<Value> = serde_json::from_slice(&one.stdout).unwrap();
            let got: Vec<&str> = hits.iter().map(|h| h["id"].as_str().unwrap()).collect();
            let want: Vec<&str> = eval_runs[qid].iter().take(10).map(String::as_str).collect();
            assert_eq!(got, want, "{mode}, single query {qid}");
        }

        if mode == "hybrid" {
            // The acceptance figure, on all 300 test queries with default settings.
            let ndcg = r["metrics"]["ndcg@10"].as_f64().unwrap();
            assert!(ndcg >= 0.715, "hybrid nDCG@10 {ndcg}");
        }
    }
}
