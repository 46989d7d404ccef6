#!/usr/bin/env bash
# Embedding speed, signaldesk against sentence-transformers, on this machine, in one run.
#
# Each round runs `signaldesk bench embed --json` (every precision in PRECISIONS, alternated inside
# the run) and then sentence-transformers on PyTorch, on ONNX Runtime fp32 and on ONNX Runtime's
# dynamic int8 export for this CPU (avx512_vnni where the CPU has it, else avx2), each with 2
# intra-op threads and batch 32, over the first LIMIT documents of the Reuters-21578 ModApte test
# set (title + "\n" + body, truncated at 256 tokens). It prints tokens/s per round, min / median /
# max per engine, each signaldesk precision's median over each peer's, the CPU features found,
# signaldesk's peak memory, and ONNX Runtime int8's own accuracy (min / mean cosine to
# sentence-transformers' fp32 vectors on the parity set: 300 SciFact queries + 500 abstracts).
#
# The peers are installed into a throwaway virtualenv (.cache/st-venv, pinned versions; large)
# if missing; their ONNX exports are made once under .cache/st-onnx/.
# env: ROUNDS (3), LIMIT (1000), PROFILE (dev; "release" for a release build),
#      PRECISIONS (fp32,int8), PEERS (torch,onnx,onnx-int8),
#      INPUT (golden-datasets/reuters21578/test.jsonl.gz), EXTRA (extra bench embed args)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds="${ROUNDS:-3}"
limit="${LIMIT:-1000}"
profile="${PROFILE:-dev}"
precisions="${PRECISIONS:-fp32,int8}"
peers="${PEERS:-torch,onnx,onnx-int8}"
input="${INPUT:-golden-datasets/reuters21578/test.jsonl.gz}"
reference="golden-datasets/scifact-minilm-reference/scifact_minilm_st.jsonl.gz"
model_dir="models/all-MiniLM-L6-v2"
venv=".cache/st-venv"

scripts/fetch-models.sh all-MiniLM-L6-v2 >/dev/null
if ! "$venv/bin/python" -c "import sentence_transformers, onnxruntime, optimum" 2>/dev/null; then
  echo "bench: installing sentence-transformers with ONNX Runtime into $venv (once; large)" >&2
  python3 -m venv "$venv"
  # sentence-transformers 6's onnx extra cannot be resolved against optimum-onnx today
  # (transformers >= 5 against < 4.58), so the newest pair that installs together is pinned.
  "$venv/bin/pip" install --quiet "sentence-transformers[onnx]==5.1.2" "transformers==4.57.1"
fi

if [[ "$profile" == "release" ]]; then
  cargo build --quiet --release --locked --bin signaldesk
  bin="${CARGO_TARGET_DIR:-target}/release/signaldesk"
else
  cargo build --quiet --locked --bin signaldesk
  bin="${CARGO_TARGET_DIR:-target}/debug/signaldesk"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "cpu features: $(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512_vnni|avx512_bf16|amx_bf16|amx_int8|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
IFS=, read -r -a peer_list <<<"$peers"
for r in $(seq 1 "$rounds"); do
  /usr/bin/time -v "$bin" bench embed --json --input "$input" --limit "$limit" \
    --precision "$precisions" ${EXTRA:-} >"$tmp/sd.$r.json" 2>"$tmp/sd.$r.time" \
    || { cat "$tmp/sd.$r.time" >&2; exit 1; }
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/sd.$r.time")
  echo "round $r: signaldesk done (peak RSS $((rss / 1024)) MB)"
  for peer in "${peer_list[@]}"; do
    "$venv/bin/python" scripts/bench_st.py "$model_dir" "$input" "$limit" "$peer" \
      >"$tmp/st-$peer.$r.json" 2>"$tmp/st.err" || { cat "$tmp/st.err" >&2; exit 1; }
    echo "round $r: sentence-transformers $peer done"
  done
done
"$venv/bin/python" scripts/bench_st.py "$model_dir" --accuracy "$reference" >"$tmp/accuracy.json" 2>"$tmp/st.err" \
  || { cat "$tmp/st.err" >&2; exit 1; }

python3 - "$tmp" "$rounds" "$peers" <<'PY'
import json, statistics, sys
tmp, rounds, peers = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
engines = {}  # name -> list of tokens/s, one per round
tokens = set()
for r in range(1, rounds + 1):
    for line in open(f"{tmp}/sd.{r}.json"):
        run = json.loads(line)
        kernel = f", {run['kernel']}" if run.get("kernel") else ""
        engines.setdefault(f"signaldesk {run['precision']}{kernel}", []).append(run["tokens_per_s"])
        tokens.add((run["docs"], run["tokens"]))
    for peer in peers:
        st = json.load(open(f"{tmp}/st-{peer}.{r}.json"))
        engines.setdefault(f"st {st['engine']}", []).append(st["tokens_per_s"])
        tokens.add((st["docs"], st["tokens"]))
if len(tokens) != 1:
    sys.exit(f"the engines read different texts (docs, tokens): {sorted(tokens)}")
docs, n = tokens.pop()
print(f"\n{docs} documents, {n} tokens, {rounds} rounds; tokens/s")
print(f"{'engine':50s} {'min':>8s} {'median':>8s} {'max':>8s}   rounds")
for name, speeds in engines.items():
    print(f"{name:50s} {min(speeds):8.0f} {statistics.median(speeds):8.0f} {max(speeds):8.0f}   "
          + " ".join(f"{s:.0f}" for s in speeds))
ours = [k for k in engines if k.startswith("signaldesk")]
theirs = [k for k in engines if k.startswith("st ")]
print("\nmedian over median:")
for a in ours:
    print(f"  {a}: " + ", ".join(
        f"{statistics.median(engines[a]) / statistics.median(engines[b]):.2f}x {b}" for b in theirs))
acc = json.load(open(f"{tmp}/accuracy.json"))
print(f"\n{acc['engine']} against sentence-transformers fp32 on the parity set ({acc['texts']} texts): "
      f"min cosine {acc['min_cosine']:.5f}, mean {acc['mean_cosine']:.5f}")
PY
