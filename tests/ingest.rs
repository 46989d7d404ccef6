//! `signaldesk ingest`: idempotent, change-aware, crash-safe.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{run, signaldesk, stderr, write_tiny_bert, TinyBert};
use serde_json::{json, Value};
use signaldesk::store::{EdgeStore, Filter, VectorStore};

/// A work dir with a tiny model (fast) configured as the embedder. The model is deterministic:
/// every work dir gets the same weights, so their stores are comparable.
fn work() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-model");
    write_tiny_bert(&model, &TinyBert::default());
    (dir, model)
}

/// `signaldesk ingest FILE --json` with the tiny model and small chunks, not yet run.
fn ingest_cmd(work: &Path, model: &Path, file: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = signaldesk(work);
    cmd.env("SIGNALDESK_EMBED__MODEL", model)
        .env("SIGNALDESK_CHUNK__MAX_TOKENS", "24")
        .env("SIGNALDESK_CHUNK__OVERLAP_TOKENS", "4")
        .arg("ingest")
        .arg(file)
        .args(["--json"])
        .args(extra);
    cmd
}

fn ingest(work: &Path, model: &Path, file: &Path, extra: &[&str]) -> std::process::Output {
    run(&mut ingest_cmd(work, model, file, extra))
}

/// The store a clean, uninterrupted ingest of `file` produces.
fn clean_ingest(file: &Path, extra: &[&str]) -> BTreeSet<(String, usize, String)> {
    let (clean, model) = work();
    summary(&ingest(clean.path(), &model, file, extra));
    stored(&clean.path().join("data"))
}

fn summary(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("no JSON summary: {}", stderr(o)))
}

fn article(id: usize, sentences: usize) -> Value {
    let body: String = (0..sentences)
        .map(|s| {
            format!("Sentence {s} of story {id} covers markets, weather and sport in detail. ")
        })
        .collect();
    json!({"id": format!("item-{id}"), "title": format!("Story {id}"), "body": body, "source": "wire"})
}

fn write_jsonl(path: &Path, rows: &[Value]) {
    std::fs::write(
        path,
        rows.iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
}

/// Every stored chunk as (content id, chunk index, content hash), and the chunk count.
fn stored(data: &Path) -> BTreeSet<(String, usize, String)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = EdgeStore::new(&data.join("edge")).unwrap();
        let mut out = BTreeSet::new();
        let mut offset = None;
        loop {
            let (page, next) = store
                .scroll("content", &Filter::default(), offset, 500)
                .await
                .unwrap();
            for c in page {
                let hash = c.payload["content_hash"].as_str().unwrap().to_string();
                assert!(
                    out.insert((c.content_id, c.chunk_index, hash)),
                    "duplicate chunk"
                );
            }
            match next {
                Some(n) => offset = Some(n),
                None => break,
            }
        }
        out
    })
}

#[test]
fn reingesting_skips_unchanged_items_and_replaces_changed_ones() {
    let (dir, model) = work();
    let file = dir.path().join("items.jsonl");
    let mut rows: Vec<Value> = (0..6).map(|i| article(i, 1 + i % 3 * 4)).collect();
    write_jsonl(&file, &rows);
    let first = summary(&ingest(dir.path(), &model, &file, &[]));
    assert_eq!(
        (
            first["read"].as_u64(),
            first["new"].as_u64(),
            first["unchanged"].as_u64()
        ),
        (Some(6), Some(6), Some(0))
    );
    let before = stored(&dir.path().join("data"));
    assert!(before.len() > 6, "long items are chunked: {}", before.len());

    let again = summary(&ingest(dir.path(), &model, &file, &[]));
    assert_eq!(
        (
            again["unchanged"].as_u64(),
            again["new"].as_u64(),
            again["chunks"].as_u64()
        ),
        (Some(6), Some(0), Some(0))
    );
    assert_eq!(stored(&dir.path().join("data")), before);

    // item-2 shrinks from 9 sentences to 1 (stale chunks must go), item-0 grows.
    rows[2] = article(2, 1);
    rows[0] = article(0, 9);
    write_jsonl(&file, &rows);
    let changed = summary(&ingest(dir.path(), &model, &file, &[]));
    assert_eq!(
        (changed["updated"].as_u64(), changed["unchanged"].as_u64()),
        (Some(2), Some(4))
    );

    // The result equals a clean ingest of the new file, content hashes included.
    let after = stored(&dir.path().join("data"));
    assert_eq!(after.iter().filter(|(id, _, _)| id == "item-2").count(), 1);
    assert_eq!(after, clean_ingest(&file, &[]));
}

#[test]
fn bad_records_go_to_the_rejects_file_with_line_and_reason() {
    let (dir, model) = work();
    let file = dir.path().join("mixed.jsonl");
    std::fs::write(
        &file,
        [
            article(1, 1).to_string(),
            r#"{"id": "no-text"}"#.into(),
            "not json".into(),
            r#"{"id": "d", "title": "t", "published_at": "last tuesday"}"#.into(),
            r#"{"id": "e", "title": "t", "content_type": "video"}"#.into(),
            article(2, 1).to_string(),
        ]
        .join("\n"),
    )
    .unwrap();
    let o = ingest(dir.path(), &model, &file, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let s = summary(&o);
    assert_eq!(
        (
            s["read"].as_u64(),
            s["new"].as_u64(),
            s["rejected"].as_u64()
        ),
        (Some(6), Some(2), Some(4))
    );
    let rejects: Vec<Value> = std::fs::read_to_string(dir.path().join("mixed.jsonl.rejects.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: Vec<u64> = rejects
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 3, 4, 5]);
    assert!(rejects[0]["reason"].as_str().unwrap().contains("\"body\""));
    assert!(rejects[2]["reason"]
        .as_str()
        .unwrap()
        .contains("published_at"));
    assert!(rejects[3]["reason"]
        .as_str()
        .unwrap()
        .contains("content_type"));
}

#[test]
fn csv_files_ingest_with_header_fields() {
    let (dir, model) = work();
    let file = dir.path().join("episodes.csv");
    std::fs::write(
        &file,
        "id,title,body,content_type,published_at\n\
         ep1,Gardening,\"Tomatoes, beans and soil.\",episode,2026-05-01\n\
         ep2,,,episode,\n\
         ep3,Markets,Rates rose.,episode,2026-05-02T10:00:00Z\n",
    )
    .unwrap();
    let o = ingest(dir.path(), &model, &file, &[]);
    let s = summary(&o);
    assert_eq!(
        (s["new"].as_u64(), s["rejected"].as_u64()),
        (Some(2), Some(1)),
        "{}",
        stderr(&o)
    );
    let ids: BTreeSet<String> = stored(&dir.path().join("data"))
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(ids, ["ep1", "ep3"].into_iter().map(String::from).collect());
}

fn reuters_sample(path: &Path, n: usize) {
    let text = {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(common::root().join("golden-datasets/reuters21578/test.jsonl.gz"))
                .unwrap(),
        )
        .read_to_string(&mut s)
        .unwrap();
        s
    };
    let lines: Vec<&str> = text.lines().take(n).collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

#[test]
fn a_crash_after_any_batch_then_a_rerun_ends_with_exactly_the_right_points() {
    let (dir, _) = work();
    let file = dir.path().join("reuters.jsonl");
    reuters_sample(&file, 120);
    let expected = clean_ingest(&file, &["--batch-items", "16"]);

    for crash_after in [1, 3] {
        let (w, m) = work();
        let o = run(
            ingest_cmd(w.path(), &m, &file, &["--batch-items", "16"]).env(
                "SIGNALDESK_TEST_CRASH_AFTER_BATCHES",
                crash_after.to_string(),
            ),
        );
        assert!(!o.status.success(), "the crash hook must abort the run");
        let partial = stored(&w.path().join("data"));
        assert!(
            !partial.is_empty() && partial.len() < expected.len(),
            "crash {crash_after}: {} of {}",
            partial.len(),
            expected.len()
        );
        let s = summary(&ingest(w.path(), &m, &file, &["--batch-items", "16"]));
        assert!(
            s["unchanged"].as_u64().unwrap() > 0,
            "acknowledged batches survive the crash"
        );
        assert_eq!(
            stored(&w.path().join("data")),
            expected,
            "crash after {crash_after} batches"
        );
    }
}

#[test]
fn a_sigkill_mid_ingest_then_a_rerun_ends_with_exactly_the_right_points() {
    let (dir, model) = work();
    let file = dir.path().join("reuters.jsonl");
    reuters_sample(&file, 400);
    let expected = clean_ingest(&file, &["--batch-items", "16"]);

    let mut child = ingest_cmd(dir.path(), &model, &file, &["--batch-items", "16"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the WAL has seen some writes (or after a generous bound). The collection is
    // content-<model fingerprint>, behind the alias "content".
    let edge = dir.path().join("data/edge");
    let wal = || {
        std::fs::read_dir(&edge)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("content-"))
            })
            .map(|p| p.join("wal"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let written: u64 = wal()
            .and_then(|w| std::fs::read_dir(w).ok())
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if written > 0 && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(300));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the ingest must still be running when killed: {status}"
    );
    summary(&ingest(dir.path(), &model, &file, &["--batch-items", "16"]));
    assert_eq!(stored(&dir.path().join("data")), expected);
}

/// Steps of a collection's first writes where the crash hooks can stop an ingest.
const FIRST_WRITE_STEPS: &[&str] = &[
    "collection-created",
    "indexes-created",
    "metadata-written",
    "upsert-applied",
];

#[test]
fn an_abort_at_each_step_of_the_first_batch_then_a_rerun_recovers_exactly() {
    let (dir, _) = work();
    let file = dir.path().join("reuters.jsonl");
    reuters_sample(&file, 40);
    let expected = clean_ingest(&file, &["--batch-items", "16"]);
    for step in FIRST_WRITE_STEPS {
        let (w, m) = work();
        let o = run(ingest_cmd(w.path(), &m, &file, &["--batch-items", "16"])
            .env("SIGNALDESK_TEST_CRASH_AT", step));
        assert!(!o.status.success(), "{step}: the hook must abort the run");
        assert!(
            stderr(&o).contains(&format!("aborting at {step}")),
            "{step}: {}",
            stderr(&o)
        );
        let again = ingest(w.path(), &m, &file, &["--batch-items", "16"]);
        assert!(
            again.status.success(),
            "{step}: re-run failed: {}",
            stderr(&again)
        );
        assert_eq!(stored(&w.path().join("data")), expected, "abort at {step}");
    }
}

/// Two threads spinning for `d`, so the machine's 2 cores are contended.
fn contend_cpu(d: Duration) -> Vec<std::thread::JoinHandle<()>> {
    (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let end = std::time::Instant::now() + d;
                let mut x = 0u64;
                while std::time::Instant::now() < end {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect()
}

#[test]
fn a_sigkill_at_each_step_of_the_first_batch_under_cpu_contention_then_a_rerun_recovers() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let (dir, _) = work();
    let file = dir.path().join("reuters.jsonl");
    reuters_sample(&file, 40);
    let expected = clean_ingest(&file, &["--batch-items", "16"]);
    for contended in [false, true] {
        for step in FIRST_WRITE_STEPS {
            let spinners = contended.then(|| contend_cpu(Duration::from_secs(3)));
            let (w, m) = work();
            let mut child = ingest_cmd(w.path(), &m, &file, &["--batch-items", "16"])
                .env("SIGNALDESK_TEST_PAUSE_AT", step)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
            let paused = lines
                .by_ref()
                .map_while(Result::ok)
                .any(|l| l.contains(&format!("paused at {step}")));
            assert!(paused, "{step}: the ingest never reached the step");
            child.kill().unwrap(); // SIGKILL, at exactly that step
            assert_eq!(child.wait().unwrap().signal(), Some(9), "{step}");
            for s in spinners.into_iter().flatten() {
                s.join().unwrap();
            }
            let again = ingest(w.path(), &m, &file, &["--batch-items", "16"]);
            assert!(
                again.status.success(),
                "{step}: re-run failed: {}",
                stderr(&again)
            );
            assert_eq!(
                stored(&w.path().join("data")),
                expected,
                "SIGKILL at {step} (contended: {contended})"
            );
        }
    }
}

#[test]
fn a_file_holding_an_item_twice_leaves_only_its_last_version() {
    let (one, two, five) = (article(1, 1), article(1, 2), article(1, 5));
    let other = article(2, 1);
    // (stored before, the file, --batch-items): the issue's case (a stored 5-chunk item, then a
    // 1-chunk and a 2-chunk version in one file), the same versions in the other order, and an
    // item not stored yet whose two versions land in adjacent batches.
    let cases: Vec<(Option<Value>, Vec<Value>, &str)> = vec![
        (
            Some(five.clone()),
            vec![one.clone(), other.clone(), two.clone()],
            "256",
        ),
        (
            Some(five.clone()),
            vec![one.clone(), other.clone(), two.clone()],
            "1",
        ),
        (
            Some(five.clone()),
            vec![two.clone(), other.clone(), one.clone()],
            "256",
        ),
        (None, vec![two.clone(), one.clone(), other.clone()], "1"),
    ];
    for (i, (before, rows, batch)) in cases.into_iter().enumerate() {
        let (dir, model) = work();
        let file = dir.path().join("items.jsonl");
        let chunks_of_item_1 = || {
            stored(&dir.path().join("data"))
                .into_iter()
                .filter(|(id, _, _)| id == "item-1")
                .count()
        };
        if let Some(row) = before {
            write_jsonl(&file, &[row]);
            summary(&ingest(dir.path(), &model, &file, &[]));
            assert_eq!(
                chunks_of_item_1(),
                5,
                "case {i}: the stored version has 5 chunks"
            );
        }
        write_jsonl(&file, &rows);
        let last_chunks = if rows.iter().rev().find(|r| r["id"] == "item-1") == Some(&one) {
            1
        } else {
            2
        };
        let s = summary(&ingest(
            dir.path(),
            &model,
            &file,
            &["--batch-items", batch],
        ));
        assert_eq!(chunks_of_item_1(), last_chunks, "case {i}");
        // Exactly what a clean ingest of the last versions stores.
        write_jsonl(
            &file,
            &rows
                .iter()
                .enumerate()
                .filter(|(j, r)| !rows[j + 1..].iter().any(|later| later["id"] == r["id"]))
                .map(|(_, r)| r.clone())
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            stored(&dir.path().join("data")),
            clean_ingest(&file, &[]),
            "case {i}"
        );
        assert_eq!(s["duplicates"], 1, "case {i}: {s}");
    }
}
