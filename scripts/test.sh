#!/usr/bin/env bash
# Runs every test of the project: installs the tools the tests use, then the
# whole workspace's unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo test --workspace --locked "$@"
