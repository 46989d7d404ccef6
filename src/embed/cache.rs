//! On-disk embedding cache.
//!
//! Eval runs and re-ingests embed the same texts again and again; with the cache they pay for the
//! model once. The key is sha256(model fingerprint, text), so a different model, truncation length
//! or pooling never reads another's vectors. The store is redb in multi-writer mode: several
//! processes (parallel tests, a CLI run beside a server) share one cache file safely.

use std::path::{Path, PathBuf};

use redb::{Builder, ConcurrencyMode, ReadableDatabase, TableDefinition};
use sha2::{Digest, Sha256};

use super::EmbedError;

const VECTORS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("vectors_v1");

/// A persistent map from (model, text) to vector.
pub struct EmbeddingCache {
    db: redb::Database,
    path: PathBuf,
}

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

    /// Store many vectors in one write transaction.
    pub fn put_many(&self, entries: &[([u8; 32], &[f32])]) -> Result<(), EmbedError> {
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
        drop(cache);
        let cache = EmbeddingCache::open(&dir.path().join("c.redb")).unwrap();
        assert_eq!(
            cache.get_many(&[a, b]).unwrap(),
            vec![Some(vec![0.5, -1.25, 3.0]), None]
        );
    }
}
