//! The API's contract at its edges, through the real server: deadlines (a write past
//! `api.timeout_s` finishes under its lock, an LLM call stops), redirects, long URIs, the auth
//! header's scheme in any case, rate limits for unknown keys, and request ids in the log.

mod common;

use common::server::{
    ingest_and_enrich, send, start, start_with, test_docs, Server, OPERATOR, READER, WRITER,
};
use common::{run, signaldesk, stderr};
use reqwest::Method;
use serde_json::{json, Value};

/// Lines of the server's log that contain every one of `needles`.
fn log_lines_with(server: &Server, needles: &[&str]) -> Vec<String> {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_long_uris_auth_schemes_unknown_keys_and_the_access_log() {
    let server = start("rate_per_key = 2\nrate_burst = 2\n", "");
    let url = |path: &str| format!("{}{path}", server.url);
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // GET / is a redirect to the editorial page, with its Location, not a rewritten error.
    let r = plain.get(url("/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/editorial");

    // A request target over the API's bound is the JSON error naming the URI.
    let long = format!("/v1/search?q={}", "a".repeat(20_000));
    let r = plain
        .get(url(&long))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 414);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["field"].as_str()),
        (Some("too_large"), Some("uri")),
        "{v}"
    );

    // The scheme of `Authorization` is case-insensitive.
    let r = plain
        .get(url("/v1/taxonomy?q=grain"))
        .header("authorization", format!("bearer {READER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());

    // Unknown keys share one rate bucket: guessing is limited like using a key (2/s here),
    // and the guesses do not spend a known key's rate.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let (status, v) = send(
            &plain,
            Method::GET,
            &url("/v1/taxonomy"),
            Some(&format!("guess-{i}")),
            None,
        )
        .await;
        if status == 429 {
            assert_eq!(v["error"]["code"], "rate_limited", "{v}");
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&401), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let (status, v) = send(
        &plain,
        Method::GET,
        &url("/v1/taxonomy"),
        Some(WRITER),
        None,
    )
    .await;
    assert_ne!(status, 429, "{v}");

    // One access-log line per request at the default log level, with its request id.
    let r = plain
        .get(url("/v1/taxonomy?q=corn"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(r.status().as_u16(), 200);
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = log_lines_with(&server, &[&id, "served", "/v1/taxonomy", "status=200"]);
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(lines.len(), 1, "{:?}", server.log.lock().unwrap());
}

/// The collection's item and chunk counts and BM25 statistics, read by `collections info` on a
/// stopped server's data dir.
fn collection_stats(server: &mut Server) -> (u64, u64, f64) {
    assert!(server.stop().success());
    let o = run(signaldesk(server.work.path())
        .env("SIGNALDESK_CONFIG", &server.config)
        .args(["collections", "info", "content", "--json"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    (
        v["items"].as_u64().unwrap(),
        v["chunks"].as_u64().unwrap(),
        v["bm25_avg_len"].as_f64().unwrap(),
    )
}

/// POST `docs` until it is answered 200 (a 504 means the write lock was busy or the write ran
/// past the deadline; the write is idempotent, so a retry is safe).
async fn post_until_written(client: &reqwest::Client, server: &Server, key: &str, docs: &[Value]) {
    for _ in 0..120 {
        let (status, v) = send(
            client,
            Method::POST,
            &format!("{}/v1/content", server.url),
            Some(key),
            Some(json!(docs)),
        )
        .await;
        match status {
            200 => return,
            504 => assert_eq!(v["error"]["code"], "timeout", "{v}"),
            _ => panic!("{status}: {v}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("the write never went through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_past_the_deadline_finishes_under_its_lock_and_answers_the_json_error() {
    let docs = test_docs(300);
    let (slow, quick) = docs.split_at(280);
    let client = reqwest::Client::new();

    // Serially, with time to spare: the statistics two writes leave.
    let mut serial = start("max_batch = 300\n", "");
    post_until_written(&client, &serial, WRITER, slow).await;
    post_until_written(&client, &serial, WRITER, quick).await;
    let expected = collection_stats(&mut serial);

    // A slow write past a 1 s deadline, and a second write sent while it runs.
    let mut server = start("timeout_s = 1\nmax_batch = 300\n", "");
    let first = {
        let client = client.clone();
        let url = format!("{}/v1/content", server.url);
        let body = json!(slow);
        tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(WRITER)
                .json(&body)
                .send()
                .await
                .unwrap();
            let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
            (r.status().as_u16(), id, r.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    post_until_written(&client, &server, WRITER, quick).await;
    let (status, request_id, v) = first.await.unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (504, Some("timeout")),
        "the slow write was meant to pass the deadline: {v}"
    );
    // The error line in the log carries the request's id.
    assert!(
        !log_lines_with(&server, &[&request_id, "WARN", "api.timeout_s"]).is_empty(),
        "{:?}",
        server.log.lock().unwrap()
    );
    // The slow write finished (under its lock); writing it again changes nothing.
    post_until_written(&client, &server, WRITER, slow).await;
    let got = collection_stats(&mut server);
    assert_eq!(got.0, expected.0, "items");
    assert_eq!(got.1, expected.1, "chunks");
    assert!(
        (got.2 - expected.2).abs() < 1e-9,
        "BM25 average length {} (serial: {})",
        got.2,
        expected.2
    );
}

/// The local LLM's generated-token count on `/metrics`.
async fn generated_tokens(client: &reqwest::Client, server: &Server) -> f64 {
    let text = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("signaldesk_llm_completion_tokens_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn summaries_past_the_deadline_stop_generating() {
    let server = start_with("timeout_s = 1\n", "", &[("SIGNALDESK_API__LLM", "true")]);
    let client = reqwest::Client::new();
    let items: Vec<Value> = test_docs(9)
        .into_iter()
        .map(|d| json!({"id": d["id"], "title": d["title"], "body": d["body"]}))
        .collect();
    let (status, v) = send(
        &client,
        Method::POST,
        &format!("{}/v1/summarize", server.url),
        Some(OPERATOR),
        Some(json!(items)),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (504, Some("timeout")),
        "{v}"
    );
    // Generation stops at the next token: the count settles at once and stays put.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let settled = generated_tokens(&client, &server).await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(generated_tokens(&client, &server).await, settled);
}

/// The ids of a recommendation answer, and each item's reason.
fn listed(v: &Value) -> Vec<(String, String)> {
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_reader_gets_a_full_list_with_reasons() {
    // A fresh install: content, no events, no trained blend.
    let server = start("", "");
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    let docs = test_docs(30);
    let (status, v) = send(
        &client,
        Method::POST,
        &url("/v1/content"),
        Some(WRITER),
        Some(json!(docs)),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let recommend = |body: Value| {
        let client = client.clone();
        let url = url("/v1/recommend");
        async move { send(&client, Method::POST, &url, Some(READER), Some(body)).await }
    };

    // A new reader: k items, each with its reason.
    let (status, v) = recommend(json!({"user": "alice", "k": 10})).await;
    assert_eq!(status, 200, "{v}");
    let first = listed(&v);
    assert_eq!(first.len(), 10, "{v}");
    assert!(first.iter().all(|(_, why)| !why.is_empty()), "{v}");

    // After a click on the top item: still k items, without it.
    let clicked = first[0].0.clone();
    let event = json!({"type": "event", "user": "alice", "item": clicked, "event": "click"});
    let (status, v) = send(
        &client,
        Method::POST,
        &url("/v1/feedback"),
        Some(WRITER),
        Some(event),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let (_, v) = recommend(json!({"user": "alice", "k": 10})).await;
    let after = listed(&v);
    assert_eq!(after.len(), 10, "{v}");
    assert!(after.iter().all(|(id, _)| *id != clicked), "{v}");

    // A new reader asking for the dense ranker (no profile yet) still gets a full list.
    let (_, v) = recommend(json!({"user": "bob", "k": 10, "ranker": "dense"})).await;
    assert_eq!(listed(&v).len(), 10, "{v}");

    // A seed: more like it, from the store, the seed itself never listed.
    let seed = docs[3]["id"].as_str().unwrap();
    let (_, v) = recommend(json!({"user": "carol", "k": 5, "seed": seed})).await;
    let similar = listed(&v);
    assert_eq!(similar.len(), 5, "{v}");
    assert!(similar.iter().all(|(id, _)| id != seed), "{v}");
    assert!(similar[0].1.starts_with("more like"), "{v}");

    // More than the catalogue holds: every item the reader has not seen, once.
    let (_, v) = recommend(json!({"user": "alice", "k": 100})).await;
    let all = listed(&v);
    let unique: std::collections::BTreeSet<&String> = all.iter().map(|(id, _)| id).collect();
    assert_eq!(
        (all.len(), unique.len()),
        (docs.len() - 1, docs.len() - 1),
        "{v}"
    );
}

/// A desk-like taxonomy (`# exclusive = true`: Reuters R8) gives every item exactly one label
/// through `POST /v1/tag`, the most confident, and the lineage says so; items on several topics
/// get one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exclusive_taxonomy_tags_every_item_with_exactly_one_label() {
    let r8 = common::root().join("golden-datasets/reuters21578/r8/taxonomy.tsv");
    let server = start_with(
        "",
        "",
        &[("SIGNALDESK_API__TAXONOMY", r8.to_str().unwrap())],
    );
    let client = reqwest::Client::new();
    let items = json!([
        {"id": "a", "title": "Wheat and corn exports rise", "body": "Grain shipments rose as the harvest came in; wheat and corn prices fell and freight rates on the ships climbed."},
        {"id": "b", "title": "Bank cuts rates, dollar falls", "body": "The central bank cut interest rates by half a point and the dollar fell against the yen on foreign exchange markets."},
        {"id": "c", "title": "Company profit up", "body": "Net profit rose to 12 mln dlrs, or 1.10 dlrs a share, on revenues of 200 mln dlrs; the company also agreed to acquire a rival."},
    ]);
    let (status, v) = send(
        &client,
        Method::POST,
        &format!("{}/v1/tag", server.url),
        Some(READER),
        Some(items),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for answer in v["items"].as_array().unwrap() {
        let tags = answer["tags"].as_array().unwrap();
        assert_eq!(tags.len(), 1, "exactly one label: {answer}");
        assert_eq!(answer["lineage"]["exclusive"], true, "{answer}");
        assert!(
            answer["lineage"]["taxonomy"]
                .as_str()
                .is_some_and(|t| t.starts_with("taxonomy@")),
            "{answer}"
        );
    }
    let (status, v) = send(
        &client,
        Method::GET,
        &format!("{}/v1/taxonomy?q=", server.url),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["exclusive"], true, "{v}");
    assert_eq!(v["concepts"].as_array().unwrap().len(), 8, "{v}");

    // Stored items are enriched with one label each; an editor who adds another moves the
    // item there (the label it served is rejected in the same stroke), so it still has one.
    let docs = test_docs(3);
    ingest_and_enrich(&client, &server, &docs).await;
    let id = docs[0]["id"].as_str().unwrap();
    let item_url = format!("{}/v1/content/{id}", server.url);
    let (status, item) = send(&client, Method::GET, &item_url, Some(READER), None).await;
    assert_eq!(status, 200, "{item}");
    let served = item["served_tags"].as_array().unwrap().clone();
    assert_eq!(served.len(), 1, "{item}");
    assert_eq!(item["lineage"]["tags"]["exclusive"], true, "{item}");
    let before = served[0].as_str().unwrap().to_string();
    let moved_to = ["ship", "grain"]
        .into_iter()
        .find(|l| *l != before)
        .unwrap();
    let (status, v) = send(
        &client,
        Method::POST,
        &format!("{}/v1/feedback", server.url),
        Some(WRITER),
        Some(json!({"type": "tag", "item": id, "label": moved_to, "verdict": "add"})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let (_, item) = send(&client, Method::GET, &item_url, Some(READER), None).await;
    assert_eq!(item["served_tags"], json!([moved_to]), "{item}");
    let verdicts: Vec<(String, String)> = item["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["label"].as_str().unwrap().to_string(),
                d["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (before, "reject".to_string()),
            (moved_to.to_string(), "add".to_string())
        ],
        "{item}"
    );
}

/// `POST /v1/verify` over SciFact abstracts sent through `POST /v1/content`: the first call
/// starts the verifier's training and answers 503 with Retry-After; then the verdict comes with
/// rationale spans that resolve in `GET /v1/content/{id}`'s item text.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_answers_with_evidence_that_resolves_in_the_stored_item() {
    let root = common::root();
    // The local LLM composes `POST /v1/ask`'s streamed answer.
    let server = start_with("", "", &[("SIGNALDESK_API__LLM", "true")]);
    let client = reqwest::Client::new();
    let docs: Vec<Value> =
        std::fs::read_to_string(root.join("golden-datasets/quickstart/sample.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|d| d["id"].as_str().unwrap().starts_with("scifact-"))
            .collect();
    let (status, v) = send(
        &client,
        Method::POST,
        &format!("{}/v1/content", server.url),
        Some(WRITER),
        Some(json!(docs)),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let url = format!("{}/v1/verify", server.url);
    let claim = json!({"claim": "TNFAIP3 is a glioblastoma tumor enhancer.", "k": 5});
    let (status, v) = send(&client, Method::POST, &url, None, Some(claim.clone())).await;
    assert_eq!(status, 401, "{v}");
    let (status, v) = send(
        &client,
        Method::POST,
        &url,
        Some(READER),
        Some(json!({"claim": " "})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (400, Some("claim")),
        "{v}"
    );
    let first = client
        .post(&url)
        .bearer_auth(READER)
        .json(&claim)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 503, "the first call starts the training");
    assert_eq!(first.headers()["retry-after"], "30");
    let mut answer = Value::Null;
    for _ in 0..300 {
        let (status, v) = send(
            &client,
            Method::POST,
            &url,
            Some(READER),
            Some(claim.clone()),
        )
        .await;
        if status == 200 {
            answer = v;
            break;
        }
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (503, Some("not_ready")),
            "{v}"
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert_eq!(answer["verdict"], "SUPPORT", "{answer}");
    let evidence = &answer["evidence"][0];
    assert_eq!(evidence["id"], "scifact-33370", "{answer}");
    let (status, stored) = send(
        &client,
        Method::GET,
        &format!("{}/v1/content/scifact-33370", server.url),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(status, 200, "{stored}");
    let text = format!(
        "{}\n{}",
        stored["item"]["title"].as_str().unwrap(),
        stored["item"]["body"].as_str().unwrap()
    );
    for s in evidence["rationale"].as_array().unwrap() {
        let (a, b) = (
            s["start"].as_u64().unwrap() as usize,
            s["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(&text[a..b], s["text"].as_str().unwrap(), "{s}");
    }

    // `POST /v1/ask` on the same archive and verifier: plain, then streamed with the server's
    // LLM, then a question the archive does not hold.
    let url = format!("{}/v1/ask", server.url);
    let question = "What role does TNFAIP3 play in glioblastoma?";
    let (status, v) = send(
        &client,
        Method::POST,
        &url,
        Some(READER),
        Some(json!({"question": question, "llm": false})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["source"], "extractive", "{v}");
    assert_eq!(v["passages"][0]["id"], "scifact-33370", "{v}");
    let p = &v["passages"][0];
    let (a, b) = (
        p["start"].as_u64().unwrap() as usize,
        p["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(&text[a..b], p["text"].as_str().unwrap(), "{p}");
    let (status, v) = send(
        &client,
        Method::POST,
        &url,
        Some(READER),
        Some(json!({"question": " "})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (400, Some("question")),
        "{v}"
    );

    let streamed = client
        .post(&url)
        .bearer_auth(READER)
        .json(&json!({"question": question, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    assert!(streamed.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = streamed.text().await.unwrap();
    let events: Vec<(String, Value)> = body
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let field = |name: &str| {
                e.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            (
                field("event:"),
                serde_json::from_str(&field("data:")).unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let answer = &events.last().unwrap().1;
    let statements = answer["statements"].as_array().unwrap();
    assert!(!statements.is_empty(), "{answer}");
    assert_eq!(answer["source"], "llm", "{answer}");
    // passages, the words as the LLM writes them, one event per statement, the answer.
    let texts = names.iter().filter(|n| **n == "text").count();
    assert!(texts >= 1, "the answer's words are streamed: {body}");
    let mut expected = vec!["passages"];
    expected.extend(std::iter::repeat_n("text", texts));
    expected.extend(std::iter::repeat_n("statement", statements.len()));
    expected.push("answer");
    assert_eq!(names, expected, "{body}");
    let preview: String = events
        .iter()
        .filter(|(n, _)| n == "text")
        .map(|(_, v)| v["text"].as_str().unwrap())
        .collect();
    for s in statements {
        let said = s["text"].as_str().unwrap();
        assert!(preview.contains(said), "{said:?} was streamed: {preview:?}");
    }
    // From the question to the first words: within the stages the answer took.
    let timings = answer["timings_ms"].as_object().unwrap();
    let first_text = timings["first_text"].as_f64().unwrap();
    let stages: f64 = ["retrieve", "read", "judge", "compose"]
        .iter()
        .map(|s| timings[*s].as_f64().unwrap())
        .sum();
    assert!(first_text > 0.0 && first_text < stages + 1.0, "{answer}");
    let passages = answer["passages"].as_array().unwrap();
    for s in statements {
        for n in s["citations"].as_array().unwrap() {
            let n = n.as_u64().unwrap() as usize;
            assert!((1..=passages.len()).contains(&n), "{answer}");
        }
    }
    for p in passages {
        let (status, stored) = send(
            &client,
            Method::GET,
            &format!("{}/v1/content/{}", server.url, p["id"].as_str().unwrap()),
            Some(READER),
            None,
        )
        .await;
        assert_eq!(status, 200, "{stored}");
        let text = format!(
            "{}\n{}",
            stored["item"]["title"].as_str().unwrap(),
            stored["item"]["body"].as_str().unwrap()
        );
        let (a, b) = (
            p["start"].as_u64().unwrap() as usize,
            p["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(&text[a..b], p["text"].as_str().unwrap(), "{p}");
    }
    assert!(answer["lineage"]["llm"]["model"].is_string(), "{answer}");

    let (status, v) = send(
        &client,
        Method::POST,
        &url,
        Some(READER),
        Some(json!({"question": "Who scored the winning goal in the 2014 football World Cup final?"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["not_in_archive"].as_bool(), v["source"].as_str()),
        (Some(true), Some("none")),
        "{v}"
    );
}
