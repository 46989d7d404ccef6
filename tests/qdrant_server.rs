//! signaldesk against a real Qdrant server (the v1.18.3 test fixture, started on loopback):
//! faults an operator meets (the server killed mid-ingest), `reindex` switching the alias on the
//! server, and the SciFact retrieval suite giving the same answers through the server as
//! through the embedded store.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::qdrant::{self, stored_chunks, QdrantServer, ServerOptions};
use common::{read_trec, root, run, signaldesk, stderr, write_articles, write_tiny_bert, TinyBert};
use serde_json::Value;
use signaldesk::store::{Filter, QdrantStore, VectorStore};

/// `signaldesk` on the tiny model against the server at `url`.
fn on_server(work: &Path, model: &Path, url: &str) -> Command {
    let mut cmd = signaldesk(work);
    cmd.env("SIGNALDESK_EMBED__MODEL", model)
        .env("SIGNALDESK_CHUNK__MAX_TOKENS", "24")
        .env("SIGNALDESK_CHUNK__OVERLAP_TOKENS", "4")
        .env("SIGNALDESK_STORE__BACKEND", "qdrant")
        .env("SIGNALDESK_STORE__URL", url)
        .env("SIGNALDESK_STORE__TIMEOUT_S", "10")
        .env_remove("QDRANT_API_KEY");
    cmd
}

fn summary(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("no JSON summary: {}", stderr(o)))
}

#[test]
fn a_server_killed_mid_ingest_stops_it_with_one_clear_error_and_a_rerun_recovers_exactly() {
    let Some(bin) = qdrant::available("a_server_killed_mid_ingest") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("tiny-model");
    write_tiny_bert(&model, &TinyBert::default());
    let file = work.path().join("items.jsonl");
    write_articles(&file, 3000);
    let mut server = QdrantServer::start(&bin, ServerOptions::default());
    let url = server.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = QdrantStore::connect(&url, None, Duration::from_secs(10)).unwrap();

    // The reference: an uninterrupted ingest into another collection of the same server.
    let reference = summary(&run(on_server(work.path(), &model, &url)
        .env("SIGNALDESK_STORE__COLLECTION", "reference")
        .args(["ingest", "--json"])
        .arg(&file)));
    assert_eq!(reference["new"], 3000);
    let want = rt.block_on(stored_chunks(&store, "reference"));

    // Small batches, so the kill lands between many acknowledged writes.
    let mut ingest = on_server(work.path(), &model, &url)
        .env("SIGNALDESK_INGEST__BATCH_ITEMS", "10")
        .args(["ingest", "--json"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let written = rt
            .block_on(store.count("content", &Filter::default()))
            .unwrap_or(0);
        if written > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "ingest wrote nothing in 120 s");
        assert!(
            ingest.try_wait().unwrap().is_none(),
            "ingest ended before any point was seen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let killed = Instant::now();
    let out = ingest.wait_with_output().unwrap();
    let waited = killed.elapsed();
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "ingest must fail when its server dies: {err}"
    );
    assert!(
        waited < Duration::from_secs(30),
        "took {waited:?} to notice"
    );
    assert!(err.contains("cannot reach Qdrant at"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("MetadataMap"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "one error line: {err}");

    server.restart();
    let second = summary(&run(on_server(work.path(), &model, &url)
        .args(["ingest", "--json"])
        .arg(&file)));
    assert_eq!(
        second["new"].as_u64().unwrap()
            + second["unchanged"].as_u64().unwrap()
            + second["updated"].as_u64().unwrap(),
        3000,
        "{second}"
    );
    assert_eq!(rt.block_on(stored_chunks(&store, "content")), want);
    let third = summary(&run(on_server(work.path(), &model, &url)
        .args(["ingest", "--json"])
        .arg(&file)));
    assert_eq!(
        (
            third["unchanged"].as_u64(),
            third["new"].as_u64(),
            third["updated"].as_u64()
        ),
        (Some(3000), Some(0), Some(0)),
        "{third}"
    );
}

#[test]
fn reindex_on_the_server_moves_the_alias_in_one_step_while_a_reader_polls() {
    let Some(bin) = qdrant::available("reindex_on_the_server") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (model_a, model_b) = (work.path().join("a"), work.path().join("b"));
    write_tiny_bert(&model_a, &TinyBert::default());
    write_tiny_bert(
        &model_b,
        &TinyBert {
            hidden: 48,
            seed: 2,
            ..Default::default()
        },
    );
    let file = work.path().join("items.jsonl");
    write_articles(&file, 300);
    let server = QdrantServer::start(&bin, ServerOptions::default());
    let url = server.url();
    summary(&run(on_server(work.path(), &model_a, &url)
        .args(["ingest", "--json"])
        .arg(&file)));

    // A reader counts through the alias the whole time; it must never find no collection.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let store = QdrantStore::connect(&url, None, Duration::from_secs(10)).unwrap();
            let (mut reads, mut failures) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match rt.block_on(store.count("content", &Filter::default())) {
                    Ok(_) => reads += 1,
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (reads, failures)
        })
    };
    let reindexed = run(on_server(work.path(), &model_a, &url)
        .arg("reindex")
        .arg("--model")
        .arg(&model_b)
        .arg("--json"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, failures) = reader.join().unwrap();
    assert!(reindexed.status.success(), "{}", stderr(&reindexed));
    assert!(reads > 10, "the reader read {reads} times");
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = QdrantStore::connect(&url, None, Duration::from_secs(10)).unwrap();
    let spec = rt
        .block_on(store.collection_spec("content"))
        .unwrap()
        .unwrap();
    assert_eq!(spec.dimension, 48);
    // The new model searches; the old one is refused with the reindex hint.
    let found =
        run(on_server(work.path(), &model_b, &url).args(["search", "--json", "Story 7 markets"]));
    assert!(found.status.success(), "{}", stderr(&found));
    let old = run(on_server(work.path(), &model_a, &url).args(["search", "--json", "Story 7"]));
    assert!(
        !old.status.success() && stderr(&old).contains("reindex"),
        "{}",
        stderr(&old)
    );
}

/// The SciFact retrieval suite on a fixed 100-query subset of the test split (all 300 with
/// `SAME_ANSWERS_QUERIES=300`), in every mode and with exact search, through Edge and through
/// the server: the same nDCG@10 (within 0.002) and the same top 10 for at least 99% of queries;
/// the report names the backend.
#[test]
fn the_scifact_suite_gives_the_same_answers_through_the_server_as_through_edge() {
    let Some(bin) = qdrant::available("the_scifact_suite_gives_the_same_answers") else {
        return;
    };
    let wanted: usize = std::env::var("SAME_ANSWERS_QUERIES")
        .map(|v| {
            v.parse()
                .expect("SAME_ANSWERS_QUERIES is a number of queries")
        })
        .unwrap_or(100);
    let work = tempfile::tempdir().unwrap();
    let dataset = work.path().join("scifact");
    let source = root().join("golden-datasets/scifact");
    std::fs::create_dir_all(dataset.join("qrels")).unwrap();
    for f in ["corpus.jsonl.gz", "queries.jsonl.gz"] {
        std::fs::copy(source.join(f), dataset.join(f)).unwrap();
    }
    let qrels = std::fs::read_to_string(source.join("qrels/test.tsv")).unwrap();
    let mut lines = qrels.lines();
    let header = lines.next().unwrap();
    let mut kept = vec![header.to_string()];
    let mut queries = BTreeSet::new();
    for l in lines {
        let q = l.split('\t').next().unwrap();
        if queries.len() < wanted || queries.contains(q) {
            queries.insert(q.to_string());
            kept.push(l.to_string());
        }
    }
    std::fs::write(dataset.join("qrels/test.tsv"), kept.join("\n") + "\n").unwrap();
    assert_eq!(
        queries.len(),
        wanted.min(300),
        "SciFact's test split has 300 queries"
    );
    let n = queries.len();

    let server = QdrantServer::start(&bin, ServerOptions::default());
    // The same embedding cache as the search-path test: vectors keyed by model and text.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scifact-embedding-cache");
    let with_backend = |backend: &str| {
        let mut cmd = signaldesk(work.path());
        cmd.env("SIGNALDESK_CACHE_DIR", &cache)
            .env("SIGNALDESK_STORE__BACKEND", backend)
            .env("SIGNALDESK_STORE__URL", server.url())
            .env_remove("QDRANT_API_KEY");
        cmd
    };
    // Each backend gets the corpus through `signaldesk ingest`, as a user's would.
    for backend in ["edge", "qdrant"] {
        let out = run(with_backend(backend)
            .args(["ingest", "--json"])
            .arg(dataset.join("corpus.jsonl.gz")));
        assert!(out.status.success(), "{backend}: {}", stderr(&out));
    }
    for (mode, exact) in [
        ("dense", "false"),
        ("bm25", "false"),
        ("hybrid", "false"),
        ("hybrid", "true"),
    ] {
        let mut results = Vec::new();
        for backend in ["edge", "qdrant"] {
            let report = work.path().join(format!("{mode}-{exact}-{backend}.json"));
            let trec = work.path().join(format!("{mode}-{exact}-{backend}.trec"));
            let out = run(with_backend(backend)
                .env("SIGNALDESK_SEARCH__EXACT", exact)
                .args([
                    "eval",
                    "retrieval",
                    "--collection",
                    "content",
                    "--mode",
                    mode,
                    "--dataset",
                ])
                .arg(&dataset)
                .arg("--output")
                .arg(&report)
                .arg("--run-out")
                .arg(&trec));
            assert!(out.status.success(), "{mode} {backend}: {}", stderr(&out));
            let r: Value =
                serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
            let named = if backend == "edge" {
                "qdrant-edge"
            } else {
                "qdrant"
            };
            assert_eq!(
                r["config"]["backend"], named,
                "the report names its backend"
            );
            assert_eq!(
                r["config"]["search"],
                if exact == "true" { "exact" } else { "hnsw" }
            );
            results.push((r["metrics"]["ndcg@10"].as_f64().unwrap(), read_trec(&trec)));
        }
        let ((edge_ndcg, edge_runs), (server_ndcg, server_runs)) = (&results[0], &results[1]);
        assert!(
            (edge_ndcg - server_ndcg).abs() <= 0.002,
            "{mode} exact={exact}: nDCG@10 {edge_ndcg} on Edge, {server_ndcg} on the server"
        );
        let same = queries
            .iter()
            .filter(|q| {
                let top = |runs: &BTreeMap<String, Vec<String>>| {
                    runs.get(*q)
                        .map(|r| r.iter().take(10).cloned().collect::<Vec<_>>())
                };
                top(edge_runs) == top(server_runs)
            })
            .count();
        assert!(
            same * 100 >= 99 * n,
            "{mode} exact={exact}: the same top 10 for {same} of {n} queries"
        );
        eprintln!("{mode} exact={exact}: nDCG@10 {edge_ndcg:.4} on Edge, {server_ndcg:.4} on the server; the same top 10 for {same} of {n} queries");
    }
}
