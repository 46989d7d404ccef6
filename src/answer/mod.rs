//! Answers over the archive: claims verified against retrieved items, every verdict with the
//! items and sentences it rests on.
//!
//! - [`sentences`]: sentences as byte spans, so evidence is cited where it stands.
//! - [`claims`]: labelled claims (SciFact's format) and their corpus, for training and eval.
//! - [`verifier`]: the local verifier (rationale and stance models over the embedder's vectors,
//!   trained at first use from the bundled claims; no LLM needed).
//! - [`verify`]: the chain: retrieve (hybrid) ▸ sentences ▸ judge ▸ decide, each stage timed.
//! - [`ask`]: the same chain for a question, then compose: an LLM answer citing only passages
//!   of its context, or the best passages themselves, or "not in the archive".

pub mod ask;
pub mod claims;
pub mod sentences;
pub mod verifier;
pub mod verify;

use serde::{Deserialize, Serialize};

/// What the archive says about a claim (SciFact's labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// An item supports the claim.
    Support,
    /// An item contradicts it.
    Contradict,
    /// Nothing retrieved decides it.
    #[serde(alias = "NOT ENOUGH INFO", alias = "NEI")]
    NotEnoughInfo,
}
