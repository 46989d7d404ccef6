//! `signaldesk llm chat|serve`: one message to the configured LLM, or the local model served
//! over the OpenAI protocol.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use signaldesk::Config;

#[derive(Subcommand)]
pub enum LlmCommand {
    /// Send one message and print the answer (and, with --json, usage and latency).
    ///
    /// The provider is llm.provider (auto: the OpenAI-compatible server at llm.base_url if set,
    /// else the local model). With --json-schema the answer is JSON satisfying the schema:
    /// constrained while decoding locally, validated (and repaired once) from a server.
    Chat {
        /// The user message.
        message: String,
        /// Which LLM answers (default: llm.provider).
        #[arg(long, value_enum)]
        provider: Option<signaldesk::llm::LlmProvider>,
        /// A JSON Schema file the answer must satisfy.
        #[arg(long, value_name = "FILE")]
        json_schema: Option<PathBuf>,
        /// A system message.
        #[arg(long)]
        system: Option<String>,
        /// Most tokens in the answer (clamped to the room the prompt leaves in the context).
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// 0 is greedy (deterministic).
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Nucleus sampling: sample only from the most likely tokens holding this much
        /// probability (with a temperature above 0).
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Seed of the sampler, for reproducible sampled answers.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Response cache (default: llm.cache).
        #[arg(long, value_enum)]
        cache: Option<signaldesk::llm::CacheMode>,
        /// Print the whole response as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Answer OpenAI-compatible /v1/chat/completions with the local model until Ctrl-C.
    Serve {
        /// Address to listen on (port 0 picks a free one; the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
    },
}

pub async fn run(config: &Config, cmd: LlmCommand) -> Result<ExitCode> {
    use signaldesk::llm::{AnyLlm, ChatRequest, LlmClient, Message, Sampling};
    match cmd {
        LlmCommand::Chat {
            message,
            provider,
            json_schema,
            system,
            max_tokens,
            temperature,
            top_p,
            seed,
            cache,
            json,
        } => {
            let llm = AnyLlm::from_config(config, provider, cache)?;
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(Message::system(s));
            }
            messages.push(Message::user(message));
            let mut request = ChatRequest::new(messages);
            request.sampling = Sampling {
                max_tokens,
                temperature,
                top_p,
                seed,
                ..Sampling::default()
            };
            if let Some(path) = json_schema {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let schema: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                signaldesk::llm::Schema::parse(&schema)
                    .with_context(|| format!("{}", path.display()))?;
                request.schema_name = path
                    .file_stem()
                    .map(|s| {
                        s.to_string_lossy()
                            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                    })
                    .unwrap_or_else(|| "answer".into());
                request.json_schema = Some(schema);
            }
            let answer = llm.chat(&request).await?;
            if json {
                outln!("{}", serde_json::to_string(&answer)?);
            } else {
                outln!("{}", answer.text);
                eprintln!(
                    "[{} {} | {} prompt + {} completion tokens | {:.0} ms | retries {} | cache {}]",
                    answer.provider,
                    answer.model,
                    answer.usage.prompt_tokens,
                    answer.usage.completion_tokens,
                    answer.latency_ms,
                    answer.retries,
                    if answer.cache_hit { "hit" } else { "miss" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LlmCommand::Serve { addr } => {
            let llm = Arc::new(signaldesk::llm::local::LocalLlm::from_config(config)?);
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let bound = listener.local_addr()?;
            outln!(
                "signaldesk llm serve: {} on http://{bound}/v1/chat/completions",
                llm.model()
            );
            std::io::stdout().flush()?;
            let options = signaldesk::llm::serve::ServeOptions::from_config(&config.llm);
            signaldesk::llm::serve::serve(llm, listener, options).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
