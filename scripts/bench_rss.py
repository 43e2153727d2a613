#!/usr/bin/env python3
"""Resident memory of an `rlsd train` run, sampled per step (issue 24, item 7).

Starts the given rlsd binary with `train --set runtime.steps=N --set
runtime.out_dir=OUT` (plus any extra `--set`s), polls the child's VmRSS from
/proc every `--interval` seconds and the number of lines in OUT/metrics.jsonl
(the committed steps), and writes one JSON file: for every step the minimum,
maximum and last VmRSS seen while that step was the latest committed one, the
process's VmHWM at the end, and the growth from `--from-step` to the last
step before the end (the last step's samples cover the final checkpoint,
charts and report, reported apart as `end_of_run_max_kb`). `--summarize`
recomputes that growth for an existing result file. A benchmark, not a test:
nothing is asserted.

    OMP_NUM_THREADS=1 nice -n 10 python3 scripts/bench_rss.py \
        --rlsd target/debug/rlsd --steps 1000 --out /tmp/rss/run \
        --json docs/benchmarks/rss-DATE.json
"""
import argparse
import json
import os
import subprocess
import sys
import time


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def growth(per_step, from_step, last_step=None):
    """Growth of the per-step maximum and last RSS from `from_step` to the end.

    With `last_step` (the run's `runtime.steps`), that step is left out: its
    samples cover what the run does after its last step is logged (the final
    checkpoint, the charts and report.html), a one-time peak, not a creep; it
    is reported on its own as `end_of_run_max_kb`.
    """
    steps = sorted(s for s in per_step if s >= from_step and (last_step is None or s < last_step))
    if len(steps) < 2:
        return None
    first, last = per_step[steps[0]], per_step[steps[-1]]
    # Compare the band of the first and the last 10% of steps (at least 5),
    # so one noisy sample does not decide the figure.
    k = max(5, len(steps) // 10)
    head = [per_step[s] for s in steps[:k]]
    tail = [per_step[s] for s in steps[-k:]]
    mx = lambda rows, key: max(r[key] for r in rows)
    out = {
        "from_step": steps[0],
        "to_step": steps[-1],
        "last_kb_first": first["last_kb"],
        "last_kb_end": last["last_kb"],
        "max_kb_head": mx(head, "max_kb"),
        "max_kb_tail": mx(tail, "max_kb"),
        "window_steps": k,
    }
    out["growth_max_pct"] = 100.0 * (out["max_kb_tail"] - out["max_kb_head"]) / out["max_kb_head"]
    out["growth_last_pct"] = 100.0 * (out["last_kb_end"] - out["last_kb_first"]) / out["last_kb_first"]
    if last_step is not None and last_step in per_step:
        out["end_of_run_max_kb"] = per_step[last_step]["max_kb"]
    return out


def summarize(path, from_step, steps):
    """Recompute the growth of a result file written by this script."""
    with open(path) as f:
        result = json.load(f)
    per_step = {r["step"]: r for r in result["per_step"]}
    result["growth"] = growth(per_step, from_step, steps)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=0)
    os.replace(tmp, path)
    print(json.dumps({"vm_hwm_kb": result["vm_hwm_kb"], "growth": result["growth"]}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summarize", action="store_true", help="only recompute the growth of the existing --json file (with --steps, --from-step)")
    ap.add_argument("--rlsd", help="path of the rlsd binary")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--out", help="run folder (runtime.out_dir); must not exist")
    ap.add_argument("--json", required=True, help="where to write the result")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    ap.add_argument("--from-step", type=int, default=100, help="growth is measured from this step")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument("--timeline", action="store_true", help="also keep every sample (seconds, step, kB)")
    a = ap.parse_args()
    if a.summarize:
        summarize(a.json, a.from_step, a.steps)
        return
    if not a.rlsd or not a.out:
        ap.error("--rlsd and --out are required to run")

    cmd = [a.rlsd, "train", "--set", f"runtime.steps={a.steps}", "--set", f"runtime.out_dir={a.out}"]
    for s in a.set:
        cmd += ["--set", s]
    metrics = os.path.join(a.out, "metrics.jsonl")
    t0 = time.time()
    log = open(a.json + ".log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    per_step = {}
    samples = 0
    hwm = None
    timeline = []

    def flush():
        result = {
            "command": cmd,
            "interval_s": a.interval,
            "samples": samples,
            "wall_s": round(time.time() - t0, 1),
            "exit": proc.poll(),
            "vm_hwm_kb": hwm,
            "growth": growth(per_step, a.from_step, a.steps),
            "per_step": [dict(step=s, **per_step[s]) for s in sorted(per_step)],
        }
        if a.timeline:
            result["timeline"] = timeline
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=0)
        os.replace(tmp, a.json)

    last_flush = time.time()
    while proc.poll() is None:
        rss = status_kb(proc.pid, "VmRSS:")
        h = status_kb(proc.pid, "VmHWM:")
        if h is not None:
            hwm = h
        if rss is not None:
            step = count_lines(metrics)
            samples += 1
            if a.timeline:
                timeline.append([round(time.time() - t0, 1), step, rss])
            row = per_step.setdefault(step, {"min_kb": rss, "max_kb": rss, "last_kb": rss, "t": round(time.time() - t0, 1)})
            row["min_kb"] = min(row["min_kb"], rss)
            row["max_kb"] = max(row["max_kb"], rss)
            row["last_kb"] = rss
        if time.time() - last_flush > 30:
            flush()
            last_flush = time.time()
        time.sleep(a.interval)
    flush()
    log.close()
    if proc.returncode != 0:
        with open(a.json + ".log") as f:
            sys.stderr.write(f.read()[-4000:])
        sys.exit(proc.returncode)
    g = growth(per_step, a.from_step, a.steps)
    print(json.dumps({"vm_hwm_kb": hwm, "growth": g}))


if __name__ == "__main__":
    main()
