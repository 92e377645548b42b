"""The DyBit MAC array: an R x C output-stationary array computing C = A x B exactly.

Streams (amaranth.lib.stream, valid/ready):

- ``a`` in: one column of an A tile per beat: ``data`` is R raw codes of A's
  format (row i in lane i), ``last`` marks k = K - 1, the tile's final beat.
- ``b`` in: the matching row of a B tile: C raw codes of B's format. ``a`` and
  ``b`` are consumed together, one beat of each per MAC step.
- ``c`` out: the finished R x C tile, one row per beat (``data`` is C signed
  accumulators, ``last`` on row R - 1), exact integers in units of
  2^-(fa + fb).

Microarchitecture. Operands are broadcast: row i's A code reaches every PE of
row i and column j's B code every PE of column j. Each code is decoded once at
the array's edge (R + C decoders, not R x C) into sign, a small significand and
a shift: a DyBit code with k = 0 is ``m`` with shift 0, with k >= 1 it is
``1.m`` (w + 1 bits) with shift k - 1 + f - w. Each PE multiplies the two small
significands, shifts the product by the sum of the shifts and adds or
subtracts it into its accumulator: no PE ever sees a wide decoded integer. INT
operands decode to sign and magnitude; when both operands are INT (the INT8
baseline), the PE is a plain signed multiplier, the fair baseline for DSP
mapping. Pipeline: decode -> product -> accumulate, then a shadow bank takes
the finished tile so the next tile accumulates while the previous one drains
row by row. The whole pipeline advances together; it stalls only when a
finished tile meets a bank that has not drained (K < R + 1) or ``c`` is not
ready.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config.dybit import DyBitArrayConfig, OperandFormat


class DecodedLayout(data.StructLayout):
    """A decoded operand: sign, significand and left shift."""

    def __init__(self, sig_bits: int, sh_bits: int):
        super().__init__({"neg": 1, "sig": unsigned(sig_bits), "sh": unsigned(sh_bits)})


def decoded_widths(fmt: OperandFormat) -> tuple[int, int]:
    """(significand bits, shift bits) of a format's decoded operands."""
    if fmt.is_dybit:
        sig_max = sh_max = 0
        for k in range(fmt.kmax + 1):
            w = fmt.mantissa_bits(k)
            sig_max = max(sig_max, (1 << w) - 1 if k == 0 else (2 << w) - 1)
            sh_max = max(sh_max, 0 if k == 0 else k - 1 + fmt.f - w)
        return sig_max.bit_length(), max(sh_max.bit_length(), 1)
    return fmt.n, 1  # INT: magnitude up to 2^(n-1) fits n bits; no shift


def decode_operand(m: Module, code, fmt: OperandFormat, name: str):
    """Combinational decoder of one raw code into a DecodedLayout view."""
    sig_bits, sh_bits = decoded_widths(fmt)
    out = Signal(DecodedLayout(sig_bits, sh_bits), name=name)
    n = fmt.n
    m.d.comb += out.neg.eq(code[n - 1])
    if not fmt.is_dybit:
        m.d.comb += out.sig.eq(Mux(code[n - 1], -code.as_signed(), code))
        return out
    nb, f, kmax = n - 1, fmt.f, fmt.kmax
    body = code[:nb]

    def case(k: int):
        w = fmt.mantissa_bits(k)
        mant = body[:w] if w else Const(0, 1)
        if k == 0:
            return [out.sig.eq(mant), out.sh.eq(0)]
        return [out.sig.eq(Cat(mant, Const(1, 1)) if w else Const(1, 1)), out.sh.eq(k - 1 + f - w)]

    # k = number of leading ones of the body, up to kmax: a priority chain on the body's top bits
    with m.If(~body[nb - 1]):
        m.d.comb += case(0)
    for k in range(1, kmax):
        with m.Elif(~body[nb - 1 - k]):
            m.d.comb += case(k)
    with m.Else():
        m.d.comb += case(kmax)
    return out


SHIFT_ADD_MAX_BITS = 4


def small_multiply(x, y):
    """x * y for unsigned significands. When one is at most SHIFT_ADD_MAX_BITS wide the product is written
    as a sum of shifted partial products, so synthesis builds a few adders instead of spending a DSP
    block (yosys maps even a 6 x 2 multiply to a MULT18X18D on ECP5)."""
    if len(x) < len(y):
        x, y = y, x
    if len(y) > SHIFT_ADD_MAX_BITS:
        return x * y
    terms = [Mux(y[b], x << b, 0) for b in range(len(y))]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def array_signature(cfg: DyBitArrayConfig) -> wiring.Signature:
    a = data.StructLayout({"data": data.ArrayLayout(unsigned(cfg.a_bits), cfg.rows), "last": 1})
    b = data.ArrayLayout(unsigned(cfg.b_bits), cfg.cols)
    c = data.StructLayout({"data": data.ArrayLayout(signed(cfg.acc_bits), cfg.cols), "last": 1})
    return wiring.Signature({"a": In(stream.Signature(a)), "b": In(stream.Signature(b)),
                             "c": Out(stream.Signature(c))})


class DyBitMacArray(wiring.Component):
    def __init__(self, cfg: DyBitArrayConfig):
        self.cfg = cfg
        super().__init__(array_signature(cfg))

    def elaborate(self, platform):
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        m = Module()
        prod_shape = signed(cfg.product_max.bit_length() + 1)

        # ---- stage 1: edge decode of the operands
        v1, last1 = Signal(), Signal()
        bank_valid = Signal()
        v2, last2 = Signal(), Signal()
        advance = Signal()
        m.d.comb += advance.eq(~(v2 & last2 & bank_valid))
        fire = Signal()
        m.d.comb += [
            self.a.ready.eq(advance & self.b.valid),
            self.b.ready.eq(advance & self.a.valid),
            fire.eq(self.a.valid & self.b.valid & advance),
        ]
        if cfg.is_int_baseline:
            a1 = [Signal(signed(cfg.a_bits), name=f"a1_{i}", reset_less=True) for i in range(R)]
            b1 = [Signal(signed(cfg.b_bits), name=f"b1_{j}", reset_less=True) for j in range(C)]
            with m.If(fire):
                m.d.sync += [x.eq(self.a.payload.data[i]) for i, x in enumerate(a1)]
                m.d.sync += [x.eq(self.b.payload[j]) for j, x in enumerate(b1)]
        else:
            a_dec = [decode_operand(m, self.a.payload.data[i], cfg.a_fmt, f"a_dec_{i}") for i in range(R)]
            b_dec = [decode_operand(m, self.b.payload[j], cfg.b_fmt, f"b_dec_{j}") for j in range(C)]
            a1 = [Signal.like(d, name=f"a1_{i}", reset_less=True) for i, d in enumerate(a_dec)]
            b1 = [Signal.like(d, name=f"b1_{j}", reset_less=True) for j, d in enumerate(b_dec)]
            with m.If(fire):
                m.d.sync += [x.eq(d) for x, d in zip(a1 + b1, a_dec + b_dec, strict=True)]
        with m.If(advance):
            m.d.sync += [v1.eq(fire), last1.eq(self.a.payload.last)]

        # ---- stage 2: one product per PE
        prod = [[Signal(prod_shape, name=f"p_{i}_{j}", reset_less=True) for j in range(C)] for i in range(R)]
        with m.If(advance):
            m.d.sync += [v2.eq(v1), last2.eq(last1)]
            for i in range(R):
                for j in range(C):
                    if cfg.is_int_baseline:
                        p = a1[i] * b1[j]
                    else:
                        mag = small_multiply(a1[i].sig, b1[j].sig) << (a1[i].sh + b1[j].sh)
                        p = Mux(a1[i].neg ^ b1[j].neg, -mag, mag)
                    m.d.sync += prod[i][j].eq(p)

        # ---- stage 3: accumulate; a finished tile moves to the shadow bank
        acc_shape = signed(cfg.acc_bits)
        # operands, products, accumulators and the bank have no reset: an accumulator is loaded (not added to) on
        # a tile's first beat (`first`, which has one), the bank is read only while bank_valid (reset) is set
        acc = [[Signal(acc_shape, name=f"acc_{i}_{j}", reset_less=True) for j in range(C)] for i in range(R)]
        bank = [[Signal(acc_shape, name=f"bank_{i}_{j}", reset_less=True) for j in range(C)] for i in range(R)]
        first = Signal(init=1)
        with m.If(advance & v2):
            for i in range(R):
                for j in range(C):
                    total = Mux(first, 0, acc[i][j]) + prod[i][j]
                    with m.If(last2):
                        m.d.sync += bank[i][j].eq(total)
                    with m.Else():
                        m.d.sync += acc[i][j].eq(total)
            m.d.sync += first.eq(last2)
            with m.If(last2):
                m.d.sync += bank_valid.eq(1)

        # ---- drain: the bank shifts up one row per output beat
        # (a one-row array has no row counter: every beat is the tile's last)
        row = Signal(range(R), name="drain_row") if R > 1 else Const(0, 1)
        m.d.comb += [
            self.c.valid.eq(bank_valid),
            self.c.payload.last.eq(row == R - 1),
        ]
        m.d.comb += [self.c.payload.data[j].eq(bank[0][j]) for j in range(C)]
        with m.If(self.c.valid & self.c.ready):
            for i in range(R - 1):
                m.d.sync += [bank[i][j].eq(bank[i + 1][j]) for j in range(C)]
            with m.If(row == R - 1):
                m.d.sync += bank_valid.eq(0)
                if R > 1:
                    m.d.sync += row.eq(0)
            if R > 1:
                with m.Else():
                    m.d.sync += row.eq(row + 1)
        return m


__all__ = ["DyBitMacArray", "decode_operand", "decoded_widths"]
