#!/usr/bin/env python3
"""The Python side of scripts/bench_runtime.sh (see docs/benchmarks/runtime.md).

Needs torch 2.11 + transformers + trl (+ datasets, a trl dependency): the
interpreter named in `<repo>/.libtorch-python`.

Subcommands:
  make-model DIR   write a tiny random Qwen2 (hidden 256, 4 layers, 4 heads,
                   2 KV heads, intermediate 1024, vocab 64, tied embeddings) as
                   config.json + model.safetensors + tokenizer.json (a 64-token
                   character vocabulary, BPE with no merges) + prompts.jsonl
                   (8 prompts of equal length, with a one-character answer).
                   The tokenizer has a pad token and no EOS, and config.json has
                   no eos_token_id, so rlsd never stops a response early.
  matmul           the machine's float32 matmul rate (GFLOP/s) through torch.
  trl DIR          TRL GRPOTrainer on DIR: CPU, no vLLM, bf16 off, gradient
                   checkpointing off, beta 0, 8 prompts x 8 completions,
                   exactly 48 new tokens (min_new_tokens = 48), one optimiser
                   step per batch; per-step wall times.

Each subcommand prints one JSON line on stdout.
"""

import argparse
import json
import os
import random
import re
import statistics
import sys
import time

import torch

HIDDEN, LAYERS, HEADS, KV_HEADS, INTER, VOCAB = 256, 4, 4, 2, 1024, 64
PROMPTS, GROUP, NEW_TOKENS = 8, 8, 48

# 64 tokens: two specials, then 62 characters.
SPECIALS = ["<pad>", "<unk>"]
CHARS = list(" \n0123456789abcdefghijklmnopqrstuvwxyz.,:;?!+-*/=()'\"_<>[]{}#%")


def vocab():
    toks = SPECIALS + CHARS
    assert len(toks) == VOCAB, len(toks)
    return {t: i for i, t in enumerate(toks)}


def make_model(out):
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    model = Qwen2ForCausalLM(cfg).float()
    model.generation_config.eos_token_id = None
    model.generation_config.bos_token_id = None
    model.save_pretrained(out, safe_serialization=True)

    tok = Tokenizer(models.BPE(vocab=vocab(), merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(out)

    rng = random.Random(0)
    with open(os.path.join(out, "prompts.jsonl"), "w") as f:
        for i in range(PROMPTS):
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            prompt = f"last digit of {a}+{b}: "
            f.write(json.dumps({"id": f"p{i}", "prompt": prompt, "answer": str((a + b) % 10)}) + "\n")
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"dir": out, "params": params}))


def gemm_rate(m, k, n, repeats):
    """Median (wall, CPU-time) GFLOP/s of an m x k by k x n float32 matmul.

    CPU time counts every thread, so with one intra-op thread the CPU-time rate
    is what a core delivers even while other processes share the machine.
    """
    a = torch.randn(m, k)
    b = torch.randn(k, n)
    for _ in range(3):
        a @ b
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        a @ b
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    flops = 2.0 * m * k * n
    return flops / statistics.median(wall) / 1e9, flops / max(statistics.median(cpu), 1e-9) / 1e9


def matmul(args):
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows = PROMPTS * GROUP * 64  # about the training batch's token count
    out = {"threads": torch.get_num_threads()}
    for name, (m, k, n, reps) in {
        # Peak-ish rate: a large square float32 GEMM.
        "square_2048": (2048, 2048, 2048, args.repeats),
        # The step's own shapes: training-batch rows against the MLP and attention weights.
        "mlp_shape": (rows, HIDDEN, INTER, args.repeats * 4),
        "attn_shape": (rows, HIDDEN, HIDDEN, args.repeats * 4),
        # Decode-step shape: 64 rows (one token per sequence).
        "decode_shape": (PROMPTS * GROUP, HIDDEN, INTER, args.repeats * 20),
    }.items():
        w, c = gemm_rate(m, k, n, reps)
        out[f"{name}_gflops"] = w
        out[f"{name}_cpu_gflops"] = c
    print(json.dumps(out))


def run_trl(args):
    import transformers
    import trl
    from datasets import Dataset
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    rows = [json.loads(line) for line in open(os.path.join(args.model, "prompts.jsonl"))]
    data = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])

    # Built from tokenizer.json itself: AutoTokenizer in transformers 5 puts a
    # default byte-level pre-tokenizer in front of this file's (absent) one,
    # which drops the spaces and would give TRL shorter prompts than rlsd.
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(os.path.join(args.model, "tokenizer.json")),
        pad_token="<pad>", unk_token="<unk>")
    for r in rows:
        ids = tok(r["prompt"], add_special_tokens=False)["input_ids"]
        assert len(ids) == len(r["prompt"]) and tok.decode(ids) == r["prompt"], (r["prompt"], ids)
    # TRL needs an EOS id to mask completions after it. The model folder has none
    # (rlsd must not stop early), so name the pad token here; min_new_tokens = 48
    # keeps it from being sampled, so every completion is exactly 48 tokens.
    tok.eos_token = "<pad>"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)

    # Same reward as rlsd's `regex` verifier with pattern "{answer}":
    # 1 when the gold answer appears in the response.
    def contains_answer(completions, answer, **_):
        return [1.0 if re.search(re.escape(a), c) else 0.0 for c, a in zip(completions, answer)]

    steps = args.warmup + args.steps
    cfg = GRPOConfig(
        output_dir=args.out_dir,
        use_cpu=True,
        use_vllm=False,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        beta=0.0,
        num_generations=GROUP,
        per_device_train_batch_size=PROMPTS * GROUP,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        max_completion_length=NEW_TOKENS,
        generation_kwargs={"min_new_tokens": NEW_TOKENS},
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type="dapo",  # token-mean over the batch, as rlsd's default
        mask_truncated_completions=False,
        learning_rate=3e-4,
        weight_decay=0.01,
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
        max_steps=steps,
        logging_steps=steps + 1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks = []

        # (wall, process CPU time) at the start of training and after every
        # optimizer step: a step is the interval between two marks.
        def on_train_begin(self, *a, **k):
            self.marks.append((time.perf_counter(), time.process_time()))

        def on_step_end(self, *a, **k):
            self.marks.append((time.perf_counter(), time.process_time()))

    clock = Clock()
    trainer = GRPOTrainer(model=model, reward_funcs=contains_answer, args=cfg,
                          train_dataset=data, processing_class=tok, callbacks=[clock])
    # Wall time of the rollout part of each step (generation, rewards,
    # advantages); the rest of the step is the forward/backward/optimizer.
    rollout_s = []
    inner = trainer._generate_and_score_completions

    def timed_rollout(*a, **k):
        r0 = time.perf_counter()
        out = inner(*a, **k)
        rollout_s.append(time.perf_counter() - r0)
        return out

    trainer._generate_and_score_completions = timed_rollout
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    step_s = [b[0] - a[0] for a, b in zip(clock.marks, clock.marks[1:])]
    step_cpu = [b[1] - a[1] for a, b in zip(clock.marks, clock.marks[1:])]
    timed, timed_cpu = step_s[args.warmup:], step_cpu[args.warmup:]
    print(json.dumps({
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps": len(step_s),
        "warmup": args.warmup,
        "step_wall_s": step_s,
        "step_cpu_s": step_cpu,
        "median_step_wall_s": statistics.median(timed),
        "median_step_cpu_s": statistics.median(timed_cpu),
        "train_wall_s": total,
        "rollout_wall_s": rollout_s,
        "median_rollout_wall_s": statistics.median(rollout_s[args.warmup:]) if len(rollout_s) > args.warmup else None,
        "prompt_tokens": len(tok(rows[0]["prompt"], add_special_tokens=False)["input_ids"]),
        "completion_tokens": NEW_TOKENS,
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("dir")
    mm = sub.add_parser("matmul")
    mm.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    mm.add_argument("--repeats", type=int, default=10)
    t = sub.add_parser("trl")
    t.add_argument("model")
    t.add_argument("--steps", type=int, default=5, help="timed steps")
    t.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    t.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    t.add_argument("--out-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "rlsd-bench-trl"))
    a = ap.parse_args()
    if a.cmd == "make-model":
        make_model(a.dir)
    elif a.cmd == "matmul":
        matmul(a)
    else:
        run_trl(a)


if __name__ == "__main__":
    sys.exit(main())
