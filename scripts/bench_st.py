"""sentence-transformers side of scripts/bench-embed-vs-st.sh: prints one JSON object.

Same documents, text convention, truncation and token counting as `signaldesk bench embed`:
text = title + "\n" + body (either alone if the other is empty), else text; tokens = input ids
after truncation at max_seq_length, special tokens included, padding excluded.
"""
import gzip
import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer


def text_of(rec):
    title = (rec.get("title") or "").strip() and rec.get("title")
    body = (rec.get("body") or "").strip() and rec.get("body")
    if title and body:
        return f"{title}\n{body}"
    return title or body or rec.get("text") or ""


def main():
    model_dir, path, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(2)
    opener = gzip.open if path.endswith(".gz") else open
    texts = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                t = text_of(json.loads(line))
                if t.strip():
                    texts.append(t)
            if len(texts) >= limit:
                break
    model = SentenceTransformer(model_dir, device="cpu")
    ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    tokens = sum(len(i) for i in ids)
    model.encode(texts[:8], batch_size=32)  # warm-up, as signaldesk does
    start = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"docs": len(texts), "tokens": tokens, "seconds": seconds,
                      "docs_per_s": len(texts) / seconds, "tokens_per_s": tokens / seconds,
                      "max_seq_length": model.max_seq_length, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
