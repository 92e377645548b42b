"""Accuracy of the Hyft softmax unit against an exact softmax, per format and segment count.

For each fmt in (bf16, fp16, fp32) and S in (1, 4, 8, 16, 32), other parameters at
their defaults, the golden model is measured on
  (a) seeded random vectors: lengths 1..1024 (log-uniform), scales 0.01..100, some with a large offset;
  (b) real attention logits of all-MiniLM-L6-v2 (every head, every layer) on single sentences
      and on longer paragraphs (a subsample of their query rows);
  (c) sentence embeddings of all-MiniLM-L6-v2 with every attention softmax run on the unit:
      cosine similarity to the float32 model's embeddings.
Errors are against float64 softmax of the same (format-rounded) inputs: max |y - ref|, max
|y - ref| / ref over ref >= 2^-10, and max |sum(y) - 1| per vector. Each format also gets a
baseline row, "exact": float64 softmax rounded to the format (round to nearest even), the error
the format alone costs.

    python -m accelkit.flows.hyft_accuracy OUT.json [--vectors N] [--no-minilm]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable

import torch

from accelkit.config.hyft import SoftmaxConfig
from accelkit.golden.hyft import hyft_softmax, patched_softmax, softmax_patch, softmax_ref, torch_softmax

FMTS = ("bf16", "fp16", "fp32")
SEGMENTS = (1, 4, 8, 16, 32)
SCALES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
REL_FLOOR = 2.0**-10
TARGET = {"max_abs": 4e-3, "max_rel": 0.02}  # the default config's targets

SENTENCES = [
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk.",
    "Interest rates rose for the third consecutive quarter, cooling the housing market.",
    "A fox slipped through the hedge and vanished into the frosty field.",
    "The compiler inlines small functions unless the optimisation level is zero.",
    "My sister bakes sourdough bread on Sunday mornings.",
    "Heavy rain is expected across the northern coast tomorrow afternoon.",
    "The violinist played the final movement without looking at the score.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "We missed the last bus and had to walk home in the dark.",
    "The committee will announce the winners of the prize next Thursday.",
    "An FPGA implements logic in lookup tables connected by programmable routing.",
    "The toddler laughed every time the dog chased its own tail.",
    "Scientists discovered a new species of frog in the cloud forest.",
    "Please remember to water the plants while I am away.",
    "The marathon route passes the cathedral and crosses the river twice.",
    "Her grandfather repaired clocks in a tiny shop near the harbour.",
    "Attention weights are computed with a softmax over scaled dot products.",
    "The restaurant closed early because the kitchen ran out of fish.",
    "A sudden gust of wind scattered the papers across the courtyard.",
    "The satellite transmits images of the polar ice caps every six hours.",
    "He apologised for arriving late to the interview.",
    "The price of coffee beans doubled after a poor harvest in Brazil.",
    "Volunteers planted two thousand trees along the motorway verge.",
    "The museum's new wing houses a collection of medieval manuscripts.",
    "Our neighbours are repainting their front door bright yellow.",
    "The software update fixed the battery drain on older phones.",
    "A pod of dolphins followed the ferry for several miles.",
    "The students debated whether homework should be abolished.",
    "Fog delayed the departure of every flight from the island.",
    "The goalkeeper saved a penalty in the final minute of the match.",
    "Fixed-point arithmetic trades dynamic range for cheaper hardware.",
    "She keeps a diary of the birds that visit her garden.",
    "The bridge was closed for repairs after cracks appeared in the deck.",
    "Thousands of fans queued overnight for concert tickets.",
    "The recipe needs three eggs, a cup of sugar and some lemon zest.",
    "The detective noticed that the clock on the wall had stopped.",
    "Wind farms now supply a third of the country's electricity.",
    "The kitten fell asleep in a cardboard box by the radiator.",
    "A leaking pipe flooded the basement of the town hall.",
    "The professor explained entropy using a shuffled deck of cards.",
    "Tourists crowded the narrow streets of the old town.",
    "The startup's chip runs speech recognition on a coin cell battery.",
    "He learned to sail on a small lake in the mountains.",
    "The orchestra's tour was cancelled because of a strike.",
    "Bright auroras were visible as far south as Spain last night.",
    "The farmer harvested the wheat before the storm arrived.",
    "Doctors recommend at least thirty minutes of exercise a day.",
    "The train stopped unexpectedly in the middle of a tunnel.",
    "Our book club is reading a novel set in nineteenth-century Lisbon.",
    "The robot vacuum got stuck under the sofa again.",
    "Archaeologists uncovered a Roman mosaic beneath the car park.",
    "The negotiators reached an agreement shortly before midnight.",
    "A quiet evening with a good book is my idea of a holiday.",
    "Why does the sky turn red at sunset?",
    "Turn left at the bakery, then take the second street on the right.",
    "Prices, not including tax, start at twelve euros per person.",
]


# ---- inputs -----------------------------------------------------------------------------------------------

def random_vectors(n_vectors: int = 10_000, max_len: int = 1024, seed: int = 0) -> list[dict]:
    """Seeded float64 test vectors, grouped in batches padded with -inf to a power-of-two length.

    Each vector: length log-uniform in 1..max_len (1 and max_len always present), N(0, 1) times a
    scale from SCALES, plus, for a quarter of them, an offset uniform in [-100, 100] (exercises the
    exact x - max). Returns [{"x": (rows, width) float64, "length": (rows,), "scale": (rows,)}].
    """
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n_vectors, generator=gen, dtype=torch.float64)
    lengths = torch.exp(u * math.log(max_len + 1)).floor().long().clamp(1, max_len)
    lengths[0], lengths[-1] = 1, max_len
    scales = torch.tensor(SCALES, dtype=torch.float64)[
        torch.randint(len(SCALES), (n_vectors,), generator=gen)]
    offsets = torch.where(torch.rand(n_vectors, generator=gen) < 0.25,
                          (torch.rand(n_vectors, generator=gen, dtype=torch.float64) * 2 - 1) * 100, 0.0)
    width = torch.tensor([1 << (n - 1).bit_length() for n in lengths.tolist()])
    batches = []
    for w in sorted(set(width.tolist())):
        sel = (width == w).nonzero().flatten()
        x = torch.randn(len(sel), w, generator=gen, dtype=torch.float64) * scales[sel, None]
        x = x + offsets[sel, None]
        x[torch.arange(w)[None, :] >= lengths[sel, None]] = -math.inf
        batches.append({"x": x, "length": lengths[sel], "scale": scales[sel]})
    return batches


def capture_attention_logits(tok, model, texts: Iterable[str], row_stride: int = 1) -> list[torch.Tensor]:
    """Every attention softmax input of `model` on each text alone (no padding): float32 (rows, length).

    `row_stride` keeps every row_stride-th query row (long paragraphs give many rows).
    """
    captured: list[torch.Tensor] = []

    def recording(input, dim=None, dtype=None):
        rows = input.detach().movedim(dim, -1)
        rows = rows.reshape(-1, rows.shape[-2], rows.shape[-1])[:, ::row_stride]
        captured.append(rows.reshape(-1, rows.shape[-1]).to(torch.float32).clone())
        return torch_softmax(input, dim, dtype=dtype)

    with torch.no_grad(), softmax_patch(recording):
        for text in texts:
            model(**tok(text, return_tensors="pt"))
    return captured


def paragraphs(sentences: list[str], per: int = 12) -> list[str]:
    """Consecutive sentences joined into paragraphs (100-200 tokens: long attention rows)."""
    return [" ".join(sentences[i:i + per]) for i in range(0, len(sentences) - per + 1, per)]


# ---- measurement ---------------------------------------------------------------------------------------

class ErrorStats:
    """Running max |y - ref|, max relative error over ref >= 2^-10, max |sum(y) - 1|, mean |y - ref|."""

    def __init__(self):
        self.max_abs = self.max_rel = self.max_sum = 0.0
        self.abs_sum = 0.0
        self.elements = self.vectors = 0
        self.worst: dict = {}

    def add(self, y: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor, tags: dict | None = None) -> None:
        y, ref = y.to(torch.float64), ref.to(torch.float64)
        err = torch.where(valid, (y - ref).abs(), 0.0)
        big = valid & (ref >= REL_FLOOR)
        row_abs = err.max(-1).values
        i = int(row_abs.argmax())
        if float(row_abs[i]) > self.max_abs:
            self.max_abs = float(row_abs[i])
            self.worst = {"length": int(valid[i].sum()), **{k: float(v[i]) for k, v in (tags or {}).items()}}
        if bool(big.any()):
            self.max_rel = max(self.max_rel, float((err[big] / ref[big]).max()))
        self.max_sum = max(self.max_sum, float((torch.where(valid, y, 0.0).sum(-1) - 1).abs().max()))
        self.abs_sum += float(err.sum())
        self.elements += int(valid.sum())
        self.vectors += y.shape[0]

    def result(self) -> dict:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "max_sum_dev": self.max_sum,
                "mean_abs": self.abs_sum / max(1, self.elements), "vectors": self.vectors,
                "elements": self.elements, "worst_abs_at": self.worst}


def exact_rounded(fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The baseline unit: float64 softmax rounded to the format."""
    dtype = SoftmaxConfig(fmt=fmt).torch_dtype
    return lambda x: softmax_ref(x).to(dtype)


def _unit(cfg: SoftmaxConfig | str) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(cfg, str):
        return exact_rounded(cfg)
    return lambda x: hyft_softmax(x, cfg)


def accuracy_on_vectors(batches: list[dict], cfg: SoftmaxConfig | str) -> dict:
    """Error statistics of `cfg` (or the "exact" baseline of a format name) on random_vectors() batches."""
    fmt = cfg if isinstance(cfg, str) else cfg.fmt
    dtype = SoftmaxConfig(fmt=fmt).torch_dtype
    unit, stats = _unit(cfg), ErrorStats()
    for b in batches:
        x = b["x"].to(dtype)
        stats.add(unit(x), softmax_ref(x), torch.isfinite(b["x"]), {"scale": b["scale"]})
    return stats.result()


def accuracy_on_logits(logits: list[torch.Tensor], cfg: SoftmaxConfig | str) -> dict:
    """Error statistics on captured attention logit rows (each converted to the format first)."""
    fmt = cfg if isinstance(cfg, str) else cfg.fmt
    dtype = SoftmaxConfig(fmt=fmt).torch_dtype
    unit, stats = _unit(cfg), ErrorStats()
    for rows in logits:
        x = rows.to(dtype)
        stats.add(unit(x), softmax_ref(x), torch.ones_like(rows, dtype=torch.bool))
    return stats.result()


def embedding_cosine(tok, model, cfg: SoftmaxConfig | str, reference: torch.Tensor,
                     sentences: list[str] = SENTENCES) -> dict:
    """Cosine similarity of the sentence embeddings with every softmax on `cfg` to `reference`."""
    from .minilm import embed

    if isinstance(cfg, str):
        fmt_dtype = SoftmaxConfig(fmt=cfg).torch_dtype

        def rounded(input, dim=None, dtype=None):
            return torch_softmax(input.to(torch.float64), dim).to(fmt_dtype).to(dtype or input.dtype)

        ctx = softmax_patch(rounded)
    else:
        ctx = patched_softmax(cfg)
    with ctx:
        emb = embed(tok, model, sentences)
    cos = (emb * reference).sum(-1).clamp(max=1.0)
    return {"mean": float(cos.mean()), "min": float(cos.min()), "sentences": len(sentences)}


def study_configs(base: SoftmaxConfig | None = None) -> list[SoftmaxConfig]:
    base = base or SoftmaxConfig()
    return [base.replace(fmt=f, segments=s) for f in FMTS for s in SEGMENTS]


def accuracy_study(n_vectors: int = 10_000, minilm: bool = True, seed: int = 0,
                   configs: list[SoftmaxConfig] | None = None) -> dict:
    """The whole study as a JSON-serialisable dict: {"rows": [...], "inputs": {...}, "default": {...}}."""
    t0 = time.time()
    configs = configs or study_configs()
    batches = random_vectors(n_vectors, seed=seed)
    inputs: dict = {"random": {"vectors": n_vectors, "seed": seed, "scales": list(SCALES),
                               "lengths": "log-uniform 1..1024", "elements": int(sum(
                                   torch.isfinite(b["x"]).sum() for b in batches))}}
    logits = tok = model = reference = None
    if minilm:
        from .minilm import embed, load_minilm

        tok, model = load_minilm()
        sents = SENTENCES[:24]
        paras = paragraphs(SENTENCES)
        logits = capture_attention_logits(tok, model, sents) + capture_attention_logits(
            tok, model, paras, row_stride=8)
        with torch.no_grad():
            reference = embed(tok, model, SENTENCES)
        lens = [r.shape[-1] for r in logits]
        inputs["attention"] = {"model": "all-MiniLM-L6-v2", "sentences": len(sents), "paragraphs": len(paras),
                               "paragraph_row_stride": 8, "vectors": sum(r.shape[0] for r in logits),
                               "lengths": [min(lens), max(lens)]}
        inputs["embedding"] = {"sentences": len(SENTENCES), "reference": "float32 model, exact softmax"}
    rows = []
    for cfg in [*FMTS, *configs]:
        row: dict = {"fmt": cfg if isinstance(cfg, str) else cfg.fmt,
                     "segments": None if isinstance(cfg, str) else cfg.segments,
                     "unit": "exact" if isinstance(cfg, str) else "hyft",
                     "config": None if isinstance(cfg, str) else cfg.to_dict(),
                     "random": accuracy_on_vectors(batches, cfg)}
        if minilm:
            row["attention"] = accuracy_on_logits(logits, cfg)
            with torch.no_grad():
                row["cosine"] = embedding_cosine(tok, model, cfg, reference)
        rows.append(row)
    default = SoftmaxConfig()
    drow = next(r for r in rows if r["config"] == default.to_dict())
    checks = {src: {k: drow[src][k] <= v for k, v in TARGET.items()}
              for src in ("random", "attention") if src in drow}
    return {"rows": rows, "inputs": inputs, "targets": TARGET,
            "default": {"config": default.to_dict(), "meets_targets": checks},
            "seconds": round(time.time() - t0, 1)}


# ---- output -------------------------------------------------------------------------------------------

def render_table(study: dict) -> str:
    """A Markdown table of the study."""
    has_att = "attention" in study["rows"][0]
    head = ["fmt", "S", "rand abs", "rand rel", "rand |sum-1|"]
    if has_att:
        head += ["attn abs", "attn rel", "attn |sum-1|", "1-cos mean", "1-cos max"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in study["rows"]:
        cells = [r["fmt"], "exact" if r["segments"] is None else str(r["segments"])]
        srcs = ("random", "attention") if has_att else ("random",)
        for src in srcs:
            s = r[src]
            cells += [f"{s['max_abs']:.2e}", f"{s['max_rel']:.2e}", f"{s['max_sum_dev']:.2e}"]
        if has_att:
            cells += [f"{1 - r['cosine']['mean']:.1e}", f"{1 - r['cosine']['min']:.1e}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m accelkit.flows.hyft_accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="JSON file to write")
    p.add_argument("--vectors", type=int, default=10_000, help="random vectors (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-minilm", action="store_true", help="random vectors only")
    args = p.parse_args(argv)
    study = accuracy_study(args.vectors, minilm=not args.no_minilm, seed=args.seed)
    with open(args.out, "w") as f:
        json.dump(study, f, indent=2)
    print(render_table(study))
    print(f"\ninputs: {json.dumps(study['inputs'])}")
    print(f"default config meets targets {study['targets']}: {study['default']['meets_targets']}")
    print(f"{study['seconds']} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
