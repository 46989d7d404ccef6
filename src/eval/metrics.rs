//! Ranking metrics with trec_eval's conventions, so figures compare with published ones.
//!
//! Conventions (those of trec_eval 9.x and of BEIR/MTEB, which call pytrec_eval):
//! - A run is a list of (document id, score) per query. Documents are ranked by score
//!   descending; **ties are broken by document id descending** (trec_eval sorts by score, then
//!   by docno in reverse lexicographic order), never by the order the run lists them in.
//! - Relevance is graded: a judgment with grade > 0 is relevant; grade ≤ 0 or unjudged is not.
//! - nDCG uses linear gain (gain = grade) and discount 1/log2(rank + 1); the ideal DCG ranks all
//!   judged documents by grade, cut at the same k.
//! - Every metric is averaged over the queries that have at least one relevant judgment; a
//!   query with judgments but no run results scores 0 (it is not dropped).
//! - precision@k divides by k even when fewer than k documents were returned.
//! - MAP@k (BEIR's "MAP@k"): sum of precision at each relevant rank ≤ k, divided by the number
//!   of relevant documents (not capped at k), as trec_eval's map_cut.
//! - MRR@k: 1 / rank of the first relevant document within the top k, else 0.

use std::collections::HashMap;

/// Relevance judgments of one query: document id → grade.
pub type Judgments = HashMap<String, i32>;

/// Documents in the order trec_eval ranks them: by score descending, then id descending.
pub fn ranked(run: &[(String, f32)]) -> Vec<&str> {
    let mut v: Vec<&(String, f32)> = run.iter().collect();
    v.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| b.0.cmp(&a.0))
    });
    v.into_iter().map(|(d, _)| d.as_str()).collect()
}

fn relevant_count(j: &Judgments) -> usize {
    j.values().filter(|&&g| g > 0).count()
}

/// Relevant documents among the top k.
fn relevant_in_top(ranking: &[&str], j: &Judgments, k: usize) -> usize {
    ranking
        .iter()
        .take(k)
        .filter(|d| j.get(**d).is_some_and(|&g| g > 0))
        .count()
}

/// Fraction of the top k that is relevant.
pub fn precision_at(ranking: &[&str], j: &Judgments, k: usize) -> f64 {
    if k == 0 {
        return 0.0;
    }
    relevant_in_top(ranking, j, k) as f64 / k as f64
}

/// Fraction of the relevant documents found in the top k.
pub fn recall_at(ranking: &[&str], j: &Judgments, k: usize) -> f64 {
    let rel = relevant_count(j);
    if rel == 0 {
        return 0.0;
    }
    relevant_in_top(ranking, j, k) as f64 / rel as f64
}

/// Reciprocal rank of the first relevant document in the top k.
pub fn mrr_at(ranking: &[&str], j: &Judgments, k: usize) -> f64 {
    ranking
        .iter()
        .take(k)
        .position(|d| j.get(*d).is_some_and(|&g| g > 0))
        .map_or(0.0, |p| 1.0 / (p + 1) as f64)
}

/// Average precision cut at k, divided by all relevant documents.
pub fn map_at(ranking: &[&str], j: &Judgments, k: usize) -> f64 {
    let rel = relevant_count(j);
    if rel == 0 {
        return 0.0;
    }
    let mut hits = 0usize;
    let mut total = 0.0;
    for (i, d) in ranking.iter().take(k).enumerate() {
        if j.get(*d).is_some_and(|&g| g > 0) {
            hits += 1;
            total += hits as f64 / (i + 1) as f64;
        }
    }
    total / rel as f64
}

/// nDCG at k with linear gain.
pub fn ndcg_at(ranking: &[&str], j: &Judgments, k: usize) -> f64 {
    let dcg: f64 = ranking
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| {
            let g = j.get(*d).copied().unwrap_or(0).max(0) as f64;
            g / ((i + 2) as f64).log2()
        })
        .sum();
    let mut ideal: Vec<i32> = j.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &g)| g as f64 / ((i + 2) as f64).log2())
        .sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

/// A metric by its report name (`ndcg@10`, `recall@100`, `mrr@10`, `map@10`, `p@5`).
pub fn by_name(name: &str, ranking: &[&str], j: &Judgments) -> Option<f64> {
    let (metric, k) = name.split_once('@')?;
    let k: usize = k.parse().ok()?;
    Some(match metric {
        "ndcg" => ndcg_at(ranking, j, k),
        "recall" => recall_at(ranking, j, k),
        "mrr" => mrr_at(ranking, j, k),
        "map" => map_at(ranking, j, k),
        "p" | "precision" => precision_at(ranking, j, k),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judg(pairs: &[(&str, i32)]) -> Judgments {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    fn run(pairs: &[(&str, f32)]) -> Vec<(String, f32)> {
        pairs.iter().map(|(d, s)| (d.to_string(), *s)).collect()
    }

    #[test]
    fn ties_break_by_document_id_descending_like_trec_eval() {
        let r = run(&[("a", 1.0), ("c", 1.0), ("b", 2.0), ("d", 0.5)]);
        assert_eq!(ranked(&r), vec!["b", "c", "a", "d"]);
    }

    #[test]
    fn worked_example_by_hand() {
        // Ranking: d1 (rel 1), d2 (0), d3 (rel 2), d4 (0), d5 (rel 1); one relevant doc d9 unretrieved.
        let j = judg(&[("d1", 1), ("d3", 2), ("d5", 1), ("d9", 1), ("d2", 0)]);
        let ranking = ["d1", "d2", "d3", "d4", "d5"];
        // P@5 = 3/5; R@5 = 3/4; MRR = 1; AP@5 = (1/1 + 2/3 + 3/5) / 4
        assert!((precision_at(&ranking, &j, 5) - 0.6).abs() < 1e-12);
        assert!((precision_at(&ranking, &j, 10) - 0.3).abs() < 1e-12);
        assert!((recall_at(&ranking, &j, 5) - 0.75).abs() < 1e-12);
        assert!((mrr_at(&ranking, &j, 10) - 1.0).abs() < 1e-12);
        let ap = (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 4.0;
        assert!((map_at(&ranking, &j, 5) - ap).abs() < 1e-12);
        // DCG@5 = 1/log2(2) + 2/log2(4) + 1/log2(6) = 1 + 1 + 0.386852807
        // IDCG@5 = 2/1 + 1/log2(3) + 1/log2(4) + 1/log2(5) = 2 + 0.630929754 + 0.5 + 0.430676558
        let dcg = 1.0 + 1.0 + 1.0 / 6f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2() + 0.5 + 1.0 / 5f64.log2();
        assert!((ndcg_at(&ranking, &j, 5) - dcg / idcg).abs() < 1e-12);
        assert!((ndcg_at(&ranking, &j, 5) - 0.670_162).abs() < 1e-6);
        // MRR@1 misses nothing here; MRR@2 when the first hit is at rank 3 is 0.
        assert_eq!(mrr_at(&["x", "d2", "d3"], &j, 2), 0.0);
        assert!((mrr_at(&["x", "d2", "d3"], &j, 3) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn empty_runs_and_no_relevant_documents_score_zero() {
        let j = judg(&[("d1", 1)]);
        assert_eq!(ndcg_at(&[], &j, 10), 0.0);
        assert_eq!(recall_at(&[], &judg(&[("d1", 0)]), 10), 0.0);
        assert_eq!(by_name("ndcg@10", &["d1"], &j), Some(1.0));
        assert_eq!(by_name("bogus@10", &["d1"], &j), None);
    }
}
