//! Team-draft interleaving (Radlinski, Kurup & Joachims 2008): two rankers' lists merged into
//! one, each item drafted for the ranker that contributed it; a list's clicks go to the teams,
//! and the ranker whose items draw more clicks wins that list. Every user compares both rankers
//! on the same list, so the comparison needs far fewer users than an A/B split, where the two
//! arms' users differ.

use std::collections::HashSet;
use std::hash::Hash;

use rand::Rng;
use serde::Serialize;
use statrs::distribution::{Binomial, DiscreteCDF};

use super::experiments::{Clicks, Experiment, Exposure, Z95};
use super::interactions::Interaction;
use crate::config::RankConfig;

/// Which ranker drafted an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Team {
    A,
    B,
    /// The next item of both rankers at once: whichever team drafted it, its clicks would say
    /// nothing about which ranker is better, only add a coin toss's noise, so it is credited to
    /// neither (and counts as neither team's pick).
    Both,
}

/// How an exposure log records a [`Team::Both`] item (teams are otherwise variant names).
pub const BOTH_TEAMS: &str = "(both)";

/// Merge `a` and `b` into a list of up to `k`: in each round the team with fewer picks (a coin
/// toss when even) drafts its best item not yet in the list; when that item is also the other
/// ranker's best it is shared ([`Team::Both`]) and the picks stay even. Returns the list and
/// each item's team. Sharing the common prefix is what keeps two rankers that mostly agree
/// comparable: measured on the MovieLens simulation of `eval recommend`, crediting shared items
/// to the drafting team needed more users than an A/B split to tell factors from the blend.
pub fn team_draft<T: Clone + Eq + Hash>(
    a: &[T],
    b: &[T],
    k: usize,
    rng: &mut impl Rng,
) -> (Vec<T>, Vec<Team>) {
    let mut taken: HashSet<T> = HashSet::new();
    let (mut list, mut teams) = (Vec::new(), Vec::new());
    let (mut next_a, mut next_b) = (0, 0);
    let (mut picks_a, mut picks_b) = (0usize, 0usize);
    let first_free = |list: &[T], next: &mut usize, taken: &HashSet<T>| {
        while *next < list.len() && taken.contains(&list[*next]) {
            *next += 1;
        }
        list.get(*next).cloned()
    };
    while list.len() < k {
        let free_a = first_free(a, &mut next_a, &taken);
        let free_b = first_free(b, &mut next_b, &taken);
        let a_turn = picks_a < picks_b || (picks_a == picks_b && rng.random::<bool>());
        let (item, team) = match (free_a, free_b, a_turn) {
            (Some(x), Some(y), _) if x == y => (x, Team::Both),
            (Some(x), _, true) | (Some(x), None, false) => (x, Team::A),
            (_, Some(x), _) => (x, Team::B),
            (None, None, _) => break,
        };
        match team {
            Team::A => picks_a += 1,
            Team::B => picks_b += 1,
            Team::Both => {}
        }
        taken.insert(item.clone());
        list.push(item);
        teams.push(team);
    }
    (list, teams)
}

/// Which team a list's clicks favour: more clicks on its items (shared items count for
/// neither); equal counts (none included) are a tie.
pub fn winner(teams: &[Team], clicked: &[bool]) -> Option<Team> {
    let count = |t: Team| {
        teams
            .iter()
            .zip(clicked)
            .filter(|(x, c)| **x == t && **c)
            .count()
    };
    let (a, b) = (count(Team::A), count(Team::B));
    match a.cmp(&b) {
        std::cmp::Ordering::Greater => Some(Team::A),
        std::cmp::Ordering::Less => Some(Team::B),
        std::cmp::Ordering::Equal => None,
    }
}

/// The outcome of an interleaving experiment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterleavingReadout {
    pub experiment: String,
    /// Team A is the control variant; B the other.
    pub a: String,
    pub b: String,
    pub exposures: usize,
    pub users: usize,
    pub wins_a: usize,
    pub wins_b: usize,
    /// Lists whose clicks were tied (no clicks included).
    pub ties: usize,
    /// B's share of the decided lists, with its 95% Wilson interval.
    pub preference_b: f64,
    pub preference_low: f64,
    pub preference_high: f64,
    /// Two-sided sign test of "neither is preferred".
    pub p_value: f64,
}

/// Read an interleaving experiment out of the exposure log joined with later interactions.
pub fn readout(
    experiment: &Experiment,
    exposures: &[Exposure],
    interactions: &[Interaction],
    settings: &RankConfig,
) -> InterleavingReadout {
    let clicks = Clicks::new(interactions, settings);
    let a = experiment.control.clone();
    let b = experiment
        .variants
        .iter()
        .map(|v| v.name.clone())
        .find(|n| *n != a)
        .unwrap_or_default();
    let (mut wins_a, mut wins_b, mut ties, mut n) = (0, 0, 0, 0);
    let mut users = HashSet::new();
    for e in exposures
        .iter()
        .filter(|e| e.experiment.as_deref() == Some(&experiment.name))
    {
        let Some(names) = &e.teams else { continue };
        let teams: Vec<Team> = names
            .iter()
            .map(|t| match t {
                t if *t == a => Team::A,
                t if *t == b => Team::B,
                _ => Team::Both,
            })
            .collect();
        n += 1;
        users.insert(e.user.as_str());
        match winner(&teams, &clicks.of(e)) {
            Some(Team::A) => wins_a += 1,
            Some(Team::B) => wins_b += 1,
            Some(Team::Both) | None => ties += 1,
        }
    }
    let (preference_b, preference_low, preference_high) = wilson(wins_b, wins_a + wins_b);
    InterleavingReadout {
        experiment: experiment.name.clone(),
        a,
        b,
        exposures: n,
        users: users.len(),
        wins_a,
        wins_b,
        ties,
        preference_b,
        preference_low,
        preference_high,
        p_value: sign_test(wins_a, wins_b),
    }
}

/// A share `x / n` with its 95% Wilson score interval (0.5 and [0, 1] when `n` is 0).
pub fn wilson(x: usize, n: usize) -> (f64, f64, f64) {
    if n == 0 {
        return (0.5, 0.0, 1.0);
    }
    let (p, n) = (x as f64 / n as f64, n as f64);
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    (p, centre - half, centre + half)
}

/// Two-sided exact sign test of `wins_a` against `wins_b` (ties left out).
pub fn sign_test(wins_a: usize, wins_b: usize) -> f64 {
    let n = (wins_a + wins_b) as u64;
    if n == 0 {
        return 1.0;
    }
    let low = wins_a.min(wins_b) as u64;
    let dist = Binomial::new(0.5, n).expect("a valid binomial");
    (2.0 * dist.cdf(low)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn team_draft_alternates_keeps_each_rankers_order_and_skips_duplicates() {
        let a = ["x", "y", "z", "w"];
        let b = ["y", "v", "x", "u"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..50 {
            let (list, teams) = team_draft(&a, &b, 4, &mut rng);
            assert_eq!(list.len(), 4);
            let distinct: HashSet<_> = list.iter().collect();
            assert_eq!(distinct.len(), 4, "{list:?}");
            let count = |t| teams.iter().filter(|x| **x == t).count();
            assert!(count(Team::A).abs_diff(count(Team::B)) <= 1, "{teams:?}");
            // Each team's items appear in its ranker's order.
            for (team, source) in [(Team::A, &a), (Team::B, &b)] {
                let ranks: Vec<usize> = list
                    .iter()
                    .zip(&teams)
                    .filter(|(_, t)| **t == team)
                    .map(|(i, _)| source.iter().position(|s| s == i).unwrap())
                    .collect();
                assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{list:?} {teams:?}");
            }
        }
        // The first pick goes to either team about half the time.
        let firsts = (0..2000)
            .filter(|_| team_draft(&a, &b, 4, &mut rng).1[0] == Team::A)
            .count();
        assert!((900..1100).contains(&firsts), "{firsts}");
        // A list that runs out leaves the rest to the other.
        let (list, _) = team_draft(&["x"], &b, 4, &mut rng);
        assert_eq!(list.len(), 4);
    }

    #[test]
    fn an_item_both_rankers_would_draft_next_is_shared_and_credited_to_neither() {
        let a = ["x", "y", "z", "p"];
        let b = ["x", "y", "w", "q"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for _ in 0..50 {
            let (list, teams) = team_draft(&a, &b, 4, &mut rng);
            assert_eq!(list[..2], ["x", "y"]);
            assert_eq!(teams[..2], [Team::Both, Team::Both]);
            // Then the picks are even again: z for A and w for B, in either order.
            let rest: HashSet<(&str, Team)> = list[2..]
                .iter()
                .copied()
                .zip(teams[2..].iter().copied())
                .collect();
            assert_eq!(rest, HashSet::from([("z", Team::A), ("w", Team::B)]));
        }
        // Different first items are drafted by a team; once one is taken, the other is the
        // next of both rankers, so it is shared.
        let (_, teams) = team_draft(&["x", "y"], &["y", "x"], 2, &mut rng);
        assert_ne!(teams[0], Team::Both);
        assert_eq!(teams[1], Team::Both);
        use Team::*;
        assert_eq!(winner(&[Both, A, B], &[true, false, true]), Some(B));
        assert_eq!(winner(&[Both, Both, A], &[true, true, false]), None);
    }

    #[test]
    fn clicks_credit_the_drafting_team_and_the_sign_test_is_exact() {
        use Team::*;
        assert_eq!(winner(&[A, B, A], &[false, true, false]), Some(B));
        assert_eq!(winner(&[A, B, A], &[true, true, false]), None);
        assert_eq!(winner(&[A, B, A], &[false; 3]), None);
        // 9 of 10 against 1: P(X ≤ 1) = 11/1024, doubled.
        assert!((sign_test(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
        assert_eq!(sign_test(5, 5), 1.0);
        let (p, lo, hi) = wilson(30, 100);
        assert!((p - 0.3).abs() < 1e-12 && lo < 0.3 && hi > 0.3);
        // Wilson's interval for 30/100: [0.2189, 0.3958].
        assert!(
            (lo - 0.2189).abs() < 5e-4 && (hi - 0.3958).abs() < 5e-4,
            "{lo} {hi}"
        );
    }
}
