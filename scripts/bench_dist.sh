#!/usr/bin/env bash
# Data-parallel runs on this machine: the same global batch (built-in task,
# RLSD, $BENCH_PROMPTS (32) prompts x $BENCH_GROUP (8) responses, 32 new
# tokens) trained by
#   co1    one rank                       (rlsd train --nproc 1)
#   co2    two colocated ranks            (--nproc 2)
#   split0 one sampler + one learner, lockstep       (--nproc 2, placement split, max_staleness 0)
#   split1 one sampler + one learner, one step ahead (--nproc 2, placement split, max_staleness 1)
# Prints, per case, the loop's wall time per step and each rank's stage,
# collective, exchange and weight-broadcast seconds per step (from
# ranks/rank*.json), and writes them all as JSON.
# Usage: scripts/bench_dist.sh [STEPS] [OUT.json] [CASES...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${RLSD_BIN:-$repo/target/debug/rlsd}"
steps="${1:-4}"
json="${2:-bench_dist.json}"
shift $(( $# > 2 ? 2 : $# ))
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(co1 co2 split0 split1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for c in "${cases[@]}"; do
  case "$c" in
    co1) args=(--nproc 1) ;;
    co2) args=(--nproc 2) ;;
    split0) args=(--nproc 2 --set runtime.placement=\"split\" --set runtime.max_staleness=0) ;;
    split1) args=(--nproc 2 --set runtime.placement=\"split\" --set runtime.max_staleness=1) ;;
    *) echo "unknown case $c (co1 co2 split0 split1)" >&2; exit 2 ;;
  esac
  out="$tmp/$c"
  t0=$(date +%s.%N)
  RLSD_LOG=warn "$bin" train "${args[@]}" \
    --set algo.algo=\"rlsd\" --set runtime.steps="$steps" --set runtime.optimizer_device=\"cpu\" \
    --set rollout.batch_prompts="${BENCH_PROMPTS:-32}" --set rollout.group_size="${BENCH_GROUP:-8}" --set rollout.max_new_tokens=32 \
    --set runtime.out_dir=\"$out\" > "$tmp/log-$c" 2>&1 || { cat "$tmp/log-$c" >&2; exit 1; }
  t1=$(date +%s.%N)
  python3 - "$out" "$c" "$steps" "$t0" "$t1" "$tmp/$c.json" <<'PY'
import json, sys, glob
out, case, steps, t0, t1, dst = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
ranks = [json.load(open(f)) for f in sorted(glob.glob(out + "/ranks/rank*.json"))]
wall = max(r["wall_s"] for r in ranks)
per = lambda x: round(x / steps, 4)
res = {
    "case": case, "steps": steps, "job_wall_s": round(t1 - t0, 2), "loop_wall_s": round(wall, 2),
    "per_step_s": per(wall), "identical": len({r["weights_sha256"] for r in ranks}) == 1,
    "ranks": [{
        "rank": r["rank"], "role": r["role"],
        "per_step": {k: per(v) for k, v in r["stage_s"].items() if k != "idle_s"},
        "collective_per_step_s": per(r["collective_s"]),
        "exchange_per_step_s": per(r["exchange_s"]),
        "weights_broadcast_per_step_s": per(r["weights_broadcast_s"]),
        "generate_tokens_per_s": round(r["generate_tokens_per_s"], 1),
        "train_tokens_per_s": round(r["train_tokens_per_s"], 1),
        "peak_rss_mib": round(r["peak_rss_bytes"] / 2**20),
        "setup_s": round(r["setup_s"], 2),
    } for r in ranks],
}
json.dump(res, open(dst, "w"))
print(f"{case}: per_step_s={res['per_step_s']} identical={res['identical']}")
for r in res["ranks"]:
    p = r["per_step"]
    print(f"  rank {r['rank']} {r['role']}: generate {p['generate_s']} teacher {p['teacher_s']} "
          f"train {p['train_s']} collective {r['collective_per_step_s']} (exchange "
          f"{r['exchange_per_step_s']}, weights {r['weights_broadcast_per_step_s']}) s/step; "
          f"peak {r['peak_rss_mib']} MiB, setup {r['setup_s']} s")
PY
done
python3 - "$json" "$tmp" "${cases[@]}" <<'PY'
import json, sys, os
dst, tmp, cases = sys.argv[1], sys.argv[2], sys.argv[3:]
load = open("/proc/loadavg").read().split()[:3]
json.dump({"load_average": load, "cases": [json.load(open(os.path.join(tmp, c + ".json"))) for c in cases]},
          open(dst, "w"), indent=1)
print("wrote", dst, "load", " ".join(load))
PY
