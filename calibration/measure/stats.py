"""Statistics over timing samples: pure, no pytest, no torch."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

# A measurement whose interquartile range exceeds this fraction of its median is flagged
# noisy in summaries: on a shared 2-core VM memory-bound cases swing by 2x over minutes,
# while compute-bound ones stay within a few percent.
NOISY_IQR_RATIO = 0.10

# Raw samples kept per entry: enough for a rank test between two profiles, small enough
# that a full profile stays a few hundred KB.
MAX_STORED_SAMPLES = 200


def quartiles(samples: Sequence[float]) -> tuple[float, float, float]:
    """(q1, median, q3) with the 'inclusive' method, as pytest-benchmark computes them."""
    if not samples:
        raise ValueError("no samples")
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q1, q2, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, q2, q3


def relative_spread(median: float, iqr: float) -> float:
    return iqr / median if median > 0 else math.inf


def is_noisy(median: float, iqr: float) -> bool:
    return relative_spread(median, iqr) > NOISY_IQR_RATIO


def subsample(samples: Sequence[float], limit: int = MAX_STORED_SAMPLES) -> list[float]:
    """At most ``limit`` samples, evenly spaced in run order so drift stays visible."""
    if len(samples) <= limit:
        return list(samples)
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]
