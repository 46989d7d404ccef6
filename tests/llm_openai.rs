//! The `openai` provider against a scripted HTTP server on 127.0.0.1: every fault ends as
//! documented in `src/llm/openai.rs`. Time is tokio's paused clock: retry delays and timeouts
//! are asserted exactly, and the tests take no wall time waiting.
//!
//! The server runs in the test's own (current-thread, paused) runtime. Attempts without a
//! timeout have no timer pending while they wait on the socket, so the paused clock cannot jump
//! mid-request; only the hang test sets a timeout, and there the jump is the point.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use signaldesk::llm::cache::{CacheMode, CachedClient};
use signaldesk::llm::openai::{OpenAiClient, OpenAiOptions};
use signaldesk::llm::{ChatRequest, LlmClient, LlmError, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

#[derive(Clone)]
enum Reply {
    /// Status, extra headers, body.
    Http(u16, Vec<(&'static str, String)>, String),
    /// Read the request, then never answer (the connection stays open).
    Hang,
    /// Announce a longer body than is sent, then close.
    Truncated(String),
    /// Server-sent events: each string a `data:` line; then close.
    Stream(Vec<String>),
}

/// A streamed answer's events: the role, each piece, the finish, the usage, `[DONE]`.
fn streamed(pieces: &[&str]) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "x", "object": "chat.completion.chunk", "model": "served-model",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    events.extend(
        pieces
            .iter()
            .map(|p| chunk(json!({"content": p}), Value::Null)),
    );
    events.push(chunk(json!({}), json!("stop")));
    events.push(
        json!({"id": "x", "object": "chat.completion.chunk", "model": "served-model",
               "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}})
        .to_string(),
    );
    events.push("[DONE]".into());
    events
}

fn answer(content: &str) -> Reply {
    Reply::Http(
        200,
        vec![],
        json!({"id": "x", "object": "chat.completion", "model": "m",
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": content}}],
               "usage": {"prompt_tokens": 11, "completion_tokens": 3}})
        .to_string(),
    )
}

struct Server {
    url: String,
    requests: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
    auth: Arc<Mutex<Vec<String>>>,
}

/// Serve `script` in order (the last reply repeats).
async fn server(script: Vec<Reply>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (r, b, a) = (requests.clone(), bodies.clone(), auth.clone());
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            // Read headers, then the body by Content-Length.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let header_end = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(p + 4);
                }
            };
            let Some(header_end) = header_end else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..header_end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < header_end + len {
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let n = r.fetch_add(1, Ordering::SeqCst);
            b.lock()
                .unwrap()
                .push(serde_json::from_slice(&buf[header_end..]).unwrap());
            a.lock().unwrap().push(
                head.lines()
                    .find_map(|l| l.strip_prefix("authorization:"))
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            );
            let reply = script[n.min(script.len() - 1)].clone();
            match reply {
                Reply::Http(code, headers, body) => {
                    let mut out = format!(
                        "HTTP/1.1 {code} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                        body.len()
                    );
                    for (k, v) in headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    out.push_str(&body);
                    sock.write_all(out.as_bytes()).await.unwrap();
                    let _ = sock.shutdown().await;
                }
                Reply::Truncated(body) => {
                    let out = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                        body.len() + 100,
                        &body[..body.len() / 2]
                    );
                    sock.write_all(out.as_bytes()).await.unwrap();
                    let _ = sock.shutdown().await;
                }
                Reply::Stream(events) => {
                    let mut out = String::from(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
                    );
                    for e in events {
                        out.push_str(&format!("data: {e}\n\n"));
                    }
                    sock.write_all(out.as_bytes()).await.unwrap();
                    let _ = sock.shutdown().await;
                }
                Reply::Hang => held.push(sock),
            }
        }
    });
    Server {
        url,
        requests,
        bodies,
        auth,
    }
}

fn options(url: &str) -> OpenAiOptions {
    OpenAiOptions {
        base_url: url.to_string(),
        model: "test-model".into(),
        api_key: Some("sk-test-secret".into()),
        connect_timeout: None,
        timeout: None,
        max_attempts: 3,
        max_retry_time: Duration::from_secs(600),
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(8),
        jitter_seed: Some(7),
        ..OpenAiOptions::default()
    }
}

fn tag_schema() -> Value {
    json!({"type": "object", "properties": {"label": {"enum": ["sport", "economy"]}},
           "required": ["label"], "additionalProperties": false})
}

fn request() -> ChatRequest {
    ChatRequest::new(vec![Message::user("Tag: the striker scored.")])
}

#[tokio::test(start_paused = true)]
async fn a_valid_answer_is_returned_with_usage_and_the_key_as_bearer() {
    let s = server(vec![answer("{\"label\": \"sport\"}")]).await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    let got = client
        .chat(&request().with_schema(tag_schema()))
        .await
        .unwrap();
    assert_eq!(got.json, Some(json!({"label": "sport"})));
    assert_eq!(
        (got.usage.prompt_tokens, got.usage.completion_tokens),
        (11, 3)
    );
    assert_eq!(
        (got.retries, got.repaired, got.cache_hit),
        (0, false, false)
    );
    let body = &s.bodies.lock().unwrap()[0];
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(
        body["response_format"]["json_schema"]["schema"],
        tag_schema()
    );
    assert_eq!(s.auth.lock().unwrap()[0], "bearer sk-test-secret");
    assert!(!format!("{:?}", options(&s.url)).contains("sk-test-secret"));
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_exactly_retry_after_then_succeeds() {
    let s = server(vec![
        Reply::Http(
            429,
            vec![("retry-after", "7".into())],
            "{\"error\": \"slow down\"}".into(),
        ),
        answer("hello"),
    ])
    .await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    let t0 = Instant::now();
    let got = client.chat(&request()).await.unwrap();
    assert_eq!(got.text, "hello");
    assert_eq!(got.retries, 1);
    assert_eq!(got.retry_delays_ms, vec![7000]);
    assert_eq!(t0.elapsed(), Duration::from_secs(7));
    assert_eq!(s.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn persistent_500s_back_off_with_full_jitter_then_give_up() {
    let s = server(vec![Reply::Http(
        500,
        vec![],
        "{\"error\": \"boom\"}".into(),
    )])
    .await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    let t0 = Instant::now();
    let err = client.chat(&request()).await.unwrap_err();
    let LlmError::RetriesExhausted {
        attempts,
        last,
        elapsed_ms,
        ..
    } = err
    else {
        panic!("expected RetriesExhausted, got {err}");
    };
    assert_eq!(attempts, 3);
    assert!(last.contains("HTTP 500"), "{last}");
    assert_eq!(s.requests.load(Ordering::SeqCst), 3);
    // Two delays, each within its full-jitter ceiling (1 s, then 2 s); the clock moved by
    // exactly their sum.
    let elapsed = t0.elapsed();
    assert!(elapsed <= Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(elapsed_ms, elapsed.as_millis() as u64);
}

#[tokio::test(start_paused = true)]
async fn the_jittered_delays_are_the_ones_slept() {
    let s = server(vec![
        Reply::Http(503, vec![], "{}".into()),
        Reply::Http(502, vec![], "{}".into()),
        answer("ok"),
    ])
    .await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    let t0 = Instant::now();
    let got = client.chat(&request()).await.unwrap();
    assert_eq!(got.retries, 2);
    assert!(
        got.retry_delays_ms[0] <= 1000 && got.retry_delays_ms[1] <= 2000,
        "{:?}",
        got.retry_delays_ms
    );
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(got.retry_delays_ms.iter().sum::<u64>())
    );
}

#[tokio::test(start_paused = true)]
async fn other_4xx_are_final_with_no_retry() {
    let s = server(vec![Reply::Http(
        401,
        vec![],
        "{\"error\": \"bad key\"}".into(),
    )])
    .await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    match client.chat(&request()).await {
        Err(LlmError::Http {
            status: 401, body, ..
        }) => assert!(body.contains("bad key")),
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    assert_eq!(s.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hang_times_out_each_attempt_and_gives_up() {
    let s = server(vec![Reply::Hang]).await;
    let client = OpenAiClient::new(OpenAiOptions {
        timeout: Some(Duration::from_secs(10)),
        max_attempts: 2,
        ..options(&s.url)
    })
    .unwrap();
    let t0 = Instant::now();
    let err = client.chat(&request()).await.unwrap_err();
    let LlmError::RetriesExhausted {
        attempts: 2, last, ..
    } = &err
    else {
        panic!("expected RetriesExhausted after 2 attempts, got {err}");
    };
    assert!(last.contains("within 10s"), "{last}");
    // Two full timeouts and one jittered delay (at most 1 s) between them.
    let e = t0.elapsed();
    assert!(
        e >= Duration::from_secs(20) && e <= Duration::from_secs(21),
        "{e:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_json_gets_one_repair_round_with_the_error_sent_back() {
    let s = server(vec![
        answer("Sure! The label is sport."),
        answer("{\"label\": \"sport\"}"),
    ])
    .await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    let got = client
        .chat(&request().with_schema(tag_schema()))
        .await
        .unwrap();
    assert!(got.repaired);
    assert_eq!(got.json, Some(json!({"label": "sport"})));
    assert_eq!(
        (got.usage.prompt_tokens, got.usage.completion_tokens),
        (22, 6),
        "both rounds counted"
    );
    let second = &s.bodies.lock().unwrap()[1];
    let messages = second["messages"].as_array().unwrap();
    assert_eq!(
        messages[messages.len() - 2]["content"],
        "Sure! The label is sport."
    );
    assert!(messages.last().unwrap()["content"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
}

#[tokio::test(start_paused = true)]
async fn schema_violations_after_the_repair_are_a_typed_error() {
    let s = server(vec![answer("{\"label\": \"weather\"}")]).await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    match client.chat(&request().with_schema(tag_schema())).await {
        Err(LlmError::SchemaViolation { error, answer }) => {
            assert!(error.contains("$.label"), "{error}");
            assert!(answer.contains("weather"));
        }
        other => panic!("expected SchemaViolation, got {other:?}"),
    }
    assert_eq!(
        s.requests.load(Ordering::SeqCst),
        2,
        "one repair round, no more"
    );
}

#[tokio::test(start_paused = true)]
async fn a_truncated_body_is_retried() {
    let full = match answer("complete") {
        Reply::Http(_, _, b) => b,
        _ => unreachable!(),
    };
    let s = server(vec![Reply::Truncated(full), answer("complete")]).await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    let got = client.chat(&request()).await.unwrap();
    assert_eq!(got.text, "complete");
    assert_eq!(got.retries, 1);
}

#[tokio::test(start_paused = true)]
async fn a_non_json_body_is_retried_then_reported() {
    let s = server(vec![Reply::Http(200, vec![], "<html>proxy error".into())]).await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    match client.chat(&request()).await {
        Err(LlmError::RetriesExhausted {
            attempts: 3, last, ..
        }) => {
            assert!(last.contains("not JSON"), "{last}")
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_400_about_response_format_falls_back_to_json_object_for_that_request_only() {
    let refusal = || {
        Reply::Http(
            400,
            vec![],
            "{\"error\": \"response_format json_schema not supported\"}".into(),
        )
    };
    let s = server(vec![
        refusal(),
        answer("{\"label\": \"economy\"}"),
        refusal(),
        answer("{\"label\": \"sport\"}"),
    ])
    .await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    let got = client
        .chat(&request().with_schema(tag_schema()))
        .await
        .unwrap();
    assert_eq!(got.json, Some(json!({"label": "economy"})));
    let again = client
        .chat(&request().with_schema(tag_schema()))
        .await
        .unwrap();
    assert_eq!(again.json, Some(json!({"label": "sport"})));
    let bodies = s.bodies.lock().unwrap();
    assert_eq!(bodies.len(), 4);
    // Each request tries json_schema first: the fallback is not remembered.
    for (i, b) in bodies.iter().enumerate() {
        let want = if i % 2 == 0 {
            "json_schema"
        } else {
            "json_object"
        };
        assert_eq!(b["response_format"]["type"], want, "request {i}");
    }
    for b in [&bodies[1], &bodies[3]] {
        let system = b["messages"][0]["content"].as_str().unwrap();
        assert!(
            system.contains("JSON Schema") && system.contains("economy"),
            "{system}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_400_about_something_else_is_an_error_not_a_fallback() {
    let s = server(vec![Reply::Http(
        400,
        vec![],
        "{\"error\": {\"message\": \"This model's maximum context length is 8192 tokens\"}}".into(),
    )])
    .await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    match client.chat(&request().with_schema(tag_schema())).await {
        Err(LlmError::Http {
            status: 400, body, ..
        }) => {
            assert!(body.contains("context length"), "{body}")
        }
        other => panic!("expected the 400 as an error, got {other:?}"),
    }
    assert_eq!(s.bodies.lock().unwrap().len(), 1, "no second request");
}

#[tokio::test(start_paused = true)]
async fn a_second_identical_call_is_served_from_the_cache_without_a_request() {
    let s = server(vec![answer("{\"label\": \"sport\"}")]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llm.redb");
    let mut req = request().with_schema(tag_schema());
    req.context.prompt = Some("tag@1".into());
    req.context.item = Some("item-7".into());
    {
        let client = CachedClient::new(
            OpenAiClient::new(options(&s.url)).unwrap(),
            &path,
            CacheMode::Readwrite,
        )
        .unwrap();
        let first = client.chat(&req).await.unwrap();
        let second = client.chat(&req).await.unwrap();
        assert!(!first.cache_hit && second.cache_hit);
        assert_eq!(first.json, second.json);
        assert_eq!(s.requests.load(Ordering::SeqCst), 1);
    }
    // Read-only mode: the stored answer is served; a different request is a typed miss naming
    // the prompt and the item, and no request is sent.
    let client = CachedClient::new(
        OpenAiClient::new(options(&s.url)).unwrap(),
        &path,
        CacheMode::Read,
    )
    .unwrap();
    assert!(client.chat(&req).await.unwrap().cache_hit);
    let mut other = req.clone();
    other.context.item = Some("item-8".into());
    other.messages.push(Message::user("and this?"));
    match client.chat(&other).await {
        Err(e @ LlmError::CacheMiss { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("tag@1") && msg.contains("item-8"), "{msg}");
        }
        r => panic!("expected a cache miss, got {r:?}"),
    }
    assert_eq!(s.requests.load(Ordering::SeqCst), 1);
}

/// The cache never answers for another server: the same request, model name and cache file,
/// pointed at a second server, goes to that server; pointed at a port where nothing listens,
/// it fails instead of printing the first server's answer.
#[tokio::test(start_paused = true)]
async fn the_cache_is_keyed_on_the_endpoint_not_only_the_model_name() {
    let first = server(vec![answer("from the first server")]).await;
    let second = server(vec![answer("from the second server")]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llm.redb");
    let cached = |url: &str| {
        let mut o = options(url);
        o.max_attempts = 1;
        CachedClient::new(OpenAiClient::new(o).unwrap(), &path, CacheMode::Readwrite).unwrap()
    };
    let req = request();
    let a = cached(&first.url).chat(&req).await.unwrap();
    assert_eq!(
        (a.text.as_str(), a.cache_hit),
        ("from the first server", false)
    );
    assert!(cached(&first.url).chat(&req).await.unwrap().cache_hit);
    let b = cached(&second.url).chat(&req).await.unwrap();
    assert_eq!(
        (b.text.as_str(), b.cache_hit),
        ("from the second server", false)
    );
    assert_eq!(second.requests.load(Ordering::SeqCst), 1);

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    match cached(&dead).chat(&req).await {
        Err(e) => assert!(e.to_string().contains(&dead), "{e}"),
        Ok(r) => panic!("a dead server answered from the cache: {r:?}"),
    }
}

/// Answers carry the model the server says answered, not the configured name.
#[tokio::test(start_paused = true)]
async fn the_answer_records_the_model_the_server_reports() {
    let s = server(vec![Reply::Http(
        200,
        vec![],
        json!({"id": "x", "object": "chat.completion", "model": "SmolLM2-135M-Instruct.Q4_1",
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "hi"}}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 1}})
        .to_string(),
    )])
    .await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    let got = client.chat(&request()).await.unwrap();
    assert_eq!(got.model, "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(s.bodies.lock().unwrap()[0]["model"], "test-model");
}

fn pieces(mut rx: tokio::sync::mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(p) = rx.try_recv() {
        got.push(p);
    }
    got
}

#[tokio::test(start_paused = true)]
async fn a_streamed_answer_hands_on_each_piece_and_returns_the_whole() {
    let s = server(vec![Reply::Stream(streamed(&[
        "{\"label\"",
        ": \"sport\"}",
    ]))])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client = CachedClient::new(
        OpenAiClient::new(options(&s.url)).unwrap(),
        &dir.path().join("cache.redb"),
        CacheMode::Readwrite,
    )
    .unwrap();
    let request = request().with_schema(tag_schema());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let got = client.chat_streaming(&request, &tx).await.unwrap();
    assert_eq!(pieces(rx), ["{\"label\"", ": \"sport\"}"]);
    assert_eq!(got.json, Some(json!({"label": "sport"})));
    assert_eq!(
        (got.usage.prompt_tokens, got.usage.completion_tokens),
        (11, 3)
    );
    assert_eq!(
        (got.model.as_str(), got.finish_reason.as_str()),
        ("served-model", "stop")
    );
    let body = s.bodies.lock().unwrap()[0].clone();
    assert_eq!(
        (&body["stream"], &body["stream_options"]),
        (&json!(true), &json!({"include_usage": true}))
    );

    // The same request again is the cache's: one piece, no request.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let again = client.chat_streaming(&request, &tx).await.unwrap();
    assert!(again.cache_hit);
    assert_eq!(pieces(rx), ["{\"label\": \"sport\"}"]);
    assert_eq!(s.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_off_before_its_text_is_retried_and_after_it_is_final() {
    let mut empty = streamed(&[]);
    empty.truncate(1);
    let s = server(vec![
        Reply::Stream(empty),
        Reply::Stream(streamed(&["com", "plete"])),
    ])
    .await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let got = client.chat_streaming(&request(), &tx).await.unwrap();
    assert_eq!((got.text.as_str(), got.retries), ("complete", 1));
    assert_eq!(pieces(rx), ["com", "plete"]);

    // Cut off after a piece was handed on: a retry would repeat it, so the call fails.
    let mut cut = streamed(&["par", "tial"]);
    cut.truncate(2);
    let s = server(vec![Reply::Stream(cut), answer("never asked")]).await;
    let client = OpenAiClient::new(options(&s.url)).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let err = client.chat_streaming(&request(), &tx).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Transport { message, .. } if message.contains("[DONE]")),
        "{err}"
    );
    assert_eq!(pieces(rx), ["par"]);
    assert_eq!(s.requests.load(Ordering::SeqCst), 1);
}
