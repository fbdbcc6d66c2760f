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
reason. The alloc, dispatch and module families keep their one window too
(``SKIPPED_FAMILIES``).

A state can outlast the end-of-run windows: on a 2-vCPU VM whose second vCPU answered late
for a minute, both later windows of 26 of 45 batch-1 convs read x1.2-3.1 their first and
outvoted it. So each window is bracketed by a reading of a small parallel kernel
(``measure.canary``), and a window taken in the slow state and slower than one taken in the
fast state does not vote against it (the slow state only slows): the middle is taken of the
rest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from calibration.measure import canary, harness
from calibration.measure.fold import Record
from calibration.measure.kernels import Kernel, build
from calibration.profile.schema import LatencyStats

# Two medians of one kernel timed in the same state agree within a few percent (rounds of a
# 0.1 s window: within 5% here); states of a shared host differ by 1.2-2.2x
DISAGREE = 1.2
# cold and after_busy cases time their penalty against a warm twin in their own rounds; the
# alloc family prices the young heap of the run's start; the dispatch and module families are
# read by their fastest rounds, module form less kernel form (measure.fold.summarize), which a
# window taken from another state for one of the pair would skew
SKIPPED_FAMILIES = ("cold", "alloc", "dispatch", "module", "sequence")
# a later window's timed work: enough rounds for a median, short enough that re-timing the
# full grid's operation cases costs well under a minute
WINDOW_SECONDS = 0.1
WINDOW_MIN_ROUNDS = 7
# a run of one window a case re-times its slow-read cases for this long at most: a quick run
# is meant to take a minute (rebuilding a case's operands costs more than its window: 39
# cases took 27 s on a loaded host)
ONLY_SLOW_SECONDS = 8.0

# (kernel, plan) -> seconds per call of each round
TimeWindow = Callable[[Kernel, harness.Plan], list[float]]
# () -> the host's state canary in ms (measure.canary.canary_ms)
ReadCanary = Callable[[], float]


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


def later_window(first: LatencyStats, kernel: Kernel, time_window: TimeWindow, source: str) -> LatencyStats:
    """The kernel timed for one short window planned from its first window (``window_plan``)."""
    plan = window_plan(first)
    return harness.latency_from_samples(time_window(kernel, plan), plan.iterations, source=source)


def settle(first: LatencyStats, second: LatencyStats, third: LatencyStats | None = None,
           slow: Sequence[bool] = ()) -> LatencyStats:
    """The statistics a case keeps: its first window's where a later one agrees (or no third
    was timed), else those of the window whose median is the middle of the three; with every
    window's median in ``windows_ms``.

    ``slow`` flags the windows (first, second, third) taken while the host's vCPUs were in
    their slow state (``measure.canary``): where a window ran in the fast state, a slow one
    slower than every fast one does not vote (the slow state only slows), and the middle is
    taken of the rest (of two, the earlier). So a slow first window that a fast second one
    disputes gives way to it even where no third was timed."""
    if not disagree(first.median_ms, second.median_ms):
        return first.model_copy(update={"windows_ms": [first.median_ms, second.median_ms]})
    windows = [first, second] + ([third] if third is not None else [])
    flags = (list(slow) + [False] * 3)[:len(windows)]
    # the slow state only slows a kernel: a window taken in it that still ran no slower than
    # every fast one was slowed by nothing, and votes
    fast = [w.median_ms for w, s in zip(windows, flags, strict=True) if not s]
    voting = [w for w, s in zip(windows, flags, strict=True) if not s or w.median_ms <= min(fast)] if fast else windows
    flags = [all(w is not v for v in voting) for w in windows]  # those set aside
    middle = voting[0] if len(voting) == 2 else sorted(voting, key=lambda w: w.median_ms)[len(voting) // 2]
    if middle is not first:
        names = ("first", "second", "third")
        how = ("the middle of three windows kept" if len(voting) == 3 else
               f"the {names[next(i for i, w in enumerate(windows) if w is middle)]} kept, the "
               + " and ".join(n for n, s in zip(names, flags, strict=False) if s)
               + " taken while the host's vCPUs were slow (measure.canary) set aside")
        middle = middle.model_copy(update={"source": (
            f"{middle.source}: the first window's median {first.median_ms:.4g} ms disagreed with a later "
            f"one's {second.median_ms:.4g} ms by more than x{DISAGREE}; {how}")})
    return middle.model_copy(update={"windows_ms": [w.median_ms for w in windows]})


@dataclass(frozen=True)
class Outcome:
    records: list[Record]
    checked: int  # cases timed again
    disputed: int  # of those, first and second windows more than DISAGREE apart
    replaced: int  # of those, the case now keeps a later window
    seconds: float  # wall time of the later windows
    slow_windows: int = 0  # windows of the disputed cases read in the host's slow state (measure.canary)
    fastest_canary_ms: float | None = None  # the fastest canary reading, first windows' and later ones'


def _read_canary(device: str) -> float | None:
    return canary.canary_ms() if device == "cpu" else None


def recheck(records: Sequence[Record], *, time_window: TimeWindow | None = None,
            build_kernel: Callable = build, read_canary: ReadCanary | None = None, only_slow: bool = False,
            clock: Callable[[], float] = time.perf_counter) -> Outcome:
    """Each operation record but those of ``SKIPPED_FAMILIES``, timed again and settled.

    Two passes, each latest case first: every case's second window is at least the rest of
    the run away from its first, and the third window of a disputed case comes a pass after
    its second, not straight after it (back to back, two windows share one state of the host
    and would outvote the first by that alone). The alloc family is left alone: it prices page
    faults on the young heap it ran on at the start of the run, which the end of a run does
    not have (a 34 MiB fill_fresh timed 8.8 ms there and 1.3 ms at the end).

    Each later window is bracketed by two readings of the host's state canary, as the plugin
    brackets each first window (``Record.canary_ms``); the slower reading is the window's, and
    ``settle`` sets aside a window read slow (``canary.slow_states`` against the fastest
    reading of the run) where another ran fast. A window without a reading counts as fast.

    ``only_slow``: only the cases whose first window's reading was slow against the fastest
    first window's (a run of one window a case: those are the windows to doubt), latest
    first, for ``ONLY_SLOW_SECONDS`` at most; a case not reached keeps its one window.

    ``time_window``, ``build_kernel``, ``read_canary`` and ``clock`` are replaceable for tests.
    """
    start = clock()
    deadline = start + ONLY_SLOW_SECONDS if only_slow else math.inf

    def timed(record: Record, source: str) -> tuple[LatencyStats, float | None]:
        timer = time_window or (lambda k, p, device=record.case.device: _time_window(k, p, device))
        read = read_canary or (lambda device=record.case.device: _read_canary(device))
        before = read()
        window = later_window(record.latency, build_kernel(record.case), timer, source)
        after = read()
        return window, (None if before is None or after is None else max(before, after))

    # cold and after_busy cases (the only ones built as PreparedKernel) are among the skipped families
    order = [i for i in reversed(range(len(records))) if records[i].case.spec.family not in SKIPPED_FAMILIES]
    if only_slow:
        first_slow = canary.slow_states([r.canary_ms for r in records])
        order = [i for i in order if first_slow[i]]
    second, third = {}, {}
    for i in order:
        if clock() < deadline:
            second[i] = timed(records[i], "a second window at the end of the run")
    for i in second:
        if disagree(records[i].latency.median_ms, second[i][0].median_ms) and clock() < deadline:
            third[i] = timed(records[i], "a third window at the end of the run")
    fastest = canary.fastest_reading([*(r.canary_ms for r in records),
                                      *(reading for _, reading in [*second.values(), *third.values()])])
    out, slow_windows = list(records), 0
    for i, (window, reading) in second.items():
        later = third.get(i, (None, None))
        slow = canary.slow_states([records[i].canary_ms, reading, later[1]], fastest)
        if later[0] is not None:
            slow_windows += sum(slow)
        out[i] = replace(records[i], latency=settle(records[i].latency, window, later[0], slow))
    replaced = sum(out[i].latency.median_ms != records[i].latency.median_ms for i in second)
    return Outcome(records=out, checked=len(second), disputed=len(third), replaced=replaced,
                   seconds=clock() - start, slow_windows=slow_windows, fastest_canary_ms=fastest)
