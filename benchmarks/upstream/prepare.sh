#!/usr/bin/env bash
# Fetch the authors' released code next to (never inside) this project and apply our small
# patches, which only make it run without CUDA and without ImageNet weights
# (UPSTREAM_WEIGHTS=none → random-init ResNet-18; unset → ImageNet, as released).
#
#   benchmarks/upstream/prepare.sh DEST [DRA_SOURCE] [DEVNET_SOURCE]
#
# DEST/DRA and DEST/devnet are created (DEST must be outside the repository). A SOURCE is
# anything `git clone` accepts (default: the GitHub repositories; a local mirror works
# offline). The upstream code is AGPL-3.0 (DRA) / unlicensed (DevNet): nothing of it is
# copied into this repository; only our patches live here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:?usage: prepare.sh DEST [DRA_SOURCE] [DEVNET_SOURCE]}"
dra_src="${2:-https://github.com/Choubo/DRA.git}"
devnet_src="${3:-https://github.com/mala-lab/deviation-network-image.git}"
DRA_COMMIT=3fb0e9cce9bee3c23072caa30c889b905c4830ed      # 2022-04-11, code of 2022-04-10
DEVNET_COMMIT=7a13ee63734148c637746999a4939011c828ea9b   # 2022-10-29 (training code of 75d9f6d)
repo_root="$(git -C "$here" rev-parse --show-toplevel)"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
case "$dest/" in "$repo_root"/*) echo "error: DEST $dest is inside the repository $repo_root; choose a folder outside it" >&2; exit 2;; esac

fetch_one() {  # name source commit patch
  local name=$1 src=$2 commit=$3 patch=$4 out="$dest/$1"
  if [ -e "$out" ]; then
    echo "error: $out exists; remove it (rm -rf $out) to prepare it again" >&2; exit 2
  fi
  local tmp; tmp="$(mktemp -d "$dest/.$name.XXXXXX")"
  git clone --quiet "$src" "$tmp/git"
  git -C "$tmp/git" -c advice.detachedHead=false checkout --quiet "$commit" || {
    echo "error: $src has no commit $commit" >&2; exit 2; }
  git -C "$tmp/git" archive "$commit" | tar -x -C "$tmp" --one-top-level=tree
  patch --quiet -p1 -d "$tmp/tree" < "$here/$patch"
  mv "$tmp/tree" "$out"; rm -rf "$tmp"
  echo "prepared $out ($commit + $patch)"
}
fetch_one DRA "$dra_src" "$DRA_COMMIT" dra.patch
fetch_one devnet "$devnet_src" "$DEVNET_COMMIT" devnet.patch
