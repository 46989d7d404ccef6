//! End to end over real HTTP: the `openai` client against `signaldesk llm serve` (the real
//! local model) returns a schema-valid answer.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::json;
use signaldesk::llm::openai::{OpenAiClient, OpenAiOptions};
use signaldesk::llm::{ChatRequest, LlmClient, Message, Schema};

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `signaldesk llm serve` on a free port with `env`; returns the child and its base URL.
fn serve(work: &std::path::Path, env: &[(&str, &str)]) -> (Child, String) {
    common::smollm_path();
    let mut cmd = common::signaldesk(work);
    cmd.args(["llm", "serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Child(cmd.spawn().unwrap());
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches("/v1/chat/completions")
        .to_string();
    (child, url)
}

#[test]
fn a_full_queue_is_answered_429_with_retry_after_at_once_and_latency_is_measured() {
    let work = tempfile::tempdir().unwrap();
    // One request generates, none may wait.
    let (_child, url) = serve(work.path(), &[("SIGNALDESK_LLM__SERVE_QUEUE", "0")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let long = json!({"messages": [{"role": "user", "content": "Write a long story about the sea."}],
                          "max_tokens": 200});
        let busy = {
            let (http, url, long) = (http.clone(), url.clone(), long.clone());
            tokio::spawn(async move {
                http.post(format!("{url}/v1/chat/completions"))
                    .json(&long)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        };
        // Let the first request be admitted and start generating.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        let started = std::time::Instant::now();
        let refused = http
            .post(format!("{url}/v1/chat/completions"))
            .json(&long)
            .send()
            .await
            .unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "the refusal is immediate, not queued: {:?}",
            started.elapsed()
        );
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "1");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "overloaded", "{body}");
        assert_eq!(busy.await.unwrap(), 200, "the admitted request completes");
        let metrics = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for want in [
            "signaldesk_http_request_duration_seconds_count{route=\"/v1/chat/completions\",status=\"200\"} 1",
            "signaldesk_http_request_duration_seconds_count{route=\"/v1/chat/completions\",status=\"429\"} 1",
            "signaldesk_http_request_duration_seconds_bucket{route=\"/v1/chat/completions\",status=\"429\",le=\"+Inf\"} 1",
        ] {
            assert!(metrics.contains(want), "{want} missing from\n{metrics}");
        }
    });
}

#[test]
fn the_openai_client_gets_a_schema_valid_answer_from_llm_serve() {
    let work = tempfile::tempdir().unwrap();
    let (_child, url) = serve(work.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = OpenAiClient::new(OpenAiOptions {
        base_url: url,
        model: "local".into(),
        max_attempts: 1,
        ..OpenAiOptions::default()
    })
    .unwrap();
    let schema = json!({"type": "object", "properties": {
        "label": {"enum": ["sport", "economy", "weather"]},
        "headline": {"type": "string", "maxLength": 80}},
        "required": ["label", "headline"], "additionalProperties": false});
    let mut req = ChatRequest::new(vec![Message::user(
        "Tag this item and write a headline: 'The striker scored twice and the club won the cup.'",
    )])
    .with_schema(schema.clone());
    req.sampling.max_tokens = 120;
    let answer = rt.block_on(client.chat(&req)).unwrap();
    let value = answer.json.expect("a JSON answer");
    Schema::parse(&schema).unwrap().validate(&value).unwrap();
    assert_eq!(answer.finish_reason, "stop");
    assert!(
        answer.usage.prompt_tokens > 20,
        "usage comes from the server"
    );
    // The server's metrics count the call.
    let metrics = rt
        .block_on(async {
            reqwest::get(format!(
                "{}/metrics",
                client.url().trim_end_matches("/v1/chat/completions")
            ))
            .await?
            .text()
            .await
        })
        .unwrap();
    assert!(
        metrics.contains("signaldesk_llm_calls_total{provider=\"local\""),
        "{metrics}"
    );
}
