"""SIGKILL a process at random points while it saves a profile, and check what each kill left.

A writer process loads a profile of about 1.5 MB (600 entries with their raw samples) and
saves it again and again under new hardware names, probing the directory's writability
before every other save, as a calibration run does, until it is killed with SIGKILL: after
a random delay, or the moment it enters an fsync of a save, or the moment its writability
probe has created its file (the writer announces those points and pauses there briefly, so
that the kill lands inside them). The profile must then load and be either the one before
or one the writer saved; any other file in the directory is a stray. The next save or
probe of the profile (here: a writability check, as the next run starts with) must leave
no stray behind.

    python tools/kill_saves.py --kills 50                     # random points, O_TMPFILE (Linux)
    python tools/kill_saves.py --kills 50 --at fsync --named  # in fsync, named temporary files

Exit status 0 when every kill left a valid profile and no stray survived the next check.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import os
import sys
import tempfile
import time

from calibration.profile import files
from calibration.profile.storage import check_writable, load_calibration

path, mode, at, run = sys.argv[1:5]


def announce():
    print("at", flush=True)
    time.sleep(0.05)  # long enough for the SIGKILL to land here


if mode == "named":
    files._open_unnamed = lambda directory: None  # take the fallback: a named temporary file
if at == "fsync":
    real_fsync = os.fsync

    def fsync(fd):
        announce()
        real_fsync(fd)

    os.fsync = fsync
elif at == "probe":
    real_mkstemp, real_open_unnamed = tempfile.mkstemp, files._open_unnamed

    def mkstemp(*args, **kwargs):
        made = real_mkstemp(*args, **kwargs)
        if made[1].endswith(".probe"):
            announce()
        return made

    def open_unnamed(directory):
        fd = real_open_unnamed(directory)
        if fd is not None and probing:
            announce()
        return fd

    tempfile.mkstemp, files._open_unnamed = mkstemp, open_unnamed
cal = load_calibration(path)
print("ready", flush=True)
i = 0
while True:
    i += 1
    if i % 2 or at == "probe":
        probing = True
        check_writable(path)
        probing = False
    cal.metadata.hardware_name = f"run {run} save {i}"
    cal.save(path)
"""


def _profile(path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from factories import metadata, record

    from calibration.measure.fold import fold

    records = [record("stream_triad", 0.01 + n / 1e6, n=n) for n in range(1024, 1624)]
    for r in records:
        r.latency.samples_ms[:] = [r.latency.median_ms * (1 + i / 1000) for i in range(200)]
    fold(records, metadata(hardware_name="before")).save(path)


def kill_once(folder: Path, named: bool, at: str, delay: float, run: int) -> tuple[str, list[str], list[str]]:
    """(what the profile holds: 'old', 'new' or why it is corrupt; stray files right after
    the kill; strays after the next run's check)."""
    from calibration.profile.storage import ProfileError, check_writable, load_calibration

    path = folder / "profile.json"
    before = load_calibration(path).metadata.hardware_name
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "named" if named else "unnamed", at, str(run)],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert writer.stdout.readline().strip() == "ready"
        if at == "random":
            try:
                writer.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
        else:  # the first time the writer reaches the point, or the second
            for _ in range(1 + (delay > 0.2)):
                assert writer.stdout.readline().strip() == "at"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    strays = sorted(p.name for p in folder.iterdir() if p.name != path.name)
    try:
        held = load_calibration(path).metadata.hardware_name
    except ProfileError as exc:
        held = f"corrupt: {exc}"
    outcome = "old" if held == before else "new" if held.startswith(f"run {run} save ") else held
    check_writable(path)  # what the next run does first
    left = sorted(p.name for p in folder.iterdir() if p.name != path.name)
    return outcome, strays, left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--named", action="store_true", help="force the named-temporary-file fallback")
    parser.add_argument("--at", choices=("random", "fsync", "probe"), default="random",
                        help="kill after a random delay, or inside a save's fsync, or while the probe's file exists")
    parser.add_argument("--max-delay", type=float, default=0.4, help="seconds after the writer is ready")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    rng = random.Random(args.seed)
    outcomes = {"old": 0, "new": 0}
    corrupt = strays_after_kill = strays_after_check = 0
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        _profile(folder / "profile.json")
        for run in range(args.kills):
            outcome, strays, left = kill_once(folder, args.named, args.at, rng.uniform(0.0, args.max_delay), run)
            if outcome in outcomes:
                outcomes[outcome] += 1
            else:
                corrupt += 1
                print(f"kill {run}: {outcome}")
            strays_after_kill += bool(strays)
            strays_after_check += len(left)
    mode = "named temporary files" if args.named else "unnamed (O_TMPFILE) temporary files"
    where = {"random": "at random points", "fsync": "inside a save's fsync", "probe": "during the probe"}[args.at]
    print(f"{args.kills} kills {where} ({mode}): {corrupt} corrupt profiles ({outcomes['old']} held the profile "
          f"before the save, {outcomes['new']} a saved one); {strays_after_kill} kills left a temporary file; "
          f"{strays_after_check} stray files after the next run's check")
    return 0 if corrupt == 0 and strays_after_check == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
