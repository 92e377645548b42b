"""Small pipelining helpers shared by the generators: registered adder trees, multiplies split into
18 x 18 partial products (one MULT18X18D each, nothing else in their stage), lowest-set-bit one-hots.

Every helper registers what it computes; each returns the registered result and the number of
register stages it added, so that a caller can keep its sideband in step (`delay`).

Datapath registers have no reset (``reset_less``): only a stream's valid and a block's control state need one.
A reset on every flip-flop is one net to every slice's LSR pin (10,000 loads in a network top), which nextpnr
routes as a long net with a delay of its own, and which blocks packing flip-flops of different resets into one
slice. After a reset such a register holds a stale value that nothing reads, since its valid is reset.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal, signed, unsigned

__all__ = ["delay", "adder_tree", "registered_multiply", "MULTIPLY_LATENCY", "split_multiply",
           "lowest_one_hot", "one_hot_index", "or_all", "saturate", "LIMB"]

LIMB = 17  # unsigned limb of a split multiply: 17 bits unsigned fit an 18-bit signed multiplier input


def delay(m: Module, sig, stages: int, name: str, en=None, reset_less: bool = False):
    """`sig` delayed by `stages` registers (clock-enabled by `en` when given; with `reset_less`, registers without
    a reset: a payload, whose valid is delayed beside it with one)."""
    for k in range(stages):
        nxt = Signal.like(sig, name=f"{name}_d{k + 1}", reset_less=reset_less)
        if en is None:
            m.d.sync += nxt.eq(sig)
        else:
            with m.If(en):
                m.d.sync += nxt.eq(sig)
        sig = nxt
    return sig


def adder_tree(m: Module, terms: list, width: int, name: str, per_stage: int = 1):
    """Sum of `terms` (signed) as a tree of two-input adds, registered after every `per_stage` levels.

    Returns (sum signal of `width` signed bits, register stages added). A single term adds no stage."""
    stages = 0
    level = 0
    while len(terms) > 1:
        nxt = [terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k] for k in range(0, len(terms), 2)]
        level += 1
        if level % per_stage == 0 or len(nxt) == 1:
            regs = []
            for j, t in enumerate(nxt):
                r = Signal(signed(width), name=f"{name}_l{level}_{j}", reset_less=True)
                m.d.sync += r.eq(t)
                regs.append(r)
            nxt = regs
            stages += 1
        terms = nxt
    out = Signal(signed(width), name=f"{name}_sum")
    m.d.comb += out.eq(terms[0])
    return out, stages


MULTIPLY_LATENCY = 2  # registered operands, registered product


def registered_multiply(m: Module, a, b, name: str, platform=None, en=None, signed_ops: bool = True):
    """a * b with registered operands and a registered product (latency `MULTIPLY_LATENCY`), each operand at
    most 18 bits signed (17 unsigned); both stages clock-enabled by `en` when given (a stalling pipeline).
    ``signed_ops=False``: both operands unsigned, up to 18 bits each (the DSP's SIGNEDA = SIGNEDB = 0).

    Elaborated for ``platform="ecp5"`` it is a MULT18X18D with its input and output registers on (yosys does
    not pack fabric registers into the ECP5 DSP, and nextpnr credits only the DSP's own); otherwise the same
    registers in portable Verilog, which simulators and other synthesis tools take as they are.
    """
    # one bit more than the operands: unsigned x unsigned needs len(a) + len(b) bits unsigned, so signed one more
    width = len(a) + len(b) + 1
    p = Signal(signed(width), name=f"{name}_p", reset_less=True)
    if platform == "ecp5":
        if not signed_ops:
            assert len(a) <= 18 and len(b) <= 18 and not a.shape().signed and not b.shape().signed

        def ext(v):  # two's complement 18 bits (an unsigned operand of <= 17 bits keeps its value)
            w = Signal(signed(18) if signed_ops else unsigned(18), name=f"{name}_{len(v)}")
            m.d.comb += w.eq(v)
            return w
        a18, b18 = ext(a), ext(b)
        p36 = Signal(signed(36), name=f"{name}_p36")
        ports = {f"i_A{k}": a18[k] for k in range(18)}
        ports.update({f"i_B{k}": b18[k] for k in range(18)})
        ports.update({f"o_P{k}": p36[k] for k in range(36)})
        m.submodules[f"{name}_dsp"] = Instance(
            "MULT18X18D", p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0", p_REG_OUTPUT_CLK="CLK0",
            p_REG_PIPELINE_CLK="NONE", p_GSR="DISABLED", p_RESETMODE="SYNC",
            i_SIGNEDA=int(signed_ops), i_SIGNEDB=int(signed_ops), i_SOURCEA=0, i_SOURCEB=0, i_CLK0=ClockSignal(),
            i_CE0=1 if en is None else en,
            i_RST0=0,
            **ports)
        m.d.comb += p.eq(p36)
    else:
        ar, br = Signal.like(a, name=f"{name}_a", reset_less=True), Signal.like(b, name=f"{name}_b", reset_less=True)
        if en is None:
            m.d.sync += [ar.eq(a), br.eq(b), p.eq(ar * br)]
        else:
            with m.If(en):
                m.d.sync += [ar.eq(a), br.eq(b), p.eq(ar * br)]
    return p


def split_multiply(m: Module, a, b, width: int, name: str, platform=None, retime: int = 0):
    """a * b (a signed or unsigned, b unsigned) with every partial product a `registered_multiply`: a and b are
    cut into 17-bit unsigned limbs (a's top limb keeps a's sign), the partial products are
    registered (then `retime` more fabric registers each), then summed in a registered tree. Returns (product of
    `width` signed bits, register stages added)."""
    def limbs(v, is_signed):
        n = len(v)
        out = []
        for lo in range(0, n, LIMB):
            hi = min(n, lo + LIMB)
            part = v[lo:hi]
            top = hi == n
            out.append((lo, part.as_signed() if (top and is_signed) else part.as_unsigned()))
        return out

    a_signed = a.shape().signed
    pps = []
    for i, (la, pa) in enumerate(limbs(a, a_signed)):
        for j, (lb, pb) in enumerate(limbs(b, False)):
            p = registered_multiply(m, pa, pb, f"{name}_pp{i}{j}", platform)
            pps.append((la + lb, delay(m, p, retime, f"{name}_pp{i}{j}_r", reset_less=True)))
    terms = []
    for shift, r in pps:
        t = Signal(signed(width), name=f"{name}_t{len(terms)}")
        m.d.comb += t.eq(r << shift if shift else r)
        terms.append(t)
    total, st = adder_tree(m, terms, width, name)
    return total, MULTIPLY_LATENCY + retime + st


def saturate(m: Module, v, bits: int, relu: bool, name: str):
    """min(max(v, lo), q) of a signed `v` as `bits` two's-complement bits (unsigned), q = 2^(bits-1) - 1, lo = 0
    with `relu`, else -q. Decided from bit reductions, with no compare: `v` fits in `bits` signed bits when its
    bits from bits - 1 up all equal its sign; above q when its sign is 0 and any of them is 1; below -q when its
    sign is 1 and not (all of them 1 and any bit below 1). OR/AND trees of LUTs, no carry chain (a `v > q`
    compare is a CCU2C chain through the whole width in front of the mux)."""
    if len(v) <= bits:  # sign-extend so that the reductions below see at least one bit above the output's
        w = Signal(signed(bits + 1), name=f"{name}_ext")
        m.d.comb += w.eq(v)
        v = w
    q = (1 << (bits - 1)) - 1
    sign = v[-1]
    top = v[bits - 1:len(v) - 1]  # the bits that must equal the sign
    over = Signal(name=f"{name}_over")
    m.d.comb += over.eq(~sign & top.any())
    if relu:
        return Mux(sign, 0, Mux(over, q, v[:bits]))
    under = Signal(name=f"{name}_under")
    m.d.comb += under.eq(sign & ~(top.all() & v[:bits - 1].any()))
    return Mux(over, q, Mux(under, Const(-q, signed(bits)).as_unsigned(), v[:bits]))


def lowest_one_hot(m: Module, vec, name: str):
    """The lowest set bit of `vec` as a one-hot (zero when none): vec & -vec, one carry chain."""
    oh = Signal(len(vec), name=name)
    m.d.comb += oh.eq(vec & (~vec + 1))
    return oh


def at_most_one(vec):
    """`vec` has at most one bit set, as a tree over halves (any, more than one) with no carry chain. A stage
    that hands on a vector's bits lowest first keeps this as a register a step ahead, for "the rest is empty"."""
    def tree(bits):
        if len(bits) == 1:
            return bits[0], Const(0, 1)
        lo_any, lo_many = tree(bits[:len(bits) // 2])
        hi_any, hi_many = tree(bits[len(bits) // 2:])
        return lo_any | hi_any, lo_many | hi_many | (lo_any & hi_any)
    return ~tree([vec[i] for i in range(len(vec))])[1]


def one_hot_index(m: Module, oh, name: str):
    """The index of the set bit of one-hot `oh` (OR trees, no priority chain)."""
    n = len(oh)
    bits = max(1, (n - 1).bit_length())
    idx = Signal(unsigned(bits), name=name)
    m.d.comb += idx.eq(Cat(*[or_all([oh[i] for i in range(n) if (i >> b) & 1]) for b in range(bits)]))
    return idx


def or_all(sigs):
    """The OR of `sigs` (0 when empty)."""
    if not sigs:
        return Const(0, 1)
    out = sigs[0]
    for s in sigs[1:]:
        out = out | s
    return out
