#!/usr/bin/env python3
"""How far transformers' torchvision backend (`Qwen2VLImageProcessor`, picked by
default in transformers 5 when torchvision is installed) is from the PIL backend
that the Rust preprocessing reproduces bit for bit (tests/fixtures/vl goldens).

Prints, per config and image: whether the grids agree, the largest difference of
`pixel_values` (also in 8-bit levels, i.e. times 255 * std) and the share of
values that differ. Needs torchvision matching the installed torch, e.g.
  pip install --no-deps --target /tmp/tvlib torchvision==0.26.0
  PYTHONPATH=/tmp/tvlib ~/.cache/rlsd/torch-2.11.0/bin/python scripts/compare_vl_torchvision_backend.py
"""

import os

import numpy as np
import torchvision
from PIL import Image
from safetensors.numpy import load_file
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "vl")


def main():
    print("torchvision", torchvision.__version__)
    for cfg in ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]:
        proc = Qwen2VLImageProcessor.from_pretrained(os.path.join(ROOT, cfg), local_files_only=True)
        gold = load_file(os.path.join(ROOT, cfg, "golden.safetensors"))
        names = sorted(k[: -len(".grid_thw")] for k in gold if k.endswith(".grid_thw"))
        std = min(np.atleast_1d(proc.image_std))
        for name in names:
            with Image.open(os.path.join(ROOT, "images", name)) as im:
                im.load()
                out = proc(images=[im], return_tensors="np")
            diff = np.abs(out["pixel_values"] - gold[f"{name}.pixel_values"])
            same_grid = bool((out["image_grid_thw"][0] == gold[f"{name}.grid_thw"]).all())
            print(
                f"{cfg}/{name}: grid equal {same_grid}, max |diff| {diff.max():.4f} "
                f"({diff.max() * 255 * std:.1f} levels), differing {(diff > 0).mean() * 100:.1f}%"
            )


if __name__ == "__main__":
    main()
