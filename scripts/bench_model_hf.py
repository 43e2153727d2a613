#!/usr/bin/env python3
"""The transformers side of `cargo run --bin bench_model` (see docs/BENCHMARKS.md).

Needs torch + transformers (the interpreter named in `<repo>/.libtorch-python`).
Loads the model folder the Rust side saved, then measures, like the Rust side:
- generate(): 64 sequences x 16-token prompts x 48 new tokens, sampling at
  temperature 1 (top-k off), no early stop; tokens per second;
- forward + backward of 64 x 64 tokens (sum of the log-probs of the last 32);
- peak resident memory of this process.
Prints one JSON line.
"""

import argparse
import json
import resource
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

BATCH, PROMPT, NEW, TRAIN_T = 64, 16, 48, 64


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).to(a.device).eval()
    vocab = model.config.vocab_size
    prompts = torch.randint(0, vocab, (BATCH, PROMPT), device=a.device)
    mask = torch.ones_like(prompts)
    kw = dict(attention_mask=mask, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=True,
              temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        model.generate(prompts, **kw)
        times, cpu = [], []
        for _ in range(a.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            out = model.generate(prompts, **kw)
            sync(a.device)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            assert out.shape == (BATCH, PROMPT + NEW), out.shape
    gen_s = statistics.median(times)

    model.train(False)
    ids = torch.randint(0, vocab, (BATCH, TRAIN_T), device=a.device)
    half = TRAIN_T // 2
    fb, fb_cpu = [], []
    for i in range(a.repeats + 1):
        model.zero_grad(set_to_none=False)
        t0, c0 = time.perf_counter(), time.process_time()
        logits = model(ids).logits[:, half - 1:-1]
        lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, half:, None]).sum()
        lp.backward()
        sync(a.device)
        if i > 0:
            fb.append(time.perf_counter() - t0)
            fb_cpu.append(time.process_time() - c0)
    print(json.dumps({
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "generate_seconds": gen_s,
        "generate_tokens_per_s": BATCH * NEW / gen_s,
        "forward_backward_seconds": statistics.median(fb),
        "generate_cpu_seconds": statistics.median(cpu),
        "forward_backward_cpu_seconds": statistics.median(fb_cpu),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


if __name__ == "__main__":
    main()
