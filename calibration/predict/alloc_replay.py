"""Replays a forward's allocations through this process's allocator and counts the faults.

:func:`replay` runs ``[[block, bytes], ...]`` (bytes 0: free the block) a number of times
through ``posix_memalign`` (64-byte aligned, as PyTorch's CPU allocator asks), writing every
byte of each block as a kernel writes its output, and returns the minor page faults of each
pass. :func:`calibration.predict.allocator.replay_faults` calls it in a fork of the
predicting process (the heap that process has) and, run as ``python -m
calibration.predict.alloc_replay FORWARDS`` with the events on standard input, in a fresh
process (a heap that holds nothing but the replay). It imports neither torch nor numpy.
"""

from __future__ import annotations

import ctypes
import json
import resource
import sys
from collections.abc import Sequence

ALIGNMENT = 64  # c10's gAlignment


class ReplayFailed(RuntimeError):
    pass


def replay(events: Sequence[Sequence[int]], forwards: int) -> list[int]:
    """Minor page faults of each of ``forwards`` passes over ``events``."""
    libc = ctypes.CDLL(None)
    libc.posix_memalign.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t]
    libc.posix_memalign.restype = ctypes.c_int
    libc.free.argtypes = [ctypes.c_void_p]
    counts = []
    for _ in range(forwards):
        live: dict[int, ctypes.c_void_p] = {}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for block, nbytes in events:
            if nbytes > 0:
                pointer = ctypes.c_void_p()
                if libc.posix_memalign(ctypes.byref(pointer), ALIGNMENT, nbytes) != 0:
                    raise ReplayFailed(f"posix_memalign({nbytes}) failed")
                ctypes.memset(pointer, 1, nbytes)
                live[block] = pointer
            elif block in live:
                libc.free(live.pop(block))
        for pointer in live.values():  # whatever the sequence left live is dropped by the caller
            libc.free(pointer)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return counts


def main(argv: list[str]) -> int:
    forwards = int(argv[1]) if len(argv) > 1 else 1
    try:
        counts = replay(json.load(sys.stdin), forwards)
    except ReplayFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
