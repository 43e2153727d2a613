#!/usr/bin/env bash
# Runtime benchmark: rlsd vs TRL's GRPOTrainer, the actor runtime vs the plain
# sequential loop, and RLSD vs GRPO, in one run on this machine.
# See docs/benchmarks/runtime.md for what each side does and the figures.
#
#   scripts/bench_runtime.sh [--steps N] [--trl-steps N] [--warmup N] [--threads N] [--out FILE]
#
# Needs: cargo (with LIBTORCH / CARGO_TARGET_DIR as for any build of this repo) and
# a Python with torch 2.11 + transformers + trl (the one named in .libtorch-python,
# else python3). About 7-8 minutes on a 2-core CPU with the defaults.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
python="$(cat .libtorch-python 2>/dev/null || echo python3)"
steps=5      # timed rlsd steps per case
trl_steps=4  # timed TRL steps per TRL run (two runs)
warmup=1     # untimed first steps of every case
threads=1    # intra-op threads for both sides (0 = each library's default)
out=bench_runtime.json
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --trl-steps) trl_steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$threads" -gt 0 ]; then
  # Threads that libtorch did not start itself (tokio's blocking pool) take
  # their OpenMP thread count from here, not from set_num_threads.
  export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/rlsd-bench-runtime.XXXXXX")"
trap 'rm -rf "$work"' EXIT
t0=$(date +%s)

echo "[bench] building bench_runtime (dev profile, as the tests)" >&2
cargo build --quiet --bin bench_runtime
bin="${CARGO_TARGET_DIR:-target}/debug/bench_runtime"

echo "[bench] tiny random Qwen2 -> $work/model" >&2
"$python" scripts/bench_trl.py make-model "$work/model" >/dev/null 2>"$work/make.log" \
  || { cat "$work/make.log" >&2; exit 1; }

echo "[bench] matmul rate" >&2
"$python" scripts/bench_trl.py matmul --threads "$threads" >"$work/matmul.json"

# TRL runs twice, before and after the rlsd cases, so that a change in the
# machine's load during the benchmark reaches both sides alike.
trl() {
  echo "[bench] TRL GRPOTrainer ($1): $warmup + $trl_steps steps" >&2
  "$python" scripts/bench_trl.py trl "$work/model" --steps "$trl_steps" --warmup "$warmup" \
    --threads "$threads" --out-dir "$work/trl" >"$work/trl-$1.json" 2>"$work/trl.log" \
    || { tail -40 "$work/trl.log" >&2; exit 1; }
}
trl before

echo "[bench] rlsd: 7 cases x 2 rounds x ($warmup + $steps) steps" >&2
"$bin" --model "$work/model" --steps "$steps" --warmup "$warmup" --threads "$threads" \
  --out "$work/rlsd.json"

trl after
"$bin" --model "$work/model" --cases-json "$work/rlsd.json" \
  --trl-json "$work/trl-before.json" --trl-json "$work/trl-after.json" \
  --matmul-json "$work/matmul.json" --out "$out"

# The binaries run with one glibc malloc arena (src/malloc.rs). The same GRPO
# cases with glibc's default (8 arenas per core) show what that choice saves.
arenas=$(( 8 * $(nproc) ))
echo "[bench] rlsd with MALLOC_ARENA_MAX=$arenas (glibc default): grpo-seq, grpo-rt0, grpo-rt1" >&2
MALLOC_ARENA_MAX=$arenas "$bin" --model "$work/model" --steps "$steps" --warmup "$warmup" \
  --threads "$threads" --cases grpo-seq,grpo-rt0,grpo-rt1 --out "$work/arenas.json" >/dev/null

"$python" - "$out" "$work/arenas.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
a1 = json.load(open(sys.argv[2]))
r["malloc_glibc_default_arenas"] = {"cases": a1["cases"], "ratios": a1["ratios"]}
json.dump(r, open(sys.argv[1], "w"), indent=2)
c, t = r["cases"], r.get("trl", {})
def line(name, sec_w, sec_c):
    print(f"  {name:<34} {sec_w:7.3f} s wall {sec_c:7.3f} s cpu")
print("median step time:")
line("TRL GRPOTrainer", t.get("median_step_wall_s", float("nan")), t.get("median_step_cpu_s", float("nan")))
for k, v in c.items():
    line(f"rlsd {k}", v["median_step_wall_s"], v["median_step_cpu_s"])
for k, v in a1["cases"].items():
    line(f"rlsd {k} (glibc arenas)", v["median_step_wall_s"], v["median_step_cpu_s"])
ra = r["ratios"]
def ratio(key, label, target):
    print(f"  {label:<44} {ra.get(key + '_wall', float('nan')):6.2f}x wall {ra.get(key + '_cpu', float('nan')):6.2f}x cpu   (target {target})")
print("ratios:")
ratio("trl_over_rlsd_grpo_rt0", "TRL step / rlsd grpo step (runtime, s=0)", ">= 1.3")
ratio("trl_over_rlsd_grpo_rt1", "TRL step / rlsd grpo step (runtime, s=1)", ">= 1.3")
ratio("runtime_rt0_over_sequential_grpo", "runtime s=0 / sequential (grpo)", "< 1.05")
ratio("runtime_rt1_over_sequential_grpo", "runtime s=1 / sequential (grpo)", "< 1.05")
ratio("rlsd_over_grpo_rt0", "rlsd / grpo step (runtime, s=0)", "<= 1.3")
ratio("rlsd_over_grpo_rt1", "rlsd / grpo step (runtime, s=1)", "<= 1.3")
ratio("rlsd_short_over_grpo_rt0", "rlsd (short teacher prompt) / grpo (s=0)", "<= 1.3")
ra = a1["ratios"]
ratio("runtime_rt0_over_sequential_grpo", "glibc default arenas: runtime s=0 / sequential", "< 1.05")
ratio("runtime_rt1_over_sequential_grpo", "glibc default arenas: runtime s=1 / sequential", "< 1.05")
f = r.get("floor")
if f:
    print(f"FLOP floor at {f['rate_gflops']:.1f} GFLOP/s (measured matmul, CPU time): "
          f"grpo step {f['grpo_step_floor_s']:.3f} s, rlsd step {f['rlsd_step_floor_s']:.3f} s")
    print(f"  share of the floor reached (cpu): TRL {f.get('trl_floor_fraction_cpu', float('nan')):.0%}, "
          f"rlsd grpo-rt0 {f.get('grpo-rt0_floor_fraction_cpu', float('nan')):.0%}, "
          f"rlsd rlsd-rt0 {f.get('rlsd-rt0_floor_fraction_cpu', float('nan')):.0%}")
    print(f"  same against the model used until 2026-11-30 (every row's prompt trained): "
          f"TRL {f.get('trl_floor_fraction_rows_cpu', float('nan')):.0%}, "
          f"rlsd grpo-rt0 {f.get('grpo-rt0_floor_fraction_rows_cpu', float('nan')):.0%}, "
          f"rlsd rlsd-rt0 {f.get('rlsd-rt0_floor_fraction_rows_cpu', float('nan')):.0%}")
EOF
echo "[bench] done in $(( $(date +%s) - t0 )) s; results in $out" >&2
