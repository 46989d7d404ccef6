"""sentence-transformers side of scripts/bench-embed-vs-st.sh: prints one JSON object.

Same documents, text convention, truncation and token counting as `signaldesk bench embed`:
text = title + "\n" + body (either alone if the other is empty), else text; tokens = input ids
after truncation at max_seq_length, special tokens included, padding excluded.

usage: bench_st.py MODEL_DIR INPUT LIMIT [BACKEND]
  BACKEND: torch (default; PyTorch, 2 intra-op threads), onnx (ONNX Runtime fp32) or onnx-int8
  (ONNX Runtime with sentence-transformers' dynamic int8 export for this CPU: avx512_vnni where
  the CPU has it, else avx2), both with 2 intra-op threads. The ONNX exports are made once under
  .cache/st-onnx/ and reused.
usage: bench_st.py MODEL_DIR --accuracy REFERENCE.jsonl.gz
  ONNX Runtime int8's vectors against sentence-transformers' fp32 reference vectors (the parity
  set): min and mean cosine.
usage: bench_st.py MODEL_DIR --ndcg DATASET_DIR BACKEND
  Dense retrieval on a BEIR-layout dataset through BACKEND: every document embedded whole
  (title + "\n" + text, truncated at max_seq_length, as `signaldesk eval retrieval --mode dense
  --chunking off` embeds it), the test queries ranked by exact cosine; nDCG@10 (linear gain, as
  signaldesk's metrics) and recall@100 over the test qrels.
"""
import glob
import gzip
import json
import os
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

EXPORTS = os.path.join(".cache", "st-onnx")
THREADS = 2


def text_of(rec):
    title = (rec.get("title") or "").strip() and rec.get("title")
    body = (rec.get("body") or "").strip() and rec.get("body")
    if title and body:
        return f"{title}\n{body}"
    return title or body or rec.get("text") or ""


def int8_config():
    """The int8 export a performance-minded user would pick for this CPU."""
    flags = open("/proc/cpuinfo").read()
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def onnx_model(model_dir, int8):
    """sentence-transformers on ONNX Runtime, exported once under .cache/st-onnx/."""
    import onnxruntime as ort
    from sentence_transformers import export_dynamic_quantized_onnx_model

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    fp32_dir = os.path.join(EXPORTS, "fp32")
    if not os.path.exists(os.path.join(fp32_dir, "onnx", "model.onnx")):
        SentenceTransformer(model_dir, device="cpu", backend="onnx").save_pretrained(fp32_dir)
    kwargs = {"session_options": options, "provider": "CPUExecutionProvider"}
    if not int8:
        return SentenceTransformer(fp32_dir, device="cpu", backend="onnx", model_kwargs=kwargs), "fp32"
    config = int8_config()

    def exported():
        # qint8 or quint8, as the export's config chooses the weights' signedness.
        names = glob.glob(os.path.join(fp32_dir, "onnx", f"model_q*int8_{config}.onnx"))
        return os.path.relpath(names[0], fp32_dir) if names else None

    if exported() is None:
        export_dynamic_quantized_onnx_model(
            SentenceTransformer(fp32_dir, device="cpu", backend="onnx"), config, fp32_dir)
    kwargs["file_name"] = exported()
    return SentenceTransformer(fp32_dir, device="cpu", backend="onnx", model_kwargs=kwargs), config


def load(model_dir, backend):
    torch.set_num_threads(THREADS)
    if backend == "torch":
        return SentenceTransformer(model_dir, device="cpu"), f"torch {torch.__version__}"
    import onnxruntime as ort
    model, config = onnx_model(model_dir, backend == "onnx-int8")
    return model, f"onnxruntime {ort.__version__} {config}"


def accuracy(model_dir, reference):
    import numpy as np
    model, engine = load(model_dir, "onnx-int8")
    rows = [json.loads(l) for l in gzip.open(reference, "rt", encoding="utf-8") if l.strip()]
    got = model.encode([r["text"] for r in rows], batch_size=32, normalize_embeddings=True)
    want = np.array([r["vector"] for r in rows], dtype=np.float32)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    cos = (got * want).sum(axis=1)
    print(json.dumps({"engine": engine, "texts": len(rows), "min_cosine": float(cos.min()),
                      "mean_cosine": float(cos.mean())}))


def read_jsonl(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def ndcg(model_dir, dataset, backend):
    import math
    import numpy as np
    qrels = {}
    with open(os.path.join(dataset, "qrels", "test.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            q, d, g = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(g)
    docs = read_jsonl(os.path.join(dataset, "corpus.jsonl.gz"))
    queries = [q for q in read_jsonl(os.path.join(dataset, "queries.jsonl.gz")) if q["_id"] in qrels]
    # BEIR's `text` is the body; the rest is text_of's (signaldesk's item_text) rule.
    texts = [text_of({"title": d.get("title"), "body": d.get("text")}) for d in docs]
    model, engine = load(model_dir, backend)
    start = time.perf_counter()
    doc_vecs = model.encode(texts, batch_size=32, normalize_embeddings=True)
    query_vecs = model.encode([q["text"] for q in queries], batch_size=32, normalize_embeddings=True)
    seconds = time.perf_counter() - start
    scores = query_vecs @ doc_vecs.T
    ids = [d["_id"] for d in docs]
    ndcgs, recalls = [], []
    for q, row in zip(queries, scores):
        judged = qrels[q["_id"]]
        top = [ids[i] for i in np.argsort(-row, kind="stable")[:100]]
        dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(top[:10]))
        ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        ndcgs.append(dcg / idcg if idcg else 0.0)
        relevant = {d for d, g in judged.items() if g > 0}
        recalls.append(len(relevant & set(top)) / len(relevant))
    print(json.dumps({"backend": backend, "engine": engine, "docs": len(docs), "queries": len(queries),
                      "ndcg@10": sum(ndcgs) / len(ndcgs), "recall@100": sum(recalls) / len(recalls),
                      "seconds": seconds}))


def main():
    model_dir = sys.argv[1]
    if sys.argv[2] == "--accuracy":
        return accuracy(model_dir, sys.argv[3])
    if sys.argv[2] == "--ndcg":
        return ndcg(model_dir, sys.argv[3], sys.argv[4])
    path, limit = sys.argv[2], int(sys.argv[3])
    backend = sys.argv[4] if len(sys.argv) > 4 else "torch"
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
    model, engine = load(model_dir, backend)
    ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    tokens = sum(len(i) for i in ids)
    model.encode(texts[:8], batch_size=32)  # warm-up, as signaldesk does
    start = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"backend": backend, "engine": engine, "docs": len(texts), "tokens": tokens,
                      "seconds": seconds, "docs_per_s": len(texts) / seconds,
                      "tokens_per_s": tokens / seconds, "max_seq_length": model.max_seq_length}))


if __name__ == "__main__":
    main()
