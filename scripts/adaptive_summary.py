#!/usr/bin/env python3
"""Table of docs/results/adaptive.md from two `rlsd compare` output folders
(ROOT/fixed and ROOT/adaptive): per seed, teacher-pass steps, weight-clip rate
over active steps, the held-out curve, and the paired adaptive - fixed
differences. Usage: scripts/adaptive_summary.py ROOT"""
import json, statistics as st, sys
root = sys.argv[1]
out = {}
for k in ['fixed', 'adaptive']:
    for s in [0, 1, 2]:
        try:
            rows = [json.loads(l) for l in open(f'{root}/{k}/rlsd-seed{s}/metrics.jsonl')]
        except FileNotFoundError:
            continue
        val = {x['after_step']: x['pass1_sampled'] * 100 for r in rows for x in r.get('validation', [])}
        after = [v for a, v in val.items() if a > 0]
        act = [r for r in rows if r['lambda'] > 0]
        out[(k, s)] = dict(steps=len(rows), val=val, mean=st.mean(after) if after else float('nan'),
                           final=val.get(max(val)), active=len(act), lam_end=rows[-1]['lambda'],
                           clip=st.mean(r['weight_clip_frac'] for r in act) * 100 if act else 0.0)
print('| schedule | seed | steps | teacher-pass steps (lambda > 0) | lambda at last step | weight clip % over active steps | held-out acc. by step (0,10,...,60) | mean after step 0 | final |')
print('|---|---|---|---|---|---|---|---|---|')
for (k, s), d in sorted(out.items()):
    curve = ' / '.join(f"{d['val'][a]:.1f}" for a in sorted(d['val']))
    print(f"| {k} | {s} | {d['steps']} | {d['active']} | {d['lam_end']:.4g} | {d['clip']:.2f} | {curve} | {d['mean']:.1f} | {d['final']:.1f} |")
seeds = [s for s in [0, 1, 2] if ('fixed', s) in out and ('adaptive', s) in out]
for key in ['mean', 'final']:
    diffs = [out[('adaptive', s)][key] - out[('fixed', s)][key] for s in seeds]
    if len(diffs) >= 2:
        m = st.mean(diffs); se = st.stdev(diffs) / len(diffs) ** 0.5
        print(f"\nadaptive - fixed, {key}, paired over seeds {seeds}: diffs {[round(d,1) for d in diffs]}, mean {m:+.1f}, s.e. {se:.1f} (t with {len(diffs)-1} d.f.)")
