"""A simple dual-port RAM whose read data leaves a register: one write port, one read port with the address
registered (inside the block RAM) and the data registered after it, so nothing reads a block RAM's slow
clock-to-output directly. Read latency `READ_LATENCY`: data for an address applied in cycle t is on ``r_data``
in cycle t + 2.

Elaborated for ``platform="ecp5"`` it is a row of DP16KD block RAMs (port A writes, port B reads) with their
output registers on (``REGMODE_B="OUTREG"``): yosys maps inferred memories to DP16KD without the output
register, whose clock-to-output (5.8 ns on LFE5U-85F speed 6) then leaves about 2 ns of an 8 ns clock for
routing. Otherwise an Amaranth `Memory` with a synchronous read port and a register, which simulators and
other synthesis tools take as they are.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["RegisteredRam", "READ_LATENCY", "ecp5_tiling"]

READ_LATENCY = 2
# DP16KD configurations: (address bits, data bits per block, the low address pins the word address skips)
_DP16KD_MODES = ((10, 18, 4), (11, 9, 3), (12, 4, 2), (13, 2, 1), (14, 1, 0))


def ecp5_tiling(width: int, depth: int) -> tuple[int, int, int, int] | None:
    """(address bits, data bits per block, skipped low address pins, blocks) of `width` x `depth` in DP16KD
    blocks, the widest configuration that holds the depth; None beyond one block's 16384 words."""
    abits = max(1, (depth - 1).bit_length())
    for mode_abits, bits, skip in _DP16KD_MODES:
        if abits <= mode_abits:
            return mode_abits, bits, skip, -(-width // bits)
    return None


class RegisteredRam(wiring.Component):
    """`read_enable`: an ``r_en`` port that stalls the read (both its registers hold while it is low), for a
    reader whose pipeline stalls as a whole; without it the read never stalls."""

    def __init__(self, width: int, depth: int, read_enable: bool = False):
        self.width, self.depth = width, max(2, depth)
        self.abits = max(1, (self.depth - 1).bit_length())
        self.read_enable = read_enable
        ports = {
            "w_addr": In(unsigned(self.abits)), "w_data": In(unsigned(width)), "w_en": In(1),
            "r_addr": In(unsigned(self.abits)), "r_data": Out(unsigned(width)),
        }
        if read_enable:
            ports["r_en"] = In(1, init=1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        tiling = ecp5_tiling(self.width, self.depth) if platform == "ecp5" else None
        r_en = self.r_en if self.read_enable else Const(1, 1)
        if tiling is None:
            m.submodules.mem = mem = Memory(shape=unsigned(self.width), depth=self.depth, init=[])
            wr, rd = mem.write_port(), mem.read_port(transparent_for=())
            m.d.comb += [wr.addr.eq(self.w_addr), wr.data.eq(self.w_data), wr.en.eq(self.w_en),
                         rd.addr.eq(self.r_addr), rd.en.eq(r_en)]
            out = Signal(self.width, name="r_reg", reset_less=True)  # the DP16KD's output register has no reset
            m.d.comb += self.r_data.eq(out)
            if self.read_enable:
                with m.If(r_en):
                    m.d.sync += out.eq(rd.data)
            else:
                m.d.sync += out.eq(rd.data)
            return m
        mode_abits, bits, skip, blocks = tiling
        wdata = Signal(blocks * bits)
        rdata = Signal(blocks * bits)
        m.d.comb += [wdata.eq(self.w_data), self.r_data.eq(rdata[:self.width])]
        for b in range(blocks):
            ports = {}
            for k in range(14):
                if k < skip:  # below the word address: byte enables (both on) in x18, else unused
                    ports[f"i_ADA{k}"] = Const(1 if bits == 18 and k < 2 else 0, 1)
                    ports[f"i_ADB{k}"] = Const(0, 1)
                else:
                    i = k - skip
                    ports[f"i_ADA{k}"] = self.w_addr[i] if i < self.abits else Const(0, 1)
                    ports[f"i_ADB{k}"] = self.r_addr[i] if i < self.abits else Const(0, 1)
            for k in range(18):
                ports[f"i_DIA{k}"] = wdata[b * bits + k] if k < bits else Const(0, 1)
                ports[f"i_DIB{k}"] = Const(0, 1)
                if k < bits:
                    ports[f"o_DOB{k}"] = rdata[b * bits + k]
            for k in range(3):
                ports[f"i_CSA{k}"] = Const(0, 1)
                ports[f"i_CSB{k}"] = Const(0, 1)
            m.submodules[f"ebr{b}"] = Instance(
                "DP16KD", p_DATA_WIDTH_A=bits, p_DATA_WIDTH_B=bits, p_REGMODE_A="NOREG", p_REGMODE_B="OUTREG",
                p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC", p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="AUTO",
                i_CLKA=ClockSignal(), i_WEA=self.w_en, i_CEA=1, i_OCEA=1, i_RSTA=0,
                i_CLKB=ClockSignal(), i_WEB=0, i_CEB=r_en if self.read_enable else 1,
                i_OCEB=r_en if self.read_enable else 1, i_RSTB=0, **ports)
        return m
