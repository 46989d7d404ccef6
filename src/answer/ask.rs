//! `ask`: a question answered from the archive, every statement citing the passages it rests
//! on. The chain is `verify`'s (retrieve through the one search path ▸ sentences ▸ score each
//! against the question) and then composes: with an LLM, a schema-constrained answer whose
//! citations can only be numbers of passages that were in its context (an `enum`), the passages
//! fenced in the prompt as data; without one, or when it fails, the best passages themselves,
//! cited, with `fallback_reason`. When no passage is relevant enough the answer is "not in the
//! archive" and nothing is invented.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::verifier::Verifier;
use super::verify::{retrieve_and_judge, Considered, Retrieved, VerifyError};
use crate::chunk::{count_llm_tokens, LlmEncoding};
use crate::config::{AskConfig, Price};
use crate::llm::{ChatRequest, LlmClient, Message, Usage};
use crate::prompts::{Prompt, PromptError};
use crate::search::Searcher;
use crate::store::{Filter, VectorStore};

/// What `ask` says when no passage is relevant enough.
pub const NOT_IN_ARCHIVE: &str = "Not in the archive: no retrieved passage answers this question.";

/// Why a question could not be answered (a weak archive is an answer, not an error).
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the question is empty: ask something")]
    EmptyQuestion,
    #[error(transparent)]
    Chain(#[from] VerifyError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
}

/// A passage the answer may cite: a sentence of a retrieved item, where it stands in the item's
/// text (`GET /v1/content/{id}` returns that text), and how relevant it was.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Passage {
    /// Its number in the answer (`[1]` cites passage 1).
    pub number: usize,
    /// The item it comes from.
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Byte span in the item's text (title + "\n" + body).
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// The verifier's rationale probability against the question.
    pub score: f32,
}

/// One statement of an answer and the passages it cites (numbers of [`Answer::passages`]).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Statement {
    pub text: String,
    pub citations: Vec<usize>,
}

/// An answer: its statements with their citations, the passages they cite, and its lineage.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Answer {
    pub question: String,
    /// The statements joined, each followed by its citations (`… [1][2]`).
    pub answer: String,
    pub statements: Vec<Statement>,
    /// Every passage that was in the context, by number; statements cite only these.
    pub passages: Vec<Passage>,
    /// True when no passage reached `answer.ask.threshold`: nothing was composed.
    pub not_in_archive: bool,
    /// `llm`, `extractive` or `none` (not in the archive).
    pub source: String,
    /// Why the answer is extractive although an LLM was configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// Search settings, embedding model, verifier, LLM and prompt, passage ids, tokens, cost.
    #[schema(value_type = Object)]
    pub lineage: Value,
    /// Milliseconds per stage: retrieve, read, judge, compose; and `first_text`, from the
    /// question to the first words of an LLM's answer (what a streaming reader waits).
    pub timings_ms: BTreeMap<String, f64>,
}

/// What an `ask` reports while it works, for a reader that streams the answer: the passages
/// once they are chosen, then the statements' words as the LLM writes them.
#[derive(Debug, Clone, PartialEq)]
pub enum AskProgress {
    /// The citable context, numbered (the final answer's `passages`).
    Passages(Vec<Passage>),
    /// The next words of the statements being written (a preview: the final answer drops
    /// statements that cite nothing, so it can be shorter).
    Text(String),
}

/// Where `ask` sends its [`AskProgress`]; a receiver that went away does not stop it.
pub type AskProgressSender = tokio::sync::mpsc::UnboundedSender<AskProgress>;

/// The words of the statements in a JSON answer that is still being written: the `text` values
/// of `{"statements": [{"text": …, "citations": …}, …]}` as far as they have arrived, joined by
/// a space, so a reader sees prose rather than JSON. Each [`Self::push`] gives what is new.
#[derive(Debug, Default)]
pub struct StatementPreview {
    json: String,
    shown: usize,
}

impl StatementPreview {
    /// Add the next piece of the answer; the words it made visible, if any.
    pub fn push(&mut self, piece: &str) -> Option<String> {
        self.json.push_str(piece);
        let visible = statement_texts(&self.json);
        // Visible text only grows: a string's content is final up to its last whole character.
        let new = visible
            .get(self.shown..)
            .filter(|n| !n.is_empty())?
            .to_string();
        self.shown = visible.len();
        Some(new)
    }
}

/// The `text` values of a possibly unfinished JSON answer, joined by a space; a value still
/// being written counts as far as it goes (a half-written escape sequence is left out).
fn statement_texts(json: &str) -> String {
    let bytes = json.as_bytes();
    let mut texts: Vec<String> = Vec::new();
    let mut value_of_text = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let (content, next, closed) = read_string(json, i + 1);
                if value_of_text {
                    texts.push(content);
                    value_of_text = false;
                } else if closed {
                    let after = json[next..].trim_start();
                    if after.starts_with(':') {
                        value_of_text = content == "text";
                    }
                }
                if !closed {
                    break;
                }
                i = next;
            }
            b if b.is_ascii_whitespace() || b == b':' => i += 1,
            _ => {
                value_of_text = false;
                i += 1;
            }
        }
    }
    texts.join(" ")
}

/// A JSON string's content from `start` (just after its opening quote): the unescaped text,
/// where the string ends (after its closing quote), and whether it was closed.
fn read_string(json: &str, start: usize) -> (String, usize, bool) {
    let mut out = String::new();
    let mut chars = json[start..].char_indices().peekable();
    while let Some((offset, c)) = chars.next() {
        match c {
            '"' => return (out, start + offset + 1, true),
            '\\' => {
                let Some((_, escaped)) = chars.next() else {
                    break;
                };
                match escaped {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String = (0..4)
                            .filter_map(|_| chars.next().map(|(_, h)| h))
                            .collect();
                        let Some(code) = (hex.len() == 4)
                            .then(|| u32::from_str_radix(&hex, 16).ok())
                            .flatten()
                        else {
                            break;
                        };
                        out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                    other => out.push(other),
                }
            }
            c => out.push(c),
        }
    }
    (out, json.len(), false)
}

/// The LLM that composes answers, its prompt and its price (none: extractive answers only).
pub struct Composer<'a, L> {
    pub llm: &'a L,
    pub prompt: Prompt,
    pub price: Option<Price>,
}

impl<'a> Composer<'a, crate::llm::AnyLlm> {
    /// The configured LLM with `prompts/ask.v{answer.ask.prompt_version}.md` and the price of
    /// `llm.model`: what `signaldesk ask`, `POST /v1/ask` and `eval grounded` compose with.
    pub fn configured(
        llm: &'a crate::llm::AnyLlm,
        config: &crate::Config,
    ) -> Result<Self, PromptError> {
        Ok(Self {
            llm,
            prompt: Prompt::load_version(
                &config.prompts_dir,
                "ask",
                config.answer.ask.prompt_version,
            )?,
            price: llm.price(&config.llm),
        })
    }
}

/// The passages of `considered`: every item's sentences by relevance, at most
/// `passages_per_item` from one item, the best `passages` of them that fit `passage_tokens`
/// together (the best one always) numbered from 1.
pub fn select_passages(considered: &[Considered], settings: &AskConfig) -> Vec<Passage> {
    let mut all: Vec<Passage> = considered
        .iter()
        .flat_map(|c| {
            let mut sentences: Vec<_> = c.sentences.iter().collect();
            sentences.sort_by(|a, b| b.score.total_cmp(&a.score));
            sentences
                .into_iter()
                .take(settings.passages_per_item.max(1))
                .map(|s| Passage {
                    number: 0,
                    id: c.id.clone(),
                    title: c.title.clone(),
                    start: s.start,
                    end: s.end,
                    text: s.text.clone(),
                    score: s.score,
                })
        })
        .collect();
    all.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut budget = settings.passage_tokens;
    let mut kept: Vec<Passage> = Vec::new();
    for mut passage in all {
        if kept.len() == settings.passages.max(1) {
            break;
        }
        let tokens = count_llm_tokens(&passage.text, LlmEncoding::O200kBase);
        if tokens <= budget || kept.is_empty() {
            budget = budget.saturating_sub(tokens);
            passage.number = kept.len() + 1;
            kept.push(passage);
        }
    }
    kept
}

/// The extractive answer: the best passages as statements, each citing itself; at most
/// `extractive_statements`, each reaching `threshold` and `extractive_relative` of the best.
pub fn extractive(passages: &[Passage], settings: &AskConfig) -> Vec<Statement> {
    let best = passages.first().map_or(0.0, |p| p.score);
    let floor = settings.threshold.max(best * settings.extractive_relative);
    passages
        .iter()
        .take(settings.extractive_statements.max(1))
        .filter(|p| p.score >= floor)
        .map(|p| Statement {
            text: p.text.clone(),
            citations: vec![p.number],
        })
        .collect()
}

/// Statements of an LLM's answer that cite passages of the context: citations outside it are
/// removed, and a statement left without one is dropped (it rests on nothing retrieved).
pub fn keep_cited(answer: &Value, passages: usize) -> Vec<Statement> {
    let Some(items) = answer.get("statements").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|s| {
            let text = s.get("text")?.as_str()?.trim().to_string();
            let mut citations: Vec<usize> = s
                .get("citations")?
                .as_array()?
                .iter()
                .filter_map(Value::as_u64)
                .map(|n| n as usize)
                .filter(|n| (1..=passages).contains(n))
                .collect();
            citations.dedup();
            (!text.is_empty() && !citations.is_empty()).then_some(Statement { text, citations })
        })
        .collect()
}

/// The answer text: statements joined, each followed by its citation marks.
pub fn render(statements: &[Statement]) -> String {
    statements
        .iter()
        .map(|s| {
            let marks: String = s.citations.iter().map(|n| format!("[{n}]")).collect();
            format!("{} {marks}", s.text.trim_end())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The JSON schema of an LLM answer over `passages` numbered passages: citations are an `enum`
/// of those numbers, so a constrained decoder cannot cite anything else.
pub fn answer_schema(passages: usize) -> Value {
    json!({
        "type": "object",
        "properties": {"statements": {
            "type": "array", "minItems": 1, "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string", "minLength": 1, "maxLength": 400},
                    "citations": {"type": "array", "minItems": 1, "maxItems": 3,
                                  "items": {"enum": (1..=passages).collect::<Vec<_>>()}},
                },
                "required": ["text", "citations"], "additionalProperties": false,
            },
        }},
        "required": ["statements"], "additionalProperties": false,
    })
}

/// What the LLM composed: the statements it cited, the tokens it took, and when its first
/// words arrived.
struct Composed {
    statements: Vec<Statement>,
    usage: Usage,
    first_text: Option<std::time::Instant>,
}

/// Ask the LLM, streaming its statements' words to `progress` as they are written.
async fn compose<L: LlmClient>(
    composer: &Composer<'_, L>,
    settings: &AskConfig,
    question: &str,
    passages: &[Passage],
    progress: Option<&AskProgressSender>,
) -> Result<Composed, String> {
    let listed: Vec<String> = passages
        .iter()
        .map(|p| format!("[{}] {}", p.number, p.text))
        .collect();
    let values = BTreeMap::from([
        ("question".to_string(), question.to_string()),
        ("passages".to_string(), listed.join("\n")),
    ]);
    let rendered = composer.prompt.render(&values).map_err(|e| e.to_string())?;
    let mut request =
        ChatRequest::new(vec![Message::user(rendered)]).with_schema(answer_schema(passages.len()));
    request.schema_name = "answer".into();
    request.sampling.max_tokens = settings.max_answer_tokens;
    request.context.prompt = Some(composer.prompt.reference());
    request.context.item = Some(format!("ask:{question}"));
    let (deltas, mut pieces) = tokio::sync::mpsc::unbounded_channel();
    let call = async {
        let deltas = deltas;
        composer.llm.chat_streaming(&request, &deltas).await
    };
    let mut first_text = None;
    let preview = async {
        let mut preview = StatementPreview::default();
        while let Some(piece) = pieces.recv().await {
            if let Some(words) = preview.push(&piece) {
                first_text.get_or_insert_with(std::time::Instant::now);
                if let Some(progress) = progress {
                    let _ = progress.send(AskProgress::Text(words));
                }
            }
        }
    };
    let (response, ()) = tokio::join!(call, preview);
    let response =
        response.map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())?;
    let statements = keep_cited(
        response.json.as_ref().unwrap_or(&Value::Null),
        passages.len(),
    );
    if statements.is_empty() {
        return Err("the LLM's answer had no statement citing a passage".into());
    }
    Ok(Composed {
        statements,
        usage: response.usage,
        first_text,
    })
}

/// Answer `question` from the items of `searcher`'s collection that pass `filter`.
#[allow(clippy::too_many_arguments)]
pub async fn ask<S: VectorStore, L: LlmClient>(
    store: &S,
    searcher: &Searcher<'_, S>,
    verifier: &Verifier,
    composer: Option<&Composer<'_, L>>,
    settings: &AskConfig,
    k: usize,
    question: &str,
    filter: &Filter,
    progress: Option<&AskProgressSender>,
) -> Result<Answer, AskError> {
    let asked = std::time::Instant::now();
    let question = question.trim();
    if question.is_empty() {
        return Err(AskError::EmptyQuestion);
    }
    let Retrieved {
        considered,
        mut timings_ms,
        ..
    } = retrieve_and_judge(store, searcher, verifier, question, k, filter).await?;
    let started = std::time::Instant::now();
    let passages = select_passages(&considered, settings);
    if let Some(progress) = progress {
        let _ = progress.send(AskProgress::Passages(passages.clone()));
    }
    let not_in_archive = passages
        .first()
        .is_none_or(|p| p.score < settings.threshold);
    let composer = composer.filter(|_| settings.llm);
    let mut usage = Usage::default();
    let (statements, source, fallback_reason) = if not_in_archive {
        (Vec::new(), "none", None)
    } else if let Some(composer) = composer {
        match compose(composer, settings, question, &passages, progress).await {
            Ok(composed) => {
                usage = composed.usage;
                if let Some(first) = composed.first_text {
                    let since_asked = first.duration_since(asked).as_secs_f64();
                    timings_ms.insert("first_text".into(), since_asked * 1e3);
                }
                (composed.statements, "llm", None)
            }
            Err(reason) => (extractive(&passages, settings), "extractive", Some(reason)),
        }
    } else {
        (extractive(&passages, settings), "extractive", None)
    };
    let compose_s = started.elapsed().as_secs_f64();
    timings_ms.insert("compose".into(), compose_s * 1e3);
    // The LLM's generation speed as this answer saw it (prompt processing included).
    let tokens_per_s = (usage.completion_tokens > 0 && compose_s > 0.0)
        .then(|| usage.completion_tokens as f64 / compose_s);
    let cost = composer
        .and_then(|c| c.price)
        .map(|p| p.cost(usage.prompt_tokens, usage.completion_tokens));
    let lineage = json!({
        "search": {"mode": "hybrid", "k": k, "collection": searcher.spec().name,
                   "hybrid": searcher.settings().hybrid},
        "model": searcher.embedder().model_id(),
        "verifier": verifier.version,
        "threshold": settings.threshold,
        "llm": composer.map(|c| json!({"provider": c.llm.provider(), "model": c.llm.model(),
                                        "prompt": c.prompt.reference()})),
        "retrieved": considered.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        "passages": passages.iter().map(|p| format!("{}@{}..{}", p.id, p.start, p.end))
            .collect::<Vec<_>>(),
        "tokens": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens,
                   "completion_per_s": tokens_per_s},
        "cost_usd": cost,
    });
    Ok(Answer {
        question: question.to_string(),
        answer: if not_in_archive {
            NOT_IN_ARCHIVE.to_string()
        } else {
            render(&statements)
        },
        statements,
        passages,
        not_in_archive,
        source: source.to_string(),
        fallback_reason,
        lineage,
        timings_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::verify::Sentence;

    fn item(id: &str, scores: &[f32]) -> Considered {
        Considered {
            id: id.into(),
            title: None,
            rank: 1,
            search_score: 0.5,
            support: 0.0,
            contradict: 0.0,
            sentences: scores
                .iter()
                .enumerate()
                .map(|(i, &score)| Sentence {
                    index: i,
                    start: i * 10,
                    end: i * 10 + 9,
                    text: format!("{id} sentence {i}"),
                    score,
                })
                .collect(),
        }
    }

    #[test]
    fn passages_are_the_best_sentences_numbered_with_a_cap_per_item() {
        let settings = AskConfig {
            passages: 3,
            passages_per_item: 2,
            ..AskConfig::default()
        };
        let p = select_passages(
            &[item("a", &[0.9, 0.8, 0.7]), item("b", &[0.1, 0.5])],
            &settings,
        );
        let got: Vec<(usize, &str, f32)> = p
            .iter()
            .map(|p| (p.number, p.id.as_str(), p.score))
            .collect();
        assert_eq!(got, [(1, "a", 0.9), (2, "a", 0.8), (3, "b", 0.5)]);
        assert_eq!((p[1].start, p[1].end), (10, 19));
    }

    /// A passage that would take the passages past `passage_tokens` is left out for the next
    /// that fits; the best passage is kept even when it alone passes the budget.
    #[test]
    fn passages_stay_within_their_token_budget_and_the_best_is_always_kept() {
        let long = |id: &str, score: f32| {
            let mut c = item(id, &[score]);
            c.sentences[0].text = "word ".repeat(50);
            c
        };
        let settings = AskConfig {
            passages: 6,
            passages_per_item: 1,
            passage_tokens: 20,
            ..AskConfig::default()
        };
        let items = [
            long("a", 0.9),
            item("b", &[0.8]),
            long("c", 0.7),
            item("d", &[0.6]),
        ];
        let ids = |p: Vec<Passage>| p.into_iter().map(|p| (p.number, p.id)).collect::<Vec<_>>();
        // "a" alone passes the budget but is the best; nothing else fits after it.
        assert_eq!(
            ids(select_passages(&items, &settings)),
            [(1, "a".to_string())]
        );
        let roomy = AskConfig {
            passage_tokens: 80,
            ..settings.clone()
        };
        // About 51 + 3 tokens fit in 80; "c" (51 more) does not and is skipped for "d".
        assert_eq!(
            ids(select_passages(&items, &roomy)),
            [(1, "a".into()), (2, "b".into()), (3, "d".into())]
        );
    }

    #[test]
    fn statements_keep_only_citations_of_the_context_and_uncited_ones_are_dropped() {
        let answer = json!({"statements": [
            {"text": "Rests on one and two.", "citations": [1, 2, 2]},
            {"text": "Cites a passage that was never given.", "citations": [9]},
            {"text": "Mixed.", "citations": [0, 3]},
        ]});
        let kept = keep_cited(&answer, 3);
        assert_eq!(
            kept,
            [
                Statement {
                    text: "Rests on one and two.".into(),
                    citations: vec![1, 2]
                },
                Statement {
                    text: "Mixed.".into(),
                    citations: vec![3]
                },
            ]
        );
        assert_eq!(render(&kept), "Rests on one and two. [1][2] Mixed. [3]");
        assert!(keep_cited(&json!({"text": "no statements"}), 3).is_empty());
    }

    #[test]
    fn the_schema_admits_only_numbers_of_passages_in_the_context() {
        let schema = crate::llm::schema::Schema::parse(&answer_schema(2)).unwrap();
        let ok = json!({"statements": [{"text": "x", "citations": [2]}]});
        let outside = json!({"statements": [{"text": "x", "citations": [3]}]});
        let uncited = json!({"statements": [{"text": "x", "citations": []}]});
        assert!(schema.validate(&ok).is_ok());
        assert!(schema.validate(&outside).is_err());
        assert!(schema.validate(&uncited).is_err());
    }

    #[test]
    fn an_extractive_answer_quotes_strong_passages_each_citing_itself() {
        let settings = AskConfig {
            threshold: 0.4,
            extractive_relative: 0.8,
            extractive_statements: 3,
            passages_per_item: 3,
            ..AskConfig::default()
        };
        let p = select_passages(&[item("a", &[0.9, 0.7, 0.6]), item("b", &[0.8])], &settings);
        let s = extractive(&p, &settings);
        let got: Vec<(&str, Vec<usize>)> = s
            .iter()
            .map(|s| (s.text.as_str(), s.citations.clone()))
            .collect();
        assert_eq!(
            got,
            [("a sentence 0", vec![1]), ("b sentence 0", vec![2])],
            "0.7 is under 0.8 of the best (0.72)"
        );
    }

    #[test]
    fn the_preview_shows_the_statements_words_as_the_json_arrives() {
        let answer = r#"{"statements": [{"text": "Caf\u00e9 \"A\" helps.", "citations": [1]}, {"citations": [2], "text": "It costs."}]}"#;
        // Fed a few bytes at a time (cut at character boundaries), as a model writes it.
        let mut preview = StatementPreview::default();
        let mut shown = String::new();
        let mut pieces = 0;
        let mut rest = answer;
        while !rest.is_empty() {
            let cut = rest.char_indices().nth(3).map_or(rest.len(), |(i, _)| i);
            let (piece, after) = rest.split_at(cut);
            if let Some(words) = preview.push(piece) {
                pieces += 1;
                shown.push_str(&words);
            }
            rest = after;
        }
        assert_eq!(shown, "Café \"A\" helps. It costs.");
        assert!(pieces > 3, "the words come in pieces, not at the end");
        // Keys, numbers and a half-written escape show nothing.
        let mut p = StatementPreview::default();
        assert_eq!(p.push(r#"{"statements": [{"citations": [1], "te"#), None);
        assert_eq!(p.push(r#"xt": "a\"#).as_deref(), Some("a"));
        assert_eq!(p.push(r#"u00e9"#).as_deref(), Some("é"));
        assert_eq!(p.push(r#"", "citations": [2]}"#), None);
        assert_eq!(statement_texts(r#"{"text": 1, "x": "text"}"#), "");
    }
}
