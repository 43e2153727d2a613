#!/usr/bin/env python3
"""A full-size vision-language model folder with random bf16 weights, for the
load-memory figure of docs/benchmarks/memory.md (issue 21).

    python scripts/make_random_vl.py OUT_DIR [--shape qwen2_5_vl_7b|qwen3_vl_8b]

Takes the Hub's `config.json` of the shape (tests/fixtures/vl/shapes/), builds
the transformers model on the meta device (no memory) only to list every
parameter's name and shape, and writes seeded normal(0, 0.02) bf16 tensors
(norm weights 1) in the Hub's key layout (`model.layers.*`, `visual.*`,
`lm_head.weight`) as 4 GB shards with `model.safetensors.index.json`, one shard
in memory at a time. The tokenizer comes from the tiny Qwen2.5-VL fixture and
the preprocessor from the family's fixture, and the config's special token
ids are set to the tiny fixture's, so `rlsd generate --image` runs on the
folder. `--files-only` rewrites only those small files of an existing folder. Needs the
project's torch python (torch, transformers, safetensors).
"""
import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "vl"
SHARD_BYTES = 4 * 1024**3


def hub_name(name):
    """transformers 5's state-dict key -> the Hub checkpoints' key."""
    for old, new in (("model.language_model.", "model."), ("model.visual.", "visual.")):
        if name.startswith(old):
            return new + name[len(old):]
    return name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--shape", default="qwen2_5_vl_7b", choices=["qwen2_5_vl_7b", "qwen3_vl_8b"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--files-only", action="store_true", help="only the config, tokenizer and preprocessor files")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tiny = FIXTURES / ("qwen2_5_vl_tiny" if args.shape.startswith("qwen2_5") else "qwen3_vl_tiny")
    config = json.loads((FIXTURES / "shapes" / args.shape / "config.json").read_text())
    tiny_config = json.loads((tiny / "config.json").read_text())
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        if key in tiny_config:
            config[key] = tiny_config[key]
    # The tokenizer of the tiny Qwen2.5-VL fixture (the Qwen3-VL one has none;
    # both use the same special ids), the family's own preprocessor.
    processor = FIXTURES / ("qwen2_5_vl" if args.shape.startswith("qwen2_5") else "qwen3_vl")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (FIXTURES / "qwen2_5_vl_tiny" / name).exists():
            shutil.copy(FIXTURES / "qwen2_5_vl_tiny" / name, out / name)
    shutil.copy(processor / "preprocessor_config.json", out / "preprocessor_config.json")

    if args.files_only:
        config["torch_dtype"] = "bfloat16"
        (out / "config.json").write_text(json.dumps(config, indent=2))
        return

    import transformers

    cfg = transformers.AutoConfig.for_model(**config)
    cls = getattr(transformers, config["architectures"][0])
    with torch.device("meta"):
        model = cls._from_config(cfg)
    params = [(hub_name(n), tuple(p.shape)) for n, p in model.state_dict().items()]
    if config.get("tie_word_embeddings") or config.get("text_config", {}).get("tie_word_embeddings"):
        params = [(n, s) for n, s in params if n != "lm_head.weight"]

    gen = torch.Generator().manual_seed(args.seed)
    shards, current, size, total = [], {}, 0, 0

    def flush():
        nonlocal current, size
        if current:
            shards.append(current)
            name = f"model-{len(shards):05d}.safetensors"
            save_file(current, str(out / name), metadata={"format": "pt"})
            print(f"{name}: {len(current)} tensors, {size / 1e9:.2f} GB", flush=True)
        current, size = {}, 0

    weight_map = {}
    for name, shape in params:
        numel = 1
        for d in shape:
            numel *= d
        nbytes = 2 * numel
        if size and size + nbytes > SHARD_BYTES:
            flush()
        if name.endswith("norm.weight") or "layernorm" in name or name.endswith(("norm1.weight", "norm2.weight", "ln_q.weight")):
            t = torch.ones(shape, dtype=torch.bfloat16)
        elif name.endswith(".bias"):
            t = torch.zeros(shape, dtype=torch.bfloat16)
        else:
            t = torch.empty(shape, dtype=torch.float32).normal_(0.0, 0.02, generator=gen).to(torch.bfloat16)
        current[name] = t
        weight_map[name] = len(shards) + 1
        size += nbytes
        total += nbytes
    flush()
    n = len(shards)
    final = {}
    for i in range(1, n + 1):
        old = out / f"model-{i:05d}.safetensors"
        new = out / f"model-{i:05d}-of-{n:05d}.safetensors"
        old.rename(new)
        final[i] = new.name
    index = {"metadata": {"total_size": total}, "weight_map": {k: final[v] for k, v in weight_map.items()}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config["torch_dtype"] = "bfloat16"
    (out / "config.json").write_text(json.dumps(config, indent=2))
    print(f"{len(params)} tensors, {total / 1e9:.2f} GB in {n} shards -> {out}")


if __name__ == "__main__":
    main()
