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

#[test]
fn the_openai_client_gets_a_schema_valid_answer_from_llm_serve() {
    common::smollm_path();
    let work = tempfile::tempdir().unwrap();
    let mut child = Child(
        common::signaldesk(work.path())
            .args(["llm", "serve", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
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
