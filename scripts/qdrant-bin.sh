# Sourced by the benchmark scripts: `qdrant_bin TARGET_DIR` prints the path of the Qdrant v1.18.3
# server binary: $QDRANT_BIN if set, else the test fixture from ../shared/qdrant unpacked (and its
# sha256 checked) under TARGET_DIR/tmp, as tests/common/qdrant.rs does.
qdrant_bin() {
  if [[ -n "${QDRANT_BIN:-}" ]]; then
    realpath "$QDRANT_BIN"
    return
  fi
  local bin="$1/tmp/qdrant-v1.18.3/qdrant"
  if [[ ! -x "$bin" ]]; then
    local archive=../shared/qdrant/qdrant-v1.18.3-x86_64-linux-gnu.xz
    [[ -f "$archive" ]] || { echo "no Qdrant binary: set QDRANT_BIN" >&2; return 1; }
    mkdir -p "$(dirname "$bin")"
    xz -dc "$archive" > "$bin.partial"
    echo "0033a280820b75c10be2c01b23e71688d2d5fc50495d76a1be61e19dd95d65c2  $bin.partial" | sha256sum -c --quiet >&2
    chmod +x "$bin.partial" && mv "$bin.partial" "$bin"
  fi
  realpath "$bin"
}
