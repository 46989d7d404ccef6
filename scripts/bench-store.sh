#!/usr/bin/env bash
# The vector store's scale curve (README, "Scaling out"): `signaldesk bench store` on the embedded
# store (Qdrant Edge) and on a Qdrant server, each at 10k/100k/1M synthetic points shaped like the
# SciFact and Reuters-21578 embeddings, with and without int8 quantization. Writes every row to
# $work/rows.jsonl, the table to $work/table.md and the plot to $work/scale.png.
#
#   scripts/bench-store.sh [path/to/signaldesk]
#   env SIZES (10000,100000,1000000), QUANTIZATION (none,int8), BACKENDS (edge,qdrant),
#       QUERIES (200), HNSW_EF and OVERSAMPLING (comma-separated search settings, each measured on
#       every collection; default: the configured search.hnsw_ef and search.oversampling),
#       KEEP_ROWS=1 (append to the rows of earlier runs), QDRANT_BIN (default: the test fixture, unpacked as the tests do),
#       SIGNALDESK_SEARCH__HNSW_EF (the store's default) and other SIGNALDESK_* settings
#
# The base vectors are embedded once by `signaldesk embed` (the configured model) and kept in
# $work; the benchmark itself runs no model. The Qdrant server is the v1.18.3 test binary from
# ../shared/qdrant (or QDRANT_BIN), on free 127.0.0.1 ports with its storage under $work.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target="${CARGO_TARGET_DIR:-target}"
bin="$(realpath "${1:-$target/debug/signaldesk}")"
work="$target/bench-store"
sizes="${SIZES:-10000,100000,1000000}"
quantization="${QUANTIZATION:-none,int8}"
backends="${BACKENDS:-edge,qdrant}"
queries="${QUERIES:-200}"
mkdir -p "$work"
work="$(realpath "$work")"
export SIGNALDESK_DATA_DIR="$work/data" SIGNALDESK_MODELS_DIR="${SIGNALDESK_MODELS_DIR:-$PWD/models}"

embed() { # name input (BEIR's "_id" read as the id)
  if [[ ! -s "$work/base-$1.jsonl" ]]; then
    echo "bench-store: embedding $2 (once)" >&2
    gzip -dc "$2" | sed 's/^{"_id":/{"id":/' |
      "$bin" embed --input - --output "$work/base-$1.jsonl.partial"
    mv "$work/base-$1.jsonl.partial" "$work/base-$1.jsonl"
  fi
}
embed scifact golden-datasets/scifact/corpus.jsonl.gz
embed reuters-train golden-datasets/reuters21578/modapte90/train.jsonl.gz
embed reuters-test golden-datasets/reuters21578/modapte90/test.jsonl.gz
base="$work/base-scifact.jsonl,$work/base-reuters-train.jsonl,$work/base-reuters-test.jsonl"
rows="$work/rows.jsonl"
[[ "${KEEP_ROWS:-}" == 1 ]] || : > "$rows"
search_args=()
[[ -n "${HNSW_EF:-}" ]] && search_args+=(--hnsw-ef "$HNSW_EF")
[[ -n "${OVERSAMPLING:-}" ]] && search_args+=(--oversampling "$OVERSAMPLING")

plot_args=(--plot "$work/scale.png")
bench() { # The last run (the server's, or Edge's alone) draws and prints every row.
  "$bin" bench store --base "$base" --sizes "$sizes" --quantization "$quantization" \
    --queries "$queries" --output "$rows" "${search_args[@]}" "$@"
}

if [[ ",$backends," == *,edge,* ]]; then
  rm -rf "$work/data/bench"
  if [[ ",$backends," == *,qdrant,* ]]; then
    SIGNALDESK_STORE__BACKEND=edge bench > /dev/null
  else
    SIGNALDESK_STORE__BACKEND=edge bench "${plot_args[@]}" | tee "$work/table.md"
  fi
fi

if [[ ",$backends," == *,qdrant,* ]]; then
  source scripts/qdrant-bin.sh
  qdrant="$(qdrant_bin "$target")"
  read -r http grpc < <(python3 -c 'import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
  storage="$work/qdrant-storage"
  rm -rf "$storage"
  # Started from $work (exec, so $! is the server): Qdrant writes a marker file,
  # .qdrant-initialized, in its working directory.
  (
    cd "$work"
    exec env QDRANT__STORAGE__STORAGE_PATH="$storage" QDRANT__STORAGE__SNAPSHOTS_PATH="$work/qdrant-snapshots" \
      QDRANT__SERVICE__HOST=127.0.0.1 QDRANT__SERVICE__HTTP_PORT="$http" \
      QDRANT__SERVICE__GRPC_PORT="$grpc" QDRANT__LOG_LEVEL=WARN QDRANT__TELEMETRY_DISABLED=true \
      "$qdrant" --disable-telemetry > "$work/qdrant.log" 2>&1
  ) &
  pid=$!
  trap 'kill "$pid" 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$http/readyz" > /dev/null 2>&1 && break
    sleep 0.2
  done
  SIGNALDESK_STORE__BACKEND=qdrant SIGNALDESK_STORE__URL="http://127.0.0.1:$grpc" \
    bench --server-pid "$pid" --server-storage "$storage" "${plot_args[@]}" | tee "$work/table.md"
fi
echo "bench-store: rows in $rows, table in $work/table.md, plot in $work/scale.png" >&2
