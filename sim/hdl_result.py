"""What a run of the in-simulator stream harness (accelkit.sim.hdl_streams) left in its run directory, checked
against its job: the one check both ways of running it share (under cocotb, `accelkit.sim.tb_hdl_streams`, or
with no cocotb, `run_streams(..., streams="native")`).

The harness writes, at the edge where it finishes: `status.txt` (cycles, timed out, the first broken stream
rule: port, rule, cycle; then every output port's count of beats taken), each sink's beats (`NAME.bin`) and the
cycle of every handshake on every port (`NAME.fires.bin`). The checks are the cocotb testbench's
(`accelkit.sim.tb_streams`): the stream rules on every port every cycle, the counts, and every beat against the
expected one.
"""

from __future__ import annotations

import array
import sys
from pathlib import Path

from .harness import first_mismatch
from .streams import RULE_PAYLOAD, RULE_VALID

# the harness's rule codes: what it saw, and the rule broken
RULES = {1: ("valid fell before the handshake", RULE_VALID),
         2: ("payload changed before the handshake", RULE_PAYLOAD)}


def read_words(path: Path, width: int = 32) -> list[int]:
    """The values the harness wrote with $fwrite("%u"): ceil(width/32) 32-bit words each, little-endian, least
    significant word first; none if the file was not written."""
    if not path.exists():
        return []
    data = path.read_bytes()
    nw = (width + 31) // 32
    if nw <= 2:  # (the array module rather than numpy: this runs in the simulator, whose start it would slow)
        words = array.array("I" if nw == 1 else "Q")
        assert words.itemsize == 4 * nw
        words.frombytes(data)
        if sys.byteorder == "big":
            words.byteswap()
        return words.tolist()
    n = 4 * nw
    return [int.from_bytes(data[i:i + n], "little") for i in range(0, len(data), n)]


def collect(job: dict, run_dir: Path, sim_seconds: float) -> dict:
    """The run's result (as `accelkit.sim.tb_streams` gives it), its `error` None when every check passed."""
    ports = job["ports"]  # [{name, width, is_input}] of the design, in the harness's order
    names = [p["name"] for p in ports]
    status_file = run_dir / "status.txt"
    snks = {s["name"]: s for s in job["sinks"]}
    widths = {p["name"]: p["width"] for p in ports}
    result = {"sinks": {n: read_words(run_dir / f"{n}.bin", widths[n]) for n in snks},
              "sink_fires": {n: read_words(run_dir / f"{n}.fires.bin") for n in snks},
              "source_fires": {s["name"]: read_words(run_dir / f"{s['name']}.fires.bin") for s in job["sources"]},
              "cycles": 0, "error": None, "sim_seconds": sim_seconds}
    if not status_file.exists():
        result["error"] = "the harness stopped without writing its status (see the simulator's output)"
        return result
    cycle, timed_out, err_port, err_rule, err_cycle, *counts = (int(w) for w in status_file.read_text().split())
    got = dict(zip([p["name"] for p in ports if not p["is_input"]], counts, strict=True))
    result["cycles"] = cycle
    if err_rule:
        what, name = RULES[err_rule]
        result["error"] = f"stream {names[err_port]}, cycle {err_cycle}: {what} (rule: {name})"
    elif timed_out:
        short = [f"{n}: {got[n]} of {s['count']} beats" for n, s in snks.items() if got[n] < s["count"]]
        result["error"] = (f"stream {', '.join(short) or 'sources'} after {job['timeout']} cycles: the design "
                           "hangs or drops beats")
    else:
        wrong = [f"stream {n}: {got[n]} beats, expected {s['count']}" for n, s in snks.items()
                 if got[n] != s["count"]]
        result["error"] = wrong[0] if wrong else first_mismatch(job["sinks"], result["sinks"])
    return result
