#!/usr/bin/env python3
"""Golden M-RoPE position ids (transformers' `get_rope_index`) for
tests/vl_rope_index.rs, written to tests/fixtures/vl/rope_index.json.

`get_rope_index` is called unbound on Qwen2-VL, Qwen2.5-VL and Qwen3-VL with a
stand-in `self` that carries only `config.vision_config` (the method reads
nothing else for images), so no model is built and nothing is downloaded.

Run: ~/.cache/rlsd/torch-2.11.0/bin/python scripts/make_vl_rope_goldens.py
"""

import json
import os
import types

import torch
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "vl", "rope_index.json")
PAD = 151655  # <|image_pad|>
VS, VE = 151652, 151653  # <|vision_start|>, <|vision_end|>


def image(grid, merge):
    t, h, w = grid
    return [VS] + [PAD] * (t * h * w // merge**2) + [VE]


def batch(rows, pad_left):
    """Pads rows to one length with id 0 and a mask (left or right padding)."""
    n = max(len(r) for r in rows)
    ids, mask = [], []
    for r in rows:
        p = n - len(r)
        ids.append([0] * p + r if pad_left else r + [0] * p)
        mask.append([0] * p + [1] * len(r) if pad_left else [1] * len(r) + [0] * p)
    return ids, mask


def run(cls, merge, rows, grids, pad_left):
    ids, mask = batch(rows, pad_left)
    stub = types.SimpleNamespace(
        config=types.SimpleNamespace(
            vision_config=types.SimpleNamespace(spatial_merge_size=merge, tokens_per_second=2)
        )
    )
    stub.get_vision_position_ids = types.MethodType(cls.get_vision_position_ids, stub)
    input_ids = torch.tensor(ids)
    mm = (input_ids == PAD).int()
    kwargs = dict(
        input_ids=input_ids,
        mm_token_type_ids=mm,
        image_grid_thw=torch.tensor(grids, dtype=torch.long) if grids else None,
        attention_mask=torch.tensor(mask),
    )
    pos, deltas = cls.get_rope_index(stub, **kwargs)
    return {
        "model": cls.__name__,
        "merge": merge,
        "image_pad_id": PAD,
        "input_ids": ids,
        "attention_mask": mask,
        "grids": grids,
        "position_ids": pos.tolist(),
        "deltas": deltas.squeeze(1).tolist(),
    }


def main():
    g1, g2, g3 = [1, 4, 6], [1, 6, 4], [1, 8, 8]
    text = lambda *xs: list(xs)  # noqa: E731
    cases = []
    for cls in (Qwen2VLModel, Qwen2_5_VLModel, Qwen3VLModel):
        rows = [
            text(10, 11) + image(g1, 2) + text(12, 13, 14),
            text(20) + image(g2, 2) + text(21) + image(g3, 2) + text(22, 23),
            text(30, 31, 32, 33),
        ]
        cases.append(run(cls, 2, rows, [g1, g2, g3], pad_left=True))
        cases.append(run(cls, 2, rows, [g1, g2, g3], pad_left=False))
    # merge 1 and an image at the very start and end of the prompt.
    rows = [image([1, 2, 3], 1), image([1, 3, 2], 1) + text(5)]
    cases.append(run(Qwen2VLModel, 1, rows, [[1, 2, 3], [1, 3, 2]], pad_left=True))
    with open(OUT, "w") as f:
        json.dump({"transformers": __import__("transformers").__version__, "cases": cases}, f)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
