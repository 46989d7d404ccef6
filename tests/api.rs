//! `signaldesk serve` as other services call it: the real server on 127.0.0.1 with the
//! embedded store and the local embedding model, a labelled Reuters memory, and `POST /v1/tag`.

mod common;

use common::server::{
    gz_lines, ingest_and_enrich, listening_url_and_log, post, send, start, start_with, test_docs,
    Server, EDITOR, OPERATOR, READER, WRITER,
};
use common::{run, signaldesk, stderr};
use serde_json::{json, Value};
use std::process::Stdio;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_end_to_end_ingest_tag_search_enrich_recommend_and_review() {
    use reqwest::Method;
    let mut server = start("", "");
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);

    // Ingest through the API: auth first, then a batch with one bad item.
    let mut docs = test_docs(30);
    docs.retain(|d| d["title"].as_str().is_some_and(|t| t.len() > 12));
    let mut batch = docs.clone();
    batch.insert(3, json!({"title": "no id here", "body": "text"}));
    let content = url("/v1/content");
    let (status, v) = send(&client, Method::POST, &content, None, Some(json!(batch))).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, v) = send(
        &client,
        Method::POST,
        &content,
        Some(READER),
        Some(json!(batch)),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, v) = send(
        &client,
        Method::POST,
        &content,
        Some(WRITER),
        Some(json!(batch)),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), batch.len());
    assert_eq!(items[3]["error"]["field"], "items[3].id", "{}", items[3]);
    assert!(
        items
            .iter()
            .enumerate()
            .all(|(i, a)| i == 3 || a["status"] == "new"),
        "{v}"
    );
    let (status, v) = send(
        &client,
        Method::POST,
        &content,
        Some(WRITER),
        Some(docs[0].clone()),
    )
    .await;
    assert_eq!(
        (status, v["items"][0]["status"].as_str()),
        (200, Some("unchanged")),
        "{v}"
    );

    // Read it back.
    let first_id = docs[0]["id"].as_str().unwrap().to_string();
    let item_url = url(&format!("/v1/content/{first_id}"));
    let (status, v) = send(&client, Method::GET, &item_url, Some(READER), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["item"]["title"], docs[0]["title"]);
    assert_eq!(v["item"]["body"], docs[0]["body"]);
    let (status, _) = send(
        &client,
        Method::GET,
        &url("/v1/content/nope"),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Tag an ad-hoc item.
    let (status, v) = send(
        &client,
        Method::POST,
        &url("/v1/tag"),
        Some(READER),
        Some(json!({"title": docs[1]["title"], "body": docs[1]["body"]})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(!v["items"][0]["tags"].as_array().unwrap().is_empty(), "{v}");

    // Search: an item's own title finds it first.
    let title = docs[2]["title"].as_str().unwrap();
    let search = format!(
        "{}?q={}&mode=hybrid&k=5&filter=source%3Dreuters",
        url("/v1/search"),
        title.replace(' ', "+").replace('&', "%26")
    );
    let (status, v) = send(&client, Method::GET, &search, Some(READER), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["hits"][0]["id"], docs[2]["id"], "{v}");
    let (status, v) = send(
        &client,
        Method::GET,
        &format!("{}?q=oil&k=0", url("/v1/search")),
        Some(READER),
        None,
    )
    .await;
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("k")));

    // Enrich the stored items in the background and watch the job finish: a collection-wide job
    // needs the jobs scope, which an editor's read + write key lacks.
    let (status, v) = send(
        &client,
        Method::POST,
        &url("/v1/enrich"),
        Some(EDITOR),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let (status, job) = send(
        &client,
        Method::POST,
        &url("/v1/enrich"),
        Some(OPERATOR),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let job_url = url(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()));
    let mut done = Value::Null;
    for _ in 0..600 {
        let (status, v) = send(&client, Method::GET, &job_url, Some(READER), None).await;
        assert_eq!(status, 200, "{v}");
        if v["state"] != "running" {
            done = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["result"]["tags"]["tagged"], docs.len(), "{done}");
    let (_, v) = send(&client, Method::GET, &item_url, Some(READER), None).await;
    let tags = v["tags"].as_array().unwrap().clone();
    assert!(
        !tags.is_empty() && tags.iter().all(|t| t["source"] == "knn"),
        "{v}"
    );
    // The evidence is named: the labelled-memory neighbours' titles beside their ids.
    assert!(
        tags[0]["evidence_titles"][0]["title"].is_string(),
        "{}",
        tags[0]
    );
    assert_eq!(v["lineage"]["tags"]["tagger"], "knn", "{v}");

    // Users' events, then a recommendation that changes with the next event.
    let feedback = url("/v1/feedback");
    for (u, items) in [("ann", 0..4), ("bob", 2..6), ("cy", 3..8)] {
        for i in items {
            let (status, v) = send(
                &client,
                Method::POST,
                &feedback,
                Some(WRITER),
                Some(json!({"type": "event", "user": u, "item": docs[i]["id"], "event": "click"})),
            )
            .await;
            assert_eq!(status, 202, "{v}");
        }
    }
    let recommend = url("/v1/recommend");
    let ask = json!({"user": "ann", "k": 5, "ranker": "dense"});
    let (status, first) = send(
        &client,
        Method::POST,
        &recommend,
        Some(READER),
        Some(ask.clone()),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let top = first["items"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = send(
        &client,
        Method::POST,
        &feedback,
        Some(WRITER),
        Some(json!({"type": "event", "user": "ann", "item": top, "event": "click"})),
    )
    .await;
    assert_eq!(status, 202);
    let (_, second) = send(&client, Method::POST, &recommend, Some(READER), Some(ask)).await;
    let relisted: Vec<&str> = second["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(
        !relisted.contains(&top.as_str()),
        "the clicked item is now seen: {relisted:?}"
    );

    // An editor rejects one tag and adds another.
    let rejected = tags[0]["id"].as_str().unwrap().to_string();
    let added = ["gold", "coffee", "cocoa"]
        .into_iter()
        .find(|l| tags.iter().all(|t| t["id"] != *l))
        .unwrap();
    for (label, verdict) in [(rejected.as_str(), "reject"), (added, "add")] {
        let (status, v) = send(
            &client,
            Method::POST,
            &feedback,
            Some(WRITER),
            Some(json!({"type": "tag", "item": first_id, "label": label, "verdict": verdict})),
        )
        .await;
        assert_eq!(status, 202, "{v}");
        assert_eq!(v["recorded"]["editor"], "writer");
    }
    // Decisions are validated: additions come from the taxonomy; accept and reject are for the
    // item's own tags (an accepted label the item lacks would become false gold).
    for (label, verdict) in [("not-a-concept", "add"), (added, "accept")] {
        let other = ["gold", "coffee", "cocoa", "sugar"]
            .into_iter()
            .find(|l| *l != added && tags.iter().all(|t| t["id"] != *l))
            .unwrap();
        let label = if verdict == "accept" { other } else { label };
        let (status, v) = send(
            &client,
            Method::POST,
            &feedback,
            Some(WRITER),
            Some(json!({"type": "tag", "item": first_id, "label": label, "verdict": verdict})),
        )
        .await;
        assert_eq!(
            (
                status,
                v["error"]["code"].as_str(),
                v["error"]["field"].as_str()
            ),
            (422, Some("invalid_label"), Some("label")),
            "{verdict} {label}: {v}"
        );
    }
    let (status, v) = send(
        &client,
        Method::POST,
        &feedback,
        Some(WRITER),
        Some(json!({"type": "tag", "item": "no-such-item", "label": added, "verdict": "add"})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("unknown_item")),
        "{v}"
    );

    // The decisions change what is served at once: the search filter on the rejected tag no
    // longer finds the item, the one on the added tag does, and hits carry the served tags.
    let filtered = |tag: &str| {
        format!(
            "{}?q={}&k=50&filter=tags%3D{tag}",
            url("/v1/search"),
            docs[0]["title"]
                .as_str()
                .unwrap()
                .replace(' ', "+")
                .replace('&', "%26")
        )
    };
    let found = |v: &Value| {
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == first_id.as_str())
            .cloned()
    };
    let (status, v) = send(
        &client,
        Method::GET,
        &filtered(&rejected),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        found(&v).is_none(),
        "the rejected tag still finds the item: {v}"
    );
    let (_, v) = send(&client, Method::GET, &filtered(added), Some(READER), None).await;
    let hit = found(&v).unwrap_or_else(|| panic!("the added tag does not find the item: {v}"));
    let hit_text = hit.to_string();
    assert!(hit_text.contains(added), "{hit}");
    let (_, v) = send(&client, Method::GET, &item_url, Some(READER), None).await;
    let served: Vec<&str> = v["served_tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        served.contains(&added) && !served.contains(&rejected.as_str()),
        "{v}"
    );
    // The model's own tags stay in the lineage (its scores), the rejected one included.
    assert!(
        v["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == rejected.as_str() && t["source"] == "knn"),
        "{v}"
    );
    let verdict = |label: &str| {
        v["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == label)
            .map(|t| t["verdict"].clone())
    };
    assert_eq!(verdict(&rejected), Some(json!("reject")), "{v}");
    assert_eq!(verdict(added), Some(json!("add")), "{v}");

    // Metrics carry the quality signals; delete works; then a graceful stop.
    let metrics = client
        .get(url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "signaldesk_editor_verdicts_total{{label=\"{rejected}\",verdict=\"reject\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("signaldesk_stage_duration_seconds_count{stage=\"embed\"}"),
        "{metrics}"
    );
    let last = docs.last().unwrap()["id"].as_str().unwrap().to_string();
    // A decision on the item that is then deleted: archived with it, not resurrected.
    let last_url = url(&format!("/v1/content/{last}"));
    let (_, v) = send(&client, Method::GET, &last_url, Some(READER), None).await;
    let last_tag = v["tags"][0]["id"].as_str().unwrap().to_string();
    let (status, v) = send(
        &client,
        Method::POST,
        &feedback,
        Some(WRITER),
        Some(json!({"type": "tag", "item": last, "label": last_tag, "verdict": "reject"})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    // Deleting needs the delete scope: not an editor's, not a calling service's write key.
    for key in [WRITER, EDITOR] {
        let (status, v) = send(
            &client,
            Method::DELETE,
            &url(&format!("/v1/content/{last}")),
            Some(key),
            None,
        )
        .await;
        assert_eq!(status, 403, "{v}");
    }
    let (status, _) = send(
        &client,
        Method::DELETE,
        &url(&format!("/v1/content/{last}")),
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &client,
        Method::GET,
        &url(&format!("/v1/content/{last}")),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, v) = send(
        &client,
        Method::POST,
        &url("/v1/content"),
        Some(WRITER),
        Some(json!([docs.last().unwrap()])),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = send(&client, Method::GET, &last_url, Some(READER), None).await;
    assert_eq!(v["decisions"], json!([]), "{v}");
    // A second item, partly reviewed: one of its tags rejected, the rest left as they are.
    let partly = docs[1]["id"].as_str().unwrap().to_string();
    let (_, v) = send(
        &client,
        Method::GET,
        &url(&format!("/v1/content/{partly}")),
        Some(READER),
        None,
    )
    .await;
    let partly_tags: Vec<String> = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let (status, v) = send(
        &client,
        Method::POST,
        &feedback,
        Some(EDITOR),
        Some(json!({"type": "tag", "item": partly, "label": partly_tags[0], "verdict": "reject"})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert!(server.stop().success(), "a graceful stop exits 0");

    // The decisions become golden data.
    let o = run(signaldesk(server.work.path())
        .env("SIGNALDESK_CONFIG", &server.config)
        .args([
            "feedback",
            "export",
            "--format",
            "tagging-gold",
            "--output",
            "gold.jsonl",
        ]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let gold = std::fs::read_to_string(server.work.path().join("gold.jsonl")).unwrap();
    let lines: Vec<Value> = gold
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The reviewed items with their labels as decided (the partly reviewed one too, its
    // unreviewed model tags kept and named); the deleted item's decision is not there.
    let by_id = |id: &str| lines.iter().find(|l| l["id"] == id).cloned();
    assert_eq!(
        lines.len(),
        if partly_tags.len() > 1 { 2 } else { 1 },
        "{gold}"
    );
    let first = by_id(&first_id).unwrap();
    let mut expected: Vec<String> = tags
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .filter(|t| *t != rejected)
        .collect();
    expected.push(added.to_string());
    assert_eq!(first["labels"], json!(expected), "{first}");
    assert_eq!(first["rejected"], json!([rejected]));
    assert_eq!(first["body"], docs[0]["body"]);
    assert!(by_id(&last).is_none(), "{gold}");
    if partly_tags.len() > 1 {
        let second = by_id(&partly).unwrap();
        assert_eq!(second["labels"], json!(partly_tags[1..]), "{second}");
        assert_eq!(second["unreviewed"], json!(partly_tags[1..]), "{second}");
    }
    assert!(stderr(&o).contains("partly reviewed"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn summaries_and_chat_completions_come_from_the_local_model_behind_the_keys() {
    use reqwest::Method;
    let server = start_with("", "", &[("SIGNALDESK_API__LLM", "true")]);
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    let doc = &test_docs(1)[0];
    let (status, v) = send(
        &client,
        Method::POST,
        &url("/v1/summarize"),
        None,
        Some(doc.clone()),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    let batch =
        json!([{"id": "s1", "title": doc["title"], "body": doc["body"]}, {"id": "s2", "body": ""}]);
    let (status, v) = send(
        &client,
        Method::POST,
        &url("/v1/summarize"),
        Some(READER),
        Some(batch),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let first = &v["items"][0];
    assert_eq!(first["id"], "s1");
    assert!(
        !first["summary"].as_str().unwrap().trim().is_empty(),
        "{first}"
    );
    assert!(
        ["llm", "extractive"].contains(&first["source"].as_str().unwrap()),
        "{first}"
    );
    assert_eq!(first["lineage"]["provider"], "local", "{first}");
    assert!(
        first["lineage"]["prompt"]
            .as_str()
            .unwrap()
            .starts_with("summarize"),
        "{first}"
    );
    assert_eq!(v["items"][1]["error"]["field"], "items[1].body", "{v}");

    let chat = json!({"model": "x", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4});
    let (status, v) = send(
        &client,
        Method::POST,
        &url("/v1/chat/completions"),
        None,
        Some(chat.clone()),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    let (status, v) = send(
        &client,
        Method::POST,
        &url("/v1/chat/completions"),
        Some(READER),
        Some(chat.clone()),
    )
    .await;
    // The raw LLM route spends tokens on any prompt: the llm scope, not read.
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let (status, v) = send(
        &client,
        Method::POST,
        &url("/v1/chat/completions"),
        Some(OPERATOR),
        Some(chat),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() <= 4,
        "{v}"
    );
    let (status, v) = send(&client, Method::GET, &url("/readyz"), None, None).await;
    assert_eq!(
        (status, v["llm"]["provider"].as_str()),
        (200, Some("local")),
        "{v}"
    );
}

/// Ingest `docs` through the API and tag them with an enrichment job; waits for it.
/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where tests leave artifacts (screenshots): `$SIGNALDESK_TEST_ARTIFACTS`, else
/// `target/test-artifacts` under the repository.
fn artifacts_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("SIGNALDESK_TEST_ARTIFACTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| common::root().join("target/test-artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Debian's chromium and chromium-driver: scripts/test.sh installs them and runs this"]
async fn an_editor_reviews_tags_in_the_browser_and_the_export_holds_the_decisions() {
    use fantoccini::{ClientBuilder, Locator};
    let mut server = start("", "");
    let client = reqwest::Client::new();
    let docs: Vec<Value> = test_docs(30)
        .into_iter()
        .filter(|d| d["title"].as_str().is_some_and(|t| t.len() > 12))
        .collect();
    ingest_and_enrich(&client, &server, &docs).await;

    let port = free_port();
    let mut driver = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver) is on PATH");
    let webdriver = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1400,1000",
                     format!("--user-data-dir={}", profile.path().display())]
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&webdriver)
        .await
        .expect("a headless chromium session");
    let wait = std::time::Duration::from_secs(30);

    browser
        .goto(&format!("{}/editorial", server.url))
        .await
        .unwrap();
    browser
        .find(Locator::Id("api-key"))
        .await
        .unwrap()
        .send_keys(EDITOR)
        .await
        .unwrap();
    let title = docs[0]["title"].as_str().unwrap();
    browser
        .find(Locator::Id("q"))
        .await
        .unwrap()
        .send_keys(title)
        .await
        .unwrap();
    browser
        .find(Locator::Id("search-btn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let first_hit = format!("li.hit[data-id=\"{}\"]", docs[0]["id"].as_str().unwrap());
    browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css(&first_hit))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let row = browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#tags tr.tag"))
        .await
        .unwrap();
    let rejected = row.attr("data-label").await.unwrap().unwrap();
    row.find(Locator::Css("button.reject"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css(&format!(
            "#tags tr.tag[data-label=\"{rejected}\"] td.verdict-reject"
        )))
        .await
        .unwrap();
    // Marked as rejected, with its history (who, when, what).
    let marked = browser
        .find(Locator::Css(&format!(
            "#tags tr.tag.rejected[data-label=\"{rejected}\"] td.label"
        )))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        marked.contains("rejected") && marked.contains("rejected by editor on"),
        "{marked}"
    );
    // The search filter on the rejected tag no longer finds the item.
    let filtered = |tag: &str| {
        format!(
            "{}/v1/search?k=50&filter=tags%3D{tag}&q={}",
            server.url,
            title.replace(' ', "+").replace('&', "%26")
        )
    };
    let finds = |v: &Value| {
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["id"] == docs[0]["id"])
    };
    let (_, v) = send(
        &client,
        reqwest::Method::GET,
        &filtered(&rejected),
        Some(READER),
        None,
    )
    .await;
    assert!(!finds(&v), "{v}");
    let existing: Vec<String> = {
        let mut labels = Vec::new();
        for r in browser
            .find_all(Locator::Css("#tags tr.tag"))
            .await
            .unwrap()
        {
            labels.push(r.attr("data-label").await.unwrap().unwrap());
        }
        labels
    };
    let added = ["gold", "coffee", "cocoa"]
        .into_iter()
        .find(|l| !existing.iter().any(|e| e == l))
        .unwrap();
    let input = browser.find(Locator::Id("add-label")).await.unwrap();
    input.send_keys(&added[..2]).await.unwrap();
    // The type-ahead offers the taxonomy's concepts.
    browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css(&format!(
            "#concepts option[value=\"{added}\"]"
        )))
        .await
        .unwrap();
    input.send_keys(&added[2..]).await.unwrap();
    browser
        .find(Locator::Id("add-btn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css(&format!(
            "#tags tr.tag[data-label=\"{added}\"] td.verdict-add"
        )))
        .await
        .unwrap();
    let (_, v) = send(
        &client,
        reqwest::Method::GET,
        &filtered(added),
        Some(READER),
        None,
    )
    .await;
    assert!(finds(&v), "the added tag finds the item: {v}");
    let related = browser
        .find_all(Locator::Css("#related li.hit"))
        .await
        .unwrap();
    assert!(!related.is_empty(), "related items are listed");
    // The lineage reads as sentences.
    let lineage = browser
        .find(Locator::Id("lineage"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(lineage.contains("Tags by the knn tagger"), "{lineage}");
    let shot = browser.screenshot().await.unwrap();
    let path = artifacts_dir().join("editorial-review.png");
    std::fs::write(&path, &shot).unwrap();
    assert!(
        shot.starts_with(b"\x89PNG"),
        "a PNG screenshot at {}",
        path.display()
    );
    // At 800 px wide the verdict buttons are on screen.
    browser.set_window_size(800, 1000).await.unwrap();
    let button = browser
        .find(Locator::Css("#tags tr.tag button.reject"))
        .await
        .unwrap();
    let (x, _, width, _) = button.rectangle().await.unwrap();
    let viewport: f64 = browser
        .execute("return document.documentElement.clientWidth;", vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap();
    assert!(
        x + width <= viewport,
        "the button ends at {} of {viewport} px",
        x + width
    );
    browser
        .execute(
            "document.getElementById('item-title').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
    let shot = browser.screenshot().await.unwrap();
    std::fs::write(artifacts_dir().join("editorial-review-800px.png"), &shot).unwrap();
    // Ask the archive: the cited passages are shown highlighted in their items (the first
    // call waits while the verifier trains), and a claim gets its verdict.
    let first_sentence: String = docs[0]["body"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .take(14)
        .collect::<Vec<_>>()
        .join(" ");
    browser
        .find(Locator::Id("ask-q"))
        .await
        .unwrap()
        .send_keys(&first_sentence)
        .await
        .unwrap();
    browser
        .find(Locator::Id("ask-btn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let passage = browser
        .wait()
        .at_most(std::time::Duration::from_secs(240))
        .for_element(Locator::Css("#passages li.passage mark"))
        .await
        .unwrap();
    let marked = passage.text().await.unwrap();
    let cited = browser
        .find(Locator::Css("#passages li.passage"))
        .await
        .unwrap()
        .attr("data-id")
        .await
        .unwrap()
        .unwrap();
    let (_, stored) = send(
        &client,
        reqwest::Method::GET,
        &format!("{}/v1/content/{cited}", server.url),
        Some(READER),
        None,
    )
    .await;
    let body = stored["item"]["body"].as_str().unwrap();
    assert!(
        !marked.trim().is_empty() && body.contains(marked.trim()),
        "the highlighted passage '{marked}' is in {cited}'s text"
    );
    let answer = browser
        .find(Locator::Id("answer-text"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(answer.contains("[1]"), "{answer}");
    std::fs::write(
        artifacts_dir().join("editorial-ask.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();
    browser
        .find(Locator::Id("verify-btn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let verdict = browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#answer-text span[class^=\"verdict-\"]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ["SUPPORT", "CONTRADICT", "NOT ENOUGH INFO"].contains(&verdict.as_str()),
        "{verdict}"
    );
    // The page is served with a policy: no framing, scripts only its own.
    let page = client
        .get(format!("{}/editorial", server.url))
        .send()
        .await
        .unwrap();
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        policy.contains("frame-ancestors 'none'") && policy.contains("script-src 'sha256-"),
        "{policy}"
    );
    browser.close().await.unwrap();
    let _ = driver.kill();
    let _ = driver.wait();

    assert!(server.stop().success());
    let o = run(signaldesk(server.work.path())
        .env("SIGNALDESK_CONFIG", &server.config)
        .args(["feedback", "export", "--output", "gold.jsonl"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let gold: Value = serde_json::from_str(
        std::fs::read_to_string(server.work.path().join("gold.jsonl"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(gold["id"], docs[0]["id"]);
    // The labels as decided: the model's tags but the rejected one, and the added one.
    let mut expected: Vec<&str> = existing
        .iter()
        .map(String::as_str)
        .filter(|l| *l != rejected)
        .collect();
    expected.push(added);
    assert_eq!(gold["labels"], json!(expected), "{gold}");
    assert_eq!(gold["rejected"], json!([rejected]), "{gold}");
    assert_eq!(gold["editors"], json!(["editor"]), "{gold}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_compose_configuration_serves_against_a_qdrant_server() {
    use reqwest::Method;
    let Some(bin) = common::qdrant::available("the_compose_configuration_serves") else {
        return;
    };
    let qdrant = common::qdrant::QdrantServer::start(&bin, Default::default());
    let work = tempfile::tempdir().unwrap();
    let data = common::root().join("golden-datasets/reuters21578/modapte90");
    // deploy/signaldesk.toml as docker-compose.yml mounts it; only what differs outside the
    // container is overridden: the Qdrant address, the taxonomy's path, the listening address.
    let refused = signaldesk(work.path())
        .env(
            "SIGNALDESK_CONFIG",
            common::root().join("deploy/signaldesk.toml"),
        )
        .env("SIGNALDESK_STORE__URL", qdrant.url())
        .env("SIGNALDESK_API__TAXONOMY", data.join("taxonomy.tsv"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    // The deployed configuration's key is the documented example: refused outside a
    // development run.
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("example key"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let mut child = signaldesk(work.path())
        .env(
            "SIGNALDESK_CONFIG",
            common::root().join("deploy/signaldesk.toml"),
        )
        .env("SIGNALDESK_STORE__URL", qdrant.url())
        .env("SIGNALDESK_API__DEVELOPMENT", "true")
        .env("SIGNALDESK_API__TAXONOMY", data.join("taxonomy.tsv"))
        .env("SIGNALDESK_API__METRICS_ADDR", "127.0.0.1:0")
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (url, log) = listening_url_and_log(&mut child);
    let mut server = Server {
        child,
        url,
        config: common::root().join("deploy/signaldesk.toml"),
        work,
        log,
    };
    let client = reqwest::Client::new();
    let key = "dev-key-change-me";
    let docs = test_docs(5);
    let (status, v) = send(
        &client,
        Method::POST,
        &format!("{}/v1/content", server.url),
        Some(key),
        Some(json!(docs)),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = send(
        &client,
        Method::GET,
        &format!("{}/readyz", server.url),
        None,
        None,
    )
    .await;
    assert_eq!((status, v["store"].as_str()), (200, Some("qdrant")), "{v}");
    let title = docs[1]["title"].as_str().unwrap();
    let (status, v) = send(
        &client,
        Method::GET,
        &format!(
            "{}/v1/search?q={}&k=3",
            server.url,
            title.replace(' ', "+").replace('&', "%26")
        ),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["hits"][0]["id"], docs[1]["id"], "{v}");
    // /metrics is served on its own listener (api.metrics_addr), not on the API's port.
    let metrics_url = server
        .log
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| l.strip_prefix("signaldesk metrics on ").map(str::to_string))
        .expect("the server names its metrics listener");
    let scraped = client
        .get(format!("{metrics_url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    assert!(
        text.contains("signaldesk_http_request_duration_seconds"),
        "{text}"
    );
    let (status, v) = send(
        &client,
        Method::GET,
        &format!("{}/metrics", server.url),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (status, v) = send(
        &client,
        Method::GET,
        &format!("{metrics_url}/v1/search?q=sugar"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 404, "the metrics listener serves no API route: {v}");
    assert!(server.stop().success());
}

/// Every stored point of the `content` collection (item id, chunk) → its payload, with the
/// lineage times taken out: what two enrichment runs are compared on.
async fn stored_payloads(work: &std::path::Path) -> std::collections::BTreeMap<String, Value> {
    use signaldesk::store::{EdgeStore, Filter, VectorStore};
    let store = EdgeStore::new(&work.join("data/edge")).unwrap();
    let collection = store.resolve("content").await.unwrap();
    let mut out = std::collections::BTreeMap::new();
    let mut offset = None;
    loop {
        let (page, next) = store
            .scroll(&collection, &Filter::default(), offset, 256)
            .await
            .unwrap();
        for chunk in page {
            let mut payload = Value::Object(chunk.payload);
            for (field, time) in [
                ("tags_lineage", "tagged_at"),
                ("summary_lineage", "summarized_at"),
            ] {
                if let Some(lineage) = payload.get_mut(field).and_then(Value::as_object_mut) {
                    lineage.remove(time);
                }
            }
            out.insert(
                format!("{}#{}", chunk.content_id, chunk.chunk_index),
                payload,
            );
        }
        match next {
            Some(n) => offset = Some(n),
            None => break,
        }
    }
    out
}

/// The CLI and the API are shells over one library: `signaldesk enrich` and `POST /v1/enrich`
/// store byte-identical payloads (lineage times aside) on the same items, and the same bad
/// interaction events get the same verdicts through `interactions ingest` and
/// `POST /v1/feedback`. Bad input names its field: a bad date in a search filter, a wrong type
/// in a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_and_the_api_share_one_path_for_enrichment_and_events() {
    use reqwest::Method;
    let mut server = start("", "");
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    let docs = test_docs(12);
    ingest_and_enrich(&client, &server, &docs).await;

    // Bad input is a 400 naming the field: the filter (not a 503 from the store) and the JSON
    // path of a wrong type (not the value).
    let (status, v) = send(
        &client,
        Method::GET,
        &url("/v1/search?q=oil&filter=published_at>=notadate"),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(
        (
            status,
            v["error"]["code"].as_str(),
            v["error"]["field"].as_str()
        ),
        (400, Some("invalid_request"), Some("filter")),
        "{v}"
    );
    let (status, v) = send(
        &client,
        Method::POST,
        &url("/v1/recommend"),
        Some(READER),
        Some(json!({"user": "u1", "k": -1})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (400, Some("k")),
        "{v}"
    );

    // Events: one good, the rest each wrong in one field.
    let known = docs[0]["id"].as_str().unwrap().to_string();
    let tomorrow = (chrono_like_now() + 86_400).to_string();
    let events = [
        json!({"user": "u1", "item": known, "event": "click", "timestamp": "2026-01-02"}),
        json!({"user": "u1", "event": "click", "timestamp": "2026-01-02"}),
        json!({"user": "u1", "item": "no-such-item", "event": "click", "timestamp": "2026-01-02"}),
        json!({"user": "u1", "item": known, "event": "click", "timestamp": tomorrow}),
        json!({"user": "u1", "item": known, "event": "rating", "timestamp": "2026-01-02"}),
        json!({"user": "u1", "item": known, "event": "click", "timestamp": "yesterday"}),
        json!({"user": " ", "item": known, "event": "click", "timestamp": "2026-01-02"}),
        json!({"user": "u1", "item": known, "event": "clik", "timestamp": "2026-01-02"}),
    ];
    // An unknown item is 422 `unknown_item`; every other fault is a 400 naming its field.
    let statuses = [202, 400, 422, 400, 400, 400, 400, 400];
    let mut api_verdicts = Vec::new();
    for (e, expected) in events.iter().zip(statuses) {
        let mut body = e.clone();
        body["type"] = json!("event");
        let (status, v) = send(
            &client,
            Method::POST,
            &url("/v1/feedback"),
            Some(WRITER),
            Some(body),
        )
        .await;
        assert_eq!(status, expected, "{e}: {v}");
        api_verdicts.push(match status {
            202 => None,
            400 | 422 => Some(format!(
                "field `{}`: {}",
                v["error"]["field"].as_str().unwrap(),
                v["error"]["message"].as_str().unwrap()
            )),
            _ => panic!("{status}: {v}"),
        });
    }
    assert_eq!(api_verdicts[0], None, "the good event is recorded");
    assert!(
        api_verdicts[1..].iter().all(Option::is_some),
        "{api_verdicts:?}"
    );
    assert!(server.stop().success());
    let after_api = stored_payloads(server.work.path()).await;
    let items: std::collections::BTreeSet<&str> = after_api
        .keys()
        .map(|k| k.split('#').next().unwrap())
        .collect();
    assert_eq!(items.len(), docs.len(), "every item is stored");
    assert!(
        after_api.values().all(|p| p["tags_lineage"].is_object()),
        "every chunk carries its item's tags"
    );

    // The same enrichment through the CLI, over the same items, rewrites the same payloads.
    let o = run(signaldesk(server.work.path())
        .env("SIGNALDESK_CONFIG", &server.config)
        .args(["enrich", "--tagger", "knn", "--json", "--taxonomy"])
        .arg(common::root().join("golden-datasets/reuters21578/modapte90/taxonomy.tsv")));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let outcome: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(outcome["tags"]["tagged"], docs.len(), "{outcome}");
    let after_cli = stored_payloads(server.work.path()).await;
    assert_eq!(
        serde_json::to_string(&after_cli).unwrap(),
        serde_json::to_string(&after_api).unwrap(),
        "the CLI's enrich stores what POST /v1/enrich stored"
    );

    // The same events through the CLI get the same verdicts.
    let file = server.work.path().join("events.jsonl");
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let rejects = server.work.path().join("rejects.jsonl");
    let o = run(signaldesk(server.work.path())
        .env("SIGNALDESK_CONFIG", &server.config)
        .args(["interactions", "ingest"])
        .arg(&file)
        .arg("--rejects")
        .arg(&rejects));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let mut cli_verdicts = vec![None; events.len()];
    for line in std::fs::read_to_string(&rejects).unwrap().lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let n = r["line"].as_u64().unwrap() as usize;
        cli_verdicts[n - 1] = Some(r["reason"].as_str().unwrap().to_string());
    }
    assert_eq!(cli_verdicts, api_verdicts);
}

/// Unix seconds now.
fn chrono_like_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
