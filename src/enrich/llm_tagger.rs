//! Retrieval-augmented LLM tagging: the model chooses among labels retrieved for the item.
//!
//! For each item the candidates are kNN's votes (labels of its nearest labelled neighbours)
//! followed by the taxonomy's concepts nearest to it (when a taxonomy is given), at most
//! `enrich.llm.candidates`. The prompt (`prompts/tag.vN.md`, within `enrich.llm.max_prompt_tokens`)
//! carries the item fenced as data, a few of those neighbours with their labels as examples, and
//! the candidates with their definitions; the answer's JSON schema allows exactly the candidate
//! ids, so whatever the model says, every label is in the taxonomy. Calls run
//! `enrich.llm.concurrency` at a time; a call that fails after the client's retries is reported
//! per item, never dropped: the caller tags that item by its other signals and marks it.

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

use super::knn::Neighbour;
use super::taxonomy::Taxonomy;
use crate::config::LlmTagConfig;
use crate::llm::{ChatRequest, LlmClient, LlmError, Message, Usage};
use crate::prompts::{Prompt, PromptError};
use crate::search::Hit;

/// What the LLM picked for one item.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmPick {
    /// Candidate ids, best first.
    pub labels: Vec<String>,
    pub usage: Usage,
    /// The model the server reported.
    pub model: String,
}

/// Asks an LLM to choose labels among retrieved candidates.
pub struct LlmLabeller<'a, L> {
    llm: &'a L,
    prompt: Prompt,
    taxonomy: Option<&'a Taxonomy>,
    settings: LlmTagConfig,
}

/// The first line of a text, as a title, and the rest.
fn split_title(text: &str) -> (&str, &str) {
    match text.split_once('\n') {
        Some((title, body)) if !body.trim().is_empty() => (title.trim(), body.trim()),
        _ => ("", text.trim()),
    }
}

impl<'a, L: LlmClient> LlmLabeller<'a, L> {
    /// A labeller with `prompts/tag.v{enrich.llm.prompt_version}.md` from `prompts_dir`.
    pub fn new(
        llm: &'a L,
        prompts_dir: &Path,
        taxonomy: Option<&'a Taxonomy>,
        settings: LlmTagConfig,
    ) -> Result<Self, PromptError> {
        let prompt = Prompt::load_version(prompts_dir, "tag", settings.prompt_version)?;
        Ok(Self {
            llm,
            prompt,
            taxonomy,
            settings,
        })
    }

    /// `id@version` of the prompt, for lineage.
    pub fn prompt_reference(&self) -> String {
        self.prompt.reference()
    }

    /// The LLM in use.
    pub fn llm(&self) -> &'a L {
        self.llm
    }

    /// The candidate ids for an item: kNN's labels by votes, then the nearest concepts.
    pub fn candidates(&self, neighbours: &[Neighbour], concepts: &[Hit]) -> Vec<String> {
        let mut votes: BTreeMap<&str, f32> = BTreeMap::new();
        for n in neighbours {
            for l in &n.labels {
                *votes.entry(l.as_str()).or_default() += n.similarity.max(0.0);
            }
        }
        let mut ranked: Vec<(&str, f32)> = votes.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let mut out: Vec<String> = Vec::new();
        let known = |id: &str| self.taxonomy.is_none_or(|t| t.contains(id));
        for id in ranked
            .into_iter()
            .map(|(id, _)| id)
            .chain(concepts.iter().map(|h| h.id.as_str()))
        {
            if out.len() >= self.settings.candidates.max(1) {
                break;
            }
            if known(id) && !out.iter().any(|o| o == id) {
                out.push(id.to_string());
            }
        }
        out
    }

    fn describe(&self, id: &str) -> String {
        let Some(c) = self.taxonomy.and_then(|t| t.get(id)) else {
            return format!("- {id}");
        };
        match c.definition.as_deref().map(str::trim) {
            Some(d) if !d.is_empty() && d != c.label => format!("- {id}: {}, {d}", c.label),
            _ if c.label != id => format!("- {id}: {}", c.label),
            _ => format!("- {id}"),
        }
    }

    /// The request for one item (its text, its neighbours, its candidates).
    pub fn request(
        &self,
        item_id: Option<&str>,
        text: &str,
        neighbours: &[Neighbour],
        candidates: &[String],
    ) -> Result<ChatRequest, PromptError> {
        let (title, body) = split_title(text);
        let examples: Vec<String> = neighbours
            .iter()
            .filter(|n| !n.labels.is_empty())
            .take(self.settings.examples)
            .map(|n| {
                let title: String = n.title.chars().take(120).collect();
                format!("- \"{title}\" -> {}", n.labels.join(", "))
            })
            .collect();
        let values = BTreeMap::from([
            (
                "candidates".to_string(),
                candidates
                    .iter()
                    .map(|c| self.describe(c))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            (
                "examples".to_string(),
                if examples.is_empty() {
                    "(none)".to_string()
                } else {
                    examples.join("\n")
                },
            ),
            ("title".to_string(), title.to_string()),
            ("body".to_string(), body.to_string()),
        ]);
        let rendered = self
            .prompt
            .render_within(&values, self.settings.max_prompt_tokens)?;
        let schema = json!({
            "type": "object",
            "properties": {"labels": {
                "type": "array", "items": {"enum": candidates},
                "minItems": 1, "maxItems": self.settings.max_labels.max(1),
            }},
            "required": ["labels"], "additionalProperties": false,
        });
        let mut request = ChatRequest::new(vec![Message::user(rendered)]).with_schema(schema);
        request.schema_name = "tags".into();
        request.sampling.max_tokens = self.settings.max_answer_tokens;
        request.context.prompt = Some(self.prompt.reference());
        request.context.item = item_id.map(str::to_string);
        Ok(request)
    }

    /// Ask for each item's labels, `enrich.llm.concurrency` calls at a time; one result per item,
    /// in order. An item without candidates needs no call (no labels).
    pub async fn pick_many(
        &self,
        items: &[(Option<&str>, &str)],
        neighbours: &[Vec<Neighbour>],
        concepts: &[Vec<Hit>],
    ) -> Vec<Result<LlmPick, String>> {
        let jobs = items.iter().enumerate().map(|(i, (id, text))| {
            let empty = Vec::new();
            let concepts = concepts.get(i).unwrap_or(&empty);
            let candidates = self.candidates(&neighbours[i], concepts);
            let request = self.request(*id, text, &neighbours[i], &candidates);
            async move {
                if candidates.is_empty() {
                    return Ok(LlmPick {
                        labels: Vec::new(),
                        usage: Usage::default(),
                        model: self.llm.model().to_string(),
                    });
                }
                let request = request.map_err(|e| e.to_string())?;
                let answer = self.llm.chat(&request).await.map_err(short_error)?;
                let labels = answer
                    .json
                    .as_ref()
                    .and_then(|v| v.get("labels"))
                    .and_then(Value::as_array)
                    .map(|a| {
                        let mut out: Vec<String> = Vec::new();
                        for l in a.iter().filter_map(Value::as_str) {
                            // The schema allows only candidates; a server that ignores
                            // schemas is held to them here.
                            if candidates.iter().any(|c| c == l) && !out.iter().any(|o| o == l) {
                                out.push(l.to_string());
                            }
                        }
                        out
                    })
                    .unwrap_or_default();
                if labels.is_empty() {
                    return Err("the answer picked no candidate label".to_string());
                }
                Ok(LlmPick {
                    labels,
                    usage: answer.usage,
                    model: answer.model,
                })
            }
        });
        stream::iter(jobs)
            .buffered(self.settings.concurrency.max(1))
            .collect()
            .await
    }
}

/// The LLM side of a tagger: the labeller and, with a taxonomy, its nearest concepts.
pub struct LlmParts<'a, S> {
    pub labeller: LlmLabeller<'a, crate::llm::AnyLlm>,
    pub concepts: Option<super::zeroshot::ZeroShotTagger<'a, S>>,
}

impl<S: crate::store::VectorStore> LlmParts<'_, S> {
    /// Each item's pick (or why there is none), given its text and neighbours.
    pub async fn picks(
        &self,
        texts: &[&str],
        neighbours: &[Vec<Neighbour>],
    ) -> Result<Vec<Result<LlmPick, String>>, crate::search::SearchError> {
        let concepts = match &self.concepts {
            Some(z) => z.candidates(texts).await?,
            None => Vec::new(),
        };
        let items: Vec<(Option<&str>, &str)> = texts.iter().map(|t| (None, *t)).collect();
        Ok(self.labeller.pick_many(&items, neighbours, &concepts).await)
    }
}

/// The `llm` tagger: the LLM's picks among retrieved candidates; when a call fails, kNN's
/// labels, marked with the reason.
pub struct LlmTagger<'a, S> {
    knn: super::knn::KnnTagger<'a, S>,
    llm: LlmParts<'a, S>,
}

impl<'a, S: crate::store::VectorStore> LlmTagger<'a, S> {
    /// A tagger asking `llm` with candidates from `knn`'s memory (and concepts).
    pub fn new(knn: super::knn::KnnTagger<'a, S>, llm: LlmParts<'a, S>) -> Self {
        Self { knn, llm }
    }
}

/// Tags from an LLM pick: best first, confidence falling by 0.1 a rank.
pub fn pick_tags(pick: &LlmPick, prompt: &str) -> Vec<super::Tag> {
    pick.labels
        .iter()
        .enumerate()
        .map(|(rank, label)| super::Tag {
            label: label.clone(),
            confidence: (1.0 - 0.1 * rank as f32).max(0.1),
            source: "llm".into(),
            evidence: vec![format!("{} via {prompt}", pick.model)],
        })
        .collect()
}

impl<S: crate::store::VectorStore> super::Tagger for LlmTagger<'_, S> {
    fn name(&self) -> &'static str {
        "llm"
    }

    async fn tag(
        &self,
        texts: &[&str],
    ) -> Result<Vec<Vec<super::Tag>>, crate::search::SearchError> {
        Ok(self
            .tag_items(texts)
            .await?
            .into_iter()
            .map(|t| t.tags)
            .collect())
    }

    async fn tag_items(
        &self,
        texts: &[&str],
    ) -> Result<Vec<super::Tagged>, crate::search::SearchError> {
        let k = self.knn.settings().k;
        let neighbours = self.knn.neighbours(texts, None, k).await?;
        let picks = self.llm.picks(texts, &neighbours).await?;
        let prompt = self.llm.labeller.prompt_reference();
        Ok(picks
            .into_iter()
            .zip(&neighbours)
            .map(|(pick, n)| match pick {
                Ok(pick) => super::Tagged {
                    tags: pick_tags(&pick, &prompt),
                    fallback_reason: None,
                    usage: pick.usage,
                },
                Err(reason) => super::Tagged {
                    tags: super::knn::vote(n, self.knn.settings()),
                    fallback_reason: Some(reason),
                    usage: Usage::default(),
                },
            })
            .collect())
    }
}

/// An LLM failure as one line for `fallback_reason`.
fn short_error(e: LlmError) -> String {
    let s = e.to_string();
    let s = s.lines().next().unwrap_or_default();
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_split_at_the_first_line() {
        assert_eq!(
            split_title("Oil rises\nPrices went up."),
            ("Oil rises", "Prices went up.")
        );
        assert_eq!(split_title("Just one line"), ("", "Just one line"));
    }
}
