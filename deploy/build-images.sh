#!/usr/bin/env bash
# Builds the container images REPO/serin:TAG and REPO/serin-demo:TAG from
# deploy/Containerfile: first the two binaries, statically linked against
# glibc (the images are FROM scratch), then the images with `podman build`.
# No base image is pulled.
#
#   deploy/build-images.sh [--profile PROFILE] [--repo REPO] [--tag TAG]
#                          [--binaries-only]
#
# PROFILE  the cargo profile of the binaries (default: image, the release
#          build without debug info; the tests use image-test, the same code
#          with no LTO and fewer optimizations, which compiles faster)
# REPO     the images' repository (default: localhost, as
#          `serin render kubernetes` expects)
# TAG      the images' tag (default: the workspace version, as
#          `serin render kubernetes` expects)
# --binaries-only  build and check the static binaries, no images
#
# Prints the two image names (with --binaries-only: the two binaries) on
# its last two lines.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=image
binaries_only=0
repo=localhost
tag=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
while (($#)); do
  case "$1" in
    --profile) profile=${2:?--profile needs a value}; shift 2 ;;
    --repo) repo=${2:?--repo needs a value}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --binaries-only) binaries_only=1; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-images.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
tools=(cargo jq readelf)
((binaries_only)) || tools+=(podman)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "build-images.sh: $tool is missing (scripts/install-test-deps.sh installs it)" >&2
    exit 1
  }
done

# The host's own target, named explicitly: with --target, RUSTFLAGS reach
# only the target's code, not build scripts and proc-macros (which cannot be
# static).
triple=$(rustc -vV | sed -n 's/^host: //p')
echo "==> cargo build --profile $profile --target $triple (static)" >&2
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked --profile "$profile" --target "$triple" \
  -p serin --bin serin -p serin-demo --bin serin-demo

target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
case "$profile" in
  dev) profile_dir=debug ;;
  *) profile_dir=$profile ;;
esac
bin_dir="$target_dir/$triple/$profile_dir"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
for bin in serin serin-demo; do
  # A static executable has no program interpreter (ld.so) to load it.
  if readelf --program-headers "$bin_dir/$bin" | grep -q INTERP; then
    echo "build-images.sh: $bin_dir/$bin is not statically linked" >&2
    exit 1
  fi
  cp "$bin_dir/$bin" "$context/$bin"
done
if ((binaries_only)); then
  echo "$bin_dir/serin"
  echo "$bin_dir/serin-demo"
  exit 0
fi
cp -r deploy/rootfs "$context/rootfs"
mkdir -m 1777 "$context/rootfs/tmp"
# The state folder's parents belong to root; the folder itself is the
# user's (the Containerfile copies it with --chown).
mkdir -p "$context/rootfs/var/run/serin"
mkdir "$context/state"

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $revision != unknown && -n $(git status --porcelain 2>/dev/null) ]]; then
  revision="$revision-dirty"
fi
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
for image in serin serin-demo; do
  echo "==> podman build $repo/$image:$tag" >&2
  # Docker's image format: OCI's has no HEALTHCHECK (podman drops it).
  # No --layers: the shared first stage leaves no dangling image behind.
  podman build --quiet --format docker --layers=false \
    --target "$image" --tag "$repo/$image:$tag" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    --build-arg "CREATED=$created" \
    --file deploy/Containerfile "$context" >/dev/null
done
echo "$repo/serin:$tag"
echo "$repo/serin-demo:$tag"
