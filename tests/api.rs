//! `signaldesk serve` as other services call it: the real server on 127.0.0.1 with the
//! embedded store and the local embedding model, a labelled Reuters memory, and `POST /v1/tag`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};

use common::{run, signaldesk, stderr};
use serde_json::{json, Value};

const READER: &str = "reader-key-123";
const WRITER: &str = "writer-key-456";

struct Server {
    child: Child,
    url: String,
    _work: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gz_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap();
    BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .take(n)
        .map(Result::unwrap)
        .collect()
}

/// A server over a 300-document labelled memory, tagging with kNN, one tagging request at a time,
/// with `extra` configuration and `interactions` (JSONL) in its log.
fn start(extra: &str, interactions: &str) -> Server {
    let work = tempfile::tempdir().unwrap();
    let data = common::root().join("golden-datasets/reuters21578/modapte90");
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
keys = [
  {{ name = "reader", sha256 = "{}", scopes = ["read"] }},
  {{ name = "writer", sha256 = "{}", scopes = ["write"] }},
]
"#,
        data.join("taxonomy.tsv").display(),
        hash(READER),
        hash(WRITER)
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
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
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
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in err.lines() {});
    Server {
        child,
        url,
        _work: work,
    }
}

async fn post(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tagging_api_answers_per_item_checks_keys_and_sheds_load() {
    let server = start("", "");
    let client = reqwest::Client::new();
    let tag = format!("{}/v1/tag", server.url);
    let health = client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200, "health needs no key");

    let item = json!({"id": "a1", "title": "Wheat exports", "body": "Wheat and grain shipments rose as the harvest came in."}).to_string();
    let (status, v, _) = post(&client, &tag, None, &item).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, v, _) = post(&client, &tag, Some("not-a-key"), &item).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, v, _) = post(&client, &tag, Some(WRITER), &item).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );

    let (status, v, _) = post(&client, &tag, Some(READER), &item).await;
    assert_eq!(status, 200, "{v}");
    let answer = &v["items"][0];
    assert_eq!(answer["id"], "a1");
    let tags = answer["tags"].as_array().unwrap();
    assert!(!tags.is_empty(), "{v}");
    for t in tags {
        assert!(
            t["id"].is_string() && t["label"].is_string() && t["confidence"].is_number(),
            "{t}"
        );
        assert_eq!(t["source"], "knn");
        assert!(!t["evidence"].as_array().unwrap().is_empty());
    }
    assert_eq!(answer["lineage"]["tagger"], "knn", "{answer}");

    // A batch: the bad items get their own errors, in place; the good ones are tagged.
    let batch = json!([
        {"id": 1, "title": "Oil prices", "body": "Crude oil rose two dollars a barrel."},
        {"id": 2, "title": "", "body": "  "},
        {"id": 3, "title": "Bank rates", "colour": "red"},
        {"id": 4, "body": "The central bank cut interest rates by half a point.", "tagger": "zeroshot"},
        {"id": 5, "title": "Corn", "body": "Corn futures fell.", "taxonomy": "iab"},
        {"id": 6, "title": "Sugar", "body": "Sugar output rose."}
    ])
    .to_string();
    let (status, v, _) = post(&client, &tag, Some(READER), &batch).await;
    assert_eq!(status, 200, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(
        items.iter().map(|i| i["id"].clone()).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6].map(|n| json!(n))
    );
    for (k, field) in [
        (1, "items[1].body"),
        (2, "items[2]"),
        (3, "items[3].tagger"),
        (4, "items[4].taxonomy"),
    ] {
        assert_eq!(items[k]["error"]["code"], "invalid_request", "{}", items[k]);
        assert_eq!(items[k]["error"]["field"], field, "{}", items[k]);
    }
    assert!(items[0]["tags"].is_array() && items[5]["tags"].is_array());

    // Requests that fail whole: too many items, not JSON, another route.
    let big = Value::Array(vec![json!({"title": "x"}); 101]).to_string();
    let (status, v, _) = post(&client, &tag, Some(READER), &big).await;
    assert_eq!(
        (
            status,
            v["error"]["code"].as_str(),
            v["error"]["field"].as_str()
        ),
        (400, Some("invalid_request"), Some("body"))
    );
    let (status, v, _) = post(&client, &tag, Some(READER), "{not json").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, v, _) = post(
        &client,
        &format!("{}/v1/nothing", server.url),
        Some(READER),
        "{}",
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Overload: one tagging request at a time; eight 100-item batches at once get 429s at once.
    let heavy = Value::Array(
        gz_lines(
            &common::root().join("golden-datasets/reuters21578/modapte90/test.jsonl.gz"),
            100,
        )
        .iter()
        .map(|l| {
            let d: Value = serde_json::from_str(l).unwrap();
            json!({"title": d["title"], "body": d["body"]})
        })
        .collect(),
    )
    .to_string();
    let calls = (0..8).map(|_| {
        let (client, tag, heavy) = (client.clone(), tag.clone(), heavy.clone());
        tokio::spawn(async move { post(&client, &tag, Some(READER), &heavy).await })
    });
    let mut statuses = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        let (status, v, retry) = call.await.unwrap();
        if status == 429 {
            assert_eq!(v["error"]["code"], "overloaded");
            assert_eq!(retry.as_deref(), Some("1"));
        } else {
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["items"].as_array().unwrap().len(), 100);
        }
        statuses.push(status);
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );
}

/// The ids of the first `n` training documents (the memory's items).
fn memory_ids(n: usize) -> Vec<String> {
    gz_lines(
        &common::root().join("golden-datasets/reuters21578/modapte90/train.jsonl.gz"),
        n,
    )
    .iter()
    .map(|l| {
        serde_json::from_str::<Value>(l).unwrap()["id"]
            .as_str()
            .map_or_else(
                || serde_json::from_str::<Value>(l).unwrap()["id"].to_string(),
                str::to_string,
            )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_event_changes_the_next_recommendation() {
    let ids = memory_ids(40);
    // 20 users, each clicking six neighbouring documents.
    let mut events = String::new();
    for u in 0..20 {
        for (d, id) in ids.iter().enumerate().skip(u).take(6) {
            events.push_str(&format!(
                "{}\n",
                json!({"user": format!("u{u}"), "item": id, "event": "click", "timestamp": 1_700_000_000 + d})
            ));
        }
    }
    let server = start(
        "rate_per_key = 1\nrate_burst = 50\n\n[rank]\ncollection = \"labelled-memory\"\n",
        &events,
    );
    let client = reqwest::Client::new();
    let recommend = format!("{}/v1/recommend", server.url);
    let feedback = format!("{}/v1/feedback", server.url);
    let body = json!({"user": "u3", "k": 5}).to_string();
    let (status, v, _) = post(&client, &recommend, None, &body).await;
    assert_eq!(status, 401, "{v}");
    let (status, first, _) = post(&client, &recommend, Some(READER), &body).await;
    assert_eq!(status, 200, "{first}");
    let listed: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed.len(), 5);
    assert!(
        listed.iter().all(|i| !ids[3..9].contains(i)),
        "u3's own clicks are never recommended: {listed:?}"
    );
    assert!(
        first["items"][0]["features"].is_object() && first["items"][0]["contributions"].is_object()
    );

    let event =
        json!({"type": "event", "user": "u3", "item": listed[0], "event": "click"}).to_string();
    let (status, v, _) = post(&client, &feedback, Some(READER), &event).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "feedback needs the write scope"
    );
    let (status, v, _) = post(
        &client,
        &feedback,
        Some(WRITER),
        &json!({"type": "event", "user": "u3"}).to_string(),
    )
    .await;
    assert_eq!(
        (
            status,
            v["error"]["code"].as_str(),
            v["error"]["field"].as_str()
        ),
        (400, Some("invalid_request"), Some("item")),
        "{v}"
    );
    let (status, v, _) = post(&client, &feedback, Some(WRITER), &event).await;
    assert_eq!(status, 202, "{v}");

    let (status, second, _) = post(&client, &recommend, Some(READER), &body).await;
    assert_eq!(status, 200, "{second}");
    let relisted: Vec<&str> = second["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(
        !relisted.contains(&listed[0].as_str()),
        "the clicked item is now seen: {relisted:?}"
    );
    assert_ne!(relisted, listed, "the next list reflects the event");
    let (status, v, _) = post(
        &client,
        &recommend,
        Some(READER),
        &json!({"user": "u3", "seed": "no-such-item"}).to_string(),
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (400, Some("seed")),
        "{v}"
    );
}
