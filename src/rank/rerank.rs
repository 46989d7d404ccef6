//! Multi-objective re-ranking after the blend: hard filters, business boosts and demotions, a
//! per-source cap, and diversity by maximal marginal relevance.
//!
//! Qdrant's query API has MMR and formula rescoring, but both score against one query vector
//! and payload fields inside the store; the relevance diversified here is the learned blend over
//! candidates merged from several sources (co-occurrence and popularity are not in the store),
//! so MMR runs here, over the merged candidates, with item vectors from the catalogue.

use std::collections::{BTreeMap, HashMap};

use super::catalogue::{text_field, Catalogue};
use crate::config::ObjectivesConfig;

const DAY: f64 = 86_400.0;

/// A candidate on its way through re-ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub item: usize,
    /// The score so far (the ranker's, then what objectives added).
    pub score: f32,
    /// What each stage added (`relevance` first).
    pub contributions: BTreeMap<String, f32>,
}

/// The hard filters: an embargoed item, or one with an excluded tag, never appears in a list.
pub fn showable(catalogue: &Catalogue, i: usize, objectives: &ObjectivesConfig, now: i64) -> bool {
    let item = &catalogue.items[i];
    item.embargo_until.is_none_or(|t| t <= now)
        && !item
            .tags
            .iter()
            .any(|(t, _)| objectives.excluded_tags.contains(t))
}

/// Apply `objectives` at time `now` and keep the best `k`, in order.
pub fn rerank(
    mut candidates: Vec<Scored>,
    catalogue: &Catalogue,
    objectives: &ObjectivesConfig,
    now: i64,
    k: usize,
) -> Vec<Scored> {
    candidates.retain(|c| showable(catalogue, c.item, objectives, now));
    for c in &mut candidates {
        let item = &catalogue.items[c.item];
        for boost in &objectives.boosts {
            let value = match boost.field.as_str() {
                "content_type" => item.content_type.clone(),
                "source" => item.source.clone(),
                other => text_field(&item.payload, other),
            };
            if value.as_deref() == Some(boost.value.as_str()) {
                c.score += boost.by;
                *c.contributions
                    .entry(format!("boost:{}={}", boost.field, boost.value))
                    .or_default() += boost.by;
            }
        }
        let days = objectives.demote_older_than_days;
        if let (true, Some(published)) = (days > 0.0, item.published) {
            if (now - published) as f64 > days * DAY {
                c.score -= objectives.demote_by;
                c.contributions
                    .insert("demote_old".into(), -objectives.demote_by);
            }
        }
    }
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
    let lambda = objectives.mmr_lambda.clamp(0.0, 1.0);
    let (lo, hi) = candidates.iter().fold((f32::MAX, f32::MIN), |(lo, hi), c| {
        (lo.min(c.score), hi.max(c.score))
    });
    let span = (hi - lo).max(1e-9);
    let mut per_source: HashMap<Option<&str>, usize> = HashMap::new();
    let mut picked: Vec<Scored> = Vec::with_capacity(k);
    // Greedy MMR: λ·relevance − (1−λ)·(max similarity to what is already picked), relevance
    // min-max scaled over the candidates so λ means the same whatever the score's range.
    let mut max_sim = vec![0f32; candidates.len()];
    let mut taken = vec![false; candidates.len()];
    while picked.len() < k {
        let mut best: Option<(usize, f32)> = None;
        for (ci, c) in candidates.iter().enumerate() {
            if taken[ci] {
                continue;
            }
            if objectives.max_per_source > 0 {
                let cap = objectives.max_per_source;
                let source = catalogue.items[c.item].source.as_deref();
                if per_source.get(&source).copied().unwrap_or(0) >= cap {
                    continue;
                }
            }
            let value = if lambda >= 1.0 {
                c.score
            } else {
                lambda * (c.score - lo) / span - (1.0 - lambda) * max_sim[ci]
            };
            if best.is_none_or(|(_, v)| value > v) {
                best = Some((ci, value));
            }
            if lambda >= 1.0 {
                // Sorted by score: the first eligible candidate is the best.
                break;
            }
        }
        let Some((ci, _)) = best else { break };
        taken[ci] = true;
        let mut chosen = candidates[ci].clone();
        if lambda < 1.0 {
            chosen
                .contributions
                .insert("diversity".into(), -(1.0 - lambda) * max_sim[ci] * span);
            for (cj, c) in candidates.iter().enumerate() {
                if !taken[cj] {
                    max_sim[cj] = max_sim[cj].max(catalogue.similarity(chosen.item, c.item));
                }
            }
        }
        *per_source
            .entry(catalogue.items[chosen.item].source.as_deref())
            .or_default() += 1;
        picked.push(chosen);
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Boost;
    use crate::rank::catalogue::CatalogueItem;

    fn catalogue() -> Catalogue {
        let mut c = Catalogue::default();
        // a and b are near-duplicates, c points elsewhere; b is from source y, the rest x.
        for (id, v, source, tags) in [
            ("a", [1.0, 0.0], "x", vec![]),
            ("b", [0.99, 0.1], "y", vec![]),
            ("c", [0.0, 1.0], "x", vec![]),
            ("d", [0.7, 0.7], "x", vec![("violence".to_string(), 0.9)]),
        ] {
            let item = CatalogueItem {
                id: id.into(),
                title: id.into(),
                source: Some(source.into()),
                content_type: Some("article".into()),
                published: Some(0),
                embargo_until: None,
                tags,
                payload: Default::default(),
            };
            c.push(item, v.to_vec()).unwrap();
        }
        c
    }

    fn scored(scores: &[f32]) -> Vec<Scored> {
        scores
            .iter()
            .enumerate()
            .map(|(item, &score)| Scored {
                item,
                score,
                contributions: BTreeMap::from([("relevance".to_string(), score)]),
            })
            .collect()
    }

    fn ids(c: &Catalogue, list: &[Scored]) -> Vec<String> {
        list.iter().map(|s| c.items[s.item].id.clone()).collect()
    }

    #[test]
    fn mmr_trades_relevance_for_diversity_only_below_lambda_one() {
        let c = catalogue();
        let none = ObjectivesConfig::default();
        let plain = rerank(scored(&[0.9, 0.85, 0.5, 0.1]), &c, &none, 0, 3);
        assert_eq!(ids(&c, &plain), ["a", "b", "c"]);
        let diverse = ObjectivesConfig {
            mmr_lambda: 0.5,
            ..none.clone()
        };
        let list = rerank(scored(&[0.9, 0.85, 0.5, 0.1]), &c, &diverse, 0, 2);
        assert_eq!(ids(&c, &list), ["a", "c"], "the near-duplicate b gives way");
        assert!(list[1].contributions["diversity"] <= 0.0);
    }

    #[test]
    fn boosts_demotions_caps_and_filters_apply_and_are_reported() {
        let c = catalogue();
        let objectives = ObjectivesConfig {
            boosts: vec![Boost {
                field: "source".into(),
                value: "y".into(),
                by: 0.2,
            }],
            demote_older_than_days: 1.0,
            demote_by: 0.05,
            max_per_source: 1,
            excluded_tags: vec!["violence".into()],
            ..ObjectivesConfig::default()
        };
        let list = rerank(
            scored(&[0.9, 0.85, 0.5, 0.95]),
            &c,
            &objectives,
            10 * 86_400,
            4,
        );
        // d is filtered (excluded tag); b is boosted above a; the cap keeps one item per source.
        assert_eq!(ids(&c, &list), ["b", "a"]);
        assert!((list[0].contributions["boost:source=y"] - 0.2).abs() < 1e-6);
        assert!((list[0].contributions["demote_old"] + 0.05).abs() < 1e-6);
        assert!((list[0].score - (0.85 + 0.2 - 0.05)).abs() < 1e-6);
    }
}
