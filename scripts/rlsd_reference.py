#!/usr/bin/env python3
"""PyTorch reference for the RLSD math, written from shared/RLSD-SPEC.md.

Writes tests/fixtures/rlsd_golden.json: inputs and expected outputs (group
advantages, delta, token weights, Ahat, loss, d loss / d logp_new, schedules,
AdamW trajectories) that tests/rlsd_golden.rs matches to 1e-6.

Needs python3 with torch (any 2.x). Run once by hand from the repo root:
    $(cat .libtorch-python 2>/dev/null || echo python3) scripts/rlsd_reference.py
"""
import json
import math
import os

import torch

torch.manual_seed(20260403)
D = torch.float64


def advantages(rewards, group_size, scale_by_std):
    out = []
    for s in range(0, len(rewards), group_size):
        g = torch.tensor(rewards[s:s + group_size], dtype=D)
        if len(g) <= 1 or bool((g == g[0]).all()):
            out += [0.0] * len(g)
            continue
        a = g - g.mean()
        if scale_by_std:
            a = a / (g.std(unbiased=True) + 1e-6)
        out += a.tolist()
    return out


def f32(rows):
    """Round to float32: the Rust side receives per-token values as f32."""
    return [torch.tensor(r, dtype=torch.float32).double().tolist() for r in rows]


def pad(rows, L):
    t = torch.zeros(len(rows), L, dtype=D)
    for i, r in enumerate(rows):
        t[i, :len(r)] = torch.tensor(r, dtype=D)
    return t


def credit(algo, A, delta, lam, eps_w, mask):
    if algo == "grpo":
        return A[:, None] * mask, None
    if algo == "opsd":
        return delta * mask, None
    w = torch.exp(torch.sign(A)[:, None] * delta)
    w_clip = torch.clamp(w, 1 - eps_w, 1 + eps_w)
    return A[:, None] * ((1 - lam) + lam * w_clip) * mask, w


def ppo(logp_new, logp_old, ahat, mask, eps_low, eps_high, c):
    ratio = torch.exp((logp_new - logp_old) * mask)
    pg1 = -ahat * ratio
    pg2 = -ahat * torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    pg = torch.maximum(pg1, pg2)
    pg = torch.where(ahat < 0, torch.minimum(pg, -ahat * c), pg)
    return pg * mask


def agg(x, mask, how):
    if how == "token-mean":
        return (x * mask).sum() / mask.sum()
    lens = mask.sum(-1).clamp_min(1)
    return ((x * mask).sum(-1) / lens).mean()


def loss_case(name, algo, how, student, lam=0.3, kl_coef=0.0, entropy_coef=0.0,
              rewards=(1.0, 0.0, 0.0, 1.0, 1.0, 0.0), cepo_fallback="grpo"):
    B, G = 6, 3
    lens = [5, 3, 7, 1, 4, 6]
    L = max(lens)
    rewards = list(rewards)
    correct = [r > 0.5 for r in rewards]
    A = torch.tensor(advantages(rewards, G, True), dtype=torch.float32).double()
    mask = pad([[1.0] * n for n in lens], L)
    new_rows = f32([(-torch.rand(n, dtype=D) * 3).tolist() for n in lens])
    jitter = lambda s: f32([[x + float(torch.randn(1, dtype=D) * s) for x in r] for r in new_rows])
    old_rows = jitter(0.4)
    # Ratios of e^1.5 and e^1.25 on wrong responses (A < 0) exercise the dual clip (c = 3).
    old_rows[1][0] = new_rows[1][0] - 1.5
    old_rows[2][3] = new_rows[2][3] - 1.25
    # Teacher: student +- about a quarter nat so a good share of weights get clipped.
    teacher_rows = jitter(0.25)
    neg_full = jitter(0.25)
    # CEPO negative per group: the lowest-reward wrong response; none if all correct.
    neg_idx = []
    for s in range(0, B, G):
        wrong = [i for i in range(s, s + G) if not correct[i]]
        best = min(wrong, key=lambda i: (rewards[i], i)) if wrong else None
        neg_idx += [best] * G
    neg_rows = [neg_full[i] if neg_idx[i] is not None else None for i in range(B)]
    ref_rows = jitter(0.3)
    ent_rows = f32([(torch.rand(n, dtype=D) * 2).tolist() for n in lens])

    logp_new = pad(new_rows, L).requires_grad_(True)
    logp_old = pad(old_rows, L)
    teacher = pad(teacher_rows, L)
    ref = pad(ref_rows, L)
    ent = pad(ent_rows, L)
    logp_s = logp_new.detach() if student == "current" else logp_old
    if algo == "cepo":
        # A group with no wrong response: GRPO (delta = 0, its authors') or,
        # as an option, RLSD's credit (Tneg = the student).
        rows = []
        for i in range(B):
            if neg_rows[i] is not None:
                rows.append(teacher[i] - pad([neg_rows[i]], L)[0])
            elif cepo_fallback == "rlsd":
                rows.append(teacher[i] - logp_s[i])
            else:
                rows.append(torch.zeros(L, dtype=D))
        delta = torch.stack(rows) * mask
    else:
        delta = (teacher - logp_s) * mask
    ahat, w = credit(algo, A, delta, lam, 0.2, mask)
    pg = ppo(logp_new, logp_old, ahat, mask, 0.2, 0.28, 3.0)
    loss = agg(pg, mask, how)
    if kl_coef > 0:
        d = (ref - logp_new) * mask
        k3 = (torch.exp(d) - d - 1) * mask
        loss = loss + kl_coef * agg(k3, mask, how)
    if entropy_coef != 0:
        loss = loss - entropy_coef * agg(ent, mask, how)
    loss.backward()
    return {
        "name": name, "algo": algo, "loss_agg": how, "student_logprobs": student,
        "lambda": lam, "eps_w": 0.2, "eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": 3.0,
        "kl_coef": kl_coef, "entropy_coef": entropy_coef, "group_size": G,
        "cepo_fallback": cepo_fallback,
        "lens": lens, "rewards": rewards, "correct": correct,
        "logp_new": new_rows, "logp_old": old_rows, "teacher": teacher_rows,
        "teacher_neg": neg_rows, "ref": ref_rows, "entropy": ent_rows,
        "expected": {
            "advantages": A.tolist(),
            "cepo_negatives": neg_idx,
            "delta": delta.tolist(),
            "weights": None if w is None else (w * mask).tolist(),
            "ahat": ahat.tolist(),
            "loss": float(loss.detach()),
            "grad_logp_new": logp_new.grad.tolist(),
        },
    }


def lambda_at(step, lambda0, warmup, decay):
    """The reference code's schedule: ramp up from 0 during the warm-up, then a
    linear decay; decay == 0 keeps lambda0 (constant-lambda ablation)."""
    if warmup > 0 and step <= warmup:
        return lambda0 * step / warmup
    if decay == 0:
        return lambda0
    return lambda0 * max(1 - (step - warmup) / decay, 0.0)


def distill_case(name, form, k, tail):
    """OPSD divergence between teacher and student next-token distributions,
    as the reference's opsd_algos.py computes it (top-k on the teacher's
    support, tail bucket, clamps), with the gradient w.r.t. student logits."""
    n, V, T = 5, 11, 1.0
    t_logits = torch.randn(n, V, dtype=D) * 2
    s_logits = (torch.randn(n, V, dtype=D) * 2).requires_grad_(True)
    lt_full = torch.log_softmax(t_logits / T, -1)
    ls_full = torch.log_softmax(s_logits / T, -1)
    if k == 0:
        ids = torch.arange(V).expand(n, V)
    else:
        ids = torch.topk(lt_full, k, dim=-1).indices
    lt = lt_full.gather(-1, ids)
    ls = ls_full.gather(-1, ids)
    eps = 1e-10
    pt, ps = lt.exp(), ls.exp()
    if form == "kl":
        d = (pt * (lt - ls)).sum(-1)
        if tail:
            tt = (1 - pt.sum(-1)).clamp(min=eps)
            st = (1 - ps.sum(-1)).clamp(min=eps)
            d = d + tt * (tt.log() - st.log())
        d = d.clamp(-10, 10)
    else:
        if tail:
            p = torch.cat([pt, (1 - pt.sum(-1, keepdim=True)).clamp(min=eps)], -1)
            q = torch.cat([ps, (1 - ps.sum(-1, keepdim=True)).clamp(min=eps)], -1)
        else:
            p = pt / pt.sum(-1, keepdim=True).clamp(min=eps)
            q = ps / ps.sum(-1, keepdim=True).clamp(min=eps)
        m = (0.5 * (p + q)).clamp_min(eps).log()
        d = 0.5 * ((p * (p.clamp_min(eps).log() - m)).sum(-1) + (q * (q.clamp_min(eps).log() - m)).sum(-1))
        d = d.clamp(0, 10)
    d.mean().backward()
    return {"name": name, "form": form, "k": k, "tail": tail,
            "teacher_logits": t_logits.tolist(), "student_logits": s_logits.detach().tolist(),
            "ids": ids.tolist(), "divergence": d.detach().tolist(),
            "grad_student_logits": s_logits.grad.tolist()}


def lr_at(step, lr, warmup, sched, total, min_ratio):
    step = max(step, 1)
    if warmup > 0 and step <= warmup:
        return lr * step / warmup
    lo = min_ratio * lr
    span = max(total - warmup, 0)
    if span == 0:
        return lr
    p = min(max((step - warmup) / span, 0.0), 1.0)
    if sched == "constant":
        return lr
    if sched == "linear":
        return lo + (lr - lo) * (1 - p)
    return lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * p))


def adamw_case():
    # float32 parameters, as in the Rust optimiser; torch's own AdamW is the reference.
    p0 = {"a": torch.randn(3, 4), "b": torch.randn(5)}
    params = {k: v.clone().requires_grad_(True) for k, v in p0.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=0.01, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.01)
    grads, lrs = [], [0.01, 0.02, 0.005]
    for lr in lrs:
        for g in opt.param_groups:
            g["lr"] = lr
        gs = {k: torch.randn_like(v) for k, v in params.items()}
        for k, v in params.items():
            v.grad = gs[k].clone()
        opt.step()
        grads.append({k: g.flatten().tolist() for k, g in gs.items()})
    return {
        "init": {k: {"shape": list(v.shape), "data": v.flatten().tolist()} for k, v in p0.items()},
        "lrs": lrs, "grads": grads,
        "expected": {k: v.detach().flatten().tolist() for k, v in params.items()},
    }


def train_case():
    """Two full train steps of a bigram policy (logits = table[previous token]):
    forward in float32, RLSD loss in float64, backward, grad-norm clip, AdamW."""
    V = 8
    table = torch.randn(V, V).mul(0.5).requires_grad_(True)
    init = table.detach().clone()
    samples = [([1, 2], [3, 4, 5]), ([1, 2], [6, 6]), ([1, 2], [7, 1, 2, 3, 4]), ([1, 2], [0]),
               ([5], [2, 2, 2, 2]), ([5], [1, 3]), ([5], [4, 4, 0, 1, 7, 7]), ([5], [6, 5, 4])]
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    lens = [len(r) for _, r in samples]
    L = max(lens)
    mask = pad([[1.0] * n for n in lens], L)
    A = torch.tensor(advantages(rewards, 4, True), dtype=torch.float32).double()

    def scores(tab, temp):
        lps, ents = [], []
        for prompt, resp in samples:
            prev = torch.tensor([prompt[-1]] + resp[:-1])
            logp = torch.log_softmax(tab[prev] / temp, -1)
            lps.append(logp.gather(-1, torch.tensor(resp)[:, None]).squeeze(-1))
            ents.append(-(logp.exp() * logp).sum(-1))
        padded = lambda xs: torch.stack([torch.cat([x, x.new_zeros(L - len(x))]) for x in xs])
        return padded(lps), padded(ents)

    temp = 0.9
    with torch.no_grad():
        lp0, _ = scores(table, temp)
    rows = lambda t: [t[i, :n].tolist() for i, n in enumerate(lens)]
    sampling = f32([[x + 0.3 * (((i * 7 + j * 3) % 5) - 2) for j, x in enumerate(r)]
                    for i, r in enumerate(rows(lp0))])
    teacher = f32([[x + float(torch.randn(1) * 0.3) for x in r] for r in rows(lp0)])
    lam, max_norm, lr = 0.4, 0.1, 0.05
    opt = torch.optim.AdamW([table], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    steps = []
    for _ in range(2):
        opt.zero_grad()
        lp, ent = scores(table, temp)
        logp_new = lp.double() * mask
        old = pad(sampling, L)
        delta = (pad(teacher, L) - logp_new.detach()) * mask
        ahat, _ = credit("rlsd", A, delta, lam, 0.2, mask)
        loss = agg(ppo(logp_new, old, ahat, mask, 0.2, 0.28, 3.0), mask, "token-mean")
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([table], max_norm)
        opt.step()
        steps.append({"loss": float(loss.detach()), "grad_norm": float(norm),
                      "table": table.detach().flatten().tolist()})
    return {"vocab": V, "init": init.flatten().tolist(), "samples": samples, "rewards": rewards,
            "temperature": temp, "sampling": sampling, "teacher": teacher, "lambda": lam,
            "max_grad_norm": max_norm, "lr": lr, "steps": steps}


def main():
    rewards_cases = []
    for rewards, g in [
        ([1, 0, 0, 1, 1, 1, 1, 1, 0.5], 3),
        ([0.2, 0.9, 0.4, 0.4, 1.0, 0.0, 0.3, 0.7], 4),
        ([1, 0, 1], 1),
        ([3.5, -1.0, 2.25, 0.0, 0.0, 0.0], 6),
    ]:
        for s in (True, False):
            rewards_cases.append({"rewards": [float(r) for r in rewards], "group_size": g,
                                  "scale_by_std": s,
                                  "expected": advantages([float(r) for r in rewards], g, s)})
    loss_cases = []
    for algo in ("grpo", "rlsd", "opsd", "cepo"):
        for how in ("token-mean", "seq-mean-token-mean"):
            loss_cases.append(loss_case(f"{algo}-{how}", algo, how, "current"))
    loss_cases.append(loss_case("rlsd-sampling", "rlsd", "token-mean", "sampling", lam=0.8))
    loss_cases.append(loss_case("rlsd-lambda0", "rlsd", "token-mean", "current", lam=0.0))
    loss_cases.append(loss_case("rlsd-kl-entropy", "rlsd", "token-mean", "current",
                                kl_coef=0.1, entropy_coef=0.01))
    loss_cases.append(loss_case("cepo-seq-kl", "cepo", "seq-mean-token-mean", "current",
                                lam=1.0, kl_coef=0.05, entropy_coef=-0.02))
    # A group whose responses are all correct but rewarded unequally (format
    # reward), so the CEPO fallback changes the update.
    mixed = (1.0, 0.6, 0.9, 1.0, 0.0, 0.0)
    loss_cases.append(loss_case("cepo-fallback-grpo", "cepo", "token-mean", "current",
                                lam=0.7, rewards=mixed))
    loss_cases.append(loss_case("cepo-fallback-rlsd", "cepo", "token-mean", "current",
                                lam=0.7, rewards=mixed, cepo_fallback="rlsd"))
    lambda_cases = []
    for l0, wu, dec in [(0.5, 0, 50), (0.5, 10, 60), (1.0, 3, 0), (0.25, 0, 1), (0.5, 0, 0),
                        (1.0, 0, 100)]:
        lambda_cases.append({"lambda0": l0, "warmup": wu, "decay_steps": dec,
                             "steps": list(range(1, 80, 3)),
                             "expected": [lambda_at(s, l0, wu, dec) for s in range(1, 80, 3)]})
    lr_cases = []
    for lr, wu, sched, total, mr in [(1e-3, 0, "constant", 0, 0.0), (1e-3, 5, "constant", 0, 0.0),
                                     (2e-4, 4, "linear", 40, 0.1), (3e-4, 0, "cosine", 30, 0.0),
                                     (1e-6, 10, "cosine", 100, 0.2)]:
        steps = list(range(1, 120, 7))
        lr_cases.append({"lr": lr, "warmup_steps": wu, "lr_schedule": sched, "total_steps": total,
                         "min_lr_ratio": mr, "steps": steps,
                         "expected": [lr_at(s, lr, wu, sched, total, mr) for s in steps]})
    adamw, train = adamw_case(), train_case()
    # Drawn last, so the cases above keep their random inputs.
    distill = [distill_case("kl-top4-tail", "kl", 4, True),
               distill_case("jsd-top4-tail", "jsd", 4, True),
               distill_case("jsd-top4-renorm", "jsd", 4, False),
               distill_case("kl-full", "kl", 0, False),
               distill_case("jsd-full", "jsd", 0, False)]
    out = {"torch_version": torch.__version__, "advantages": rewards_cases, "loss": loss_cases,
           "lambda": lambda_cases, "lr": lr_cases, "adamw": adamw, "train": train,
           "distill": distill}
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "tests", "fixtures", "rlsd_golden.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
