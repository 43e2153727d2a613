#!/usr/bin/env python3
"""The naive PyTorch + transformers train step beside `bench_memory step`
(docs/benchmarks/memory.md): a random Qwen2 of the same shape (built from a
config, float32), ROWS responses of RESPONSE tokens after PROMPT-token prompts
(groups of 8 share a prompt), one forward over [ROWS, PROMPT + RESPONSE], the
full float32 log-softmax over the vocabulary for every response position,
gather, a policy-gradient loss with +-1 advantages, backward, one AdamW step.

Usage: bench_step_hf.py --vocab V --hidden H --layers L --rows R --prompt P --response N [--threads T]
Prints one JSON line: step seconds (wall and CPU), peak RSS, RSS before the step.
"""

import argparse
import json
import resource
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def rss_bytes(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    for k, v in [("vocab", 151936), ("hidden", 256), ("layers", 2), ("rows", 64), ("prompt", 32),
                 ("response", 32), ("threads", 1)]:
        ap.add_argument("--" + k, type=int, default=v)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=4 * a.hidden,
                      num_hidden_layers=a.layers, num_attention_heads=max(a.hidden // 64, 1),
                      num_key_value_heads=max(a.hidden // 128, 1), tie_word_embeddings=True,
                      max_position_embeddings=4096)
    model = Qwen2ForCausalLM(cfg).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    group = min(8, a.rows)
    prompts = torch.randint(0, a.vocab, (a.rows // group, a.prompt)).repeat_interleave(group, 0)
    resp = torch.randint(0, a.vocab, (a.rows, a.response))
    ids = torch.cat([prompts, resp], 1)
    adv = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(a.rows)])
    rss0 = rss_bytes("VmRSS:")
    t0, c0 = time.perf_counter(), time.process_time()
    logits = model(ids).logits[:, a.prompt - 1:-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, resp[..., None]).squeeze(-1)
    loss = -(adv[:, None] * logp).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tokens = a.rows * a.response
    print(json.dumps({
        "what": "transformers naive step", "vocab": a.vocab, "hidden": a.hidden,
        "layers": a.layers, "rows": a.rows, "prompt": a.prompt, "response": a.response,
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__, "threads": torch.get_num_threads(),
        "step_s": wall, "step_cpu_s": cpu, "loss": loss.item(),
        "rss_before_step_gib": rss0 / 2**30, "peak_gib": peak / 2**30,
        "step_bytes_per_token": (peak - rss0) / tokens,
    }))


if __name__ == "__main__":
    main()
