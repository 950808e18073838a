#!/usr/bin/env bash
# Runs turbo-hipster's test suite: prepares the machine (databases, gearmand, the Python
# venv), builds the daemon and the plugin cdylibs that the end-to-end tests load, then
# runs `cargo test --workspace --no-fail-fast` (every test binary runs, so one failure does not
# hide the next) with any extra arguments given, e.g.
#   bash scripts/test.sh -p turbo-hipster -- --nocapture
# Exits with cargo test's status.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-test-env.sh

echo "==> cargo build --workspace"
cargo build --workspace

echo "==> cargo test --workspace --no-fail-fast $*"
exec cargo test --workspace --no-fail-fast "$@"
