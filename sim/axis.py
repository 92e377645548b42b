"""Running a block's AXI4-Stream wrapper (gen/axis.py) under Verilator with cocotbext-axi sources and sinks.

    from accelkit.sim.axis import run_axis
    from accelkit.sim.dybit import pack_job
    a, b, c = pack_job(cfg, a_codes, b_codes)             # the block's own payload packers
    run = run_axis(cfg, {"a": a, "b": b}, {"c": len(c)}, gap=0.3, stall=0.3)
    run.beats["c"] == c                                   # payloads back from m_axis_c, padding checked

The host turns each payload into an AXI4-Stream transfer (`AxisStream.to_axis`),
groups the transfers of a stream with tlast into frames at tlast, and the cocotb
test of this module (`axis_run`) sends them with cocotbext-axi's
`AxiStreamSource` and receives them with `AxiStreamSink`, each with a pause
generator (random: a source pauses with chance `gap`, a sink with chance
`stall`, every cycle). Every cycle it also checks the stream rules of
docs/streams.md on every AXI4-Stream port (tvalid holds until tready; tdata,
tlast and tuser hold while a transfer waits) with `accelkit.sim.streams`, and
records each handshake. The host turns the received transfers back into
payloads (`AxisStream.from_axis`, strict: every padding bit must be the
documented extension) and checks that the sink's transfers are exactly the
handshakes the monitor saw.

The wrapped design's Verilog and Verilator model are cached like the block's own
(`accelkit.sim.build`), keyed also on the source of gen/axis.py.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from pathlib import Path

import cocotb

from accelkit.config import BlockConfig

from .build import TOP, Variant, module_digest, verilog_file
from .harness import load_job, save_result, start
from .runner import WAVES_FILE, SimulationMismatch, run_streams

TESTBENCH = "accelkit.sim.axis"


@functools.cache
def axis_variant() -> Variant:
    """The wrapped design as a build variant: named by the wrapper's source, which the block's key does not
    cover, so that an edit to gen/axis.py rebuilds."""
    from accelkit.gen.axis import emit_axis_verilog

    return Variant("axis-" + module_digest("accelkit.gen.axis")[:10], lambda cfg: emit_axis_verilog(cfg, top=TOP))


def axis_verilog_file(cfg: BlockConfig) -> Path:
    """The Verilog of `cfg`'s AXI4-Stream wrapper (top module `top`), cached by content."""
    return verilog_file(cfg, variant=axis_variant())


@dataclasses.dataclass
class AxisRun:
    beats: dict[str, list[int]]  # per output stream (block name), the payload of every transfer received
    transfers: dict[str, list[tuple[int, int, int]]]  # per output stream, (tdata, tlast, tuser) as received
    fires: dict[str, list[int]]  # per stream, inputs and outputs, the cycle of every handshake
    waves: Path | None = None

    def cycles(self, first_input: str, last_output: str) -> int:
        """First handshake of `first_input` to last handshake of `last_output`, inclusive."""
        return self.fires[last_output][-1] - self.fires[first_input][0] + 1


def run_axis(cfg: BlockConfig, sources: dict[str, list[int]], sinks: dict[str, int], *, gap: float = 0.0,
             stall: float = 0.0, seed: int = 1, after: dict[str, str] | None = None, timeout: int = 100_000,
             waves: bool = False) -> AxisRun:
    """Run `cfg`'s AXI4-Stream wrapper: send the payloads `sources[name]` into each input stream, receive
    `sinks[name]` transfers from each output stream, with cocotbext-axi pause generators (`gap`, `stall`).

    `after` maps an input stream to one whose transfers must all be taken first (a sparse engine's sites
    after its params). `timeout` is in cycles. A protocol violation, a timeout, a missing or extra transfer
    or bad padding raises SimulationMismatch in one line.
    """
    from accelkit.gen.axis import block_streams

    streams = {s.name: s for s in block_streams(cfg)}
    ins = {n for n, s in streams.items() if s.is_input}
    outs = set(streams) - ins
    if set(sources) != ins or set(sinks) != outs:
        raise ValueError(f"{cfg.block}: give beats for the inputs {sorted(ins)} and counts for the outputs "
                         f"{sorted(outs)}, not {sorted(sources)} and {sorted(sinks)}")
    after = after or {}
    job = {"seed": seed, "timeout": timeout, "sources": [], "sinks": [], "ports": {}}
    for name, payloads in sources.items():
        s = streams[name]
        transfers = [s.to_axis(p) for p in payloads]
        if s.last and transfers and not transfers[-1][1]:
            raise ValueError(f"stream {name}: its last beat has no {s.last[0]}: a frame would be left open")
        job["sources"].append({"name": name, "port": s.port, "transfers": transfers, "gap": gap,
                               "after": after.get(name), "tlast": s.last is not None, "bytes": s.tdata_bytes})
    for name, count in sinks.items():
        s = streams[name]
        job["sinks"].append({"name": name, "port": s.port, "count": count, "stall": stall,
                             "tlast": s.last is not None, "bytes": s.tdata_bytes})
    job["ports"] = {s.name: (s.port, s.signals()) for s in streams.values()}

    res = run_streams(cfg, job, waves=waves, testbench=TESTBENCH, variant=axis_variant(),
                      what=f"{cfg.block} AXI4-Stream")
    run_dir = res.get("run_dir")
    where = f"waveform: {run_dir / WAVES_FILE}" if waves else "run again with waves=True for a waveform"
    beats = {}
    for name, transfers in res["sinks"].items():
        s = streams[name]
        if transfers != res["seen"][name]:
            i = next((i for i, (a, b) in enumerate(zip(transfers, res["seen"][name], strict=False)) if a != b),
                     min(len(transfers), len(res["seen"][name])))
            raise SimulationMismatch(f"{cfg.block} AXI4-Stream {s.port}: the sink's transfer {i} differs from the "
                                     "handshake the monitor saw")
        try:
            beats[name] = [s.from_axis(*t, strict=True) for t in transfers]
        except ValueError as e:
            raise SimulationMismatch(f"{cfg.block} AXI4-Stream: {e}; {where}") from None
    return AxisRun(beats=beats, transfers=res["sinks"], fires=res["fires"],
                   waves=run_dir / WAVES_FILE if waves else None)


# --------------------------------------------------------------------------- the cocotb test (in the simulator)


def _pauses(rng: random.Random, chance: float):
    """A cocotbext-axi pause generator: paused with probability `chance` on every cycle."""
    while True:
        yield rng.random() < chance


def _frames(transfers: list[tuple[int, int, int]], nbytes: int, tlast: bool):
    """cocotbext-axi frames of a stream's transfers: split after each tlast (one frame without tlast), tuser
    given per byte as cocotbext-axi wants it."""
    from cocotbext.axi import AxiStreamFrame

    frames, cur = [], []
    for t in transfers:
        cur.append(t)
        if tlast and t[1]:
            frames.append(cur)
            cur = []
    if cur:
        frames.append(cur)
    return [AxiStreamFrame(b"".join(d.to_bytes(nbytes, "little") for d, _, _ in f),
                           tuser=[u for _, _, u in f for _ in range(nbytes)]) for f in frames]


class _Port:
    """The per-cycle view of one AXI4-Stream port: the stream rules on tdata, tlast and tuser, and the
    handshakes (their cycles, and for outputs the transfers as the design drove them)."""

    def __init__(self, dut, name: str, port: str, signals: list[str], is_output: bool):
        from .streams import StreamPort

        self.name, self.is_output = name, is_output
        valid, ready = getattr(dut, f"{port}_tvalid"), getattr(dut, f"{port}_tready")
        self.data = {s: getattr(dut, f"{port}_{s}") for s in ("tdata", "tlast", "tuser") if s in signals}
        self.rules = [StreamPort(f"{port} ({s})", valid, ready, h) for s, h in self.data.items()]
        self.fires: list[int] = []
        self.seen: list[tuple[int, int, int]] = []

    def check(self, cycle: int) -> str | None:
        for rule in self.rules:
            error = rule.check(cycle)
            if error:
                return error
        if self.rules[0].v and self.rules[0].r:
            self.fires.append(cycle)
            if self.is_output:
                self.seen.append(tuple(int(self.data[s].value) if s in self.data else 0
                                       for s in ("tdata", "tlast", "tuser")))
        return None


async def _monitor(clk, counter, ports: list[_Port]) -> str:
    from cocotb.triggers import FallingEdge, ReadOnly

    while True:
        await FallingEdge(clk)
        await ReadOnly()
        for p in ports:
            error = p.check(counter.now)
            if error:
                return error


@cocotb.test()
async def axis_run(dut):
    from cocotb.triggers import ClockCycles, Combine, Event, SimTimeoutError, select, with_timeout
    from cocotbext.axi import AxiStreamBus, AxiStreamSink, AxiStreamSource

    job = load_job()
    counter, rng = await start(dut, job["seed"])
    srcs, snks = {}, {}
    for s in job["sources"]:
        src = AxiStreamSource(AxiStreamBus.from_prefix(dut, s["port"]), dut.clk)
        if s["gap"]:
            src.set_pause_generator(_pauses(random.Random(rng.random()), s["gap"]))
        srcs[s["name"]] = src
    for s in job["sinks"]:
        snk = AxiStreamSink(AxiStreamBus.from_prefix(dut, s["port"]), dut.clk)
        if s["stall"]:
            snk.set_pause_generator(_pauses(random.Random(rng.random()), s["stall"]))
        snks[s["name"]] = snk
    outputs = {s["name"] for s in job["sinks"]}
    ports = [_Port(dut, name, port, signals, name in outputs) for name, (port, signals) in job["ports"].items()]
    monitor = cocotb.start_soon(_monitor(dut.clk, counter, ports))
    received = {s["name"]: [] for s in job["sinks"]}
    sent = {s["name"]: Event() for s in job["sources"]}

    async def send(spec):
        if spec["after"]:  # e.g. a sparse engine's sites only once its params are loaded
            await sent[spec["after"]].wait()
        for frame in _frames(spec["transfers"], spec["bytes"], spec["tlast"]):
            srcs[spec["name"]].send_nowait(frame)
        await srcs[spec["name"]].wait()  # every transfer taken
        sent[spec["name"]].set()

    async def receive(spec):
        n, out = spec["bytes"], received[spec["name"]]
        while len(out) < spec["count"]:
            frame = await snks[spec["name"]].recv(compact=False)
            k = len(frame.tdata) // n
            for i in range(k):
                out.append((int.from_bytes(bytes(frame.tdata[i * n:(i + 1) * n]), "little"),
                            int(spec["tlast"] and i == k - 1), frame.tuser[i * n] if frame.tuser else 0))

    async def finish() -> str | None:
        tasks = [cocotb.start_soon(send(s)) for s in job["sources"]]
        tasks += [cocotb.start_soon(receive(s)) for s in job["sinks"]]
        try:
            await with_timeout(Combine(*tasks), job["timeout"] * 10, "ns")
        except SimTimeoutError:
            got = ", ".join(f"{s['port']} {len(received[s['name']])} of {s['count']}" for s in job["sinks"])
            return (f"transfers after {job['timeout']} cycles: {got}: the design hangs, drops transfers "
                    "or leaves a frame without tlast")
        # a design that sends more transfers than it should shows them within a few idle cycles
        await ClockCycles(dut.clk, 16)
        fires = {p.name: len(p.fires) for p in ports}
        for s in job["sinks"]:
            extra = fires[s["name"]] - s["count"]
            if extra or not snks[s["name"]].empty():
                return f"{s['port']}: {max(extra, 1)} transfer(s) more than the {s['count']} expected"
        return None

    _, error = await select(monitor, cocotb.start_soon(finish()))
    save_result({"sinks": received, "seen": {p.name: p.seen for p in ports if p.is_output},
                 "fires": {p.name: p.fires for p in ports}, "error": error})
    assert error is None, error
