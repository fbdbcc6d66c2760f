"""Is a fused variant faster than its unfused twin? Pure statistics, no torch, no pytest."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np

# Resamples for the bootstrap interval of the speedup; 2000 keeps the 2.5/97.5 percentiles
# stable to about 1% of their width and costs a few milliseconds per pair.
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
# A gain smaller than this is not worth a fusion decision even when it is significant:
# separately timed cases drift by 3-5% on a shared machine (measured on this project's 2-vCPU VMs).
MIN_EFFECT = 0.05
# Without raw samples (a profile from the predecessor) only a large effect counts.
POINT_ESTIMATE_MARGIN = 0.10
# An interleaved twin whose median is this far (either way) from the unfused case timed on
# its own ran under other conditions than the unfused code normally does: a compiled MLP at
# 24 ms made its twin run at 39.9 ms against 0.55 ms alone, and the speedup read "1.66x fuse".
# The timing harness re-times a case whose median is 1.5x its fastest round for the same reason.
TWIN_DRIFT = 1.5


class Verdict(str, Enum):
    FUSE = "fuse"
    NEUTRAL = "neutral"
    AVOID = "avoid"


def speedup_interval(
    unfused_ms: Sequence[float], fused_ms: Sequence[float], *, paired: bool = False, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap CI of median(unfused) / median(fused) from the raw per-round samples.

    ``paired``: sample i of each was timed in the same round, so rounds are resampled
    together and drift that both shared cancels out of the interval.
    """
    a = np.asarray(unfused_ms, dtype=float)
    b = np.asarray(fused_ms, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("speedup_interval needs samples of both variants")
    if paired and a.size != b.size:
        raise ValueError(f"paired samples need equal counts, got {a.size} and {b.size}")
    rng = np.random.default_rng(seed)
    index_a = rng.integers(0, a.size, (BOOTSTRAP_RESAMPLES, a.size))
    index_b = index_a if paired else rng.integers(0, b.size, (BOOTSTRAP_RESAMPLES, b.size))
    med_a = np.median(a[index_a], axis=1)
    med_b = np.median(b[index_b], axis=1)
    ratios = med_a / med_b
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def twin_disturbed(twin_ms: float, alone_ms: float | None) -> bool:
    """Whether the unfused twin timed beside a fused variant ran far from the unfused case
    timed alone (see TWIN_DRIFT): the speedup then compares with a disturbed baseline."""
    if alone_ms is None or alone_ms <= 0 or twin_ms <= 0:
        return False
    return max(twin_ms / alone_ms, alone_ms / twin_ms) > TWIN_DRIFT


def decide(speedup: float, low: float | None, high: float | None) -> Verdict:
    """fuse: significantly faster by at least MIN_EFFECT; avoid: significantly slower by as much."""
    if low is None or high is None:
        if speedup >= 1 + POINT_ESTIMATE_MARGIN:
            return Verdict.FUSE
        if speedup <= 1 - POINT_ESTIMATE_MARGIN:
            return Verdict.AVOID
        return Verdict.NEUTRAL
    if low > 1 and speedup >= 1 + MIN_EFFECT:
        return Verdict.FUSE
    if high < 1 and speedup <= 1 - MIN_EFFECT:
        return Verdict.AVOID
    return Verdict.NEUTRAL
