//! The `signaldesk` binary, run as a user runs it.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use common::{minilm_dir, reference_sample, run, signaldesk, stderr};
use serde_json::Value;
use signaldesk::embed::{cosine, Embedder, EmbedderOptions};
use signaldesk::eval::smoke::read_reference;

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn vector(v: &Value) -> Vec<f32> {
    v["vector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

#[test]
fn embed_matches_sentence_transformers_on_the_scifact_fixture() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out.jsonl");
    // The parity contract is fp32's (int8 has its own bound: `int8_embeddings_...`).
    let o = run(signaldesk(work.path())
        .env("SIGNALDESK_EMBED__CACHE", "false")
        .env("SIGNALDESK_EMBED__PRECISION", "fp32")
        .args(["embed", "--text-field", "text", "--input"])
        .arg(reference_sample())
        .arg("--output")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("read 800, embedded 800, skipped 0"),
        "{}",
        stderr(&o)
    );
    let reference = read_reference(&reference_sample()).unwrap();
    let got = read_jsonl(&out);
    assert_eq!(got.len(), reference.len());
    let mut worst = (1.0f32, String::new());
    for (r, g) in reference.iter().zip(&got) {
        assert_eq!(
            g["id"],
            Value::from(r.id.clone()),
            "output must keep input order"
        );
        let c = cosine(&r.vector, &vector(g));
        if c < worst.0 {
            worst = (c, r.id.clone());
        }
    }
    assert!(worst.0 >= 0.9999, "cosine {} for {}", worst.0, worst.1);
}

/// Deterministic prose: sentences of varied words, paragraphs every few sentences.
fn long_text(words: usize) -> String {
    const VOCAB: &[&str] = &[
        "market",
        "election",
        "council",
        "podcast",
        "episode",
        "interview",
        "budget",
        "climate",
        "football",
        "vaccine",
        "research",
        "minister",
        "festival",
        "inflation",
        "harbour",
        "tariff",
        "the",
        "a",
        "of",
        "and",
        "in",
        "reported",
        "said",
        "announced",
        "yesterday",
        "2026",
        "Zürich",
        "naïve",
        "co-operation",
        "U.S.",
        "e-mail",
        "—",
        "3.5%",
    ];
    let mut s = String::new();
    let mut seed = 42u64;
    for i in 0..words {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let w = VOCAB[(seed >> 33) as usize % VOCAB.len()];
        s.push_str(w);
        if i % 17 == 16 {
            s.push_str(". ");
            if (seed >> 20).is_multiple_of(5) {
                s.push_str("\n\n");
            }
        } else {
            s.push(' ');
        }
    }
    s
}

#[test]
fn a_20000_word_text_is_chunked_within_the_limit_and_fully_covered() {
    let work = tempfile::tempdir().unwrap();
    let text = long_text(20_000);
    assert_eq!(text.split_whitespace().count(), 20_000);
    let input = work.path().join("long.jsonl");
    write_lines(
        &input,
        &[serde_json::json!({"id": "long", "text": text}).to_string()],
    );
    let out = work.path().join("out.jsonl");
    let o = run(signaldesk(work.path())
        .args(["embed", "--chunk", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let chunks = read_jsonl(&out);
    assert!(chunks.len() > 50, "{} chunks", chunks.len());

    let embedder = Embedder::load(&minilm_dir(), EmbedderOptions::default()).unwrap();
    let mut covered_to = 0usize;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["id"], "long");
        assert_eq!(c["chunk"], i);
        let (start, end) = (
            c["start"].as_u64().unwrap() as usize,
            c["end"].as_u64().unwrap() as usize,
        );
        assert!(
            start <= covered_to,
            "gap before chunk {i}: {start} > {covered_to}"
        );
        assert!(end > covered_to, "chunk {i} adds nothing");
        covered_to = end;
        let tokens = embedder.untruncated_token_count(&text[start..end]).unwrap();
        assert!(
            tokens <= embedder.max_seq_length(),
            "chunk {i} has {tokens} tokens"
        );
        assert_eq!(c["tokens"].as_u64().unwrap() as usize, tokens);
        let v = vector(c);
        assert_eq!(v.len(), 384);
        assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
    }
    assert_eq!(chunks[0]["start"], 0);
    assert_eq!(
        covered_to,
        text.len(),
        "the chunks must reach the end of the text"
    );
}

#[test]
fn an_empty_file_embeds_nothing_and_says_so() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("empty.jsonl");
    std::fs::write(&input, "").unwrap();
    let out = work.path().join("out.jsonl");
    let o = run(signaldesk(work.path())
        .args(["embed", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&out));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("read 0, embedded 0, skipped 0"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("has no records"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
}

#[test]
fn bad_lines_are_reported_with_their_line_number_and_skipped() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("mixed.jsonl");
    write_lines(
        &input,
        &[
            r#"{"id": "a", "text": "first good line"}"#.into(),
            r#"{"id": "b", "text": "unterminated"#.into(),
            String::new(),
            r#"{"id": "c", "body_text": "no text field here"}"#.into(),
            r#"[1, 2, 3]"#.into(),
            r#"{"text": "no id"}"#.into(),
            r#"{"id": 7, "text": "an integer id is fine"}"#.into(),
        ],
    );
    let out = work.path().join("out.jsonl");
    let o = run(signaldesk(work.path())
        .args(["embed", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&out));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("mixed.jsonl:2: skipped: not valid JSON"),
        "{err}"
    );
    assert!(
        err.contains("mixed.jsonl:4: skipped: missing field"),
        "{err}"
    );
    assert!(
        err.contains("mixed.jsonl:5: skipped: expected a JSON object, got an array"),
        "{err}"
    );
    assert!(
        err.contains("mixed.jsonl:6: skipped: missing field \"id\""),
        "{err}"
    );
    assert!(err.contains("read 6, embedded 2, skipped 4"), "{err}");
    let ids: Vec<Value> = read_jsonl(&out).iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, vec![Value::from("a"), Value::from(7)]);

    // Naming a field that a record lacks is reported the same way.
    let o = run(signaldesk(work.path())
        .args(["embed", "--text-field", "headline", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&out));
    assert!(
        stderr(&o).contains("mixed.jsonl:1: skipped: missing field \"headline\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_5_mb_line_is_truncated_like_sentence_transformers_or_refused_over_the_limit() {
    let work = tempfile::tempdir().unwrap();
    let big_text = long_text(700_000);
    assert!(big_text.len() > 5_000_000);
    let input = work.path().join("big.jsonl");
    write_lines(
        &input,
        &[
            serde_json::json!({"id": "big", "text": big_text}).to_string(),
            r#"{"id": "after", "text": "the line after the big one"}"#.into(),
        ],
    );
    let out = work.path().join("out.jsonl");
    let o = run(signaldesk(work.path())
        .env("SIGNALDESK_EMBED__PRECISION", "fp32")
        .args(["embed", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&out));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = read_jsonl(&out);
    assert_eq!(rows.len(), 2);
    // Truncation keeps the first 256 tokens: the vector is that of a prefix of the text.
    let embedder = Embedder::load(&minilm_dir(), EmbedderOptions::default()).unwrap();
    let prefix: String = big_text.chars().take(3000).collect();
    let expected = embedder.embed(&[&prefix]).unwrap().remove(0);
    assert!(cosine(&expected, &vector(&rows[0])) > 0.9999);

    let o = run(signaldesk(work.path())
        .args(["embed", "--max-line-bytes", "1000000", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&out));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("big.jsonl:1: skipped: line is") && err.contains("over the limit of 1000000"),
        "{err}"
    );
    let rows = read_jsonl(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], "after");
}

#[test]
fn a_missing_model_fails_with_the_fetch_command() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in.jsonl");
    write_lines(&input, &[r#"{"id": "a", "text": "x"}"#.into()]);
    let models = work.path().join("models");
    std::fs::create_dir_all(models.join("all-MiniLM-L6-v2")).unwrap();
    std::fs::copy(
        minilm_dir().join("config.json"),
        models.join("all-MiniLM-L6-v2/config.json"),
    )
    .unwrap();
    let o = run(signaldesk(work.path())
        .env("SIGNALDESK_MODELS_DIR", &models)
        .args(["embed", "-i"])
        .arg(&input)
        .args(["-o", "out.jsonl"]));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is missing tokenizer.json") && err.contains("scripts/fetch-models.sh"),
        "{err}"
    );
    assert_eq!(
        err.lines().count(),
        1,
        "one clear error, not a backtrace: {err}"
    );
}

#[test]
fn int8_embeddings_stay_within_cosine_0999_of_fp32_and_masked_cpus_fall_back_to_fp32() {
    let work = tempfile::tempdir().unwrap();
    let json_lines = |o: &std::process::Output| -> Vec<Value> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let int8_here = signaldesk::embed::CpuFeatures::detect().has_int8_dot();
    // 200 texts of the parity set (the bundled SciFact sample), fp32 then int8, text by text.
    let o = run(signaldesk(work.path())
        .args([
            "bench",
            "embed",
            "--json",
            "--limit",
            "200",
            "--precision",
            "fp32,int8",
            "--input",
        ])
        .arg(reference_sample()));
    if int8_here {
        assert!(o.status.success(), "{}", stderr(&o));
        let runs = json_lines(&o);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0]["precision"], "fp32");
        assert_eq!(runs[1]["precision"], "int8");
        assert!(runs[1]["kernel"].as_str().unwrap().contains("u8i8i32"));
        let min = runs[1]["cosine_to_first"]["min"].as_f64().unwrap();
        assert!((0.999..1.0).contains(&min), "int8 min cosine to fp32 {min}");
    } else {
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("embed.precision = int8"),
            "{}",
            stderr(&o)
        );
    }

    // The default is fp32; `auto` takes int8 exactly where the CPU has int8 dot products...
    let sample = reference_sample();
    let o = run(signaldesk(work.path())
        .args(["bench", "embed", "--json", "--limit", "3", "--input"])
        .arg(&sample));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["precision"], "fp32");
    let o = run(signaldesk(work.path())
        .env("SIGNALDESK_EMBED__PRECISION", "auto")
        .args(["bench", "embed", "--json", "--limit", "3", "--input"])
        .arg(&sample));
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = if int8_here { "int8" } else { "fp32" };
    assert_eq!(json_lines(&o)[0]["precision"], expected);
    // ...and falls back to fp32 when they are masked, where an explicit int8 is refused.
    let masked = || {
        let mut c = signaldesk(work.path());
        c.env("SIGNALDESK_EMBED__CPU_FEATURES_OFF", "avx2,avx512vnni")
            .env("SIGNALDESK_EMBED__PRECISION", "auto");
        c
    };
    let o = run(masked()
        .args(["bench", "embed", "--json", "--limit", "3", "--input"])
        .arg(&sample));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["precision"], "fp32");
    assert_eq!(json_lines(&o)[0]["kernel"], Value::Null);
    let o = run(masked()
        .args([
            "bench",
            "embed",
            "--limit",
            "3",
            "--precision",
            "int8",
            "--input",
        ])
        .arg(&sample));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("embed.precision = int8") && err.contains("embed.cpu_features_off"),
        "{err}"
    );
}

#[test]
fn bench_embed_reports_json_throughput() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("docs.jsonl");
    write_lines(
        &input,
        &[
            r#"{"title": "Fed holds rates", "body": "The central bank left rates unchanged."}"#
                .into(),
            r#"{"text": "A podcast episode about gardening."}"#.into(),
            r#"{"title": "Only a title"}"#.into(),
        ],
    );
    let o = run(signaldesk(work.path())
        .args(["bench", "embed", "--json", "--limit", "2", "--input"])
        .arg(&input));
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["docs"], 2);
    let embedder = Embedder::load(&minilm_dir(), EmbedderOptions::default()).unwrap();
    let expected: usize = embedder
        .token_counts(&[
            "Fed holds rates\nThe central bank left rates unchanged.",
            "A podcast episode about gardening.",
        ])
        .unwrap()
        .iter()
        .sum();
    assert_eq!(r["tokens"].as_u64().unwrap() as usize, expected);
    let (tokens, seconds) = (
        r["tokens"].as_f64().unwrap(),
        r["seconds"].as_f64().unwrap(),
    );
    assert!(seconds > 0.0);
    assert!(
        (r["tokens_per_s"].as_f64().unwrap() - tokens / seconds).abs() < 1e-6 * tokens / seconds
    );
}

#[test]
fn config_show_prints_the_effective_config_with_overrides() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("signaldesk.toml"),
        "[embed]\nbatch_size = 8\n",
    )
    .unwrap();
    let o = run(signaldesk(work.path())
        .env("SIGNALDESK_CHUNK__OVERLAP_TOKENS", "5")
        .args(["config", "show", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let c: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(c["embed"]["batch_size"], 8);
    assert_eq!(c["chunk"]["overlap_tokens"], 5);
    assert_eq!(c["store"]["backend"], "edge");

    let o = run(signaldesk(work.path())
        .env("SIGNALDESK_EMBED__BACH_SIZE", "5")
        .args(["config", "show"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("SIGNALDESK_EMBED__BACH_SIZE"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_pipeline_reports_parity_on_a_sample_and_fails_on_a_wrong_reference() {
    let work = tempfile::tempdir().unwrap();
    let reference = read_reference(&reference_sample()).unwrap();
    let lines: Vec<String> = reference[..12]
        .iter()
        .map(|r| serde_json::json!({"id": r.id, "text": r.text, "vector": r.vector}).to_string())
        .collect();
    let sample = work.path().join("sample.jsonl");
    write_lines(&sample, &lines);
    let o = run(signaldesk(work.path())
        .args(["pipeline", "--no-retrieval", "--json", "--sample"])
        .arg(&sample));
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["texts"], 12);
    assert_eq!(r["parity_failures"], 0);
    assert!(r["parity_min_cosine"].as_f64().unwrap() >= 0.9999);
    assert_eq!(r["cache_hits"], 0);
    assert!(r["tokens_per_s"].as_f64().unwrap() > 0.0);
    // A second run is answered by the embedding cache: it says so instead of a "speed".
    let o = run(signaldesk(work.path())
        .args(["pipeline", "--no-retrieval", "--json", "--sample"])
        .arg(&sample));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["cache_hits"], 12);
    assert!(r["tokens_per_s"].is_null(), "{r}");

    // Swap two reference vectors: the report must catch it.
    let mut swapped: Vec<HashMap<String, Value>> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (v0, v1) = (swapped[0]["vector"].clone(), swapped[1]["vector"].clone());
    swapped[0].insert("vector".into(), v1);
    swapped[1].insert("vector".into(), v0);
    write_lines(
        &sample,
        &swapped
            .iter()
            .map(|m| serde_json::to_string(m).unwrap())
            .collect::<Vec<_>>(),
    );
    let o = run(signaldesk(work.path())
        .args(["pipeline", "--no-retrieval", "--sample"])
        .arg(&sample));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL"));
}
