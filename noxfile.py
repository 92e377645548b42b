"""accelkit's sessions. `nox -s tests` is what CI runs (through .ci/run)."""

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]
PY = "3.11"


@nox.session(python=PY)
def tests(session):
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "2", *session.posargs)


@nox.session(python=PY)
def sim(session):
    """cocotb regressions under Verilator."""
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "2", "-m", "sim", *session.posargs)


@nox.session(python=PY)
def lint(session):
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
