"""Check signaldesk's ROUGE against Google's `rouge-score` on every summary of an eval report.

Reads the report `signaldesk eval summaries` wrote (every summary and its reference are in
`details.summaries`), scores each again with rouge_score.RougeScorer(["rouge1", "rouge2",
"rougeL"], use_stemmer=True), and compares the F1 of every item and summarizer with the report's
`per_item`. Prints the largest difference and exits 1 if any exceeds the tolerance (0.001).

    pip install -r scripts/rouge-agreement-requirements.txt
    python3 scripts/rouge_agreement.py report.json
"""
import json
import sys

from rouge_score import rouge_scorer


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    tolerance = float(sys.argv[2]) if len(sys.argv) == 3 else 0.001
    with open(sys.argv[1], encoding="utf-8") as f:
        report = json.load(f)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    worst, compared, off = (0.0, None), 0, []
    for item_id, s in report["details"]["summaries"].items():
        for system, summary in s.items():
            if system in ("source", "reference"):
                continue
            # rouge-score's argument order: score(target, prediction).
            scores = scorer.score(s["reference"], summary)
            for name in ("rouge1", "rouge2", "rougeL"):
                ours = report["per_item"][item_id][f"{system}.{name}"]
                diff = abs(ours - scores[name].fmeasure)
                compared += 1
                if diff > worst[0]:
                    worst = (diff, (item_id, system, name, ours, scores[name].fmeasure))
                if diff > tolerance:
                    off.append((item_id, system, name, ours, scores[name].fmeasure))
    print(json.dumps({"compared": compared, "max_abs_difference": worst[0], "worst": worst[1],
                      "over_tolerance": len(off), "tolerance": tolerance}))
    for row in off[:20]:
        print("over tolerance:", row, file=sys.stderr)
    sys.exit(1 if off else 0)


if __name__ == "__main__":
    main()
