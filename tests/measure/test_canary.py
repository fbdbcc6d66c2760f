"""The host's state canary: which readings count as slow. No assertion reads a timing."""

from __future__ import annotations

import math

import pytest

from calibration.measure import canary


def test_a_reading_over_slow_times_the_fastest_is_the_slow_state():
    assert canary.slow_states([0.1, 0.4, None, 0.14, 0.151]) == [False, True, False, False, True]


def test_the_fastest_reading_can_come_from_elsewhere_in_the_run():
    assert canary.slow_states([0.4, 0.45], fastest=0.1) == [True, True]
    assert canary.slow_states([0.4, 0.45]) == [False, False]  # alone, they are the fastest


def test_no_reading_flags_nothing():
    assert canary.slow_states([None, None]) == [False, False]
    assert canary.slow_states([]) == []


def test_the_canary_reads_a_time_a_call():
    ms = canary.canary_ms(calls=3)
    assert math.isfinite(ms) and ms > 0


def test_the_canary_needs_a_timed_call():
    with pytest.raises(ValueError, match="calls=0"):
        canary.canary_ms(calls=0)


def test_the_fastest_reading_skips_the_cases_without_one():
    assert canary.fastest_reading([None, 0.4, 0.12, None]) == 0.12
    assert canary.fastest_reading([None]) is None
