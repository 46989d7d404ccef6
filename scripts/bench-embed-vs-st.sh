#!/usr/bin/env bash
# Embedding speed, signaldesk vs sentence-transformers, on this machine.
#
# Alternates `signaldesk bench embed --json` and sentence-transformers (PyTorch, 2 threads,
# batch 32, same model dir) ROUNDS times each on the first LIMIT documents of the Reuters-21578
# ModApte test set (title + "\n" + body, truncated at 256 tokens), prints both tokens/s per
# round and the median ratio, and signaldesk's peak memory (/usr/bin/time -v).
#
# sentence-transformers is installed into a throwaway virtualenv (.cache/st-venv) if missing.
# env: ROUNDS (3), LIMIT (1000), PROFILE (dev; "release" for a release build),
#      INPUT (golden-datasets/reuters21578/test.jsonl.gz), EXTRA (extra bench embed args)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds="${ROUNDS:-3}"
limit="${LIMIT:-1000}"
profile="${PROFILE:-dev}"
input="${INPUT:-golden-datasets/reuters21578/test.jsonl.gz}"
model_dir="models/all-MiniLM-L6-v2"
venv=".cache/st-venv"

scripts/fetch-models.sh all-MiniLM-L6-v2 >/dev/null
if ! "$venv/bin/python" -c "import sentence_transformers" 2>/dev/null; then
  echo "bench: installing sentence-transformers into $venv (once; large)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "sentence-transformers==6.2.0"
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
ratios=()
printf '%-6s %12s %12s %8s\n' round signaldesk st ratio
for r in $(seq 1 "$rounds"); do
  /usr/bin/time -v "$bin" bench embed --json --input "$input" --limit "$limit" ${EXTRA:-} \
    >"$tmp/sd.json" 2>"$tmp/sd.time"
  "$venv/bin/python" scripts/bench_st.py "$model_dir" "$input" "$limit" >"$tmp/st.json" 2>"$tmp/st.err" \
    || { cat "$tmp/st.err" >&2; exit 1; }
  line=$(python3 - "$tmp/sd.json" "$tmp/st.json" <<'PY'
import json, sys
sd, st = (json.load(open(p)) for p in sys.argv[1:3])
if sd["tokens"] != st["tokens"] or sd["docs"] != st["docs"]:
    sys.exit(f"token counts differ: signaldesk {sd['docs']} docs {sd['tokens']} tokens, "
             f"sentence-transformers {st['docs']} docs {st['tokens']} tokens")
print(f"{sd['tokens_per_s']:.0f} {st['tokens_per_s']:.0f} {sd['tokens_per_s'] / st['tokens_per_s']:.3f} {sd['tokens']}")
PY
)
  read -r sd st ratio tokens <<<"$line"
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/sd.time")
  printf '%-6s %12s %12s %8s   (%s tokens, signaldesk peak RSS %s MB)\n' "$r" "$sd" "$st" "$ratio" "$tokens" "$((rss / 1024))"
  ratios+=("$ratio")
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
echo "median ratio signaldesk / sentence-transformers tokens/s: $median"
