"""accelkit stands on its own: its data ships inside the package and nothing names a folder beside the repository."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from accelkit.golden.sparse_conv import default_frames_dir, load_frames

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ["asl_dvs_180x240", "dvsgesture_128x128", "ncaltech101_180x240", "nmnist_34x34", "roshambo17_64x64"]


def test_frames_load_from_the_package(monkeypatch):
    monkeypatch.delenv("ACCELKIT_EVENT_FRAMES", raising=False)
    d = default_frames_dir()
    assert d.is_relative_to(ROOT / "accelkit"), d
    assert sorted(load_frames()) == FRAMES
    assert (d / "LICENSE-ESDA").read_text().startswith("MIT License")


def test_wheel_ships_frames_and_licence(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("accelkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in [*(f"{n}.npz" for n in FRAMES), "LICENSE-ESDA", "README.md"]:
        assert f"accelkit/data/event_frames/{f}" in names, f"{f} missing from {wheel.name}"
    for f in ("verilator_main.cpp", "LICENSE-cocotb"):  # the in-simulator harness's C++ main and its licence
        assert f"accelkit/sim/{f}" in names, f"{f} missing from {wheel.name}"


def test_nothing_names_the_folder_beside_the_repository():
    needle = "../" + "shared"  # spelt in two parts so that this file does not match itself
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    hits = [f for f in tracked.split() if (ROOT / f).is_file()
            and needle.encode() in (ROOT / f).read_bytes()]
    assert hits == [], f"files naming {needle}: {hits}"
