"""The Hyft softmax unit, bit-exact (docs/specs/hyft.md): the definition the RTL implements.

Everything below is integer arithmetic on int64 tensors, vectorised over the
elements; floats appear only as bit patterns. Notation: F = frac_bits,
I = int_bits, S = segments, b = log2(S), W = table_bits, B = sum_frac_bits,
K = log2e_bits - 1, M = the format's stored mantissa bits, bias = its exponent
bias. `>>` is an arithmetic shift (floor), `ceil(a / 2^z)` is `(a + 2^z - 1) >> z`.
Widths are `SoftmaxConfig` properties; the tables are `exp2_table`, `log2_table`
and `log2e_constant` of `accelkit.config.hyft` (the generator calls the same functions).

Decode (`decode_float`)
    Bits -> sign s, biased exponent e, stored fraction f. e == all ones: inf
    (f == 0) or NaN. e == 0: zero, and subnormals are read as zero (sign kept
    only for the max compare, where -0 == +0). Otherwise the mantissa is
    m = 2^M + f (M+1 bits) and the unbiased exponent E = e - bias; the value is
    (-1)^s * m * 2^(E - M).

Special values (per vector, decided before any arithmetic)
    Any NaN or +inf in the vector: every output is NaN (the format's canonical
    quiet NaN, `FloatFormat.nan_bits`). Every element -inf: every output NaN.
    Otherwise -inf elements are "dead": p = 0 and y = +0. N = 1 needs no special
    case: the arithmetic below gives exactly 1.0 (see step 7).

Step 1, max
    The largest element compared as floats: key = magnitude bits (e, f), negated
    when s = 1; zeros and subnormals all have key 0. mx is any element with the
    largest key (they are equal as values).

Step 2, d = x - mx, exactly, rounded toward -inf at 2^-F, saturated at -2^I
    D = -min(ceil((mx - x) * 2^F), 2^(I+F)), an integer (d = D * 2^-F). This is
    the exact floor of the exact difference; the RTL computes it with an
    alignment shifter and one adder (`fixed_difference`):
      a. x == mx as values (same bits after decode; +0 == -0): D = 0.
      b. Ev = max(Ex, Em) over the non-zero operands. If Ev >= H = I + M + 2
         (`align_exp_limit`): D = -2^(I+F). (When x != mx and one of them has
         magnitude >= 2^H, they differ by at least 2^(H-M-1) = 2^(I+1).)
      c. Grid: g = min(Ev - M, -F). Each operand o with mantissa mo and
         exponent Eo is placed on the grid: k = (Eo - M) - g. k >= 0
         (k <= I + F + 1 after b): v = mo << k, sticky 0. k < 0: v = mo >> min(-k, M+2), sticky = any
         bit shifted out. In half units: V = 2v + sticky. (The operand with the
         larger exponent is always exact on the grid, so at most one sticky is
         set, and V then stands in for any value strictly between two grid
         points, which is all the ceil below can see.) Zero operands give V = 0.
      d. A2 = (+/-)Vm - (+/-)Vx, signs from the operands: 0 <= A2 < 2^(M+I+F+4)
         (`align_bits`).
      e. C = ceil(A2 / 2^z), z = min(1 - F - g, M + 3); D = -min(C, 2^(I+F)).
    -inf elements (dead) are not computed.

Step 3, t = d * log2(e), rounded toward -inf
    L = log2e_constant(K) = round(log2(e) * 2^K) (log2e_bits wide, 1 integer
    bit). T = (D * L) >> K. An element with T < -2^(I+F) is dead from here on:
    it adds nothing to the sum and its output is +0. (A saturated D always
    gives a dead element.)

Step 4, q and r; the 2^r table (`exp2_fixed`)
    q = T >> F (so -2^I <= q <= 0 for live elements), r = T & (2^F - 1).
    j = r >> (F - b) (segment), w = r & (2^(F-b) - 1) (weight).
    E = exp2_table(S, W): E[j] = round(2^(j/S) * 2^W), j = 0..S, so E[0] = 2^W,
    E[S] = 2^(W+1): chords through the segment endpoints (S = 1: 2^r ~ 1 + r,
    Mitchell). P = E[j] + (((E[j+1] - E[j]) * w) >> (F - b)), a mantissa with
    W fraction bits, 2^W <= P < 2^(W+1). p = P * 2^(q - W).

Step 5, exact fixed-point sum
    Each live p on the sum's grid 2^-B, truncated: s = q - W + B; s >= 0:
    P << s; s < 0: P >> min(-s, W + 2). Sum = the exact integer sum over the
    vector's live elements (dead ones add 0), sum_bits = clog2(max_len) + 1 + B
    bits unsigned (each p < 2). The max element has T = 0, P = 2^W, so Sum >= 2^B.

Step 6, log2(Sum) (`log2_fixed`)
    k = index of the leading one of Sum (k >= B). Integer part k - B. The F
    bits below the leading one, zero-padded if k < F: rs = (Sum >> (k - F)) or
    (Sum << (F - k)), minus 2^F. Then the same interpolation as step 4 with
    G = log2_table(S, F): G[j] = round(log2(1 + j/S) * 2^F) (G[0] = 0,
    G[S] = 2^F; S = 1: log2(1+r) ~ r). lg = G[j] + (((G[j+1] - G[j]) * w) >> (F - b)).
    Lsum = (k - B) * 2^F + lg + c, with F fraction bits, Lsum >= 0, where the
    centring bias c = `log2_bias` (`log2_centring_bias(S, F)`, 0 if centring is
    off) is added only when Sum is not a power of two (some bit below the
    leading one is set). Both chord tables push y up; c, half the sum of the two
    tables' worst errors in log2 units, centres the error band. A power-of-two
    Sum (the max alone, or 2, 4, ... equal maxima) keeps its exact log.

Step 7, y = 2^(t - log2 Sum), rounded to fmt (`round_to_format`)
    U = T - Lsum <= 0; qy = U >> F, ry = U & (2^F - 1); Py from the same 2^r
    path as step 4, so y ~ Py * 2^(qy - W). Rounding to the format's grid, to
    nearest, ties to even, with gradual underflow: e = qy + bias;
    h = W - M + max(0, 1 - e) bits are dropped (clamped at W + 2, which
    drops everything); h <= 0 pads with zeros. keep = (Py >> h) + round-up,
    round-up = (dropped > half) or (dropped == half and keep odd).
    Output bits = (max(e, 1) << M) + keep - 2^M: a normal result's carry to
    2^(M+1) and a subnormal rounding up to 2^M both move into the exponent
    field by this addition, and results below half the smallest subnormal
    become +0. y <= 1 always; the sign is always +. N = 1 (or every other element -inf, dead, or
    below 2^-B): T = 0, P = 2^W, Sum = 2^B, k = B, rs = 0, no bias, Lsum = 0,
    U = 0, Py = 2^W: y = 1.0 exactly. Likewise 2^k equal maxima alone give
    exactly 2^-k.

Backward (training) mode: `hyft_softmax_backward(y, dy, cfg)`, dx = y * (dy - sum(y dy) / sum(y)), is defined
in docs/specs/hyft.md, section "Backward (training) mode" (bit-exact arithmetic, special values as torch's
autograd, the error flag); `hyft_softmax_backward_bits` below follows its steps 0-6 and names its quantities
(Mt, Ed, base = log2 u, P, S, Y, r, S', DY, G, kg, Pg, Z); `hyft_ref.hyft_softmax_backward_scalar` is the
second model.

Dtypes: `hyft_softmax` takes only the config's format and raises TypeError
otherwise (a silent conversion would hide a rounding that the hardware does not
do). The torch drop-in `hyft_softmax_like_torch` follows torch.softmax instead:
it casts to `dtype` if given, rounds to the config's format (round to nearest
even, torch's `.to`), runs the unit, and casts the result back.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch

from accelkit.config.hyft import FORMATS, FloatFormat, SoftmaxConfig

__all__ = [
    "SoftmaxConfig", "hyft_softmax", "hyft_softmax_bits", "hyft_softmax_like_torch", "patched_softmax",
    "softmax_patch", "softmax_ref", "torch_softmax", "decode_float", "float_to_bits", "bits_to_float",
    "fixed_difference", "exp2_fixed", "log2_fixed", "leading_one", "round_to_format", "interpolate",
    "hyft_softmax_backward", "hyft_softmax_backward_bits", "backward_widths", "decode_float_gradual",
    "round_shift", "normalised_sum", "round_float", "softmax_backward_ref", "HyftSoftmaxFunction",
    "patched_softmax_training", "backward_decode", "backward_vector", "backward_products", "backward_special_bits",
    "backward_g", "backward_normalise", "backward_finite_bits",
]

_INT_VIEW = {16: torch.int16, 32: torch.int32}
_DTYPE_FMT = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def _fmt(cfg: SoftmaxConfig) -> FloatFormat:
    return FORMATS[cfg.fmt]


# ---- bits in and out -------------------------------------------------------------------------

def float_to_bits(x: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns of a bf16/fp16/fp32 tensor as non-negative int64."""
    if x.dtype not in _DTYPE_FMT:
        raise TypeError(f"float_to_bits takes bfloat16, float16 or float32, got {x.dtype}")
    width = FORMATS[_DTYPE_FMT[x.dtype]].width
    return x.contiguous().view(_INT_VIEW[width]).to(torch.int64) & ((1 << width) - 1)


def bits_to_float(bits: torch.Tensor, fmt: str) -> torch.Tensor:
    """Inverse of `float_to_bits` for format name `fmt`."""
    f = FORMATS[fmt]
    signed = torch.where(bits >= 1 << (f.width - 1), bits - (1 << f.width), bits)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[fmt]
    return signed.to(_INT_VIEW[f.width]).view(dtype)


def decode_float(bits: torch.Tensor, fmt: FloatFormat):
    """(sign, E, m, is_nan, is_inf) of raw bits; zeros and subnormals give m = 0 (E is then meaningless)."""
    sign = (bits >> (fmt.width - 1)) & 1
    e = (bits >> fmt.man_bits) & fmt.exp_max
    f = bits & ((1 << fmt.man_bits) - 1)
    special = e == fmt.exp_max
    normal = (e != 0) & ~special
    m = torch.where(normal, f | (1 << fmt.man_bits), torch.zeros_like(f))
    return sign, e - fmt.bias, m, special & (f != 0), special & (f == 0)


def _order_key(sign: torch.Tensor, m: torch.Tensor, E: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """An integer that orders finite decoded floats as their values (all zeros give 0)."""
    mag = ((E + fmt.bias) << fmt.man_bits) | (m & ((1 << fmt.man_bits) - 1))
    mag = torch.where(m == 0, torch.zeros_like(m), mag)
    return torch.where(sign == 1, -mag, mag)


# ---- the datapath pieces the RTL mirrors ----------------------------------------------------------

def fixed_difference(sx, Ex, mx_, sm, Em, mm, cfg: SoftmaxConfig) -> torch.Tensor:
    """Step 2: D = -min(ceil((max - x) * 2^F), 2^(I+F)) for finite decoded operands (max >= x)."""
    M, F = cfg.man_bits, cfg.frac_bits
    zero = torch.zeros((), dtype=torch.int64)
    equal = (mx_ == mm) & ((mx_ == 0) | ((Ex == Em) & (sx == sm)))
    # a zero operand must never set the grid: give it the smallest exponent
    low = -(1 << 20)
    Ex_ = torch.where(mx_ == 0, low, Ex)
    Em_ = torch.where(mm == 0, low, Em)
    Ev = torch.maximum(Ex_, Em_)
    too_big = Ev >= cfg.align_exp_limit
    g = torch.minimum(Ev - M, torch.full_like(Ev, -F))

    def on_grid(m, E):
        k = (E - M) - g
        left = m << k.clamp(min=0, max=62 - M)  # only used where k >= 0, which keeps it small
        rs = (-k).clamp(min=0, max=M + 2)
        right = m >> rs
        sticky = (m & ((1 << rs) - 1)) != 0
        v = torch.where(k >= 0, left, right)
        return 2 * v + torch.where(k >= 0, zero, sticky.to(torch.int64))

    Vx = on_grid(mx_, Ex_)
    Vm = on_grid(mm, Em_)
    a2 = torch.where(sm == 1, -Vm, Vm) - torch.where(sx == 1, -Vx, Vx)
    z = torch.clamp(1 - F - g, max=M + 3)
    c = (a2 + (1 << z) - 1) >> z
    c = torch.where(too_big, torch.full_like(c, cfg.d_sat), c.clamp(max=cfg.d_sat))
    return -torch.where(equal, zero, c)


def interpolate(table: tuple[int, ...], r: torch.Tensor, cfg: SoftmaxConfig) -> torch.Tensor:
    """table[j] + ((table[j+1] - table[j]) * w) >> (F - b), j = top b bits of the F-bit r, w the rest."""
    tab = torch.tensor(table, dtype=torch.int64)
    shift = cfg.interp_bits
    j = r >> shift
    w = r & ((1 << shift) - 1)
    lo = tab[j]
    return lo + (((tab[j + 1] - lo) * w) >> shift)


def exp2_fixed(u: torch.Tensor, cfg: SoftmaxConfig):
    """(q, P): 2^(u * 2^-F) ~ P * 2^(q - W) for u <= 0, P in [2^W, 2^(W+1))."""
    F = cfg.frac_bits
    q = u >> F
    r = u & ((1 << F) - 1)
    return q, interpolate(cfg.exp2_table, r, cfg)


def leading_one(v: torch.Tensor) -> torch.Tensor:
    """Index of the most significant one of positive int64 values (a priority encoder)."""
    k = torch.zeros_like(v)
    for step in (32, 16, 8, 4, 2, 1):
        hit = (v >> step) != 0
        v = torch.where(hit, v >> step, v)
        k = k + torch.where(hit, step, 0)
    return k


def log2_fixed(total: torch.Tensor, cfg: SoftmaxConfig) -> torch.Tensor:
    """Step 6: log2(total * 2^-B) with F fraction bits, for total >= 2^B."""
    F, B = cfg.frac_bits, cfg.sum_frac_bits
    k = leading_one(total)
    down = total >> (k - F).clamp(min=0)
    up = total << (F - k).clamp(min=0)
    rs = torch.where(k >= F, down, up) - (1 << F)
    lg = ((k - B) << F) + interpolate(cfg.log2_table, rs, cfg)
    if cfg.log2_bias:
        lg = lg + torch.where(total == (1 << k), 0, cfg.log2_bias)
    return lg


def round_to_format(q: torch.Tensor, P: torch.Tensor, cfg: SoftmaxConfig) -> torch.Tensor:
    """Bits of +P * 2^(q - W) in fmt, rounded to nearest even on the format's grid (subnormals included)."""
    fmt = _fmt(cfg)
    M, W = fmt.man_bits, cfg.table_bits
    e = q + fmt.bias
    # bits dropped: W - M for a normal result, plus 1 - e more below the normals
    sh = (W - M + (1 - e).clamp(min=0)).clamp(max=W + 2)
    keep = torch.where(sh >= 0, P >> sh.clamp(min=0), P << (-sh).clamp(min=0))
    rs = sh.clamp(min=1)
    rem = P & ((1 << rs) - 1)
    half = 1 << (rs - 1)
    up = (sh > 0) & ((rem > half) | ((rem == half) & ((keep & 1) == 1)))
    keep = keep + up.to(torch.int64)
    # a carry out of the mantissa, or a subnormal rounding up to 2^-bias+1, moves into the exponent field
    return (e.clamp(min=1) << M) + keep - (1 << M)


# ---- the unit ---------------------------------------------------------------------------------------

def hyft_softmax_bits(bits: torch.Tensor, cfg: SoftmaxConfig) -> torch.Tensor:
    """The unit on raw bit patterns (int64, last dimension = one vector): output bit patterns."""
    fmt = _fmt(cfg)
    B, W = cfg.sum_frac_bits, cfg.table_bits
    if bits.shape[-1] == 0:
        return bits.clone()
    sign, E, m, is_nan, is_inf = decode_float(bits, fmt)
    pos_inf = is_inf & (sign == 0)
    neg_inf = is_inf & (sign == 1)
    finite = ~(is_nan | is_inf)
    nan_vec = (is_nan | pos_inf).any(-1, keepdim=True) | neg_inf.all(-1, keepdim=True)

    # step 1: the max over the finite elements (-inf never wins unless all are -inf: then NaN anyway)
    key = torch.where(finite, _order_key(sign, m, E, fmt), torch.full_like(m, -(1 << 40)))
    idx = key.argmax(-1, keepdim=True)
    sm, Em, mm = (t.gather(-1, idx) for t in (sign, E, m))

    # step 2, 3: d and t
    D = fixed_difference(sign, E, m, sm, Em, mm, cfg)
    T = (D * cfg.log2e_const) >> cfg.log2e_frac_bits
    live = finite & (T >= -cfg.d_sat)
    T = torch.where(live, T, torch.zeros_like(T))

    # step 4, 5: p and its exact sum
    q, P = exp2_fixed(T, cfg)
    s = q - W + B
    p = torch.where(s >= 0, P << s.clamp(min=0), P >> (-s).clamp(min=0, max=W + 2))
    total = torch.where(live, p, torch.zeros_like(p)).sum(-1, keepdim=True)
    total = torch.where(nan_vec, torch.full_like(total, 1 << B), total)  # keep NaN rows in range

    # step 6, 7
    U = T - log2_fixed(total, cfg)
    qy, Py = exp2_fixed(U, cfg)
    out = round_to_format(qy, Py, cfg)
    out = torch.where(live, out, torch.zeros_like(out))
    return torch.where(nan_vec, torch.full_like(out, fmt.nan_bits), out)


def _check_cfg(cfg) -> SoftmaxConfig:
    if cfg is None:
        return SoftmaxConfig()
    if not isinstance(cfg, SoftmaxConfig):
        raise TypeError(f"cfg must be a SoftmaxConfig or None, got {type(cfg).__name__}")
    return cfg


def hyft_softmax(x: torch.Tensor, cfg: SoftmaxConfig | None = None) -> torch.Tensor:
    """Softmax over the last dimension, bit-exact to the Hyft unit; x must be in cfg's format (default bf16).

    Any shape; returns the same shape and dtype (on x's device). Raises TypeError for any other dtype.
    """
    cfg = _check_cfg(cfg)
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a torch tensor, got {type(x).__name__}")
    if x.dtype != cfg.torch_dtype:
        raise TypeError(f"x has dtype {x.dtype} but the unit is configured for fmt={cfg.fmt!r} "
                        f"({cfg.torch_dtype}); convert it first, or use hyft_softmax_like_torch")
    if x.dim() == 0:
        return hyft_softmax(x.reshape(1), cfg).reshape(())
    out = hyft_softmax_bits(float_to_bits(x.detach().cpu()), cfg)
    return bits_to_float(out, cfg.fmt).to(x.device)


def _softmax_dim(ndim: int) -> int:
    # torch's legacy choice when dim is None (torch.nn.functional._get_softmax_dim)
    return 0 if ndim in (0, 1, 3) else 1


def hyft_softmax_like_torch(input: torch.Tensor, dim: int | None = None, dtype: torch.dtype | None = None,
                            cfg: SoftmaxConfig | None = None) -> torch.Tensor:
    """torch.softmax's signature on the Hyft unit: round to cfg's format, run, cast back.

    The result has the dtype torch.softmax would give (`dtype` if given, else the input's).
    """
    cfg = _check_cfg(cfg)
    if dtype is not None:
        input = input.to(dtype)
    if not input.is_floating_point():
        raise TypeError(f"softmax needs a floating-point input, got {input.dtype}")
    if dim is None:
        dim = _softmax_dim(input.dim())
    if input.dim() == 0:
        return hyft_softmax(input.detach().to(cfg.torch_dtype), cfg).to(input.dtype)
    x = input.detach().movedim(dim, -1).to(cfg.torch_dtype)
    return hyft_softmax(x, cfg).to(input.dtype).movedim(-1, dim)


@contextlib.contextmanager
def softmax_patch(fn: Callable[..., torch.Tensor]):
    """Install `fn(input, dim, dtype=None)` as torch.softmax, torch.nn.functional.softmax, Tensor.softmax."""
    saved = (torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax)

    def softmax(input, dim=None, _stacklevel=3, dtype=None):
        return fn(input, dim, dtype=dtype)

    def tensor_softmax(self, dim=None, dtype=None):
        return fn(self, dim, dtype=dtype)

    torch.softmax = softmax
    torch.nn.functional.softmax = softmax
    torch.Tensor.softmax = tensor_softmax
    try:
        yield
    finally:
        torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax = saved


@contextlib.contextmanager
def patched_softmax(cfg: SoftmaxConfig | None = None):
    """Run every torch softmax (all three entry points) on the Hyft unit, e.g. inside a HuggingFace model.

    Inference only: the outputs carry no gradient. Models must use attention that calls softmax
    (attn_implementation="eager"); fused kernels such as SDPA never do.
    """
    cfg = _check_cfg(cfg)
    with softmax_patch(functools.partial(hyft_softmax_like_torch, cfg=cfg)):
        yield cfg


def torch_softmax(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """torch's own softmax, even inside `softmax_patch` (the C method the patched entry points hide)."""
    return torch._C.TensorBase.softmax(input, dim, dtype=dtype)


def softmax_ref(x: torch.Tensor) -> torch.Tensor:
    """Exact reference: torch's softmax in float64 over the last dimension (torch's special values)."""
    return torch_softmax(x.to(torch.float64), -1)


# ---- backward (training) mode: docs/specs/hyft.md, "Backward (training) mode" -------------------------

def backward_widths(cfg: SoftmaxConfig) -> dict[str, int]:
    """The backward datapath's widths (bits), by name: the spec's width table."""
    fmt = _fmt(cfg)
    mt = min(fmt.man_bits, cfg.table_bits)
    return {"operand_frac_bits": mt,                     # Mt
            "operand_bits": mt + 1,                       # m' with its hidden one
            "product_bits": 2 * mt + 2,                   # pi = m'_y * m'_dy
            "grid_product_bits": cfg.sum_frac_bits + 2,   # |P_j| <= 2^(B+1)
            "sum_bits": cfg.sum_bits + 1,                 # S and S', two's complement
            "y_sum_bits": cfg.sum_bits,                   # Y, unsigned: the forward's accumulator
            "recip_frac_bits": _recip_bits(cfg),          # R
            "recip_bits": _recip_bits(cfg) + 1,           # r < 2^(R+1)
            "grid_dy_bits": cfg.sum_frac_bits + 1,        # |DY_i| <= 2^B
            "g_bits": cfg.sum_bits + 2,                   # G = DY - S', two's complement
            "g_mant_bits": cfg.table_bits + 1,            # Pg
            "z_bits": mt + cfg.table_bits + 2}            # Z = m'_y * Pg


def decode_float_gradual(bits: torch.Tensor, fmt: FloatFormat):
    """(sign, E, m, is_nan, is_inf) of raw bits with subnormals at their value (m = f, E = 1 - bias).

    The backward mode's decoder; `decode_float` (the forward's) reads subnormals as zero.
    """
    sign = (bits >> (fmt.width - 1)) & 1
    e = (bits >> fmt.man_bits) & fmt.exp_max
    f = bits & ((1 << fmt.man_bits) - 1)
    special = e == fmt.exp_max
    m = torch.where(special, torch.zeros_like(f), torch.where(e == 0, f, f | (1 << fmt.man_bits)))
    return sign, e.clamp(min=1) - fmt.bias, m, special & (f != 0), special & (f == 0)


def _recip_bits(cfg: SoftmaxConfig) -> int:
    """R: fraction bits of the reciprocal of sum(y) (capped so that its products fit int64)."""
    return min(cfg.sum_frac_bits + 2, 28)


def round_float(sign: torch.Tensor, X: torch.Tensor, Z: torch.Tensor, cfg: SoftmaxConfig) -> torch.Tensor:
    """Bits of (-1)^sign * Z * 2^X in fmt (Z >= 0 any width): to nearest even, gradual underflow, overflow to inf.

    The forward's `round_to_format` for a mantissa of any width, with a sign and the overflow clamp.
    """
    fmt = _fmt(cfg)
    M = fmt.man_bits
    n = leading_one(Z)
    e = n + X + fmt.bias
    h = torch.minimum(n - M + (1 - e).clamp(min=0), n + 2)
    keep = torch.where(h >= 0, Z >> h.clamp(min=0), Z << (-h).clamp(min=0))
    rs = h.clamp(min=1)
    rem = Z & ((1 << rs) - 1)
    half = 1 << (rs - 1)
    up = (h > 0) & ((rem > half) | ((rem == half) & ((keep & 1) == 1)))
    mag = (e.clamp(min=1) << M) + keep + up.to(torch.int64) - (1 << M)
    mag = torch.where(Z == 0, torch.zeros_like(mag), mag.clamp(max=fmt.exp_max << M))
    return mag | (sign << (fmt.width - 1))


def round_shift(v: torch.Tensor, k: torch.Tensor, cap: int) -> torch.Tensor:
    """v * 2^k rounded to nearest, ties up (v >= 0): v << k, or ((v >> min(-k-1, cap)) + 1) >> 1."""
    return torch.where(k >= 0, v << k.clamp(min=0), ((v >> (-k - 1).clamp(min=0, max=cap)) + 1) >> 1)


def normalised_sum(S: torch.Tensor, Y: torch.Tensor, cfg: SoftmaxConfig) -> torch.Tensor:
    """Step 2b: S' = S / (Y * 2^-B) by a fixed-point reciprocal (two Newton steps from 2 - Y), once per vector."""
    B, R = cfg.sum_frac_bits, _recip_bits(cfg)
    Yr = Y << (R - B) if R >= B else Y >> (B - R)
    one = 1 << R
    near = (Yr - one).abs() <= (one >> 3)
    r = torch.where(near, 2 * one - Yr, torch.full_like(Yr, one))
    Yr = torch.where(near, Yr, torch.full_like(Yr, one))  # r stays 2^R
    for _ in range(2):
        e = 2 * one - ((Yr * r) >> R)
        r = (r * e) >> R
    mag = S.abs()
    hi, lo = mag >> R, mag & (one - 1)  # |S| * r split so that every product fits int64
    scaled = hi * r + ((lo * r + (one >> 1)) >> R)
    return torch.where(S < 0, -scaled, scaled)


def backward_decode(y_bits: torch.Tensor, dy_bits: torch.Tensor, cfg: SoftmaxConfig) -> dict[str, torch.Tensor]:
    """Decode and per-element classes of (y, dy) pairs (spec: Decode, step 0.1): the RTL's `BackwardDecode`.

    Names: sy, Ey, my (y's sign, unbiased exponent, mantissa, subnormals at their value), myt = m'_y (Mt fraction
    bits); sd, Edy, md, mdt likewise for dy; nan_y, inf_y, zero_y, nan_d, inf_d, zero_d; ps = sy xor sd;
    p_nan, p_inf (the class of y * dy); bad_y (a finite non-zero y out of [0, 2)); negzero_p (a zero product of
    sign 1); e_dy (dy's biased exponent field, 1 for subnormals, 0 for a zero or special dy: the max's key).
    """
    fmt = _fmt(cfg)
    M = fmt.man_bits
    mt = min(M, cfg.table_bits)
    sy, Ey, my, nan_y, inf_y = decode_float_gradual(y_bits, fmt)
    sd, Edy, md, nan_d, inf_d = decode_float_gradual(dy_bits, fmt)
    zero_y = (my == 0) & ~nan_y & ~inf_y
    zero_d = (md == 0) & ~nan_d & ~inf_d
    ps = sy ^ sd  # the sign of y_j * dy_j
    p_nan = nan_y | nan_d | (inf_y & zero_d) | (inf_d & zero_y)
    p_inf = (inf_y | inf_d) & ~p_nan
    bad_y = ~(nan_y | inf_y | zero_y) & ((Ey >= 1) | (sy == 1))
    return {"sy": sy, "Ey": Ey, "my": my, "myt": my >> (M - mt), "nan_y": nan_y, "inf_y": inf_y, "zero_y": zero_y,
            "sd": sd, "Edy": Edy, "md": md, "mdt": md >> (M - mt), "nan_d": nan_d, "inf_d": inf_d, "zero_d": zero_d,
            "ps": ps, "p_nan": p_nan, "p_inf": p_inf, "bad_y": bad_y, "negzero_p": (zero_y | zero_d) & (ps == 1),
            "e_dy": torch.where(md != 0, Edy + fmt.bias, torch.zeros_like(Edy))}


def backward_vector(dec: dict[str, torch.Tensor], cfg: SoftmaxConfig) -> dict[str, torch.Tensor]:
    """The per-vector values of the fill phase (step 0.2, 0.4, step 1), keepdim over the last dimension.

    s_nan, pos, neg (infinite products of each sign), s_special, s_inf_sign, out_of_range, s_negzero (s = -0),
    ed (the largest e_dy) and base = log2 u = ed - bias + 1 - B.
    """
    fmt = _fmt(cfg)
    ps = dec["ps"]
    pos = (dec["p_inf"] & (ps == 0)).any(-1, keepdim=True)
    neg = (dec["p_inf"] & (ps == 1)).any(-1, keepdim=True)
    s_nan = dec["p_nan"].any(-1, keepdim=True) | (pos & neg)
    s_special = s_nan | pos | neg
    ed = dec["e_dy"].max(-1, keepdim=True).values
    return {"pos": pos, "neg": neg, "s_nan": s_nan, "s_special": s_special, "s_inf_sign": neg.to(torch.int64),
            "out_of_range": dec["bad_y"].any(-1, keepdim=True) & ~s_special,
            "s_negzero": dec["negzero_p"].all(-1, keepdim=True), "ed": ed,
            "base": ed - fmt.bias + 1 - cfg.sum_frac_bits}


def backward_products(dec: dict[str, torch.Tensor], base: torch.Tensor, cfg: SoftmaxConfig):
    """Step 2 per element: (P, Yj), the signed product y_j dy_j on the block grid 2^base and y_j on 2^-B.

    Exact for in-range y (E_y <= 0); the shifts are capped at B + 1 so that junk rows stay within int64."""
    mt = min(_fmt(cfg).man_bits, cfg.table_bits)
    B = cfg.sum_frac_bits
    cap = B + 1  # valid operands: k <= B - 1 - 2 Mt, ky <= B - Mt; the cap only keeps junk rows in range
    Pm = round_shift(dec["myt"] * dec["mdt"], (dec["Ey"] + dec["Edy"] - 2 * mt - base).clamp(max=cap), 2 * mt + 2)
    P = torch.where(dec["ps"] == 1, -Pm, Pm)
    Yj = round_shift(dec["myt"], (dec["Ey"] - mt + B).clamp(max=cap), mt + 2)
    return P, Yj


def backward_special_bits(dec: dict[str, torch.Tensor], vec: dict[str, torch.Tensor], cfg: SoftmaxConfig):
    """Step 0.3: the output of each element when s is not finite (NaN, or infinite with sign s_y xor s_g)."""
    fmt = _fmt(cfg)
    s_inf_sign = vec["s_inf_sign"]
    g_nan = vec["s_nan"] | (dec["inf_d"] & (dec["sd"] == s_inf_sign))
    sp_sign = dec["sy"] ^ (1 - s_inf_sign)  # g = -s: infinite with the other sign
    return torch.where(g_nan | dec["zero_y"], torch.full_like(dec["sy"], fmt.nan_bits),
                       (sp_sign << (fmt.width - 1)) | (fmt.exp_max << fmt.man_bits))


def backward_g(dec: dict[str, torch.Tensor], base: torch.Tensor, Sn: torch.Tensor, s_negzero: torch.Tensor,
               cfg: SoftmaxConfig):
    """Step 3: (G, s_g): G = DY - S' on the block grid (two's complement) and the sign of g."""
    mt = min(_fmt(cfg).man_bits, cfg.table_bits)
    cap = cfg.sum_frac_bits + 1
    sd = dec["sd"]
    DYm = round_shift(dec["mdt"], (dec["Edy"] - mt - base).clamp(max=cap), mt + 2)
    DY = torch.where(sd == 1, -DYm, DYm)
    G = DY - Sn
    sg_zero = torch.where(DY == 0, sd * (~(dec["zero_d"] & s_negzero)).to(torch.int64), torch.zeros_like(sd))
    sg = torch.where(G != 0, (G < 0).to(torch.int64), sg_zero)
    return G, sg


def backward_normalise(G: torch.Tensor, cfg: SoftmaxConfig):
    """Step 4: (kg, Pg): the leading one of |G| and |G| normalised to W fraction bits, truncated."""
    W = cfg.table_bits
    Gm = G.abs()
    kg = leading_one(Gm)
    Pg = torch.where(kg >= W, Gm >> (kg - W).clamp(min=0), Gm << (W - kg).clamp(min=0))
    return kg, Pg


def backward_finite_bits(dec: dict[str, torch.Tensor], vec: dict[str, torch.Tensor], Sn: torch.Tensor,
                         cfg: SoftmaxConfig) -> torch.Tensor:
    """Steps 3-6 for a finite s: the output bits of each element (before the vector's special cases)."""
    mt = min(_fmt(cfg).man_bits, cfg.table_bits)
    base = vec["base"]
    G, sg = backward_g(dec, base, Sn, vec["s_negzero"], cfg)
    kg, Pg = backward_normalise(G, cfg)
    return round_float(dec["sy"] ^ sg, dec["Ey"] - mt + kg - cfg.table_bits + base, dec["myt"] * Pg, cfg)


def hyft_softmax_backward_bits(y_bits: torch.Tensor, dy_bits: torch.Tensor, cfg: SoftmaxConfig):
    """The backward mode on raw bit patterns (int64, same shape, last dimension = one vector).

    Returns (dx bits, error): error is a bool tensor of the batch shape (y_bits.shape[:-1]), set for a vector
    with any NaN or infinity in y or dy, or a y out of range (y < 0 or y >= 2; spec step 0). The steps are the
    functions above (`backward_decode`, `backward_vector`, `backward_products`, `normalised_sum`,
    `backward_g`, `backward_normalise`, `round_float`, `backward_special_bits`), which the RTL's components
    (gen/hyft_backward.py) are tested against one by one.
    """
    if y_bits.shape != dy_bits.shape:
        raise ValueError(f"y and dy must have the same shape, got {tuple(y_bits.shape)} and {tuple(dy_bits.shape)}")
    fmt = _fmt(cfg)
    if y_bits.shape[-1] == 0:
        return y_bits.clone(), torch.zeros(y_bits.shape[:-1], dtype=torch.bool)
    dec = backward_decode(y_bits, dy_bits, cfg)   # decode, step 0.1
    vec = backward_vector(dec, cfg)               # step 0.2, 0.4, step 1
    P, Yj = backward_products(dec, vec["base"], cfg)  # step 2
    Sn = normalised_sum(P.sum(-1, keepdim=True), Yj.sum(-1, keepdim=True), cfg)  # step 2b
    out = backward_finite_bits(dec, vec, Sn, cfg)  # steps 3-6
    out = torch.where(vec["out_of_range"], torch.full_like(out, fmt.nan_bits), out)
    out = torch.where(vec["s_special"], backward_special_bits(dec, vec, cfg), out)
    return out, (vec["s_special"] | vec["out_of_range"]).squeeze(-1)


def hyft_softmax_backward(y: torch.Tensor, dy: torch.Tensor, cfg: SoftmaxConfig | None = None) -> torch.Tensor:
    """Softmax backward over the last dimension, bit-exact to the Hyft unit: dx = y * (dy - sum(y*dy) / sum(y)).

    y (the forward output) and dy (the upstream gradient) must both be in cfg's format (default bf16) and of
    the same shape; returns dx in the same shape and dtype (on y's device). TypeError for another dtype,
    ValueError for shapes that differ. The per-vector error flag is `hyft_softmax_backward_bits`'s.
    """
    cfg = _check_cfg(cfg)
    for name, t in (("y", y), ("dy", dy)):
        if not torch.is_tensor(t):
            raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
        if t.dtype != cfg.torch_dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but the unit is configured for fmt={cfg.fmt!r} "
                            f"({cfg.torch_dtype}); convert it first")
    if y.shape != dy.shape:
        raise ValueError(f"y and dy must have the same shape, got {tuple(y.shape)} and {tuple(dy.shape)}")
    if y.dim() == 0:
        return hyft_softmax_backward(y.reshape(1), dy.reshape(1), cfg).reshape(())
    out, _ = hyft_softmax_backward_bits(float_to_bits(y.detach().cpu()), float_to_bits(dy.detach().cpu()), cfg)
    return bits_to_float(out, cfg.fmt).to(y.device)


def softmax_backward_ref(y: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Exact reference on given y and dy: torch's softmax backward in float64 over the last dimension."""
    return torch._softmax_backward_data(dy.to(torch.float64), y.to(torch.float64), -1, torch.float64)


class HyftSoftmaxFunction(torch.autograd.Function):
    """Softmax whose backward pass is the Hyft unit's (forward: the unit's, or torch's exact one).

    apply(input, dim, cfg, hyft_forward): the forward output y is rounded to cfg's format (it is what the
    unit would hold), the incoming gradient too; dx is cast back to the input's dtype.
    """

    @staticmethod
    def forward(ctx, input, dim, cfg, hyft_forward):
        if hyft_forward:
            y = hyft_softmax_like_torch(input, dim, cfg=cfg)
        else:
            y = torch_softmax(input, dim)
        ctx.dim, ctx.cfg = dim, cfg
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        dt = ctx.cfg.torch_dtype
        yl, gl = y.movedim(ctx.dim, -1).to(dt), grad.movedim(ctx.dim, -1).to(dt)
        dx = hyft_softmax_backward(yl, gl, ctx.cfg).to(y.dtype).movedim(-1, ctx.dim)
        return dx, None, None, None


@contextlib.contextmanager
def patched_softmax_training(cfg: SoftmaxConfig | None = None, hyft_forward: bool = False):
    """Every torch softmax (all three entry points) with the Hyft unit's backward pass (training).

    hyft_forward: the forward pass on the unit too; False keeps torch's exact forward, so the gradient
    differs from torch's only by the backward unit.
    """
    cfg = _check_cfg(cfg)

    def fn(input, dim=None, dtype=None):
        if dtype is not None:
            input = input.to(dtype)
        if dim is None:
            dim = _softmax_dim(input.dim())
        return HyftSoftmaxFunction.apply(input, dim, cfg, hyft_forward)

    with softmax_patch(fn):
        yield cfg
