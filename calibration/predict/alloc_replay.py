"""Child process of :func:`calibration.predict.allocator.replay_faults`: replays allocations.

Reads ``[[block, bytes], ...]`` (bytes 0: free the block) on standard input, runs the
sequence ``FORWARDS`` times through ``posix_memalign`` (64-byte aligned, as PyTorch's CPU
allocator asks), writing every byte of each block as a kernel writes its output, and prints
the minor page faults of each pass as a JSON list. It imports neither torch nor numpy, so
its heap holds nothing but the replay.
"""

from __future__ import annotations

import ctypes
import json
import resource
import sys

ALIGNMENT = 64  # c10's gAlignment


def main(argv: list[str]) -> int:
    forwards = int(argv[1]) if len(argv) > 1 else 1
    events = json.load(sys.stdin)
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
                    print(f"posix_memalign({nbytes}) failed", file=sys.stderr)
                    return 1
                ctypes.memset(pointer, 1, nbytes)
                live[block] = pointer
            elif block in live:
                libc.free(live.pop(block))
        for pointer in live.values():  # whatever the sequence left live is dropped by the caller
            libc.free(pointer)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
