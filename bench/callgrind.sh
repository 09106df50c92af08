#!/usr/bin/env bash
# Instructions per request of a serin build, free of timing noise: serin under
# valgrind --tool=callgrind in front of a one-worker NGINX upstream, counted
# over N requests (h2load --h1, 16 connections) after 500 of warm-up.
# `rep movs`/`rep stos` count one per byte under callgrind, so memcpy and
# memset look larger than they are.
#
#   bench/callgrind.sh BIN OUT [N]      then: callgrind_annotate OUT.1
set -euo pipefail
BIN=$1 OUT=$2 N=${3:-3000}
WORK=$(mktemp -d)
cat >"$WORK/up.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/up.pid; error_log $WORK/up.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18480; location / { return 200 "hello from upstream\n"; } } }
CONF
nginx -p "$WORK" -c "$WORK/up.conf" & UPP=$!
valgrind --tool=callgrind --callgrind-out-file="$OUT" --instr-atstart=no \
  "$BIN" proxy --listen 127.0.0.1:18481 --upstream 127.0.0.1:18480 --workers 1 \
  --admin 127.0.0.1:0 --log-format json >"$WORK/serin.log" 2>&1 & SP=$!
trap 'kill $SP $UPP 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -fs 127.0.0.1:18481/ >/dev/null && break; sleep 0.5; done
h2load --h1 -n 500 -c 16 http://127.0.0.1:18481/ >/dev/null
callgrind_control -i on "$SP" >/dev/null
h2load --h1 -n "$N" -c 16 http://127.0.0.1:18481/ | grep -E "^requests:"
callgrind_control -i off "$SP" >/dev/null
callgrind_control -d "$SP" >/dev/null
sleep 1
