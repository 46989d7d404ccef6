//! The command line as a new user meets it: the rough edges found by trying it, each held here
//! by the real binary.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{run, signaldesk, stderr};
use serde_json::Value;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const ITEMS: &str = r#"{"id": "a", "title": "Rates", "body": "The central bank raised interest rates again."}
{"id": "b", "title": "Cup final", "body": "The striker scored twice in the cup final."}
{"id": "c", "title": "Telescope", "body": "A new telescope mapped distant galaxies."}
"#;

/// The ids of a JSONL file's lines, in order.
fn ids_in(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A work dir with ITEMS ingested into the default collection.
fn ingested() -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("items.jsonl");
    std::fs::write(&input, ITEMS).unwrap();
    let o = run(signaldesk(work.path()).arg("ingest").arg(&input));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    work
}

/// Run with stdout a pipe whose reader has already gone (`| head` that has exited).
fn with_closed_stdout(cmd: &mut std::process::Command) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_pipe_ends_search_and_embed_quietly() {
    let work = ingested();
    let o = with_closed_stdout(signaldesk(work.path()).args(["search", "--json", "bank rates"]));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );

    let input = work.path().join("items.jsonl");
    let o = with_closed_stdout(
        signaldesk(work.path())
            .args(["embed", "-o", "-", "-i"])
            .arg(&input),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("os error 32"), "{err}");
}

#[test]
fn an_os_error_is_said_once() {
    let work = tempfile::tempdir().unwrap();
    let o = run(signaldesk(work.path()).args(["ingest", "no-such-file.jsonl"]));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert!(err.contains("no-such-file.jsonl"), "{err}");
}

#[test]
fn ingest_reads_stdin_and_takes_max_line_bytes_like_embed() {
    let work = tempfile::tempdir().unwrap();
    let long = format!(
        "{{\"id\": \"long\", \"title\": \"x\", \"body\": \"{}\"}}",
        "word ".repeat(100)
    );
    let mut child = signaldesk(work.path())
        .args(["ingest", "-", "--json", "--max-line-bytes", "200"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{ITEMS}{long}").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "one rejected line: {err}");
    let summary: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (summary["new"].as_u64(), summary["rejected"].as_u64()),
        (Some(3), Some(1))
    );
    assert!(
        err.contains("<stdin>:4") && err.contains("--max-line-bytes"),
        "{err}"
    );
    // Rejects go beside the working directory, never to /dev/stdin.rejects.jsonl.
    let rejects = std::fs::read_to_string(work.path().join("stdin.rejects.jsonl")).unwrap();
    assert!(rejects.contains("\"line\":4"), "{rejects}");
    // Nothing spooled is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(work.path().join("data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".stdin"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn a_byte_order_mark_does_not_cost_the_first_record() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("bom.jsonl");
    std::fs::write(&input, format!("\u{feff}{ITEMS}")).unwrap();
    let out = work.path().join("out.jsonl");
    let o = run(signaldesk(work.path())
        .args(["embed", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&out));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(ids_in(&out), ["a", "b", "c"]);
    let o = run(signaldesk(work.path())
        .args(["ingest", "--json"])
        .arg(&input));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let summary: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(summary["new"], 3);
}

#[test]
fn duplicate_ids_are_counted_and_the_last_wins() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("dup.jsonl");
    std::fs::write(
        &input,
        format!("{ITEMS}{{\"id\": \"a\", \"title\": \"Rates\", \"body\": \"Rates were held.\"}}\n"),
    )
    .unwrap();
    let o = run(signaldesk(work.path()).arg("ingest").arg(&input));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("1 records had the id of a later record"),
        "{err}"
    );
    assert!(err.contains("the last of each id was kept"), "{err}");
}

#[test]
fn an_empty_or_corrupt_input_warns_and_creates_no_collection() {
    let work = tempfile::tempdir().unwrap();
    let empty = work.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let o = run(signaldesk(work.path()).arg("ingest").arg(&empty));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning") && err.contains("no records"),
        "{err}"
    );
    let corrupt = work.path().join("corrupt.jsonl.gz");
    std::fs::write(&corrupt, b"\x1f\x8b\x08\x00 this is not gzip data at all").unwrap();
    let o = run(signaldesk(work.path()).arg("ingest").arg(&corrupt));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(signaldesk(work.path()).args(["search", "anything"]));
    let err = stderr(&o);
    assert!(
        err.contains("does not exist"),
        "no collection was created: {err}"
    );
}

#[test]
fn meaningless_arguments_are_refused_before_any_work() {
    let work = tempfile::tempdir().unwrap();
    let o = run(signaldesk(work.path()).args(["search", "  "]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("query is empty"), "{}", stderr(&o));
    let o = run(signaldesk(work.path()).args(["bench", "llm", "--rounds", "0"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--rounds"), "{}", stderr(&o));
    let started = std::time::Instant::now();
    let o = run(signaldesk(work.path())
        .args([
            "eval",
            "retrieval",
            "--split",
            "dev",
            "--output",
            "r.json",
            "--dataset",
        ])
        .arg(common::root().join("golden-datasets/scifact")));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("dev"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("ingesting"), "{}", stderr(&o));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn help_lists_enum_values_and_describes_options() {
    let work = tempfile::tempdir().unwrap();
    let o = run(signaldesk(work.path()).args(["search", "--help"]));
    let help = stdout(&o);
    for v in ["dense", "bm25", "hybrid"] {
        assert!(help.contains(v), "{help}");
    }
    let o = run(signaldesk(work.path()).args(["eval", "retrieval", "--help"]));
    let help = stdout(&o);
    for option in ["--dataset", "--output", "--split"] {
        let line = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(option))
            .nth(1)
            .unwrap_or_else(|| panic!("{option} missing: {help}"));
        assert!(
            !line.trim().is_empty(),
            "{option} has no description: {help}"
        );
    }
    let o = run(signaldesk(work.path()).args(["bench", "llm", "--help"]));
    assert!(stdout(&o).contains("--rounds"));
    let rounds = stdout(&o)
        .lines()
        .skip_while(|l| !l.contains("--rounds"))
        .take(2)
        .collect::<String>();
    assert!(rounds.to_lowercase().contains("round"), "{rounds}");
}

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let work = tempfile::tempdir().unwrap();
    common::smollm_path();
    let o = run(signaldesk(work.path()).args(["-v", "llm", "chat", "Hi", "--max-tokens", "2"]));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("INFO") && err.contains("llm call"),
        "info logs are shown with -v: {err}"
    );
    assert!(!err.contains('\u{1b}'), "ANSI escape in {err:?}");
}

/// The progress of long work reaches a log that is not a terminal.
#[test]
fn ingest_progress_is_a_plain_line_when_stderr_is_not_a_terminal() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("items.jsonl");
    std::fs::write(&input, ITEMS).unwrap();
    let o = run(signaldesk(work.path())
        .env("SIGNALDESK_TEST_PROGRESS_EVERY_S", "0")
        .arg("ingest")
        .arg(&input));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("ingest: 3/3 records"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn filters_reach_metadata_date_ranges_and_combine() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("desk.jsonl");
    std::fs::write(
        &input,
        r#"{"id": "a", "title": "Rates", "body": "The bank raised rates.", "desk": "economy", "published_at": "2025-03-01T09:30:00Z", "language": "en"}
{"id": "b", "title": "Rates abroad", "body": "Another bank held rates.", "desk": "economy", "published_at": "2025-02-10", "language": "de"}
{"id": "c", "title": "Cup", "body": "The striker scored in the bank holiday final.", "desk": "sport", "published_at": "2025-03-05", "language": "en"}
"#,
    )
    .unwrap();
    let o = run(signaldesk(work.path()).arg("ingest").arg(&input));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ids = |filters: &[&str]| -> Vec<String> {
        let mut cmd = signaldesk(work.path());
        cmd.args(["search", "--json", "bank"]);
        for f in filters {
            cmd.args(["--filter", f]);
        }
        let o = run(&mut cmd);
        assert_eq!(o.status.code(), Some(0), "{filters:?}: {}", stderr(&o));
        let hits: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        let mut ids: Vec<String> = hits
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&["metadata.desk=economy"]), ["a", "b"]);
    assert_eq!(ids(&["published_at>=2025-03-01"]), ["a", "c"]);
    assert_eq!(ids(&["published_at=2025-03-01"]), ["a"]);
    assert_eq!(ids(&["metadata.desk=economy", "language=en"]), ["a"]);
    assert_eq!(ids(&["metadata.desk=economy,language=de"]), ["b"]);
    assert_eq!(
        ids(&["published_at>=2025-02-01", "published_at<2025-03-01"]),
        ["b"]
    );
    let o = run(signaldesk(work.path()).args(["search", "bank", "--filter", "desk=economy"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("metadata.desk=economy"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_busy_embedded_store_is_explained_in_words() {
    let work = ingested();
    // Another process holds the store: an ingest reading a standard input that does not end.
    let mut holder = signaldesk(work.path())
        .args(["ingest", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _stdin = holder.stdin.take();
    // Wait until the holder has the store (its pid in the lock file) before asking: a search
    // started earlier could take the lock first and turn the holder away instead.
    let lock = work.path().join("data/edge/.signaldesk.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&lock).ok().as_deref() != Some(&holder.id().to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder never took the store"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = run(signaldesk(work.path()).args(["search", "bank"]));
    let message = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{message}");
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        message.contains(&format!("pid {}", holder.id())),
        "{message}"
    );
    assert!(message.contains("Qdrant server"), "{message}");
    assert!(!message.contains("WouldBlock"), "{message}");
}

#[test]
fn collections_can_be_listed_inspected_and_dropped() {
    let work = ingested();
    let o = run(signaldesk(work.path()).args(["collections", "list", "--json"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    // Ingest creates content-<model fingerprint> with the alias "content".
    assert!(
        rows[0]["name"].as_str().unwrap().starts_with("content-"),
        "{rows:?}"
    );
    assert_eq!(rows[0]["aliases"], serde_json::json!(["content"]));
    assert_eq!(
        (rows[0]["items"].as_u64(), rows[0]["dimension"].as_u64()),
        (Some(3), Some(384))
    );
    assert!(
        rows[0]["model"].as_str().unwrap().contains("MiniLM"),
        "{rows:?}"
    );
    let o = run(signaldesk(work.path()).args(["collections", "info", "content"]));
    assert!(
        stdout(&o).contains("chunks") && stdout(&o).contains("384"),
        "{}",
        stdout(&o)
    );
    let o = run(signaldesk(work.path()).args(["collections", "drop", "content"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    let o = run(signaldesk(work.path()).args(["collections", "drop", "content", "--yes"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(signaldesk(work.path()).args(["collections", "list", "--json"]));
    assert_eq!(stdout(&o).trim(), "");
    let o = run(signaldesk(work.path()).args(["collections", "info", "content"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

#[test]
fn embed_reads_stdin_like_ingest() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out.jsonl");
    let mut child = signaldesk(work.path())
        .args(["embed", "-i", "-", "-o"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        write!(stdin, "{ITEMS}").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(ids_in(&out), ["a", "b", "c"]);
}
