#!/usr/bin/env bash
# Installs what the tests use that Cargo does not: real clients and servers
# (curl, nghttp2's nghttp, openssl's s_client, redis-server, prometheus
# with its promtool).
# Idempotent; installs only what is missing. Needs root (CI runs as root) or
# sudo.
set -euo pipefail

declare -A PKG=(
  [curl]=curl
  # `openssl s_client` for the TLS tests (tests/e2e/tls.rs).
  [openssl]=openssl
  [nghttp]=nghttp2-client
  [redis-server]=redis-server
  [prometheus]=prometheus
  [kubectl]=kubernetes-client  # `kubectl kustomize` builds deploy/kubernetes
  # Container images (deploy/build-images.sh, tests/e2e/images.rs).
  [podman]=podman
  [runc]=runc
  [jq]=jq
  [readelf]=binutils
  # A second network namespace for the admin API tests (tests/e2e/admin.rs).
  [ip]=iproute2
  # A load balancer in front sending the PROXY protocol (tests/e2e/proxy_protocol.rs).
  [haproxy]=haproxy
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

# --- Dashboard browser test (crates/serin/tests/e2e/dashboard.rs): headless
# Chromium from Debian, driven by Playwright (playwright-core, pinned by the
# folder's package-lock.json; it downloads no browser of its own).
if [[ ! -x /usr/bin/chromium ]]; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  echo "installing: chromium"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
[[ -x /usr/bin/chromium ]] || { echo "error: /usr/bin/chromium is still missing" >&2; exit 1; }
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  echo "installing: nodejs npm (the browser test's driver runs on Node.js)"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
command -v npm >/dev/null 2>&1 || { echo "error: npm is still missing (Node.js is needed for the browser test)" >&2; exit 1; }
browser_tests="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/crates/serin/tests/browser"
# The stamp is the lock file last installed: a changed lock installs again.
stamp="$browser_tests/node_modules/.serin-installed-lock.json"
if ! cmp -s "$browser_tests/package-lock.json" "$stamp"; then
  echo "installing: playwright-core (npm ci in crates/serin/tests/browser)"
  (cd "$browser_tests" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$browser_tests/package-lock.json" "$stamp"
fi

# podman in this sandbox (no systemd, cgroup v1/hybrid, no CAP_SYS_RESOURCE
# for raising rlimits): cgroupfs instead of systemd, no default ulimits.
# Containers run with `--runtime runc` (crun refuses hybrid cgroups). Only
# missing settings are added; other settings in the file are kept.
containers_conf=${CONTAINERS_CONF:-/etc/containers/containers.conf}
need_ulimits=1
need_cgroup=1
if [[ -f $containers_conf ]]; then
  grep -Eq '^[[:space:]]*default_ulimits[[:space:]]*=' "$containers_conf" && need_ulimits=0
  grep -Eq '^[[:space:]]*cgroup_manager[[:space:]]*=' "$containers_conf" && need_cgroup=0
fi
if ((need_ulimits || need_cgroup)); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  echo "configuring podman: $containers_conf"
  $SUDO mkdir -p "$(dirname "$containers_conf")"
  $SUDO touch "$containers_conf"
  # A key goes into its table: after an existing [table] header, else in a
  # new table at the end.
  add_setting() {
    local table=$1 line=$2
    if grep -Eq "^[[:space:]]*\[$table\][[:space:]]*$" "$containers_conf"; then
      $SUDO sed -i -E "0,/^[[:space:]]*\[$table\][[:space:]]*$/s//[$table]\n$line/" "$containers_conf"
    else
      printf '\n[%s]\n%s\n' "$table" "$line" | $SUDO tee -a "$containers_conf" >/dev/null
    fi
  }
  if ((need_ulimits)); then add_setting containers 'default_ulimits = []'; fi
  if ((need_cgroup)); then add_setting engine 'cgroup_manager = "cgroupfs"'; fi
fi
