#!/usr/bin/env python3
"""Tiny random Hugging Face checkpoints and golden outputs for the model tests.

Needs torch 2.11, transformers (4 or 5) and tokenizers; the team's interpreter is
the one named in `<repo>/.libtorch-python`. Run by hand, not in CI:

    python scripts/make_model_goldens.py            # writes tests/fixtures/models/
    python scripts/make_model_goldens.py check-saved DIR...
        # each DIR holds a model saved by rlsd plus rlsd_logits.json (written by
        # `RLSD_SAVE_DIR=OUT cargo test --test model_io saved_model_round_trips`
        # into OUT/{llama,qwen2,qwen3,random}); loads it with transformers and
        # compares the logits (fails above 1e-4).

What it writes, per model (llama, qwen2, qwen3), under tests/fixtures/models/NAME/:
config.json, weights (llama: f32 single file, qwen2: bf16 single file, qwen3: f16
sharded with an index), tokenizer.json (a BPE trained here on a few sentences,
about 100 tokens), tokenizer config / chat template, generation_config.json, and
golden.json with encoded texts, the rendered chat template, full-forward logits
of each prompt and greedy continuations computed by transformers in float32 from
the (rounded) stored weights.
"""

import json
import os
import shutil
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "models")

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 12 plus 30? The answer is 42.",
    "Solve step by step: 7 times 6 equals 42, then add 8 to get 50.",
    "A language model assigns a probability to every next token.",
    "Reinforcement learning from verifiable rewards checks the final answer.",
    "The teacher sees the reference answer and the student does not.",
    "user: how many apples are left? assistant: there are 3 apples left.",
] * 20

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

TEXTS = [
    "The answer is 42.",
    "what is 7 times 6?",
    "Reinforcement learning checks the answer",
]
CHAT = [
    {"role": "user", "content": "  What is 12 plus 30?  "},
    {"role": "assistant", "content": "The answer is 42."},
    {"role": "user", "content": "And 7 times 6?"},
]
PROMPTS = ["The quick brown", "What is 12 plus", "A language model assigns a probability"]
NEW_TOKENS = 12


def train_tokenizer():
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=100, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def randomise(model, seed):
    """Larger-than-default random weights so logits are peaked (no near-ties)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)


def build(name, cfg_cls, model_cls, kwargs, seed, dtype, shard, tok, template_where, v4_config):
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    eos = tok.token_to_id("<|im_end|>")
    eot = tok.token_to_id("<|endoftext|>")
    cfg = cfg_cls(vocab_size=tok.get_vocab_size(), bos_token_id=None, eos_token_id=eot,
                  pad_token_id=eot, **kwargs)
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    randomise(model, seed)
    # The goldens come from the reloaded checkpoint (weights rounded to the stored
    # dtype, computed in float32); a round trip of the live model through .to()
    # would also round its rotary buffers.
    gen_cfg = GenerationConfig(eos_token_id=[eos, eot], pad_token_id=eot, do_sample=False)
    model.generation_config = gen_cfg
    save_kwargs = {"max_shard_size": "60KB"} if shard else {}
    model.to(dtype).save_pretrained(out, **save_kwargs)
    if v4_config:
        # The transformers-4 form: top-level rope_theta / rope_scaling.
        path = os.path.join(out, "config.json")
        c = json.load(open(path))
        rp = c.pop("rope_parameters")
        c["rope_theta"] = rp.pop("rope_theta")
        if rp.get("rope_type", "default") != "default":
            c["rope_scaling"] = rp
        c["torch_dtype"] = c.pop("dtype", "float32")
        c["transformers_version"] = "4.51.0"
        json.dump(c, open(path, "w"), indent=2)

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    tc_path = os.path.join(out, "tokenizer_config.json")
    jinja_path = os.path.join(out, "chat_template.jinja")
    tc = json.load(open(tc_path))
    if template_where == "tokenizer_config":
        if os.path.exists(jinja_path):
            os.remove(jinja_path)
        tc["chat_template"] = CHAT_TEMPLATE
    elif template_where == "jinja":
        tc.pop("chat_template", None)
        open(jinja_path, "w").write(CHAT_TEMPLATE)
    else:
        tc.pop("chat_template", None)
        if os.path.exists(jinja_path):
            os.remove(jinja_path)
    json.dump(tc, open(tc_path, "w"), indent=2)

    # Reload through the public API: the goldens are what transformers sees.
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    golden = {"texts": [], "prompts": [], "eos_ids": [eos, eot], "pad_id": eot}
    for t in TEXTS:
        ids = tok.encode(t).ids
        golden["texts"].append({"text": t, "ids": ids, "decoded": tok.decode(ids)})
    if template_where != "none":
        golden["chat"] = {
            "messages": CHAT,
            "rendered": fast.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True),
        }
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok.encode(p).ids
            x = torch.tensor([ids])
            logits = reloaded(x).logits[0]
            gen = reloaded.generate(x, max_new_tokens=NEW_TOKENS, do_sample=False,
                                    eos_token_id=[eos, eot], pad_token_id=eot)[0, len(ids):].tolist()
            cut = []
            for t in gen:
                cut.append(t)
                if t in (eos, eot):
                    break
            golden["prompts"].append({"text": p, "ids": ids, "logits": logits.tolist(),
                                      "greedy": cut})
    json.dump(golden, open(os.path.join(out, "golden.json"), "w"))
    print(name, "written:", sorted(os.listdir(out)))


def check_saved(d):
    ref = json.load(open(os.path.join(d, "rlsd_logits.json")))
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    worst = 0.0
    with torch.no_grad():
        for ids, logits in zip(ref["ids"], ref["logits"]):
            got = model(torch.tensor([ids])).logits[0]
            worst = max(worst, (got - torch.tensor(logits)).abs().max().item())
    tok_note = ""
    if os.path.exists(os.path.join(d, "tokenizer.json")):
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(d)
        tok_note = f", tokenizer {type(tok).__name__} (chat template: {tok.chat_template is not None})"
    print(f"transformers {__import__('transformers').__version__} loaded {d}: "
          f"class {type(model).__name__}, max |logit diff| vs rlsd = {worst:.3e}{tok_note}")
    if worst > 1e-4:
        sys.exit(1)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "check-saved":
        for d in sys.argv[2:]:
            check_saved(d)
        return
    tok = train_tokenizer()
    common = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                  max_position_embeddings=256, rms_norm_eps=1e-6)
    llama3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0,
              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 64}
    build("llama", LlamaConfig, LlamaForCausalLM,
          dict(common, rope_parameters=llama3, tie_word_embeddings=False),
          1, torch.float32, False, tok, "none", True)
    build("qwen2", Qwen2Config, Qwen2ForCausalLM,
          dict(common, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
               tie_word_embeddings=True),
          2, torch.bfloat16, False, tok, "tokenizer_config", False)
    build("qwen3", Qwen3Config, Qwen3ForCausalLM,
          dict(common, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
               tie_word_embeddings=False),
          3, torch.float16, True, tok, "jinja", False)


if __name__ == "__main__":
    main()
