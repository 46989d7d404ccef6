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

#[test]
fn without_stream_url_the_scale_out_commands_say_what_to_set() {
    let work = tempfile::tempdir().unwrap();
    for args in [
        &["worker"][..],
        &["stream", "status"],
        &["ingest", "--via-stream", "items.jsonl"],
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_while_publishing_loses_nothing_acknowledged_and_publishing_resumes() {
    use signaldesk::config::StreamConfig;
    use signaldesk::content::{ContentItem, Limits};
    use signaldesk::stream::{EventStream, PublishSummary};
    let Some(nats_bin) = nats::available("a_nats_node_killed_while_publishing") else {
        return;
    };
    let mut servers = nats::cluster(&nats_bin, 3);
    let config = StreamConfig {
        url: servers
            .iter()
            .map(|s| s.url())
            .collect::<Vec<_>>()
            .join(","),
        replicas: 3,
        timeout_s: 2,
        ..StreamConfig::default()
    };
    // The cluster elects its JetStream meta leader a moment after the servers are up.
    let started = Instant::now();
    let stream = loop {
        match EventStream::connect(&config).await {
            Ok(stream) => break stream,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("waiting for the cluster: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the cluster never took the streams: {e}"),
        }
    };
    let items: Vec<ContentItem> = (0..2000)
        .map(|i| {
            let v =
                json!({"id": format!("item-{i}"), "title": format!("Story {i}"), "body": "Text."});
            ContentItem::from_json(v.as_object().unwrap().clone(), Limits::default()).unwrap()
        })
        .collect();
    // The content stream's leader: the server whose loss costs an election.
    let leader = {
        let client = async_nats::connect(servers[0].url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut content = js.get_stream("SIGNALDESK_CONTENT").await.unwrap();
        let info = content.info().await.unwrap();
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .unwrap()
    };
    let leader: usize = leader.trim_start_matches('n').parse().unwrap();
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
