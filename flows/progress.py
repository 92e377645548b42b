"""Progress of long commands: one flushed line per step when the output is not a terminal, a live display when
it is.

A command opens a `task`; the code below it, at any depth, marks its long steps with `step` and its finished
units of work with `advance`:

    with progress.task("sweep dybit-array", total=16):
        with progress.step("dybit-array (rows=2): yosys ecp5, xilinx area"):
            ...
        progress.advance("measured dybit-array (rows=2)")

When stdout is not a terminal (a log file, a pipe, CI), every step, advance and log is one line on stdout,
flushed at once, after the seconds since the task began:

    [  12.3s] dybit-array (rows=2): yosys ecp5, xilinx area ...
    [ 301.9s] sweep dybit-array: measured dybit-array (rows=2) (3/16)

On an interactive terminal (or with TTY_INTERACTIVE=1), a rich live display shows the running step, the count
done and the elapsed time, and prints advances and log lines above itself. Outside a task (library calls, tests,
worker processes, whether forked or spawned) `step`, `advance` and `log` do nothing, so library code marks its
steps freely.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

_STACK: list[Task] = []  # the open tasks of this process, innermost last
_LOCK = threading.RLock()


class Task:
    """One command's progress (see the module docstring). A task opened inside another shares its clock and
    its display."""

    def __init__(self, title: str, total: int | None = None, file: IO[str] | None = None,
                 live: bool | None = None):
        self.title, self.total, self.done = title, total, 0
        self._file = file  # None: sys.stdout at the time of each write
        self._live = live  # None: live on an interactive terminal (see `_interactive`)
        self._prog = None  # the rich.progress.Progress on a terminal
        self._id = None
        self._description = title
        self._owner = False
        self._pid = os.getpid()
        self.start = time.monotonic()

    @property
    def file(self) -> IO[str]:
        return self._file or sys.stdout

    @property
    def live(self) -> bool:
        return self._prog is not None

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def __enter__(self) -> Task:
        with _LOCK:
            outer = current()
            if outer is not None:
                self.start, self._prog = outer.start, outer._prog
                self._file = self._file or outer._file
            else:
                self.start = time.monotonic()
                from rich.console import Console

                console = Console(file=self._file)
                if _interactive(console) if self._live is None else self._live:
                    from rich import progress as rp

                    self._prog = rp.Progress(rp.SpinnerColumn(), rp.TextColumn("{task.description}"),
                                             rp.BarColumn(), rp.MofNCompleteColumn(), rp.TimeElapsedColumn(),
                                             console=console)
                    self._owner = True
                    self._prog.start()
            if self._prog is not None:
                self._id = self._prog.add_task(self.title, total=self.total)
            else:
                self._line(f"{self.title}" + (f": {self.total} to do" if self.total is not None else "") + " ...")
            _STACK.append(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        with _LOCK:
            _STACK.remove(self)
            if self._prog is None:
                if exc_type is None:
                    self._line(f"{self.title}: done")
            elif self._owner:
                self._prog.stop()
            else:
                self._prog.remove_task(self._id)

    def _line(self, text: str) -> None:
        with _LOCK:
            try:
                print(f"[{self.elapsed():6.1f}s] {text}", file=self.file, flush=True)
            except (OSError, ValueError):  # a closed pipe or file: progress is lost, the work goes on
                pass

    def _print(self, text: str) -> None:
        """A line of history: on a terminal above the live display, elsewhere on its own."""
        if self._prog is None:
            self._line(text)
        else:
            self._prog.console.print(f"[{self.elapsed():6.1f}s] {text}", markup=False, highlight=False)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """A long step: its line when it starts; on a terminal, the live display's description while it runs."""
        if self._prog is None:
            self._line(f"{what} ...")
            yield
            return
        before, self._description = self._description, f"{self.title}: {what}"
        self._prog.update(self._id, description=self._description)
        try:
            yield
        finally:
            self._description = before
            self._prog.update(self._id, description=before)

    def advance(self, what: str | None = None, n: int = 1) -> None:
        """`n` units of `total` done (`what`: which)."""
        with _LOCK:
            self.done += n
            count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
            if self._prog is not None:
                self._prog.update(self._id, advance=n)
            if what or self._prog is None:
                self._print(f"{self.title}: {what or 'done'} ({count})")

    def log(self, what: str) -> None:
        self._print(what)


def _interactive(console) -> bool:
    """Whether a live display suits `console`: rich's judgement when TTY_INTERACTIVE says (0 or 1), otherwise a
    real terminal only. rich alone would also animate into a log file when FORCE_COLOR or TTY_COMPATIBLE is set
    (as CI systems do for colour), and a log needs lines."""
    if os.environ.get("TTY_INTERACTIVE") in ("0", "1"):
        return console.is_interactive
    try:
        return console.is_interactive and console.file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def task(title: str, total: int | None = None, file: IO[str] | None = None, live: bool | None = None) -> Task:
    """A command's progress, as a context manager: `total` units of work (None: not counted), written to
    `file` (default stdout), live or as lines (default: live on a terminal)."""
    return Task(title, total, file=file, live=live)


def current() -> Task | None:
    """The innermost open task of this process (a forked child's inherited tasks are its parent's, not its own).
    Takes no lock, so that a child forked while another thread held one does not wait on it."""
    stack = _STACK[-1:]
    return stack[0] if stack and stack[0]._pid == os.getpid() else None


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Mark a long step of the current task (nothing outside one)."""
    t = current()
    if t is None:
        yield
    else:
        with t.step(what):
            yield


def advance(what: str | None = None, n: int = 1) -> None:
    t = current()
    if t is not None:
        t.advance(what, n)


def log(what: str) -> None:
    t = current()
    if t is not None:
        t.log(what)
