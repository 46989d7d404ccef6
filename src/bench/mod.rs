//! Benchmarks: the speed and memory figures the README reports, each one the code path a user's
//! command takes. `signaldesk bench embed|llm|store|recommend|http` are shells over these.
//!
//! They sit above everything they measure (embed, store, llm, rank, eval's plots), so nothing in
//! the product depends on a benchmark.

pub mod embed;
pub mod http;
pub mod llm;
pub mod recommend;
pub mod store;
