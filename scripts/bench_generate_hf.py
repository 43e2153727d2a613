#!/usr/bin/env python3
"""The transformers side of `cargo run --bin bench_generate` (docs/benchmarks/generation.md).

Usage: bench_generate_hf.py MODEL_DIR WORKLOAD_JSON

Loads the random model the Rust side saved and the workload it wrote (prompts,
stop ids, max_new, rows, threads), then generates the prompts in chunks of
`rows` with `model.generate` (static batching: sampling at temperature 1,
top-k off, stopping on any stop id; a chunk runs until its longest row ends,
finished rows decoding padding meanwhile). Counts generated tokens up to and
including the first stop id, and the row-steps computed (rows x steps per
chunk). Prints one JSON line.
"""

import json
import resource
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    model_dir, work_path = sys.argv[1], sys.argv[2]
    with open(work_path) as f:
        w = json.load(f)
    torch.set_num_threads(w["threads"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    stop = set(w["stop_ids"])
    kw = dict(max_new_tokens=w["max_new"], do_sample=True, temperature=1.0, top_k=0,
              top_p=1.0, pad_token_id=0, eos_token_id=w["stop_ids"])
    prompts = w["prompts"]
    rows = w["rows"]
    with torch.no_grad():
        warm = torch.tensor(prompts[:2])
        model.generate(warm, attention_mask=torch.ones_like(warm), **dict(kw, max_new_tokens=4))
        t0, c0 = time.perf_counter(), time.process_time()
        lens, row_steps = [], 0
        for i in range(0, len(prompts), rows):
            chunk = torch.tensor(prompts[i:i + rows])
            out = model.generate(chunk, attention_mask=torch.ones_like(chunk), **kw)
            new = out[:, chunk.shape[1]:].tolist()
            row_steps += len(new) * len(new[0])
            for r in new:
                n = next((j + 1 for j, t in enumerate(r) if t in stop), len(r))
                lens.append(n)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    lens.sort()
    q = lambda f: lens[round((len(lens) - 1) * f)]
    tokens = sum(lens)
    print(json.dumps({
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "wall_s": wall, "cpu_s": cpu,
        "tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu,
        "lengths": {"total": tokens, "mean": tokens / len(lens), "median": q(0.5),
                    "p90": q(0.9), "max": q(1.0), "min": q(0.0)},
        "row_steps": row_steps,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


if __name__ == "__main__":
    main()
