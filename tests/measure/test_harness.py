"""Planning a case's rounds, and re-timing a case that something else disturbed."""

import pytest

from calibration.measure import harness
from calibration.profile.schema import LatencyStats


def _stats(median_ms: float, min_ms: float) -> LatencyStats:
    return LatencyStats(median_ms=median_ms, iqr_ms=0.1 * median_ms, min_ms=min_ms, mean_ms=median_ms,
                        stddev_ms=0.0, rounds=7, iterations=1)


def test_plan_fills_a_round_to_a_millisecond_and_the_budget_with_rounds():
    p = harness.plan(call_seconds=1e-5, budget=harness.Budget(seconds=1.0, min_rounds=7))
    assert p.iterations == 100  # 100 calls of 10 us make a 1 ms round
    assert p.rounds == 1000  # 1 s of 1 ms rounds
    slow = harness.plan(call_seconds=0.5, budget=harness.Budget(seconds=1.0, min_rounds=7))
    assert (slow.iterations, slow.rounds) == (1, 7)  # never fewer rounds than a median and IQR need


@pytest.mark.parametrize(("median", "minimum", "expected"), [(1.0, 0.9, False), (3.0, 1.0, True), (1.5, 1.0, False)])
def test_disturbed_means_a_median_far_above_the_fastest_round(median, minimum, expected):
    assert harness.disturbed(_stats(median, minimum)) is expected


def test_a_quiet_case_is_not_retimed():
    calls = []
    quiet = _stats(1.0, 0.95)
    kept = harness.retime_if_disturbed(quiet, lambda: calls.append(1), lambda: None, harness.Plan(1, 5))
    assert kept is quiet
    assert calls == []


def test_a_disturbed_case_is_retimed_and_the_quieter_attempt_kept_and_labelled():
    calls = []
    disturbed = _stats(median_ms=1e4, min_ms=1.0)  # 10 s median: any re-timing of a no-op is quieter
    kept = harness.retime_if_disturbed(disturbed, lambda: calls.append(1), lambda: None, harness.Plan(3, 5))
    assert kept.median_ms < disturbed.median_ms
    assert kept.rounds == 5 and kept.iterations == 3
    # each attempt: one warmup call, then 5 rounds of 3 calls (a no-op's own jitter may ask for the second)
    assert len(calls) in (16, 32)
    assert "re-timed" in kept.source and "3.0x" not in kept.source and "10000.0x" in kept.source


def test_a_retiming_that_is_no_quieter_keeps_the_original():
    original = _stats(median_ms=1e-6, min_ms=1e-7)  # disturbed, but faster than any real call
    kept = harness.retime_if_disturbed(original, lambda: None, lambda: None, harness.Plan(1, 5), retimes=2)
    assert kept is original
