//! Simulated traffic on the recommendation suite's test users, where the answer is known: the
//! clicks a list earns follow a position-bias curve over the user's held-out positives.
//!
//! 1. **Off-policy estimates**: the test users are served ε-greedy lists from the exploring
//!    blend (its pool of [`POOL`] items and each source's own top k, as an `explore` variant
//!    serves), clicks are simulated,
//!    and popularity's and co-occurrence's clicks per list are estimated from that one log by
//!    replaying them over the logged pools ([`crate::rank::offpolicy`]), beside their true
//!    value (their own lists under the same click model).
//! 2. **Interleaving against an A/B split**: how many users each needs to tell the better of
//!    two rankers at 95% confidence with 80% power ([`crate::rank::interleave`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use crate::rank::blend::BlendModel;
use crate::rank::experiments::LoggedPool;
use crate::rank::interleave::{sign_test, team_draft, winner, Team};
use crate::rank::offpolicy::{estimate_matched, replay, simulate_log, SimulatedUser};
use crate::rank::recommender::{RankerKind, Scorer};

/// The exploring blend's ε (the share of positions that explore).
pub const EPSILON: f64 = 0.3;
/// The exploring blend's pool (`explore.pool`'s default).
pub const POOL: usize = 100;
/// Lists served to each test user in the simulated log.
pub const LISTS_PER_USER: usize = 3000;
/// The rankers estimated off-policy.
pub const ESTIMATED: [RankerKind; 2] = [RankerKind::Popularity, RankerKind::Cooccurrence];
/// The pairs compared by interleaving and by an A/B split (the first is team A).
pub const PAIRS: [(RankerKind, RankerKind); 2] = [
    (RankerKind::Popularity, RankerKind::Cooccurrence),
    (RankerKind::Factors, RankerKind::Blend),
];
/// Simulated experiments per sample size in the power comparison.
const REPLICATES: usize = 200;

/// The chance a user examines position `j` (0-based): 1/(j+1), the position-bias curve of
/// Joachims et al. (2017) with η = 1.
pub fn examination(j: usize) -> f64 {
    1.0 / (j + 1) as f64
}

/// One test user as the simulation sees them.
pub struct TrafficUser {
    /// The exploring blend's pool, as an exposure would log it.
    pub pool: LoggedPool,
    /// The user's held-out positives: a click on one at position j happens with probability
    /// `examination(j)`; nothing else is clicked.
    pub relevant: HashSet<String>,
    /// Each ranker's own top-k list (ids), by ranker.
    pub lists: HashMap<RankerKind, Vec<String>>,
}

impl TrafficUser {
    fn value(&self, list: &[String]) -> f64 {
        list.iter()
            .enumerate()
            .filter(|(_, id)| self.relevant.contains(*id))
            .map(|(j, _)| examination(j))
            .sum()
    }
}

/// Run both simulations; adds `simulation.*` metrics and returns the report's section.
pub fn simulate(
    users: &[TrafficUser],
    model: &BlendModel,
    popularity_decayed: bool,
    k: usize,
    metrics: &mut BTreeMap<String, f64>,
) -> Value {
    let mut section = Map::new();
    section.insert(
        "setup".into(),
        json!({
            "users": users.len(),
            "click_model": "P(click | item at position j) = 1/(j+1) if the item is one of the user's held-out positives, else 0",
            "logging_policy": format!("the blend, ε-greedy lists: ε {EPSILON}, pool {POOL} plus each source's own top k"),
            "lists_per_user": LISTS_PER_USER,
            "k": k,
        }),
    );
    section.insert(
        "off_policy".into(),
        off_policy(users, model, popularity_decayed, k, metrics),
    );
    let pairs: Vec<Value> = PAIRS
        .iter()
        .map(|&(a, b)| interleaving_against_split(users, a, b, k, metrics))
        .collect();
    section.insert("interleaving".into(), json!(pairs));
    Value::Object(section)
}

/// Estimate [`ESTIMATED`] from one simulated exploring log.
fn off_policy(
    users: &[TrafficUser],
    model: &BlendModel,
    popularity_decayed: bool,
    k: usize,
    metrics: &mut BTreeMap<String, f64>,
) -> Value {
    let replays: Vec<Vec<Vec<usize>>> = users
        .iter()
        .map(|u| {
            ESTIMATED
                .iter()
                .map(|&r| {
                    let scorer =
                        Scorer::new(&u.pool.feature_names, r, Some(model), popularity_decayed)
                            .expect("the pool's features are the recommender's");
                    replay(&u.pool, &scorer, k)
                })
                .collect()
        })
        .collect();
    let clicks: Vec<Box<dyn Fn(usize, usize) -> f64 + '_>> = users
        .iter()
        .map(|u| {
            Box::new(move |i: usize, j: usize| {
                if u.relevant.contains(&u.pool.items[i]) {
                    examination(j)
                } else {
                    0.0
                }
            }) as Box<dyn Fn(usize, usize) -> f64>
        })
        .collect();
    let simulated: Vec<SimulatedUser> = users
        .iter()
        .zip(&replays)
        .zip(&clicks)
        .map(|((u, r), c)| SimulatedUser {
            targets: r.iter().map(Vec::as_slice).collect(),
            click: c.as_ref(),
            pool_len: u.pool.items.len(),
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let log = simulate_log(&simulated, EPSILON, k, LISTS_PER_USER, &mut rng);
    let mut out = Map::new();
    out.insert("logged_clicks_per_list".into(), json!(log.logged));
    for (t, ranker) in ESTIMATED.iter().enumerate() {
        let name = ranker.name();
        // The truth: the ranker's own list (over all its candidates), not the replay.
        let truth = users.iter().map(|u| u.value(&u.lists[ranker])).sum::<f64>()
            / users.len().max(1) as f64;
        // The replay orders tied scores by pool position, the served list by catalogue
        // position: compare the items, not their order.
        let in_pool = users
            .iter()
            .zip(&replays)
            .filter(|(u, r)| {
                let replayed: HashSet<&String> = r[t].iter().map(|&i| &u.pool.items[i]).collect();
                replayed == u.lists[ranker].iter().collect::<HashSet<_>>()
            })
            .count() as f64
            / users.len().max(1) as f64;
        let e = estimate_matched(name, &log.matched[t], log.lists, k, log.logged, 7);
        let error = (e.snips - truth).abs() / truth.max(1e-12);
        let covered = e.snips_low <= truth && truth <= e.snips_high;
        metrics.insert(format!("simulation.{name}.snips_accuracy"), 1.0 - error);
        metrics.insert(
            format!("simulation.{name}.snips_interval_covers"),
            f64::from(u8::from(covered)),
        );
        out.insert(
            name.into(),
            json!({
                "true_clicks_per_list": truth,
                "estimate": e,
                "snips_relative_error": error,
                "snips_interval_covers_truth": covered,
                "ips_relative_error": (e.ips - truth).abs() / truth.max(1e-12),
                "replayed_list_holds_the_served_items": in_pool,
            }),
        );
    }
    Value::Object(out)
}

/// Users needed to tell `a` from `b` by team-draft interleaving and by a 50/50 A/B split, at
/// doubling sample sizes: the share of [`REPLICATES`] simulated experiments that find the truly
/// better ranker at p < 0.05 (the sign test over lists with a winner; a two-sample z-test of
/// clicks per list), and the size at which that share reaches 80% (interpolated in log size
/// between the two sizes around it).
fn interleaving_against_split<'u>(
    users: &'u [TrafficUser],
    a: RankerKind,
    b: RankerKind,
    k: usize,
    metrics: &mut BTreeMap<String, f64>,
) -> Value {
    // Items as numbers, each list's relevance as flags: the inner loops allocate nothing.
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut number = |list: &'u [String]| -> Vec<u32> {
        list.iter()
            .take(k)
            .map(|id| {
                let n = ids.len() as u32;
                *ids.entry(id.as_str()).or_insert(n)
            })
            .collect()
    };
    let prepared: Vec<(Vec<u32>, Vec<u32>, HashSet<u32>)> = users
        .iter()
        .map(|u| {
            let (la, lb) = (number(&u.lists[&a]), number(&u.lists[&b]));
            let relevant: HashSet<u32> = u.lists[&a]
                .iter()
                .zip(&la)
                .chain(u.lists[&b].iter().zip(&lb))
                .filter(|(id, _)| u.relevant.contains(*id))
                .map(|(_, n)| *n)
                .collect();
            (la, lb, relevant)
        })
        .collect();
    let value = |r: RankerKind| {
        users.iter().map(|u| u.value(&u.lists[&r])).sum::<f64>() / users.len().max(1) as f64
    };
    let (va, vb) = (value(a), value(b));
    let b_better = vb > va;
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    let clicks = |list: &[u32], rel: &HashSet<u32>, rng: &mut rand::rngs::StdRng| -> Vec<bool> {
        list.iter()
            .enumerate()
            .map(|(j, i)| rel.contains(i) && rng.random::<f64>() < examination(j))
            .collect()
    };
    let (mut power, mut needed): (Vec<Value>, [Option<f64>; 2]) = (Vec::new(), [None, None]);
    let mut previous = [0.0; 2];
    let mut n = 50;
    while n <= 51_200 && needed.iter().any(Option::is_none) {
        let mut detected = [0usize; 2];
        for _ in 0..REPLICATES {
            // Interleaving: every user sees both rankers in one list.
            let (mut wins_a, mut wins_b) = (0, 0);
            for _ in 0..n {
                let (la, lb, rel) = &prepared[rng.random_range(0..prepared.len())];
                let (list, teams) = team_draft(la, lb, k, &mut rng);
                match winner(&teams, &clicks(&list, rel, &mut rng)) {
                    Some(Team::A) => wins_a += 1,
                    Some(Team::B) => wins_b += 1,
                    Some(Team::Both) | None => {}
                }
            }
            let right = if b_better {
                wins_b > wins_a
            } else {
                wins_a > wins_b
            };
            detected[0] += usize::from(right && sign_test(wins_a, wins_b) < 0.05);
            // An A/B split: half the users see a's list, half b's.
            let mut arms = [(0.0, 0.0, 0usize), (0.0, 0.0, 0usize)];
            for u in 0..n {
                let (la, lb, rel) = &prepared[rng.random_range(0..prepared.len())];
                let arm = u % 2;
                let list = if arm == 0 { la } else { lb };
                let c = clicks(list, rel, &mut rng).iter().filter(|c| **c).count() as f64;
                arms[arm].0 += c;
                arms[arm].1 += c * c;
                arms[arm].2 += 1;
            }
            let stats = arms.map(|(s, s2, m)| {
                let mean = s / m as f64;
                (mean, (s2 / m as f64 - mean * mean).max(0.0) / m as f64)
            });
            let z = (stats[1].0 - stats[0].0) / (stats[0].1 + stats[1].1).sqrt().max(1e-12);
            let right = if b_better { z > 0.0 } else { z < 0.0 };
            detected[1] += usize::from(right && z.abs() > crate::rank::experiments::Z95);
        }
        let share = detected.map(|d| d as f64 / REPLICATES as f64);
        for ((slot, s), before) in needed.iter_mut().zip(share).zip(previous) {
            if slot.is_none() && s >= 0.8 {
                // Where the power crosses 80%, interpolated in log(users) from the size before.
                let at = if before < s && n > 50 {
                    let (lo, hi) = ((n / 2) as f64, n as f64);
                    (lo.ln() + (0.8 - before) / (s - before) * (hi.ln() - lo.ln())).exp()
                } else {
                    n as f64
                };
                *slot = Some(at.round());
            }
        }
        previous = share;
        power.push(json!({"users": n, "interleaving": share[0], "ab_split": share[1]}));
        n *= 2;
    }
    let pair = format!("{}_vs_{}", a.name(), b.name());
    if let [Some(il), Some(ab)] = needed {
        metrics.insert(
            format!("simulation.{pair}.ab_users_per_interleaving_user"),
            ab / il,
        );
    }
    json!({
        "a": a.name(),
        "b": b.name(),
        "true_clicks_per_list": {a.name(): va, b.name(): vb},
        "power": power,
        "users_needed": {"interleaving": needed[0], "ab_split": needed[1]},
    })
}

/// The simulation's lines of the suite's console summary.
pub fn console_summary(section: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let setup = &section["setup"];
    let mut out = format!(
        "  off-policy, from one simulated log ({} users x {} exploring lists, ε {}): clicks per list\n",
        setup["users"], setup["lists_per_user"], EPSILON
    );
    for r in ESTIMATED {
        let x = &section["off_policy"][r.name()];
        let e = &x["estimate"];
        out.push_str(&format!(
            "    {:<13} true {:.4}  SNIPS {:.4} [{:.4}, {:.4}] (error {:.1}%)  IPS {:.4}  ESS {:.0}\n",
            r.name(),
            f(&x["true_clicks_per_list"]),
            f(&e["snips"]),
            f(&e["snips_low"]),
            f(&e["snips_high"]),
            100.0 * f(&x["snips_relative_error"]),
            f(&e["ips"]),
            f(&e["effective_sample_size"]),
        ));
    }
    out.push_str("  users to find the better ranker (95% confidence, 80% power): interleaving vs A/B split\n");
    for p in section["interleaving"].as_array().into_iter().flatten() {
        let needed = |m: &str| match p["users_needed"][m].as_f64() {
            Some(n) => format!("{n:.0}"),
            None => "over 51200".into(),
        };
        out.push_str(&format!(
            "    {} vs {}: {} vs {}\n",
            p["a"].as_str().unwrap_or_default(),
            p["b"].as_str().unwrap_or_default(),
            needed("interleaving"),
            needed("ab_split")
        ));
    }
    out
}
