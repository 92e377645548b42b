"""Stream sources, sinks and the protocol monitor inside the simulator, for long runs at Verilator speed.

The cocotb testbench of `accelkit.sim.tb_streams` drives and samples every stream port from Python on every
cycle, which costs tens of microseconds a cycle. For long runs (whole frames, whole networks, whole matmuls)
`run_streams(..., streams="hdl")` instead builds the design inside a generated Verilog harness (top module
`top`, the design as `dut`) with, for every stream port of the design:

* an input port: a source that presents the beats of a memory loaded with ``$readmemh`` from the run
  directory, idling before a beat with the job's gap probability (a per-port xorshift32 draw each cycle),
  and holding valid and payload until the handshake;
* an output port: a sink whose ready is low with the job's stall probability, writing every beat taken (and
  beats beyond the expected count, up to its memory's depth) with the cycle of its handshake;
* on every port of the job: the monitor of the stream rules (valid holds until ready, the payload with it,
  docs/streams.md), which records the first broken rule: port, cycle and rule.

cocotb keeps control: `accelkit.sim.tb_hdl_streams` sets the counts and probabilities, clocks and resets the
harness, waits (one wake-up) for it to finish, then reads the dumped beats and cycles and checks them against
the expected beats exactly as the cocotb-driven testbench does. Cycles are numbered the same way (the first
rising edge after reset is cycle 0), a source that waits for another (`after`) starts as late, and with no
gaps or stalls both testbenches see every handshake in the same cycle (tests/test_hdl_streams.py).

Verilator is two-state, so the X/Z rule of the Python monitor has nothing to catch here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

from accelkit.blocks import block_for_config
from accelkit.config import BlockConfig

from .build import TOP, Variant

DUT = "accelkit_dut"
TESTBENCH = "accelkit.sim.tb_hdl_streams"
MIN_DEPTH_BITS = 12


@dataclasses.dataclass(frozen=True)
class Port:
    name: str
    width: int
    is_input: bool  # a stream into the design: the harness drives it


def stream_ports(cfg: BlockConfig) -> list[Port]:
    """The design's stream ports, in signature order (every top-level port of every block is a stream)."""
    comp = block_for_config(cfg).build(cfg)
    comp._MustUse__silence = True  # built for its signature only (amaranth would warn it was never elaborated)
    ports = []
    for name, member in comp.signature.members.items():
        if not (member.is_signature and "payload" in member.signature.members):
            raise ValueError(f"{cfg.block}: port {name!r} is not a stream; the in-simulator harness drives streams")
        width = Shape.cast(member.signature.members["payload"].shape).width
        ports.append(Port(name, width, member.flow == wiring.In))
    return ports


_LIBRARY = r"""
// accelkit in-simulator stream harness (accelkit/sim/hdl_streams.py)
module accelkit_xorshift(input logic [31:0] s, output logic [31:0] n);
  logic [31:0] a, b;
  assign a = s ^ (s << 13);
  assign b = a ^ (a >> 17);
  assign n = b ^ (b << 5);
endmodule

module accelkit_source #(parameter int W = 8, parameter int AB = 12, parameter string FILE = "src.hex",
                         parameter string FIRES = "src.fires.hex") (
  input logic clk, input logic rst, input logic [31:0] cycle, input logic [31:0] count,
  input logic [15:0] gap, input logic [31:0] seed, input logic start, input logic dump,
  output logic valid, output logic [W-1:0] payload, input logic ready, output logic done);
  logic [W-1:0] mem [0:(1 << AB) - 1];
  logic [31:0] fires [0:(1 << AB) - 1];
  logic [31:0] idx, rng, rng_n;
  logic presenting;
  string dir;
  initial begin
    if (!$value$plusargs("accelkit_dir=%s", dir)) dir = ".";
    $readmemh({dir, "/", FILE}, mem);
  end
  accelkit_xorshift step(.s(rng), .n(rng_n));
  assign valid = !rst && start && idx < count && (presenting || rng[31:16] >= gap);
  assign payload = mem[idx[AB - 1:0]];
  assign done = idx >= count;
  always_ff @(posedge clk) begin
    if (rst) begin
      idx <= 0; presenting <= 0; rng <= seed;
    end else begin
      rng <= rng_n;
      presenting <= valid && !ready;
      if (valid && ready) begin
        fires[idx[AB - 1:0]] <= cycle;
        idx <= idx + 1;
      end
    end
    if (dump && idx != 0) $writememh({dir, "/", FIRES}, fires, 0, idx - 1);
  end
endmodule

module accelkit_sink #(parameter int W = 8, parameter int AB = 12, parameter string FILE = "snk.hex",
                       parameter string FIRES = "snk.fires.hex") (
  input logic clk, input logic rst, input logic [31:0] cycle, input logic enable,
  input logic [15:0] stall, input logic [31:0] seed, input logic dump,
  input logic valid, input logic [W-1:0] payload, output logic ready, output logic [31:0] n);
  logic [W-1:0] mem [0:(1 << AB) - 1];
  logic [31:0] fires [0:(1 << AB) - 1];
  logic [31:0] rng, rng_n;
  string dir;
  initial if (!$value$plusargs("accelkit_dir=%s", dir)) dir = ".";
  accelkit_xorshift step(.s(rng), .n(rng_n));
  assign ready = !rst && enable && rng[31:16] >= stall;
  logic [31:0] kept;
  assign kept = n < (1 << AB) ? n : (1 << AB);
  always_ff @(posedge clk) begin
    if (rst) begin
      n <= 0; rng <= seed;
    end else begin
      rng <= rng_n;
      if (valid && ready) begin
        if (n < (1 << AB)) begin
          mem[n[AB - 1:0]] <= payload;
          fires[n[AB - 1:0]] <= cycle;
        end
        n <= n + 1;
      end
    end
    if (dump && kept != 0) begin
      $writememh({dir, "/", FILE}, mem, 0, kept - 1);
      $writememh({dir, "/", FIRES}, fires, 0, kept - 1);
    end
  end
endmodule

// the stream rules on one port, every cycle: the first broken one, with its cycle (rule 1: valid fell before
// the handshake; rule 2: the payload changed before it)
module accelkit_rules #(parameter int W = 8) (
  input logic clk, input logic rst, input logic enable, input logic [31:0] cycle,
  input logic valid, input logic ready, input logic [W-1:0] payload,
  output logic [1:0] rule, output logic [31:0] at);
  logic held;
  logic [W-1:0] held_p;
  always_ff @(posedge clk) begin
    if (rst) begin
      held <= 0; rule <= 0; at <= 0;
    end else if (enable) begin
      if (rule == 0 && held && !valid) begin rule <= 1; at <= cycle; end
      else if (rule == 0 && held && payload != held_p) begin rule <= 2; at <= cycle; end
      held <= valid && !ready;
      held_p <= payload;
    end
  end
endmodule
"""


def harness_verilog(cfg: BlockConfig, depth_bits: int) -> str:
    """The design (module DUT) and the harness around it (module TOP)."""
    block = block_for_config(cfg)
    ports = stream_ports(cfg)
    srcs = [p for p in ports if p.is_input]
    snks = [p for p in ports if not p.is_input]
    dut = verilog.convert(block.build(cfg), name=DUT, emit_src=False)
    io = ["output logic clk", "input logic rst", "input logic [31:0] seed", "input logic [31:0] timeout",
          "input logic [31:0] drain", "output logic finished", "output logic dumped", "output logic timed_out",
          "output logic [31:0] cycle", "output logic [31:0] err_port", "output logic [1:0] err_rule",
          "output logic [31:0] err_cycle"]
    body = []
    conns = [".clk(clk)", ".rst(rst)"]
    for p in ports:
        n = p.name
        body.append(f"  logic {n}_valid, {n}_ready; logic [{p.width - 1}:0] {n}_payload;")
        conns += [f".{p.name}__valid({n}_valid)", f".{p.name}__ready({n}_ready)",
                  f".{p.name}__payload({n}_payload)"]
        io.append(f"input logic {n}_enable")
        body.append(f"  logic [1:0] {n}_rule; logic [31:0] {n}_at;")
        body.append(f"  accelkit_rules #(.W({p.width})) {n}_rules(.clk(clk), .rst(rst), .enable({n}_enable), "
                    f".cycle(cycle), .valid({n}_valid), .ready({n}_ready), .payload({n}_payload), "
                    f".rule({n}_rule), .at({n}_at));")
    for k, p in enumerate(srcs):
        n = p.name
        io += [f"input logic [31:0] {n}_count", f"input logic [15:0] {n}_gap",
               f"input logic [{max(1, len(srcs)) - 1}:0] {n}_after"]
        # a source that waits for this one starts a cycle after its last handshake, as the Python source does
        # (it resumes at the falling edge after the one where its predecessor finished)
        body.append(f"  logic {n}_done, {n}_done_d;")
        body.append(f"  always_ff @(posedge clk) {n}_done_d <= !rst && {n}_done;")
        body.append(f"  accelkit_source #(.W({p.width}), .AB({depth_bits}), .FILE(\"{n}.hex\"), "
                    f".FIRES(\"{n}.fires.hex\")) {n}_src(.clk(clk), .rst(rst), .cycle(cycle), .count({n}_count), "
                    f".gap({n}_gap), .seed(seed ^ 32'h{(0x9E3779B9 * (k + 1)) & 0xFFFFFFFF:08x}), "
                    f".start(&(src_done | ~{n}_after)), .dump(dump), .valid({n}_valid), "
                    f".payload({n}_payload), .ready({n}_ready), .done({n}_done));")
    for k, p in enumerate(snks):
        n = p.name
        io += [f"input logic [31:0] {n}_count", f"input logic [15:0] {n}_stall", f"output logic [31:0] {n}_got"]
        body.append(f"  accelkit_sink #(.W({p.width}), .AB({depth_bits}), .FILE(\"{n}.hex\"), "
                    f".FIRES(\"{n}.fires.hex\")) {n}_snk(.clk(clk), .rst(rst), .cycle(cycle), .enable({n}_enable), "
                    f".stall({n}_stall), .seed(seed ^ 32'h{(0x85EBCA6B * (k + 1)) & 0xFFFFFFFF:08x}), .dump(dump), "
                    f".valid({n}_valid), .payload({n}_payload), .ready({n}_ready), .n({n}_got));")
    done_bits = [f"{p.name}_done_d" for p in srcs] or ["1'b1"]
    body.append(f"  logic [{max(1, len(srcs)) - 1}:0] src_done;")
    body.append(f"  assign src_done = {{{', '.join(reversed(done_bits))}}};")
    all_sent = " && ".join([f"{p.name}_done" for p in srcs] or ["1'b1"])
    all_got = " && ".join([f"(!{p.name}_enable || {p.name}_got >= {p.name}_count)" for p in snks] or ["1'b1"])
    broken = " || ".join(f"{p.name}_rule != 0" for p in ports) or "1'b0"
    first = "\n".join(
        f"      {'if' if k == 0 else 'else if'} ({p.name}_rule != 0) begin err_port <= {k}; "
        f"err_rule <= {p.name}_rule; err_cycle <= {p.name}_at; end" for k, p in enumerate(ports))
    body.append(f"""\
  // the clock is the harness's own (a 10 ns period): no simulator callback into cocotb on every edge
  initial clk = 0;
  always #5 clk = ~clk;
  logic complete, dump;
  logic [31:0] drained;
  assign complete = {all_sent} && {all_got};
  assign dump = finished && !dumped;
  always_ff @(posedge clk) begin
    if (rst) begin
      cycle <= 0; drained <= 0; finished <= 0; dumped <= 0; timed_out <= 0;
      err_port <= 0; err_rule <= 0; err_cycle <= 0;
    end else if (!finished) begin
      cycle <= cycle + 1;
      if (complete) drained <= drained + 1;
      if ({broken}) begin
        finished <= 1;
{first}
      end else if (complete && drained + 1 >= drain) finished <= 1;
      else if (cycle + 1 >= timeout) begin finished <= 1; timed_out <= 1; end
    end else dumped <= 1;
  end""")
    # the model is built without --public-flat-rw (BUILD_ARGS): the top module and its ports are what VPI sees
    io = [f"{p} /*verilator public_flat_rw*/" for p in io]
    top = (f"module {TOP}(\n  " + ",\n  ".join(io) + "\n);\n  /*verilator public_module*/\n" + "\n".join(body) +
           f"\n  {DUT} dut(" + ", ".join(conns) + ");\nendmodule\n")
    return dut + _LIBRARY + top


def depth_bits_for(job: dict) -> int:
    """The memories' address bits for a job: every source's beats and every sink's count (plus room to catch
    a few extra beats) fit; a power of two from 2**MIN_DEPTH_BITS up, so similar jobs share a model."""
    need = max([len(s["beats"]) for s in job["sources"]] + [s["count"] + 64 for s in job["sinks"]] + [1])
    return max(MIN_DEPTH_BITS, (need - 1).bit_length())


def _digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]


# cocotb's runner makes every signal visible to VPI (--public-flat-rw), which keeps Verilator from optimising
# the model (four times slower here); the harness's testbench reads only the top module's ports.
# --timing runs the harness's own clock.
BUILD_ARGS = ("--no-public-flat-rw", "--timing", "--timescale", "1ns/1ps", "-CFLAGS", "-fcoroutines")


def hdl_variant(depth_bits: int) -> Variant:
    return Variant(f"hdl{depth_bits}-{_digest()}", lambda cfg: harness_verilog(cfg, depth_bits), BUILD_ARGS)


def write_inputs(job: dict, ports: list[Port], run_dir: Path) -> None:
    """Each source's beats as a $readmemh file in the run directory (one hex word a line)."""
    widths = {p.name: p.width for p in ports}
    for s in job["sources"]:
        digits = (widths[s["name"]] + 3) // 4
        text = "".join(f"{b:0{digits}x}\n" for b in s["beats"]) or "0\n"
        (run_dir / f"{s['name']}.hex").write_text(text)
    for p in ports:  # a source the job leaves idle still loads a file
        f = run_dir / f"{p.name}.hex"
        if p.is_input and not f.exists():
            f.write_text("0\n")
