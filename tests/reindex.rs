//! `signaldesk reindex`: a collection moves to a model of another dimension, losing nothing.

mod common;

use std::path::Path;

use common::{run, signaldesk, stderr, write_tiny_bert, TinyBert};
use serde_json::{json, Value};
use signaldesk::store::{ChunkPoint, EdgeStore, Filter, Sparse, VectorStore};

fn cmd(work: &Path, model: &Path) -> std::process::Command {
    let mut c = signaldesk(work);
    c.env("SIGNALDESK_EMBED__MODEL", model)
        .env("SIGNALDESK_CHUNK__MAX_TOKENS", "24")
        .env("SIGNALDESK_CHUNK__OVERLAP_TOKENS", "4");
    c
}

fn ok_json(o: std::process::Output) -> Value {
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("no JSON: {}", stderr(&o)))
}

/// Every stored chunk's item fields and span, keyed by (content id, chunk index).
async fn chunks(store: &EdgeStore) -> Vec<(String, usize, Value)> {
    let mut out = Vec::new();
    let mut offset = None;
    loop {
        let (page, next) = store
            .scroll("content", &Filter::default(), offset, 100)
            .await
            .unwrap();
        for c in page {
            let p = &c.payload;
            let keep = json!({
                "text": p["text"], "start": p["start"], "end": p["end"], "title": p["title"],
                "source": p.get("source"), "content_type": p["content_type"],
                "published_at": p.get("published_at"), "metadata": p.get("metadata"),
                "chunk_count": p["chunk_count"],
            });
            out.push((c.content_id, c.chunk_index, keep));
        }
        match next {
            Some(n) => offset = Some(n),
            None => break,
        }
    }
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

/// Two tiny models in `work`: A (32 dims) and B (48 dims, shorter sequences).
fn two_models(work: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (model_a, model_b) = (work.join("model-a"), work.join("model-b"));
    write_tiny_bert(&model_a, &TinyBert::default());
    write_tiny_bert(
        &model_b,
        &TinyBert {
            hidden: 48,
            max_seq_length: 40,
            seed: 7,
            ..TinyBert::default()
        },
    );
    (model_a, model_b)
}

#[test]
fn reindex_moves_a_collection_to_a_model_of_another_dimension_and_back_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (model_a, model_b) = two_models(work);
    let mut rows: Vec<Value> = (0..12)
        .map(|i| {
            let body: String = (0..(i % 4) * 6 + 1)
                .map(|s| format!("Paragraph {s} of item {i}: café prices, rain in Zürich and a 3–1 win. "))
                .collect();
            json!({"id": format!("item-{i}"), "title": format!("Item {i} ✓"), "body": body,
                   "source": if i % 2 == 0 { "wire" } else { "pod" },
                   "content_type": if i % 3 == 0 { "episode" } else { "article" },
                   "published_at": "2024-03-0{1}T10:00:00Z".replace("{1}", &((i % 9) + 1).to_string()),
                   "desk": format!("desk-{}", i % 3)})
        })
        .collect();
    rows.push(json!({"id": "title-only", "title": "Only a headline here"}));
    rows.push(json!({"id": "body-only", "body": "No title.\n\nJust a body with two paragraphs."}));
    let file = work.join("items.jsonl");
    std::fs::write(
        &file,
        rows.iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let ingested = ok_json(run(cmd(work, &model_a)
        .args(["ingest"])
        .arg(&file)
        .arg("--json")));
    assert_eq!(ingested["new"], 14);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let edge = work.join("data/edge");
    let before = rt.block_on(async {
        let store = EdgeStore::new(&edge).unwrap();
        // Enrichment will add item-level payload (tags): reindex must carry it over.
        let first = store
            .get("content", &[("item-1".into(), 0)])
            .await
            .unwrap()
            .remove(0);
        let mut payload = first.payload.clone();
        payload.insert("tags".into(), json!(["markets"]));
        store
            .upsert(
                "content",
                vec![ChunkPoint {
                    content_id: "item-1".into(),
                    chunk_index: 0,
                    dense: vec![0.1; 32],
                    bm25: Sparse::default(),
                    payload,
                }],
            )
            .await
            .unwrap();
        chunks(&store).await
    });

    // A → B: 48 dimensions, shorter chunks.
    let to_b = ok_json(run(cmd(work, &model_a)
        .args(["reindex", "--json", "--model"])
        .arg(&model_b)));
    assert_eq!(to_b["items"], 14, "{to_b}");
    assert_eq!(to_b["dimension"], 48);
    // Ingest created the collection behind the alias "content".
    let a_collection = to_b["from"].as_str().unwrap().to_string();
    assert!(a_collection.starts_with("content-"), "{to_b}");
    let b_collection = to_b["to"].as_str().unwrap().to_string();
    rt.block_on(async {
        let store = EdgeStore::new(&edge).unwrap();
        assert_eq!(store.resolve("content").await.unwrap(), b_collection);
        let spec = store.collection_spec("content").await.unwrap().unwrap();
        assert_eq!(spec.dimension, 48);
        let firsts = Filter::parse_pairs(&["chunk_index=0".into()]).unwrap();
        assert_eq!(store.count("content", &firsts).await.unwrap(), 14);
        let tagged = store.get("content", &[("item-1".into(), 0)]).await.unwrap();
        assert_eq!(tagged[0].payload["tags"], json!(["markets"]));
    });
    assert!(
        !edge.join(&a_collection).exists(),
        "the old collection is dropped after the switch"
    );

    // The old model is now refused, the new one searches.
    let refused = run(cmd(work, &model_a).args(["search", "rain", "--mode", "dense"]));
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("reindex"), "{}", stderr(&refused));
    let hits = ok_json(run(cmd(work, &model_b).args([
        "search",
        "Zürich rain",
        "--json",
        "-k",
        "5",
    ])));
    assert_eq!(hits.as_array().map(Vec::len), Some(5), "{hits}");

    // Items were rebuilt exactly: ingesting the original file with model B changes nothing.
    let again = ok_json(run(cmd(work, &model_b)
        .args(["ingest"])
        .arg(&file)
        .arg("--json")));
    assert_eq!(
        (
            again["unchanged"].as_u64(),
            again["new"].as_u64(),
            again["updated"].as_u64()
        ),
        (Some(14), Some(0), Some(0)),
        "{again}"
    );

    // B → A: the alias moves, B's collection goes, and every chunk equals the original's.
    let to_a = ok_json(run(cmd(work, &model_b)
        .args(["reindex", "--json", "--model"])
        .arg(&model_a)));
    assert_eq!(to_a["from"], b_collection.as_str());
    assert_eq!(to_a["dimension"], 32);
    assert!(!edge.join(&b_collection).exists());
    let after = rt.block_on(async { chunks(&EdgeStore::new(&edge).unwrap()).await });
    assert_eq!(after, before);
}

#[test]
fn a_crash_between_the_alias_switch_and_the_drop_leaves_the_name_on_the_new_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (model_a, model_b) = two_models(work);
    let file = work.join("items.jsonl");
    std::fs::write(
        &file,
        (0..8)
            .map(|i| json!({"id": format!("i{i}"), "title": format!("Story {i}"), "body": "Rain in Zürich."}).to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    ok_json(run(cmd(work, &model_a)
        .arg("ingest")
        .arg(&file)
        .arg("--json")));
    let edge = work.join("data/edge");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let old = rt.block_on(async {
        EdgeStore::new(&edge)
            .unwrap()
            .resolve("content")
            .await
            .unwrap()
    });

    let crashed = run(cmd(work, &model_a)
        .args(["reindex", "--json", "--model"])
        .arg(&model_b)
        .env("SIGNALDESK_TEST_CRASH_AT", "alias-switched"));
    assert!(!crashed.status.success(), "the hook must abort the run");
    assert!(
        stderr(&crashed).contains("aborting at alias-switched"),
        "{}",
        stderr(&crashed)
    );
    rt.block_on(async {
        let store = EdgeStore::new(&edge).unwrap();
        let now = store.resolve("content").await.unwrap();
        assert_ne!(now, old, "the name already points at the new collection");
        assert_eq!(
            store
                .collection_spec("content")
                .await
                .unwrap()
                .unwrap()
                .dimension,
            48
        );
        assert_eq!(store.count("content", &Filter::default()).await.unwrap(), 8);
    });
    // Searching by the name works with the new model, and ingest finds everything in place.
    let hits = ok_json(run(
        cmd(work, &model_b).args(["search", "rain", "--json", "-k", "3"])
    ));
    assert_eq!(hits.as_array().map(Vec::len), Some(3), "{hits}");
    let again = ok_json(run(cmd(work, &model_b)
        .arg("ingest")
        .arg(&file)
        .arg("--json")));
    assert_eq!(again["unchanged"], 8, "{again}");
    // The old collection is left unused, not lost: a later reindex back rebuilds over it.
    assert!(edge.join(&old).exists());
    let back = ok_json(run(cmd(work, &model_b)
        .args(["reindex", "--json", "--model"])
        .arg(&model_a)));
    assert_eq!(back["to"], old.as_str());
    assert_eq!(back["items"], 8);
}
