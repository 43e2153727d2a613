#!/usr/bin/env python3
"""A calculator environment and answer checker for rlsd, over JSON lines.

rlsd starts this program once and keeps it running. Each line on stdin is one
JSON request with an "id"; write one JSON line with the same "id" per request
(any order). Protocol: docs/AGENTS.md. This file handles:

  verify  {"example": {...}, "response": str}  -> {"reward", "correct", "reason"}
  start   {"episode": n, "example": {...}}     -> {"messages", "tools"}
  step    {"episode": n, "turn": str}          -> {"messages"} or {"done": true, "reward", ...}
  finish  {"episode": n}                       -> {"done": true, "reward", ...}

The task is rlsd's built-in arithmetic: the gold answer is an integer, the
model ends with "Answer: <n>". The model may call a `calculator` tool in the
Qwen / Hermes format: <tool_call>{"name": "calculator", "arguments":
{"expression": "17*23"}}</tool_call>.

Run it by hand to try it:
  echo '{"id": 1, "type": "verify", "example": {"answer": "42"}, "response": "Answer: 42"}' \
    | python3 examples/python_env/calculator_env.py
"""
import ast
import json
import operator
import re
import sys

MAX_TOOL_CALLS = 4
TOOLS = [{
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an integer arithmetic expression with + - * and parentheses.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}]
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
ANSWER = re.compile(r"Answer:\s*(-?\d+)")

episodes = {}  # episode number -> {"answer": str, "calls": int}


def calculate(expr):
    """Integers, + - * and parentheses only (no eval)."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError("only integers, + - * and parentheses")
    if len(expr) > 200:
        raise ValueError("expression too long")
    return ev(ast.parse(expr, mode="eval"))


def judge(answer, text):
    found = ANSWER.findall(text)
    if not found:
        return {"reward": 0.0, "correct": False, "reason": "no final answer"}
    ok = found[-1] == answer.strip()
    return {"reward": 1.0 if ok else 0.0, "correct": ok,
            "reason": f"answer {found[-1]} vs {answer.strip()}"}


def handle(req):
    kind = req.get("type")
    if kind == "verify":
        return judge(req["example"]["answer"], req["response"])
    if kind == "start":
        ex = req["example"]
        episodes[req["episode"]] = {"answer": ex["answer"], "calls": 0}
        return {
            "messages": [{"role": "user", "content": ex["prompt"]}],
            "tools": TOOLS,
        }
    if kind == "step":
        ep = episodes[req["episode"]]
        calls = TOOL_CALL.findall(req["turn"])
        if not calls:
            del episodes[req["episode"]]
            out = judge(ep["answer"], req["turn"])
            out["done"] = True
            out["components"] = {"tool_calls": float(ep["calls"])}
            return out
        results = []
        for body in calls:
            ep["calls"] += 1
            try:
                call = json.loads(body)
                value = str(calculate(call["arguments"]["expression"]))
            except Exception as e:  # shown to the model, so it can learn the format
                value = f"error: {e}"
            results.append({"role": "tool", "name": "calculator", "content": value})
        if ep["calls"] > MAX_TOOL_CALLS:
            del episodes[req["episode"]]
            return {"done": True, "reward": 0.0, "correct": False,
                    "reason": "too many tool calls"}
        return {"messages": results}
    if kind == "finish":
        episodes.pop(req["episode"], None)
        return {"done": True, "reward": 0.0, "correct": False, "reason": "turn limit"}
    raise ValueError(f"unknown request type {kind!r}")


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            out = handle(req)
        except Exception as e:
            out = {"error": f"{type(e).__name__}: {e}"}
        out["id"] = req["id"]
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
