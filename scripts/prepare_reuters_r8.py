#!/usr/bin/env python3
"""Build golden-datasets/reuters21578/r8/ from modapte90/ (run once; the output is committed).

R8 (Cardoso-Cachopo 2007; the single-label Reuters benchmark of Yao et al. 2019 and others): the
ModApte documents with exactly one topic, that topic one of the 8 most frequent such classes. An
exclusive taxonomy's evaluation: every document has one right answer. Writes train.jsonl.gz
(5,502 documents; the published R8 has 5,485, from a slightly different cleaning) and
test.jsonl.gz (2,189, as published), each line as in modapte90/, and taxonomy.tsv: the 8
categories of modapte90/taxonomy.tsv under the setting `# exclusive = true`.
"""
import gzip
import json
from pathlib import Path

root = Path(__file__).resolve().parent.parent
src = root / "golden-datasets/reuters21578/modapte90"
out = root / "golden-datasets/reuters21578/r8"
R8 = ["earn", "acq", "crude", "trade", "money-fx", "interest", "ship", "grain"]

out.mkdir(exist_ok=True)
for split in ["train", "test"]:
    rows = [json.loads(l) for l in gzip.open(src / f"{split}.jsonl.gz", "rt", encoding="utf-8")]
    kept = [r for r in rows if len(r["labels"]) == 1 and r["labels"][0] in R8]
    # mtime 0: the same input gives the same bytes.
    with open(out / f"{split}.jsonl.gz", "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            for r in kept:
                f.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
    print(f"{split}: {len(kept)} of {len(rows)} documents")

rows = {l.split("\t")[0]: l for l in (src / "taxonomy.tsv").read_text().splitlines()[1:] if l.strip()}
with open(out / "taxonomy.tsv", "w") as f:
    f.write("# Reuters R8: the 8 most frequent single-label ModApte topics, one per document.\n")
    f.write("# exclusive = true\n")
    f.write("id\tlabel\tdefinition\n")
    for c in R8:
        f.write(rows[c] + "\n")
