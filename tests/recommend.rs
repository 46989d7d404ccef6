//! The recommendation chain as users run it: content ingested and tagged, interactions
//! ingested, the blend trained, lists served through an experiment and read out.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{run, signaldesk, stderr};
use serde_json::{json, Value};
use signaldesk::rank::experiments::ExperimentsFile;

const MOVIES: usize = 400;

const EXPERIMENTS: &str = r#"
[[experiment]]
name = "ranker"
salt = "test-salt"
control = "popularity"
[[experiment.variant]]
name = "popularity"
allocation = 0.5
ranker = "popularity"
[[experiment.variant]]
name = "blend"
allocation = 0.5
mmr_lambda = 0.75
"#;

/// A work dir holding the first MOVIES MovieLens movies (tagged by the zero-shot tagger against
/// IAB) and their ratings in the interaction log; returns it with the ratings' movie ids per user.
fn prepared() -> (tempfile::TempDir, BTreeMap<String, BTreeSet<String>>) {
    let work = tempfile::tempdir().unwrap();
    let data = common::root().join("golden-datasets/movielens");
    let mut movies = csv::Reader::from_path(data.join("movies.csv")).unwrap();
    let mut items = String::new();
    let mut ids = BTreeSet::new();
    for r in movies.records().take(MOVIES) {
        let r = r.unwrap();
        let id = r[0].to_string();
        items.push_str(
            &json!({"id": id, "title": &r[1], "body": r[2].replace('|', ", "),
                    "source": if ids.len() % 2 == 0 { "a" } else { "b" },
                    "runtime": 90 + ids.len() % 60})
            .to_string(),
        );
        items.push('\n');
        ids.insert(id);
    }
    std::fs::write(work.path().join("movies.jsonl"), items).unwrap();
    let o = run(signaldesk(work.path()).args(["ingest", "--chunking", "off", "movies.jsonl"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let taxonomy =
        common::root().join("golden-datasets/iab-content-taxonomy/content_taxonomy_3.1.tsv");
    let o = run(signaldesk(work.path())
        .args(["enrich", "--tagger", "zeroshot", "--taxonomy"])
        .arg(&taxonomy));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let mut ratings = csv::Reader::from_path(data.join("ratings.csv")).unwrap();
    let mut csv_out = String::from("userId,movieId,rating,timestamp\n");
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in ratings.records() {
        let r = r.unwrap();
        if ids.contains(&r[1]) {
            csv_out.push_str(&format!("{},{},{},{}\n", &r[0], &r[1], &r[2], &r[3]));
            seen.entry(r[0].to_string())
                .or_default()
                .insert(r[1].to_string());
        }
    }
    // One bad line: a rating that is not a number.
    csv_out.push_str("1,1,lots,964982703\n");
    let lines = csv_out.lines().count();
    std::fs::write(work.path().join("ratings.csv"), csv_out).unwrap();
    let o = run(signaldesk(work.path()).args(["interactions", "ingest", "ratings.csv"]));
    assert_eq!(
        o.status.code(),
        Some(1),
        "a rejected line fails the run: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains(&format!("ratings.csv:{lines}:")) && stderr(&o).contains("value"),
        "the reject names its line and field: {}",
        stderr(&o)
    );
    let rejects = std::fs::read_to_string(work.path().join("interactions-rejects.jsonl")).unwrap();
    assert_eq!(rejects.lines().count(), 1);
    // Ingesting again adds nothing.
    let o = run(signaldesk(work.path()).args(["interactions", "ingest", "ratings.csv"]));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(" 0 new"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    (work, seen)
}

fn json_out(o: &std::process::Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn trained_blend_serves_unseen_items_through_an_experiment_and_reads_out() {
    let (work, seen) = prepared();
    let o = run(signaldesk(work.path()).args(["rank", "train"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let model: Value = serde_json::from_str(
        &std::fs::read_to_string(work.path().join("data/rank/blend.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(model["format"], "signaldesk-blend/1");
    assert!(model["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "tag_overlap"));
    assert_eq!(model["version"].as_str().unwrap().len(), 12);

    std::fs::write(work.path().join("experiments.toml"), EXPERIMENTS).unwrap();
    let file = ExperimentsFile::parse(EXPERIMENTS, "test").unwrap();
    let experiment = file.get("ranker").unwrap();
    let users: Vec<&String> = seen.keys().take(12).collect();
    for user in &users {
        let served = json_out(&run(signaldesk(work.path()).args([
            "recommend",
            "--user",
            user,
            "--experiment",
            "ranker",
            "--json",
        ])));
        // Assignment in the binary's process equals this process's: stable across processes.
        let expected = experiment.assign(user).unwrap();
        assert_eq!(served["assignment"]["served"], json!(expected.served));
        let ranker = if expected.served == "blend" {
            "blend"
        } else {
            "popularity"
        };
        assert_eq!(served["ranker"], ranker);
        let items = served["items"].as_array().unwrap();
        assert_eq!(items.len(), 10, "{served}");
        for item in items {
            let id = item["id"].as_str().unwrap();
            assert!(!seen[*user].contains(id), "user {user} already rated {id}");
            assert!(
                item["features"]["tag_overlap"].is_number()
                    && item["features"]["cooccurrence"].is_number()
            );
            assert!(item["contributions"]["relevance"].is_number());
            if ranker == "blend" {
                assert!(
                    item["contributions"]["blend:cooccurrence"].is_number(),
                    "{item}"
                );
            }
        }
        let ids: BTreeSet<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 10, "no duplicates");
    }
    // More like this: around a seed item, the seed itself excluded.
    let seed = "1";
    let similar = json_out(&run(signaldesk(work.path()).args([
        "recommend",
        "--user",
        "nobody-yet",
        "--seed",
        seed,
        "--json",
        "-k",
        "5",
    ])));
    let items = similar["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|i| i["id"] != seed));
    assert!(items.iter().any(|i| i["sources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "more_like_this")));

    // Each list was logged; a click after one exposure shows in the readout.
    let log = std::fs::read_to_string(work.path().join("data/exposures.jsonl")).unwrap();
    let exposures: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exposures.len(), users.len() + 1);
    let first = &exposures[0];
    assert_eq!(first["features"].as_array().unwrap().len(), 10);
    let click = format!(
        "{{\"user\":{},\"item\":{},\"event\":\"click\",\"timestamp\":{}}}\n",
        first["user"],
        first["items"][0],
        first["timestamp"].as_i64().unwrap() + 60
    );
    std::fs::write(work.path().join("clicks.jsonl"), click).unwrap();
    let o = run(signaldesk(work.path()).args(["interactions", "ingest", "clicks.jsonl"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = json_out(&run(signaldesk(work.path()).args([
        "experiments",
        "report",
        "--json",
    ])));
    let arms = report[0]["arms"].as_array().unwrap();
    let total: u64 = arms.iter().map(|a| a["exposures"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, users.len());
    let clicks: u64 = arms.iter().map(|a| a["clicks"].as_u64().unwrap()).sum();
    assert_eq!(clicks, 1);
    let clicked_arm = arms
        .iter()
        .find(|a| a["variant"] == first["variant"])
        .unwrap();
    assert_eq!(clicked_arm["clicks"], 1);
}

/// Configured numeric payload fields become features (the model names them), and business
/// objectives from the configuration apply, each with its contribution on the item.
#[test]
fn numeric_fields_and_configured_objectives_reach_the_served_list() {
    let (work, seen) = prepared();
    let config = work.path().join("signaldesk.toml");
    std::fs::write(
        &config,
        r#"
[rank]
numeric_fields = ["metadata.runtime"]

[rank.objectives]
max_per_source = 6
boosts = [{ field = "source", value = "b", by = 100.0 }]
"#,
    )
    .unwrap();
    let with_config = |args: &[&str]| {
        let mut cmd = signaldesk(work.path());
        cmd.env("SIGNALDESK_CONFIG", &config).args(args);
        run(&mut cmd)
    };
    let user = seen.keys().next().unwrap();
    let factor_list = |o: std::process::Output| -> Vec<(String, f64)> {
        let served = json_out(&o);
        assert_eq!(served["ranker"], "factors");
        served["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let id = i["id"].as_str().unwrap().to_string();
                (id, i["features"]["factor"].as_f64().unwrap())
            })
            .collect()
    };
    let factors_list = ["recommend", "--user", user, "--ranker", "factors", "--json"];
    // Before any training the factors are trained from the log where the list is served.
    let trained_in_process = factor_list(with_config(&factors_list));
    assert_eq!(trained_in_process.len(), 10);

    let o = with_config(&["rank", "train"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let model: Value = serde_json::from_str(
        &std::fs::read_to_string(work.path().join("data/rank/blend.json")).unwrap(),
    )
    .unwrap();
    assert!(
        model["features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "metadata.runtime"),
        "{model}"
    );
    // rank train saved the factors beside the blend, which names their version; serving reads
    // them and serves what the same factors trained in process served.
    let factors = &model["factors"];
    assert_eq!(factors["file"], "blend.factors.safetensors", "{model}");
    assert_eq!(factors["items"], MOVIES);
    assert_eq!(factors["dim"], 32);
    let factors_file = work.path().join("data/rank/blend.factors.safetensors");
    let saved = signaldesk::rank::factors::SavedFactors::load(&factors_file, None).unwrap();
    assert_eq!(json!(saved.version), factors["version"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("collaborative factors"));
    let from_file = factor_list(with_config(&factors_list));
    assert_eq!(from_file.len(), 10);
    for ((a, x), (b, y)) in trained_in_process.iter().zip(&from_file) {
        assert_eq!(a, b, "{trained_in_process:?} vs {from_file:?}");
        assert!((x - y).abs() < 1e-4, "{a}: {x} vs {y}");
    }
    // Factors that are not the blend's are refused, naming the file.
    let mut bytes = std::fs::read(&factors_file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&factors_file, bytes).unwrap();
    let o = with_config(&factors_list);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("blend.factors.safetensors") && stderr(&o).contains("do not match"),
        "{}",
        stderr(&o)
    );
    let o = with_config(&["rank", "train"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let served = json_out(&with_config(&["recommend", "--user", user, "--json"]));
    let items = served["items"].as_array().unwrap();
    assert_eq!(items.len(), 10);
    let runtime = |item: &Value| item["features"]["metadata.runtime"].as_f64().unwrap();
    assert!(items.iter().all(|i| (90.0..150.0).contains(&runtime(i))));
    assert!(items
        .iter()
        .all(|i| i["contributions"]["blend:metadata.runtime"].is_number()));
    // The boost puts source b first, but the cap allows it only six places (two sources).
    let boosted: Vec<&Value> = items
        .iter()
        .filter(|i| i["contributions"]["boost:source=b"] == 100.0)
        .collect();
    assert_eq!(boosted.len(), 6, "{served}");
    assert!(items[..6]
        .iter()
        .all(|i| i["contributions"]["boost:source=b"] == 100.0));
}

const EXPLORING: &str = r#"
[[experiment]]
name = "explore"
control = "explore"
[[experiment.variant]]
name = "explore"
allocation = 1.0
ranker = "popularity"
explore = { epsilon = 0.5, pool = 30 }

[[experiment]]
name = "pair"
kind = "interleave"
control = "popularity"
[[experiment.variant]]
name = "popularity"
allocation = 0.5
ranker = "popularity"
[[experiment.variant]]
name = "cooccurrence"
allocation = 0.5
ranker = "cooccurrence"
"#;

/// Whether `user` engaged with `item` within the attribution window (24 hours) after `at`.
fn clicked(clicks: &[(String, String, i64)], user: &str, item: &str, at: i64) -> bool {
    clicks
        .iter()
        .any(|(u, i, t)| u == user && i == item && *t >= at && *t <= at + 24 * 3600)
}

/// An exploring variant logs each shown item's exact probability at its position and its pool;
/// another ranker is estimated from those lists (checked against the estimator worked by hand
/// here), an interleaved list credits clicks to the variant that drafted the item, and a log
/// without exploring lists is refused.
#[test]
fn exploring_lists_log_propensities_estimates_replay_them_and_interleaving_reads_out() {
    let (work, seen) = prepared();
    std::fs::write(work.path().join("experiments.toml"), EXPLORING).unwrap();
    let users: Vec<&String> = seen.keys().take(6).collect();
    for user in &users {
        for experiment in ["explore", "explore", "explore", "pair"] {
            let served = json_out(&run(signaldesk(work.path()).args([
                "recommend",
                "--user",
                user,
                "--experiment",
                experiment,
                "--json",
            ])));
            assert_eq!(served["items"].as_array().unwrap().len(), 10, "{served}");
        }
    }
    let log = std::fs::read_to_string(work.path().join("data/exposures.jsonl")).unwrap();
    let exposures: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (exploring, interleaved): (Vec<&Value>, Vec<&Value>) =
        exposures.iter().partition(|e| e["experiment"] == "explore");
    assert_eq!((exploring.len(), interleaved.len()), (18, 6));
    let ids = |e: &Value, key: &str| -> Vec<String> {
        e[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    for e in &exploring {
        let pool = ids(&e["pool"], "items");
        assert_eq!(pool.len(), 30);
        for (j, item) in ids(e, "items").iter().enumerate() {
            let rank = pool
                .iter()
                .position(|p| p == item)
                .expect("shown from the pool");
            let p = e["propensities"][j].as_f64().unwrap();
            let expected = signaldesk::rank::explore::propensity(0.5, 30, 10, rank, j);
            assert!((p - expected).abs() < 1e-12, "{p} vs {expected}");
        }
    }
    for e in &interleaved {
        let teams = ids(e, "teams");
        let count = |name: &str| teams.iter().filter(|t| *t == name).count();
        let (a, b, both) = (count("popularity"), count("cooccurrence"), count("(both)"));
        assert_eq!(a + b + both, 10, "{teams:?}");
        assert!(
            a.abs_diff(b) <= 1,
            "team draft gives each ranker half of what is not shared: {teams:?}"
        );
        assert!(e.get("pool").is_none());
    }

    // Clicks: the first and third item of every exploring list, the first of every interleaved one.
    let mut clicks: Vec<(String, String, i64)> = Vec::new();
    for e in &exposures {
        let at = e["timestamp"].as_i64().unwrap() + 60;
        let positions: &[usize] = if e["experiment"] == "explore" {
            &[0, 2]
        } else {
            &[0]
        };
        for &j in positions {
            let item = e["items"][j].as_str().unwrap().to_string();
            clicks.push((e["user"].as_str().unwrap().to_string(), item, at));
        }
    }
    let lines: String = clicks
        .iter()
        .map(|(u, i, t)| {
            json!({"user": u, "item": i, "event": "click", "timestamp": t}).to_string() + "\n"
        })
        .collect();
    std::fs::write(work.path().join("clicks.jsonl"), lines).unwrap();
    let o = run(signaldesk(work.path()).args(["interactions", "ingest", "clicks.jsonl"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // IPS by hand: co-occurrence replayed over each pool (its own candidates, by their
    // co-occurrence feature), a match where it would show the shown item at that position.
    let mut ips = 0.0;
    for e in &exploring {
        let pool = &e["pool"];
        let names = ids(pool, "feature_names");
        let col = names.iter().position(|n| n == "cooccurrence").unwrap();
        let mut own: Vec<(usize, f64)> = (0..30)
            .filter(|&i| {
                pool["sources"][i]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == "cooccurrence")
            })
            .map(|i| (i, pool["features"][i][col].as_f64().unwrap()))
            .collect();
        own.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let (user, at) = (
            e["user"].as_str().unwrap(),
            e["timestamp"].as_i64().unwrap(),
        );
        for (j, item) in ids(e, "items").iter().enumerate() {
            let target = own.get(j).map(|(i, _)| pool["items"][*i].as_str().unwrap());
            if target == Some(item.as_str()) && clicked(&clicks, user, item, at) {
                ips += 1.0 / e["propensities"][j].as_f64().unwrap();
            }
        }
    }
    ips /= exploring.len() as f64;
    let estimate = json_out(&run(signaldesk(work.path()).args([
        "experiments",
        "estimate",
        "--policy",
        "cooccurrence",
        "--json",
    ])));
    assert_eq!(estimate["lists"], 18);
    assert_eq!(estimate["skipped"], 6);
    let got = estimate["ips"].as_f64().unwrap();
    assert!((got - ips).abs() < 1e-9, "estimate {got}, by hand {ips}");
    assert!(estimate["snips_low"].as_f64().unwrap() <= estimate["snips_high"].as_f64().unwrap());
    assert_eq!(
        estimate["supported"], false,
        "18 lists cannot support an estimate: {estimate}"
    );

    // Interleaving: each list's winner is the team whose items drew more clicks.
    let (mut wins_a, mut wins_b) = (0, 0);
    for e in &interleaved {
        let (user, at) = (
            e["user"].as_str().unwrap(),
            e["timestamp"].as_i64().unwrap(),
        );
        let teams = ids(e, "teams");
        let mut count = [0, 0];
        for (item, team) in ids(e, "items").iter().zip(&teams) {
            if clicked(&clicks, user, item, at) && team != "(both)" {
                count[usize::from(team != "popularity")] += 1;
            }
        }
        wins_a += usize::from(count[0] > count[1]);
        wins_b += usize::from(count[1] > count[0]);
    }
    let report = json_out(&run(signaldesk(work.path()).args([
        "experiments",
        "report",
        "--experiment",
        "pair",
        "--json",
    ])));
    assert_eq!(report[0]["exposures"], 6, "{report}");
    assert_eq!(
        (
            report[0]["wins_a"].as_u64().unwrap() as usize,
            report[0]["wins_b"].as_u64().unwrap() as usize
        ),
        (wins_a, wins_b),
        "{report}"
    );

    // Only deterministic and interleaved lists: nothing to estimate from, said so.
    let plain: String = log
        .lines()
        .filter(|l| !l.contains("\"pool\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(work.path().join("plain.jsonl"), plain).unwrap();
    let o = run(signaldesk(work.path()).args([
        "experiments",
        "estimate",
        "--policy",
        "popularity",
        "--exposures",
        "plain.jsonl",
    ]));
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("no exploring lists"), "{}", stderr(&o));
}
