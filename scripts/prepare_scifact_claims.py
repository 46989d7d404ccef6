#!/usr/bin/env python3
"""Build golden-datasets/scifact-claims/ from SciFact's training claims (run once; the output is
committed): ../shared/datasets/scifact_claims/claims_train.jsonl, 809 claims, split with a fixed
seed into the claims signaldesk tunes and trains its verifier on (tune.jsonl, 80%) and the claims
it is only evaluated on (eval.jsonl, 20%). Lines are copied unchanged.
"""
import hashlib
import random
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
src = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared/datasets/scifact_claims/claims_train.jsonl"
out = root / "golden-datasets/scifact-claims"
out.mkdir(exist_ok=True)

raw = src.read_bytes()
print("sha256", hashlib.sha256(raw).hexdigest())
lines = [l for l in raw.decode("utf-8").splitlines() if l.strip()]
order = list(range(len(lines)))
random.Random(0).shuffle(order)
held = set(order[: round(len(lines) * 0.2)])
for name, keep in [("tune.jsonl", lambda i: i not in held), ("eval.jsonl", lambda i: i in held)]:
    chosen = [lines[i] for i in range(len(lines)) if keep(i)]
    (out / name).write_text("\n".join(chosen) + "\n", encoding="utf-8")
    print(name, len(chosen))
