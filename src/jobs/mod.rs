//! Jobs over files that use the embedder but are not part of it: `signaldesk embed` (a JSONL file
//! in, vectors out) and `signaldesk bench embed`. They sit above `embed`, `chunk` and `ingest`'s
//! readers, so the embedder itself depends on none of them.

pub mod bench_embed;
pub mod bench_store;
pub mod embed_file;
