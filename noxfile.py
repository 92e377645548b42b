"""accelkit's sessions. CI runs the whole suite through .ci/run (the same as `nox -s tests`).

  nox -s tests        every test: golden models, cocotb regressions under Verilator, formal proofs, flows
  nox -s quick        the quick tier (under 3 minutes): golden models, config errors, one small RTL run per block
  nox -s sim          only the cocotb regressions under Verilator
  nox -s synth        only the yosys / nextpnr flow tests
  nox -s formal       only the formal proofs of the stream rules (yowasp-sby + yices)
  nox -s lint         ruff
  nox -s sweep        every block's parameter sweep (long: synthesis and place-and-route at every point)
  nox -s report       `accelkit report`: each block's default config end to end (about 10 minutes, cold)
  nox -s report_full  `accelkit report --full`: also the long figures (16-lane Hyft and float baseline, ...)
"""

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]
PY = "3.11"


def _install(session, extras="test"):
    session.install("-e", f".[{extras}]")


@nox.session(python=PY)
def tests(session):
    _install(session)
    session.run("pytest", "-n", "2", *session.posargs)


# The quick tier: every test that runs no long flow, plus the few marked `quick` (one small RTL run per block).
QUICK = "quick or not (sim or synth or formal or slow)"


@nox.session(python=PY)
def quick(session):
    """Golden models, config errors, one small RTL run per block: for local runs, under 3 minutes."""
    _install(session)
    session.run("pytest", "-n", "2", "-m", QUICK, *session.posargs)


@nox.session(python=PY)
def formal(session):
    """Formal proofs of every block's stream rules and bounded liveness."""
    _install(session)
    session.run("pytest", "-n", "2", "-m", "formal", *session.posargs)


@nox.session(python=PY)
def sim(session):
    """cocotb regressions under Verilator."""
    _install(session)
    session.run("pytest", "-n", "2", "-m", "sim", *session.posargs)


@nox.session(python=PY)
def synth(session):
    """yosys (ECP5, Xilinx), nextpnr-ecp5 and Verilator lint flows."""
    _install(session)
    session.run("pytest", "-n", "2", "-m", "synth", *session.posargs)


@nox.session(python=PY)
def lint(session):
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


SWEPT = ["dybit-array", "hyft", "sparse-conv"]


@nox.session(python=PY)
def sweep(session):
    """Every block's sweep into sweep/<block>/ (JSON, CSV, PNG). `nox -s sweep -- hyft` sweeps one block."""
    _install(session)
    for block in session.posargs or SWEPT:
        session.run("accelkit", "sweep", block, "-o", f"sweep/{block}")


@nox.session(python=PY)
def report(session):
    """The main job: `accelkit report` into report/."""
    _install(session, "test,minilm")
    session.run("accelkit", "report", *session.posargs)


@nox.session(python=PY)
def report_full(session):
    """`accelkit report --full` into report/: the long figures too (hours of synthesis, cached afterwards)."""
    _install(session, "test,minilm")
    session.run("accelkit", "report", "--full", *session.posargs)


@nox.session(python=PY)
def sim_speed(session):
    """Simulated cycles per second, the cocotb testbench against the streams inside the simulator, in one run."""
    _install(session)
    session.run("python", "-m", "accelkit.flows.sim_speed", "-o", "sim_speed", *session.posargs)


@nox.session(python=PY)
def see_a(session):
    """The reference workload on the RTL: SEE-A compiled for 3,868 MAC units, then 20 eye frames back to back
    through the whole 23-engine top under Verilator (a long build), bit-exact, interval against the model."""
    _install(session)
    session.run("accelkit", "network", "compile", "see-a", "--budget", "3868", "--frames", "eye:20", "-o", "see_a")
    session.run("accelkit", "network", "sim", "see-a", "--config", "see_a/config.json", "--frames", "eye:20")


@nox.session(python=PY)
def minilm(session):
    """Issue 12's model: each MiniLM Linear's DyBit widths chosen for the scalable array's cycles under a 0.99
    mean embedding cosine (about an hour on 2 busy cores), then every sentence with every Linear on the RTL."""
    _install(session)
    session.run("python", "-m", "accelkit.flows.minilm_mixed", "-o", "minilm_mixed")
    session.run("python", "-m", "accelkit.flows.minilm_rtl", "--modes", "minilm_mixed/minilm_mixed.json",
                "-o", "minilm_rtl")
