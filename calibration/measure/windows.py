"""A second look at each case, later in the run: one window of a second is one state of the host.

A case is timed in one window of under a second. A shared VM holds a speed for seconds to
minutes and then moves to another: a 1x1 conv (24->144 channels, 56x56, batch 1) on two
vCPUs ran at 0.25, 0.29, 0.42 or 0.55 ms a call by the state of the host, each held for
several seconds, while a single-threaded call stayed at 0.32-0.45; two full profiles an hour
apart put that conv at 0.61 and 0.34 ms, each with rounds within 10% of their own median. A
window that fell in a rare state is a wrong entry with a tight spread, and every prediction
that stands on it is off by as much (the accuracy protocol then finds the model's own entries
re-timed at x0.56 of the profile and refuses the measurement). A case's rounds cannot see it:
they all ran in that one state.

So at the end of a run each operation case is timed again for a short window, seconds to
minutes after its first; where the two medians disagree by more than ``DISAGREE`` a third
window decides, and the case keeps the window whose median is the middle one (its own
statistics, not a blend of states). The medians of every window are kept in the entry
(``LatencyStats.windows_ms``) so that a reader sees how far the host moved. Cold cases keep
their one window: their cold / warm ratio is timed within the same rounds and holds in any
state. Fusion cases time the fused kernel interleaved with its unfused twin for the same
reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from calibration.measure import harness
from calibration.measure.fold import Record
from calibration.measure.kernels import ColdKernel, Kernel, build
from calibration.profile.schema import LatencyStats

# Two medians of one kernel timed in the same state agree within a few percent (rounds of a
# 0.1 s window: within 5% here); states of a shared host differ by 1.2-2.2x
DISAGREE = 1.2
# a later window's timed work: enough rounds for a median, short enough that re-timing the
# full grid's operation cases costs well under a minute
WINDOW_SECONDS = 0.1
WINDOW_MIN_ROUNDS = 7

# (kernel, plan) -> seconds per call of each round
TimeWindow = Callable[[Kernel, harness.Plan], list[float]]


def _time_window(kernel: Kernel, plan: harness.Plan, device: str) -> list[float]:
    return harness.time_rounds(kernel, harness.synchronizer(device), plan)


def window_plan(latency: LatencyStats, seconds: float = WINDOW_SECONDS) -> harness.Plan:
    """As many calls per round as the first window made; rounds that fill ``seconds``."""
    iterations = latency.iterations or 1
    round_seconds = iterations * latency.median_ms / 1e3
    budget = harness.Budget(seconds=seconds, min_rounds=WINDOW_MIN_ROUNDS)
    return harness.Plan(iterations=iterations, rounds=harness.rounds_for(round_seconds, budget))


def disagree(a_ms: float, b_ms: float, limit: float = DISAGREE) -> bool:
    low, high = sorted((a_ms, b_ms))
    return low <= 0 or high > limit * low


def settle(latency: LatencyStats, kernel: Kernel, time_window: TimeWindow) -> LatencyStats:
    """``latency`` (the case's first window) with its later windows' medians, or the later
    window that two of three agree around."""
    plan = window_plan(latency)
    second = harness.latency_from_samples(time_window(kernel, plan), plan.iterations,
                                          source="a later window at the end of the run")
    if not disagree(latency.median_ms, second.median_ms):
        return latency.model_copy(update={"windows_ms": [latency.median_ms, second.median_ms]})
    third = harness.latency_from_samples(time_window(kernel, plan), plan.iterations,
                                         source="a third window at the end of the run")
    windows = [latency, second, third]
    medians = [w.median_ms for w in windows]
    kept = sorted(windows, key=lambda w: w.median_ms)[1]
    if kept is not latency:
        kept = kept.model_copy(update={"source": (
            f"{kept.source}: the first window's median {latency.median_ms:.4g} ms disagreed with a later "
            f"one's {second.median_ms:.4g} ms by more than x{DISAGREE}; the middle of three windows kept")})
    return kept.model_copy(update={"windows_ms": medians})


@dataclass(frozen=True)
class Outcome:
    records: list[Record]
    checked: int  # cases timed again
    disputed: int  # of those, first and second windows more than DISAGREE apart
    replaced: int  # of those, the case now keeps a later window
    seconds: float  # wall time of the later windows


def recheck(records: Sequence[Record], *, time_window: TimeWindow | None = None,
            build_kernel: Callable = build, context: Callable = None) -> Outcome:
    """Each operation record but the cold ones, timed again (latest first, so that every case
    is at least the rest of the run away from its first window) and settled.

    ``context(case)`` is entered around a case's windows (the plugin's heap settings for the
    alloc family); ``time_window`` and ``build_kernel`` are replaceable for tests.
    """
    start = time.perf_counter()
    settled: dict[int, Record] = {}
    checked = disputed = replaced = 0
    for index in reversed(range(len(records))):
        record = records[index]
        if record.warm_ms is not None:
            continue  # a cold case: its ratio to its warm twin was timed in its own rounds
        kernel = build_kernel(record.case)
        if isinstance(kernel, ColdKernel):
            continue
        timer = time_window or (lambda k, p, device=record.case.device: _time_window(k, p, device))
        if context is None:
            latency = settle(record.latency, kernel, timer)
        else:
            with context(record.case):
                latency = settle(record.latency, kernel, timer)
        del kernel
        checked += 1
        windows = latency.windows_ms
        disputed += len(windows) > 2
        replaced += latency.median_ms != record.latency.median_ms
        settled[index] = replace(record, latency=latency)
    out = [settled.get(i, r) for i, r in enumerate(records)]
    return Outcome(records=out, checked=checked, disputed=disputed, replaced=replaced,
                   seconds=time.perf_counter() - start)
