//! `signaldesk eval summaries` on FRANK, as a user runs it: lead-3 reproduces the reference
//! ROUGE figures measured with `rouge-score` (so the tokenizer, stemmer and scoring agree), and
//! the extractive summarizer keeps every summary within its word limit.

mod common;

use std::path::Path;

use common::{run, signaldesk, stderr};
use serde_json::Value;

#[test]
fn lead3_reproduces_the_reference_rouge_and_extractive_summaries_fit_their_limit() {
    let work = tempfile::tempdir().unwrap();
    let data = common::root().join("golden-datasets/frank");
    let report = work.path().join("summaries.json");
    let o = run(signaldesk(work.path())
        .env(
            "SIGNALDESK_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("frank-embedding-cache"),
        )
        .args(["eval", "summaries", "--dataset"])
        .arg(&data)
        .arg("--output")
        .arg(&report));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let m = |k: &str| r["metrics"][k].as_f64().unwrap_or_else(|| panic!("no {k}"));
    // Measured with rouge-score (Porter stemming, mean F1) on the same 501 articles.
    for (key, want) in [
        ("lead3.cnndm.rouge1", 0.412),
        ("lead3.cnndm.rouge2", 0.187),
        ("lead3.cnndm.rougeL", 0.264),
        ("lead3.xsum.rouge1", 0.186),
        ("lead3.xsum.rouge2", 0.024),
        ("lead3.xsum.rougeL", 0.118),
    ] {
        assert!((m(key) - want).abs() < 0.002, "{key}: {} vs {want}", m(key));
    }
    assert_eq!(m("extractive.within_limit"), 1.0);
    assert!(m("extractive.mean_words") <= 60.0);
    // The extractive summary is a real summary of CNN/DM news, not noise.
    assert!(
        m("extractive.cnndm.rouge1") > 0.30,
        "{}",
        m("extractive.cnndm.rouge1")
    );
    assert_eq!(r["per_item"].as_object().unwrap().len(), 501);
    let first = r["details"]["summaries"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    for k in ["reference", "lead3", "extractive", "source"] {
        assert!(first[k].is_string(), "{first}");
    }
}

/// The LLM summarizer through the real client against a scripted server: answers over the word
/// limit are cut and counted, failed calls fall back to the extractive summary, marked.
#[test]
fn llm_summaries_are_cut_to_their_limits_and_failures_fall_back_to_extraction() {
    use common::scripted_llm::{self, Reply};
    let work = tempfile::tempdir().unwrap();
    let data = common::root().join("golden-datasets/frank");
    let (url, calls) = scripted_llm::start(move |n, request| {
        // 70 of the article's own short words (up to two letters) in two sentences: over the
        // 60-word limit (cut to the first, which the publishability guard passes) and within
        // the schema's cap of 4 characters a word.
        let mut words: Vec<String> = scripted_llm::item_words(request, usize::MAX)
            .into_iter()
            .filter(|w| w.chars().count() <= 2)
            .take(70)
            .collect();
        words.resize(70, "a".into());
        let long = format!("{}. {}.", words[..35].join(" "), words[35..].join(" "));
        assert_eq!(
            request["response_format"]["json_schema"]["name"], "summary",
            "{request}"
        );
        if n % 3 == 0 {
            Reply::Answer {
                status: 500,
                content: String::new(),
            }
        } else {
            Reply::Answer {
                status: 200,
                content: serde_json::json!({"summary": long, "standfirst": "A short line."})
                    .to_string(),
            }
        }
    });
    let report = work.path().join("summaries.json");
    let o = run(signaldesk(work.path())
        .env(
            "SIGNALDESK_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("frank-embedding-cache"),
        )
        .env("SIGNALDESK_LLM__PROVIDER", "openai")
        .env("SIGNALDESK_LLM__BASE_URL", &url)
        .env("SIGNALDESK_LLM__MODEL", "scripted")
        .env("SIGNALDESK_LLM__CACHE", "off")
        .env("SIGNALDESK_LLM__MAX_ATTEMPTS", "1")
        .args(["eval", "summaries", "--llm", "--limit", "3", "--dataset"])
        .arg(&data)
        .arg("--output")
        .arg(&report));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let m = |k: &str| r["metrics"][k].as_f64().unwrap_or_else(|| panic!("no {k}"));
    assert_eq!(r["per_item"].as_object().unwrap().len(), 6);
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 6);
    assert_eq!(m("llm.within_limit"), 1.0, "cut to the limit");
    let summaries = r["details"]["summaries"].as_object().unwrap();
    let fallbacks: Vec<&Value> = summaries
        .values()
        .filter(|s| s.get("llm_fallback_reason").is_some())
        .collect();
    assert!(!fallbacks.is_empty());
    assert_eq!(m("llm.fallbacks"), fallbacks.len() as f64);
    for s in &fallbacks {
        assert_eq!(
            s["llm"], s["extractive"],
            "the fallback is the extractive summary"
        );
    }
    let answered = 6 - fallbacks.len();
    assert!(answered > 0);
    // Every answer the model gave was over the limit.
    assert!((m("llm.within_limit_as_generated") - fallbacks.len() as f64 / 6.0).abs() < 1e-9);
    for s in summaries
        .values()
        .filter(|s| s.get("llm_fallback_reason").is_none())
    {
        // Cut at the last whole sentence within the limit.
        assert_eq!(
            s["llm"].as_str().unwrap().split_whitespace().count(),
            35,
            "{s}"
        );
        assert_eq!(s["llm_standfirst"], "A short line.");
    }
}

/// An article longer than the prompt budget is summarized in parts, then from the parts'
/// summaries (map-reduce): more calls than articles, each part's request names its part.
#[test]
fn long_articles_are_map_reduced_within_the_prompt_budget() {
    use common::scripted_llm::{self, Reply};
    use std::sync::{Arc, Mutex};
    let work = tempfile::tempdir().unwrap();
    let data = common::root().join("golden-datasets/frank");
    let prompts = Arc::new(Mutex::new(Vec::new()));
    let seen = prompts.clone();
    let (url, calls) = scripted_llm::start(move |_, request| {
        let text = request["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        seen.lock().unwrap().push(text);
        Reply::Answer {
            status: 200,
            content: serde_json::json!({"summary": "A part in brief.", "standfirst": "Brief."})
                .to_string(),
        }
    });
    let report = work.path().join("summaries.json");
    let o = run(signaldesk(work.path())
        .env(
            "SIGNALDESK_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("frank-embedding-cache"),
        )
        .env("SIGNALDESK_LLM__PROVIDER", "openai")
        .env("SIGNALDESK_LLM__BASE_URL", &url)
        .env("SIGNALDESK_LLM__MODEL", "scripted")
        .env("SIGNALDESK_LLM__CACHE", "off")
        .env("SIGNALDESK_ENRICH__SUMMARY__MAX_PROMPT_TOKENS", "400")
        .args(["eval", "summaries", "--llm", "--limit", "1", "--dataset"])
        .arg(&data)
        .arg("--output")
        .arg(&report));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(
        r["metrics"]["llm.map_reduced"].as_f64().unwrap() >= 1.0,
        "{}",
        r["metrics"]
    );
    assert!(
        calls.load(std::sync::atomic::Ordering::SeqCst) > 2,
        "parts, then the whole"
    );
    // The reduce step summarizes the parts' summaries.
    assert!(prompts
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.contains("A part in brief.")));
    for p in prompts.lock().unwrap().iter() {
        assert!(
            signaldesk::chunk::count_llm_tokens(p, signaldesk::chunk::LlmEncoding::O200kBase)
                <= 400
        );
    }
}
