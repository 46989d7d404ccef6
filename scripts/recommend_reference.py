#!/usr/bin/env python3
"""Outside reference for the recommendation suite: ALS from the `implicit` library on the same
split and with the same metrics as `signaldesk eval recommend`.

Split (as src/rank/mod.rs `temporal_split`): positives are ratings >= 4; per user with >= 5
positives, the last k = max(1, floor(0.2 n + 0.5)) positives by (timestamp, movie id) are test,
and that user's events at or after the first test event leave training. Items the user rated in
training are never recommended. nDCG@10 has binary gains and an ideal DCG over
min(|test|, 10) items.

Writes DATASET/references.json ({"als_implicit": {...}, "popularity_check": {...}}), which the
eval copies into its report's `references`; with --report it also writes them into that report.

    python3 -m venv .venv && .venv/bin/pip install -r scripts/recommend-reference-requirements.txt
    .venv/bin/python scripts/recommend_reference.py --dataset golden-datasets/movielens
"""
import argparse
import collections
import csv
import json
import math
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import implicit  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def split(ratings):
    positives = collections.defaultdict(list)
    for u, m, r, t in ratings:
        if r >= 4:
            positives[u].append((t, m))
    test, cutoff = {}, {}
    for u, p in positives.items():
        if len(p) < 5:
            continue
        p.sort()
        k = max(1, math.floor(0.2 * len(p) + 0.5))
        test[u] = {m for _, m in p[-k:]}
        cutoff[u] = p[-k][0]
    train = [x for x in ratings if not (x[0] in cutoff and x[3] >= cutoff[x[0]])]
    return train, test


def metrics(ranked, relevant):
    gains = [1.0 if m in relevant else 0.0 for m in ranked]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:10]))
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    first = next((i for i, g in enumerate(gains) if g), None)
    return {
        "ndcg@10": dcg / idcg,
        "precision@10": sum(gains[:10]) / 10,
        "recall@10": sum(gains[:10]) / len(relevant),
        "recall@50": sum(gains[:50]) / len(relevant),
        "mrr": 0.0 if first is None else 1 / (first + 1),
    }


def mean(rows):
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="golden-datasets/movielens")
    ap.add_argument("--factors", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=3, help="ALS runs (seeds 0..N-1), averaged")
    ap.add_argument("--report", help="an eval report to write the references into")
    args = ap.parse_args()
    ratings = [
        (int(r["userId"]), int(r["movieId"]), float(r["rating"]), int(r["timestamp"]))
        for r in csv.DictReader(open(os.path.join(args.dataset, "ratings.csv")))
    ]
    train, test = split(ratings)
    items = sorted({m for _, m, _, _ in ratings})
    users = sorted({u for u, _, _, _ in ratings})
    item_index = {m: i for i, m in enumerate(items)}
    user_index = {u: i for i, u in enumerate(users)}
    seen = collections.defaultdict(set)
    for u, m, _, _ in train:
        seen[u].add(m)

    popularity = collections.Counter(m for _, m, r, _ in train if r >= 4)
    by_popularity = sorted(popularity, key=lambda m: (-popularity[m], m))
    pop_rows = [
        metrics([m for m in by_popularity if m not in seen[u]][:50], rel) for u, rel in test.items()
    ]

    pairs = [(user_index[u], item_index[m]) for u, m, r, _ in train if r >= 4]
    matrix = sp.csr_matrix(
        (np.ones(len(pairs), dtype=np.float32), tuple(zip(*pairs))),
        shape=(len(users), len(items)),
    )
    matrix.data[:] = 1.0
    runs = []
    for seed in range(args.seeds):
        model = implicit.als.AlternatingLeastSquares(factors=args.factors, random_state=seed)
        model.fit(matrix, show_progress=False)
        rows = []
        for u, rel in test.items():
            scores = model.item_factors @ model.user_factors[user_index[u]]
            for m in seen[u]:
                scores[item_index[m]] = -np.inf
            top = np.argsort(-scores)[:50]
            rows.append(metrics([items[j] for j in top], rel))
        runs.append(mean(rows))
    als = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
    references = {
        "als_implicit": {
            **{k: round(v, 4) for k, v in als.items()},
            "per_seed_ndcg@10": [round(r["ndcg@10"], 4) for r in runs],
            "settings": f"implicit {implicit.__version__} AlternatingLeastSquares(factors={args.factors}), "
            f"defaults otherwise (regularization 0.01, 15 iterations), binary training positives, "
            f"mean over seeds 0..{args.seeds - 1}",
            "test_users": len(test),
            "script": "scripts/recommend_reference.py",
        },
        "popularity_check": {
            **{k: round(v, 4) for k, v in mean(pop_rows).items()},
            "note": "count of training positives; must equal rankers.popularity (same split)",
        },
    }
    out = os.path.join(args.dataset, "references.json")
    with open(out, "w") as f:
        json.dump(references, f, indent=2)
        f.write("\n")
    print(json.dumps(references, indent=2))
    if args.report:
        report = json.load(open(args.report))
        report["references"] = references
        with open(args.report, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
