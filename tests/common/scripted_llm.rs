//! A scripted OpenAI-compatible chat server on 127.0.0.1 for tests of the real client: each
//! call's reply comes from a function of the call number and the request body.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

/// What the server does with one call.
pub enum Reply {
    /// Answer with this status; for 200, `content` is the assistant message.
    Answer { status: u16, content: String },
    /// Hold the connection and never answer.
    Hang,
}

/// A threaded HTTP/1.1 server answering chat completions by `script(call number, request)`;
/// returns its base URL (`.../v1`) and the call counter.
pub fn start(
    script: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let script = Arc::new(script);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counter = counter.clone();
            let script = script.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.to_ascii_lowercase();
                        if let Some(v) = l.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let request: Value = serde_json::from_slice(&body).unwrap();
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let (status, content) = match script(n, &request) {
                        Reply::Hang => {
                            std::thread::sleep(Duration::from_secs(30));
                            return;
                        }
                        Reply::Answer { status, content } => (status, content),
                    };
                    let payload = if status == 200 {
                        json!({"id": "x", "object": "chat.completion", "model": "scripted",
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": content}}],
                               "usage": {"prompt_tokens": 100, "completion_tokens": 5}})
                        .to_string()
                    } else {
                        json!({"error": {"message": "scripted failure"}}).to_string()
                    };
                    let out = format!(
                        "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 0\r\n\r\n{payload}",
                        payload.len()
                    );
                    if stream.write_all(out.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, calls)
}

/// The first `n` words of the item text a summary prompt carries (between its `Text:` and
/// `Write:` lines), punctuation trimmed: a scripted summary made of them reads as a summary of
/// that item (the summarizer's publishability guard wants most of its words from the source).
pub fn item_words(request: &Value, n: usize) -> Vec<String> {
    let prompt = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let text = prompt
        .split_once("Text:")
        .map_or(prompt.as_str(), |(_, rest)| rest);
    let text = text.split_once("Write:").map_or(text, |(body, _)| body);
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_string())
        .filter(|w| !w.is_empty())
        .take(n)
        .collect()
}
