//! The scale-out path on real servers: `nats-server` 2.15 with JetStream (tests/common/nats.rs)
//! and the Qdrant v1.18.3 test server. `ingest --via-stream` publishes, `signaldesk worker`
//! processes ingest; a worker is SIGKILLed mid-ingest and the store must still end with every
//! item exactly once, equal to an uninterrupted in-process ingest. Poison events go to the dead
//! letters and `stream status` counts them.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::nats::{self, NatsServer};
use common::qdrant::{self, stored_chunks, QdrantServer, ServerOptions};
use common::{run, signaldesk, stderr, write_articles, write_tiny_bert, TinyBert};
use serde_json::{json, Value};
use signaldesk::store::{Filter, QdrantStore, VectorStore};

/// `signaldesk` on the tiny model against the Qdrant server at `qdrant` and NATS at `nats`.
fn scaled(work: &Path, model: &Path, qdrant: &str, nats: &str) -> Command {
    let mut cmd = signaldesk(work);
    cmd.env("SIGNALDESK_EMBED__MODEL", model)
        .env("SIGNALDESK_CHUNK__MAX_TOKENS", "24")
        .env("SIGNALDESK_CHUNK__OVERLAP_TOKENS", "4")
        .env("SIGNALDESK_STORE__BACKEND", "qdrant")
        .env("SIGNALDESK_STORE__URL", qdrant)
        .env("SIGNALDESK_STORE__TIMEOUT_S", "10")
        .env("SIGNALDESK_STREAM__URL", nats)
        .env("SIGNALDESK_STREAM__ACK_WAIT_S", "3")
        .env("SIGNALDESK_STREAM__FETCH_BATCH", "20")
        // Workers only ingest here; the enrichment test turns it on with a tagger that needs
        // no labelled memory.
        .env("SIGNALDESK_STREAM__ENRICH", "false")
        .env_remove("QDRANT_API_KEY");
    cmd
}

/// Both servers, the tiny model and `n` articles in `items.jsonl`.
struct Setup {
    work: tempfile::TempDir,
    model: std::path::PathBuf,
    file: std::path::PathBuf,
    qdrant: QdrantServer,
    nats: NatsServer,
}

impl Setup {
    /// `None` (after a visible line) when a server binary is absent and not required.
    fn start(test: &str, n: usize) -> Option<Self> {
        let qdrant_bin = qdrant::available(test)?;
        let nats_bin = nats::available(test)?;
        let work = tempfile::tempdir().unwrap();
        let model = work.path().join("tiny-model");
        write_tiny_bert(&model, &TinyBert::default());
        let file = work.path().join("items.jsonl");
        write_articles(&file, n);
        Some(Self {
            qdrant: QdrantServer::start(&qdrant_bin, ServerOptions::default()),
            nats: NatsServer::start(&nats_bin),
            work,
            model,
            file,
        })
    }

    fn cmd(&self) -> Command {
        scaled(
            self.work.path(),
            &self.model,
            &self.qdrant.url(),
            &self.nats.url(),
        )
    }

    fn store(&self) -> QdrantStore {
        QdrantStore::connect(&self.qdrant.url(), None, Duration::from_secs(10)).unwrap()
    }
}

fn json_out(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("no JSON: {}", stderr(o)))
}

#[test]
fn a_worker_killed_mid_ingest_through_the_stream_leaves_every_item_exactly_once() {
    let Some(setup) = Setup::start("a_worker_killed_mid_ingest", 2000) else {
        return;
    };
    let (file, cmd) = (&setup.file, || setup.cmd());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = setup.store();

    // The reference: the same file ingested in process into another collection.
    let reference = json_out(&run(cmd()
        .env("SIGNALDESK_STORE__COLLECTION", "reference")
        .args(["ingest", "--json"])
        .arg(file)));
    assert_eq!(reference["new"], 2000);
    let want = rt.block_on(stored_chunks(&store, "reference"));

    let published = json_out(&run(cmd()
        .args(["ingest", "--via-stream", "--json"])
        .arg(file)));
    assert_eq!(
        (
            published["published"].as_u64(),
            published["duplicates"].as_u64()
        ),
        (Some(2000), Some(0)),
        "{published}"
    );
    // A publisher that retries is de-duplicated by NATS (same item id and content).
    let again = json_out(&run(cmd()
        .args(["ingest", "--via-stream", "--json"])
        .arg(file)));
    assert_eq!(
        (again["published"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(2000)),
        "{again}"
    );

    let mut first = cmd()
        .args(["worker", "--json", "--metrics-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics_url = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(first.stderr.take().unwrap()).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("worker metrics on ").map(str::to_string))
            .expect("the worker says where its metrics are");
        // Keep draining the worker's stderr so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        url
    };
    let text = rt.block_on(async {
        reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        text.lines().any(|l| l == "signaldesk_stream_up 1"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE signaldesk_stream_pending_events gauge"),
        "{text}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let written = rt
            .block_on(store.count("content", &Filter::default()))
            .unwrap_or(0);
        if written > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker wrote nothing in 120 s"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the worker ended before writing"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill().unwrap(); // SIGKILL: no shutdown, its batch in hand unacknowledged
    first.wait().unwrap();
    let killed_at = rt
        .block_on(store.count("content", &Filter::default()))
        .unwrap();
    assert!(killed_at < want.len(), "killed too late to test anything");

    let second = json_out(&run(cmd().args(["worker", "--exit-when-idle", "--json"])));
    assert_eq!(second["dead_letters"], 0, "{second}");
    let got = rt.block_on(stored_chunks(&store, "content"));
    assert_eq!(got.len(), want.len(), "chunks: {second}");
    assert!(
        got == want,
        "the stream-ingested chunks differ from the in-process ingest"
    );

    let status = json_out(&run(cmd().args(["stream", "status", "--json"])));
    assert_eq!(
        (
            status["content_events"].as_u64(),
            status["pending"].as_u64(),
            status["ack_pending"].as_u64(),
            status["dead_letters"].as_u64()
        ),
        (Some(0), Some(0), Some(0), Some(0)),
        "{status}"
    );
    eprintln!(
        "killed after {killed_at} of {} chunks were written; the second worker: {second}",
        want.len()
    );
}

#[test]
fn poison_events_go_to_the_dead_letters_and_the_good_ones_are_ingested() {
    let Some(setup) = Setup::start("poison_events", 30) else {
        return;
    };
    let (work, file, cmd) = (&setup.work, &setup.file, || setup.cmd());

    // 30 good items, one event that is not JSON, and one item the workers' limit refuses
    // (published with a larger max body than the workers run with).
    let published = json_out(&run(cmd()
        .args(["ingest", "--via-stream", "--json"])
        .arg(file)));
    assert_eq!(published["published"], 30, "{published}");
    let big = work.path().join("big.jsonl");
    let body = "word ".repeat(400);
    std::fs::write(
        &big,
        json!({"id": "too-big", "title": "Big", "body": body}).to_string() + "\n",
    )
    .unwrap();
    let published = json_out(&run(cmd()
        .env("SIGNALDESK_INGEST__MAX_BODY_BYTES", "100000")
        .args(["ingest", "--via-stream", "--json"])
        .arg(&big)));
    assert_eq!(published["published"], 1, "{published}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(setup.nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.publish("signaldesk.content", "{not json".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });

    let summary = json_out(&run(cmd()
        .env("SIGNALDESK_INGEST__MAX_BODY_BYTES", "1000")
        .args(["worker", "--exit-when-idle", "--json"])));
    assert_eq!(
        (summary["new"].as_u64(), summary["dead_letters"].as_u64()),
        (Some(30), Some(2)),
        "{summary}"
    );
    let store = setup.store();
    let items: BTreeSet<String> = rt
        .block_on(stored_chunks(&store, "content"))
        .into_iter()
        .map(|(id, ..)| id)
        .collect();
    assert_eq!(items.len(), 30);
    assert!(!items.contains("too-big"));

    let status = json_out(&run(cmd().args(["stream", "status", "--json"])));
    assert_eq!(status["dead_letters"], 2, "{status}");
    assert_eq!(status["dead_reasons"]["invalid event"], 1, "{status}");
    assert_eq!(status["dead_reasons"]["invalid item"], 1, "{status}");
    let text = run(cmd().args(["stream", "status"]));
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("2 dead letters"), "{text}");
}

/// The stored first chunks' `tags_lineage` by item id.
async fn lineages(store: &QdrantStore) -> std::collections::BTreeMap<String, Value> {
    let (page, _) = store
        .scroll("content", &Filter::first_chunks(), None, 1000)
        .await
        .unwrap();
    page.into_iter()
        .map(|c| {
            let lineage = c
                .payload
                .get("tags_lineage")
                .cloned()
                .unwrap_or(Value::Null);
            (c.content_id, lineage)
        })
        .collect()
}

#[test]
fn workers_tag_what_they_ingest_and_enrich_via_stream_publishes_only_what_is_stale() {
    let Some(setup) = Setup::start("workers_enrich", 40) else {
        return;
    };
    let taxonomy = common::root().join("golden-datasets/reuters21578/modapte90/taxonomy.tsv");
    let enriching = |max_labels: &str| {
        let mut cmd = setup.cmd();
        cmd.env("SIGNALDESK_STREAM__ENRICH", "true")
            .env("SIGNALDESK_STREAM__TAGGER", "zeroshot")
            .env("SIGNALDESK_API__TAXONOMY", &taxonomy)
            .env("SIGNALDESK_ENRICH__ZEROSHOT__MAX_LABELS", max_labels);
        cmd
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = setup.store();

    let published = json_out(&run(enriching("3")
        .args(["ingest", "--via-stream", "--json"])
        .arg(&setup.file)));
    assert_eq!(published["published"], 40, "{published}");
    // Two workers share the content events and the enrich events the ingest produces.
    let workers: Vec<_> = (0..2)
        .map(|_| {
            enriching("3")
                .args(["worker", "--exit-when-idle", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let summaries: Vec<Value> = workers
        .into_iter()
        .map(|w| json_out(&w.wait_with_output().unwrap()))
        .collect();
    let total = |field: &str| -> u64 { summaries.iter().map(|s| s[field].as_u64().unwrap()).sum() };
    assert_eq!(
        (total("new"), total("enriched"), total("dead_letters")),
        (40, 40, 0),
        "{summaries:?}"
    );
    let stored = rt.block_on(lineages(&store));
    assert_eq!(stored.len(), 40);
    for (id, lineage) in &stored {
        assert_eq!(lineage["tagger"], "zeroshot", "{id}: {lineage}");
    }

    // Nothing is stale: a rerun publishes nothing.
    let again = json_out(&run(enriching("3").args([
        "enrich",
        "--via-stream",
        "--only-stale",
        "--json",
    ])));
    assert_eq!(
        (again["read"].as_u64(), again["published"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );

    // Another setting makes every item stale: published once (a second publish is
    // de-duplicated), and the workers re-tag them all with the new lineage.
    let changed = json_out(&run(enriching("2").args([
        "enrich",
        "--via-stream",
        "--only-stale",
        "--no-wait",
        "--json",
    ])));
    assert_eq!(changed["published"], 40, "{changed}");
    let twice = json_out(&run(enriching("2").args([
        "enrich",
        "--via-stream",
        "--only-stale",
        "--no-wait",
        "--json",
    ])));
    assert_eq!(
        (twice["published"].as_u64(), twice["duplicates"].as_u64()),
        (Some(0), Some(40)),
        "{twice}"
    );
    let worker = json_out(&run(enriching("2").args([
        "worker",
        "--exit-when-idle",
        "--json",
    ])));
    assert_eq!(
        (worker["enriched"].as_u64(), worker["events"].as_u64()),
        (Some(40), Some(40)),
        "{worker}"
    );
    let restaged = rt.block_on(lineages(&store));
    for (id, lineage) in &restaged {
        assert_ne!(lineage, &stored[id], "{id}: the lineage did not change");
    }
    let done = json_out(&run(enriching("2").args([
        "enrich",
        "--via-stream",
        "--only-stale",
        "--json",
    ])));
    assert_eq!(done["published"], 0, "{done}");

    // The workers' configuration decides the enrichment: a tagger of one's own is refused, and
    // a worker that does not enrich dead-letters enrich events rather than dropping them.
    let out = run(enriching("2").args(["enrich", "--via-stream", "--tagger", "knn"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let all = json_out(&run(enriching("1")
        .args(["enrich", "--via-stream", "--no-wait", "--json"])
        .args(["--limit", "3"])));
    assert_eq!(all["published"], 3, "{all}");
    let refusing = json_out(&run(setup.cmd().args([
        "worker",
        "--exit-when-idle",
        "--json",
    ])));
    assert_eq!(refusing["dead_letters"], 3, "{refusing}");
    let status = json_out(&run(setup.cmd().args(["stream", "status", "--json"])));
    assert_eq!(status["dead_reasons"]["not enriching"], 3, "{status}");
}

#[test]
fn without_stream_url_the_scale_out_commands_say_what_to_set() {
    let work = tempfile::tempdir().unwrap();
    for args in [
        &["worker"][..],
        &["stream", "status"],
        &["ingest", "--via-stream", "items.jsonl"],
        &["enrich", "--via-stream"],
    ] {
        std::fs::write(
            work.path().join("items.jsonl"),
            "{\"id\":1,\"title\":\"t\"}\n",
        )
        .unwrap();
        let out = run(signaldesk(work.path()).args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("stream.url is not set"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_stream_the_api_queues_content_with_202_and_a_worker_makes_it_readable() {
    use common::server::{listening_url_and_log, send, test_docs, Server};
    use reqwest::Method;
    let Some(qdrant_bin) = qdrant::available("the_api_queues_content") else {
        return;
    };
    let Some(nats_bin) = nats::available("the_api_queues_content") else {
        return;
    };
    let qdrant = QdrantServer::start(&qdrant_bin, ServerOptions::default());
    let nats = NatsServer::start(&nats_bin);
    let work = tempfile::tempdir().unwrap();
    let taxonomy = common::root().join("golden-datasets/reuters21578/modapte90/taxonomy.tsv");
    // deploy/signaldesk.toml (the compose file's configuration) with the stream switched on.
    let configured = || {
        let mut cmd = signaldesk(work.path());
        cmd.env(
            "SIGNALDESK_CONFIG",
            common::root().join("deploy/signaldesk.toml"),
        )
        .env("SIGNALDESK_STORE__URL", qdrant.url())
        .env("SIGNALDESK_STREAM__URL", nats.url())
        .env("SIGNALDESK_API__DEVELOPMENT", "true")
        .env("SIGNALDESK_API__TAXONOMY", &taxonomy)
        // /metrics on the API's own port (the compose file's 0.0.0.0:9090 may be taken).
        .env("SIGNALDESK_API__METRICS_ADDR", "");
        cmd
    };
    let mut child = configured()
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (url, log) = listening_url_and_log(&mut child);
    let server = Server {
        child,
        url,
        config: common::root().join("deploy/signaldesk.toml"),
        work: tempfile::tempdir().unwrap(),
        log,
    };
    let client = reqwest::Client::new();
    let key = Some("dev-key-change-me");
    let mut docs = test_docs(4);
    docs.push(json!({"id": "bad", "title": 7}));
    let (status, v) = send(
        &client,
        Method::POST,
        &format!("{}/v1/content", server.url),
        key,
        Some(json!(docs)),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let items = v["items"].as_array().unwrap();
    assert!(items[..4].iter().all(|i| i["status"] == "queued"), "{v}");
    assert_eq!(items[4]["error"]["field"], "items[4].title", "{v}");
    let location = items[0]["location"].as_str().unwrap().to_string();
    let (status, _) = send(
        &client,
        Method::GET,
        &format!("{}{location}", server.url),
        key,
        None,
    )
    .await;
    assert_eq!(status, 404, "readable only once a worker has ingested it");
    let metrics = || async {
        reqwest::get(format!("{}/metrics", server.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let text = metrics().await;
    for line in [
        "signaldesk_stream_published_total 4",
        "signaldesk_stream_publish_duration_seconds_count 4",
        "signaldesk_stream_up 1",
        "signaldesk_stream_pending_events 4",
        "signaldesk_stream_dead_letters 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }

    let out = configured()
        .args(["worker", "--exit-when-idle", "--json"])
        .output()
        .unwrap();
    let summary = json_out(&out);
    assert_eq!(summary["new"], 4, "{summary}");
    // The compose configuration's workers tag what they ingest (zeroshot, the API's taxonomy).
    assert_eq!(summary["enriched"], 4, "{summary}");
    let (status, item) = send(
        &client,
        Method::GET,
        &format!("{}{location}", server.url),
        key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["item"]["id"], docs[0]["id"], "{item}");
    let text = metrics().await;
    assert!(
        text.lines()
            .any(|l| l == "signaldesk_stream_pending_events 0"),
        "{text}"
    );
}

/// A three-node NATS cluster and a connection with the streams in place (3 replicas).
async fn cluster_stream(bin: &Path) -> (Vec<NatsServer>, signaldesk::stream::EventStream) {
    let servers = nats::cluster(bin, 3);
    let config = signaldesk::config::StreamConfig {
        url: servers
            .iter()
            .map(|s| s.url())
            .collect::<Vec<_>>()
            .join(","),
        replicas: 3,
        timeout_s: 2,
        ..Default::default()
    };
    // The cluster elects its JetStream meta leader a moment after the servers are up.
    let started = Instant::now();
    loop {
        match signaldesk::stream::EventStream::connect(&config).await {
            Ok(stream) => return (servers, stream),
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("waiting for the cluster: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the cluster never took the streams: {e}"),
        }
    }
}

/// The index in `servers` of the server leading `stream` (its loss costs an election).
async fn stream_leader(servers: &[NatsServer], stream: &str) -> usize {
    let client = async_nats::connect(servers[0].url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut handle = js.get_stream(stream).await.unwrap();
    let info = handle.info().await.unwrap();
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap();
    leader.trim_start_matches('n').parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_during_a_burst_of_clicks_loses_no_acknowledged_click() {
    use signaldesk::rank::interactions::{Interaction, InteractionStore};
    let Some(nats_bin) = nats::available("a_nats_node_killed_during_a_burst") else {
        return;
    };
    let (mut servers, stream) = cluster_stream(&nats_bin).await;
    let leader = stream_leader(&servers, "SIGNALDESK_INTERACTIONS").await;
    let stream = std::sync::Arc::new(stream);
    // Four API replicas' worth of publishers, 250 clicks each; the stream's leader dies when
    // a third of them are acknowledged.
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let (stream, acknowledged) = (stream.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                for i in 0..250 {
                    let click = Interaction {
                        user: format!("user-{p}"),
                        item: format!("item-{i}"),
                        event: "click".into(),
                        value: None,
                        timestamp: 1_700_000_000 + i,
                    };
                    let began = Instant::now();
                    stream
                        .publish_interaction(&click, &format!("replica-{p}"))
                        .await
                        .unwrap_or_else(|e| panic!("click {i} of replica {p}: {e}"));
                    slowest = slowest.max(began.elapsed());
                    acknowledged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                slowest
            })
        })
        .collect();
    while acknowledged.load(std::sync::atomic::Ordering::Relaxed) < 333 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    servers[leader].kill();
    let mut slowest = Duration::ZERO;
    for p in publishers {
        slowest = slowest.max(p.await.unwrap());
    }
    // Every acknowledged click is in the stream, once: a replica's log copied from it holds
    // all 1,000.
    let dir = tempfile::tempdir().unwrap();
    let log = InteractionStore::open(&dir.path().join("interactions.redb")).unwrap();
    let last = stream.sync_interactions(&log).await.unwrap();
    let copied = log.all().unwrap();
    assert_eq!(copied.len(), 1000, "last sequence {last}");
    assert_eq!(last, 1000, "a click stored twice");
    eprintln!(
        "interactions leader n{leader} SIGKILLed after 333 of 1000 clicks: the slowest click took {slowest:?}"
    );
    assert!(
        slowest < Duration::from_secs(10),
        "clicks stalled for {slowest:?} after the leader died"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_while_publishing_loses_nothing_acknowledged_and_publishing_resumes() {
    use signaldesk::content::{ContentItem, Limits};
    use signaldesk::stream::PublishSummary;
    let Some(nats_bin) = nats::available("a_nats_node_killed_while_publishing") else {
        return;
    };
    let (mut servers, stream) = cluster_stream(&nats_bin).await;
    let items: Vec<ContentItem> = (0..2000)
        .map(|i| {
            let v =
                json!({"id": format!("item-{i}"), "title": format!("Story {i}"), "body": "Text."});
            ContentItem::from_json(v.as_object().unwrap().clone(), Limits::default()).unwrap()
        })
        .collect();
    // The content stream's leader: the server whose loss costs an election.
    let leader = stream_leader(&servers, "SIGNALDESK_CONTENT").await;
    let mut summary = PublishSummary::default();
    let mut slowest = Duration::ZERO;
    for (batch, chunk) in items.chunks(20).enumerate() {
        if batch == 30 {
            servers[leader].kill();
        }
        let began = Instant::now();
        let published = stream
            .publish_items("content", chunk.to_vec(), &mut summary)
            .await
            .unwrap_or_else(|e| panic!("batch {batch} after the kill: {e}"));
        assert_eq!(published.len(), chunk.len());
        slowest = slowest.max(began.elapsed());
    }
    assert_eq!(summary.published + summary.duplicates, 2000, "{summary:?}");
    // Every acknowledged event is in the stream once: none lost in the failover, and none
    // stored twice by the publisher's retries (same message ids).
    let status = stream.status().await.unwrap();
    assert_eq!(status.content_events, 2000, "{status:?}");
    assert_eq!(status.replicas, 3);
    eprintln!(
        "stream leader n{leader} SIGKILLed after 600 of 2000 events: the slowest batch of 20 took {slowest:?} ({} publishes sent again)",
        summary.retries
    );
    assert!(
        slowest < Duration::from_secs(10),
        "publishing stalled for {slowest:?} after the leader died"
    );
}

/// One API replica (`serve`) over the shared Qdrant server and NATS, with its own working
/// directory (its own interaction log), the tiny model and the development key.
fn replica(setup: &Setup, work: &Path) -> common::server::Server {
    let mut child = scaled(work, &setup.model, &setup.qdrant.url(), &setup.nats.url())
        .env("SIGNALDESK_API__DEVELOPMENT", "true")
        .env("SIGNALDESK_API__LLM", "false")
        .env("SIGNALDESK_API__TAGGERS", r#"["zeroshot"]"#)
        .env(
            "SIGNALDESK_API__TAXONOMY",
            common::root().join("golden-datasets/reuters21578/modapte90/taxonomy.tsv"),
        )
        .env(
            "SIGNALDESK_API__KEYS",
            r#"[{ name = "dev", sha256 = "57c8139db7290a9064aa57837c951138a32df40cca3aca526319f55651368823", scopes = ["admin"] }]"#,
        )
        .env("SIGNALDESK_API__RATE_PER_KEY", "0")
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (url, log) = common::server::listening_url_and_log(&mut child);
    common::server::Server {
        child,
        url,
        config: work.join("none.toml"),
        work: tempfile::tempdir().unwrap(),
        log,
    }
}

async fn listed(client: &reqwest::Client, replica: &str, user: &str) -> Vec<String> {
    let (status, v) = common::server::send(
        client,
        reqwest::Method::POST,
        &format!("{replica}/v1/recommend"),
        Some("dev-key-change-me"),
        Some(json!({"user": user, "k": 10})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_click_sent_to_one_replica_changes_the_next_list_of_another() {
    let Some(setup) = Setup::start("a_click_sent_to_one_replica", 150) else {
        return;
    };
    let out = setup.cmd().arg("ingest").arg(&setup.file).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (dir_a, dir_b, dir_c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = replica(&setup, dir_a.path());
    let b = replica(&setup, dir_b.path());
    let client = reqwest::Client::new();

    // 100 clicks, each on the top of replica B's list, each sent to replica A; the delay until
    // B's next list no longer shows the item.
    let mut delays = Vec::new();
    let mut clicked = Vec::new();
    for _ in 0..100 {
        let top = listed(&client, &b.url, "reader-1").await[0].clone();
        let started = Instant::now();
        let (status, v) = common::server::send(
            &client,
            reqwest::Method::POST,
            &format!("{}/v1/feedback", a.url),
            Some("dev-key-change-me"),
            Some(json!({"type": "event", "user": "reader-1", "item": top, "event": "click"})),
        )
        .await;
        assert_eq!(status, 202, "{v}");
        loop {
            if !listed(&client, &b.url, "reader-1").await.contains(&top) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "replica B still lists {top} 10 s after the click on A"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        delays.push(started.elapsed());
        clicked.push(top);
    }
    delays.sort();
    let (p50, p99) = (delays[49], delays[98]);
    eprintln!(
        "a click on replica A reached replica B's list in p50 {p50:?}, p99 {p99:?}, max {:?}",
        delays[99]
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");

    // An editor's decision on A is in B's review view (B's editors' log follows the stream),
    // and B's decision is in A's.
    let decisions_on = |replica: String| {
        let client = client.clone();
        async move {
            let (status, v) = common::server::send(
                &client,
                reqwest::Method::GET,
                &format!("{replica}/v1/content/item-7"),
                Some("dev-key-change-me"),
                None,
            )
            .await;
            assert_eq!(status, 200, "{v}");
            v["decisions"].as_array().unwrap().len()
        }
    };
    for (on, other, label, want) in [(&a, &b, "corn", 1), (&b, &a, "wheat", 2)] {
        let (status, v) = common::server::send(
            &client,
            reqwest::Method::POST,
            &format!("{}/v1/feedback", on.url),
            Some("dev-key-change-me"),
            Some(json!({"type": "tag", "item": "item-7", "label": label, "verdict": "add"})),
        )
        .await;
        assert_eq!(status, 202, "{v}");
        let started = Instant::now();
        while decisions_on(other.url.clone()).await < want {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the decision on {label} did not reach the other replica"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // A replica started afterwards, with empty logs of its own, serves the same history and
    // the same decisions: nothing a replica holds is lost with it.
    let c = replica(&setup, dir_c.path());
    assert_eq!(decisions_on(c.url.clone()).await, 2);
    let fresh = listed(&client, &c.url, "reader-1").await;
    assert!(
        fresh.iter().all(|id| !clicked.contains(id)),
        "a new replica lists clicked items: {fresh:?}"
    );
    assert_eq!(fresh.len(), 10, "{fresh:?}");
    let status = json_out(&run(setup.cmd().args(["stream", "status", "--json"])));
    assert_eq!(
        (
            status["interactions"].as_u64(),
            status["decisions"].as_u64()
        ),
        (Some(100), Some(2)),
        "{status}"
    );
}
