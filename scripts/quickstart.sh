#!/usr/bin/env bash
# The main job end to end on the embedded defaults (Qdrant Edge under ./data, caches under
# ./.cache, the local models): fetch the models, build, ingest a bundled sample of Reuters and
# SciFact, tag it with the kNN tagger, summarize a handful with the local LLM (the rest
# extractively), recommend to a new reader and "more like" a sample item, verify a claim, ask a
# question, run the quick eval suites of eval/ci.toml (--all-suites: every one), print the
# combined report and exit. With --serve it then serves the API and the editorial page on 127.0.0.1, printing an API
# key.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

serve=0
all_suites=0
usage="usage: scripts/quickstart.sh [--all-suites] [--serve]"
for arg in "$@"; do
  case "$arg" in
    --serve) serve=1 ;;
    --all-suites) all_suites=1 ;;
    -h | --help)
      sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
      echo "$usage"
      exit 0
      ;;
    *)
      echo "unknown argument: $arg ($usage)" >&2
      exit 2
      ;;
  esac
done
# The quick suites: one of each kind, minutes on a cold cache; the LLM suites and the rest of
# eval/ci.toml behind --all-suites (the CI gate runs them all).
quick_suites="retrieval-scifact-hybrid,tagging-reuters-knn,summaries-frank,recommend-movielens"
proved() { printf '   -> %s\n' "$1" >&2; }

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
proved "the candle embedder and the embedded Qdrant store hold a labelled memory the kNN tagger votes with"

step "content: 60 Reuters articles and 40 SciFact abstracts (golden-datasets/quickstart/)"
"$sd" ingest golden-datasets/quickstart/sample.jsonl
proved "content is chunked by token budget, embedded and stored with its payload (dense + BM25)"

step "enrich: kNN tags against the Reuters categories; summaries: 5 from the local LLM, the rest extractive"
"$sd" enrich --tagger knn --taxonomy golden-datasets/reuters21578/modapte90/taxonomy.tsv \
  --summaries --provider local --llm-items 5 --only-stale
proved "every item carries tags with evidence and lineage, and a summary marked llm or extractive"

step "search the enriched content"
"$sd" search "EC sugar tender" -k 3
proved "hybrid search (dense + BM25) finds the enriched content; hits show their tags"

step "recommend: a new reader (cold start), then more like one sample item"
"$sd" recommend --user a-new-reader -k 5
seed="$(head -1 golden-datasets/quickstart/sample.jsonl | sed -n 's/^{"id": *"\([^"]*\)".*/\1/p')"
"$sd" recommend --user a-new-reader --seed "$seed" -k 5
proved "a reader with no history gets a full list, and a seed gets its nearest items, each with its reason"

step "verify a claim against the sample (the local verifier: trained at first use, about a minute, then cached)"
"$sd" verify "TNFAIP3 is a glioblastoma tumor enhancer."
proved "a claim gets a verdict with the items and the sentences (byte spans) it rests on, no LLM needed"

step "ask the sample a question (the local LLM composes from numbered passages; it may cite only those)"
"$sd" ask "What role does TNFAIP3 play in glioblastoma?"
proved "a question gets an answer whose every statement cites a retrieved passage (item id + byte span)"

if [ "$all_suites" = 1 ]; then
  step "eval: every suite of eval/ci.toml"
  "$sd" eval run eval/ci.toml --output eval/reports
else
  step "eval: the quick suites of eval/ci.toml ($quick_suites; --all-suites for every one)"
  "$sd" eval run eval/ci.toml --output eval/reports --only "$quick_suites"
fi
proved "retrieval, tagging, summaries and recommendations measured on golden datasets, beside the baselines"

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
