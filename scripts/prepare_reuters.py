#!/usr/bin/env python3
"""Build golden-datasets/reuters21578/ from the Reuters-21578 ModApte conversion in
../shared/datasets/reuters21578_modapte/ (run once; the output is committed).

Writes train.jsonl.gz (7,770 documents) and test.jsonl.gz (3,019): the ApteMod-90 documents, as
{"id", "title", "body", "date", "labels"} with labels = their topics among the 90 categories; and
taxonomy.tsv: the 90 categories (id, label, definition), names from cat-descriptions_120396.txt
where it has them.
"""
import gzip
import json
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
src = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared/datasets/reuters21578_modapte"
out = root / "golden-datasets/reuters21578/modapte90"

cats = [l.split("\t")[0] for l in (src / "categories_apte90.tsv").read_text().splitlines()[1:] if l.strip()]
names = {}
for line in (src / "cat-descriptions_120396.txt").read_text(encoding="latin-1").splitlines():
    m = re.match(r"^(.+?) \(([A-Z0-9-]+)\)\s*$", line.strip())
    if m:
        names.setdefault(m.group(2).lower(), m.group(1).strip())

with open(out / "taxonomy.tsv", "w") as f:
    f.write("id\tlabel\tdefinition\n")
    for c in cats:
        label = names.get(c) or c.replace("-", " ").capitalize()
        definition = f"Reuters topic {c.upper()}: {label}" if c in names else f"Reuters commodity code {c.upper()}"
        f.write(f"{c}\t{label}\t{definition}\n")

for split in ("train", "test"):
    n = 0
    # mtime 0: the same input gives the same bytes.
    with open(out / f"{split}.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        for line in (src / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            if not d["in_apte90"]:
                continue
            row = {"id": str(d["id"]), "title": d["title"], "body": d["body"], "date": d["date"], "labels": d["topics_apte90"]}
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            n += 1
    print(f"{split}: {n} documents")
print(f"taxonomy: {len(cats)} categories, {sum(c in names for c in cats)} named")
