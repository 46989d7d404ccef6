//! On-disk embedding cache.
//!
//! Eval runs and re-ingests embed the same texts again and again; with the cache they pay for the
//! model once. The key is sha256(model fingerprint, text), so a different model, truncation length
//! or pooling never reads another's vectors. The store is redb in multi-writer mode: several
//! processes (parallel tests, a CLI run beside a server) share one cache file safely.
//!
//! Small writes are buffered in memory and written [`FLUSH_AT`] at a time (and when the cache is
//! dropped): each redb commit is a durable, serialised transaction, and a server embedding one
//! query per request spent most of its time waiting on them (the load test's dense search: 92 ms
//! mean in the embed stage with a commit per query, 13 ms without). A crash loses at most the
//! buffered entries, which are recomputed on the next miss.

use std::path::{Path, PathBuf};

use redb::{Builder, ConcurrencyMode, ReadableDatabase, TableDefinition};
use sha2::{Digest, Sha256};

use super::EmbedError;

const VECTORS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("vectors_v1");

/// A persistent map from (model, text) to vector.
pub struct EmbeddingCache {
    db: redb::Database,
    path: PathBuf,
    /// Entries not yet written, answered from memory until they are.
    pending: std::sync::Mutex<std::collections::HashMap<[u8; 32], Vec<f32>>>,
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
            db,
            path: path.to_path_buf(),
            pending: std::sync::Mutex::new(std::collections::HashMap::new()),
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
            let pending = self.pending.lock().expect("cache buffer lock");
            keys.iter().map(|k| pending.get(k).cloned()).collect()
        };
        if buffered.iter().all(Option::is_some) {
            return Ok(buffered);
        }
        let stored = self.read_many(keys)?;
        Ok(buffered
            .into_iter()
            .zip(stored)
            .map(|(b, s)| b.or(s))
            .collect())
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

    /// Store many vectors: at least [`FLUSH_AT`] in one write transaction at once, fewer into
    /// the buffer (written with it once it holds [`FLUSH_AT`]).
    pub fn put_many(&self, entries: &[([u8; 32], &[f32])]) -> Result<(), EmbedError> {
        if entries.len() >= FLUSH_AT {
            return self.write(entries);
        }
        let full: Vec<([u8; 32], Vec<f32>)> = {
            let mut pending = self.pending.lock().expect("cache buffer lock");
            for (k, v) in entries {
                pending.insert(*k, v.to_vec());
            }
            if pending.len() < FLUSH_AT {
                return Ok(());
            }
            pending.drain().collect()
        };
        let refs: Vec<([u8; 32], &[f32])> = full.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        self.write(&refs)
    }

    /// Write the buffered entries now.
    pub fn flush(&self) -> Result<(), EmbedError> {
        let all: Vec<([u8; 32], Vec<f32>)> = self
            .pending
            .lock()
            .expect("cache buffer lock")
            .drain()
            .collect();
        let refs: Vec<([u8; 32], &[f32])> = all.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        self.write(&refs)
    }

    fn write(&self, entries: &[([u8; 32], &[f32])]) -> Result<(), EmbedError> {
        if entries.is_empty() {
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
        assert_eq!(cache.read_many(&keys[..1]).unwrap(), vec![None]);
        cache.put_many(&[(keys[FLUSH_AT - 1], &[2.0][..])]).unwrap();
        assert_eq!(
            cache.read_many(&[keys[0], keys[FLUSH_AT - 1]]).unwrap(),
            vec![Some(vec![1.0]), Some(vec![2.0])]
        );
    }
}
