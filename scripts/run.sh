#!/usr/bin/env bash
# The main job end to end on the embedded defaults: fetch models if missing, then run the
# pipeline on the bundled dataset and print its report. Extra arguments go to `signaldesk pipeline`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-models.sh
exec cargo run --quiet --locked --bin signaldesk -- pipeline "$@"
