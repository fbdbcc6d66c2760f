"""Which state a shared host's vCPUs are in, read from one small parallel kernel.

On a 2-vCPU VM a 16->16 channel 3x3 conv at 32 x 32 (batch 1) ran 0.11-0.15 ms a call on two
threads in one state of the host and 0.38-0.45 ms in another, each state held for seconds
to tens of seconds and the two about equally common within an hour, while the same conv on
one thread ran 0.10 ms throughout and the guest's steal time read 0. The second vCPU answers
late in that state: a kernel that meets its threads at a barrier many times a millisecond
(batch-1 convs of 0.06-0.5 ms) runs x1.5-3 slower, one of several ms x1.0-1.3. A full
profile's end-of-run windows (``measure.windows``) fell wholly into it once: 26 of 45 convs
read x1.2-3.1 their first window, none faster, and two slow windows outvoted each fast first
one; the same family timed alone read x0.6-1.3.

The canary is that conv, timed for a few milliseconds around a window. A window whose canary
ran more than ``SLOW`` times the fastest canary of the run was taken in the slow state.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable, Sequence

# the two states differ by x2.5-4 on the canary; calls within one state by up to x1.4
SLOW = 1.5
CALLS = 15


@functools.cache
def _conv() -> Callable[[], object]:
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 32, 32, generator=generator)
    weight = torch.randn(16, 16, 3, 3, generator=generator)

    def call():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, weight, padding=1)

    return call


def canary_ms(calls: int = CALLS) -> float:
    """The canary conv's median ms a call over ``calls`` calls (after one untimed)."""
    if calls < 1:
        raise ValueError(f"calls={calls}: the canary needs at least one timed call")
    conv = _conv()
    conv()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        conv()
        samples.append(time.perf_counter() - start)
    return 1e3 * statistics.median(samples)


def fastest_reading(readings: Iterable[float | None]) -> float | None:
    """The fastest of these canary readings; None where none was taken."""
    known = [r for r in readings if r is not None and r > 0]
    return min(known) if known else None


def slow_states(readings: Sequence[float | None], fastest: float | None = None) -> list[bool]:
    """For each canary reading, whether it was taken in the slow state: above ``SLOW`` times
    the fastest reading (of ``readings``, or ``fastest`` where given). A missing reading
    (None) counts as not slow."""
    floor = fastest if fastest is not None else fastest_reading(readings)
    if floor is None or floor <= 0:
        return [False] * len(readings)
    return [r is not None and r > SLOW * floor for r in readings]
