#!/usr/bin/env python3
"""Golden files for the Rust image preprocessing of Qwen2-VL / Qwen2.5-VL / Qwen3-VL.

Writes under tests/fixtures/vl/:
  images/*.{png,jpg,webp}   small test images drawn with PIL (odd sizes, one below
                            min_pixels, one above max_pixels, grey, RGBA, palette
                            with a transparent entry)
  <config>/preprocessor_config.json   the processor settings, in the forms the Hub
                            checkpoints use (top-level min/max_pixels, or size.*)
  <config>/golden.safetensors         for every image: `<name>.pixel_values` (f32,
                            [num_patches, C*T*P*P]), `<name>.grid_thw` (i64, [3]),
                            `<name>.resized` (u8, [H', W', 3]: PIL's bicubic output)
  decoded.safetensors       `<name>` (u8, [H, W, 3]): PIL's decoding after
                            transformers' RGB conversion (alpha over white)
  placeholders.json         prompts with `<|image_pad|>` and the text transformers'
                            processor expands them to

The processor is transformers' PIL backend (`Qwen2VLImageProcessorPil`), which is
the class Qwen2.5-VL and Qwen3-VL map to as well; it is loaded from the fixture
folder with `from_pretrained` (local files only, no network).

Run: ~/.cache/rlsd/torch-2.11.0/bin/python scripts/make_vl_processor_goldens.py
(needs `pip install transformers pillow numpy safetensors`).
"""

import json
import os
import sys

import numpy as np
import PIL
from PIL import Image
from safetensors.numpy import save_file

import transformers
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.image_transforms import convert_to_rgb

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "vl")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Three processor configs, written as the Hub checkpoints write them.
CONFIGS = {
    # Qwen2-VL style: top-level min_pixels / max_pixels, CLIP mean/std.
    "qwen2_vl": {
        "min_pixels": 3136,
        "max_pixels": 28 * 28 * 6,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
    },
    # Qwen2.5-VL style: explicit switches and rescale factor, resample 3 (bicubic).
    "qwen2_5_vl": {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "min_pixels": 28 * 28 * 5,
        "max_pixels": 28 * 28 * 10,
        "merge_size": 2,
        "patch_size": 14,
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "temporal_patch_size": 2,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    },
    # Qwen3-VL style: size.shortest_edge / longest_edge, patch 16, mean/std 0.5.
    "qwen3_vl": {
        "size": {"longest_edge": 32 * 32 * 8, "shortest_edge": 32 * 32 * 4},
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "Qwen3VLProcessor",
        "image_processor_type": "Qwen2VLImageProcessorFast",
    },
}


def smooth_noise(h, w, seed):
    """A picture with edges, gradients and noise, so the bicubic filter's overshoot
    and clamping are exercised."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack(
        [
            127 + 120 * np.sin(x / 3.0 + seed),
            255 * (y / max(h - 1, 1)),
            255 * (((x // 4) + (y // 4)) % 2),
        ],
        axis=-1,
    )
    base += rng.normal(0, 25, size=base.shape)
    return np.clip(np.rint(base), 0, 255).astype(np.uint8)


def make_images():
    d = os.path.join(ROOT, "images")
    os.makedirs(d, exist_ok=True)
    out = {}

    def put(name, img, **save_kw):
        path = os.path.join(d, name)
        img.save(path, **save_kw)
        out[name] = path

    put("odd.png", Image.fromarray(smooth_noise(37, 45, 1)))
    put("photo.jpg", Image.fromarray(smooth_noise(61, 83, 2)), quality=90)
    put("photo444.jpg", Image.fromarray(smooth_noise(33, 29, 3)), quality=95, subsampling=0)
    put("lossy.webp", Image.fromarray(smooth_noise(70, 50, 4)), quality=80)
    put("lossless.webp", Image.fromarray(smooth_noise(31, 57, 5)), lossless=True)
    put("tiny.png", Image.fromarray(smooth_noise(7, 5, 6)))
    put("large.png", Image.fromarray(smooth_noise(150, 190, 7)))
    put("gray.png", Image.fromarray(smooth_noise(40, 36, 8)[:, :, 0], mode="L"))
    rgba = np.concatenate([smooth_noise(30, 20, 9), smooth_noise(30, 20, 10)[:, :, 1:2]], axis=-1)
    put("alpha.png", Image.fromarray(rgba, mode="RGBA"))
    # Palette with a transparent entry (tRNS): transformers composites it too.
    pal = Image.fromarray(smooth_noise(26, 33, 11)).quantize(colors=16)
    put("palette.png", pal, transparency=3)
    return out


def main():
    os.makedirs(ROOT, exist_ok=True)
    images = make_images()
    names = sorted(images)

    decoded = {}
    for name in names:
        with Image.open(images[name]) as im:
            im.load()
            decoded[name] = np.ascontiguousarray(convert_to_rgb(im, return_numpy=True))
    save_file(decoded, os.path.join(ROOT, "decoded.safetensors"))

    summary = {}
    for cfg_name, cfg in CONFIGS.items():
        cdir = os.path.join(ROOT, cfg_name)
        os.makedirs(cdir, exist_ok=True)
        with open(os.path.join(cdir, "preprocessor_config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        proc = Qwen2VLImageProcessorPil.from_pretrained(cdir, local_files_only=True)
        tensors = {}
        # Every image through the first config; a few through the others, to keep
        # the fixtures small (pixel values are f32, repeated temporal_patch_size times).
        subset = names if cfg_name == "qwen2_vl" else ["large.png", "odd.png", "photo.jpg", "tiny.png"]
        for name in subset:
            with Image.open(images[name]) as im:
                im.load()
                feats = proc(images=[im], return_tensors="np")
            pv = np.ascontiguousarray(feats["pixel_values"].astype(np.float32))
            grid = np.ascontiguousarray(feats["image_grid_thw"][0].astype(np.int64))
            tensors[f"{name}.pixel_values"] = pv
            tensors[f"{name}.grid_thw"] = grid
            # PIL's resized pixels alone, to tell resampling errors from the rest.
            h, w = int(grid[1]) * proc.patch_size, int(grid[2]) * proc.patch_size
            rgb = Image.fromarray(decoded[name])
            tensors[f"{name}.resized"] = np.ascontiguousarray(
                np.array(rgb.resize((w, h), resample=Image.Resampling.BICUBIC))
            )
            summary[f"{cfg_name}/{name}"] = [int(v) for v in grid]
        save_file(tensors, os.path.join(cdir, "golden.safetensors"))

    # Placeholder expansion, through the processor's own text path.
    proc = Qwen2VLImageProcessorPil.from_pretrained(os.path.join(ROOT, "qwen2_vl"), local_files_only=True)
    cases = []
    prompts = [
        ("<|vision_start|><|image_pad|><|vision_end|>What is shown?", ["odd.png"]),
        (
            "First <|vision_start|><|image_pad|><|vision_end|> then "
            "<|vision_start|><|image_pad|><|vision_end|> compare.",
            ["tiny.png", "large.png"],
        ),
        ("No image here.", []),
    ]
    for text, imgs in prompts:
        pil = [Image.open(images[n]).convert("RGB") for n in imgs]
        grids = proc(images=pil, return_tensors="np")["image_grid_thw"].tolist() if pil else []
        expanded = expand_like_processor(text, grids, proc.merge_size)
        cases.append({"text": text, "images": imgs, "grids": grids, "expanded": expanded})
    with open(os.path.join(ROOT, "placeholders.json"), "w") as f:
        json.dump({"config": "qwen2_vl", "cases": cases}, f, indent=1)
        f.write("\n")

    with open(os.path.join(ROOT, "VERSIONS"), "w") as f:
        f.write(f"transformers {transformers.__version__}\npillow {PIL.__version__}\nnumpy {np.__version__}\n")
        f.write(f"python {sys.version.split()[0]}\n")
    print(json.dumps(summary, indent=1))


def expand_like_processor(text, grids, merge_size):
    """transformers' Qwen2VLProcessor: `ProcessorMixin.get_text_with_replacements`
    with `Qwen2VLProcessor.replace_image_token` (called unbound: it reads only
    `self.image_token` and `self.image_processor.merge_size`)."""
    from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

    class _Stub:
        image_token = "<|image_pad|>"
        video_token = None
        audio_token = None
        all_special_multimodal_tokens = ["<|image_pad|>"]

        class image_processor:  # noqa: N801 (attribute namespace)
            pass

    stub = _Stub()
    stub.image_processor.merge_size = merge_size
    inputs = {"image_grid_thw": np.array(grids, dtype=np.int64).reshape(-1, 3)}
    repl = [Qwen2VLProcessor.replace_image_token(stub, inputs, i) for i in range(len(grids))]
    out, _ = transformers.processing_utils.ProcessorMixin.get_text_with_replacements(stub, [text], repl)
    return out[0]


if __name__ == "__main__":
    main()
