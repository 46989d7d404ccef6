//! The model's tokenizer, built from the GGUF's own metadata, and its chat template.
//!
//! A GGUF of the `gpt2` tokenizer family carries its byte-level BPE vocabulary
//! (`tokenizer.ggml.tokens`), merges (`tokenizer.ggml.merges`), token types (3 = control, the
//! special tokens) and the pre-tokenizer's name (`tokenizer.ggml.pre`). Those are assembled into
//! a HuggingFace `tokenizers` JSON definition, so encoding is exactly the library's byte-level
//! BPE: lossless (`decode(encode(s)) == s` for any UTF-8) and fast. The chat template is the
//! GGUF's `tokenizer.chat_template`, rendered by minijinja with the settings transformers uses
//! (`trim_blocks`, `lstrip_blocks`), so prompts are what the model was trained on.

use candle_core::quantized::gguf_file;
use serde_json::{json, Value};
use tokenizers::Tokenizer;

use crate::llm::{LlmError, Message};

/// Tokenizer, special tokens and chat template of one GGUF model.
pub struct GgufTokenizer {
    tokenizer: Tokenizer,
    /// Control tokens as text (`<|im_start|>` ...): neutralised in message content.
    specials: Vec<String>,
    /// Their ids, in the same order.
    special_ids: Vec<u32>,
    pub eos_id: u32,
    pub bos_token: String,
    pub eos_token: String,
    /// The GGUF's chat template, parsed once at load (`None`: the model has none).
    chat_template: Option<minijinja::Environment<'static>>,
    /// Decoded text of every token id, for constrained decoding (may be partial UTF-8 bytes:
    /// stored as raw bytes).
    token_bytes: Vec<Vec<u8>>,
}

fn bad(msg: impl Into<String>) -> LlmError {
    LlmError::Model(msg.into())
}

/// A Jinja environment holding the parsed chat template, with the settings transformers renders
/// chat templates with (trim_blocks, lstrip_blocks, `raise_exception`).
fn chat_environment(template: String) -> Result<minijinja::Environment<'static>, LlmError> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template_owned("chat", template)
        .map_err(|e| bad(format!("chat template does not parse: {e}")))?;
    Ok(env)
}

/// GPT-2's byte ↔ printable-character table, which byte-level BPE vocabularies are written in.
fn byte_decoder() -> std::collections::HashMap<char, u8> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..=255u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (char::from_u32(c).unwrap_or('?'), b as u8))
        .collect()
}

/// The Hugging Face tokenizer a byte-level BPE GGUF describes: its vocabulary and merges, its
/// special tokens as added tokens, and llama.cpp's pre-tokenizer `pre`.
fn hf_tokenizer(
    tokens: &[String],
    merges: &[String],
    special_ids: &[usize],
    pre: &str,
) -> Result<Tokenizer, LlmError> {
    let added: Vec<Value> = special_ids
        .iter()
        .map(|&i| {
            json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), Value::from(i)))
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                                "trim_offsets": true, "use_regex": true});
    // llama.cpp's "smollm" pre-tokenizer splits every digit apart before GPT-2's regex,
    // as SmolLM's tokenizer.json does (Digits(individual) + ByteLevel).
    let pre_tokenizer = if pre == "smollm" {
        json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level]})
    } else {
        byte_level.clone()
    };
    let definition = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added, "normalizer": null,
        "pre_tokenizer": pre_tokenizer, "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    Tokenizer::from_bytes(definition.to_string().as_bytes()).map_err(|e| {
        bad(format!(
            "cannot build the tokenizer from GGUF metadata: {e}"
        ))
    })
}

impl GgufTokenizer {
    /// Build from GGUF metadata.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, LlmError> {
        let md = |k: &str| {
            content
                .metadata
                .get(k)
                .ok_or_else(|| bad(format!("GGUF metadata has no {k}")))
        };
        let model = md("tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| bad(e.to_string()))?;
        if model != "gpt2" {
            return Err(bad(format!(
                "tokenizer model {model:?} is not supported (byte-level BPE, \"gpt2\", is)"
            )));
        }
        let tokens: Vec<String> = md("tokenizer.ggml.tokens")?
            .to_vec()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|v| v.to_string().cloned().unwrap_or_default())
            .collect();
        let merges: Vec<String> = md("tokenizer.ggml.merges")?
            .to_vec()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|v| v.to_string().cloned().unwrap_or_default())
            .collect();
        let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| bad(e.to_string()))?
                .iter()
                .map(|t| t.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let pre = content
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let eos_id = md("tokenizer.ggml.eos_token_id")?
            .to_u32()
            .map_err(|e| bad(e.to_string()))?;
        let bos_id = content
            .metadata
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.to_u32().ok())
            .unwrap_or(eos_id);
        let special_ids: Vec<usize> = (0..tokens.len())
            .filter(|&i| types.get(i) == Some(&3))
            .collect();
        let tokenizer = hf_tokenizer(&tokens, &merges, &special_ids, &pre)?;
        let decoder = byte_decoder();
        let token_bytes = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if types.get(i) == Some(&3) {
                    // Control tokens never appear inside generated JSON.
                    Vec::new()
                } else {
                    t.chars()
                        .map(|c| decoder.get(&c).copied().unwrap_or(b'?'))
                        .collect()
                }
            })
            .collect();
        Ok(Self {
            tokenizer,
            specials: special_ids.iter().map(|&i| tokens[i].clone()).collect(),
            special_ids: special_ids.iter().map(|&i| i as u32).collect(),
            eos_id,
            bos_token: tokens.get(bos_id as usize).cloned().unwrap_or_default(),
            eos_token: tokens.get(eos_id as usize).cloned().unwrap_or_default(),
            chat_template: content
                .metadata
                .get("tokenizer.chat_template")
                .and_then(|v| v.to_string().ok())
                .cloned()
                .map(chat_environment)
                .transpose()?,
            token_bytes,
        })
    }

    /// Token ids of `text`; special-token text in it becomes the special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| bad(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// Token ids of `text` with no special-token handling beyond [`Self::encode`]'s: what forced
    /// text (constrained decoding) becomes.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        self.encode(text)
    }

    /// Each of the first `vocab_size` token ids as the bytes it stands for, for a token trie;
    /// control tokens are their name behind the 0xFF marker byte (toktrie's convention for
    /// special tokens), so they never match text.
    pub fn trie_words(&self, vocab_size: usize) -> Vec<Vec<u8>> {
        let mut words: Vec<Vec<u8>> = self.token_bytes.iter().take(vocab_size).cloned().collect();
        words.resize(vocab_size, Vec::new());
        for (id, name) in self.special_ids.iter().zip(&self.specials) {
            if let Some(w) = words.get_mut(*id as usize) {
                *w = [&[0xFF][..], name.as_bytes()].concat();
            }
        }
        words
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| bad(e.to_string()))
    }

    /// Raw bytes each token id stands for (empty for control tokens).
    pub fn token_bytes(&self) -> &[Vec<u8>] {
        &self.token_bytes
    }

    /// Message content with control-token text broken up (a zero-width space after the first
    /// character), so content can never close its turn or open another: data stays data.
    pub fn neutralise(&self, content: &str) -> String {
        let mut out = content.to_string();
        for s in &self.specials {
            if out.contains(s.as_str()) {
                let mut chars = s.chars();
                let first = chars.next().map(String::from).unwrap_or_default();
                out = out.replace(s.as_str(), &format!("{first}\u{200B}{}", chars.as_str()));
            }
        }
        out
    }

    /// The prompt for `messages` by the GGUF's chat template, ending with the assistant's turn
    /// opened. Content is passed as is; see [`Self::render_chat_safe`] for untrusted content.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String, LlmError> {
        let env = self.chat_template.as_ref().ok_or_else(|| {
            bad("the GGUF has no tokenizer.chat_template: cannot render chat messages")
        })?;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect();
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => self.bos_token,
                    eos_token => self.eos_token,
                })
            })
            .map_err(|e| bad(format!("chat template failed: {e}")))
    }

    /// [`Self::render_chat`] with every message's control-token text neutralised.
    pub fn render_chat_safe(&self, messages: &[Message]) -> Result<String, LlmError> {
        let safe: Vec<Message> = messages
            .iter()
            .map(|m| Message {
                role: m.role,
                content: self.neutralise(&m.content),
            })
            .collect();
        self.render_chat(&safe)
    }
}
