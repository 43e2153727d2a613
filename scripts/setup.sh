#!/usr/bin/env bash
# Provision libtorch 2.11.0 for tch 0.24.0 and point the build at it.
#
# Idempotent: when a matching libtorch is already known, this takes a second.
# Resolution order (first match wins):
#   1. $LIBTORCH set by the user (must be 2.11.x);
#   2. a python3 on PATH whose torch is 2.11.x;
#   3. the per-user cache  ${XDG_CACHE_HOME:-~/.cache}/rlsd/torch-2.11.0  (a venv);
#   4. otherwise create that venv and `pip install torch==2.11.0` into it
#      (about 4.6 GB with its CUDA libraries; one to two minutes on a fast link).
# The chosen torch directory is linked at <repo>/.libtorch, which
# .cargo/config.toml hands to torch-sys as LIBTORCH.
set -euo pipefail

want="2.11"
want_full="2.11.0"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/rlsd"
venv="$cache/torch-$want_full"
link="$repo/.libtorch"
t0=$(date +%s)

say() { echo "[setup] $*" >&2; }
fail() { echo "[setup] error: $*" >&2; exit 1; }

# Version of a libtorch directory (a torch python package dir or an unpacked libtorch zip).
libtorch_version() {
  local dir="$1" v=""
  if [ -f "$dir/version.py" ]; then
    v=$(sed -n "s/^__version__ = '\([^']*\)'.*/\1/p" "$dir/version.py" | head -n1)
  fi
  if [ -z "$v" ] && [ -f "$dir/build-version" ]; then
    v=$(head -n1 "$dir/build-version")
  fi
  if [ -z "$v" ] && [ -f "$dir/include/torch/csrc/api/include/torch/version.h" ]; then
    v=$(sed -n 's/^#define TORCH_VERSION "\(.*\)"/\1/p' "$dir/include/torch/csrc/api/include/torch/version.h")
  fi
  echo "$v"
}

version_ok() { case "$1" in "$want".*|"$want") return 0 ;; *) return 1 ;; esac; }

python_torch_dir() {
  local py="$1"
  "$py" - <<'PY' 2>/dev/null
import os, torch
print(os.path.dirname(torch.__file__))
PY
}

choose() {
  local dir v
  if [ -n "${LIBTORCH:-}" ]; then
    [ -d "$LIBTORCH/lib" ] || fail "LIBTORCH=$LIBTORCH has no lib/ folder; point it at an unpacked libtorch $want_full or unset it"
    v=$(libtorch_version "$LIBTORCH")
    version_ok "$v" || fail "LIBTORCH=$LIBTORCH is libtorch '${v:-unknown}', but tch 0.24.0 needs $want_full. Unset LIBTORCH to let this script install torch==$want_full, or point it at libtorch $want_full."
    say "using LIBTORCH=$LIBTORCH ($v)"
    echo "$LIBTORCH"; return
  fi
  if [ -x "$venv/bin/python" ]; then
    dir=$(python_torch_dir "$venv/bin/python" || true)
    if [ -n "$dir" ] && version_ok "$(libtorch_version "$dir")"; then
      say "using cached torch in $venv"
      echo "$dir"; return
    fi
  fi
  if command -v python3 >/dev/null 2>&1; then
    dir=$(python_torch_dir python3 || true)
    if [ -n "$dir" ]; then
      v=$(libtorch_version "$dir")
      if version_ok "$v"; then
        say "using python3's torch $v at $dir"
        echo "$dir"; return
      fi
      say "python3 has torch $v, but tch 0.24.0 needs $want_full; installing $want_full into $venv instead"
    fi
  fi
  command -v python3 >/dev/null 2>&1 || fail "python3 is needed to install torch==$want_full (or set LIBTORCH to a libtorch $want_full)"
  say "installing torch==$want_full into $venv (about 4.6 GB download; this happens once per machine)"
  mkdir -p "$cache"
  # Install into a temporary venv and rename it when complete, so an
  # interrupted download never leaves a half-installed cache behind.
  local tmp="$venv.partial.$$"
  rm -rf "$tmp"
  python3 -m venv "$tmp"
  "$tmp/bin/pip" install --no-cache-dir --disable-pip-version-check -q "torch==$want_full" >&2 \
    || { rm -rf "$tmp"; fail "pip install torch==$want_full failed (see above)"; }
  rm -rf "$venv"
  mv "$tmp" "$venv"
  # venv scripts carry absolute paths: rewrite the shebang-bearing ones.
  grep -rl "$tmp" "$venv/bin" 2>/dev/null | xargs -r sed -i "s#$tmp#$venv#g"
  dir=$(python_torch_dir "$venv/bin/python") || fail "torch import failed after install in $venv"
  echo "$dir"
}

dir=$(choose)
if [ "$(readlink "$link" 2>/dev/null || true)" != "$dir" ]; then
  ln -sfn "$dir" "$link"
  say "linked $link -> $dir"
fi
# Record the python that owns this torch, for scripts that want it (goldens, benches).
py=""
if [ -x "$dir/../../../../bin/python" ]; then py="$(cd "$dir/../../../../bin" && pwd)/python"; fi
echo "${py:-python3}" > "$repo/.libtorch-python.tmp" && mv "$repo/.libtorch-python.tmp" "$repo/.libtorch-python"
say "libtorch $(libtorch_version "$dir") ready ($(( $(date +%s) - t0 ))s)"
# gloo's headers for the c10d Gloo shim (data-parallel training, src/distributed).
"$repo/scripts/setup_gloo.sh" || say "warning: gloo headers not fetched; distributed training will be left out of the build"
