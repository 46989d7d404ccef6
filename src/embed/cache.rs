//! On-disk embedding cache.
//!
//! Eval runs and re-ingests embed the same texts again and again; with the cache they pay for the
//! model once. The key is sha256(model fingerprint, text), so a different model, truncation length
//! or pooling never reads another's vectors. The store is redb in multi-writer mode: several
//! processes (parallel tests, a CLI run beside a server) share one cache file safely.
//!
//! Small writes are buffered in memory and committed [`FLUSH_AT`] at a time on a background
//! thread (and when the cache is flushed or dropped): each redb commit is a durable, serialised
//! transaction, and a server embedding one query per request spent most of its time waiting on
//! them (the load test's dense search: 92 ms mean in the embed stage with a commit per query,
//! 13 ms without). While a batch is being committed its entries are still answered from memory,
//! and new entries keep buffering; one commit runs at a time. A crash loses at most the buffered
//! entries, which are recomputed on the next miss.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use redb::{Builder, ConcurrencyMode, ReadableDatabase, TableDefinition};
use sha2::{Digest, Sha256};

use super::EmbedError;

const VECTORS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("vectors_v1");

type Entries = HashMap<[u8; 32], Vec<f32>>;

/// A persistent map from (model, text) to vector.
pub struct EmbeddingCache {
    shared: Arc<Shared>,
}

/// What the cache and its background committer share.
struct Shared {
    db: redb::Database,
    path: PathBuf,
    buffers: Mutex<Buffers>,
    /// Signalled when a background commit ends.
    committed: Condvar,
}

#[derive(Default)]
struct Buffers {
    /// Entries not yet handed to a commit.
    pending: Entries,
    /// The batch a background commit is writing, answered from memory until it lands.
    committing: Option<Arc<Entries>>,
}

/// Buffered entries written in one transaction; a larger write goes straight to disk.
pub const FLUSH_AT: usize = 256;

impl EmbeddingCache {
    /// Open (or create) the cache file at `path`.
    pub fn open(path: &Path) -> Result<Self, EmbedError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| cache_err(path, e))?;
        }
        let db = Builder::new()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(|e| cache_err(path, e))?;
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                path: path.to_path_buf(),
                buffers: Mutex::new(Buffers::default()),
                committed: Condvar::new(),
            }),
        })
    }

    /// The cache key of `text` under the model with `fingerprint`.
    pub fn key(fingerprint: &str, text: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(fingerprint.as_bytes());
        h.update([0u8]);
        h.update(text.as_bytes());
        h.finalize().into()
    }

    /// Look up many keys in one read transaction; `None` where absent.
    pub fn get_many(&self, keys: &[[u8; 32]]) -> Result<Vec<Option<Vec<f32>>>, EmbedError> {
        let buffered: Vec<Option<Vec<f32>>> = {
            let buffers = self.shared.buffers.lock().expect("cache buffer lock");
            keys.iter()
                .map(|k| {
                    buffers.pending.get(k).cloned().or_else(|| {
                        buffers
                            .committing
                            .as_ref()
                            .and_then(|batch| batch.get(k).cloned())
                    })
                })
                .collect()
        };
        if buffered.iter().all(Option::is_some) {
            return Ok(buffered);
        }
        let stored = self.shared.read_many(keys)?;
        Ok(buffered
            .into_iter()
            .zip(stored)
            .map(|(b, s)| b.or(s))
            .collect())
    }

    /// Store many vectors: at least [`FLUSH_AT`] in one write transaction at once, fewer into
    /// the buffer, which a background thread commits once it holds [`FLUSH_AT`].
    pub fn put_many(&self, entries: &[([u8; 32], &[f32])]) -> Result<(), EmbedError> {
        if entries.len() >= FLUSH_AT {
            return self.shared.write(entries.iter().map(|(k, v)| (k, *v)));
        }
        let batch = {
            let mut buffers = self.shared.buffers.lock().expect("cache buffer lock");
            for (k, v) in entries {
                buffers.pending.insert(*k, v.to_vec());
            }
            if buffers.pending.len() < FLUSH_AT || buffers.committing.is_some() {
                return Ok(());
            }
            let batch = Arc::new(std::mem::take(&mut buffers.pending));
            buffers.committing = Some(Arc::clone(&batch));
            batch
        };
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("embed-cache-commit".into())
            .spawn({
                let batch = Arc::clone(&batch);
                move || {
                    if let Err(e) = shared.commit(&batch) {
                        tracing::warn!(error = %e, entries = batch.len(),
                            "embedding cache: a buffered batch was not written");
                    }
                }
            });
        if let Err(e) = spawned {
            // No thread to spare: commit here instead.
            tracing::debug!(error = %e, "embedding cache: committing on the caller's thread");
            self.shared.commit(&batch)?;
        }
        Ok(())
    }

    /// Wait for a background commit, then write the buffered entries now.
    pub fn flush(&self) -> Result<(), EmbedError> {
        let all = {
            let mut buffers = self.shared.buffers.lock().expect("cache buffer lock");
            while buffers.committing.is_some() {
                buffers = self
                    .shared
                    .committed
                    .wait(buffers)
                    .expect("cache buffer lock");
            }
            std::mem::take(&mut buffers.pending)
        };
        self.shared
            .write(all.iter().map(|(k, v)| (k, v.as_slice())))
    }
}

impl Shared {
    /// Write the batch being committed, then clear it and wake whoever waits in `flush`.
    fn commit(&self, batch: &Entries) -> Result<(), EmbedError> {
        let written = self.write(batch.iter().map(|(k, v)| (k, v.as_slice())));
        self.buffers.lock().expect("cache buffer lock").committing = None;
        self.committed.notify_all();
        written
    }

    fn read_many(&self, keys: &[[u8; 32]]) -> Result<Vec<Option<Vec<f32>>>, EmbedError> {
        let txn = self.db.begin_read().map_err(|e| cache_err(&self.path, e))?;
        let table = match txn.open_table(VECTORS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
            Err(e) => return Err(cache_err(&self.path, e)),
        };
        keys.iter()
            .map(|k| {
                let hit = table
                    .get(k.as_slice())
                    .map_err(|e| cache_err(&self.path, e))?;
                Ok(hit.map(|v| decode(v.value())))
            })
            .collect()
    }

    fn write<'e>(
        &self,
        entries: impl ExactSizeIterator<Item = (&'e [u8; 32], &'e [f32])>,
    ) -> Result<(), EmbedError> {
        if entries.len() == 0 {
            return Ok(());
        }
        let txn = self
            .db
            .begin_write()
            .map_err(|e| cache_err(&self.path, e))?;
        {
            let mut table = txn
                .open_table(VECTORS)
                .map_err(|e| cache_err(&self.path, e))?;
            for (key, vector) in entries {
                table
                    .insert(key.as_slice(), encode(vector).as_slice())
                    .map_err(|e| cache_err(&self.path, e))?;
            }
        }
        txn.commit().map_err(|e| cache_err(&self.path, e))
    }
}

impl Drop for EmbeddingCache {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "embedding cache: buffered entries were not written");
        }
    }
}

fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn cache_err(path: &Path, e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Cache(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_and_keys_separate_models() {
        let dir = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::open(&dir.path().join("c.redb")).unwrap();
        let a = EmbeddingCache::key("model-a", "hello");
        let b = EmbeddingCache::key("model-b", "hello");
        assert_ne!(a, b);
        assert_eq!(cache.get_many(&[a]).unwrap(), vec![None]);
        cache.put_many(&[(a, &[0.5, -1.25, 3.0][..])]).unwrap();
        assert_eq!(
            cache.get_many(&[a]).unwrap(),
            vec![Some(vec![0.5, -1.25, 3.0])],
            "a buffered entry is answered before it is written"
        );
        drop(cache);
        let cache = EmbeddingCache::open(&dir.path().join("c.redb")).unwrap();
        assert_eq!(
            cache.get_many(&[a, b]).unwrap(),
            vec![Some(vec![0.5, -1.25, 3.0]), None]
        );
    }

    #[test]
    fn small_writes_reach_disk_once_the_buffer_fills() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let cache = EmbeddingCache::open(&path).unwrap();
        let keys: Vec<[u8; 32]> = (0..FLUSH_AT)
            .map(|i| EmbeddingCache::key("m", &i.to_string()))
            .collect();
        for k in &keys[..FLUSH_AT - 1] {
            cache.put_many(&[(*k, &[1.0][..])]).unwrap();
        }
        assert_eq!(cache.shared.read_many(&keys[..1]).unwrap(), vec![None]);
        cache.put_many(&[(keys[FLUSH_AT - 1], &[2.0][..])]).unwrap();
        assert_eq!(
            cache.get_many(&[keys[0], keys[FLUSH_AT - 1]]).unwrap(),
            vec![Some(vec![1.0]), Some(vec![2.0])],
            "entries being committed are still answered"
        );
        // The background commit lands without a flush.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let landed = loop {
            let stored = cache
                .shared
                .read_many(&[keys[0], keys[FLUSH_AT - 1]])
                .unwrap();
            if stored.iter().all(Option::is_some) || std::time::Instant::now() > deadline {
                break stored;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(landed, vec![Some(vec![1.0]), Some(vec![2.0])]);
        assert!(cache.shared.buffers.lock().unwrap().pending.is_empty());
    }
}
