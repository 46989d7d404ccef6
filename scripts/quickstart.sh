#!/usr/bin/env bash
# The main job end to end on the embedded defaults (Qdrant Edge under ./data, caches under
# ./.cache, the local models): fetch the models, build, ingest a bundled sample of Reuters and
# SciFact, tag it with the kNN tagger and summarize it with the local LLM, run the eval suites of
# eval/ci.toml, print the combined report and exit. With --serve it then serves the API and the
# editorial page on 127.0.0.1, printing the URL and an API key.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

serve=0
for arg in "$@"; do
  case "$arg" in
    --serve) serve=1 ;;
    -h | --help)
      sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
      echo "usage: scripts/quickstart.sh [--serve]"
      exit 0
      ;;
    *)
      echo "unknown argument: $arg (usage: scripts/quickstart.sh [--serve])" >&2
      exit 2
      ;;
  esac
done

started=$SECONDS
step() { printf '\n== %s (%ds)\n' "$1" $((SECONDS - started)) >&2; }

step "fetch models"
scripts/fetch-models.sh

step "build"
cargo build --locked --bin signaldesk
sd="${CARGO_TARGET_DIR:-target}/debug/signaldesk"

step "labelled memory: 7,770 Reuters training documents with their categories (enrich.knn.memory)"
# Whole documents cut at the model's 256 tokens, as the tagging eval's memory; the labels stay in
# each item's metadata, which is what the kNN tagger votes with. Idempotent: a rerun skips them.
"$sd" ingest golden-datasets/reuters21578/modapte90/train.jsonl.gz --collection labelled-memory --chunking off

step "content: 60 Reuters articles and 40 SciFact abstracts (golden-datasets/quickstart/)"
"$sd" ingest golden-datasets/quickstart/sample.jsonl

step "enrich: kNN tags against the Reuters categories, summaries from the local LLM"
"$sd" enrich --tagger knn --taxonomy golden-datasets/reuters21578/modapte90/taxonomy.tsv \
  --summaries --provider local --only-stale

step "search the enriched content"
"$sd" search "EC sugar tender" -k 3

step "eval: every suite of eval/ci.toml"
"$sd" eval run eval/ci.toml --output eval/reports

step "done in $((SECONDS - started)) s: reports in eval/reports/ (report.md, one JSON + markdown + plot per suite)"

if [ "$serve" = 1 ]; then
  key="sd-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  hash="$("$sd" serve --hash-key "$key")"
  config="data/quickstart-serve.toml"
  mkdir -p data
  printf '[api]\nkeys = [{ name = "quickstart", sha256 = "%s", scopes = ["admin"] }]\n' "$hash" > "$config"
  addr="127.0.0.1:8090"
  step "serve"
  cat >&2 <<EOF
API:        http://$addr/v1/...   (OpenAPI: http://$addr/openapi.json, docs: http://$addr/docs)
editorial:  http://$addr/editorial
API key:    $key
try:        curl -H "Authorization: Bearer $key" "http://$addr/v1/search?q=sugar+tender"
Ctrl-C stops the server.
EOF
  exec "$sd" --config "$config" serve --addr "$addr"
fi
