//! A three-peer Qdrant cluster on loopback (the v1.18.3 test fixture): a collection created by
//! `signaldesk ingest` with 3 shards × 2 replicas keeps answering, and keeps taking writes with
//! a write consistency of 1, while one peer is dead; the peer catches up when it comes back.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::qdrant::{self, QdrantServer};
use common::{run, signaldesk, stderr, write_tiny_bert, TinyBert};
use serde_json::{json, Value};
use signaldesk::store::{Filter, QdrantStore, VectorStore};

const ITEMS: usize = 2000;

/// Items with varied words and lengths, so that BM25 scores rarely tie (a tie at the candidate
/// cut-off may be broken differently by two replicas of a shard).
fn write_articles(path: &Path, ids: std::ops::Range<usize>) {
    const WORDS: [&str; 24] = [
        "markets",
        "weather",
        "football",
        "elections",
        "gardening",
        "rates",
        "storm",
        "league",
        "votes",
        "tomatoes",
        "bank",
        "rain",
        "goal",
        "party",
        "soil",
        "inflation",
        "wind",
        "coach",
        "debate",
        "harvest",
        "bonds",
        "snow",
        "stadium",
        "poll",
    ];
    let rows: String = ids
        .map(|id| {
            let mut x = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = || {
                x ^= x >> 29;
                x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                (x >> 32) as usize
            };
            let words: Vec<&str> = (0..(6 + next() % 20))
                .map(|_| WORDS[next() % WORDS.len()])
                .collect();
            json!({
                "id": format!("item-{id}"),
                "title": format!("Story {id}"),
                "body": words.join(" "),
            })
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, rows).unwrap();
}

fn ok_json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("not JSON: {}", stderr(o)))
}

/// Points held by each peer's local shards of `collection`, by peer, from its own REST API.
fn local_points(peers: &[QdrantServer], collection: &str) -> Vec<Option<u64>> {
    peers
        .iter()
        .map(|p| {
            let (code, body) = p.get(&format!("/collections/{collection}/cluster"))?;
            (code == 200).then_some(())?;
            let v: Value = serde_json::from_str(&body).ok()?;
            Some(
                v["result"]["local_shards"]
                    .as_array()?
                    .iter()
                    .filter(|s| s["state"] == "Active")
                    .map(|s| s["points_count"].as_u64().unwrap_or(0))
                    .sum(),
            )
        })
        .collect()
}

#[test]
fn a_sharded_replicated_collection_survives_a_dead_peer_and_the_peer_catches_up() {
    let Some(bin) = qdrant::available("a_sharded_replicated_collection_survives_a_dead_peer")
    else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("tiny-model");
    write_tiny_bert(&model, &TinyBert::default());
    let mut peers = qdrant::cluster(&bin, 3);
    let url = peers[0].url();
    let cmd = |wcf: &str| -> Command {
        let mut cmd = signaldesk(work.path());
        cmd.env("SIGNALDESK_EMBED__MODEL", &model)
            .env("SIGNALDESK_STORE__BACKEND", "qdrant")
            .env("SIGNALDESK_STORE__URL", &url)
            .env("SIGNALDESK_STORE__TIMEOUT_S", "20")
            .env("SIGNALDESK_STORE__SHARDS", "3")
            .env("SIGNALDESK_STORE__REPLICATION_FACTOR", "2")
            .env("SIGNALDESK_STORE__WRITE_CONSISTENCY_FACTOR", wcf)
            .env_remove("QDRANT_API_KEY");
        cmd
    };
    let first = work.path().join("first.jsonl");
    write_articles(&first, 0..ITEMS);
    let summary = ok_json(&run(cmd("1").args(["ingest", "--json"]).arg(&first)));
    assert_eq!(summary["new"], ITEMS as u64);
    let chunks = summary["chunks"].as_u64().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = QdrantStore::connect(&url, None, Duration::from_secs(20)).unwrap();
    let physical = rt.block_on(store.resolve("content")).unwrap();
    // The layout signaldesk asked for: 3 shards, each on 2 peers (+1 metadata point per copy).
    let (_, body) = peers[0].get(&format!("/collections/{physical}")).unwrap();
    let info: Value = serde_json::from_str(&body).unwrap();
    let params = &info["result"]["config"]["params"];
    assert_eq!(
        (
            params["shard_number"].as_u64(),
            params["replication_factor"].as_u64()
        ),
        (Some(3), Some(2)),
        "{params}"
    );
    let held: u64 = local_points(&peers, &physical)
        .iter()
        .map(|c| c.unwrap())
        .sum();
    assert_eq!(held, 2 * (chunks + 1), "every point on exactly two peers");

    let queries = [
        "markets story",
        "football results",
        "gardening tips",
        "weather forecast",
        "elections",
    ];
    let search = |q: &str| -> Vec<String> {
        ok_json(&run(
            cmd("1").args(["search", "--json", "--mode", "hybrid", "-k", "10", q])
        ))
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
    };
    let before: Vec<Vec<String>> = queries.iter().map(|q| search(q)).collect();

    peers[2].kill();
    // Reads: the same answers from the surviving replicas.
    let after: Vec<Vec<String>> = queries.iter().map(|q| search(q)).collect();
    assert_eq!(after, before);
    assert_eq!(
        rt.block_on(store.count("content", &Filter::default()))
            .unwrap() as u64,
        chunks
    );

    // Writes with a consistency of 1 succeed on the surviving copies.
    let more = work.path().join("more.jsonl");
    write_articles(&more, ITEMS..ITEMS + 100);
    let added = ok_json(&run(cmd("1").args(["ingest", "--json"]).arg(&more)));
    assert_eq!(added["new"], 100);
    let total = chunks + added["chunks"].as_u64().unwrap();
    // With a consistency of 2 a write needs both copies: it either lands on both (Qdrant may
    // already have marked the dead copy and moved on) or fails with one clear error.
    let strict = work.path().join("strict.jsonl");
    write_articles(&strict, ITEMS + 100..ITEMS + 110);
    let strict_out = run(cmd("2").args(["ingest", "--json"]).arg(&strict));
    eprintln!(
        "write consistency 2 with a peer down: {}",
        if strict_out.status.success() {
            "acknowledged".to_string()
        } else {
            stderr(&strict_out)
        }
    );
    let strict_chunks = if strict_out.status.success() {
        ok_json(&strict_out)["chunks"].as_u64().unwrap()
    } else {
        let e = stderr(&strict_out);
        assert_eq!(strict_out.status.code(), Some(2), "{e}");
        assert!(
            e.starts_with("error: ") && e.contains("Qdrant at") && !e.contains("MetadataMap"),
            "{e}"
        );
        0
    };
    let total = total + strict_chunks;

    // The peer comes back and catches up: each point on two peers again.
    peers[2].restart();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts = local_points(&peers, &physical);
        let held: u64 = counts.iter().map(|c| c.unwrap_or(0)).sum();
        if counts.iter().all(Option::is_some) && held == 2 * (total + 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted peer did not catch up: {counts:?}, want {} in all",
            2 * (total + 1)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        rt.block_on(store.count("content", &Filter::default()))
            .unwrap() as u64,
        total
    );
    let after_restart: Vec<Vec<String>> = queries.iter().map(|q| search(q)).collect();
    assert_eq!(after_restart.len(), before.len());
}
