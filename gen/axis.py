"""AXI4-Stream wrappers of accelkit's blocks (`accelkit emit --axis`), with Vivado IP-integrator attributes.

`AxisWrapper(component)` wraps any block whose ports are `amaranth.lib.stream`
streams. Every input stream ``x`` becomes the AXI4-Stream slave ``s_axis_x``,
every output stream ``y`` the master ``m_axis_y``: ``tdata``, ``tvalid``,
``tready``, and ``tlast`` / ``tuser`` where the payload has fields for them. The
wrapper is wires only (no register, no cycle of latency): a beat of the block is
a transfer of its AXI4-Stream port, and the block's stream rules (docs/streams.md)
are the AXI4-Stream handshake rules.

Where each payload field goes (`axis_streams`, the one mapping the wrapper, the
host-side converters `AxisStream.to_axis` / `from_axis` and docs/axis.md are all
made from):

- ``tlast``: the 1-bit field named ``last`` or ``eof`` (`LAST_FIELDS`);
- ``tuser``: the 1-bit fields named ``error`` (`FLAG_FIELDS`), bit i the i-th in
  payload order;
- ``tdata``: every other field, in payload order. Each top-level field starts on
  a byte boundary. A scalar, and each element of an array (element 0 lowest),
  sits in a slot of the narrowest C-like width that holds it: 1, 2, 4, 8, 16, 32
  or 64 bits (wider than 64: rounded up to whole bytes); a slot narrower than a
  byte is aligned to its own width, a wider one to a byte, so no slot straddles a
  byte boundary. Signed values are sign-extended into their slot and unsigned
  ones zero-extended; ``tdata`` is zero-padded to whole bytes. On input streams
  the padding bits are ignored.

So a DyBit array's 27-bit accumulators arrive as little-endian int32 lanes, 8-bit
codes as bytes and 4-bit codes two to a byte (lane 0 in the low nibble).

Vivado: every AXI4-Stream port carries ``X_INTERFACE_INFO
"xilinx.com:interface:axis:1.0 <port> <SIGNAL>"`` and its ``tdata`` an
``X_INTERFACE_PARAMETER`` with the interface's parameters; ``clk`` is declared a
clock associated with every AXI4-Stream interface and with ``rst``, an
active-high synchronous reset. ``clk`` and ``rst`` are ports of the wrapper (the
block's ``sync`` domain is driven from them), so that the attributes, Amaranth
signal attributes that its Verilog back end writes as ``(* ... *)``, stay on the
top module's port declarations.

`python -m accelkit.gen.axis` rewrites the generated tables of docs/axis.md.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from amaranth.hdl import ClockDomain, Elaboratable, Module, Shape, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

LAST_FIELDS = ("last", "eof")
FLAG_FIELDS = ("error",)
AXIS_VLNV = "xilinx.com:interface:axis:1.0"


def slot_bits(width: int) -> int:
    """The bits a `width`-bit value occupies in tdata: the narrowest of 1, 2, 4, ..., 64 that holds it, or whole
    bytes above 64 bits."""
    if width <= 64:
        return 1 << max(width - 1, 0).bit_length()
    return -(-width // 8) * 8


def _mask(bits: int) -> int:
    return (1 << bits) - 1


@dataclasses.dataclass(frozen=True)
class Lane:
    """One scalar of the payload in tdata."""

    name: str  # its path in the payload: "data[2]", "count", "payload" for a plain scalar payload
    src: int  # bit offset in the block's payload
    width: int  # its bits
    dst: int  # bit offset in tdata
    slot: int  # bits it occupies in tdata (width + extension)
    signed: bool

    def extend(self, value: int) -> int:
        """`value` (its `width` low bits) sign- or zero-extended to the slot."""
        value &= _mask(self.width)
        if self.signed and value >> (self.width - 1):
            value |= _mask(self.slot) ^ _mask(self.width)
        return value


@dataclasses.dataclass(frozen=True)
class AxisStream:
    """How one stream of a block maps to its AXI4-Stream port."""

    name: str  # the block's stream, e.g. "a"
    port: str  # the AXI4-Stream interface, e.g. "s_axis_a"
    is_input: bool
    payload_bits: int
    tdata_bits: int  # a multiple of 8
    lanes: tuple[Lane, ...]
    last: tuple[str, int] | None  # (field, payload bit) carried by tlast
    flags: tuple[tuple[str, int], ...]  # (field, payload bit) of tuser bit 0, 1, ...

    @property
    def tdata_bytes(self) -> int:
        return self.tdata_bits // 8

    def signals(self) -> list[str]:
        """The AXI4-Stream signals of the port, lower case: tdata, tvalid, tready and tlast / tuser if present."""
        return ["tdata", "tvalid", "tready"] + (["tlast"] if self.last else []) + (["tuser"] if self.flags else [])

    def to_axis(self, payload: int) -> tuple[int, int, int]:
        """(tdata, tlast, tuser) of one beat whose block payload is `payload`."""
        tdata = 0
        for lane in self.lanes:
            tdata |= lane.extend(payload >> lane.src) << lane.dst
        tlast = (payload >> self.last[1]) & 1 if self.last else 0
        tuser = 0
        for i, (_, bit) in enumerate(self.flags):
            tuser |= ((payload >> bit) & 1) << i
        return tdata, tlast, tuser

    def from_axis(self, tdata: int, tlast: int = 0, tuser: int = 0, strict: bool = False) -> int:
        """The block payload of one transfer. With strict=True every padding bit must be what `to_axis` writes
        (the extension of its lane, or zero), else ValueError names the lane."""
        payload = covered = 0
        for lane in self.lanes:
            raw = (tdata >> lane.dst) & _mask(lane.slot)
            if strict and raw != lane.extend(raw):
                raise ValueError(f"{self.port}: tdata[{lane.dst + lane.slot - 1}:{lane.dst}] = {raw:#x} is not "
                                 f"{lane.name} ({'sign' if lane.signed else 'zero'}-extended from {lane.width} bits)")
            payload |= (raw & _mask(lane.width)) << lane.src
            covered |= _mask(lane.slot) << lane.dst
        if strict and tdata & ~covered:
            raise ValueError(f"{self.port}: tdata = {tdata:#x} has bits set outside every field (padding must be 0)")
        if self.last:
            payload |= (tlast & 1) << self.last[1]
        for i, (_, bit) in enumerate(self.flags):
            payload |= ((tuser >> i) & 1) << bit
        return payload

    def interface_parameter(self) -> str:
        """The X_INTERFACE_PARAMETER of the port (Vivado's AXI4-Stream bus parameters)."""
        return (f"TDATA_NUM_BYTES {self.tdata_bytes}, TUSER_WIDTH {len(self.flags)}, TID_WIDTH 0, TDEST_WIDTH 0, "
                f"HAS_TREADY 1, HAS_TSTRB 0, HAS_TKEEP 0, HAS_TLAST {int(self.last is not None)}")


def _leaves(shape, path: str, offset: int):
    """(path, payload offset, width, signed) of every scalar in a payload shape, in layout order."""
    if isinstance(shape, data.ArrayLayout):
        elem = Shape.cast(shape.elem_shape).width
        for i in range(shape.length):
            yield from _leaves(shape.elem_shape, f"{path}[{i}]", offset + i * elem)
    elif isinstance(shape, data.StructLayout | data.FlexibleLayout):
        for name, field in shape:
            yield from _leaves(field.shape, f"{path}.{name}" if path else name, offset + field.offset)
    elif isinstance(shape, data.Layout):  # a union: fields overlap, no single place in tdata for each
        raise ValueError(f"payload field {path or 'payload'} is a {type(shape).__name__}: only struct and array "
                         "layouts map to AXI4-Stream")
    else:
        s = Shape.cast(shape)
        yield path, offset, s.width, s.signed


def stream_mapping(name: str, shape, is_input: bool) -> AxisStream:
    """The AXI4-Stream mapping of stream `name` whose payload has `shape` (see the module docstring)."""
    groups = [(n, f.shape, f.offset) for n, f in shape] if isinstance(shape, data.StructLayout) else \
        [("payload", shape, 0)]
    lanes, last, flags = [], None, []
    cursor = 0
    for field, fshape, offset in groups:
        width = Shape.cast(fshape).width
        if field in LAST_FIELDS and width == 1:
            if last is not None:
                raise ValueError(f"stream {name} has two end-of-frame fields ({last[0]}, {field}) for one tlast")
            last = (field, offset)
            continue
        if field in FLAG_FIELDS and width == 1:
            flags.append((field, offset))
            continue
        for path, src, w, signed in _leaves(fshape, field, offset):
            if w == 0:
                continue
            slot = slot_bits(w)
            align = min(slot, 8)
            cursor = -(-cursor // align) * align
            lanes.append(Lane(path, src, w, cursor, slot, signed))
            cursor += slot
        cursor = -(-cursor // 8) * 8
    if cursor == 0:
        raise ValueError(f"stream {name} has no data field for tdata")
    return AxisStream(name=name, port=f"{'s' if is_input else 'm'}_axis_{name}", is_input=is_input,
                      payload_bits=Shape.cast(shape).width, tdata_bits=cursor, lanes=tuple(lanes), last=last,
                      flags=tuple(flags))


def axis_streams(signature: wiring.Signature) -> list[AxisStream]:
    """The AXI4-Stream mapping of every port of a block's signature (all must be streams), in port order."""
    out = []
    for name, member in signature.members.items():
        sig = member.signature if member.is_signature else None
        if isinstance(sig, wiring.FlippedSignature):
            sig = sig.flip()
        if not isinstance(sig, stream.Signature):
            raise ValueError(f"port {name} is not an amaranth.lib.stream stream: only streams map to AXI4-Stream")
        if sig.always_valid or sig.always_ready:
            raise ValueError(f"stream {name} is always_valid or always_ready: AXI4-Stream needs both handshakes")
        out.append(stream_mapping(name, sig.members["payload"].shape, is_input=member.flow == In))
    return out


class AxisWrapper(wiring.Component):
    """`core`, a component whose ports are all streams, behind AXI4-Stream ports (see the module docstring)."""

    def __init__(self, core: wiring.Component):
        self.core = core
        self.streams = axis_streams(core.signature)
        # the block's clock and reset are ports of the wrapper, so that their attributes stay on the top module's
        # ports (a domain's own signals would carry them into every submodule)
        members = {"clk": In(1), "rst": In(1)}
        for s in self.streams:
            fwd, back = (In, Out) if s.is_input else (Out, In)  # fwd: what the master drives
            members[f"{s.port}_tdata"] = fwd(s.tdata_bits)
            members[f"{s.port}_tvalid"] = fwd(1)
            members[f"{s.port}_tready"] = back(1)
            if s.last:
                members[f"{s.port}_tlast"] = fwd(1)
            if s.flags:
                members[f"{s.port}_tuser"] = fwd(len(s.flags))
        super().__init__(wiring.Signature(members))
        for s in self.streams:
            for sig in s.signals():
                getattr(self, f"{s.port}_{sig}").attrs["X_INTERFACE_INFO"] = f"{AXIS_VLNV} {s.port} {sig.upper()}"
            getattr(self, f"{s.port}_tdata").attrs["X_INTERFACE_PARAMETER"] = s.interface_parameter()
        self.clk.attrs["X_INTERFACE_INFO"] = "xilinx.com:signal:clock:1.0 clk CLK"
        self.clk.attrs["X_INTERFACE_PARAMETER"] = (
            f"ASSOCIATED_BUSIF {':'.join(s.port for s in self.streams)}, ASSOCIATED_RESET rst")
        self.rst.attrs["X_INTERFACE_INFO"] = "xilinx.com:signal:reset:1.0 rst RST"
        self.rst.attrs["X_INTERFACE_PARAMETER"] = "POLARITY ACTIVE_HIGH"

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = sync = ClockDomain("sync")  # the block's domain, driven by the ports clk and rst
        m.d.comb += [sync.clk.eq(self.clk), sync.rst.eq(self.rst)]
        m.submodules.core = self.core
        for s in self.streams:
            port = getattr(self.core, s.name)
            payload = Value.cast(port.payload)
            tdata, tvalid, tready = (getattr(self, f"{s.port}_{n}") for n in ("tdata", "tvalid", "tready"))
            tlast = getattr(self, f"{s.port}_tlast", None)
            tuser = getattr(self, f"{s.port}_tuser", None)
            if s.is_input:
                m.d.comb += [port.valid.eq(tvalid), tready.eq(port.ready)]
                for lane in s.lanes:
                    m.d.comb += payload[lane.src:lane.src + lane.width].eq(tdata[lane.dst:lane.dst + lane.width])
                if s.last:
                    m.d.comb += payload[s.last[1]].eq(tlast)
                for i, (_, bit) in enumerate(s.flags):
                    m.d.comb += payload[bit].eq(tuser[i])
            else:
                m.d.comb += [tvalid.eq(port.valid), port.ready.eq(tready)]
                for lane in s.lanes:
                    value = payload[lane.src:lane.src + lane.width]
                    # a signed value assigned to a wider slice is sign-extended
                    m.d.comb += tdata[lane.dst:lane.dst + lane.slot].eq(value.as_signed() if lane.signed else value)
                if s.last:
                    m.d.comb += tlast.eq(payload[s.last[1]])
                for i, (_, bit) in enumerate(s.flags):
                    m.d.comb += tuser[i].eq(payload[bit])
        return m


def block_streams(cfg) -> list[AxisStream]:
    """The AXI4-Stream mapping of every stream of the block that `cfg` configures."""
    from accelkit.blocks import block_for_config

    core = block_for_config(cfg).build(cfg)
    _built_for_signature(core)
    return axis_streams(core.signature)


def _built_for_signature(obj, seen: set[int] | None = None) -> None:
    """Tell Amaranth that `obj`, a component built only for its signature, and the components it made in its
    constructor (a chain's engines) are not designs someone forgot to use (no UnusedElaboratable warnings)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Elaboratable):
        obj._MustUse__silence = True
        for value in vars(obj).values():
            _built_for_signature(value, seen)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _built_for_signature(value, seen)


def emit_axis_verilog(cfg, top: str = "top") -> str:
    """The Verilog of the AXI4-Stream wrapper of `cfg`'s block, top module `top` (the block inside as
    ``<top>.core``), with a header naming the config."""
    from amaranth.back import verilog

    from accelkit.blocks import block_for_config

    block = block_for_config(cfg)
    text = verilog.convert(AxisWrapper(block.build(cfg)), name=top, emit_src=False)
    return (f"// accelkit {block.name}, AXI4-Stream wrapper (docs/axis.md): generated from "
            f"{json.dumps(cfg.to_dict(), sort_keys=True)}\n" + text)


# --------------------------------------------------------------------------- the byte-layout tables


def _bits(lo: int, n: int) -> str:
    return f"{lo + n - 1}:{lo}" if n > 1 else f"{lo}"


def _rows(s: AxisStream) -> list[tuple[str, str, str]]:
    """(tdata bits, field, encoding) rows in tdata order; runs of array elements of one width and stride make one
    row, and every gap between fields (and at the end) is a padding row."""
    rows, i, cursor = [], 0, 0
    lanes = s.lanes
    while i < len(lanes):
        a = lanes[i]
        if a.dst > cursor:
            rows.append((f"[{_bits(cursor, a.dst - cursor)}]", "padding", "zero"))
        m = re.fullmatch(r"(.*)\[(\d+)\]", a.name)
        j = i + 1
        if m:
            base, first = m.group(1), int(m.group(2))
            while (j < len(lanes) and lanes[j].name == f"{base}[{first + j - i}]" and lanes[j].width == a.width
                   and lanes[j].slot == a.slot and lanes[j].signed == a.signed
                   and lanes[j].dst - lanes[j - 1].dst == a.slot):
                j += 1
        kind = f"{'signed' if a.signed else 'unsigned'} {a.width} bit{'s' if a.width > 1 else ''}"
        if a.slot > a.width:
            kind += f", {'sign' if a.signed else 'zero'}-extended to {a.slot}"
        if j - i > 1:
            off = f" + {a.dst}" if a.dst else ""
            rows.append((f"[{a.slot}i{off} +: {a.slot}], i = {first}..{first + j - i - 1}",
                         f"`{base}[i]`", kind))
        else:
            rows.append((f"[{_bits(a.dst, a.slot)}]", f"`{a.name}`", kind))
        cursor = lanes[j - 1].dst + lanes[j - 1].slot
        i = j
    if cursor < s.tdata_bits:
        rows.append((f"[{_bits(cursor, s.tdata_bits - cursor)}]", "padding", "zero"))
    return rows


def stream_table(s: AxisStream) -> str:
    """A Markdown description of one stream's AXI4-Stream port: a heading line and the tdata table."""
    side = [f"tlast = `{s.last[0]}`" if s.last else "no tlast"]
    side.append("tuser = " + ", ".join(f"[{i}] `{f}`" for i, (f, _) in enumerate(s.flags)) if s.flags else "no tuser")
    head = (f"**`{s.name}` → `{s.port}`** ({'slave, input' if s.is_input else 'master, output'}): "
            f"tdata {s.tdata_bits} bits ({s.tdata_bytes} byte{'s' if s.tdata_bytes > 1 else ''}) for a "
            f"{s.payload_bits}-bit payload; {'; '.join(side)}")
    lines = [head, "", "| tdata bits | field | encoding |", "|---|---|---|"]
    lines += [f"| {b} | {f} | {k} |" for b, f, k in _rows(s)]
    return "\n".join(lines) + "\n"


def config_tables(cfg) -> str:
    """The tables of every stream of `cfg`'s block (what `accelkit emit --axis` writes beside the Verilog)."""
    return "\n".join(stream_table(s) for s in block_streams(cfg))


DOC_BEGIN = "<!-- generated by `python -m accelkit.gen.axis`: do not edit below -->"
DOC_END = "<!-- end of generated tables -->"


def docs_tables() -> str:
    """The generated part of docs/axis.md: every registered block's streams at its default config."""
    from accelkit.blocks import BLOCKS

    parts = []
    for block in BLOCKS.values():
        cfg = block.default_config()
        parts.append(f"### {block.name}\n\nDefault config (`accelkit params {block.name}`); the widths follow the "
                     f"config, `accelkit emit {block.name} --axis` writes the tables of the config it emits.\n\n"
                     + config_tables(cfg))
    return "\n".join(parts)


def render_docs(text: str) -> str:
    """docs/axis.md's text with its generated section replaced by the current tables."""
    begin, end = text.index(DOC_BEGIN) + len(DOC_BEGIN), text.index(DOC_END)
    return text[:begin] + "\n\n" + docs_tables() + "\n" + text[end:]


DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "axis.md"  # in a source checkout

if __name__ == "__main__":
    DOC_PATH.write_text(render_docs(DOC_PATH.read_text()))
    print(f"{DOC_PATH}: tables regenerated")
