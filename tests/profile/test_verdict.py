"""The fuse / neutral / avoid verdict: bootstrap interval of the speedup and the decision rule."""

import numpy as np
import pytest

from calibration.profile.verdict import (
    MIN_EFFECT,
    POINT_ESTIMATE_MARGIN,
    Verdict,
    decide,
    speedup_interval,
)


def tight(median: float, count: int = 60, spread: float = 0.002, seed: int = 1) -> list[float]:
    """Samples within +-0.2% of ``median``."""
    rng = np.random.default_rng(seed)
    return list(median * (1 + rng.uniform(-spread, spread, count)))


# ------------------------------------------------------------------ speedup_interval


def test_tight_samples_give_a_tight_interval_around_the_true_ratio():
    low, high = speedup_interval(tight(1.3), tight(1.0, seed=2))
    assert 1 < low <= 1.3 <= high
    assert low == pytest.approx(1.3, rel=0.01) and high == pytest.approx(1.3, rel=0.01)


def test_a_slower_fused_variant_gives_an_interval_below_one():
    low, high = speedup_interval(tight(1.0), tight(1.25, seed=2))
    assert low <= 0.8 <= high < 1


def test_huge_spread_gives_an_interval_that_contains_one():
    rng = np.random.default_rng(7)
    # same distribution, a factor e^1.5 of spread either way, few rounds
    unfused = list(rng.lognormal(0.0, 1.5, 8))
    fused = list(rng.lognormal(0.0, 1.5, 8))
    low, high = speedup_interval(unfused, fused)
    assert low < 1 < high
    assert high / low > 2


def test_constant_samples_give_a_point_interval():
    assert speedup_interval([2.0] * 5, [1.0] * 7) == (2.0, 2.0)


def test_interval_is_deterministic_for_a_seed():
    a, b = tight(1.1), tight(1.0, seed=3)
    assert speedup_interval(a, b) == speedup_interval(a, b)
    assert speedup_interval(a, b, seed=5) == speedup_interval(a, b, seed=5)


def test_interval_needs_samples_of_both_variants():
    with pytest.raises(ValueError, match="samples of both"):
        speedup_interval([], [1.0])
    with pytest.raises(ValueError, match="samples of both"):
        speedup_interval([1.0], [])


# ------------------------------------------------------------------ decide


@pytest.mark.parametrize(
    ("speedup", "low", "high", "expected"),
    [
        (1.5, 1.3, 1.7, Verdict.FUSE),
        (1 + MIN_EFFECT, 1.01, 1.1, Verdict.FUSE),  # exactly the minimum effect counts
        (1 + MIN_EFFECT - 1e-9, 1.01, 1.1, Verdict.NEUTRAL),  # significant, but too small to matter
        (1.03, 1.02, 1.04, Verdict.NEUTRAL),
        (1.5, 0.9, 2.1, Verdict.NEUTRAL),  # large but not significant: the interval holds 1
        (1.5, 1.0, 2.0, Verdict.NEUTRAL),  # low must lie strictly above 1
        (1.0, 0.98, 1.02, Verdict.NEUTRAL),
        (0.6, 0.5, 0.7, Verdict.AVOID),
        (1 - MIN_EFFECT, 0.9, 0.99, Verdict.AVOID),
        (1 - MIN_EFFECT + 1e-9, 0.9, 0.99, Verdict.NEUTRAL),
        (0.97, 0.96, 0.98, Verdict.NEUTRAL),
        (0.6, 0.4, 1.1, Verdict.NEUTRAL),
        (0.6, 0.4, 1.0, Verdict.NEUTRAL),  # high must lie strictly below 1
    ],
)
def test_decide_with_an_interval(speedup, low, high, expected):
    assert decide(speedup, low, high) is expected


@pytest.mark.parametrize(
    ("speedup", "expected"),
    [
        (2.0, Verdict.FUSE),
        (1 + POINT_ESTIMATE_MARGIN, Verdict.FUSE),
        (1 + POINT_ESTIMATE_MARGIN - 1e-9, Verdict.NEUTRAL),
        (1.07, Verdict.NEUTRAL),  # above MIN_EFFECT, but without samples only a large effect counts
        (1.0, Verdict.NEUTRAL),
        (0.93, Verdict.NEUTRAL),
        (1 - POINT_ESTIMATE_MARGIN + 1e-9, Verdict.NEUTRAL),
        (1 - POINT_ESTIMATE_MARGIN, Verdict.AVOID),
        (0.5, Verdict.AVOID),
    ],
)
def test_decide_without_samples_uses_the_point_estimate(speedup, expected):
    assert decide(speedup, None, None) is expected


def test_decide_with_half_an_interval_falls_back_to_the_point_estimate():
    assert decide(1.07, 1.06, None) is Verdict.NEUTRAL
    assert decide(1.2, None, 1.3) is Verdict.FUSE


def test_verdict_values_are_the_profile_strings():
    assert [v.value for v in Verdict] == ["fuse", "neutral", "avoid"]
