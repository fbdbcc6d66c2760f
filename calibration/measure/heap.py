"""The C heap a kernel is timed on: steady, as a caching allocator leaves it.

Under glibc's defaults an eager op's output above the mmap threshold is mapped fresh and
faulted in on every call, and freed memory at the top of the heap is trimmed and faulted in
again: a batch-8 depthwise conv with a 26 MiB output ran 38 ms that way and 9 ms on a steady
heap. A profile entry is meant to be the kernel's steady time (the mapper prices page faults
apart, from the allocator the predicting process runs under), so operation and fusion cases
are timed with mmap and trimming off (every block from the heap, freed blocks reused), and
the ``alloc`` family, which prices a fresh page, with blocks above 32 MiB mapped fresh.

glibc only (``mallopt``); elsewhere, or under a preloaded allocator, nothing changes and
:func:`set_steady` says so. After a run the process keeps glibc's thresholds at their
dynamic maximum, fixed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # mallopt takes an int
# glibc's defaults once their dynamic threshold has risen as far as it goes (mallopt fixes
# it there): blocks above 32 MiB mapped fresh on every call, smaller ones reused from a heap
# trimmed above twice that, as the dynamic trim threshold follows
MMAP_THRESHOLD_MAX = 32 << 20
MAPPING = ((M_MMAP_MAX, 65536), (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX))
STEADY = ((M_MMAP_MAX, 0), (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, NEVER_TRIM))
MAPPED_BLOCKS = ((M_MMAP_MAX, 65536), (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX))


@functools.cache
def _glibc():
    """This process's glibc, or None where its C library is another."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt, libc.malloc_trim  # noqa: B018  (both or neither)
        return libc
    except (OSError, AttributeError):
        return None


def _mallopt():
    libc = _glibc()
    return libc.mallopt if libc is not None else None


_state: list[tuple[tuple[int, int], ...] | None] = [None]  # what this module last set; None: glibc's own


def _apply(settings: tuple[tuple[int, int], ...]) -> bool:
    mallopt = _mallopt()
    took = mallopt is not None and all(mallopt(param, value) == 1 for param, value in settings)
    if took:
        _state[0] = settings
    return took


def set_steady() -> bool:
    """Turn mmap and trimming off until :func:`set_mapping`; False where it could not."""
    return _apply(STEADY)


def set_mapping() -> bool:
    """glibc's thresholds at their dynamic maximum, fixed: blocks above 32 MiB mapped fresh."""
    return _apply(MAPPING)


@contextmanager
def operands_mapped() -> Iterator[bool]:
    """Within: blocks above 32 MiB are mapped, not carved from the steady heap, and go back to
    the OS when freed. For a case's own operands, allocated once before it is timed (STREAM's
    arrays, a cold case's flush buffer): on a steady heap every such block stays in the
    process after its case, and a gap one case leaves fits no larger array of the next; a
    full run on a 480 MiB-L3 machine (2 GiB STREAM arrays, 960 MiB flush buffers) peaked at
    19.7 GB of its 23.5 GiB that way. Timing is unchanged: the kernels write into these
    blocks in place, so no timed call maps anything. Yields whether the settings took; a heap
    this module has not made steady is left as it is (glibc maps such blocks already)."""
    took = _state[0] == STEADY and _apply(MAPPED_BLOCKS)
    try:
        yield took
    finally:
        if took:
            set_steady()


@contextmanager
def mapping_fresh() -> Iterator[bool]:
    """Within: glibc maps blocks above 32 MiB fresh, as its defaults do at most; the heap is
    steady again after. Yields whether the settings took. A free chunk of a grown steady heap
    still serves a request that fits it (its pages returned to the OS first, so they fault in
    once, not every call): a calibration run times the alloc family first, on a young heap."""
    took = set_mapping()
    if took:
        _glibc().malloc_trim(0)
    try:
        yield took
    finally:
        if took:
            set_steady()
