#!/usr/bin/env python3
"""Run the Python `math-verify` package on tests/fixtures/verify/math_table.jsonl.

A second opinion for docs/VERIFIERS.md: the same (gold, prediction, human verdict)
rows that `cargo test --test verify_math_table` scores rlsd's math verifier on.

Needs: python3 with `math-verify` (pip install math-verify). In this project the
interpreter in <repo>/.libtorch-python has it:
    $(cat .libtorch-python) scripts/compare_math_verify.py [--misses] [--json OUT]

Two ways of calling it are scored:
  plain:   verify(parse(gold), parse(prediction))          (the README usage)
  wrapped: verify(parse("$" + gold + "$"), parse(prediction))
           (gold given as LaTeX, which math-verify's gold parser prefers)
and the better of the two is the figure reported.
"""
import argparse
import json
import os
import sys
from collections import Counter

from math_verify import parse, verify  # type: ignore

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = os.path.join(HERE, "..", "tests", "fixtures", "verify", "math_table.jsonl")


def judge(gold: str, pred: str, wrap: bool) -> bool:
    try:
        g = parse(f"${gold}$" if wrap else gold)
        p = parse(pred)
        return bool(verify(g, p))
    except Exception:  # math-verify may raise on odd input; a crash is a "wrong"
        return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", default=TABLE)
    ap.add_argument("--misses", action="store_true", help="print every miss")
    ap.add_argument("--json", help="write per-row verdicts to this file")
    args = ap.parse_args()
    rows = [json.loads(l) for l in open(args.table, encoding="utf-8") if l.strip()]
    results = {}
    for mode in ("plain", "wrapped"):
        verdicts = [judge(r["gold"], r["prediction"], mode == "wrapped") for r in rows]
        misses = [r for r, v in zip(rows, verdicts) if v != r["correct"]]
        results[mode] = (verdicts, misses)
        acc = 1 - len(misses) / len(rows)
        by_cat = Counter(r["category"] for r in misses)
        print(f"math-verify ({mode}): {len(rows) - len(misses)}/{len(rows)} = {100 * acc:.2f}%")
        print(f"  misses by category: {dict(sorted(by_cat.items()))}")
        fp = sum(1 for r in misses if not r["correct"])
        print(f"  accepted wrong answers: {fp}, rejected right answers: {len(misses) - fp}")
    best = min(results, key=lambda m: len(results[m][1]))
    print(f"best mode: {best}")
    if args.misses:
        for r in results[best][1]:
            print(f"MISS {r['id']}: gold {r['gold']!r} pred {r['prediction']!r} expected {r['correct']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({m: [{"id": r["id"], "verdict": v} for r, v in zip(rows, results[m][0])]
                       for m in results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
