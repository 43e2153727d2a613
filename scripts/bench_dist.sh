#!/usr/bin/env bash
# Data-parallel scaling on this machine: the same global batch (built-in
# task, RLSD, B prompts x G responses) trained by 1 and by 2 CPU ranks
# (`rlsd train --nproc N`). Prints wall time per step and the collective
# time per step (from ranks/rank*.json). Usage: scripts/bench_dist.sh [STEPS]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${RLSD_BIN:-$repo/target/debug/rlsd}"
steps="${1:-4}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for n in 1 2; do
  out="$tmp/n$n"
  t0=$(date +%s.%N)
  RLSD_LOG=warn "$bin" train --nproc "$n" \
    --set algo.algo=\"rlsd\" --set runtime.steps="$steps" --set runtime.optimizer_device=\"cpu\" \
    --set rollout.batch_prompts=8 --set rollout.group_size=4 --set rollout.max_new_tokens=32 \
    --set runtime.out_dir=\"$out\" > "$tmp/log$n" 2>&1
  t1=$(date +%s.%N)
  python3 - "$out" "$n" "$steps" "$t0" "$t1" <<'PY'
import json, sys, glob
out, n, steps, t0, t1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
ranks = [json.load(open(f)) for f in sorted(glob.glob(out + "/ranks/rank*.json"))]
rows = [json.loads(l) for l in open(out + "/metrics.jsonl")]
train = sum(r["timings"]["train_s"] for r in rows) / len(rows)
gen = sum(r["timings"]["generate_s"] for r in rows) / len(rows)
coll = max(r["collective_s"] for r in ranks) / steps
wall = max(r["wall_s"] for r in ranks)
print(f"ranks={n} steps={steps} job_wall_s={t1-t0:.1f} loop_wall_s={wall:.1f} per_step_s={wall/steps:.2f} "
      f"rank0_generate_s={gen:.2f} rank0_train_s={train:.2f} collective_s_per_step={coll:.4f} "
      f"identical={len(set(r['weights_sha256'] for r in ranks)) == 1}")
PY
done
