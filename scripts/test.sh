#!/usr/bin/env bash
# Runs every test of the project: installs the tools the tests use, then the
# whole workspace's unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
# The habits first: formatted, and clippy-clean with every warning an error.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The static binaries of the container images (tests/e2e/images.rs packs
# them): built first, so this build does not compete with running tests.
deploy/build-images.sh --profile image-test --binaries-only
cargo test --workspace --locked "$@"
