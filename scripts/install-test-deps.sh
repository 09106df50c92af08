#!/usr/bin/env bash
# Installs what the tests use that Cargo does not: real clients and servers
# (curl, nghttp2's nghttp, redis-server, prometheus with its promtool).
# Idempotent; installs only what is missing. Needs root (CI runs as root) or
# sudo.
set -euo pipefail

declare -A PKG=(
  [curl]=curl
  [nghttp]=nghttp2-client
  [redis-server]=redis-server
  [prometheus]=prometheus
  [kubectl]=kubernetes-client  # `kubectl kustomize` builds deploy/kubernetes
)
missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "error: $cmd is still missing" >&2; exit 1; }
done
# Validates rendered Kubernetes objects offline (crates/serin-kube's tests).
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "installing: kubernetes-validate (pip)"
  python3 -m pip install --quiet kubernetes-validate
  # pyenv's Pythons need their shims refreshed to find new scripts.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
fi
command -v kubernetes-validate >/dev/null 2>&1 || { echo "error: kubernetes-validate is still missing" >&2; exit 1; }
