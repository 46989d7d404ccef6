"""Reference tagger for `signaldesk eval tagging`: tf-idf + linear SVM (scikit-learn), one-vs-rest.

The classic strong baseline for Reuters-21578 ModApte (Yang and Liu, SIGIR 1999: micro-F1 0.860
for an SVM). Reads the same `train.jsonl(.gz)`/`test.jsonl(.gz)` and taxonomy as the eval, scores
with the same definitions (micro/macro over every taxonomy concept, a concept never predicted
scoring 0) and writes a report in the eval's format, so the two stand side by side.

    pip install -r scripts/tagging-reference-requirements.txt
    python3 scripts/tagging_reference.py DATASET_DIR TAXONOMY.tsv --output report.json

Text = title + "\n" + body, as signaldesk reads it. TfidfVectorizer(sublinear_tf=True, min_df=2,
stop_words="english") and one-vs-rest LinearSVC(C=1), a label where the decision function is
positive: the protocol of the enrichment issue's reference (0.863 micro-F1, 0.413 macro-F1).
For an exclusive taxonomy (`# exclusive = true`, e.g. R8) each document gets its best-scored
class, and accuracy is reported beside micro-F1.
"""
import argparse
import csv
import gzip
import json
import os
import sys

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC


def read(path):
    for candidate in (path + ".jsonl", path + ".jsonl.gz"):
        if os.path.exists(candidate):
            opener = gzip.open if candidate.endswith(".gz") else open
            with opener(candidate, "rt", encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
    sys.exit(f"no {path}.jsonl or {path}.jsonl.gz")


def text_of(rec):
    title, body = (rec.get("title") or "").strip(), (rec.get("body") or "").strip()
    if title and body:
        return f"{rec['title']}\n{rec['body']}"
    return title or body or rec.get("text") or ""


def concepts(taxonomy):
    """The active concept ids, and whether the taxonomy is exclusive (`# exclusive = true` among
    the comment lines above the header, as signaldesk reads it)."""
    with open(taxonomy, encoding="utf-8") as f:
        lines = f.read().splitlines()
    comments = [l.lstrip("#").strip() for l in lines if l.startswith("#")]
    exclusive = any(c.replace(" ", "") == "exclusive=true" for c in comments)
    rows = csv.DictReader([l for l in lines if not l.startswith("#")], delimiter="\t")
    key = "id" if "id" in rows.fieldnames else "qcode"
    return [r[key] for r in rows if (r.get("active") or "true").lower() != "false"], exclusive


def prf(tp, fp, fn):
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("taxonomy")
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    labels, exclusive = concepts(args.taxonomy)
    known = set(labels)
    train, test = read(os.path.join(args.dataset, "train")), read(os.path.join(args.dataset, "test"))
    mlb = MultiLabelBinarizer(classes=labels)
    y = mlb.fit_transform([[l for l in r["labels"] if l in known] for r in train])
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, stop_words="english")
    x_train = vectorizer.fit_transform([text_of(r) for r in train])
    x_test = vectorizer.transform([text_of(r) for r in test])
    present = y.sum(axis=0) > 0
    model = OneVsRestClassifier(LinearSVC(C=1.0)).fit(x_train, y[:, present])
    scores = model.decision_function(x_test)
    present_labels = [l for l, p in zip(labels, present) if p]
    if exclusive:
        # One label per document: the best-scored class (one-vs-rest, as LinearSVC does).
        predicted = [[present_labels[row.argmax()]] for row in scores]
    else:
        predicted = [[present_labels[j] for j in row.nonzero()[0]] for row in scores > 0]

    counts = {l: [0, 0, 0] for l in labels}
    per_item = {}
    for rec, pred in zip(test, predicted):
        gold, pred = set(rec["labels"]) & known, set(pred)
        for l in gold & pred:
            counts[l][0] += 1
        for l in pred - gold:
            counts[l][1] += 1
        for l in gold - pred:
            counts[l][2] += 1
        per_item[rec["id"]] = {"tp": len(gold & pred), "fp": len(pred - gold), "fn": len(gold - pred)}
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    mp, mr, mf = prf(tp, fp, fn)
    per_label = {l: dict(zip(("precision", "recall", "f1"), prf(*c)), support=c[0] + c[2]) for l, c in counts.items()}
    n = len(labels)
    metrics = {
        "micro_precision": mp, "micro_recall": mr, "micro_f1": mf,
        "macro_precision": sum(v["precision"] for v in per_label.values()) / n,
        "macro_recall": sum(v["recall"] for v in per_label.values()) / n,
        "macro_f1": sum(v["f1"] for v in per_label.values()) / n,
    }
    if exclusive:
        metrics["accuracy"] = sum(
            set(rec["labels"]) & known == set(pred) for rec, pred in zip(test, predicted)
        ) / max(len(test), 1)
    report = {
        "suite": "tagging",
        "dataset": args.dataset,
        "config": {"tagger": "reference tf-idf + LinearSVC (scikit-learn)", "test_documents": len(test),
                   "train_documents": len(train), "C": 1.0},
        "metrics": metrics,
        "per_item": per_item,
        "details": {"per_label": per_label},
    }
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}))


if __name__ == "__main__":
    main()
