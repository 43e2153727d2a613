#!/usr/bin/env bash
# Fetch gloo's headers at the commit build.rs compiles csrc/rlsd_dist.cpp
# against (c10d's ProcessGroupGloo.hpp includes them; the torch wheel ships
# libtorch's compiled Gloo but not these headers). Headers and gloo's
# LICENSE go to ${XDG_CACHE_HOME:-~/.cache}/rlsd/gloo-<commit>; nothing of
# gloo is committed to this repository. Idempotent.
#
# Where GitHub is out of reach (CI machines), the headers come from the
# Debian/Ubuntu package libgloo-dev instead, without root (`apt-get download`
# + `dpkg-deb -x`), into .../rlsd/gloo-debian (build.rs looks there second).
# That package is an older gloo than libtorch's; the shim only names c10d's
# types and gloo's transport/device factory, whose declarations agree, and
# the exact-equality dist tests (tests/dist_equal*.rs) check the result.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
commit=$(sed -n 's/^const GLOO_COMMIT: &str = "\([0-9a-f]*\)";/\1/p' "$repo/build.rs")
[ -n "$commit" ] || { echo "[setup_gloo] cannot read GLOO_COMMIT from build.rs" >&2; exit 1; }
dest="${XDG_CACHE_HOME:-$HOME/.cache}/rlsd/gloo-$commit"
if [ -f "$dest/gloo/context.h" ]; then
  echo "[setup_gloo] gloo headers present: $dest" >&2
  exit 0
fi
debian="${XDG_CACHE_HOME:-$HOME/.cache}/rlsd/gloo-debian"
if [ -f "$debian/gloo/context.h" ]; then
  echo "[setup_gloo] gloo headers (Debian's libgloo-dev) present: $debian" >&2
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# libgloo-dev from the distribution's archive, unpacked without installing.
from_debian() {
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
    echo "[setup_gloo] no apt-get/dpkg-deb for the libgloo-dev fallback" >&2
    return 1
  }
  (cd "$tmp" && apt-get download libgloo-dev >&2) || return 1
  dpkg-deb -x "$tmp"/libgloo-dev_*.deb "$tmp/deb" || return 1
  [ -f "$tmp/deb/usr/include/gloo/context.h" ] || return 1
  mkdir -p "$debian"
  cp -r "$tmp/deb/usr/include/gloo" "$debian/"
  cp "$tmp/deb/usr/share/doc/libgloo-dev/copyright" "$debian/LICENSE"
  basename "$tmp"/libgloo-dev_*.deb > "$debian/SOURCE"
  echo "[setup_gloo] gloo headers from $(cat "$debian/SOURCE") in $debian" >&2
}

url="https://github.com/pytorch/gloo/archive/$commit.tar.gz"
echo "[setup_gloo] fetching $url" >&2
if ! curl -fsSL --connect-timeout 20 --max-time 300 "$url" -o "$tmp/gloo.tar.gz"; then
  echo "[setup_gloo] GitHub unreachable; trying Debian's libgloo-dev" >&2
  from_debian
  exit $?
fi
tar -xzf "$tmp/gloo.tar.gz" -C "$tmp"
src="$tmp/gloo-$commit"
mkdir -p "$dest"
cp "$src/LICENSE" "$dest/"
(cd "$src" && find gloo -name '*.h' -print0 | cpio -0 -pdm --quiet "$dest" 2>/dev/null) \
  || (cd "$src" && find gloo -name '*.h' -exec cp --parents {} "$dest/" \;)
echo "[setup_gloo] gloo headers in $dest" >&2
