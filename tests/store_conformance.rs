//! One behaviour for every `VectorStore` backend: the same generic suite runs against `EdgeStore`
//! and against a real Qdrant server (`QdrantStore`) started on loopback by the test harness.

mod common;

use std::time::Duration;

use common::qdrant::{self, QdrantServer, ServerOptions};
use serde_json::{json, Map, Value};
use signaldesk::config::Quantization;
use signaldesk::embed::bm25::Bm25Encoder;
use signaldesk::store::{
    ChunkPoint, ChunkQuery, CollectionSpec, Condition, EdgeStore, Filter, QdrantStore,
    QueryVectors, StoreError, VectorStore,
};

const DIM: usize = 4;

fn spec(name: &str) -> CollectionSpec {
    CollectionSpec {
        name: name.into(),
        model_id: "test-model".into(),
        model_fingerprint: "fp-1".into(),
        dimension: DIM,
        bm25_avg_len: 6.0,
        bm25_chunks: 0,
        bm25_total_len: 0.0,
    }
}

fn point(
    bm25: &Bm25Encoder,
    id: &str,
    index: usize,
    dense: [f32; DIM],
    text: &str,
    source: &str,
) -> ChunkPoint {
    let mut payload = Map::new();
    payload.insert("source".into(), Value::from(source));
    payload.insert("text".into(), Value::from(text));
    ChunkPoint {
        content_id: id.into(),
        chunk_index: index,
        dense: dense.to_vec(),
        bm25: bm25.document(text),
        payload,
    }
}

fn corpus(bm25: &Bm25Encoder) -> Vec<ChunkPoint> {
    vec![
        point(
            bm25,
            "a",
            0,
            [1.0, 0.0, 0.0, 0.0],
            "central bank raises interest rates",
            "reuters",
        ),
        point(
            bm25,
            "a",
            1,
            [0.9, 0.1, 0.0, 0.0],
            "markets react to the rate decision",
            "reuters",
        ),
        point(
            bm25,
            "b",
            0,
            [0.0, 1.0, 0.0, 0.0],
            "football club wins the league",
            "bbc",
        ),
        point(
            bm25,
            "c",
            0,
            [0.0, 0.0, 1.0, 0.0],
            "podcast episode about gardening tomatoes",
            "podcast",
        ),
        point(
            bm25,
            "d",
            0,
            [0.7, 0.7, 0.0, 0.0],
            "bank sponsors football stadium",
            "bbc",
        ),
    ]
}

async fn conformance<S: VectorStore>(store: &S) {
    let bm25 = Bm25Encoder::new(6.0);
    let name = "conformance";
    store.drop_collection(name).await.unwrap();
    assert!(store.collection_spec(name).await.unwrap().is_none());

    // Creating, reopening, and refusing another model's collection.
    assert_eq!(
        store.open_collection(&spec(name)).await.unwrap(),
        spec(name)
    );
    assert_eq!(
        store.open_collection(&spec(name)).await.unwrap(),
        spec(name)
    );
    let mut other = spec(name);
    other.model_fingerprint = "fp-2".into();
    other.dimension = 8;
    match store.open_collection(&other).await {
        Err(StoreError::ModelMismatch {
            stored_dim: 4,
            dim: 8,
            ..
        }) => {}
        r => panic!("expected a model mismatch, got {r:?}"),
    }
    assert_eq!(
        store.count(name, &Filter::default()).await.unwrap(),
        0,
        "the metadata point is not counted"
    );
    // The spec can be rewritten (ingest records BM25 statistics this way) and reads back whole.
    let mut with_stats = spec(name);
    with_stats.bm25_chunks = 3;
    with_stats.bm25_total_len = 21.0;
    with_stats.bm25_avg_len = 7.0;
    store.write_spec(&with_stats).await.unwrap();
    assert_eq!(
        store.collection_spec(name).await.unwrap(),
        Some(with_stats.clone())
    );
    assert_eq!(
        store.open_collection(&spec(name)).await.unwrap(),
        with_stats,
        "opening returns the stored statistics"
    );
    store.write_spec(&spec(name)).await.unwrap();

    // Upserts are idempotent: the same chunks twice are still five points.
    store.upsert(name, corpus(&bm25)).await.unwrap();
    store.upsert(name, corpus(&bm25)).await.unwrap();
    assert_eq!(store.count(name, &Filter::default()).await.unwrap(), 5);
    assert_eq!(store.count(name, &Filter::content("a")).await.unwrap(), 2);
    let by_source = Filter::parse_pairs(&["source=bbc".into()]).unwrap();
    assert_eq!(store.count(name, &by_source).await.unwrap(), 2);

    // Signals: fields merged into every chunk of one item, the rest of its payload kept, other
    // items untouched, and the indexed `tags` field filterable at once.
    let mut fields = Map::new();
    fields.insert("tags".into(), serde_json::json!(["economy", "rates"]));
    fields.insert("tags_lineage".into(), serde_json::json!({"tagger": "knn"}));
    store.set_item_fields(name, "a", fields).await.unwrap();
    let a = store
        .get(name, &[("a".into(), 0), ("a".into(), 1)])
        .await
        .unwrap();
    assert_eq!(a.len(), 2);
    for chunk in &a {
        assert_eq!(
            chunk.payload["tags"],
            serde_json::json!(["economy", "rates"])
        );
        assert_eq!(chunk.payload["tags_lineage"]["tagger"], "knn");
        assert_eq!(chunk.payload["source"], "reuters", "other keys kept");
    }
    let tagged = Filter::parse_pairs(&["tags=rates".into()]).unwrap();
    assert_eq!(store.count(name, &tagged).await.unwrap(), 2);
    let mut replaced = Map::new();
    replaced.insert("tags".into(), serde_json::json!(["economy"]));
    store.set_item_fields(name, "a", replaced).await.unwrap();
    assert_eq!(
        store.count(name, &tagged).await.unwrap(),
        0,
        "a key is replaced whole"
    );
    assert_eq!(
        store
            .count(
                name,
                &Filter::parse_pairs(&["tags=economy".into()]).unwrap()
            )
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        store
            .set_item_fields("no-such-collection", "a", Map::new())
            .await,
        Err(StoreError::NoCollection(_))
    ));

    // Wrong dimension is refused with both numbers.
    let mut bad = corpus(&bm25).remove(0);
    bad.dense = vec![1.0; 3];
    match store.upsert(name, vec![bad]).await {
        Err(StoreError::Dimension {
            expected: 4,
            got: 3,
            ..
        }) => {}
        r => panic!("expected a dimension error, got {r:?}"),
    }

    // Get by (content id, chunk index), with the payload and the ids filled in.
    let got = store
        .get(name, &[("a".into(), 1), ("zzz".into(), 0), ("c".into(), 0)])
        .await
        .unwrap();
    let keys: Vec<(String, usize)> = got
        .iter()
        .map(|c| (c.content_id.clone(), c.chunk_index))
        .collect();
    assert_eq!(keys, vec![("a".to_string(), 1), ("c".to_string(), 0)]);
    assert_eq!(got[0].payload["text"], "markets react to the rate decision");

    // Dense search, exact, with and without a filter.
    let q = |vectors, filter| ChunkQuery {
        vectors,
        filter,
        limit: 3,
        exact: true,
        hnsw_ef: None,
        oversampling: None,
        payload_fields: None,
    };
    let hits = store
        .query(
            name,
            &q(
                QueryVectors::Dense(vec![1.0, 0.0, 0.0, 0.0]),
                Filter::default(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(hits[0].chunk.content_id, "a");
    assert_eq!(hits[0].chunk.chunk_index, 0);
    assert!(
        (hits[0].score - 1.0).abs() < 1e-5,
        "cosine of identical directions"
    );
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let hits = store
        .query(
            name,
            &q(
                QueryVectors::Dense(vec![1.0, 0.0, 0.0, 0.0]),
                by_source.clone(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        hits.iter()
            .map(|h| h.chunk.content_id.as_str())
            .collect::<Vec<_>>(),
        vec!["d", "b"]
    );

    // BM25: stemmed terms match ("banks" ~ "bank"); unrelated documents do not score.
    let hits = store
        .query(
            name,
            &q(QueryVectors::Sparse(bm25.query("banks")), Filter::default()),
        )
        .await
        .unwrap();
    let ids: Vec<&str> = hits.iter().map(|h| h.chunk.content_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"a") && ids.contains(&"d"));

    // Hybrid: a document strong in both lists wins.
    let hybrid = QueryVectors::Hybrid {
        dense: vec![0.7, 0.7, 0.0, 0.0],
        sparse: bm25.query("football bank"),
        rrf_k: 60,
        dense_weight: 1.0,
        candidates: 5,
    };
    let hits = store
        .query(name, &q(hybrid, Filter::default()))
        .await
        .unwrap();
    assert_eq!(hits[0].chunk.content_id, "d");

    // Scroll visits every point once, across pages.
    let mut seen = Vec::new();
    let mut offset = None;
    loop {
        let (page, next) = store
            .scroll(name, &Filter::default(), offset, 2)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.into_iter().map(|c| (c.content_id, c.chunk_index)));
        match next {
            Some(n) => offset = Some(n),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("a".into(), 0),
            ("a".into(), 1),
            ("b".into(), 0),
            ("c".into(), 0),
            ("d".into(), 0)
        ]
    );

    // Scroll with vectors returns each chunk's dense vector (unit length: cosine collections
    // store normalised vectors).
    let (page, _) = store
        .scroll_vectors(
            name,
            &Filter::parse_pairs(&["source=bbc".into()]).unwrap(),
            None,
            10,
        )
        .await
        .unwrap();
    let mut got: Vec<(String, Vec<f32>)> =
        page.into_iter().map(|(c, v)| (c.content_id, v)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 2, "{got:?}");
    let expected = [
        ("b", [0.0, 1.0, 0.0, 0.0]),
        ("d", [0.70710677, 0.70710677, 0.0, 0.0]),
    ];
    for ((id, v), (want_id, want)) in got.iter().zip(expected) {
        assert_eq!(id, want_id);
        assert_eq!(v.len(), DIM, "{id}: {v:?}");
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{id}: {v:?} vs {want:?}");
        }
    }

    // Aliases: the alias reads and writes the collection it points at; a real collection's
    // name cannot be taken by an alias.
    let alias = "conformance-alias";
    store.set_alias(alias, name).await.unwrap();
    assert_eq!(store.resolve(alias).await.unwrap(), name);
    assert_eq!(store.resolve(name).await.unwrap(), name);
    // Listing: the real collection, never the alias, and the alias beside its target.
    let listed = store.list_collections().await.unwrap();
    assert!(listed.contains(&name.to_string()), "{listed:?}");
    assert!(!listed.contains(&alias.to_string()), "{listed:?}");
    assert!(store
        .list_aliases()
        .await
        .unwrap()
        .contains(&(alias.to_string(), name.to_string())));
    assert_eq!(store.count(alias, &Filter::default()).await.unwrap(), 5);
    assert_eq!(
        store
            .collection_spec(alias)
            .await
            .unwrap()
            .map(|s| s.dimension),
        Some(DIM)
    );
    let hits = store
        .query(
            alias,
            &q(
                QueryVectors::Dense(vec![0.0, 1.0, 0.0, 0.0]),
                Filter::default(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(hits[0].chunk.content_id, "b");
    assert!(store.set_alias(name, alias).await.is_err());
    assert!(matches!(
        store.set_alias(alias, "no-such-collection").await,
        Err(StoreError::NoCollection(_))
    ));
    assert_eq!(
        store.resolve(alias).await.unwrap(),
        name,
        "a refused move changes nothing"
    );

    // Deleting from a chunk index keeps the earlier chunks.
    store.delete_content(name, "a", 1).await.unwrap();
    assert_eq!(store.count(name, &Filter::content("a")).await.unwrap(), 1);
    store.delete_content(name, "a", 0).await.unwrap();
    assert_eq!(store.count(name, &Filter::content("a")).await.unwrap(), 0);
    assert_eq!(store.count(name, &Filter::default()).await.unwrap(), 3);
    let range = Filter {
        must: vec![Condition::Range {
            field: "chunk_index".into(),
            gte: Some(json!(0)),
            lt: Some(json!(1)),
        }],
    };
    assert_eq!(store.count(name, &range).await.unwrap(), 3);

    // Datetime ranges, where the backends' code differs most: RFC 3339 and date-only bounds
    // mean the same on both (date-only is midnight UTC, as ingest stores it).
    let dated = |id: &str, when: &str| {
        let mut p = point(&bm25, id, 0, [0.5, 0.5, 0.5, 0.5], "dated story", "wire");
        p.payload.insert("published_at".into(), json!(when));
        p
    };
    store
        .upsert(
            name,
            vec![
                dated("d1", "2025-02-28T23:59:59Z"),
                dated("d2", "2025-03-01T00:00:00Z"),
                dated("d3", "2025-03-15T12:00:00Z"),
            ],
        )
        .await
        .unwrap();
    let between = |gte: Option<&str>, lt: Option<&str>| Filter {
        must: vec![Condition::Range {
            field: "published_at".into(),
            gte: gte.map(|v| json!(v)),
            lt: lt.map(|v| json!(v)),
        }],
    };
    for (gte, lt, want) in [
        (Some("2025-03-01"), None, 2),
        (Some("2025-03-01T00:00:00Z"), None, 2),
        (None, Some("2025-03-01"), 1),
        (Some("2025-03-01"), Some("2025-03-02"), 1),
        (Some("2025-03-01T01:00:00+01:00"), Some("2025-04-01"), 2),
    ] {
        assert_eq!(
            store.count(name, &between(gte, lt)).await.unwrap(),
            want,
            "published_at in [{gte:?}, {lt:?})"
        );
    }
    match store.count(name, &between(Some("March 1st"), None)).await {
        Err(StoreError::Filter(m)) => assert!(m.contains("published_at"), "{m}"),
        other => panic!("a bad date must be a filter error, got {other:?}"),
    }
    for id in ["d1", "d2", "d3"] {
        store.delete_content(name, id, 0).await.unwrap();
    }

    store.drop_collection(name).await.unwrap();
    assert!(store.collection_spec(name).await.unwrap().is_none());
    assert!(matches!(
        store.count(name, &Filter::default()).await,
        Err(StoreError::NoCollection(_))
    ));
    assert_eq!(
        store.resolve(alias).await.unwrap(),
        alias,
        "dropping a collection drops its aliases"
    );
}

/// The server half, against a real Qdrant v1.18.3 server on loopback (the test fixture; see
/// tests/common/qdrant.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_server_conforms() {
    let Some(bin) = qdrant::available("qdrant_server_conforms") else {
        return;
    };
    let server = QdrantServer::start(&bin, ServerOptions::default());
    conformance(&QdrantStore::connect(&server.url(), None, Duration::from_secs(30)).unwrap()).await;
    // The same with int8 quantization of new collections.
    conformance(
        &QdrantStore::connect(&server.url(), None, Duration::from_secs(30))
            .unwrap()
            .with_quantization(Quantization::Int8),
    )
    .await;
}

/// With an API key: the suite passes with the right key, and a wrong or missing key, a REST
/// port, and a dead server each get an error that says what is wrong and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_server_with_an_api_key_conforms_and_bad_setups_are_explained() {
    let Some(bin) = qdrant::available("qdrant_server_with_an_api_key_conforms") else {
        return;
    };
    let key = "test-key-7f3a";
    let mut server = QdrantServer::start(
        &bin,
        ServerOptions {
            api_key: Some(key.into()),
            ..Default::default()
        },
    );
    let connect = |url: &str, key: Option<&str>| {
        QdrantStore::connect(url, key.map(str::to_string), Duration::from_secs(10)).unwrap()
    };
    conformance(&connect(&server.url(), Some(key))).await;

    let failure = |r: Result<Option<signaldesk::store::CollectionSpec>, StoreError>| {
        let e = r.expect_err("refused").to_string();
        assert!(!e.contains("MetadataMap"), "raw tonic text: {e}");
        e
    };
    let wrong = failure(
        connect(&server.url(), Some("not-the-key"))
            .collection_spec("x")
            .await,
    );
    assert!(
        wrong.contains("API key in QDRANT_API_KEY is not the server's"),
        "{wrong}"
    );
    let missing = failure(connect(&server.url(), None).collection_spec("x").await);
    assert!(missing.contains("set QDRANT_API_KEY"), "{missing}");
    let rest = failure(
        connect(&server.rest_url(), Some(key))
            .collection_spec("x")
            .await,
    );
    assert!(
        rest.contains("REST port") && rest.contains("6334"),
        "{rest}"
    );

    server.kill();
    let started = std::time::Instant::now();
    let dead = failure(connect(&server.url(), Some(key)).collection_spec("x").await);
    assert!(
        dead.contains("cannot reach Qdrant") && dead.contains("connection refused"),
        "{dead}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A SIGKILLed server keeps every acknowledged write (`wait: true`), like Edge across reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_server_keeps_acknowledged_writes_across_a_sigkill() {
    let Some(bin) = qdrant::available("qdrant_server_keeps_acknowledged_writes") else {
        return;
    };
    let mut server = QdrantServer::start(&bin, ServerOptions::default());
    let bm25 = Bm25Encoder::new(6.0);
    {
        let store = QdrantStore::connect(&server.url(), None, Duration::from_secs(10)).unwrap();
        store.open_collection(&spec("persist")).await.unwrap();
        store.upsert("persist", corpus(&bm25)).await.unwrap();
    }
    server.kill();
    server.restart();
    let store = QdrantStore::connect(&server.url(), None, Duration::from_secs(10)).unwrap();
    assert_eq!(
        store.collection_spec("persist").await.unwrap(),
        Some(spec("persist"))
    );
    assert_eq!(store.count("persist", &Filter::default()).await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(&EdgeStore::new(dir.path()).unwrap()).await;
}

/// `store.quantization = "int8"` changes how vectors are kept, never what the store answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_store_with_int8_quantization_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(
        &EdgeStore::new(dir.path())
            .unwrap()
            .with_quantization(Quantization::Int8),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_store_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let bm25 = Bm25Encoder::new(6.0);
    {
        let store = EdgeStore::new(dir.path()).unwrap();
        store.open_collection(&spec("persist")).await.unwrap();
        store.upsert("persist", corpus(&bm25)).await.unwrap();
    }
    let store = EdgeStore::new(dir.path()).unwrap();
    assert_eq!(
        store.collection_spec("persist").await.unwrap(),
        Some(spec("persist"))
    );
    assert_eq!(store.count("persist", &Filter::default()).await.unwrap(), 5);
    let mut other = spec("persist");
    other.model_fingerprint = "fp-other".into();
    assert!(matches!(
        store.open_collection(&other).await,
        Err(StoreError::ModelMismatch { .. })
    ));
}

#[test]
fn a_corrupt_alias_table_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("aliases.json"), "{not json").unwrap();
    let e = EdgeStore::new(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("aliases.json") && e.contains("corrupt"), "{e}");
}
