//! Shared test helpers: paths to the project's own models and fixtures, and a tiny BERT writer.
#![allow(dead_code)]

pub mod nats;
pub mod qdrant;
pub mod scripted_llm;
pub mod server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};

/// The repo root (tests read only the project's own files). Read at run time: cargo and nextest
/// set it for every test, while the compile-time value is wherever the binary was first built, and
/// a build cache shared between clones keeps test binaries built in another clone.
pub fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The default embedding model, fetched by scripts/fetch-models.sh. Its absence fails the test:
/// the test command fetches it first, so a missing model is a setup bug, never a skip.
pub fn minilm_dir() -> PathBuf {
    let dir = root().join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-models.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// The bundled sentence-transformers reference vectors.
pub fn reference_sample() -> PathBuf {
    root().join("golden-datasets/scifact-minilm-reference/scifact_minilm_st.jsonl.gz")
}

/// The signaldesk binary, configured for tests: real models dir, a private cache and data dir.
pub fn signaldesk(work: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signaldesk"));
    cmd.current_dir(work)
        .env_remove("SIGNALDESK_CONFIG")
        .env("SIGNALDESK_MODELS_DIR", root().join("models"))
        .env("SIGNALDESK_PROMPTS_DIR", root().join("prompts"))
        // The verifier's bundled training data, found from any working directory.
        .env(
            "SIGNALDESK_ANSWER__TRAINING_CLAIMS",
            root().join("golden-datasets/scifact-claims/tune.jsonl"),
        )
        .env(
            "SIGNALDESK_ANSWER__TRAINING_CORPUS",
            root().join("golden-datasets/scifact/corpus.jsonl.gz"),
        )
        .env("SIGNALDESK_CACHE_DIR", work.join("cache"))
        .env("SIGNALDESK_DATA_DIR", work.join("data"));
    cmd
}

/// Run and return the output, with stderr shown on failure to decode.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("signaldesk binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Options of a tiny sentence-transformers BERT written by [`write_tiny_bert`].
pub struct TinyBert {
    pub hidden: usize,
    pub layers: usize,
    pub max_seq_length: usize,
    /// `mean`, `cls` or `max`.
    pub pooling: &'static str,
    pub normalize: bool,
    pub seed: u64,
}

impl Default for TinyBert {
    fn default() -> Self {
        Self {
            hidden: 32,
            layers: 2,
            max_seq_length: 64,
            pooling: "mean",
            normalize: true,
            seed: 1,
        }
    }
}

/// Write a complete sentence-transformers model dir with random BERT weights (the real
/// all-MiniLM-L6-v2 tokenizer, so texts tokenize as in production).
pub fn write_tiny_bert(dir: &Path, spec: &TinyBert) {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let vocab = 30522;
    let (h, inter) = (spec.hidden, spec.hidden * 4);
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({
            "architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab,
            "hidden_size": h, "num_hidden_layers": spec.layers, "num_attention_heads": 2,
            "intermediate_size": inter, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 128,
            "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
            "pad_token_id": 0
        })
        .to_string(),
    )
    .unwrap();
    std::fs::copy(
        minilm_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        format!(
            "{{\"max_seq_length\": {}, \"do_lower_case\": false}}",
            spec.max_seq_length
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        serde_json::json!({
            "word_embedding_dimension": h,
            "pooling_mode_cls_token": spec.pooling == "cls",
            "pooling_mode_mean_tokens": spec.pooling == "mean",
            "pooling_mode_max_tokens": spec.pooling == "max",
            "pooling_mode_mean_sqrt_len_tokens": false
        })
        .to_string(),
    )
    .unwrap();
    let mut modules = vec![
        serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if spec.normalize {
        modules.push(serde_json::json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
    }
    std::fs::write(
        dir.join("modules.json"),
        serde_json::Value::from(modules).to_string(),
    )
    .unwrap();

    let mut rng = spec
        .seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut random = |shape: &[usize]| -> Tensor {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    };
    let ones = |n: usize| Tensor::ones(n, DType::F32, &Device::Cpu).unwrap();
    let zeros = |n: usize| Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap();
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert(
        "embeddings.word_embeddings.weight".into(),
        random(&[vocab, h]),
    );
    t.insert(
        "embeddings.position_embeddings.weight".into(),
        random(&[128, h]),
    );
    t.insert(
        "embeddings.token_type_embeddings.weight".into(),
        random(&[2, h]),
    );
    t.insert("embeddings.LayerNorm.weight".into(), ones(h));
    t.insert("embeddings.LayerNorm.bias".into(), zeros(h));
    for l in 0..spec.layers {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", inter, h),
            ("output.dense", h, inter),
        ] {
            t.insert(format!("{p}.{name}.weight"), random(&[out, inp]));
            t.insert(format!("{p}.{name}.bias"), random(&[out]));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            t.insert(format!("{p}.{ln}.weight"), ones(h));
            t.insert(format!("{p}.{ln}.bias"), zeros(h));
        }
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
}

/// The local LLM, fetched by scripts/fetch-models.sh. Its absence fails the test, never skips it.
pub fn smollm_path() -> PathBuf {
    let path = root().join("models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Query id → ranked doc ids, from a TREC run file.
pub fn read_trec(path: &Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut runs: std::collections::BTreeMap<String, Vec<(usize, String)>> =
        std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let cols: Vec<&str> = line.split(' ').collect();
        runs.entry(cols[0].to_string())
            .or_default()
            .push((cols[3].parse().unwrap(), cols[2].to_string()));
    }
    runs.into_iter()
        .map(|(q, mut r)| {
            r.sort();
            (q, r.into_iter().map(|(_, d)| d).collect())
        })
        .collect()
}

/// `n` JSONL articles `item-0` … (3 to 7 sentences each, so they chunk at small token budgets).
pub fn write_articles(path: &Path, n: usize) {
    let rows: String = (0..n)
        .map(|id| {
            let body: String = (0..(3 + id % 5))
                .map(|s| format!("Sentence {s} of story {id} covers markets, weather and sport. "))
                .collect();
            serde_json::json!({"id": format!("item-{id}"), "title": format!("Story {id}"), "body": body})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, rows).unwrap();
}
