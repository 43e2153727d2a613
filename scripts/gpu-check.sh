#!/usr/bin/env bash
# One-call GPU check for a machine with NVIDIA GPUs and the torch 2.11 wheel
# (python3 -c 'import torch' works) but no Rust toolchain. It runs binaries
# built elsewhere (see "Preparing" below) against this machine's libtorch.
#
# Stages (each under its own timeout; a failing stage records its error and
# the script goes on):
#   info      rlsd info (libtorch version, CUDA devices)
#   gpu_tests the `--features gpu` test binary (tests/gpu.rs)
#   logits    tiny model logits, CPU vs cuda:0
#   gen       generation tokens/s, Qwen2-0.5B-shaped random model, bf16
#   train     one train step (fwd+bwd+AdamW), same model, bf16, 4 x 4096 tokens, MFU
#   dp_equal  with 2+ GPUs: tests/dist_equal.rs (Gloo ranks on CPU, the
#             equality logic) and `rlsd train --gpus 0,1` (NCCL ranks) with
#             bit-identical weights across ranks
# Output: $OUT/gpu-check.json (one object, a key per stage) and
# $OUT/gpu-check-summary.txt. Budget: under 8 minutes on one H100/H200.
#
# Preparing (on the build machine, with the same LIBTORCH path layout):
#   cargo build --features gpu --bins
#   cargo test --features gpu --test gpu --test dist_equal --no-run
#   scripts/gpu-check.sh --collect DIR   # copies the binaries into DIR/bin
# Running (on the GPU machine, from the repository root or with BIN=DIR/bin):
#   BIN=DIR/bin OUT=/tmp/gpucheck scripts/gpu-check.sh
set -u

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ "${1:-}" = "--collect" ]; then
  dest="${2:?usage: gpu-check.sh --collect DIR}/bin"
  mkdir -p "$dest"
  prof="$repo/target/debug"
  for b in rlsd gpu_check; do cp "$prof/$b" "$dest/" || exit 1; done
  for t in gpu dist_equal; do
    f=$(ls -t "$prof"/deps/"$t"-* 2>/dev/null | grep -v '\.d$' | head -n1)
    [ -n "$f" ] && cp "$f" "$dest/test_$t" || echo "missing test binary $t (cargo test --features gpu --test $t --no-run)" >&2
  done
  strip --strip-debug "$dest"/* 2>/dev/null || true
  ls -la "$dest"
  exit 0
fi

BIN="${BIN:-$repo/bin}"
[ -d "$BIN" ] || BIN="$repo/target/debug"
OUT="${OUT:-$repo/gpu-check-out}"
mkdir -p "$OUT"
json="$OUT/gpu-check.json"
summary="$OUT/gpu-check-summary.txt"
: > "$summary"
started=$(date +%s)

say() { echo "[gpu-check] $*" | tee -a "$summary" >&2; }

# This machine's libtorch, CUDA runtime and NCCL from python3's torch wheel.
py="${PYTHON:-python3}"
torch_lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null || true)
site=$("$py" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))' 2>/dev/null || true)
torch_version=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo unknown)
libs="$torch_lib"
if [ -n "$site" ] && [ -d "$site/nvidia" ]; then
  for d in "$site"/nvidia/*/lib; do libs="$libs:$d"; done
fi
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
say "torch $torch_version, libtorch at ${torch_lib:-NOT FOUND}, $gpus GPU(s): ${gpu_name:-none}, binaries in $BIN"
# Dense bf16 peak for MFU: H100/H200 SXM 989 TFLOP/s, A100 312, else PEAK_TFLOPS.
case "$gpu_name" in
  *H100*|*H200*) peak=989 ;;
  *A100*) peak=312 ;;
  *) peak=${PEAK_TFLOPS:-989} ;;
esac

declare -A result
# run_stage NAME TIMEOUT_S CMD...: stdout's last JSON line (or the error) is the stage's result.
run_stage() {
  local name="$1" limit="$2"; shift 2
  local log="$OUT/$name.log" t0 rc
  t0=$(date +%s)
  say "stage $name (timeout ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  rc=$?
  local secs=$(( $(date +%s) - t0 ))
  local last
  last=$(grep -E '^\{.*\}$' "$log" | tail -n1)
  local tail_txt
  tail_txt=$(tail -n 15 "$log" | "$py" -c 'import json,sys; print(json.dumps(sys.stdin.read()))' 2>/dev/null || echo '""')
  if [ $rc -eq 0 ]; then
    result[$name]="{\"ok\": true, \"seconds\": $secs, \"result\": ${last:-null}, \"tail\": $tail_txt}"
    say "  ok in ${secs}s ${last:-}"
  else
    [ $rc -eq 124 ] && say "  TIMED OUT after ${limit}s" || say "  FAILED (exit $rc) in ${secs}s"
    result[$name]="{\"ok\": false, \"exit\": $rc, \"seconds\": $secs, \"result\": ${last:-null}, \"tail\": $tail_txt}"
    tail -n 5 "$log" | sed 's/^/    /' | tee -a "$summary" >&2
  fi
}

run_stage info 60 "$BIN/rlsd" info
if [ -x "$BIN/test_gpu" ]; then
  run_stage gpu_tests 150 "$BIN/test_gpu" --test-threads=1
else
  say "stage gpu_tests: no $BIN/test_gpu"; result[gpu_tests]='{"ok": false, "error": "test binary missing"}'
fi
run_stage logits 60 "$BIN/gpu_check" logits --device cuda:0
run_stage gen 90 "$BIN/gpu_check" gen --device cuda:0 --dtype bf16 --batch 64 --new-tokens 128 --repeats 3
run_stage train 120 "$BIN/gpu_check" train --device cuda:0 --dtype bf16 --batch 4 --seq 4096 --repeats 2 --peak-tflops "$peak"
if [ "$gpus" -ge 2 ]; then
  if [ -x "$BIN/test_dist_equal" ]; then
    run_stage dp_equal_cpu 90 "$BIN/test_dist_equal" --test-threads=1
  fi
  dp="$OUT/dp-run"
  rm -rf "$dp"
  run_stage dp_gpus 150 env RLSD_LOG=warn RLSD_DIST_TIMEOUT_S=60 "$BIN/rlsd" train --gpus 0,1 --overwrite \
    --set runtime.steps=3 --set rollout.batch_prompts=4 --set rollout.group_size=4 --set rollout.max_new_tokens=32 \
    --set "runtime.out_dir=\"$dp\""
  if [ -f "$dp/ranks/rank0.json" ] && [ -f "$dp/ranks/rank1.json" ]; then
    same=$("$py" -c 'import json,sys; a,b=[json.load(open(f)) for f in sys.argv[1:]]; print(str(a["weights_sha256"]==b["weights_sha256"]).lower())' "$dp/ranks/rank0.json" "$dp/ranks/rank1.json")
    result[dp_identical]="{\"ok\": $same}"
    say "  NCCL ranks bit-identical: $same"
  else
    result[dp_identical]='{"ok": false, "error": "no rank reports"}'
  fi
else
  say "stage dp: skipped (needs 2+ GPUs)"
fi

total=$(( $(date +%s) - started ))
{
  echo "{"
  echo "  \"torch\": \"$torch_version\", \"gpus\": $gpus, \"gpu\": \"$gpu_name\", \"peak_tflops\": $peak, \"total_seconds\": $total,"
  first=1
  for k in "${!result[@]}"; do
    [ $first -eq 1 ] || echo ","
    first=0
    printf '  "%s": %s' "$k" "${result[$k]}"
  done
  echo
  echo "}"
} > "$json"
say "done in ${total}s: $json"
