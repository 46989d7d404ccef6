//! The embedder honours its model dir and gives the same vector for a text however it is batched.

mod common;

use common::{minilm_dir, write_tiny_bert, TinyBert};
use signaldesk::config::EmbedPrecision;
use signaldesk::embed::{cosine, EmbedError, Embedder, EmbedderOptions, EmbeddingCache};

fn load(dir: &std::path::Path) -> Embedder {
    Embedder::load(dir, EmbedderOptions::default()).unwrap()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn a_vector_does_not_depend_on_its_batch_mates() {
    // fp32, and `auto` (int8 where the CPU has int8 dot products, fp32 where not): the encoder
    // reuses its intermediate buffers from batch to batch, so a smaller batch after a larger one
    // and the larger one again must not see each other's values.
    for precision in [EmbedPrecision::Fp32, EmbedPrecision::Auto] {
        let e = Embedder::load(
            &minilm_dir(),
            EmbedderOptions {
                batch_size: 4,
                precision,
                ..Default::default()
            },
        )
        .unwrap();
        let long =
            "Quarterly earnings beat expectations as the company expanded into new markets. "
                .repeat(12);
        let texts = [
            "short text",
            long.as_str(),
            "a medium length sentence about podcasts and news",
            "x",
        ];
        let together = e.embed(&texts).unwrap();
        for (i, t) in texts.iter().enumerate() {
            let alone = e.embed(&[t]).unwrap().remove(0);
            assert!(
                cosine(&alone, &together[i]) > 0.99999,
                "{precision:?}: text {i} changed with its batch mates"
            );
            assert!((norm(&alone) - 1.0).abs() < 1e-5);
        }
        assert_eq!(
            e.embed(&texts).unwrap(),
            together,
            "{precision:?}: the same batch after smaller ones"
        );
        assert_eq!(e.dimension(), 384);
        assert_eq!(e.model_id(), "all-MiniLM-L6-v2");
        assert_eq!(e.max_seq_length(), 256);
    }
}

#[test]
fn max_seq_length_truncates_like_sentence_transformers() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(
        dir.path(),
        &TinyBert {
            max_seq_length: 8,
            ..Default::default()
        },
    );
    let e = load(dir.path());
    // Common words are one token each: 8 tokens = [CLS] + 6 words + [SEP].
    let full = e
        .embed(&["the cat sat on the mat and then the dog came in"])
        .unwrap();
    let cut = e.embed(&["the cat sat on the mat"]).unwrap();
    let shorter = e.embed(&["the cat sat on the"]).unwrap();
    assert!(cosine(&full[0], &cut[0]) > 0.99999);
    assert!(cosine(&full[0], &shorter[0]) < 0.9999);
    assert_eq!(
        e.token_counts(&["the cat sat on the mat and then"])
            .unwrap(),
        vec![8]
    );
}

#[test]
fn pooling_and_normalisation_follow_the_model_dir() {
    let root = tempfile::tempdir().unwrap();
    let mk = |name: &str, spec: TinyBert| {
        let d = root.path().join(name);
        write_tiny_bert(&d, &spec);
        load(&d)
    };
    let mean = mk("mean", TinyBert::default());
    let raw = mk(
        "raw",
        TinyBert {
            normalize: false,
            ..Default::default()
        },
    );
    let cls = mk(
        "cls",
        TinyBert {
            pooling: "cls",
            ..Default::default()
        },
    );
    let max = mk(
        "max",
        TinyBert {
            pooling: "max",
            normalize: false,
            ..Default::default()
        },
    );
    let text = ["breaking news from the central bank"];
    let (m, r, c, x) = (
        mean.embed(&text).unwrap().remove(0),
        raw.embed(&text).unwrap().remove(0),
        cls.embed(&text).unwrap().remove(0),
        max.embed(&text).unwrap().remove(0),
    );
    assert_eq!(m.len(), 32);
    assert!((norm(&m) - 1.0).abs() < 1e-5);
    assert!(
        (norm(&r) - 1.0).abs() > 1e-3,
        "no Normalize module: raw mean pooling"
    );
    assert!(
        cosine(&m, &r) > 0.99999,
        "same pooling, only the scale differs"
    );
    assert!(cosine(&m, &c) < 0.999, "cls pooling differs from mean");
    // Max pooling is at least the mean in every dimension.
    for (a, b) in x.iter().zip(&r) {
        assert!(a + 1e-5 >= *b);
    }
    assert_ne!(mean.fingerprint(), cls.fingerprint());
}

#[test]
fn a_broken_model_dir_names_the_missing_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBert::default());
    std::fs::remove_file(dir.path().join("1_Pooling/config.json")).unwrap();
    let err = Embedder::load(dir.path(), EmbedderOptions::default()).unwrap_err();
    assert!(matches!(err, EmbedError::MissingModelFile { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("1_Pooling/config.json") && msg.contains("scripts/fetch-models.sh"),
        "{msg}"
    );

    let err = Embedder::load(&dir.path().join("nope"), EmbedderOptions::default()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");

    write_tiny_bert(dir.path(), &TinyBert::default());
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 32}").unwrap();
    let err = Embedder::load(dir.path(), EmbedderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn the_cache_stores_vectors_under_the_model_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    write_tiny_bert(&model, &TinyBert::default());
    let cache_path = dir.path().join("cache/embeddings.redb");
    let options = EmbedderOptions {
        cache_path: Some(cache_path.clone()),
        ..Default::default()
    };
    let e = Embedder::load(&model, options.clone()).unwrap();
    let texts = ["first text", "second text"];
    let first = e.embed(&texts).unwrap();
    let fingerprint = e.fingerprint().to_string();
    drop(e);

    // Poison the cached vector: a second embedder must serve it from the cache, not recompute.
    let cache = EmbeddingCache::open(&cache_path).unwrap();
    let key = EmbeddingCache::key(&fingerprint, "first text");
    assert_eq!(
        cache.get_many(&[key]).unwrap()[0].as_deref(),
        Some(first[0].as_slice())
    );
    cache.put_many(&[(key, &[9.0; 32][..])]).unwrap();
    drop(cache);
    let e = Embedder::load(&model, options).unwrap();
    let again = e.embed(&texts).unwrap();
    assert_eq!(again[0], vec![9.0; 32]);
    assert_eq!(again[1], first[1]);
    assert_eq!(e.embed_uncached(&texts).unwrap()[0], first[0]);
}

/// The packed CPU forward pass must agree with candle-transformers' BERT, the reference.
fn assert_backends_agree(dir: &std::path::Path, texts: &[&str]) {
    let fast = Embedder::load(dir, EmbedderOptions::default()).unwrap();
    let reference = Embedder::load(
        dir,
        EmbedderOptions {
            reference_backend: true,
            ..Default::default()
        },
    )
    .unwrap();
    let (a, b) = (fast.embed(texts).unwrap(), reference.embed(texts).unwrap());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.len(), y.len());
        let c = cosine(x, y);
        assert!(c > 0.99999, "{}: text {i} cosine {c}", dir.display());
        let max_diff = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff < 1e-3 * norm(y).max(1.0),
            "text {i} differs by {max_diff}"
        );
    }
}

#[test]
fn the_packed_cpu_forward_matches_candle_transformers() {
    let long =
        "Shares of the streaming company rose after it reported subscriber growth. ".repeat(30);
    let texts = [
        "x",
        "Central bank holds rates steady",
        long.as_str(),
        "Episode 12: a conversation about climate, cities and the future of public transport.",
        "naïve café — 東京 🚀 3.5% U.S.-Japan",
    ];
    assert_backends_agree(&minilm_dir(), &texts);

    let root = tempfile::tempdir().unwrap();
    for (name, spec, act) in [
        (
            "cls",
            TinyBert {
                pooling: "cls",
                ..Default::default()
            },
            "gelu",
        ),
        (
            "max",
            TinyBert {
                pooling: "max",
                normalize: false,
                ..Default::default()
            },
            "gelu",
        ),
        (
            "relu",
            TinyBert {
                layers: 3,
                ..Default::default()
            },
            "relu",
        ),
        ("tanh", TinyBert::default(), "geluapproximate"),
    ] {
        let dir = root.path().join(name);
        write_tiny_bert(&dir, &spec);
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        assert!(config.contains("\"hidden_act\":\"gelu\""), "{config}");
        std::fs::write(
            dir.join("config.json"),
            config.replace(
                "\"hidden_act\":\"gelu\"",
                &format!("\"hidden_act\":\"{act}\""),
            ),
        )
        .unwrap();
        assert_backends_agree(&dir, &texts);
    }
}

/// A huge record is read only as far as the model reads it: the vector of a 20 MB text equals
/// that of its first few kilobytes, token for token, whatever the words at the cut.
#[test]
fn a_huge_text_embeds_as_its_truncated_prefix() {
    let e = load(&minilm_dir());
    let words = [
        "interest",
        "rates",
        "unbelievably",
        "antidisestablishmentarianism",
        "café",
        "naïve",
        "x",
        "2026",
        "co-operation",
        "—",
        "Zürich",
    ];
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 20 << 20 {
        text.push_str(words[i % words.len()]);
        text.push(if i % 7 == 0 { '\n' } else { ' ' });
        i += 1;
    }
    let head: String = text.chars().take(4000).collect();
    let whole = e.embed_uncached(&[text.as_str()]).unwrap();
    let prefix = e.embed_uncached(&[head.as_str()]).unwrap();
    assert_eq!(whole, prefix);
    assert_eq!(
        e.token_counts(&[text.as_str()]).unwrap(),
        vec![e.max_seq_length()]
    );
}
