"""A save or probe killed with SIGKILL leaves the old profile or the new one, readable, and
the next run's check leaves no temporary file behind (tools/kill_saves.py; 50 kills per
mode are in the README's numbers, a few per mode here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calibration.profile.files import sweep

TOOL = Path(__file__).resolve().parents[2] / "tools" / "kill_saves.py"


@pytest.mark.parametrize("at", ["random", "fsync", "probe"])
@pytest.mark.parametrize("named", [False, True], ids=["unnamed", "named"])
def test_kills_during_saves_leave_a_valid_profile_and_no_stray_file(at, named):
    proc = subprocess.run([sys.executable, str(TOOL), "--kills", "2", "--at", at, *(["--named"] if named else [])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = proc.stdout.splitlines()[-1]
    assert "0 corrupt profiles" in summary and "0 stray files after the next run's check" in summary, summary
    if named and at == "probe":  # the probe's file exists while it is killed: the cleanup did work
        assert re.search(r"; [1-9]\d* kills left a temporary file", summary), summary


def test_sweep_removes_what_dead_writers_left_and_nothing_else(tmp_path):
    profile = tmp_path / "p.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    names = {
        f".p.json.{dead}.abcd1234.tmp": False,  # its writer is gone
        f".p.json.{dead}.abcd1234.probe": False,
        f".p.json.{os.getpid()}.abcd1234.tmp": True,  # a save in progress (this process)
        ".p.json.abcd1234.tmp": True,  # the older kind, without a pid, and young: may be in progress
        ".q.json.123.abcd1234.tmp": True,  # another profile's
        "notes.tmp": True,
    }
    for name in names:
        (tmp_path / name).write_text("x")
    stale = tmp_path / ".p.json.efgh5678.tmp"  # the older kind, an hour and more old
    stale.write_text("x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    removed = sorted(p.name for p in sweep(profile))

    assert removed == sorted([stale.name] + [name for name, kept in names.items() if not kept])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(name for name, kept in names.items() if kept)
