#!/usr/bin/env bash
# What int8 costs in retrieval quality, signaldesk against ONNX Runtime, on SciFact.
#
# Dense retrieval over the whole SciFact corpus (5,183 abstracts, each embedded whole: title + "\n"
# + text, truncated at 256 tokens) for its 300 test queries, four ways:
#   - `signaldesk eval retrieval --mode dense --chunking off` with `embed.precision` fp32 and int8
#     (SIGNALDESK_EMBED__PRECISION; the code and settings users run, a throwaway data dir each);
#   - sentence-transformers on ONNX Runtime fp32 and on its dynamic int8 export for this CPU
#     (avx512_vnni where the CPU has it, else avx2), exact cosine (scripts/bench_st.py --ndcg).
# Prints nDCG@10 and recall@100 of each and each int8's change from its own fp32. The parity set's
# cosines are printed by scripts/bench-embed-vs-st.sh.
#
# The peers' virtualenv (.cache/st-venv) and ONNX exports (.cache/st-onnx/) are those of
# scripts/bench-embed-vs-st.sh, which installs them; run it once first.
# env: DATASET (golden-datasets/scifact), PEERS (onnx,onnx-int8)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dataset="${DATASET:-golden-datasets/scifact}"
peers="${PEERS:-onnx,onnx-int8}"
model_dir="models/all-MiniLM-L6-v2"
venv=".cache/st-venv"
if ! "$venv/bin/python" -c "import sentence_transformers, onnxruntime, optimum" 2>/dev/null; then
  echo "accuracy: $venv is missing; run scripts/bench-embed-vs-st.sh once to install the peers" >&2
  exit 1
fi
scripts/fetch-models.sh all-MiniLM-L6-v2 >/dev/null
cargo build --quiet --locked --bin signaldesk
bin="${CARGO_TARGET_DIR:-target}/debug/signaldesk"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "cpu features: $(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512_vnni|avx512_bf16|amx_bf16|amx_int8|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
for precision in fp32 int8; do
  SIGNALDESK_DATA_DIR="$tmp/data-$precision" SIGNALDESK_EMBED__PRECISION="$precision" \
    "$bin" eval retrieval --dataset "$dataset" --mode dense --chunking off \
    --output "$tmp/sd-$precision.json" >"$tmp/sd.log" 2>&1 || { cat "$tmp/sd.log" >&2; exit 1; }
  echo "signaldesk $precision done"
done
IFS=, read -r -a peer_list <<<"$peers"
for peer in "${peer_list[@]}"; do
  "$venv/bin/python" scripts/bench_st.py "$model_dir" --ndcg "$dataset" "$peer" \
    >"$tmp/st-$peer.json" 2>"$tmp/st.err" || { cat "$tmp/st.err" >&2; exit 1; }
  echo "sentence-transformers $peer done"
done

python3 - "$tmp" "$peers" <<'PY'
import json, sys
tmp, peers = sys.argv[1], sys.argv[2].split(",")
rows = {}
for p in ("fp32", "int8"):
    m = json.load(open(f"{tmp}/sd-{p}.json"))["metrics"]
    rows[f"signaldesk {p}"] = (m["ndcg@10"], m["recall@100"])
for peer in peers:
    r = json.load(open(f"{tmp}/st-{peer}.json"))
    rows[f"sentence-transformers {peer} ({r['engine']})"] = (r["ndcg@10"], r["recall@100"])
print(f"{'engine':<58} {'nDCG@10':>8} {'recall@100':>10}")
for name, (n, r) in rows.items():
    print(f"{name:<58} {n:8.4f} {r:10.4f}")
pairs = [("signaldesk int8", "signaldesk fp32")]
names = list(rows)
int8_peer = [n for n in names if "onnx-int8" in n]
fp32_peer = [n for n in names if "onnx (" in n]
if int8_peer and fp32_peer:
    pairs.append((int8_peer[0], fp32_peer[0]))
for a, b in pairs:
    print(f"{a} - {b}: nDCG@10 {rows[a][0] - rows[b][0]:+.4f}, recall@100 {rows[a][1] - rows[b][1]:+.4f}")
PY
