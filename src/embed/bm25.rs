//! BM25 sparse vectors, computed with Qdrant's own tokenizer pipeline (English stemming and stop
//! words), so the embedded store and a Qdrant server score text identically.
//!
//! A document vector holds BM25's term-frequency part, normalised by document length against the
//! collection's average length; the store applies IDF at query time (the sparse vector is
//! configured with Qdrant's IDF modifier). The average length must be in the encoder's own token
//! units, which [`Bm25Encoder::document_length`] measures exactly.

use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use qdrant_edge::external::ordered_float::NotNan;

/// BM25's term-frequency saturation.
pub const K1: f64 = 1.2;
/// BM25's length normalisation.
pub const B: f64 = 0.75;

/// Turns text into BM25 sparse vectors.
pub struct Bm25Encoder {
    model: EdgeBm25,
    /// Same pipeline with b = 0: its weights depend on term frequency alone, which recovers
    /// document length in tokens.
    unnormalised: EdgeBm25,
}

fn build(b: f64, avg_len: f64) -> EdgeBm25 {
    let config = EdgeBm25Config {
        k: NotNan::new(K1).expect("constant"),
        b: NotNan::new(b).expect("constant"),
        avg_len: NotNan::new(avg_len.max(1.0))
            .unwrap_or_else(|_| NotNan::new(256.0).expect("constant")),
        language: Some("english".into()),
        ..EdgeBm25Config::default()
    };
    EdgeBm25::new(config).expect("English BM25 with valid constants builds")
}

impl Bm25Encoder {
    /// An encoder for a collection whose documents average `avg_len` tokens.
    pub fn new(avg_len: f64) -> Self {
        Self {
            model: build(B, avg_len),
            unnormalised: build(0.0, 256.0),
        }
    }

    /// An encoder used only for [`Self::document_length`], which does not depend on the average.
    pub fn length_counter() -> Self {
        Self::new(256.0)
    }

    /// The sparse vector of a stored document (chunk).
    pub fn document(&self, text: &str) -> Sparse {
        let v = self.model.embed_document(text);
        Sparse {
            indices: v.indices,
            values: v.values,
        }
    }

    /// The sparse vector of a query.
    pub fn query(&self, text: &str) -> Sparse {
        let v = self.model.embed_query(text);
        Sparse {
            indices: v.indices,
            values: v.values,
        }
    }

    /// Tokens of `text` after tokenising, stop-word removal and stemming.
    pub fn document_length(&self, text: &str) -> f64 {
        // With b = 0 a term's weight is tf·(k+1)/(tf+k); invert it for tf and sum.
        self.unnormalised
            .embed_document(text)
            .values
            .iter()
            .map(|&w| {
                let w = f64::from(w);
                (w * K1 / (K1 + 1.0 - w)).round()
            })
            .sum()
    }
}

/// A sparse vector (BM25 term weights).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Sparse {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_queries_share_terms_and_lengths_are_exact() {
        let enc = Bm25Encoder::new(10.0);
        let d = enc.document("The central banks raised interest rates; banking stocks fell.");
        let q = enc.query("bank rate");
        assert!(!d.indices.is_empty());
        // Stemming maps bank/banks/banking to one term; the query's terms are in the document.
        for t in &q.indices {
            assert!(
                d.indices.contains(t),
                "query term {t} missing from document"
            );
        }
        // "central bank rais interest rate bank stock fell": 8 tokens, stop word "the" dropped.
        assert_eq!(
            enc.document_length("The central banks raised interest rates; banking stocks fell."),
            8.0
        );
        assert_eq!(enc.document_length("rates rates rates"), 3.0);
        assert_eq!(enc.document_length(""), 0.0);
    }
}
