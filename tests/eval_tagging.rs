//! `signaldesk eval tagging` on Reuters-21578 ModApte, as a user runs it: the kNN tagger over
//! the 7,770 training documents ingested as a labelled memory, k and threshold tuned on a
//! validation split of train, scored on all 3,019 test documents; then the ensemble (kNN and a
//! linear head trained on the same memory) on the same data.

mod common;

use std::path::Path;

use common::{run, signaldesk, stderr};
use serde_json::Value;

#[test]
fn knn_and_ensemble_on_reuters_modapte_reach_their_references() {
    let work = tempfile::tempdir().unwrap();
    let data = common::root().join("golden-datasets/reuters21578/modapte90");
    // Shared across runs in the build dir, like the SciFact tests' cache: embedding 10,789
    // documents takes minutes cold.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reuters-embedding-cache");
    let report = work.path().join("tagging.json");
    let o = run(signaldesk(work.path())
        .env("SIGNALDESK_CACHE_DIR", &cache)
        .args(["eval", "tagging", "--tagger", "knn", "--dataset"])
        .arg(&data)
        .arg("--taxonomy")
        .arg(data.join("taxonomy.tsv"))
        .arg("--output")
        .arg(&report));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let m = &r["metrics"];
    let (micro, macro_f1) = (
        m["micro_f1"].as_f64().unwrap(),
        m["macro_f1"].as_f64().unwrap(),
    );
    // The issue's bar: the reference kNN from sentence-transformers' vectors of the same model
    // reaches 0.8225 micro / 0.462 macro with the same tuning protocol.
    assert!(micro >= 0.82, "micro-F1 {micro}");
    assert!(macro_f1 >= 0.46, "macro-F1 {macro_f1}");
    assert_eq!(r["config"]["test_documents"], 3019);
    assert_eq!(r["config"]["memory_documents"], 7770);
    assert_eq!(r["config"]["tuned_on_validation"], true);
    assert_eq!(r["config"]["tune_objective"], "mean_f1");
    assert_eq!(r["config"]["weighting"], "inverse_distance");
    assert_eq!(r["per_item"].as_object().unwrap().len(), 3019);
    assert_eq!(r["details"]["per_label"].as_object().unwrap().len(), 90);
    assert!(work.path().join("tagging.md").is_file());

    // The ensemble over the same memory (re-ingest finds it unchanged), tuned for micro-F1.
    let report = work.path().join("ensemble.json");
    let o = run(signaldesk(work.path())
        .env("SIGNALDESK_CACHE_DIR", &cache)
        .args([
            "eval",
            "tagging",
            "--tagger",
            "ensemble",
            "--objective",
            "micro-f1",
        ])
        .arg("--dataset")
        .arg(&data)
        .arg("--taxonomy")
        .arg(data.join("taxonomy.tsv"))
        .arg("--output")
        .arg(&report));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let ensemble_micro = r["metrics"]["micro_f1"].as_f64().unwrap();
    // The issue's bar: tf-idf with a linear SVM on the same split (0.863 micro with
    // scikit-learn; scripts/tagging_reference.py), and above kNN alone.
    assert!(ensemble_micro >= 0.86, "ensemble micro-F1 {ensemble_micro}");
    assert!(ensemble_micro > micro, "{ensemble_micro} vs kNN {micro}");
    assert_eq!(r["config"]["tagger"], "ensemble");
    assert_eq!(r["config"]["test_documents"], 3019);
    assert_eq!(r["config"]["tune_objective"], "micro_f1");
    assert!(r["config"]["head_train_seconds"].as_f64().unwrap() > 0.0);
}

/// A newsroom's own, smaller labelled set: 300 training documents. The tuning split is a share
/// of train (a fifth), so the default ensemble trains on the rest instead of finding nothing left.
#[test]
fn the_ensemble_tunes_and_trains_on_a_small_labelled_set() {
    let work = tempfile::tempdir().unwrap();
    let data = common::root().join("golden-datasets/reuters21578/modapte90");
    let small = first_documents(&data, &work.path().join("small"), 300, 100);
    std::fs::copy(data.join("taxonomy.tsv"), small.join("taxonomy.tsv")).unwrap();
    let report = work.path().join("ensemble.json");
    let o = run(signaldesk(work.path())
        .args(["eval", "tagging", "--tagger", "ensemble", "--dataset"])
        .arg(&small)
        .arg("--taxonomy")
        .arg(small.join("taxonomy.tsv"))
        .arg("--output")
        .arg(&report));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["config"]["memory_documents"], 300, "{}", r["config"]);
    assert_eq!(r["config"]["validation_documents"], 60, "{}", r["config"]);
    let micro = r["metrics"]["micro_f1"].as_f64().unwrap();
    assert!(micro > 0.5, "micro-F1 {micro} on 300 training documents");
}

/// An exclusive taxonomy (R8, `# exclusive = true`) is evaluated as the product tags against it:
/// the ensemble (tuned on a fifth of 300 training documents) gives every test document
/// exactly one label, and the report has accuracy beside micro-F1.
#[test]
fn an_exclusive_taxonomy_is_evaluated_with_accuracy_one_label_each() {
    let work = tempfile::tempdir().unwrap();
    let data = common::root().join("golden-datasets/reuters21578/r8");
    let small = first_documents(&data, &work.path().join("r8-small"), 300, 100);
    let report = work.path().join("r8.json");
    let o = run(signaldesk(work.path())
        .args(["eval", "tagging", "--tagger", "ensemble", "--dataset"])
        .arg(&small)
        .arg("--taxonomy")
        .arg(data.join("taxonomy.tsv"))
        .arg("--output")
        .arg(&report));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["config"]["tagger"], "ensemble", "{}", r["config"]);
    assert_eq!(r["config"]["exclusive"], true, "{}", r["config"]);
    assert_eq!(r["config"]["max_labels"], 1, "{}", r["config"]);
    for (id, item) in r["per_item"].as_object().unwrap() {
        let predicted = item["tp"].as_f64().unwrap() + item["fp"].as_f64().unwrap();
        assert_eq!(predicted, 1.0, "document {id}: {item}");
    }
    let (accuracy, micro) = (
        r["metrics"]["accuracy"].as_f64().unwrap(),
        r["metrics"]["micro_f1"].as_f64().unwrap(),
    );
    // One gold and one predicted label each: micro-F1 is the accuracy.
    assert!((accuracy - micro).abs() < 1e-9, "{accuracy} vs {micro}");
    assert!(
        accuracy > 0.8,
        "accuracy {accuracy} on 300 training documents"
    );
}

/// A dataset of the first `train` and `test` documents of `data`'s splits, written to `dir`.
fn first_documents(data: &Path, dir: &Path, train: usize, test: usize) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (name, n) in [("train.jsonl.gz", train), ("test.jsonl.gz", test)] {
        let file = std::fs::File::create(dir.join(name)).unwrap();
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        std::io::Write::write_all(
            &mut gz,
            (gz_lines(&data.join(name), n).join("\n") + "\n").as_bytes(),
        )
        .unwrap();
        gz.finish().unwrap();
    }
    dir.to_path_buf()
}

fn gz_lines(path: &Path, n: usize) -> Vec<String> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).unwrap();
    std::io::BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .take(n)
        .map(Result::unwrap)
        .collect()
}

/// `signaldesk tag` against a labelled memory ingested with `signaldesk ingest`: every item gets
/// taxonomy labels with evidence and lineage, and they are mostly the gold ones.
#[test]
fn tag_labels_new_items_from_an_ingested_labelled_memory() {
    let work = tempfile::tempdir().unwrap();
    let data = common::root().join("golden-datasets/reuters21578/modapte90");
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reuters-embedding-cache");
    let train = work.path().join("train.jsonl");
    std::fs::write(
        &train,
        gz_lines(&data.join("train.jsonl.gz"), 2000).join("\n"),
    )
    .unwrap();
    let test_lines = gz_lines(&data.join("test.jsonl.gz"), 60);
    let items = work.path().join("items.jsonl");
    std::fs::write(&items, test_lines.join("\n")).unwrap();
    let o = run(signaldesk(work.path())
        .env("SIGNALDESK_CACHE_DIR", &cache)
        .args([
            "ingest",
            "--chunking",
            "off",
            "--collection",
            "labelled-memory",
        ])
        .arg(&train));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = work.path().join("tags.jsonl");
    let o = run(signaldesk(work.path())
        .env("SIGNALDESK_CACHE_DIR", &cache)
        .arg("tag")
        .arg(&items)
        .arg("--taxonomy")
        .arg(data.join("taxonomy.tsv"))
        .arg("-o")
        .arg(&out));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("tagged 60"), "{}", stderr(&o));
    let taxonomy: Vec<String> = std::fs::read_to_string(data.join("taxonomy.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    let tagged: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(tagged.len(), 60);
    let mut top_in_gold = 0;
    for (t, line) in tagged.iter().zip(&test_lines) {
        let gold: Value = serde_json::from_str(line).unwrap();
        assert_eq!(t["id"], gold["id"], "input order");
        let tags = t["tags"].as_array().unwrap();
        assert!(!tags.is_empty(), "{t}");
        for tag in tags {
            assert!(taxonomy.contains(&tag["label"].as_str().unwrap().to_string()));
            assert_eq!(tag["source"], "knn");
            assert!(!tag["evidence"].as_array().unwrap().is_empty());
        }
        assert!(t["lineage"]["taxonomy"]
            .as_str()
            .unwrap()
            .starts_with("taxonomy@"));
        assert_eq!(t["lineage"]["memory"], "labelled-memory");
        top_in_gold += usize::from(
            gold["labels"]
                .as_array()
                .unwrap()
                .contains(&tags[0]["label"]),
        );
    }
    // 2,000 memory documents are a small memory; most top labels are still right.
    // Measured: 39 of 60 with this memory (48 with all 7,770 training documents).
    assert!(top_in_gold >= 35, "{top_in_gold}/60 top labels in gold");

    // The ensemble over the same memory: its head trains on the stored vectors at start-up.
    let out = work.path().join("ensemble.jsonl");
    let o = run(signaldesk(work.path())
        .env("SIGNALDESK_CACHE_DIR", &cache)
        .args(["tag", "--tagger", "ensemble"])
        .arg(&items)
        .arg("-o")
        .arg(&out));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut ensemble_in_gold = 0;
    for (line, gold) in std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .zip(&test_lines)
    {
        let t: Value = serde_json::from_str(line).unwrap();
        let gold: Value = serde_json::from_str(gold).unwrap();
        assert_eq!(t["id"], gold["id"], "input order");
        assert_eq!(t["lineage"]["tagger"], "ensemble");
        let tags = t["tags"].as_array().unwrap();
        let top = &tags[0];
        assert_eq!(top["source"], "ensemble");
        let evidence = top["evidence"].as_array().unwrap();
        assert!(evidence[0].as_str().unwrap().starts_with("head "), "{top}");
        assert!(evidence[1].as_str().unwrap().starts_with("knn "), "{top}");
        ensemble_in_gold += usize::from(gold["labels"].as_array().unwrap().contains(&top["label"]));
    }
    // Measured: 44 of 60 (kNN alone: 39).
    assert!(
        ensemble_in_gold >= 40,
        "{ensemble_in_gold}/60 ensemble top labels in gold"
    );
}

/// Zero-shot against IPTC Media Topics, as `signaldesk tag` runs it: every label is an active
/// IPTC concept, and items about sport, economy and science land under the right top concepts.
#[test]
fn zeroshot_tags_against_iptc_media_topics() {
    let work = tempfile::tempdir().unwrap();
    let iptc = common::root().join("golden-datasets/iptc-mediatopics/mediatopics_en-GB.tsv");
    let items = work.path().join("items.jsonl");
    std::fs::write(
        &items,
        r#"{"id": "s", "title": "Cup final", "body": "The striker scored twice as the football club won the cup final in front of sixty thousand fans."}
{"id": "e", "title": "Rates", "body": "The central bank raised interest rates to fight inflation; bond yields and the currency rose."}
{"id": "h", "title": "Vaccine trial", "body": "A new vaccine cut hospital admissions in a clinical trial, doctors and health officials said."}
"#,
    )
    .unwrap();
    let out = work.path().join("tags.jsonl");
    let o = run(signaldesk(work.path())
        .args(["tag", "--tagger", "zeroshot", "--taxonomy"])
        .arg(&iptc)
        .arg(&items)
        .arg("-o")
        .arg(&out));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let tsv = std::fs::read_to_string(&iptc).unwrap();
    let path_of = |qcode: &str| -> String {
        tsv.lines()
            .find(|l| l.starts_with(&format!("{qcode}\t")))
            .map(|l| l.split('\t').nth(6).unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    let tagged: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expect = [("s", "sport"), ("e", "economy"), ("h", "health")];
    for (t, (id, top)) in tagged.iter().zip(expect) {
        assert_eq!(t["id"], id);
        let first = t["tags"][0]["label"].as_str().unwrap();
        let path = path_of(first);
        assert!(
            path.starts_with(top),
            "{id}: {first} is {path:?}, not under {top}"
        );
        assert!(t["lineage"]["taxonomy"]
            .as_str()
            .unwrap()
            .starts_with("mediatopics_en-GB@"));
    }
    // Cut at the top level: every label is one of IPTC's 17 top concepts, each item's the one
    // its best tag sits under.
    let o = run(signaldesk(work.path())
        .args([
            "tag",
            "--tagger",
            "zeroshot",
            "--max-depth",
            "1",
            "--taxonomy",
        ])
        .arg(&iptc)
        .arg(&items)
        .arg("-o")
        .arg(&out));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cut: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for ((t, full), (id, top)) in cut.iter().zip(&tagged).zip(expect) {
        for tag in t["tags"].as_array().unwrap() {
            let label = tag["label"].as_str().unwrap();
            assert!(
                !path_of(label).contains(" > "),
                "{id}: {label} is not a top concept"
            );
        }
        assert!(path_of(t["tags"][0]["label"].as_str().unwrap()).starts_with(top));
        let best = full["tags"][0]["label"].as_str().unwrap();
        assert!(
            t["tags"][0]["evidence"][0].as_str().unwrap().contains(best) || path_of(best) == top
        );
    }
}

/// `signaldesk enrich` tags stored items in place: `tags` become filterable at once, lineage is
/// kept, and `--only-stale` leaves current items alone until a setting changes.
#[test]
fn enrich_stores_tags_beside_the_items_and_reruns_only_what_is_stale() {
    let work = tempfile::tempdir().unwrap();
    let iptc = common::root().join("golden-datasets/iptc-mediatopics/mediatopics_en-GB.tsv");
    let items = work.path().join("items.jsonl");
    std::fs::write(
        &items,
        r#"{"id": "s", "title": "Cup final", "body": "The striker scored twice as the football club won the cup final in front of sixty thousand fans."}
{"id": "e", "title": "Rates", "body": "The central bank raised interest rates to fight inflation; bond yields and the currency rose."}
"#,
    )
    .unwrap();
    let o = run(signaldesk(work.path()).arg("ingest").arg(&items));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let enrich = |extra: &[&str], env: &[(&str, &str)]| -> Value {
        let mut cmd = signaldesk(work.path());
        cmd.args(["enrich", "--tagger", "zeroshot", "--json", "--taxonomy"])
            .arg(&iptc)
            .args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = run(&mut cmd);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let outcome: Value = serde_json::from_slice(&o.stdout).unwrap();
        outcome["tags"].clone()
    };
    let first = enrich(&[], &[]);
    assert_eq!(
        (first["items"].as_u64(), first["tagged"].as_u64()),
        (Some(2), Some(2))
    );
    let again = enrich(&["--only-stale"], &[]);
    assert_eq!(
        (again["tagged"].as_u64(), again["fresh"].as_u64()),
        (Some(0), Some(2))
    );
    let changed = enrich(
        &["--only-stale"],
        &[("SIGNALDESK_ENRICH__ZEROSHOT__MAX_LABELS", "1")],
    );
    assert_eq!(changed["tagged"], 2, "a new setting makes every item stale");

    // The stored tags: on search hits, and filterable.
    let o = run(signaldesk(work.path()).args(["search", "--json", "football cup final"]));
    let hits: Value = serde_json::from_slice(&o.stdout).unwrap();
    let top = &hits[0];
    assert_eq!(top["id"], "s");
    let tag = top["tags"][0].as_str().unwrap().to_string();
    assert!(tag.starts_with("medtop:"), "{top}");
    let o = run(signaldesk(work.path()).args([
        "search",
        "--json",
        "news",
        "--filter",
        &format!("tags={tag}"),
    ]));
    let hits: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<&str> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s"]);
}

/// The bundled IAB Content Taxonomy 3.1 loads as a tree (704 categories under 37 roots) and the
/// zero-shot tagger, cut at depth 1, puts a football story under Sports and a baking recipe
/// under Food & Drink.
#[test]
fn zeroshot_tags_against_the_iab_content_taxonomy() {
    let work = tempfile::tempdir().unwrap();
    let iab = common::root().join("golden-datasets/iab-content-taxonomy/content_taxonomy_3.1.tsv");
    let tsv = std::fs::read_to_string(&iab).unwrap();
    let rows: Vec<Vec<&str>> = tsv
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 704);
    assert_eq!(rows.iter().filter(|r| r[2].is_empty()).count(), 37);
    let items = work.path().join("items.jsonl");
    std::fs::write(
        &items,
        r#"{"id": "s", "title": "Cup final", "body": "The striker scored twice as the football club won the cup final in front of sixty thousand fans."}
{"id": "f", "title": "Sourdough at home", "body": "A recipe for baking sourdough bread: flour, water, salt and a starter, with tips on proofing and oven temperature."}
"#,
    )
    .unwrap();
    let out = work.path().join("tags.jsonl");
    let o = run(signaldesk(work.path())
        .args([
            "tag",
            "--tagger",
            "zeroshot",
            "--max-depth",
            "1",
            "--taxonomy",
        ])
        .arg(&iab)
        .arg(&items)
        .arg("-o")
        .arg(&out));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let tops: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["tags"][0]["label"].as_str().unwrap().to_string()
        })
        .collect();
    // 483 Sports, 210 Food & Drink.
    assert_eq!(tops, ["483", "210"]);
}
