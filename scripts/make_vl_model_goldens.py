#!/usr/bin/env python3
"""Golden outputs of a tiny random Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`)
for tests/vl_model_golden.rs, written under tests/fixtures/vl/qwen2_5_vl_tiny/.

The model is built by transformers from a small config (vision tower: 4 blocks,
width 32, 2 heads, window attention with full attention at blocks 1 and 3, 2x2
patch merger; language model: 2 layers, width 32, 4 heads, 2 KV heads, vocab
256, M-RoPE sections [1, 1, 2]) and re-initialised with a seeded draw wider than
transformers' default (std 0.1 for matrices, norm scales and biases drawn too),
so that no block is a near-identity and a wrong detail shows.

The image token ids are small (250 = image pad, 252/253 = vision start/end) so
the embedding stays small; everything reads them from config.json.

Files:
  config.json                 transformers 5's nested layout (`text_config`)
  config_flat.json            the Hub's transformers-4 layout (text keys at the
                              top, `rope_scaling.mrope_section`, `in_chans`)
  model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json
                              the weights under the Hub's names (`visual.*`,
                              `model.layers.*`, `lm_head.weight`), in two shards
  tokenizer.json, tokenizer_config.json, preprocessor_config.json (Qwen2.5-VL only)
                              the text fixture's tiny tokenizer (tests/fixtures/models/qwen2)
                              with <|image_pad|>, <|video_pad|>, <|vision_start|>,
                              <|vision_end|> at 250..253, and the Qwen2.5-VL processor
                              fixture: enough for `rlsd generate --image` to run
  golden.safetensors          inputs and outputs (f32 / i64):
    image{0,1}.pixel_values, image{0,1}.grid_thw   processor output of two PNGs
    vision.one      tower output for image0            [n0, 32]
    vision.two      tower output for image0 + image1   [n0 + n1, 32]
    {case}.ids      prompt ids [1, T], case in text_image, two_images, text_only
    {case}.logits   logits [T, 256] of the prompt
    {case}.greedy   6 greedy ids after the prompt (transformers' generate, KV cache)
    {case}.response teacher-forced response ids [R]
    {case}.response_logprobs  log-probs of the response tokens [R]
    text_image.bf16_rel_err   transformers' bf16 logits vs these f32 ones, relative to scale

Run: ~/.cache/rlsd/torch-2.11.0/bin/python scripts/make_vl_model_goldens.py
"""

import json
import os
import shutil

import torch
from PIL import Image
from safetensors.torch import save_file

import transformers
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures", "vl")
OUT = None  # set per model in main()
PAD, VIDEO, VS, VE = 250, 251, 252, 253

VISION = dict(
    depth=4,
    hidden_size=32,
    intermediate_size=48,
    num_heads=2,
    in_channels=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    tokens_per_second=2,
    window_size=56,  # 2 x 2 merged patches per window
    out_hidden_size=32,
    fullatt_block_indexes=[1, 3],
    hidden_act="silu",
)
TEXT = dict(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    hidden_act="silu",
)


# Qwen3-VL: LayerNorm blocks with a GELU MLP, a learned 4 x 4 position table
# resampled to each grid, deepstack mergers after vision blocks 0 and 2 feeding
# the first two of three Qwen3 decoder layers, interleaved M-RoPE [2, 1, 1].
VISION3 = dict(
    depth=4,
    hidden_size=32,
    intermediate_size=48,
    num_heads=2,
    in_channels=3,
    patch_size=16,
    spatial_merge_size=2,
    temporal_patch_size=2,
    out_hidden_size=32,
    num_position_embeddings=16,
    deepstack_visual_indexes=[0, 2],
    hidden_act="gelu_pytorch_tanh",
)
TEXT3 = dict(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1], "mrope_interleaved": True},
    bos_token_id=1,
    eos_token_id=2,
    hidden_act="silu",
)
MODELS = {
    "qwen2_5_vl_tiny": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, VISION, TEXT, "qwen2_5_vl"),
    "qwen3_vl_tiny": (Qwen3VLConfig, Qwen3VLForConditionalGeneration, VISION3, TEXT3, "qwen3_vl"),
}


def build(name="qwen2_5_vl_tiny"):
    config_cls, model_cls, vision, text, _ = MODELS[name]
    cfg = config_cls(
        vision_config=vision,
        text_config=text,
        image_token_id=PAD,
        video_token_id=VIDEO,
        vision_start_token_id=VS,
        vision_end_token_id=VE,
        tie_word_embeddings=False,
    )
    cfg.architectures = [model_cls.__name__]
    cfg._attn_implementation = "eager"
    model = model_cls(cfg).eval()
    g = torch.Generator().manual_seed(21)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight") or ".norm1.weight" in name or ".norm2.weight" in name or "ln_q" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return cfg, model


def hub_name(name):
    """transformers 5 module names -> the Hub checkpoints' tensor names."""
    if name.startswith("model.visual."):
        return name[len("model.") :]
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model.") :]
    return name


def write_weights(model):
    sd = {hub_name(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    names = sorted(sd)
    shards = [[n for n in names if n.startswith("visual.")], [n for n in names if not n.startswith("visual.")]]
    weight_map = {}
    for i, part in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: sd[n] for n in part}, os.path.join(OUT, fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    with open(os.path.join(OUT, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def write_configs(cfg, name):
    cfg.save_pretrained(OUT)  # config.json, nested
    if name != "qwen2_5_vl_tiny":
        return  # Qwen3-VL checkpoints exist only in the nested layout
    # transformers 4 / Hub layout: text keys flat, M-RoPE in rope_scaling.
    t = dict(TEXT)
    rope = t.pop("rope_parameters")
    v = dict(VISION)
    v["in_chans"] = v.pop("in_channels")
    flat = {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        **t,
        "rope_theta": rope["rope_theta"],
        "rope_scaling": {"type": "mrope", "mrope_section": rope["mrope_section"]},
        "image_token_id": PAD,
        "video_token_id": VIDEO,
        "vision_start_token_id": VS,
        "vision_end_token_id": VE,
        "torch_dtype": "float32",
        "vision_config": v,
    }
    with open(os.path.join(OUT, "config_flat.json"), "w") as f:
        json.dump(flat, f, indent=2)


def write_tokenizer():
    """The tiny text tokenizer plus the four vision tokens at their config ids."""
    src = os.path.join(FIX, "..", "models", "qwen2")
    with open(os.path.join(src, "tokenizer.json")) as f:
        tok = json.load(f)
    for i, c in [(PAD, "<|image_pad|>"), (VIDEO, "<|video_pad|>"), (VS, "<|vision_start|>"), (VE, "<|vision_end|>")]:
        tok["model"]["vocab"][c] = i
        tok["added_tokens"].append(
            {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
        )
    with open(os.path.join(OUT, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    shutil.copy(os.path.join(src, "tokenizer_config.json"), OUT)
    shutil.copy(os.path.join(FIX, "qwen2_5_vl", "preprocessor_config.json"), OUT)


def images(proc_dir):
    proc = Qwen2VLImageProcessorPil.from_pretrained(os.path.join(FIX, proc_dir))
    out = []
    for name in ["odd.png", "large.png"]:
        img = Image.open(os.path.join(FIX, "images", name))
        r = proc(images=[img], return_tensors="pt")
        out.append((r["pixel_values"].float(), r["image_grid_thw"][0].long()))
    return out


def prompt(parts, counts):
    ids, k = [], 0
    for p in parts:
        if p == "img":
            ids += [VS] + [PAD] * counts[k] + [VE]
            k += 1
        else:
            ids += p
    return torch.tensor([ids])


def main():
    global OUT
    for name in MODELS:
        OUT = os.path.join(FIX, name)
        make(name)


def make(name):
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    cfg, model = build(name)
    write_weights(model)
    write_configs(cfg, name)
    if name == "qwen2_5_vl_tiny":
        write_tokenizer()
    (pv0, g0), (pv1, g1) = images(MODELS[name][4])
    n0, n1 = int(g0.prod()) // 4, int(g1.prod()) // 4
    golden = {
        "image0.pixel_values": pv0,
        "image0.grid_thw": g0,
        "image1.pixel_values": pv1,
        "image1.grid_thw": g1,
    }
    with torch.no_grad():
        vis = model.model.visual
        one = vis(pv0, grid_thw=g0[None])
        two = vis(torch.cat([pv0, pv1]), grid_thw=torch.stack([g0, g1]))
        golden["vision.one"] = one.pooler_output
        golden["vision.two"] = two.pooler_output
        for k, f in enumerate(getattr(two, "deepstack_features", None) or []):
            golden[f"vision.two.deepstack{k}"] = f
        cases = {
            "text_image": ([[1, 5, 6], "img", [7, 8, 9, 10]], [pv0], [g0]),
            "two_images": ([[1, 11], "img", [12, 13], "img", [14, 15, 16]], [pv0, pv1], [g0, g1]),
            "text_only": ([[1, 17, 18, 19, 20, 21, 22]], [], []),
        }
        gen = torch.Generator().manual_seed(5)
        for case, (parts, pvs, grids) in cases.items():
            ids = prompt(parts, [n0, n1])
            kw = {}
            if pvs:
                kw = dict(pixel_values=torch.cat(pvs), image_grid_thw=torch.stack(grids))
            mm = (ids == PAD).int()
            logits = model(input_ids=ids, mm_token_type_ids=mm, **kw).logits[0]
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                mm_token_type_ids=mm,
                max_new_tokens=6,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
                **kw,
            )
            response = torch.randint(3, 250, (5,), generator=gen)
            full = torch.cat([ids[0], response])[None]
            full_logits = model(input_ids=full, mm_token_type_ids=(full == PAD).int(), **kw).logits[0]
            lp = torch.log_softmax(full_logits.double(), -1)
            t = ids.shape[1]
            resp_lp = lp[t - 1 : t - 1 + len(response)].gather(1, response[:, None])[:, 0]
            golden[f"{case}.ids"] = ids
            golden[f"{case}.logits"] = logits
            golden[f"{case}.greedy"] = out[0, t:]
            golden[f"{case}.response"] = response
            golden[f"{case}.response_logprobs"] = resp_lp.float()
        # transformers' own bf16 error on the text+image prompt (weights and
        # pixels cast to bf16), relative to the f32 logits' scale.
        model16 = model.to(torch.bfloat16)
        ids = golden["text_image.ids"]
        l16 = model16(
            input_ids=ids,
            mm_token_type_ids=(ids == PAD).int(),
            pixel_values=pv0.to(torch.bfloat16),
            image_grid_thw=g0[None],
        ).logits[0].float()
        ref = golden["text_image.logits"]
        golden["text_image.bf16_rel_err"] = ((l16 - ref).abs().max() / ref.abs().max()).reshape(1)
    save_file({k: v.contiguous() for k, v in golden.items()}, os.path.join(OUT, "golden.safetensors"))
    with open(os.path.join(OUT, "VERSIONS"), "w") as f:
        f.write(f"transformers {transformers.__version__}\ntorch {torch.__version__}\n")
    print("wrote", OUT, {k: tuple(v.shape) for k, v in golden.items()})


if __name__ == "__main__":
    main()
