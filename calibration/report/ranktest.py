"""Two-sided Mann-Whitney U test on two sets of timing samples: pure numpy, no scipy.

The test asv uses to call a benchmark change significant: it compares ranks, so it needs no
assumption about the shape of the timing distribution (skewed, with a long tail of
preempted rounds) and one outlier round cannot dominate it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

# Up to this many samples on each side (and no ties) the p-value comes from the exact null
# distribution; beyond it the normal approximation is within 1e-3 of it.
EXACT_MAX = 20


@dataclass(frozen=True)
class UTest:
    u: float  # U of the first sample: pairs (x, y) with x > y, ties counting one half
    p_value: float  # two-sided
    method: Literal["exact", "normal"]


def midranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks with tied values sharing their average rank, and the size of each tie group."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    counts = np.diff(np.r_[starts, ordered.size])
    average = starts + (counts + 1) / 2  # rank of the first of the group is start + 1
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(average, counts)
    return ranks, counts


@lru_cache(maxsize=64)
def u_counts(n: int, m: int) -> tuple[int, ...]:
    """How many of the C(n+m, n) orderings of n x's and m y's give U = 0, 1, ..., n*m.

    Dynamic programming on the largest element: it is an x (beating all m y's, so U grows
    by m) or a y (adding nothing): c(n, m) = c(n-1, m) shifted by m, plus c(n, m-1).
    """
    previous = [np.ones(1, dtype=np.int64) for _ in range(m + 1)]  # c(0, j): one ordering, U = 0
    for i in range(1, n + 1):
        current = [np.ones(1, dtype=np.int64)]  # c(i, 0)
        for j in range(1, m + 1):
            counts = np.zeros(i * j + 1, dtype=np.int64)
            counts[j:] += previous[j]
            counts[: current[j - 1].size] += current[j - 1]
            current.append(counts)
        previous = current
    return tuple(int(c) for c in previous[m])


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> UTest:
    """Two-sided test of whether x and y come from the same distribution.

    Exact p-value when there are no ties and both samples have at most EXACT_MAX values;
    otherwise the normal approximation with the tie-corrected variance and a continuity
    correction (what scipy.stats.mannwhitneyu does with use_continuity=True).
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"the U test needs samples on both sides, got {a.size} and {b.size}")
    n, m = a.size, b.size
    ranks, ties = midranks(np.concatenate([a, b]))
    u = float(ranks[:n].sum() - n * (n + 1) / 2)
    larger = max(u, n * m - u)
    if ties.max() == 1 and n <= EXACT_MAX and m <= EXACT_MAX:
        counts = u_counts(n, m)
        tail = sum(counts[int(larger):]) / math.comb(n + m, n)
        return UTest(u, min(1.0, 2 * tail), "exact")
    total = n + m
    variance = n * m / 12 * (total + 1 - float((ties**3 - ties).sum()) / (total * (total - 1)))
    if variance <= 0:  # every value equal: no evidence of any difference
        return UTest(u, 1.0, "normal")
    z = (larger - n * m / 2 - 0.5) / math.sqrt(variance)
    return UTest(u, min(1.0, math.erfc(z / math.sqrt(2))), "normal")


def smallest_p_value(n: int, m: int) -> float:
    """The smallest two-sided p-value any n and m samples can reach (complete separation,
    exact distribution): with 3 rounds against 3 it is 0.1, so such an entry can never
    be significant at a strict alpha."""
    return min(1.0, 2 / math.comb(n + m, n))
