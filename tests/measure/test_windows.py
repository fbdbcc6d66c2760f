"""Later windows: a case timed again at the end of the run, settled by the middle of three
windows where the first two disagree. The timer is replaced: no assertion reads a timing."""

from __future__ import annotations

from dataclasses import replace

import pytest
from factories import record

from calibration.measure import windows
from calibration.measure.fold import Record
from calibration.measure.options import default_windows
from calibration.profile.schema import LatencyStats


def _latency(median_ms: float, iterations: int = 2) -> LatencyStats:
    return LatencyStats(median_ms=median_ms, iqr_ms=0.01 * median_ms, min_ms=0.9 * median_ms, mean_ms=median_ms,
                        stddev_ms=0.0, rounds=40, iterations=iterations)


def _windows(*medians_ms: float):
    """A timer whose successive windows have these medians (seconds per call, every round alike)."""
    plans = []
    queue = list(medians_ms)

    def time_window(kernel, plan):
        plans.append(plan)
        return [queue.pop(0) / 1e3] * plan.rounds

    return time_window, plans


def test_a_later_window_that_agrees_keeps_the_first_windows_statistics():
    first = _latency(1.0)
    timer, plans = _windows(1.1)  # within x1.2

    second = windows.later_window(first, lambda: None, timer, "a second window")
    kept = windows.settle(first, second)

    assert kept.median_ms == 1.0 and kept.rounds == 40 and kept.source == "pytest-benchmark"
    assert kept.windows_ms == [1.0, 1.1]
    # as many calls a round as the first window; rounds filling 0.1 s of 2-call rounds of 1 ms
    assert plans[0].iterations == 2 and plans[0].rounds == 50


@pytest.mark.parametrize(("second", "third", "kept_ms"), [
    (2.0, 1.05, 1.05),  # the first window was right: the third agrees with it, the middle of three is near it
    (2.0, 2.1, 2.0),  # the first window caught a fast state the machine left: two later windows agree
    (0.5, 0.55, 0.55),  # the first was slow
])
def test_windows_that_disagree_keep_the_middle_of_three(second, third, kept_ms):
    first = _latency(1.0)
    timer, plans = _windows(second, third)
    later = [windows.later_window(first, lambda: None, timer, name) for name in ("second", "third")]

    kept = windows.settle(first, *later)

    assert kept.windows_ms == [1.0, second, third]
    assert kept.median_ms == pytest.approx(kept_ms)
    if kept.median_ms != 1.0:
        assert "disagreed" in kept.source and "middle of three" in kept.source
        assert kept.rounds == plans[-1].rounds and kept.iterations == 2  # that window's own statistics


def test_a_third_window_where_the_first_two_agree_changes_nothing():
    first = _latency(1.0)
    kept = windows.settle(first, _latency(1.1), _latency(3.0))
    assert kept.median_ms == 1.0 and kept.windows_ms == [1.0, 1.1]


def test_disagree_is_a_ratio_beyond_the_limit_either_way():
    assert not windows.disagree(1.0, 1.19)
    assert windows.disagree(1.0, 1.21) and windows.disagree(1.21, 1.0)
    assert windows.disagree(0.0, 1.0)


def test_recheck_times_cases_latest_first_in_two_passes_and_leaves_cold_and_alloc_ones_alone():
    cold = Record(record("conv2d_cold", 2.0, N=1, CIN=8, COUT=8, H=8, W=8, K=3, STRIDE=1, PAD=1,
                         GROUPS=1).case, _latency(2.0), warm_ms=1.5)
    fresh = record("fill_fresh", 9.0, n=1 << 23)
    dispatch = record("dispatch", 0.002, n=1)
    first = record("relu", 1.0, n=1024)
    second = record("relu", 3.0, n=4096)
    third = record("relu", 2.0, n=16384)
    built = []

    def build_kernel(case):
        built.append(case.param_dict["n"])
        return lambda: None

    # pass 1, latest first: 16384 (agrees), 4096 (disagrees), 1024 (disagrees); pass 2: 4096, 1024
    timer, _ = _windows(2.1, 9.0, 5.0, 8.0, 2.0)

    out = windows.recheck([fresh, dispatch, first, cold, second, third], time_window=timer, build_kernel=build_kernel,
                          read_canary=lambda: 0.1)  # the host in one state throughout

    assert built == [16384, 4096, 1024, 4096, 1024]  # a third window a pass after the second, not straight after
    assert out.records[:2] == [fresh, dispatch] and out.records[3] is cold
    assert out.records[5].latency.windows_ms == [2.0, 2.1]
    assert out.records[4].latency.windows_ms == [3.0, 9.0, 8.0] and out.records[4].latency.median_ms == 8.0
    assert out.records[2].latency.windows_ms == [1.0, 5.0, 2.0] and out.records[2].latency.median_ms == 2.0
    assert (out.checked, out.disputed, out.replaced) == (3, 2, 2)


def test_recheck_leaves_a_cold_case_alone_by_its_family():
    # a cold case without its warm twin's time is still a cold kernel: never rebuilt, never re-timed
    rec = record("linear_cold", 1.0, B=1, IN=1024, OUT=1024)
    out = windows.recheck([rec], time_window=_windows()[0], build_kernel=lambda case: pytest.fail("built"))
    assert out.records == [rec] and out.checked == 0


def test_an_old_profile_without_windows_loads_with_none_recorded():
    data = _latency(1.0).model_dump()
    del data["windows_ms"]
    assert LatencyStats.model_validate(data).windows_ms == []


@pytest.mark.parametrize(("medians", "slow", "kept_ms", "set_aside"), [
    ((1.0, 2.5, 2.4), (False, True, True), 1.0, None),  # two slow windows do not outvote a fast first
    ((2.5, 1.0, 1.1), (True, False, False), 1.0, "the second kept, the first"),  # of two fast, the earlier
    ((2.5, 1.0, 2.6), (True, False, True), 1.0, "the second kept, the first and third"),
    ((1.0, 2.5, 2.4), (True, True, True), 2.4, None),  # all slow: the middle of three, as without a canary
    ((1.6, 1.3, 1.4), (False, True, True), 1.4, None),  # slow windows that ran faster than the fast one vote
    ((1.0, 1.3, 0.9), (False, True, True), 1.0, None),  # the slower slow window set aside; of the two left, the first
    ((1.0, 2.5, 2.4), (), 2.4, None),  # no readings: likewise
])
def test_windows_taken_while_the_host_was_slow_do_not_vote_against_a_fast_one(medians, slow, kept_ms, set_aside):
    first, second, third = (_latency(m) for m in medians)

    kept = windows.settle(first, second, third, slow)

    assert kept.median_ms == kept_ms and kept.windows_ms == list(medians)
    if set_aside:
        assert set_aside in kept.source and "slow" in kept.source
    else:
        assert "set aside" not in kept.source


def test_where_the_first_two_windows_agree_a_slow_state_changes_nothing():
    kept = windows.settle(_latency(1.0), _latency(1.1), _latency(0.5), (True, False, False))
    assert kept.median_ms == 1.0 and kept.windows_ms == [1.0, 1.1]


def test_recheck_reads_the_canary_around_each_later_window_and_against_the_runs_fastest_reading():
    fast_first = replace(record("relu", 1.0, n=1024), canary_ms=0.1)
    slow_first = replace(record("relu", 3.0, n=4096), canary_ms=0.45)
    unread = record("relu", 2.0, n=16384)  # no reading: counts as fast
    # pass 1, latest first: 16384, 4096, 1024, each disputed; pass 2: the same three
    timer, _ = _windows(6.0, 1.0, 2.0, 5.8, 1.05, 2.1)
    canaries = iter([0.4, 0.42,  # 16384's second window: slow
                     0.1, 0.12,  # 4096's second: fast
                     0.4, 0.41,  # 1024's second: slow
                     0.1, 0.1,  # 16384's third: fast
                     0.1, 0.11,  # 4096's third: fast
                     0.09, 0.5])  # 1024's third: the slower reading of its bracket counts: slow
    out = windows.recheck([fast_first, slow_first, unread], time_window=timer,
                          build_kernel=lambda case: (lambda: None), read_canary=lambda: next(canaries))

    # 1024: fast first window at 1.0, both later ones slow at 2.0 and 2.1: the first stands
    assert out.records[0].latency.median_ms == 1.0 and out.records[0].latency.windows_ms == [1.0, 2.0, 2.1]
    # 4096: its first window slow (0.45 > 1.5 x the run's fastest 0.1), the two fast later ones vote: the earlier
    assert out.records[1].latency.median_ms == 1.0 and "the second kept, the first" in out.records[1].latency.source
    # 16384: its slow second window does not vote; of the first and the fast third, the first
    assert out.records[2].latency.median_ms == 2.0 and out.records[2].latency.windows_ms == [2.0, 6.0, 5.8]
    assert (out.checked, out.disputed, out.replaced, out.slow_windows) == (3, 3, 1, 4)
    assert next(canaries, None) is None  # two readings around each of the six later windows


def test_a_run_of_one_window_a_case_times_again_only_the_cases_whose_window_read_slow():
    fast = replace(record("relu", 1.0, n=1024), canary_ms=0.1)
    slow = replace(record("relu", 3.0, n=4096), canary_ms=0.4)
    unread = record("relu", 2.0, n=16384)
    built = []
    timer, _ = _windows(1.0, 1.1)  # the slow case's second and third windows, both fast
    out = windows.recheck([fast, slow, unread], time_window=timer, read_canary=lambda: 0.1, only_slow=True,
                          build_kernel=lambda case: built.append(case.param_dict["n"]) or (lambda: None))

    assert built == [4096, 4096]
    assert out.records[0] is fast and out.records[2] is unread
    assert out.records[1].latency.median_ms == 1.0 and out.records[1].latency.windows_ms == [3.0, 1.0, 1.1]
    assert (out.checked, out.disputed, out.replaced) == (1, 1, 1)


@pytest.mark.parametrize(("quick", "workload", "expected"), [
    (False, False, 2), (True, False, 1), (True, True, 2), (False, True, 2)])
def test_a_quick_grid_takes_one_window_a_case_and_a_workload_calibration_two(quick, workload, expected):
    assert default_windows(quick=quick, workload=workload) == expected


def test_a_run_of_one_window_a_case_re_times_its_slow_read_cases_for_a_bounded_time():
    slow = [replace(record("relu", 3.0, n=1024 << k), canary_ms=0.4) for k in range(4)]
    fastest = replace(record("relu", 1.0, n=512), canary_ms=0.1)
    now = [0.0]

    def timer(kernel, plan):  # each window takes 3 s of the fake clock, and runs fast
        now[0] += 3.0
        return [1.0 / 1e3] * plan.rounds

    out = windows.recheck([fastest, *slow], time_window=timer, build_kernel=lambda case: (lambda: None),
                          read_canary=lambda: 0.1, only_slow=True, clock=lambda: now[0])

    # latest first: the second windows of the last three fill the 8 s (0, 3, 6 s in), no third;
    # each read fast against its slow-read first window, which gives way to it
    assert windows.ONLY_SLOW_SECONDS == 8.0
    assert [(r.latency.median_ms, r.latency.windows_ms) for r in out.records[2:]] == [(1.0, [3.0, 1.0])] * 3
    assert all("the second kept, the first taken while the host's vCPUs were slow" in r.latency.source
               for r in out.records[2:])
    assert out.records[1] is slow[0] and out.records[0] is fastest
    assert (out.checked, out.disputed, out.replaced) == (3, 0, 3)
