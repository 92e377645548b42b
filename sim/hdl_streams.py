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

import numpy as np
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

module accelkit_source #(parameter int W = 8, parameter int AB = 12, parameter string FILE = "src.bin",
                         parameter string FIRES = "src.fires.bin") (
  input logic clk, input logic rst, input logic [31:0] cycle, input logic [31:0] count,
  input logic [15:0] gap, input logic [31:0] seed, input logic start, input logic dump,
  output logic valid, output logic [W-1:0] payload, input logic ready, output logic done);
  logic [W-1:0] mem [0:(1 << AB) - 1];
  logic [31:0] fires [0:(1 << AB) - 1];
  logic [31:0] idx, rng, rng_n;
  logic presenting;
  string dir;
  integer fd, got;
  initial begin  // the beats, ceil(W/8) bytes each, most significant first
    if (!$value$plusargs("accelkit_dir=%s", dir)) dir = ".";
    fd = $fopen({dir, "/", FILE}, "rb");
    if (fd != 0) begin got = $fread(mem, fd); $fclose(fd); end
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
  end
  always @(posedge clk) if (dump && idx != 0) begin  // the cycle of every handshake, 32-bit words
    fd = $fopen({dir, "/", FIRES}, "wb");
    for (int i = 0; i < idx; i++) $fwrite(fd, "%u", fires[i]);
    $fclose(fd);
  end
endmodule

module accelkit_sink #(parameter int W = 8, parameter int AB = 12, parameter string FILE = "snk.bin",
                       parameter string FIRES = "snk.fires.bin") (
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
  integer fd;
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
  end
  always @(posedge clk) if (dump && kept != 0) begin
    fd = $fopen({dir, "/", FILE}, "wb");  // the beats taken, 32-bit words least significant first
    for (int i = 0; i < kept; i++) $fwrite(fd, "%u", mem[i]);
    $fclose(fd);
    fd = $fopen({dir, "/", FIRES}, "wb");  // and the cycle of each
    for (int i = 0; i < kept; i++) $fwrite(fd, "%u", fires[i]);
    $fclose(fd);
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


SETTINGS_HEAD = 3  # settings words before the ports': seed, timeout, drain
SETTINGS_PER_PORT = 4  # per port: enable, count, gap or stall threshold, the sources it waits for (a bit mask)


def harness_verilog(cfg: BlockConfig, depth_bits: int) -> str:
    """The design (module DUT) and the harness around it (module TOP, ports clk and dumped only)."""
    block = block_for_config(cfg)
    ports = stream_ports(cfg)
    srcs = [p for p in ports if p.is_input]
    snks = [p for p in ports if not p.is_input]
    dut = verilog.convert(block.build(cfg), name=DUT, emit_src=False)
    n_settings = SETTINGS_HEAD + SETTINGS_PER_PORT * len(ports)
    body = [
        "  // reset for the first 3 rising edges (cycle 0 is the first edge after them), from a counter: an input",
        "  // the C++ loop drove would make Verilator re-evaluate everything depending on it at every edge",
        "  logic [1:0] boot = 0;",
        "  logic rst;",
        "  assign rst = boot != 3;",
        "  always_ff @(posedge clk) if (rst) boot <= boot + 1;",
        "  string dir;",
        f"  logic [31:0] settings [0:{n_settings - 1}];",
        "  initial begin",
        "    if (!$value$plusargs(\"accelkit_dir=%s\", dir)) dir = \".\";",
        "    $readmemh({dir, \"/settings.hex\"}, settings);",
        "  end",
        "  logic [31:0] seed, timeout, drain, cycle, err_port, err_cycle;",
        "  logic [1:0] err_rule;",
        "  logic finished, timed_out;",
        "  assign seed = settings[0];",
        "  assign timeout = settings[1];",
        "  assign drain = settings[2];",
    ]
    conns = [".clk(clk)", ".rst(rst)"]
    for k, p in enumerate(ports):
        n, w = p.name, SETTINGS_HEAD + SETTINGS_PER_PORT * k
        body.append(f"  logic {n}_valid, {n}_ready; logic [{p.width - 1}:0] {n}_payload;")
        conns += [f".{p.name}__valid({n}_valid)", f".{p.name}__ready({n}_ready)",
                  f".{p.name}__payload({n}_payload)"]
        body.append(f"  logic {n}_enable; logic [31:0] {n}_count; logic [15:0] {n}_prob;")
        body.append(f"  assign {n}_enable = settings[{w}][0];")
        body.append(f"  assign {n}_count = settings[{w + 1}];")
        body.append(f"  assign {n}_prob = settings[{w + 2}][15:0];")
        body.append(f"  logic [1:0] {n}_rule; logic [31:0] {n}_at;")
        body.append(f"  accelkit_rules #(.W({p.width})) {n}_rules(.clk(clk), .rst(rst), .enable({n}_enable), "
                    f".cycle(cycle), .valid({n}_valid), .ready({n}_ready), .payload({n}_payload), "
                    f".rule({n}_rule), .at({n}_at));")
    n_src = max(1, len(srcs))
    for k, p in enumerate(srcs):
        n, w = p.name, SETTINGS_HEAD + SETTINGS_PER_PORT * ports.index(p)
        body.append(f"  logic [{n_src - 1}:0] {n}_after;")
        body.append(f"  assign {n}_after = settings[{w + 3}][{n_src - 1}:0];")
        # a source that waits for this one starts a cycle after its last handshake, as the Python source does
        # (it resumes at the falling edge after the one where its predecessor finished)
        body.append(f"  logic {n}_done, {n}_done_d;")
        body.append(f"  always_ff @(posedge clk) {n}_done_d <= !rst && {n}_done;")
        body.append(f"  accelkit_source #(.W({p.width}), .AB({depth_bits}), .FILE(\"{n}.bin\"), "
                    f".FIRES(\"{n}.fires.bin\")) {n}_src(.clk(clk), .rst(rst), .cycle(cycle), .count({n}_count), "
                    f".gap({n}_prob), .seed(seed ^ 32'h{(0x9E3779B9 * (k + 1)) & 0xFFFFFFFF:08x}), "
                    f".start(&(src_done | ~{n}_after)), .dump(dump), .valid({n}_valid), "
                    f".payload({n}_payload), .ready({n}_ready), .done({n}_done));")
    for k, p in enumerate(snks):
        n = p.name
        body.append(f"  logic [31:0] {n}_got;")
        body.append(f"  accelkit_sink #(.W({p.width}), .AB({depth_bits}), .FILE(\"{n}.bin\"), "
                    f".FIRES(\"{n}.fires.bin\")) {n}_snk(.clk(clk), .rst(rst), .cycle(cycle), .enable({n}_enable), "
                    f".stall({n}_prob), .seed(seed ^ 32'h{(0x85EBCA6B * (k + 1)) & 0xFFFFFFFF:08x}), .dump(dump), "
                    f".valid({n}_valid), .payload({n}_payload), .ready({n}_ready), .n({n}_got));")
    done_bits = [f"{p.name}_done_d" for p in srcs] or ["1'b1"]
    body.append(f"  logic [{n_src - 1}:0] src_done;")
    body.append(f"  assign src_done = {{{', '.join(reversed(done_bits))}}};")
    all_sent = " && ".join([f"{p.name}_done" for p in srcs] or ["1'b1"])
    all_got = " && ".join([f"(!{p.name}_enable || {p.name}_got >= {p.name}_count)" for p in snks] or ["1'b1"])
    broken = " || ".join(f"{p.name}_rule != 0" for p in ports) or "1'b0"
    first = "\n".join(
        f"      {'if' if k == 0 else 'else if'} ({p.name}_rule != 0) begin err_port <= {k}; "
        f"err_rule <= {p.name}_rule; err_cycle <= {p.name}_at; end" for k, p in enumerate(ports))
    got = "".join(f", {p.name}_got" for p in snks)
    body.append(f"""\
  logic complete, dump;
  logic [31:0] drained;
  integer status;
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
  end
  // the run's outcome, at the edge where the sinks write their beats: cycles, timed out, the first broken
  // rule (port, rule, cycle), then every sink's count of beats taken
  always @(posedge clk) if (dump) begin
    status = $fopen({{dir, "/status.txt"}}, "w");
    $fwrite(status, "%0d %0d %0d %0d %0d{' %0d' * len(snks)}\\n", cycle, timed_out, err_port, err_rule, err_cycle{got});
    $fclose(status);
  end""")
    # the model is built without --public-flat-rw: cocotb sees the top module and its two ports only
    top = (f"module {TOP}(input logic clk /*verilator public_flat_rw*/, "
           f"output logic dumped /*verilator public_flat_rw*/);\n  /*verilator public_module*/\n" +
           "\n".join(body) +
           f"\n  {DUT} dut(" + ", ".join(conns) + ");\nendmodule\n")
    return dut + _LIBRARY + top


def depth_bits_for(job: dict) -> int:
    """The memories' address bits for a job: every source's beats and every sink's count (plus room to catch
    a few extra beats) fit; a power of two from 2**MIN_DEPTH_BITS up, so similar jobs share a model."""
    need = max([len(s["beats"]) for s in job["sources"]] + [s["count"] + 64 for s in job["sinks"]] + [1])
    return max(MIN_DEPTH_BITS, (need - 1).bit_length())


MAIN = Path(__file__).with_name("verilator_main.cpp")  # cocotb's Verilator main plus accelkit_run()


def _digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes() + MAIN.read_bytes()).hexdigest()[:10]


# cocotb's runner makes every signal visible to VPI (--public-flat-rw), which keeps Verilator from optimising
# the model (four times slower here); nothing reads the harness through VPI. -rdynamic exports accelkit_run()
# to the testbench (ctypes).
BUILD_ARGS = ("--no-public-flat-rw", "-LDFLAGS", "-rdynamic")


def hdl_variant(depth_bits: int) -> Variant:
    return Variant(f"hdl{depth_bits}-{_digest()}", lambda cfg: harness_verilog(cfg, depth_bits), BUILD_ARGS,
                   main=MAIN)


PROB = 1 << 16


def threshold(p: float) -> int:
    """A probability as the 16-bit threshold the harness compares its draws with (0 never, 65535 almost always)."""
    return min(PROB - 1, max(0, round(p * PROB)))


def settings_words(job: dict, ports: list[Port]) -> list[int]:
    """The harness's settings (module TOP's `settings` memory): see SETTINGS_HEAD and SETTINGS_PER_PORT."""
    srcs = {s["name"]: s for s in job["sources"]}
    snks = {s["name"]: s for s in job["sinks"]}
    src_names = [p.name for p in ports if p.is_input]
    words = [(job["seed"] * 0x2545F491 + 1) & 0xFFFFFFFF or 1,
             min(job["timeout"] + 64, (1 << 32) - 1),  # the harness counts cycles in 32 bits
             job.get("drain", 16)]
    for p in ports:
        if p.is_input:
            s = srcs.get(p.name)
            after = s.get("after") if s else None
            words += [int(s is not None), len(s["beats"]) if s else 0, threshold(s.get("gap", 0.0)) if s else 0,
                      (1 << src_names.index(after)) if after else 0]
        else:
            s = snks.get(p.name)
            words += [int(s is not None), s["count"] if s else 0, threshold(s.get("stall", 0.0)) if s else 0, 0]
    return words


def beats_bytes(beats: list[int], width: int) -> bytes:
    """Beats as the harness's sources read them ($fread): ceil(width/8) bytes each, most significant first."""
    nb = (width + 7) // 8
    if width <= 64:
        return np.asarray(beats, dtype=np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - nb:].tobytes()
    return b"".join(b.to_bytes(nb, "big") for b in beats)


def write_inputs(job: dict, ports: list[Port], run_dir: Path) -> None:
    """The harness's settings ($readmemh) and each source's beats (binary, `beats_bytes`) in the run directory."""
    (run_dir / "settings.hex").write_text("".join(f"{w:08x}\n" for w in settings_words(job, ports)))
    widths = {p.name: p.width for p in ports}
    for s in job["sources"]:
        (run_dir / f"{s['name']}.bin").write_bytes(beats_bytes(s["beats"], widths[s["name"]]))
    for p in ports:  # a source the job leaves idle opens an empty file
        f = run_dir / f"{p.name}.bin"
        if p.is_input and not f.exists():
            f.write_bytes(b"")
