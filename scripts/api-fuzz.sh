#!/usr/bin/env bash
# The API's contract against the real server: /openapi.json passes openapi-spec-validator, a
# client generated from it calls the main routes (scripts/api_client_check.py), then bad input:
# schemathesis generates requests from /openapi.json (valid
# and invalid bodies, parameters and headers) and checks every answer's status code, content
# type, headers and body against the document (503 and 504 included, which must be the JSON
# error); the server's own counts then show no 5xx but those. Fails below 500 requests answered.
#
#   scripts/api-fuzz.sh [path/to/signaldesk]     (default: the debug build in CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/server-url.sh
target="${CARGO_TARGET_DIR:-target}"
bin="$(realpath "${1:-$target/debug/signaldesk}")"
# Not SIGNALDESK_-prefixed: every SIGNALDESK_* variable is read as a config override.
examples="${FUZZ_EXAMPLES:-100}"

venv="$target/schemathesis-venv"
# (Re)installed unless every pinned requirement is there.
if [ ! -x "$venv/bin/schemathesis" ] || "$venv/bin/pip" freeze 2>/dev/null | grep -vxFq -f - scripts/api-fuzz-requirements.txt; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/api-fuzz-requirements.txt
fi

work="$(mktemp -d)"
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export SIGNALDESK_DATA_DIR="$work/data" SIGNALDESK_CACHE_DIR="$work/cache"
export SIGNALDESK_MODELS_DIR="$PWD/models" SIGNALDESK_PROMPTS_DIR="$PWD/prompts"
data=golden-datasets/reuters21578/modapte90
(zcat "$data/train.jsonl.gz" || true) | head -300 > "$work/memory.jsonl"
(zcat "$data/test.jsonl.gz" || true) | head -50 > "$work/content.jsonl"
"$bin" ingest --chunking off --collection labelled-memory "$work/memory.jsonl" 2>/dev/null
"$bin" ingest "$work/content.jsonl" 2>/dev/null
key="fuzz-$RANDOM$RANDOM"
cat > "$work/signaldesk.toml" <<TOML
[api]
taggers = ["knn"]
taxonomy = "$PWD/$data/taxonomy.tsv"
llm = false
rate_per_key = 0
keys = [ { name = "fuzz", sha256 = "$("$bin" serve --hash-key "$key")", scopes = ["admin"] } ]
TOML
export SIGNALDESK_CONFIG="$work/signaldesk.toml"
"$bin" serve --addr 127.0.0.1:0 2> "$work/server.log" &
server=$!
url="$(server_url "$server" "$work/server.log" 300)"
# The contract first, on a fresh server: the document is valid OpenAPI, and a client generated
# from it (openapi-python-client) calls content, search, tag, feedback and recommend.
curl -sf "$url/openapi.json" > "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"
mkdir -p "$work/gen"
(cd "$work/gen" && PATH="$(realpath "$venv/bin"):$PATH" \
  "$(realpath "$venv/bin/openapi-python-client")" generate --path ../openapi.json --meta none >/dev/null)
PYTHONPATH="$work/gen" "$venv/bin/python" scripts/api_client_check.py "$url" "$key"
answered() {
  curl -s "$url/metrics" | awk '/^signaldesk_http_request_duration_seconds_count/ { n += $2 } END { print n + 0 }'
}
before="$(answered)"
# From the temporary dir: schemathesis keeps a `.schemathesis/` cache in its working directory.
schemathesis="$(realpath "$venv/bin/schemathesis")"
reports="$(realpath -m "$target/test-artifacts/schemathesis")"
(cd "$work" && "$schemathesis" run "$url/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,fuzzing,stateful --max-examples "$examples" --seed 20261130 --workers 2 \
  --report junit --report-dir "$reports")
after="$(answered)"
requests=$((after - before - 1))
echo "api-fuzz: the server answered $requests generated requests"
if [ "$requests" -lt 500 ]; then
  echo "api-fuzz: fewer than 500 requests; raise FUZZ_EXAMPLES" >&2
  exit 1
fi
# Server errors, from the server's own per-route, per-status counts: 503 and 504 are answers
# (not ready, a failed dependency, a deadline; the schema check above held their bodies to the
# JSON error), anything else 5xx is a defect.
errors="$(curl -s "$url/metrics" | awk '/^signaldesk_http_request_duration_seconds_count/ && /status="5/ && !/status="50[34]"/')"
if [ -n "$errors" ]; then
  echo "api-fuzz: server errors:" >&2
  echo "$errors" >&2
  exit 1
fi
echo "api-fuzz: no 5xx other than the documented 503/504 JSON errors"
