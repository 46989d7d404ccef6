//! `signaldesk serve` as other services call it, for the API's test files: the real server on
//! 127.0.0.1 over a labelled Reuters memory, its keys per role, and request helpers.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};

use serde_json::{json, Value};

use super::{run, signaldesk, stderr};

pub const READER: &str = "reader-key-123";
pub const WRITER: &str = "writer-key-456";
pub const EDITOR: &str = "editor-key-789";
/// An operator's key: deletion, collection-wide jobs and the raw LLM routes.
pub const OPERATOR: &str = "operator-key-012";

pub struct Server {
    pub child: Child,
    pub url: String,
    pub work: tempfile::TempDir,
    pub config: std::path::PathBuf,
    /// The server's log (stderr) lines so far.
    pub log: ServerLog,
}

/// A server's stderr lines, collected as it writes them.
pub type ServerLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

impl Server {
    /// Stop as an orchestrator does (SIGTERM) and wait: in-flight work drains, the store is
    /// closed, and the data dir can be opened by a command.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let o = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .output()
            .unwrap();
        assert!(o.status.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing test shows what the server said last.
        if std::thread::panicking() {
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            let tail = log.len().saturating_sub(40);
            eprintln!(
                "--- the server's last log lines ---\n{}",
                log[tail..].join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn gz_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap();
    BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .take(n)
        .map(Result::unwrap)
        .collect()
}

/// Wait for a starting `signaldesk serve` to print where it listens; keeps draining its stderr.
pub fn listening_url(child: &mut Child) -> String {
    listening_url_and_log(child).0
}

/// [`listening_url`], and the server's log lines (those before the API's address too).
pub fn listening_url_and_log(child: &mut Child) -> (String, ServerLog) {
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let log = ServerLog::default();
    let url = loop {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
            panic!("the server ended before listening: {rest}");
        }
        if let Some(addr) = line.trim().strip_prefix("signaldesk API on ") {
            break addr.to_string();
        }
        log.lock().unwrap().push(line.trim_end().to_string());
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    (url, log)
}

/// A server over a 300-document labelled memory, tagging with kNN, one tagging request at a time,
/// with `extra` configuration and `interactions` (JSONL) in its log; no LLM.
pub fn start(extra: &str, interactions: &str) -> Server {
    start_with(extra, interactions, &[])
}

/// [`start`] with environment overrides (`SIGNALDESK_API__LLM=true` opens the local LLM).
pub fn start_with(extra: &str, interactions: &str, env: &[(&str, &str)]) -> Server {
    let work = tempfile::tempdir().unwrap();
    let data = super::root().join("golden-datasets/reuters21578/modapte90");
    std::fs::write(
        work.path().join("train.jsonl"),
        gz_lines(&data.join("train.jsonl.gz"), 300).join("\n"),
    )
    .unwrap();
    let o = run(signaldesk(work.path()).args([
        "ingest",
        "--chunking",
        "off",
        "--collection",
        "labelled-memory",
        "train.jsonl",
    ]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let hash = |key: &str| {
        let o = run(signaldesk(work.path()).args(["serve", "--hash-key", key]));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let config = format!(
        r#"
[api]
taggers = ["knn"]
taxonomy = "{}"
tag_concurrency = 1
llm = false
keys = [
  {{ name = "reader", sha256 = "{}", scopes = ["read"] }},
  {{ name = "writer", sha256 = "{}", scopes = ["write"] }},
  {{ name = "editor", sha256 = "{}", scopes = ["read", "write"] }},
  {{ name = "operator", sha256 = "{}", scopes = ["read", "delete", "jobs", "llm"] }},
]
"#,
        data.join("taxonomy.tsv").display(),
        hash(READER),
        hash(WRITER),
        hash(EDITOR),
        hash(OPERATOR)
    );
    let config_path = work.path().join("signaldesk.toml");
    std::fs::write(&config_path, config + extra).unwrap();
    if !interactions.is_empty() {
        std::fs::write(work.path().join("events.jsonl"), interactions).unwrap();
        let o = run(signaldesk(work.path())
            .env("SIGNALDESK_CONFIG", &config_path)
            .args(["interactions", "ingest", "events.jsonl"]));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let mut child = signaldesk(work.path())
        .env("SIGNALDESK_CONFIG", &config_path)
        .envs(env.iter().copied())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (url, log) = listening_url_and_log(&mut child);
    Server {
        child,
        url,
        work,
        config: config_path,
        log,
    }
}

pub async fn post(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, Value, Option<String>) {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    (status, value, retry)
}

pub async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    (status, value)
}

/// Test documents as content items (`{"id", "title", "body"}`).
pub fn test_docs(n: usize) -> Vec<Value> {
    gz_lines(
        &super::root().join("golden-datasets/reuters21578/modapte90/test.jsonl.gz"),
        n,
    )
    .iter()
    .map(|l| {
        let d: Value = serde_json::from_str(l).unwrap();
        json!({"id": d["id"], "title": d["title"], "body": d["body"], "source": "reuters"})
    })
    .collect()
}

/// POST `docs` and run an enrichment job over the collection to its end.
pub async fn ingest_and_enrich(client: &reqwest::Client, server: &Server, docs: &[Value]) {
    use reqwest::Method;
    let url = |path: &str| format!("{}{path}", server.url);
    let (status, v) = send(
        client,
        Method::POST,
        &url("/v1/content"),
        Some(WRITER),
        Some(json!(docs)),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, job) = send(
        client,
        Method::POST,
        &url("/v1/enrich"),
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let job_url = url(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()));
    for _ in 0..600 {
        let (_, v) = send(client, Method::GET, &job_url, Some(READER), None).await;
        if v["state"] == "done" {
            return;
        }
        assert_eq!(v["state"], "running", "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the enrichment job did not finish in a minute");
}
