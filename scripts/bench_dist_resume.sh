#!/usr/bin/env bash
# Checkpoint and resume cost of a data-parallel run (docs/benchmarks/distributed.md):
# 2 CPU ranks on the built-in task (RLSD, B prompts x 4 responses), a
# checkpoint every 2 steps. Run 1 trains STEPS steps uninterrupted; run 2
# loses rank 1 as step 3 starts (RLSD_DIST_FAIL=1:3) and run 3 resumes it
# with `--resume latest`. Prints each checkpoint commit's seconds, the
# seconds from rank start to the first step (fresh vs resumed), the job wall
# times, and whether the resumed weights equal the uninterrupted run's.
# Usage: scripts/bench_dist_resume.sh [STEPS] [B]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${RLSD_BIN:-$repo/target/debug/rlsd}"
steps="${1:-4}"
prompts="${2:-4}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
job() { # out_dir, extra args...
  local out="$1"; shift
  RLSD_LOG=warn "$bin" train --nproc 2 \
    --set algo.algo=\"rlsd\" --set runtime.steps="$steps" --set runtime.optimizer_device=\"cpu\" \
    --set rollout.batch_prompts="$prompts" --set rollout.group_size=4 --set rollout.max_new_tokens=16 \
    --set checkpoint.every_steps=2 --set checkpoint.keep_last=0 \
    --set runtime.out_dir=\"$out\" "$@" >> "$tmp/log" 2>&1
}
t0=$(date +%s.%N); job "$tmp/full"; t1=$(date +%s.%N)
RLSD_DIST_FAIL=1:3 job "$tmp/cut" || true; t2=$(date +%s.%N)
job "$tmp/cut" --resume latest; t3=$(date +%s.%N)
python3 - "$tmp" "$t0" "$t1" "$t2" "$t3" <<'PY'
import json, sys, os
tmp, t0, t1, t2, t3 = sys.argv[1], *map(float, sys.argv[2:])
r = lambda run, k: json.load(open(f"{tmp}/{run}/ranks/rank{k}.json"))
full, res = r("full", 0), r("cut", 0)
ck = f"{tmp}/full/checkpoints/step-000002"
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ck) for f in fs)
print(f"checkpoint_commit_s={[round(x, 3) for x in full['checkpoint_s']]} checkpoint_bytes={size}")
print(f"setup_s fresh={full['setup_s']:.3f} resumed={res['setup_s']:.3f} (rank 0: start to first step)")
print(f"job_wall_s uninterrupted={t1-t0:.1f} crashed={t2-t1:.1f} resumed={t3-t2:.1f}")
print(f"loop_wall_s uninterrupted={full['wall_s']:.1f} resumed={res['wall_s']:.1f} resumed_from={res['resumed_from']}")
print(f"resumed_equals_uninterrupted={full['weights_sha256'] == res['weights_sha256']}")
PY
