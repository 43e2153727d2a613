#!/usr/bin/env bash
# The powered comparison of issue 23 (docs/results/powered.md): six
# algorithms plus RLSD's adaptive lambda schedule, paired over SEEDS, on the
# worked-solution task (configs/compare-worked.toml), then the paired
# statistics (scripts/compare_stats.py).
#   scripts/compare_powered.sh [OUT] [SEEDS]
# OUT defaults to runs/compare-powered, SEEDS to 0,1,2,3,4,5 (six paired seeds:
# enough for a 95% interval of +-1 point on the run mean here; docs/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/compare-powered}
seeds=${2:-0,1,2,3,4,5}
rlsd=${RLSD:-./target/debug/rlsd}
common=(--config configs/compare-worked.toml --seeds "$seeds" --steps 150 --val-every 25 --jobs 2)
"$rlsd" compare "${common[@]}" --algos grpo,rlsd,opsd,sdpo,grpo+opsd,cepo --out "$out/fixed" --overwrite
"$rlsd" compare "${common[@]}" --algos rlsd --set 'algo.lambda_schedule="adaptive"' \
  --out "$out/adaptive" --overwrite
python3 scripts/compare_stats.py "$out" > "$out/stats.md"
echo "wrote $out/stats.md"
