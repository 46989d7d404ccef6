#!/usr/bin/env bash
# The API under open-loop load (README, "Serving"): a 10,000-item catalogue (Reuters-21578 train
# and test, with their labels, so kNN tagging reads the same collection), 2,000 synthetic users
# with 20 clicks each, and the real server (the same binary and defaults a user runs, with the
# load settings below). Each route is driven by `signaldesk bench http` at several fixed rates
# for LOAD_SECONDS each, inputs taken in turn from files with more distinct inputs than requests,
# so no answer comes from a cache (each rate against a freshly started server with a fresh cache).
# Reports p50/p90/p99 per rate, the highest rate at which each p99 target holds with no errors,
# and the server's peak RSS.
#
#   scripts/load-test.sh [path/to/signaldesk]
#   env LOAD_SECONDS (60), SEARCH_RATES (200,250,300), RECOMMEND_RATES (500,750,1000),
#       TAG_RATES (100,200,300)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/server-url.sh
target="${CARGO_TARGET_DIR:-target}"
bin="$(realpath "${1:-$target/debug/signaldesk}")"
seconds="${LOAD_SECONDS:-60}"
work="$target/load-test"
mkdir -p "$work"
export SIGNALDESK_DATA_DIR="$work/data" SIGNALDESK_CACHE_DIR="$work/cache"
export SIGNALDESK_MODELS_DIR="$PWD/models" SIGNALDESK_PROMPTS_DIR="$PWD/prompts"

python3 - "$work" <<'PY'
import gzip, json, random, re, sys
work = sys.argv[1]
docs = []
for split in ("train", "test"):
    with gzip.open(f"golden-datasets/reuters21578/modapte90/{split}.jsonl.gz", "rt") as f:
        docs += [json.loads(l) for l in f]
docs = docs[:10000]
rng = random.Random(20261130)
with open(f"{work}/content.jsonl", "w") as f:
    for d in docs:
        f.write(json.dumps({"id": f"r{d['id']}", "title": d["title"], "body": d["body"], "labels": d["labels"]}) + "\n")
def sentences(text):
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if len(s.split()) >= 4]
pool, seen = [], set()
for d in docs:
    for s in [d["title"]] + sentences(d["body"]):
        s = " ".join(s.split()[:30])
        if s.lower() not in seen:
            seen.add(s.lower())
            pool.append(s)
rng.shuffle(pool)
half = len(pool) // 2
with open(f"{work}/queries.jsonl", "w") as f:
    for s in pool[:half]:
        f.write(json.dumps({"q": s}) + "\n")
with open(f"{work}/tag-items.jsonl", "w") as f:
    for s in pool[half:]:
        f.write(json.dumps({"body": s}) + "\n")
by_label = {}
for d in docs:
    for l in d["labels"]:
        by_label.setdefault(l, []).append(f"r{d['id']}")
labels = [l for l, items in by_label.items() if len(items) >= 20]
with open(f"{work}/events.jsonl", "w") as f, open(f"{work}/users.jsonl", "w") as u:
    for n in range(2000):
        user = f"u{n}"
        interest = rng.choice(labels)
        clicks = rng.sample(by_label[interest], 15) + rng.sample([f"r{d['id']}" for d in docs[:2000]], 5)
        for k, item in enumerate(clicks):
            f.write(json.dumps({"user": user, "item": item, "event": "click", "timestamp": 1_700_000_000 + n * 100 + k}) + "\n")
        u.write(json.dumps({"user": user}) + "\n")
print(f"load-test: {len(docs)} items, {half} queries, {len(pool) - half} tag items, 2000 users", file=sys.stderr)
PY

key="load-$RANDOM$RANDOM"
cat > "$work/signaldesk.toml" <<TOML
[api]
taggers = ["knn"]
taxonomy = "$PWD/golden-datasets/reuters21578/modapte90/taxonomy.tsv"
llm = false
rate_per_key = 0
tag_concurrency = 16
refresh_s = 0
keys = [ { name = "load", sha256 = "$("$bin" serve --hash-key "$key")", scopes = ["read"] } ]

[enrich.knn]
memory = "content"
TOML
export SIGNALDESK_CONFIG="$work/signaldesk.toml"
"$bin" ingest "$work/content.jsonl"
rm -f "$SIGNALDESK_DATA_DIR/interactions.redb"
"$bin" interactions ingest "$work/events.jsonl" 2>&1 | tail -1

# Each rate runs against a freshly started server with a fresh embedding cache, and inputs are
# taken from the top of their file each time: within a server's life no query or item repeats,
# so no answer comes from a cache (users repeat: recommendations have no cache).
server=""
trap '[ -n "$server" ] && kill $server 2>/dev/null; wait 2>/dev/null' EXIT
start_server() {
  rm -rf "$work/serve-cache"
  SIGNALDESK_CACHE_DIR="$work/serve-cache" "$bin" serve --addr 127.0.0.1:0 2> "$work/server.log" &
  server=$!
  url="$(server_url "$server" "$work/server.log")"
  start_rss="$(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$server/status)"
}
peak_rss=0
stop_server() { # records the server's peak RSS, then stops it gracefully (SIGTERM drains)
  local hwm
  hwm="$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$server/status)"
  [ "$hwm" -gt "$peak_rss" ] && peak_rss="$hwm"
  kill "$server"
  wait "$server" || { echo "the server exited with an error" >&2; cat "$work/server.log" >&2; exit 1; }
  server=""
}
export BENCH_API_KEY="$key"
summary=()
run() { # route rates p99-target inputs
  echo "== $1 (p99 target $3 ms)"
  local rate out best="none"
  for rate in ${2//,/ }; do
    start_server
    out="$("$bin" bench http --url "$url" --route "$1" --rate "$rate" --duration-s "$seconds" \
      --inputs "$4" --p99-ms "$3" 2>&1)"
    grep -v "^bench http: \(highest rate\|no rate met\)" <<< "$out" | sed "/^bench http:/! s/\$/ (server RSS at start $start_rss MiB)/"
    grep -q "^bench http: highest rate" <<< "$out" && best="$rate/s"
    stop_server
  done
  summary+=("$1: highest rate with p99 < $3 ms and no errors: $best")
}
run search "${SEARCH_RATES:-200,250,300}" 50 "$work/queries.jsonl"
run recommend "${RECOMMEND_RATES:-500,750,1000}" 25 "$work/users.jsonl"
run tag "${TAG_RATES:-100,200,300}" 50 "$work/tag-items.jsonl"
printf 'load-test: %s\n' "${summary[@]}"
echo "load-test: server peak RSS over all runs $peak_rss MiB"
