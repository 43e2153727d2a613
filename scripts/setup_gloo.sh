#!/usr/bin/env bash
# Fetch gloo's headers at the commit build.rs compiles csrc/rlsd_dist.cpp
# against (c10d's ProcessGroupGloo.hpp includes them; the torch wheel ships
# libtorch's compiled Gloo but not these headers). Headers and gloo's
# LICENSE go to ${XDG_CACHE_HOME:-~/.cache}/rlsd/gloo-<commit>; nothing of
# gloo is committed to this repository. Idempotent.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
commit=$(sed -n 's/^const GLOO_COMMIT: &str = "\([0-9a-f]*\)";/\1/p' "$repo/build.rs")
[ -n "$commit" ] || { echo "[setup_gloo] cannot read GLOO_COMMIT from build.rs" >&2; exit 1; }
dest="${XDG_CACHE_HOME:-$HOME/.cache}/rlsd/gloo-$commit"
if [ -f "$dest/gloo/context.h" ]; then
  echo "[setup_gloo] gloo headers present: $dest" >&2
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
url="https://github.com/pytorch/gloo/archive/$commit.tar.gz"
echo "[setup_gloo] fetching $url" >&2
curl -fsSL --connect-timeout 20 --max-time 300 "$url" -o "$tmp/gloo.tar.gz"
tar -xzf "$tmp/gloo.tar.gz" -C "$tmp"
src="$tmp/gloo-$commit"
mkdir -p "$dest"
cp "$src/LICENSE" "$dest/"
(cd "$src" && find gloo -name '*.h' -print0 | cpio -0 -pdm --quiet "$dest" 2>/dev/null) \
  || (cd "$src" && find gloo -name '*.h' -exec cp --parents {} "$dest/" \;)
echo "[setup_gloo] gloo headers in $dest" >&2
