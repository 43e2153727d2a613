#!/usr/bin/env python3
"""peft LoRA adapters on the tiny fixture models, and golden outputs for tests/model_lora.rs.

Needs torch 2.11, transformers and peft (the team's interpreter is the one named in
`<repo>/.libtorch-python`). Run by hand, not in CI, after make_model_goldens.py:

    python scripts/make_lora_goldens.py            # writes tests/fixtures/lora/
    python scripts/make_lora_goldens.py check-saved BASE ADAPTER RLSD_LOGITS_JSON
        # ADAPTER holds an adapter saved by rlsd and RLSD_LOGITS_JSON its logits
        # (written by `RLSD_SAVE_DIR=OUT cargo test --test model_lora
        # trained_adapter_saves_in_peft_format`); loads BASE with the adapter
        # through PeftModel.from_pretrained and compares (fails above 1e-5).

What it writes, per case, under tests/fixtures/lora/NAME/: adapter_config.json and
adapter_model.safetensors as peft's save_pretrained writes them (both A and B drawn
at random, so the adapter changes the outputs), merged.safetensors (the weights of
merge_and_unload), and golden.json with, for each prompt of the base fixture's
golden.json, peft's float32 full-forward logits and greedy continuation.

Cases: `llama` (r 4, alpha 8, all seven projections, plain scaling) on
tests/fixtures/models/llama, and `qwen2` (r 2, alpha 3, q/v/down with rsLoRA, on a
model with q/k/v biases and a tied head) on tests/fixtures/models/qwen2.
"""

import json
import os
import shutil
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "tests", "fixtures", "models")
ROOT = os.path.join(HERE, "..", "tests", "fixtures", "lora")
NEW_TOKENS = 12

CASES = {
    "llama": dict(r=4, lora_alpha=8, use_rslora=False,
                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                  "gate_proj", "up_proj", "down_proj"], seed=11),
    "qwen2": dict(r=2, lora_alpha=3, use_rslora=True,
                  target_modules=["q_proj", "v_proj", "down_proj"], seed=12),
}


def greedy(model, ids, eos):
    out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                         eos_token_id=eos, pad_token_id=eos[-1])[0, len(ids):].tolist()
    cut = []
    for t in out:
        cut.append(t)
        if t in eos:
            break
    return cut


def build(name, case):
    base_dir = os.path.join(MODELS, name)
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    cfg = LoraConfig(r=case["r"], lora_alpha=case["lora_alpha"], use_rslora=case["use_rslora"],
                     target_modules=case["target_modules"], lora_dropout=0.0,
                     task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(case["seed"])
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "lora_" in pname:
                # Non-zero B (peft starts it at zero) so the adapter matters.
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    model.eval()
    model.save_pretrained(out)
    os.remove(os.path.join(out, "README.md"))  # peft's model card, not needed
    cfg_path = os.path.join(out, "adapter_config.json")
    saved_cfg = json.load(open(cfg_path))
    saved_cfg["base_model_name_or_path"] = f"tests/fixtures/models/{name}"
    json.dump(saved_cfg, open(cfg_path, "w"), indent=2, sort_keys=True)

    base_golden = json.load(open(os.path.join(base_dir, "golden.json")))
    eos = base_golden["eos_ids"]
    golden = {"scale": model.base_model.model.model.layers[0].self_attn.v_proj.scaling["default"],
              "prompts": []}
    # Reload through the public API: the goldens are what a user of peft sees.
    fresh = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    loaded = PeftModel.from_pretrained(fresh, out).eval()
    with torch.no_grad():
        for p in base_golden["prompts"]:
            ids = p["ids"]
            logits = loaded(torch.tensor([ids])).logits[0]
            golden["prompts"].append({"ids": ids, "logits": logits.tolist(),
                                      "greedy": greedy(loaded, ids, eos)})
        merged = loaded.merge_and_unload()
        state = {k: v.contiguous() for k, v in merged.state_dict().items()}
        if merged.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, os.path.join(out, "merged.safetensors"))
    json.dump(golden, open(os.path.join(out, "golden.json"), "w"))
    print(name, "written:", sorted(os.listdir(out)))


def check_saved(base_dir, adapter_dir, logits_json):
    ref = json.load(open(logits_json))
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    worst = 0.0
    with torch.no_grad():
        for ids, logits in zip(ref["ids"], ref["logits"]):
            got = model(torch.tensor([ids])).logits[0]
            worst = max(worst, (got - torch.tensor(logits)).abs().max().item())
    import peft
    print(f"peft {peft.__version__} loaded {adapter_dir} on {base_dir}: "
          f"max |logit diff| vs rlsd = {worst:.3e}")
    if worst > 1e-5:
        sys.exit(1)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "check-saved":
        check_saved(*sys.argv[2:])
        return
    for name, case in CASES.items():
        build(name, case)


if __name__ == "__main__":
    main()
