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
    let user = seen.keys().next().unwrap();
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
