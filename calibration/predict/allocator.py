"""What a forward pass faults in under the process's allocator: its allocations replayed.

Eager PyTorch allocates every output and frees it after its last use. A caching allocator
(jemalloc, tcmalloc; glibc with ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``
raised, for blocks under 32 MiB) keeps the memory, so a steady forward faults nothing in.
glibc's defaults do not:
a block at or above its dynamic mmap threshold (128 KiB, raised by frees up to 32 MiB) is
mapped fresh and unmapped on free, and a free that leaves more than the trim threshold at
the top of the heap hands it back to the OS; either way the next forward page-faults the
memory in again, at about a microsecond per 4 KiB page on a VM. Whether that happens to a
block depends on every allocation before it, so no rule of thumb predicts it.

:func:`replay_faults` therefore replays the forward's allocation sequence (recorded by the
partitioner's example run, :func:`calibration.predict.trace.record_allocations`) through
the allocator itself: the same blocks allocated, written and freed in the same order for a
few forwards, counting the minor page faults of the steady ones. Emulating glibc's bins
instead was tried first and came out 0.4-0.9x of the measured faults on ResNet-50 and
ResNet-18 at batch 8.

How many pages a steady forward faults also depends on the heap it starts from (which small
blocks sit where, what earlier frees raised the thresholds to), and that is the process's
whole history: one model measured in four processes faulted 156-238 MiB per forward
(MobileNet-V2 batch 8; EfficientNet-B0 batch 8: 147-266 MiB), and one process moved 0-48 MiB
from forward to forward (a GPT-2 block at batch 8). So the replay runs from two heaps and
gives a range: a fork of this process (the heap the prediction is made in: the point
estimate) and a fresh process with this environment (the same ``LD_PRELOAD`` and
``MALLOC_*``; a heap holding nothing but the replay). Under glibc the range reaches down to
the blocks above 32 MiB, which it maps fresh whatever the history.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from calibration.predict import alloc_replay

PAGE = 4096
# glibc's largest dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): blocks above
# it are always mapped fresh and unmapped on free.
MMAP_THRESHOLD_MAX = 32 << 20
# Forwards replayed; the first ones bring the heap and glibc's thresholds to their steady
# state (two were enough on every reference and held-out model), the rest are counted.
FORWARDS = 6
WARM_FORWARDS = 2
REPLAY_TIMEOUT_S = 120
# A fork's replay touches a few pages of its own (the Python objects it makes land in pages
# it shares with the parent until written): a steady count this small is read as none.
FORK_NOISE_PAGES = 16

Event = tuple[int, int]  # (block, bytes): bytes > 0 allocates the block, 0 frees it


@dataclass(frozen=True)
class FaultReplay:
    """Pages one steady forward faults in, replayed from the heaps this module knows."""

    pages: int  # from this process's own heap (a fork of it), else from a fresh process
    low: int  # the fewest over those heaps; under glibc at most the blocks it always maps fresh
    high: int  # the most over those heaps
    own_heap: int | None  # replayed in a fork of this process (None: no fork here, or it failed)
    fresh_heap: int | None  # replayed in a fresh process (None: it failed)


def replay_faults(events: Sequence[Event], *, env: dict[str, str] | None = None) -> FaultReplay | None:
    """The forward's allocations replayed through this process's allocator; None where no
    replay could run (no ``resource`` module, no fork and a failed child).

    ``env`` replays under another environment (another allocator's settings) in a fresh
    process only: a fork keeps this process's allocator.
    """
    if not any(nbytes for _, nbytes in events):
        return FaultReplay(0, 0, 0, 0, 0)
    own = _steady(_forked(events)) if env is None else None
    own = 0 if own is not None and own <= FORK_NOISE_PAGES else own
    fresh = _steady(_fresh(events, env))
    found = [pages for pages in (own, fresh) if pages is not None]
    if not found:
        return None
    low = min(found)
    if detect(env).startswith("glibc"):
        low = min(low, always_fresh_pages(events))
    return FaultReplay(pages=found[0], low=low, high=max(found), own_heap=own, fresh_heap=fresh)


def always_fresh_pages(events: Sequence[Event]) -> int:
    """Pages of the blocks glibc maps fresh on every call whatever its thresholds: above 32 MiB."""
    return sum(-(-nbytes // PAGE) for _, nbytes in events if nbytes > MMAP_THRESHOLD_MAX)


def _steady(counts: list[int] | None) -> int | None:
    """The median of the counted forwards, after the warm ones."""
    if not counts or len(counts) <= WARM_FORWARDS:
        return None
    return int(statistics.median(counts[WARM_FORWARDS:]))


def _fresh(events: Sequence[Event], env: dict[str, str] | None) -> list[int] | None:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "calibration.predict.alloc_replay", str(FORWARDS)],
            input=json.dumps(list(events)), capture_output=True, text=True, timeout=REPLAY_TIMEOUT_S,
            env=dict(os.environ if env is None else env), check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _forked(events: Sequence[Event]) -> list[int] | None:
    """The replay in a fork of this process: the child starts from this heap (copy-on-write),
    runs nothing but the replay (no torch: a fork does not carry its threads) and exits."""
    if not hasattr(os, "fork"):
        return None
    try:
        read, write = os.pipe()
        with warnings.catch_warnings():  # Python 3.12+ warns about forking a threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # the child never returns into the caller's code
        status = 1
        try:
            os.close(read)
            # a collection would write to every object the parent made, faulting in copies of
            # its pages: counts that belong to the fork, not to the replay
            gc.disable()
            os.write(write, json.dumps(alloc_replay.replay(events, FORWARDS)).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    try:
        return json.loads(data) if os.waitstatus_to_exitcode(status) == 0 else None
    except ValueError:
        return None


# What changes how glibc's malloc hands memory back: its environment variables and tunables.
GLIBC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                  "GLIBC_TUNABLES")


def detect(env: dict[str, str] | None = None, loaded: Iterable[str] | None = None) -> str:
    """The allocator of this process, as its environment and loaded libraries say: a
    preloaded or linked jemalloc, tcmalloc or mimalloc, else glibc with the settings given.

    A name only: :func:`replay_faults` runs the replay under the same environment, so it
    measures what that allocator does rather than assuming it (glibc with
    ``MALLOC_MMAP_THRESHOLD_`` raised still maps blocks above 32 MiB fresh on every call).
    """
    env = dict(os.environ if env is None else env)
    libraries = list(loaded) if loaded is not None else _loaded_libraries()
    names = " ".join([env.get("LD_PRELOAD", ""), *libraries])
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in names:
            return name
    settings = [f"{key}={env[key]}" for key in GLIBC_SETTINGS if env.get(key)]
    return f"glibc ({', '.join(settings)})" if settings else "glibc (defaults)"


def _loaded_libraries() -> list[str]:
    try:
        with open("/proc/self/maps") as maps:
            return sorted({line.rsplit(None, 1)[-1] for line in maps if ".so" in line})
    except OSError:
        return []
