//! signaldesk: content intelligence for newsrooms and audio platforms.
//!
//! Data flows one way: [`ingest`] reads content, [`chunk`] splits it to the model's budget,
//! [`embed`] turns it into vectors locally with candle, [`store`] keeps them in Qdrant (embedded
//! or server), and [`eval`] measures the result against golden datasets; enrichment and ranking
//! build on these. The CLI (`src/main.rs`) and the HTTP API are thin shells over
//! this library: they parse, call in, and print.

pub mod answer;
pub mod api;
pub mod bench;
pub mod chunk;
pub mod config;
pub mod content;
pub mod embed;
pub mod enrich;
pub mod eval;
pub mod fingerprint;
pub mod ingest;
pub mod llm;
pub mod observe;
pub mod prompts;
pub mod rank;
pub mod search;
pub mod store;
pub mod stream;

pub use config::Config;
pub use embed::Embedder;
