#!/usr/bin/env python3
"""Paired statistics of a powered `rlsd compare` (scripts/compare_powered.sh).

Reads every run's metrics.jsonl under OUT's subfolders (OUT/fixed: the six
algorithms; OUT/adaptive: RLSD with the adaptive lambda schedule, same
seeds), and prints a Markdown report: per method the held-out accuracy
(sampled pass@1 and greedy, run mean over the validations after step 0 and the
final one), every method paired with GRPO over seeds (mean difference, 95%
t interval, two-sided p), RLSD paired with every other method, the adaptive
schedule paired with the fixed one, the weight-clip rate over the steps where
the teacher term was active (lambda > 0), and held-out leakage per method.
Writes OUT/paired.svg (the differences from GRPO with their intervals).

Standard library only: the t distribution comes from the regularised
incomplete beta function (continued fraction), its quantile from bisection.

    python3 scripts/compare_stats.py OUT > OUT/stats.md
"""

import gzip
import json
import math
import sys
from pathlib import Path


def betacf(a, b, x):
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a, b, x):
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(ln + a * math.log(x) + b * math.log(1.0 - x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * betacf(a, b, x) / a
    return 1.0 - front * betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t, df):
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(q, df):
    """The q-quantile (q > 0.5) of Student's t, by bisection."""
    lo, hi = 0.0, 1000.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if 1.0 - t_two_sided_p(mid, df) / 2.0 < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def mean(v):
    return sum(v) / len(v)


def sd(v):
    if len(v) < 2:
        return float("nan")
    m = mean(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def paired(a, b):
    """a - b paired by key: (n, mean, 95% half-width, p)."""
    keys = sorted(set(a) & set(b))
    d = [a[k] - b[k] for k in keys]
    n = len(d)
    if n < 2:
        return n, float("nan"), float("nan"), float("nan")
    m, s = mean(d), sd(d)
    se = s / math.sqrt(n)
    half = t_quantile(0.975, n - 1) * se
    p = t_two_sided_p(m / se, n - 1) if se > 0 else (0.0 if m != 0 else 1.0)
    return n, m, half, p


def read_jsonl(path):
    """A metrics.jsonl, or its gzip (how docs/results/ keeps them)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def load(out):
    """{method: {seed: record}} with per-run figures in percent, from every
    `<algo>-seed<S>/metrics.jsonl` in OUT's subfolders (one `rlsd compare
    --out` each); runs under a folder named `adaptive` are the method
    `<algo> adaptive`."""
    methods = {}
    found = sorted(Path(out).glob("*/*-seed*/metrics.jsonl*"))
    for metrics in found:
        algo, seed = metrics.parent.name.rsplit("-seed", 1)
        name = algo + (" adaptive" if metrics.parent.parent.name == "adaptive" else "")
        steps = read_jsonl(metrics)
        vals = [v for s in steps for v in s.get("validation", [])]
        after = [v for v in vals if v["after_step"] > 0]
        if not after:
            continue
        # The steps where the teacher-derived weight was applied: RLSD's and
        # CEPO's with lambda > 0 (the other algorithms log a lambda they do
        # not use).
        weighted = algo in ("rlsd", "cepo")
        active = [s for s in steps if weighted and s.get("lambda", 0) > 0 and not s.get("skipped")]
        base = vals[0] if vals[0]["after_step"] == 0 else None
        seconds = sum(sum(v for v in s.get("timings", {}).values() if isinstance(v, (int, float))) for s in steps)
        rec = {
            "run_mean": 100 * mean([v["pass1_sampled"] for v in after]),
            "final": 100 * after[-1]["pass1_sampled"],
            "greedy_mean": 100 * mean([v["pass1_greedy"] for v in after]),
            "greedy_final": 100 * after[-1]["pass1_greedy"],
            "base": 100 * base["pass1_sampled"] if base else float("nan"),
            "base_greedy": 100 * base["pass1_greedy"] if base else float("nan"),
            "leak_span": 100 * mean([v.get("leakage_span", 0.0) for v in after]),
            "leak_cue": 100 * mean([v.get("leakage_cue", 0.0) for v in after]),
            "active_steps": len(active),
            "clip_low": 100 * mean([s["weight_clip_low_frac"] for s in active]) if active else float("nan"),
            "clip_high": 100 * mean([s["weight_clip_high_frac"] for s in active]) if active else float("nan"),
            "wall_s": seconds,
            "curve": [(v["after_step"], 100 * v["pass1_sampled"]) for v in vals],
        }
        methods.setdefault(name, {})[int(seed)] = rec
    return methods


def fmt(x, digits=1):
    return "n/a" if x != x else f"{x:.{digits}f}"


def fmt_p(p):
    if p != p:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def per_key(runs, key):
    return {s: r[key] for s, r in runs.items()}


def svg_open(w, h, left, title):
    """An SVG's opening tag, white background and title line."""
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="16">{title}</text>',
    ]


def forest_svg(rows, path):
    """Differences from GRPO with their 95% intervals, one row per method."""
    w, row_h, left, right = 640, 28, 150, 30
    h = row_h * (len(rows) + 2)
    lo = min([m - hw for _, m, hw in rows if m == m] + [-1.0])
    hi = max([m + hw for _, m, hw in rows if m == m] + [1.0])
    span = hi - lo
    lo, hi = lo - 0.05 * span, hi + 0.05 * span

    def x(v):
        return left + (v - lo) / (hi - lo) * (w - left - right)

    parts = svg_open(
        w, h, left, "held-out sampled pass@1, run mean: method - GRPO (points, 95% interval, paired over seeds)"
    ) + [
        f'<line x1="{x(0):.1f}" y1="24" x2="{x(0):.1f}" y2="{h - 20}" stroke="#999" '
        'stroke-dasharray="4 3"/>',
    ]
    for i, (name, m, hw) in enumerate(rows):
        y = 24 + row_h * (i + 1)
        parts.append(f'<text x="8" y="{y + 4}">{name}</text>')
        if m != m:
            continue
        parts.append(
            f'<line x1="{x(m - hw):.1f}" y1="{y}" x2="{x(m + hw):.1f}" y2="{y}" '
            'stroke="#1f77b4" stroke-width="2"/>'
        )
        parts.append(f'<circle cx="{x(m):.1f}" cy="{y}" r="4" fill="#1f77b4"/>')
        parts.append(f'<text x="{x(m + hw) + 6:.1f}" y="{y + 4}">{m:+.2f} +- {hw:.2f}</text>')
    for v in range(math.ceil(lo), math.floor(hi) + 1):
        parts.append(f'<text x="{x(v) - 6:.1f}" y="{h - 6}">{v:+d}</text>')
    parts.append("</svg>")
    Path(path).write_text("\n".join(parts) + "\n")


def curves_svg(methods, order, path):
    """Held-out sampled pass@1 against the step, mean over seeds, per method."""
    colours = ["#1f77b4", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    w, h, left, right, top, bottom = 640, 360, 50, 140, 30, 40
    lines = []
    for m in order:
        by_step = {}
        for rec in methods[m].values():
            for step, acc in rec["curve"]:
                by_step.setdefault(step, []).append(acc)
        lines.append((m, sorted((k, mean(v)) for k, v in by_step.items())))
    xs = [x for _, pts in lines for x, _ in pts]
    ys = [y for _, pts in lines for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = math.floor(min(ys)) - 1, math.ceil(max(ys)) + 1

    def px(x):
        return left + (x - x0) / max(x1 - x0, 1) * (w - left - right)

    def py(y):
        return top + (y1 - y) / (y1 - y0) * (h - top - bottom)

    parts = svg_open(w, h, left, "held-out sampled pass@1 (%), mean over seeds")
    for y in range(y0, y1 + 1):
        parts.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{w - right}" y2="{py(y):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 30}" y="{py(y) + 4:.1f}">{y}</text>')
    for x in sorted(set(xs)):
        parts.append(f'<text x="{px(x) - 8:.1f}" y="{h - bottom + 16}">{x}</text>')
    parts.append(f'<text x="{(w - right) / 2:.0f}" y="{h - 6}">step</text>')
    for i, (m, pts) in enumerate(lines):
        c = colours[i % len(colours)]
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        parts.append(f'<text x="{w - right + 8}" y="{top + 16 * (i + 1)}" fill="{c}">{m}</text>')
    parts.append("</svg>")
    Path(path).write_text("\n".join(parts) + "\n")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: compare_stats.py OUT")
    out = sys.argv[1]
    methods = load(out)
    if "grpo" not in methods:
        sys.exit(f"{out} holds no GRPO runs to pair with")
    order = [m for m in ["grpo", "rlsd", "rlsd adaptive", "opsd", "sdpo", "grpo+opsd", "cepo"] if m in methods]
    p = print
    seeds = sorted(methods["grpo"])
    p(f"Seeds: {len(seeds)} ({', '.join(map(str, seeds))}). Percent; intervals are 95% t intervals")
    p("over seeds (paired differences: the seed's difference, so the shared data order")
    p("and held-out set cancel).\n")
    p("## Held-out accuracy per method (mean over seeds, sd in brackets)\n")
    p("| method | base | run mean, sampled | final, sampled | run mean, greedy | final, greedy | stage s / run |")
    p("|---|---|---|---|---|---|---|")
    for m in order:
        r = list(methods[m].values())

        def ms(key):
            v = [x[key] for x in r]
            return f"{fmt(mean(v))} ({fmt(sd(v))})"

        p(f"| {m} | {fmt(mean([x['base'] for x in r]))} | {ms('run_mean')} | {ms('final')} | "
          f"{ms('greedy_mean')} | {ms('greedy_final')} | {fmt(mean([x['wall_s'] for x in r]), 0)} |")
    for title, ref in (("GRPO", "grpo"), ("RLSD (fixed schedule)", "rlsd")):
        if ref not in methods:
            continue
        p(f"\n## Paired with {title}: method - {ref}\n")
        p("| method | n | run mean, sampled | p | final, sampled | p | run mean, greedy | p | final, greedy | p |")
        p("|---|---|---|---|---|---|---|---|---|---|")
        for m in order:
            if m == ref or (ref != "grpo" and m == "grpo"):
                continue
            cells = []
            n = 0
            for key in ("run_mean", "final", "greedy_mean", "greedy_final"):
                n, d, hw, pv = paired(per_key(methods[m], key), per_key(methods[ref], key))
                cells += [f"{d:+.2f} +- {hw:.2f}", fmt_p(pv)]
            p(f"| {m} | {n} | " + " | ".join(cells) + " |")
    p("\n## Weight clip over the active steps (lambda > 0) and held-out leakage\n")
    p("Leakage: share of held-out sampled responses holding an 8-token n-gram of the")
    p("teacher's context absent from the student's prompt and the answer line")
    p("(`leakage_span`), or a phrase referring to a reference (`leakage_cue`), mean")
    p("over the validations after step 0. On this task the privileged context is the")
    p("worked solution, which an honest student also writes, so GRPO's value is the")
    p("floor of honest overlap; the excess over GRPO is paired over seeds.\n")
    p("| method | active steps | w clip low | w clip high | leakage_span | - GRPO | p | leakage_cue |")
    p("|---|---|---|---|---|---|---|---|")
    for m in order:
        r = list(methods[m].values())
        n, d, hw, pv = paired(per_key(methods[m], "leak_span"), per_key(methods["grpo"], "leak_span"))
        diff = "" if m == "grpo" else f"{d:+.2f} +- {hw:.2f}"
        pcell = "" if m == "grpo" else fmt_p(pv)
        clip = [x for x in r if x["active_steps"] > 0]
        p(f"| {m} | {fmt(mean([x['active_steps'] for x in r]), 0)} | "
          f"{fmt(mean([x['clip_low'] for x in clip]), 2) if clip else '-'} | "
          f"{fmt(mean([x['clip_high'] for x in clip]), 2) if clip else '-'} | "
          f"{fmt(mean([x['leak_span'] for x in r]), 2)} | {diff} | {pcell} | "
          f"{fmt(mean([x['leak_cue'] for x in r]), 2)} |")
    rows = []
    for m in order:
        if m == "grpo":
            continue
        _, d, hw, _ = paired(per_key(methods[m], "run_mean"), per_key(methods["grpo"], "run_mean"))
        rows.append((m, d, hw))
    forest_svg(rows, Path(out) / "paired.svg")
    curves_svg(methods, order, Path(out) / "accuracy.svg")
    p("\nCharts: `paired.svg` (method - GRPO, run mean, 95% intervals) and")
    p("`accuracy.svg` (held-out sampled pass@1 against the step, mean over seeds).")


if __name__ == "__main__":
    main()
