"""The source file each accelkit module was imported from, as it was then: ``LOADED[name] = (mtime_ns, size)``.

Build keys hash the source files on disk (accelkit.sim.build.module_digest), but a process emits Verilog from
the code it imported. A process that imported a generator before its file was edited would file old Verilog
under the new key; `module_digest` compares the files with this record and refuses instead.
"""

from __future__ import annotations

import importlib.machinery
import os

LOADED: dict[str, tuple[int, int]] = {}

_get_code = importlib.machinery.SourceFileLoader.get_code


def _recording_get_code(self, fullname):
    if fullname == "accelkit" or fullname.startswith("accelkit."):
        try:
            st = os.stat(self.path)  # before the read: an edit in between reads as stale, never as fresh
            LOADED.setdefault(fullname, (st.st_mtime_ns, st.st_size))
        except OSError:
            pass
    return _get_code(self, fullname)


def install() -> None:
    if importlib.machinery.SourceFileLoader.get_code is not _recording_get_code:
        importlib.machinery.SourceFileLoader.get_code = _recording_get_code
