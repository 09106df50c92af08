#!/usr/bin/env bash
# serin side by side with NGINX and HAProxy, in one run, on loopback: HTTP/1.1
# keep-alive (wrk) and HTTP/2 (h2load), requests/s, the proxy's own CPU time
# per request, open-loop p50/p99 at a fixed rate (oha) and RSS, and
# HTTP/1.1 with gzip compression on (peers.sh --gzip). Every
# process is pinned to one CPU (see peers.sh for why). Writes the tables to
# bench/results/DATE-COMMIT.md.
#
#   bench/run.sh [--seconds N]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=8
[[ ${1:-} == --seconds ]] && SECONDS_PER=$2

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --profile bench-release -p serin
BIN=$CARGO_TARGET_DIR/bench-release/serin
command -v oha >/dev/null 2>&1 || cargo install --locked oha

commit=$(git rev-parse --short HEAD)
dirty=$([[ -n $(git status --porcelain -- crates) ]] && echo "+uncommitted" || true)
out=bench/results/$(date -u +%Y-%m-%d)-$commit$dirty.md
candidate="$BIN proxy --listen {listen} --upstream {upstream} --workers 1 --admin 127.0.0.1:0 --log-format json"

h1=$(bench/peers.sh --candidate "$candidate" --seconds "$SECONDS_PER" 2>&1)
h2=$(bench/peers.sh --candidate "$candidate" --seconds "$SECONDS_PER" --h2 2>&1)
# Compression on: the listener compresses with gzip; peers.sh's fixed ports.
gzip_config=$(mktemp --suffix .yaml)
trap 'rm -f "$gzip_config"' EXIT
cat >"$gzip_config" <<'YAML'
workers: 1
admin: {address: 127.0.0.1:0}
listeners: [{name: web, address: 127.0.0.1:18384, compression: {encodings: [gzip]}}]
services: [{name: up, versions: [{name: v1, endpoints: ["127.0.0.1:18380"]}]}]
routes: [{name: all, rules: [{backendRefs: [{name: up, version: v1}]}]}]
YAML
gz=$(bench/peers.sh --candidate "$BIN proxy --config $gzip_config" --seconds "$SECONDS_PER" --gzip 2>&1)
{
  echo "# serin vs NGINX vs HAProxy — commit $commit$dirty, $(date -u +%FT%TZ)"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), all processes pinned to CPU 0; one worker each; ${SECONDS_PER}s per run."
  echo
  echo "## HTTP/1.1 keep-alive (wrk, 64 connections; latency open-loop with oha)"
  echo
  echo '```'
  echo "$h1"
  echo '```'
  echo
  echo "## HTTP/2 (h2load, 16 connections x 10 streams; upstream HTTP/1.1)"
  echo
  echo '```'
  echo "$h2"
  echo '```'
  echo
  echo "## Compression on (wrk with Accept-Encoding: gzip; 4 KiB text/plain; everyone at zlib level 6)"
  echo
  echo '```'
  echo "$gz"
  echo '```'
} >"$out"
cat "$out"
echo "written to $out"
