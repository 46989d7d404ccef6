//! The LLM response cache: identical calls are answered from disk.
//!
//! The key is a hash of everything that determines an answer: provider, endpoint (server URL or
//! model file), model, prompt
//! id@version, the rendered messages, the schema and the sampling settings. Modes:
//! `off` (pass through), `readwrite` (hits answered, misses computed and stored), `read`
//! (nothing written; a miss on a remote provider is an error naming the prompt and item, so an
//! offline eval run can never spend money or drift; a deterministic local provider recomputes).
//! Stored in redb (one file, transactional, safe across processes).

use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::{Builder, ConcurrencyMode, ReadableDatabase, TableDefinition};
use sha2::{Digest, Sha256};

use super::{accounting, ChatRequest, ChatResponse, LlmClient, LlmError, TextDeltas};

const RESPONSES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("llm_responses_v1");

pub use crate::config::CacheMode;

/// Any client, with the cache in front.
pub struct CachedClient<C> {
    inner: C,
    mode: CacheMode,
    db: Option<Db>,
    path: PathBuf,
}

/// The cache file, opened for writing, or read-only in `read` mode so that replaying a
/// committed cache (eval/cache/) leaves the file byte for byte as it was.
enum Db {
    ReadWrite(redb::Database),
    ReadOnly(redb::ReadOnlyDatabase),
}

impl Db {
    fn begin_read(&self) -> Result<redb::ReadTransaction, redb::TransactionError> {
        match self {
            Db::ReadWrite(db) => db.begin_read(),
            Db::ReadOnly(db) => db.begin_read(),
        }
    }
}

fn cache_err(path: &Path, e: impl std::fmt::Display) -> LlmError {
    LlmError::Cache(format!("{}: {e}", path.display()))
}

impl<C: LlmClient> CachedClient<C> {
    /// Wrap `inner`; the cache file is created on first use (not at all in `off` mode).
    pub fn new(inner: C, path: &Path, mode: CacheMode) -> Result<Self, LlmError> {
        let mut builder = Builder::new();
        builder.set_concurrency_mode(ConcurrencyMode::MultiWriter);
        let db = if mode == CacheMode::Off {
            None
        } else if mode == CacheMode::Read && path.is_file() {
            Some(Db::ReadOnly(
                builder
                    .open_read_only(path)
                    .map_err(|e| cache_err(path, e))?,
            ))
        } else {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| cache_err(path, e))?;
            }
            Some(Db::ReadWrite(
                builder.create(path).map_err(|e| cache_err(path, e))?,
            ))
        };
        Ok(Self {
            inner,
            mode,
            db,
            path: path.to_path_buf(),
        })
    }

    /// The wrapped client.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// The cache key of `request` for this client.
    pub fn key(&self, request: &ChatRequest) -> [u8; 32] {
        let mut h = Sha256::new();
        let parts = serde_json::json!({
            "provider": self.inner.provider(),
            "endpoint": self.inner.endpoint(),
            "model": self.inner.model(),
            "prompt": request.context.prompt,
            "messages": request.messages,
            "schema": request.json_schema,
            "schema_name": request.schema_name,
            "sampling": request.sampling,
        });
        h.update(parts.to_string().as_bytes());
        h.finalize().into()
    }

    fn lookup(&self, key: &[u8; 32]) -> Result<Option<ChatResponse>, LlmError> {
        let Some(db) = &self.db else { return Ok(None) };
        let txn = db.begin_read().map_err(|e| cache_err(&self.path, e))?;
        let table = match txn.open_table(RESPONSES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(cache_err(&self.path, e)),
        };
        let Some(hit) = table
            .get(key.as_slice())
            .map_err(|e| cache_err(&self.path, e))?
        else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(hit.value()).ok())
    }

    fn store(&self, key: &[u8; 32], response: &ChatResponse) -> Result<(), LlmError> {
        let Some(Db::ReadWrite(db)) = &self.db else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(response).map_err(|e| cache_err(&self.path, e))?;
        let txn = db.begin_write().map_err(|e| cache_err(&self.path, e))?;
        {
            let mut table = txn
                .open_table(RESPONSES)
                .map_err(|e| cache_err(&self.path, e))?;
            table
                .insert(key.as_slice(), bytes.as_slice())
                .map_err(|e| cache_err(&self.path, e))?;
        }
        txn.commit().map_err(|e| cache_err(&self.path, e))
    }
}

impl<C: LlmClient> LlmClient for CachedClient<C> {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn endpoint(&self) -> String {
        self.inner.endpoint()
    }

    fn deterministic(&self) -> bool {
        self.inner.deterministic()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.answer(request, None).await
    }

    /// A hit is replayed as one piece; a miss streams from the provider.
    async fn chat_streaming(
        &self,
        request: &ChatRequest,
        deltas: &TextDeltas,
    ) -> Result<ChatResponse, LlmError> {
        self.answer(request, Some(deltas)).await
    }
}

impl<C: LlmClient> CachedClient<C> {
    /// The cached answer, or the provider's (streamed to `deltas` when given), stored.
    async fn answer(
        &self,
        request: &ChatRequest,
        deltas: Option<&TextDeltas>,
    ) -> Result<ChatResponse, LlmError> {
        if self.mode == CacheMode::Off {
            return self.call_provider(request, deltas).await;
        }
        let started = Instant::now();
        let key = self.key(request);
        if let Some(mut hit) = self.lookup(&key)? {
            hit.cache_hit = true;
            hit.retries = 0;
            hit.retry_delays_ms.clear();
            hit.latency_ms = started.elapsed().as_secs_f64() * 1e3;
            accounting::record(&hit, 0.0);
            if let Some(d) = deltas {
                let _ = d.send(hit.text.clone());
            }
            return Ok(hit);
        }
        if self.mode == CacheMode::Read && !self.inner.deterministic() {
            return Err(LlmError::CacheMiss {
                prompt: request.context.prompt.clone().unwrap_or_else(|| "-".into()),
                item: request.context.item.clone().unwrap_or_else(|| "-".into()),
                provider: self.inner.provider().to_string(),
                model: self.inner.model().to_string(),
            });
        }
        let response = self.call_provider(request, deltas).await?;
        if self.mode == CacheMode::Readwrite {
            self.store(&key, &response)?;
        }
        Ok(response)
    }

    async fn call_provider(
        &self,
        request: &ChatRequest,
        deltas: Option<&TextDeltas>,
    ) -> Result<ChatResponse, LlmError> {
        match deltas {
            Some(d) => self.inner.chat_streaming(request, d).await,
            None => self.inner.chat(request).await,
        }
    }
}
