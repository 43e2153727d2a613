#!/usr/bin/env python3
"""Where RLSD's per-token credit lands on the built-in arithmetic task.

Reads the JSON of `rlsd inspect --json FILE` (one step's responses with their
per-token `delta`, the teacher-student log-prob gap) and averages `delta` over
token classes: the result of each step line of a worked solution (`7*3=`*21*),
split into intermediate and final steps and into right and wrong results
(checked against the problem's own correct steps), and all other tokens;
separately for correct and wrong responses. The tokenizer is character-level,
so token i is character i of the response.

    python3 scripts/credit_by_step.py inspect.json
"""
import json
import re
import sys

STEP = re.compile(r"^(-?\d+)([+\-*])(-?\d+)=(-?\d+)$")


def true_results(prompt):
    """Results of the correct worked solution of `What is <expr>?`."""
    expr = prompt[len("What is "):-1]
    values = [int(x) for x in re.findall(r"\d+", expr)]
    ops = re.findall(r"[+\-*]", expr)
    out = []
    while "*" in ops:
        i = ops.index("*")
        values[i] *= values[i + 1]
        out.append(values[i])
        del values[i + 1], ops[i]
    while ops:
        values[0] = values[0] + values[1] if ops[0] == "+" else values[0] - values[1]
        out.append(values[0])
        del values[1], ops[0]
    return out


def classes(response):
    """Yield (class, delta) for every token of one response."""
    tokens = [t for t in response["tokens"] if t != "<|end|>"]
    text = "".join(tokens)
    if len(text) != len(tokens):
        return  # not a character-level tokenizer
    delta = response["delta"]
    who = "correct" if response["correct"] else "wrong"
    truth = true_results(response["prompt"])
    marked = set()
    pos, k = 0, 0
    for line in text.split("\n"):
        m = STEP.match(line)
        if m:
            start, end = pos + line.index("=") + 1, pos + len(line)
            right = k < len(truth) and int(m.group(4)) == truth[k]
            where = "final" if k == len(truth) - 1 else "intermediate"
            for i in range(start, end):
                marked.add(i)
                yield f"{who} response, {where} result, {'right' if right else 'wrong'}", delta[i]
            k += 1
        pos += len(line) + 1
    for i in range(len(text)):
        if i not in marked:
            yield f"{who} response, other tokens", delta[i]


def main(path):
    data = json.load(open(path))
    sums = {}
    for response in data["responses"]:
        for name, d in classes(response):
            n, s, a = sums.get(name, (0, 0.0, 0.0))
            sums[name] = (n + 1, s + d, a + abs(d))
    print(f"{path}: algo {data['algo']}, step {data['step']}, lambda {data['lambda']}")
    print(f"{'tokens':48s} {'n':>5s} {'mean delta':>11s} {'mean |delta|':>13s}")
    for name in sorted(sums):
        n, s, a = sums[name]
        print(f"{name:48s} {n:5d} {s / n:+11.3f} {a / n:13.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
