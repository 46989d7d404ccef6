//! `signaldesk bench llm`: prompt-processing and generation speed of the local model.

use std::time::Instant;

use crate::llm::local::LocalLlm;
use crate::llm::{ChatRequest, LlmError, Message, Sampling};

/// One benchmark result (medians over rounds).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LlmBench {
    pub model: String,
    /// The prompt path's precision (`fp32` or `int8`).
    pub precision: &'static str,
    pub prompt_tokens: usize,
    pub prompt_tokens_per_s: f64,
    pub generated_tokens: usize,
    pub generation_tokens_per_s: f64,
    /// Generation under a JSON schema (llguidance masks every step), same prompt and length.
    pub constrained_generation_tokens_per_s: f64,
    /// Time per constrained token over time per free token, minus 1 (0.05 = 5% slower); medians
    /// of rounds taken alternately in the same run.
    pub constrained_overhead: f64,
    pub load_seconds: f64,
    pub rounds: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Process a prompt of about `prompt_tokens` tokens, then generate `gen_tokens` tokens
/// (greedy, no stop), `rounds` times with the prefix cache cleared between rounds.
pub fn run(
    path: &std::path::Path,
    precision: crate::embed::Precision,
    prompt_tokens: usize,
    gen_tokens: usize,
    rounds: usize,
) -> Result<LlmBench, LlmError> {
    let started = Instant::now();
    let llm = LocalLlm::load_with(path, precision)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let words = [
        "The",
        "central",
        "bank",
        "raised",
        "interest",
        "rates",
        "again",
        "on",
        "Tuesday,",
        "citing",
        "inflation",
        "in",
        "housing",
        "and",
        "energy",
        "prices",
        "while",
        "markets",
        "fell",
        "1.5%",
        "and",
        "analysts",
        "expected",
        "further",
        "moves",
        "this",
        "year.",
    ];
    let mut text = String::new();
    let mut i = 0;
    // Grow the text until the rendered prompt reaches the target length.
    let render = |t: &str| -> Result<usize, LlmError> {
        let p = llm.tokenizer().render_chat(&[Message::user(t)])?;
        Ok(llm.tokenizer().encode(&p)?.len())
    };
    while render(&text)? < prompt_tokens {
        text.push_str(words[i % words.len()]);
        text.push(' ');
        i += 1;
    }
    let prompt = llm
        .tokenizer()
        .render_chat(&[Message::user(text.as_str())])?;
    let mut request = ChatRequest::new(vec![Message::user(text.as_str())]);
    request.sampling = Sampling {
        max_tokens: gen_tokens,
        ..Sampling::default()
    };
    // A schema whose answer cannot end before max_tokens: one long string.
    let schema = serde_json::json!({"type": "object", "properties": {
        "summary": {"type": "string", "minLength": 20 * gen_tokens.max(1)}},
        "required": ["summary"], "additionalProperties": false});
    let (mut pp, mut tg, mut tc, mut ratios) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for round in 0..rounds.max(1) {
        // A distinct first token each round defeats the prefix cache: every round processes
        // the whole prompt.
        let p = format!("{}{prompt}", " ".repeat(round % 2));
        let (_, _, stats) = llm.generate_blocking(&p, &request, None)?;
        pp.push(stats.prompt_tokens_processed as f64 / stats.prompt_seconds);
        let free = stats.generation_seconds / stats.generated_tokens.max(1) as f64;
        if stats.generated_tokens > 0 {
            tg.push(stats.generated_tokens as f64 / stats.generation_seconds);
        }
        last = Some(stats);
        let (_, _, c) = llm.generate_blocking(&p, &request, Some(&schema))?;
        if c.generated_tokens > 0 && stats.generated_tokens > 0 {
            tc.push(c.generated_tokens as f64 / c.generation_seconds);
            ratios.push(c.generation_seconds / c.generated_tokens as f64 / free - 1.0);
        }
    }
    let last = last.unwrap_or_default();
    let median_or_zero = |v: Vec<f64>| if v.is_empty() { 0.0 } else { median(v) };
    Ok(LlmBench {
        model: path.display().to_string(),
        precision: precision.name(),
        prompt_tokens: last.prompt_tokens,
        prompt_tokens_per_s: median(pp),
        generated_tokens: last.generated_tokens,
        generation_tokens_per_s: median_or_zero(tg),
        constrained_generation_tokens_per_s: median_or_zero(tc),
        constrained_overhead: median_or_zero(ratios),
        load_seconds,
        rounds: rounds.max(1),
    })
}
