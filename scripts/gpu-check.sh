#!/usr/bin/env bash
# One-call GPU check for a machine with NVIDIA GPUs and the torch 2.11 wheel
# (python3 -c 'import torch' works) but no Rust toolchain. It runs binaries
# built elsewhere (see "Preparing" below) against this machine's libtorch.
#
# Stages (each under its own timeout, all within one time budget, BUDGET_S,
# default 450 s; a failing stage records its error and the script goes on;
# the script exits 1 when any stage failed, timed out or was skipped for time):
#   preflight the binaries load (ldd: every library found)
#   info      rlsd info (libtorch version, CUDA devices)
#   gpu_tests the `--features gpu` test binary (tests/gpu.rs: logits, bf16
#             generation, the runtime on CUDA, CUDA streams and events)
#   logits    tiny model logits, CPU vs cuda:0
#   gen       generation tokens/s, Qwen2-0.5B-shaped random model, bf16
#   train     one train step (fwd+bwd+AdamW), same model, bf16, 4 x 4096 tokens, MFU
#   overlap   the actor runtime on cuda:0 (sampler, teacher, optimizer on their
#             own CUDA streams): steady-state step time vs the slowest stage,
#             at max_staleness 1 and 0
#   vl        vision-language: `rlsd generate --image` with the tiny Qwen2.5-VL
#             fixture on the CPU and on cuda:0 (one and two images, f32,
#             greedy): the responses must be equal; then 3 steps of
#             `rlsd train --config configs/builtin-vl.toml` on cuda:0, whose
#             final model must generate (scripts/gpu-check-vl.sh)
#   dp_equal  with 2+ GPUs: tests/dist_equal.rs (Gloo ranks on CPU, the
#             equality logic), split placement on GPUs 0 (learner) and 1
#             (sampler), and `rlsd train --gpus 0,1` (NCCL ranks) with
#             bit-identical weights across ranks
# Output: $OUT/gpu-check.json (one object, a key per stage), per-stage logs
# and $OUT/gpu-check-summary.txt.
#
# Preparing (on the build machine, with the same LIBTORCH path layout):
#   cargo build --features gpu --bins
#   cargo test --features gpu --test gpu --test dist_equal --no-run
#   scripts/gpu-check.sh --collect DIR
# which writes DIR/bin/ (the binaries, debug info stripped) and
# DIR/gpu-bin.tar.xz (the same, ~20 MB: carry this one).
# Running (on the GPU machine, from the repository root, which the binaries
# read assets/ and tests/fixtures/ from through RLSD_SOURCE_DIR):
#   BIN=DIR/gpu-bin.tar.xz OUT=/tmp/gpucheck scripts/gpu-check.sh
# (BIN may also be a folder of binaries.) The binaries need glibc >= 2.34
# and a libstdc++ with GLIBCXX_3.4.29 (Ubuntu 22.04 or newer); they find
# libtorch through LD_LIBRARY_PATH, set below from python3's torch.
set -u

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ "${1:-}" = "--collect" ]; then
  top="${2:?usage: gpu-check.sh --collect DIR}"
  dest="$top/bin"
  mkdir -p "$dest"
  prof="$repo/target/debug"
  for b in rlsd gpu_check; do cp "$prof/$b" "$dest/" || exit 1; done
  for t in gpu dist_equal; do
    f=$(ls -t "$prof"/deps/"$t"-* 2>/dev/null | grep -v '\.d$' | head -n1)
    if [ -z "$f" ]; then
      echo "missing test binary $t (cargo test --features gpu --test $t --no-run)" >&2
      exit 1
    fi
    cp "$f" "$dest/test_$t"
  done
  # A test binary built without the feature compiles to zero tests.
  if ! "$dest/test_gpu" --list 2>/dev/null | grep -q 'an_event_orders_a_hand_off_between_streams: test'; then
    echo "$dest/test_gpu has no gpu tests: build it with --features gpu" >&2
    exit 1
  fi
  if ! nm "$dest/gpu_check" 2>/dev/null | grep -q rlsd_cuda_pool_stream; then
    echo "$dest/gpu_check lacks the CUDA stream shim: build it with --features gpu" >&2
    exit 1
  fi
  strip --strip-debug "$dest"/* 2>/dev/null || true
  tar -C "$top" -cJf "$top/gpu-bin.tar.xz" bin || exit 1
  ls -la "$dest" "$top/gpu-bin.tar.xz"
  exit 0
fi

OUT="${OUT:-$repo/gpu-check-out}"
mkdir -p "$OUT"
json="$OUT/gpu-check.json"
summary="$OUT/gpu-check-summary.txt"
: > "$summary"
started=$(date +%s)
budget=${BUDGET_S:-450}
deadline=$(( started + budget ))

say() { echo "[gpu-check] $*" | tee -a "$summary" >&2; }

py="${PYTHON:-python3}"
BIN="${BIN:-$repo/bin}"
if [ -f "$BIN" ]; then
  # A carried archive from --collect: unpack next to the output.
  "$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$BIN" "$OUT/carried" \
    || { say "cannot unpack $BIN"; exit 1; }
  BIN="$OUT/carried/bin"
fi
[ -d "$BIN" ] || BIN="$repo/target/debug"
chmod +x "$BIN"/* 2>/dev/null || true
# Errors as one line (anyhow's backtraces would fill the stage tails);
# panics keep theirs.
export RUST_LIB_BACKTRACE=0
# Shipped files (assets/tiny-arith, tests/fixtures) come from this checkout,
# not from the path the binaries were built in.
export RLSD_SOURCE_DIR="$repo"

# This machine's libtorch, CUDA runtime and NCCL from python3's torch wheel.
# (one import: importing torch takes seconds)
read -r torch_version torch_lib site < <("$py" -c 'import os, torch; d = os.path.dirname(torch.__file__); print(torch.__version__, os.path.join(d, "lib"), os.path.dirname(d))' 2>/dev/null || echo "unknown")
torch_lib=${torch_lib:-}
site=${site:-}
if [ -z "$torch_lib" ] || [ ! -f "$torch_lib/libtorch_cpu.so" ]; then
  say "python3 cannot import torch (or its lib/ has no libtorch_cpu.so): set PYTHON to a python with the torch 2.11 wheel"
  exit 1
fi
case "$torch_version" in
  2.11.*) ;;
  *) say "WARNING: torch $torch_version here; the binaries were built for 2.11 (tch 0.24.0)" ;;
esac
libs="$torch_lib"
if [ -n "$site" ] && [ -d "$site/nvidia" ]; then
  for d in "$site"/nvidia/*/lib; do [ -d "$d" ] && libs="$libs:$d"; done
fi
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 | tr -d '"\\')
say "torch $torch_version, libtorch at $torch_lib, $gpus GPU(s): ${gpu_name:-none}, binaries in $BIN, budget ${budget}s"
# Dense bf16 peak for MFU: H100/H200 SXM 989 TFLOP/s, A100 312, else PEAK_TFLOPS.
case "$gpu_name" in
  *H100*|*H200*) peak=989 ;;
  *A100*) peak=312 ;;
  *) peak=${PEAK_TFLOPS:-989} ;;
esac

declare -A result
# run_stage NAME TIMEOUT_S CMD...: stdout's last JSON line (or the error) is
# the stage's result. The timeout is cut to what is left of the budget.
run_stage() {
  local name="$1" limit="$2"; shift 2
  local log="$OUT/$name.log" t0 rc left
  left=$(( deadline - $(date +%s) ))
  if [ "$left" -lt 20 ]; then
    say "stage $name: skipped (time budget spent)"
    result[$name]='{"ok": false, "error": "skipped: time budget spent"}'
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
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
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then say "  TIMED OUT after ${limit}s"; else say "  FAILED (exit $rc) in ${secs}s"; fi
    result[$name]="{\"ok\": false, \"exit\": $rc, \"seconds\": $secs, \"result\": ${last:-null}, \"tail\": $tail_txt}"
    tail -n 5 "$log" | sed 's/^/    /' | tee -a "$summary" >&2
  fi
}

missing=""
for b in "$BIN"/rlsd "$BIN"/gpu_check "$BIN"/test_gpu "$BIN"/test_dist_equal; do
  if [ ! -x "$b" ]; then missing="$missing $(basename "$b")(absent)"; continue; fi
  nf=$(ldd "$b" 2>&1 | grep -E 'not found|version .* not found' | tr -s ' \t' ' ' | tr '\n' ';')
  [ -n "$nf" ] && missing="$missing $(basename "$b"): $nf"
done
if [ -n "$missing" ]; then
  say "preflight: $missing"
  result[preflight]="{\"ok\": false, \"error\": $(printf '%s' "$missing" | "$py" -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}"
else
  result[preflight]='{"ok": true}'
fi

run_stage info 60 "$BIN/rlsd" info
if [ -x "$BIN/test_gpu" ]; then
  run_stage gpu_tests 150 "$BIN/test_gpu" --test-threads=1
else
  say "stage gpu_tests: no $BIN/test_gpu"; result[gpu_tests]='{"ok": false, "error": "test binary missing"}'
fi
run_stage logits 60 "$BIN/gpu_check" logits --device cuda:0
run_stage gen 90 "$BIN/gpu_check" gen --device cuda:0 --dtype bf16 --batch 64 --new-tokens 128 --repeats 3
run_stage train 120 "$BIN/gpu_check" train --device cuda:0 --dtype bf16 --batch 4 --seq 4096 --repeats 2 --peak-tflops "$peak"
run_stage overlap 120 "$BIN/gpu_check" overlap --device cuda:0 --dtype bf16 --overlap-shape small \
  --steps 10 --prompts 16 --batch 8 --new-tokens 96
run_stage vl 150 bash "$repo/scripts/gpu-check-vl.sh" "$BIN/rlsd"
if [ "$gpus" -ge 2 ]; then
  if [ -x "$BIN/test_dist_equal" ]; then
    run_stage dp_equal_cpu 90 "$BIN/test_dist_equal" --test-threads=1
  fi
  # two_gpu_run STAGE TIMEOUT_S KEY WHAT [--set ...]: `rlsd train --gpus 0,1` for 3
  # steps into $OUT/STAGE; result[KEY] says whether both ranks end with the
  # same weights (SHA-256 in ranks/rank*.json).
  two_gpu_run() {
    local stage=$1 limit=$2 key=$3 what=$4; shift 4
    local dir="$OUT/$stage"
    rm -rf "$dir"
    run_stage "$stage" "$limit" env RLSD_LOG=warn RLSD_DIST_TIMEOUT_S=60 "$BIN/rlsd" train --gpus 0,1 --overwrite \
      --set runtime.steps=3 --set rollout.batch_prompts=4 --set rollout.group_size=4 --set rollout.max_new_tokens=32 \
      --set "runtime.out_dir=\"$dir\"" "$@"
    if [ -f "$dir/ranks/rank0.json" ] && [ -f "$dir/ranks/rank1.json" ]; then
      local same
      same=$("$py" -c 'import json,sys; a,b=[json.load(open(f)) for f in sys.argv[1:]]; print(str(a["weights_sha256"]==b["weights_sha256"]).lower())' "$dir/ranks/rank0.json" "$dir/ranks/rank1.json")
      result[$key]="{\"ok\": $same}"
      say "  $what: $same"
    else
      result[$key]='{"ok": false, "error": "no rank reports"}'
    fi
  }
  two_gpu_run dp_gpus 150 dp_identical "NCCL ranks bit-identical"
  # Split placement: GPU 1 samples, GPU 0 trains and broadcasts the weights
  # back (NCCL); both must end with the same weights.
  two_gpu_run split_gpus 120 split_identical "split sampler holds the learner's weights" \
    --set 'runtime.placement="split"'
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
failed=""
for k in "${!result[@]}"; do
  case "${result[$k]}" in *'"ok": true'*) ;; *) failed="$failed $k" ;; esac
done
if "$py" -c 'import json,sys; json.load(open(sys.argv[1]))' "$json" 2>/dev/null; then
  say "done in ${total}s: $json"
else
  say "done in ${total}s, but $json is not valid JSON (see the stage logs)"
  failed="$failed json"
fi
if [ -n "$failed" ]; then
  say "FAILED:$failed"
  exit 1
fi
