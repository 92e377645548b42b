"""Mixed-precision DyBit for all-MiniLM-L6-v2: each Linear layer's operand widths, chosen for the array's cycles.

Every Linear layer of the encoder (36: per block the query, key, value and output projections and the two
feed-forward layers; the pooler is not used by the sentence embedding) runs as a matmul on the DyBit array:
A = the layer's input activations (tokens x in_features), B = its weight transposed (in_features x
out_features). Each operand is DyBit-8 or DyBit-4, so a layer has one of four modes (activation bits, weight
bits): (8, 8), (8, 4) ("W4A8"), (4, 8), (4, 4). A narrower mode computes more MACs per cycle on the scalable
array (issue 12: 4x for 4 x 4, 2x for W4A8), so it costs fewer cycles and some accuracy.

Quantisation, as DyBit intends it (the quantiser picks each tensor's format from its distribution):

- weights: DyBit-n with one scale per output channel and kmax per tensor, both by lowest MSE
  (`golden.dybit.quantise_dybit`, axis 0), once per layer and width;
- activations: DyBit-n, dynamic: per tensor (the layer's input on this batch), kmax and scale by lowest MSE.
  The search looks at a fixed sample of the tensor (`ACT_SAMPLE` values, evenly strided) and then encodes
  the whole tensor: the full search over every value costs seconds per tensor on this machine.

`search` picks the modes: the cycles of each layer in each mode come from a cycle model (the array's); the
accuracy is the sentence-embedding cosine against fp32 over the sentences (`flows/minilm.py`, 52), whose mean
must stay at least `budget` (0.99). First each layer alone is lowered to each narrower mode (the other layers
in fp32) and its cosine drop measured; the (layer, mode) moves are ranked by drop per cycle saved; the longest
prefix of that ranking whose combined model keeps the mean cosine within the budget is found by bisection on
full evaluations (every layer quantised); then each remaining move is tried once in rank order, but only
while it can plausibly fit: a move whose drop alone exceeds `TAIL_SLACK` times the slack left (mean cosine
minus the budget) is skipped, and at most `TAIL_TRIES` full evaluations are spent there. (Drops add roughly:
on MiniLM the bisection leaves a slack under 1e-3, and the moves past it cost 1e-3 to 0.2 alone.)

Each evaluation quantises the 36 layer inputs again, and the dynamic quantiser's search is most of its cost.
A layer's input is the same tensor whenever every layer before it has the same mode, so `ActivationCache`
keeps the codes by (width, digest of the tensor's bytes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

import torch

from accelkit.golden.dybit import DyBitFormat, Quantised, _scale_search, quantise_dybit

MODES = ((8, 8), (8, 4), (4, 8), (4, 4))  # (activation bits, weight bits), widest first
ACT_SAMPLE = 16384  # activation values the dynamic quantiser's search looks at
TAIL_SLACK = 2.0  # the tail tries a move only if its drop alone is at most this times the slack left
TAIL_TRIES = 24  # full evaluations the tail may spend

CyclesModel = Callable[[int, int, int, int, int], int]  # (m, k, n, a_bits, w_bits) -> cycles


def quantise_activation(x: torch.Tensor, n: int) -> Quantised:
    """DyBit-n codes of a whole activation tensor, with kmax and one scale chosen by lowest MSE on a strided
    sample of it (ties to the smaller kmax and the larger scale, as `quantise_dybit`)."""
    flat = x.detach().reshape(-1).to(torch.float64)
    step = max(1, flat.numel() // ACT_SAMPLE)
    sample = flat[::step]
    best = None
    for k in range(1, n):
        fmt = DyBitFormat(n, k)
        scale, err = _scale_search(sample, fmt, None)
        total = float(err.sum())
        if best is None or total < best[0]:
            best = (total, fmt, scale)
    _, fmt, scale = best
    return Quantised(codes=fmt.encode(x.detach().to(torch.float64) / scale), scale=scale, fmt=fmt)


class ActivationCache:
    """`quantise_activation` results by (width, digest of the tensor's bytes, its shape), the `size` most
    recently used kept."""

    def __init__(self, size: int = 128):
        self.size, self.entries, self.hits, self.misses = size, {}, 0, 0

    def __call__(self, x: torch.Tensor, n: int) -> Quantised:
        import hashlib

        t = x.detach().contiguous()
        key = (n, tuple(t.shape), str(t.dtype), hashlib.blake2b(t.numpy().tobytes(), digest_size=16).digest())
        got = self.entries.pop(key, None)
        if got is None:
            self.misses += 1
            got = quantise_activation(t, n)
            if len(self.entries) >= self.size:
                self.entries.pop(next(iter(self.entries)))
        else:
            self.hits += 1
        self.entries[key] = got  # most recent last
        return got


@dataclasses.dataclass(frozen=True)
class LinearShape:
    name: str
    k: int  # in_features
    n: int  # out_features
    m: int  # rows of A: the real (unpadded) tokens of the sentences


def encoder_linears(model: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    """The Linear layers the sentence embedding uses (every one but the pooler's), in model order."""
    return [(name, mod) for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and not name.startswith("pooler")]


class MixedPrecision:
    """Context manager: every Linear in `modes` ({name: (a_bits, w_bits)}) computes with DyBit-quantised
    weights and activations (fake-quantised in float64: the products of the codes, scaled), the others in
    fp32. `matmul` (optional) replaces the integer matmul: (a_codes, a_fmt, b_codes, b_fmt) -> integers in
    units of 2^-(fa+fb), e.g. the RTL's; it is called with the codes of A (tokens x in) and B (in x out)."""

    def __init__(self, model: torch.nn.Module, modes: dict, weights: dict | None = None, matmul=None,
                 activations: ActivationCache | None = None):
        self.model, self.modes, self.matmul = model, dict(modes), matmul
        self.quantise_activation = activations or quantise_activation
        self.weights = weights if weights is not None else {}
        self.jobs: list[dict] = []  # what ran: per layer call, the formats and shapes (for the cycles)
        self._saved = {}

    def weight(self, name: str, mod: torch.nn.Linear, bits: int) -> Quantised:
        key = (name, bits)
        if key not in self.weights:
            self.weights[key] = quantise_dybit(mod.weight.detach().to(torch.float64), bits, axis=0)
        return self.weights[key]

    def _forward(self, name: str, mod: torch.nn.Linear):
        a_bits, w_bits = self.modes[name]

        def forward(x: torch.Tensor) -> torch.Tensor:
            qw = self.weight(name, mod, w_bits)
            x2 = x.reshape(-1, x.shape[-1])
            qa = self.quantise_activation(x2, a_bits)
            a_codes, b_codes = qa.codes, qw.codes.T
            if self.matmul is not None:
                acc = self.matmul(a_codes, qa.fmt, b_codes, qw.fmt).to(torch.float64)
            else:
                acc = qa.fmt.to_int(a_codes).to(torch.float64) @ qw.fmt.to_int(b_codes).to(torch.float64)
            unit = 2.0 ** -(qa.fmt.f + qw.fmt.f)
            y = acc * unit * qa.scale * qw.scale.reshape(1, -1)
            if mod.bias is not None:
                y = y + mod.bias.detach().to(torch.float64)
            self.jobs.append({"layer": name, "m": x2.shape[0], "k": x2.shape[1], "n": qw.codes.shape[0],
                              "a_format": f"dybit{a_bits}k{qa.fmt.kmax}", "w_format": f"dybit{w_bits}k{qw.fmt.kmax}"})
            return y.to(x.dtype).reshape(*x.shape[:-1], -1)

        return forward

    def __enter__(self):
        for name, mod in encoder_linears(self.model):
            if name in self.modes:
                self._saved[name] = mod.forward
                mod.forward = self._forward(name, mod)
        return self

    def __exit__(self, *exc):
        for name, mod in encoder_linears(self.model):
            if name in self._saved:
                mod.forward = self._saved.pop(name)
        return False


def token_rows(tok, sentences: Iterable[str]) -> int:
    """Real tokens of the sentences, [CLS] and [SEP] included: the rows of A when each sentence runs alone."""
    return sum(len(ids) for ids in tok(list(sentences), truncation=True)["input_ids"])


def embed_cosine(tok, model, ref: torch.Tensor, sentences) -> tuple[float, float]:
    from .minilm import embed

    cos = (embed(tok, model, sentences) * ref).sum(-1)
    return float(cos.mean()), float(cos.min())


def layer_cycles(shapes: list[LinearShape], cycles: CyclesModel, modes: dict) -> int:
    return sum(cycles(s.m, s.k, s.n, *modes[s.name]) for s in shapes)


def choose_modes(shapes: list[LinearShape], evaluate, cycles: CyclesModel, budget: float = 0.99,
                 log=None, tail_slack: float = TAIL_SLACK, tail_tries: int = TAIL_TRIES) -> dict:
    """The search of the module docstring on any model: `evaluate(modes)` gives (mean, min) cosine with the
    layers in `modes` ({name: (a_bits, w_bits)}) quantised and the others in fp32."""
    say = log or (lambda s: None)
    widest = {s.name: MODES[0] for s in shapes}
    base = evaluate(widest)
    say(f"all layers {MODES[0]}: cosine mean {base[0]:.5f}, min {base[1]:.5f}")
    if base[0] < budget:
        raise ValueError(f"budget={budget} is invalid: every layer at {MODES[0]} already gives a mean cosine of "
                         f"{base[0]:.5f}")
    moves = []
    for s in shapes:
        full = cycles(s.m, s.k, s.n, *MODES[0])
        for mode in MODES[1:]:
            alone = evaluate({s.name: mode})[0]
            moves.append({"layer": s.name, "mode": mode, "saved": full - cycles(s.m, s.k, s.n, *mode),
                          "drop": max(0.0, 1.0 - alone)})
        say(f"{s.name}: alone at " + ", ".join(f"{mv['mode']} cosine {1 - mv['drop']:.5f}"
                                               for mv in moves[-len(MODES) + 1:]))
    moves.sort(key=lambda mv: (mv["drop"] / max(mv["saved"], 1), -mv["saved"], mv["layer"]))

    def apply(prefix: Iterable[dict]) -> dict:
        modes = dict(widest)
        for mv in prefix:  # a move lowers its layer to its mode if that is cheaper than the layer's mode so far
            if _cost(shapes, cycles, mv["layer"], mv["mode"]) < _cost(shapes, cycles, mv["layer"], modes[mv["layer"]]):
                modes[mv["layer"]] = mv["mode"]
        return modes

    lo, hi = 0, len(moves)  # the longest prefix within the budget (bisection: a longer one is taken as no better)
    result = base
    while lo < hi:
        mid = (lo + hi + 1) // 2
        got = evaluate(apply(moves[:mid]))
        say(f"first {mid} moves: cosine mean {got[0]:.5f}")
        if got[0] >= budget:
            lo, result = mid, got
        else:
            hi = mid - 1
    chosen = list(moves[:lo])
    tries = 0
    for mv in moves[lo:]:  # then each remaining move once, in rank order, while it can plausibly fit
        trial = apply([*chosen, mv])
        if trial == apply(chosen) or mv["drop"] > tail_slack * (result[0] - budget):
            continue
        if tries == tail_tries:
            say(f"tail: stopped after {tail_tries} tries")
            break
        tries += 1
        got = evaluate(trial)
        if got[0] >= budget:
            chosen.append(mv)
            result = got
            say(f"+ {mv['layer']} {mv['mode']}: cosine mean {got[0]:.5f}")
    modes = apply(chosen)
    return {"modes": modes, "cosine": {"mean": result[0], "min": result[1]},
            "cycles": layer_cycles(shapes, cycles, modes), "cycles_widest": layer_cycles(shapes, cycles, widest),
            "baseline_cosine": {"mean": base[0], "min": base[1]}, "budget": budget,
            "layers": [dataclasses.asdict(s) for s in shapes]}


def search(tok, model, cycles: CyclesModel, budget: float = 0.99, sentences=None, log=None) -> dict:
    """`choose_modes` on all-MiniLM-L6-v2's encoder Linears and the sentences (`flows/minilm.py`)."""
    from .minilm import SENTENCES, embed

    sentences = list(sentences or SENTENCES)
    m = token_rows(tok, sentences)
    shapes = [LinearShape(name, mod.in_features, mod.out_features, m) for name, mod in encoder_linears(model)]
    ref = embed(tok, model, sentences)
    weights: dict = {}
    activations = ActivationCache()
    evaluations = 0

    def evaluate(modes: dict) -> tuple[float, float]:
        nonlocal evaluations
        evaluations += 1
        with MixedPrecision(model, modes, weights, activations=activations):
            return embed_cosine(tok, model, ref, sentences)

    out = choose_modes(shapes, evaluate, cycles, budget, log)
    out["cosine"]["sentences"] = len(sentences)
    out.update(tokens=m, evaluations=evaluations,
               activation_cache={"hits": activations.hits, "misses": activations.misses})
    return out


def _cost(shapes: list[LinearShape], cycles: CyclesModel, name: str, mode: tuple[int, int]) -> int:
    s = next(s for s in shapes if s.name == name)
    return cycles(s.m, s.k, s.n, *mode)


def array_cycles(rows: int = 4, cols: int = 4) -> CyclesModel:
    """The scalable array's cycle model (golden/dybit_dyn_cycles.py, exact against its RTL) for one layer's
    matmul as one job: a header beat, then tiles of ceil(K / P) beats, P = (8 / a_bits) x (8 / w_bits)."""
    from accelkit.config.dybit_dyn import DyBitDynConfig
    from accelkit.golden.dybit_dyn_cycles import JobShape, run_cycles

    cfg = DyBitDynConfig(rows=rows, cols=cols)

    def cycles(m: int, k: int, n: int, a_bits: int, w_bits: int) -> int:
        return run_cycles(cfg, [JobShape(m, k, n, a_bits, w_bits)])

    return cycles


def scaled_cycles(rows: int = 4, cols: int = 4, depth: int = 4) -> CyclesModel:
    """A closed form of the same shape as `array_cycles` (for tests without the array's config): P MACs per PE
    per cycle along K, a header beat, tiles of ceil(K / P) beats, the R-row drain overlapped."""

    def cycles(m: int, k: int, n: int, a_bits: int, w_bits: int) -> int:
        p = (8 // a_bits) * (8 // w_bits)
        tiles = math.ceil(m / rows) * math.ceil(n / cols)
        beats = math.ceil(k / p)
        return 1 + (tiles - 1) * max(beats, rows + 1) + beats + depth + rows

    return cycles


def main(argv=None) -> int:
    import argparse
    import json
    from pathlib import Path

    from .minilm import load_minilm

    p = argparse.ArgumentParser(prog="python -m accelkit.flows.minilm_mixed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", default="minilm_mixed", help="output folder (default minilm_mixed/)")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--budget", type=float, default=0.99, help="the least mean embedding cosine (default 0.99)")
    args = p.parse_args(argv)
    # small tensors many times over: torch's threads only fight each other on a 2-core machine (10x slower
    # under load, measured)
    torch.set_num_threads(1)
    tok, model = load_minilm()
    res = search(tok, model, array_cycles(args.rows, args.cols), args.budget, log=lambda s: print(s, flush=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res["modes"] = {k: list(v) for k, v in res["modes"].items()}
    (out / "minilm_mixed.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"cycles {res['cycles']:,} against {res['cycles_widest']:,} all 8 x 8 "
          f"({res['cycles_widest'] / res['cycles']:.2f}x); cosine mean {res['cosine']['mean']:.5f}, "
          f"min {res['cosine']['min']:.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
