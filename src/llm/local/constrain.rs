//! Constrained decoding with llguidance, the engine llama.cpp and vLLM use, driven by the local
//! model's own tokenizer.
//!
//! It replaced a hand-written byte-level JSON-schema matcher that could lead the model into dead
//! ends (a number bounded to 0–1 accepted the prefix `1.5`, after which no token was allowed) and
//! let invalid JSON out (lone `\uXXXX` surrogates). llguidance compiles the schema to a grammar
//! and computes, before each step, the exact set of tokens that keep the output completable: every
//! prefix it allows can be finished, and what it finishes matches the schema.
//!
//! Output is compact JSON (no whitespace between tokens, `,` and `:` separators), which costs the
//! fewest tokens.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use super::tokenizer::GgufTokenizer;
use crate::llm::LlmError;

/// The model's tokenizer as llguidance sees it: its token trie, and real tokenization (used for
/// forced text such as a fixed property name).
struct GgufTokEnv {
    trie: TokTrie,
    tokenizer: Arc<GgufTokenizer>,
}

impl TokenizerEnv for GgufTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// The model picks its own tokenization of text the grammar forces (`{"label":"` ...), as
    /// it did with the hand-written matcher. Forcing the canonical tokenization of compact JSON
    /// (`":"` as one token, rare in training text) cut the tagging floor from 11/20 to 6/20
    /// (tests/llm_local.rs, `local_tagging_clears_the_quality_floor`).
    fn tokenize_is_canonical(&self) -> bool {
        false
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Forced text is JSON, hence UTF-8; a cut character would only cost a longer encoding.
        self.tokenizer
            .encode_plain(&String::from_utf8_lossy(s))
            .unwrap_or_default()
    }
}

/// Builds a token-level matcher for a JSON schema; one per model, shared by every request.
pub struct Constraints {
    factory: ParserFactory,
}

impl Constraints {
    /// The engine for `tokenizer`'s vocabulary (its first `vocab_size` tokens: the model's logits).
    pub fn new(tokenizer: Arc<GgufTokenizer>, vocab_size: usize) -> Result<Self, LlmError> {
        let words = tokenizer.trie_words(vocab_size);
        let info = TokRxInfo::new(words.len() as u32, tokenizer.eos_id);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(GgufTokEnv { trie, tokenizer });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| LlmError::Model(format!("constrained decoding setup: {e}")))?;
        factory.quiet();
        Ok(Self { factory })
    }

    /// A fresh matcher for answers that must satisfy `schema`.
    pub fn matcher(&self, schema: &Value) -> Result<Matcher, LlmError> {
        let mut schema = schema.clone();
        if let Some(obj) = schema.as_object_mut() {
            obj.insert(
                "x-guidance".into(),
                serde_json::json!({
                    "whitespace_flexible": false,
                    // \uXXXX escapes of any character, surrogate pairs counted as one
                    // character; lone surrogates (invalid JSON for serde_json) are refused.
                    "json_allow_general_unicode_escapes": true,
                    "item_separator": ",",
                    "key_separator": ":",
                }),
            );
        }
        let parser = self
            .factory
            .create_parser(TopLevelGrammar::from_json_schema(schema))
            .map_err(|e| LlmError::Schema(format!("cannot constrain decoding to it: {e}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(LlmError::Schema(format!(
                "cannot constrain decoding to it: {e}"
            )));
        }
        Ok(matcher)
    }
}
