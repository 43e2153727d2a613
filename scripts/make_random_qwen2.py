#!/usr/bin/env python3
"""A random Qwen2-shaped model folder for memory runs through `rlsd train`.

    python scripts/make_random_qwen2.py OUT_DIR BUILTIN_DIR [--vocab 151936 --hidden 256 --layers 2]

Writes OUT_DIR/model.safetensors (float32, seeded normal(0, 0.02) weights,
unit norms, zero biases; the layout of `rlsd::model::random::qwen2_shaped`:
heads of 64, half as many key/value heads, SwiGLU width 4 x hidden, tied
embeddings) and OUT_DIR/config.json, and copies the tokenizer files of
BUILTIN_DIR (the built-in model's cache folder, ~/.cache/rlsd/builtin-*), so
the run uses the built-in arithmetic task at the real vocabulary: token ids
beyond the tokenizer's 102 decode to nothing. Needs torch and safetensors
(the project's torch python). Used by docs/benchmarks/memory.md.
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("builtin")
    ap.add_argument("--vocab", type=int, default=151_936)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    a = ap.parse_args()
    v, h, layers = a.vocab, a.hidden, a.layers
    inter, heads, kv, d = 4 * h, max(1, h // 64), max(1, h // 128), min(64, h)
    os.makedirs(a.out, exist_ok=True)
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).contiguous()

    t = {"model.embed_tokens.weight": rand(v, h), "model.norm.weight": torch.ones(h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for name, rows in [("q", heads * d), ("k", kv * d), ("v", kv * d)]:
            t[f"{p}self_attn.{name}_proj.weight"] = rand(rows, h)
            t[f"{p}self_attn.{name}_proj.bias"] = torch.zeros(rows)
        t[p + "self_attn.o_proj.weight"] = rand(h, heads * d)
        t[p + "mlp.gate_proj.weight"] = rand(inter, h)
        t[p + "mlp.up_proj.weight"] = rand(inter, h)
        t[p + "mlp.down_proj.weight"] = rand(h, inter)
        t[p + "input_layernorm.weight"] = torch.ones(h)
        t[p + "post_attention_layernorm.weight"] = torch.ones(h)
    save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(a.builtin, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(
        hidden_size=h,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=d,
        vocab_size=v,
        max_position_embeddings=4096,
    )
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
        shutil.copy(os.path.join(a.builtin, name), a.out)


if __name__ == "__main__":
    main()
