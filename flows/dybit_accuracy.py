"""DyBit against INT and minifloat formats on all-MiniLM-L6-v2: per-layer weight SQNR and embedding cosine.

Every format gets the same scale granularity (one scale per output channel of
each Linear weight) chosen by the same lowest-MSE search.
"""

from __future__ import annotations

import copy

import torch

from accelkit.golden.dybit import FP4_E2M1, FP8_E4M3, IntFormat, quantise_dybit, quantise_grid, sqnr_db

from .minilm import embed, load_minilm


def _quantisers():
    return {
        "dybit4": lambda w: quantise_dybit(w, 4, axis=0).dequantise(),
        "int4": lambda w: quantise_grid(w, IntFormat(4), axis=0),
        "fp4_e2m1": lambda w: quantise_grid(w, FP4_E2M1, axis=0),
        "dybit8": lambda w: quantise_dybit(w, 8, axis=0).dequantise(),
        "int8": lambda w: quantise_grid(w, IntFormat(8), axis=0),
        "fp8_e4m3": lambda w: quantise_grid(w, FP8_E4M3, axis=0),
    }


def minilm_study(model=None, tok=None) -> dict:
    """{'layers': [{name, shape, kmax4, kmax8, sqnr_db: {fmt: dB}}], 'cosine': {fmt: {mean, min}}}."""
    if model is None:
        tok, model = load_minilm()
    quantisers = _quantisers()
    layers = []
    quantised: dict[str, dict[str, torch.Tensor]] = {f: {} for f in quantisers}  # each weight quantised once
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            w = mod.weight.detach().to(torch.float64)
            d4, d8 = quantise_dybit(w, 4, axis=0), quantise_dybit(w, 8, axis=0)
            for f, q in quantisers.items():
                quantised[f][name] = d4.dequantise() if f == "dybit4" else d8.dequantise() if f == "dybit8" else q(w)
            row = {"name": name, "shape": list(w.shape), "kmax4": d4.fmt.kmax, "kmax8": d8.fmt.kmax,
                   "sqnr_db": {f: sqnr_db(w, quantised[f][name]) for f in quantisers}}
            layers.append(row)
    ref = embed(tok, model)
    cosine = {}
    for f in quantisers:
        m = copy.deepcopy(model)
        with torch.no_grad():
            for name, mod in m.named_modules():
                if isinstance(mod, torch.nn.Linear):
                    mod.weight.copy_(quantised[f][name].to(mod.weight.dtype))
        cos = (embed(tok, m) * ref).sum(-1)
        cosine[f] = {"mean": float(cos.mean()), "min": float(cos.min()), "sentences": len(cos)}
    mean_sqnr = {f: sum(r["sqnr_db"][f] for r in layers) / len(layers) for f in quantisers}
    return {"layers": layers, "mean_sqnr_db": mean_sqnr, "cosine": cosine}


def render_markdown(study: dict) -> str:
    fmts = list(study["mean_sqnr_db"])
    lines = ["| layer | shape | kmax (4b / 8b) | " + " | ".join(fmts) + " |",
             "|---|---|---|" + "---|" * len(fmts)]
    for r in study["layers"]:
        lines.append(f"| {r['name']} | {r['shape'][0]}x{r['shape'][1]} | {r['kmax4']} / {r['kmax8']} | "
                     + " | ".join(f"{r['sqnr_db'][f]:.2f}" for f in fmts) + " |")
    lines.append("| **mean** | | | " + " | ".join(f"**{study['mean_sqnr_db'][f]:.2f}**" for f in fmts) + " |")
    lines += ["", "Sentence-embedding cosine similarity against fp32 (every Linear weight quantised):", "",
              "| format | mean | min | sentences |", "|---|---|---|---|"]
    for f, c in study["cosine"].items():
        lines.append(f"| {f} | {c['mean']:.5f} | {c['min']:.5f} | {c['sentences']} |")
    return "\n".join(lines) + "\n"
