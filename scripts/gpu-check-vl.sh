#!/usr/bin/env bash
# The VL stage of scripts/gpu-check.sh: `rlsd generate --image` with the tiny
# Qwen2.5-VL fixture (tests/fixtures/vl/qwen2_5_vl_tiny, f32, greedy) on the
# CPU and on cuda:0, one image and two images; the greedy responses must be
# equal. (The VL golden tests, tests/vl_model_golden.rs, run on the CPU only.)
# Then VL training on cuda:0: `rlsd train --config configs/builtin-vl.toml`,
# 3 steps of 4 prompts x 16 responses with every actor on the GPU; every step
# must be committed with a finite loss, and the final model must generate
# from an image on cuda:0.
# Prints one JSON line; exits 1 when a response differs or a run fails.
#   usage: gpu-check-vl.sh RLSD_BINARY
set -u
bin="${1:?usage: gpu-check-vl.sh RLSD_BINARY}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vl="$repo/tests/fixtures/vl"
# gen DEVICE IMAGE...: the responses of a greedy run (the "--- response" lines
# hold a log-prob that may differ in the last digits between devices; the
# tokens are compared).
gen() {
  local device=$1; shift
  local images=()
  for i in "$@"; do images+=(--image "$vl/images/$i"); done
  "$bin" generate --model "$vl/qwen2_5_vl_tiny" --prompt "What is shown?" "${images[@]}" \
    --temperature 0 --max-new-tokens 24 --set "runtime.sampler_device=\"$device\"" \
    | grep -v -- '^--- response'
}
ok=true
cases=0
for images in "odd.png" "odd.png large.png"; do
  # shellcheck disable=SC2086 # one or two image names
  cpu=$(gen cpu $images) || { echo "cpu run failed ($images)" >&2; ok=false; continue; }
  # shellcheck disable=SC2086
  cuda=$(gen cuda:0 $images) || { echo "cuda run failed ($images)" >&2; ok=false; continue; }
  cases=$((cases + 1))
  if [ -z "$cpu" ] || [ "$cpu" != "$cuda" ]; then
    echo "greedy responses differ ($images): cpu [$cpu] cuda [$cuda]" >&2
    ok=false
  fi
done
train_ok=false
out="$(mktemp -d)/vl-train"
if (cd "$repo" && "$bin" train --config configs/builtin-vl.toml --set runtime.steps=3 \
    --set rollout.batch_prompts=4 --set validation.every=0 \
    --set 'runtime.sampler_device="cuda:0"' --set 'runtime.teacher_device="cuda:0"' \
    --set 'runtime.optimizer_device="cuda:0"' --set "runtime.out_dir=\"$out\"" >&2); then
  if python3 - "$out/metrics.jsonl" <<'PY'
import json, math, sys
steps = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
sys.exit(0 if len(steps) == 3 and all(math.isfinite(s["loss"]) for s in steps) else 1)
PY
  then
    "$bin" generate --model "$out/final" --prompt "What is shown?" --image "$vl/images/odd.png" \
      --temperature 0 --max-new-tokens 8 --set 'runtime.sampler_device="cuda:0"' >&2 && train_ok=true
  else
    echo "VL training on cuda:0: metrics missing a step or a loss not finite ($out)" >&2
  fi
else
  echo "VL training on cuda:0 failed" >&2
fi
[ "$train_ok" = true ] || ok=false
echo "{\"vl_greedy_equal\": $ok, \"cases\": $cases, \"vl_train_cuda\": $train_ok}"
[ "$ok" = true ]
