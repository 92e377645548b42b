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
the format alone costs, and a "float" row: the conventional floating-point softmax (arch="float",
docs/float-baseline.md, golden/float_softmax.py) on the same inputs.

    python -m accelkit.flows.hyft_accuracy OUT.json [--vectors N] [--no-minilm]

The backward (training) mode, `backward_accuracy_study` (``--backward``), is measured separately, against
float64 autograd (torch.autograd.grad of softmax in float64 at the float64 logits) per vector:
  (a) the same random logit vectors, each with a random upstream gradient (N(0, 1) times a per-vector
      scale 10^U(-2, 2));
  (b) real attention rows of all-MiniLM-L6-v2 with real gradients: an in-batch contrastive loss
      (sentence-transformers' MultipleNegativesRankingLoss) on sentence pairs, backpropagated in float32;
      every softmax's logits and incoming gradient are captured;
  (c) the whole model's parameter gradient with every softmax backward on the unit: cosine to float32's.
y reaches the unit rounded from float64 ("float64") or from the forward unit ("hyft", per S). Error: per
vector ||dx - ref|| / ||ref|| (max, p99, median). Baselines per format on the same inputs: "exact" (the
unit's formula, y * (dy - sum(y dy) / sum(y)), in float64, rounded to the format) and "torch" (torch's own
softmax backward in the format's dtype). Gradients enter scaled by LOSS_SCALE (2^10, exact), as mixed-
precision training does (fp16 would otherwise flush a quarter of them).

    python -m accelkit.flows.hyft_accuracy OUT.json --backward [--vectors N] [--no-minilm]
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
from accelkit.golden.float_softmax import float_softmax
from accelkit.golden.hyft import (
    hyft_softmax,
    hyft_softmax_backward,
    patched_softmax,
    patched_softmax_training,
    softmax_patch,
    softmax_ref,
    torch_softmax,
)

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
    if cfg.arch == "float":
        return lambda x: float_softmax(x, cfg)
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
    elif cfg.arch == "float":
        ctx = softmax_patch(lambda input, dim=None, dtype=None: float_softmax(
            input.movedim(dim, -1).to(cfg.torch_dtype), cfg).to(dtype or input.dtype).movedim(-1, dim))
    else:
        ctx = patched_softmax(cfg)
    with ctx:
        emb = embed(tok, model, sentences)
    cos = (emb * reference).sum(-1).clamp(max=1.0)
    return {"mean": float(cos.mean()), "min": float(cos.min()), "sentences": len(sentences)}


def study_configs(base: SoftmaxConfig | None = None) -> list[SoftmaxConfig]:
    """Hyft at every S, then the conventional float baseline (arch="float", docs/float-baseline.md), per format."""
    base = base or SoftmaxConfig()
    return [base.replace(fmt=f, segments=s) for f in FMTS for s in SEGMENTS] + \
        [SoftmaxConfig(fmt=f, arch="float") for f in FMTS]


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
        unit = "exact" if isinstance(cfg, str) else cfg.arch
        row: dict = {"fmt": cfg if isinstance(cfg, str) else cfg.fmt,
                     "segments": cfg.segments if unit == "hyft" else None,
                     "unit": unit,
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


# ---- backward (training) mode -------------------------------------------------------------------------

BWD_SEGMENTS = (1, 8, 32)
BWD_GRID_BITS = (20, 24, 28)  # sum_frac_bits: the backward's block grid (the forward's sum too)
LOSS_SCALE = 2.0**10


def backward_vectors(batches: list[dict], seed: int = 0) -> list[dict]:
    """random_vectors() batches with an upstream gradient "dy": N(0, 1) * 10^U(-2, 2) per vector, 0 at padding."""
    gen = torch.Generator().manual_seed(seed + 1)
    out = []
    for b in batches:
        x = b["x"]
        scale = 10 ** (torch.rand(x.shape[0], 1, generator=gen, dtype=torch.float64) * 4 - 2)
        dy = torch.randn(x.shape, generator=gen, dtype=torch.float64) * scale
        out.append({**b, "dy": torch.where(torch.isfinite(x), dy, 0.0)})
    return out


def softmax_grad_ref(x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """float64 autograd: the gradient of softmax(x) (last dimension, x in float64) against dy."""
    x = x.detach().to(torch.float64).requires_grad_(True)
    (dx,) = torch.autograd.grad(torch_softmax(x, -1), x, dy.to(torch.float64))
    return dx


class RowErrors:
    """Per vector: ||dx - ref|| / ||ref|| over the valid elements (vectors with ref == 0 counted apart), and
    max |dx - ref| / max |dy|, the error on the gradient's own scale (saturated vectors, whose dx is tiny,
    make the first one large for every format, exact rounding included)."""

    def __init__(self):
        self.rel: list[torch.Tensor] = []
        self.scaled: list[torch.Tensor] = []
        self.zero_rows = self.zero_rows_nonzero = 0

    def add(self, dx: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor, dy: torch.Tensor) -> None:
        dx, ref = dx.to(torch.float64), ref.to(torch.float64)
        diff = torch.where(valid, dx - ref, 0.0)
        err = diff.norm(dim=-1)
        norm = torch.where(valid, ref, 0.0).norm(dim=-1)
        ok = norm > 0
        self.rel.append(err[ok] / norm[ok])
        dmax = torch.where(valid, dy.to(torch.float64).abs(), 0.0).amax(-1)
        self.scaled.append(diff.abs().amax(-1)[dmax > 0] / dmax[dmax > 0])
        self.zero_rows += int((~ok).sum())
        self.zero_rows_nonzero += int((err[~ok] > 0).sum())

    def result(self) -> dict:
        rel, scaled = (torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for v in (self.rel, self.scaled))
        n = len(rel)
        rel = rel if n else torch.zeros(1, dtype=torch.float64)
        scaled = scaled if len(scaled) else torch.zeros(1, dtype=torch.float64)
        return {"max": float(rel.max()), "p99": float(rel.quantile(0.99)), "median": float(rel.median()),
                "scaled_max": float(scaled.max()), "scaled_p99": float(scaled.quantile(0.99)),
                "vectors": n, "zero_ref_vectors": self.zero_rows,
                "zero_ref_vectors_nonzero": self.zero_rows_nonzero}


def _bwd_unit(kind: str, cfg: SoftmaxConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    dt = cfg.torch_dtype
    if kind == "hyft":
        return lambda y, dy: hyft_softmax_backward(y, dy, cfg)
    if kind == "torch":
        return lambda y, dy: torch._softmax_backward_data(dy, y, -1, dt)

    def exact(y, dy):  # the unit's formula in float64, rounded
        y, dy = y.to(torch.float64), dy.to(torch.float64)
        return (y * (dy - (y * dy).sum(-1, keepdim=True) / y.sum(-1, keepdim=True))).to(dt)

    return exact


def with_reference(rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[tuple]:
    """(x, dy, valid) float64 batches -> (x, dy, valid, float64 autograd dx, float64 softmax y)."""
    return [(x, dy, valid, softmax_grad_ref(x, dy), softmax_ref(x)) for x, dy, valid in rows]


def backward_errors(rows: list[tuple], cfg: SoftmaxConfig, kind: str = "hyft", y_source: str = "float64") -> dict:
    """Per-vector errors of a backward unit against float64 autograd on `with_reference` batches.

    kind: "hyft" (the golden model), "exact" or "torch" (baselines); y_source: "float64" (softmax in
    float64, rounded to the format) or "hyft" (the forward unit of cfg on the format-rounded x).
    """
    dt, unit, stats = cfg.torch_dtype, _bwd_unit(kind, cfg), RowErrors()
    for x, dy, valid, ref, y64 in rows:
        y = y64.to(dt) if y_source == "float64" else hyft_softmax(x.to(dt), cfg)
        stats.add(unit(y, dy.to(dt)), ref, valid, dy)
    return stats.result()


def _contrastive_loss(tok, model, pairs: list[tuple[str, str]]) -> torch.Tensor:
    """sentence-transformers' MultipleNegativesRankingLoss (scale 20) on mean-pooled, normalised embeddings."""
    def embed_grad(texts):
        batch = tok(list(texts), padding=True, return_tensors="pt")
        out = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
        return torch.nn.functional.normalize((out * mask).sum(1) / mask.sum(1), dim=-1)

    a, b = embed_grad([p[0] for p in pairs]), embed_grad([p[1] for p in pairs])
    return torch.nn.functional.cross_entropy(a @ b.T * 20.0, torch.arange(len(pairs)))


def minilm_gradients(tok, model, pairs: list[tuple[str, str]], scale: float = LOSS_SCALE):
    """float32 backward of the contrastive loss (times `scale`): (rows, parameter gradient).

    rows: [(logits, incoming gradient, valid)] float64, one (rows, length) batch per softmax call.
    """
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []

    class Capture(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, dim):
            y = torch_softmax(x, dim)
            ctx.save_for_backward(x, y)
            ctx.dim = dim
            return y

        @staticmethod
        def backward(ctx, grad):
            x, y = ctx.saved_tensors
            def rows_of(t):
                return t.detach().movedim(ctx.dim, -1).reshape(-1, t.shape[ctx.dim]).to(torch.float64)

            captured.append((rows_of(x), rows_of(grad)))
            return torch._softmax_backward_data(grad, y, ctx.dim, y.dtype), None

    model.zero_grad()
    with softmax_patch(lambda input, dim=None, dtype=None: Capture.apply(input, dim)):
        (_contrastive_loss(tok, model, pairs) * scale).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    rows = [(x, g, torch.ones_like(x, dtype=torch.bool)) for x, g in captured]
    return rows, grad


def minilm_gradient_cosine(tok, model, pairs, cfg: SoftmaxConfig, reference: torch.Tensor,
                           hyft_forward: bool = False, scale: float = LOSS_SCALE) -> float:
    """Cosine of the model's parameter gradient, every softmax backward on the unit, to `reference`."""
    model.zero_grad()
    with patched_softmax_training(cfg, hyft_forward=hyft_forward):
        (_contrastive_loss(tok, model, pairs) * scale).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad()
    return float(torch.nn.functional.cosine_similarity(grad.double(), reference.double(), dim=0))


def sentence_pairs(sentences: list[str] = SENTENCES, n: int = 24) -> list[tuple[str, str]]:
    return [(sentences[2 * i], sentences[2 * i + 1]) for i in range(min(n, len(sentences) // 2))]


def backward_accuracy_study(n_vectors: int = 2000, minilm: bool = True, seed: int = 0,
                            segments: tuple[int, ...] = BWD_SEGMENTS,
                            grid_bits: tuple[int, ...] = BWD_GRID_BITS) -> dict:
    """The backward mode's accuracy as a JSON-serialisable dict: {"rows": [...], "grid": [...], "inputs": {...}}.

    rows: per fmt, the baselines ("exact", "torch", y from float64), the unit with y from float64, and the
    unit with y from the forward unit for each S; grid: bf16, y from float64, per sum_frac_bits.
    """
    t0 = time.time()
    batches = backward_vectors(random_vectors(n_vectors, seed=seed), seed=seed)
    rand_rows = with_reference([(b["x"], b["dy"], torch.isfinite(b["x"])) for b in batches])
    inputs: dict = {"random": {"vectors": n_vectors, "seed": seed, "dy": "N(0,1) * 10^U(-2,2)"}}
    att_rows = pairs = tok = model = ref_grad = None
    if minilm:
        from .minilm import load_minilm

        tok, model = load_minilm()
        pairs = sentence_pairs()
        att_rows, ref_grad = minilm_gradients(tok, model, pairs)
        att_rows = with_reference(att_rows)
        inputs["attention"] = {"model": "all-MiniLM-L6-v2", "loss": "in-batch contrastive (MNRL, scale 20)",
                               "pairs": len(pairs), "vectors": sum(int(r[0].shape[0]) for r in att_rows),
                               "loss_scale": LOSS_SCALE,
                               "reference": "float64 autograd per vector; float32 model for the cosine"}

    def measure(cfg, kind, y_source, hyft_forward=None):
        row: dict = {"fmt": cfg.fmt, "segments": cfg.segments if y_source == "hyft" else None,
                     "sum_frac_bits": cfg.sum_frac_bits, "unit": kind, "y": y_source,
                     "random": backward_errors(rand_rows, cfg, kind, y_source)}
        if minilm:
            row["attention"] = backward_errors(att_rows, cfg, kind, y_source)
            if kind == "hyft":
                row["grad_cosine"] = minilm_gradient_cosine(tok, model, pairs, cfg, ref_grad,
                                                            hyft_forward=hyft_forward)
        return row

    rows, grid = [], []
    for fmt in FMTS:
        base = SoftmaxConfig(fmt=fmt)
        rows += [measure(base, "exact", "float64"), measure(base, "torch", "float64"),
                 measure(base, "hyft", "float64", hyft_forward=False)]
        rows += [measure(base.replace(segments=S), "hyft", "hyft", hyft_forward=True) for S in segments]
    for B in grid_bits:
        grid.append(measure(SoftmaxConfig(fmt="bf16", sum_frac_bits=B), "hyft", "float64", hyft_forward=False))
    return {"rows": rows, "grid": grid, "inputs": inputs, "seconds": round(time.time() - t0, 1)}


def render_backward_table(study: dict) -> str:
    """A Markdown table of the backward study: per-vector ||dx - ref|| / ||ref|| (max / p99 / median) and
    max |dx - ref| / max |dy| (max), then 1 - the cosine of MiniLM's parameter gradient to float32's."""
    has_att = "attention" in study["rows"][0]
    head = ["fmt", "y from", "S", "B", "unit", "rand max", "rand p99", "rand med", "rand scaled max"]
    if has_att:
        head += ["attn max", "attn p99", "attn med", "attn scaled max", "1 - grad cos"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in study["rows"] + study["grid"]:
        cells = [r["fmt"], r["y"], "-" if r["segments"] is None else str(r["segments"]), str(r["sum_frac_bits"]),
                 r["unit"]]
        for src in ("random", "attention") if has_att else ("random",):
            cells += [f"{r[src][k]:.2e}" for k in ("max", "p99", "median", "scaled_max")]
        if has_att:
            cells.append(f"{1 - r['grad_cosine']:.1e}" if "grad_cosine" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- output -------------------------------------------------------------------------------------------

def render_table(study: dict) -> str:
    """A Markdown table of the study."""
    has_att = "attention" in study["rows"][0]
    head = ["fmt", "S", "rand abs", "rand rel", "rand |sum-1|"]
    if has_att:
        head += ["attn abs", "attn rel", "attn |sum-1|", "1-cos mean", "1-cos max"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in study["rows"]:
        cells = [r["fmt"], r.get("unit", "exact") if r["segments"] is None else str(r["segments"])]
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
    p.add_argument("--backward", action="store_true", help="the backward (training) mode's study instead")
    args = p.parse_args(argv)
    if args.backward:
        study = backward_accuracy_study(args.vectors, minilm=not args.no_minilm, seed=args.seed)
        with open(args.out, "w") as f:
            json.dump(study, f, indent=2)
        print(render_backward_table(study))
        print(f"\ninputs: {json.dumps(study['inputs'])}")
        print(f"{study['seconds']} s; written to {args.out}")
        return 0
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
