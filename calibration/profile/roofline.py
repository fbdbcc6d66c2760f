"""Roofline arithmetic: pure functions, no torch, no I/O.

Ceilings are *measured* (best matmul GFLOPS per dtype, STREAM/sweep bandwidth per memory
level); user-given theoretical peaks are only a fallback when nothing was measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from calibration.specs.host import STREAM_CACHE_MULTIPLE, UNKNOWN_LLC_BYTES


class Bottleneck(str, Enum):
    COMPUTE = "compute"
    MEMORY = "memory"
    UNKNOWN = "unknown"


def gflops(flops: int, seconds: float) -> float:
    return flops / seconds / 1e9 if seconds > 0 else 0.0


def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9 if seconds > 0 else 0.0


def arithmetic_intensity(flops: int, nbytes: int) -> float | None:
    """FLOPs per byte of compulsory traffic; None when nothing is moved."""
    return flops / nbytes if nbytes > 0 else None


def ridge_point(compute_gflops: float | None, bandwidth_gbps: float | None) -> float | None:
    """Arithmetic intensity (FLOP/byte) where the compute and bandwidth roofs meet."""
    if not compute_gflops or not bandwidth_gbps:
        return None
    return compute_gflops / bandwidth_gbps


def classify(
    flops: int, nbytes: int, compute_gflops: float | None, bandwidth_gbps: float | None
) -> Bottleneck:
    if flops == 0:
        return Bottleneck.MEMORY
    intensity = arithmetic_intensity(flops, nbytes)
    ridge = ridge_point(compute_gflops, bandwidth_gbps)
    if intensity is None or ridge is None:
        return Bottleneck.UNKNOWN
    return Bottleneck.COMPUTE if intensity >= ridge else Bottleneck.MEMORY


def efficiency(attained: float, ceiling: float | None) -> float | None:
    if ceiling is None or ceiling <= 0:
        return None
    return attained / ceiling


def roof_seconds(
    flops: int, nbytes: int, compute_gflops: float | None, bandwidth_gbps: float | None
) -> tuple[float, float]:
    """(seconds at the compute roof, seconds at the bandwidth roof); an unknown roof gives 0."""
    t_compute = flops / (compute_gflops * 1e9) if flops and compute_gflops else 0.0
    t_memory = nbytes / (bandwidth_gbps * 1e9) if nbytes and bandwidth_gbps else 0.0
    return t_compute, t_memory


def roofline_seconds(
    flops: int, nbytes: int, compute_gflops: float | None, bandwidth_gbps: float | None
) -> float | None:
    """Lower bound on run time from the two roofs; None if a needed roof is unknown."""
    if (flops and not compute_gflops) or (nbytes and not bandwidth_gbps):
        return None
    return max(roof_seconds(flops, nbytes, compute_gflops, bandwidth_gbps))


# The memory level between the last-level cache and DRAM: a working set too large to live in
# the LLC (more than half of it) but under STREAM's size (arrays of four times the LLC),
# which the LLC still partly serves. It sets no level's ceiling: on this project's Zen 5 VM
# a 48 MiB triad (32 MiB L3) ran at 157 GB/s while the 384 MiB STREAM triad ran at 64.
TRANSITION = "LLC-DRAM"


def dram_working_set(cache_sizes: Mapping[str, int]) -> int | None:
    """The smallest working set that lives in DRAM: STREAM's multiple of the last-level
    cache; None when the cache sizes are unknown (every working set then counts as DRAM)."""
    return STREAM_CACHE_MULTIPLE * max(cache_sizes.values()) if cache_sizes else None


def is_stream_size(array_bytes: int, cache_sizes: Mapping[str, int]) -> bool:
    """STREAM's rule: each array at least four times the last-level cache (a 64 MiB one
    when the cache sizes are unknown, as the STREAM cases assume)."""
    llc = max(cache_sizes.values()) if cache_sizes else UNKNOWN_LLC_BYTES
    return array_bytes >= STREAM_CACHE_MULTIPLE * llc


def levels(cache_sizes: Mapping[str, int]) -> list[str]:
    """Memory levels from the smallest cache to DRAM, the transition zone before DRAM."""
    caches = [name for name, _ in sorted(cache_sizes.items(), key=lambda item: item[1])]
    return caches + ([TRANSITION] if caches else []) + ["DRAM"]


def level_for_working_set(working_set_bytes: int, cache_sizes: Mapping[str, int]) -> str:
    """Smallest cache level (by size) holding the working set, else :data:`TRANSITION`
    below STREAM's size, else ``"DRAM"``.

    A working set counts as fitting a level when it uses at most half of it: the other
    half is left for what the OS, the interpreter and the other arrays keep there.
    """
    for name, size in sorted(cache_sizes.items(), key=lambda item: item[1]):
        if working_set_bytes <= size // 2:
            return name
    dram = dram_working_set(cache_sizes)
    return TRANSITION if dram is not None and working_set_bytes < dram else "DRAM"


def clear_of_the_level_below(working_set_bytes: int, level: str, cache_sizes: Mapping[str, int],
                             threads: int = 1) -> bool:
    """Whether a working set in ``level`` is at least twice what the caches below it hold
    across ``threads`` threads (a level below is private to a core, or shared, which only makes
    this stricter): only such a working set can set the level's bandwidth ceiling. Just over
    half of one core's L2 it is "in" the L3 by :func:`level_for_working_set`, yet split over
    two cores' L2s it never leaves them: a 3 MiB triad over two 2 MiB L2s ran 168 GB/s, and
    as the L3's ceiling it made the L3 look three times what a 12 MiB triad or a 64 MiB GEMV
    got from it (57-61 GB/s)."""
    size = cache_sizes.get(level)
    if size is None:
        return True
    below = [other for other in cache_sizes.values() if other < size]
    return not below or working_set_bytes >= 2 * max(threads, 1) * max(below)


def bandwidth_ceiling(
    working_set_bytes: int,
    cache_sizes: Mapping[str, int],
    level_bandwidth: Mapping[str, float],
    fallback_gbps: float | None,
) -> float | None:
    """Measured bandwidth of the memory level the working set lives in.

    Falls back to the next larger level that was measured, then to ``fallback_gbps``
    (DRAM STREAM or a user peak), so a cache-resident op is not scored against DRAM speed.
    A working set in the transition zone gets the log-interpolation between the LLC's
    ceiling (at half the LLC) and DRAM's (at STREAM's size): more of it misses the cache
    the larger it is.
    """
    order = levels(cache_sizes)
    level = level_for_working_set(working_set_bytes, cache_sizes)
    dram = level_bandwidth.get("DRAM", fallback_gbps)
    if level == TRANSITION:
        llc_name, llc_size = max(cache_sizes.items(), key=lambda item: item[1])
        llc = level_bandwidth.get(llc_name)
        if llc is None or dram is None:
            return dram
        return interpolate_log(working_set_bytes, [(llc_size // 2, llc), (dram_working_set(cache_sizes), dram)])
    for name in order[order.index(level):]:
        if name in level_bandwidth:
            return level_bandwidth[name]
    return fallback_gbps


# A sweep point estimates the LLC's capacity only where it is clearly between the two rates:
# the share of its traffic the cache served, h, must lie in here (near 0 or 1 a few percent of
# noise in a rate moves the estimate by a factor of several)
HIT_SHARE_RANGE = (0.1, 0.9)


@dataclass(frozen=True)
class LLCReading:
    """The last-level cache's capacity as a triad sweep saw it, and the points it was read off."""

    capacity: int  # bytes
    points: tuple[tuple[int, float], ...]  # (working set bytes, GB/s) of the points read


def sweep_gbps(sweep: Sequence[tuple[int, float]], nbytes: int) -> float | None:
    """A triad sweep's rate (``sweep``: working-set bytes, GB/s) at a working set of ``nbytes``,
    interpolated in log size between its points and held at its ends; None with fewer than
    two points."""
    if len(sweep) < 2 or nbytes <= 0:
        return None
    return interpolate_log(nbytes, sweep)


def llc_gbps(sweep: Mapping[int, float], below_bytes: int) -> float | None:
    """The LLC's triad rate: the best sweep point the caches below it (every thread's,
    ``below_bytes``) cannot hold; None where the sweep has none."""
    above = [gbps for ws, gbps in sweep.items() if ws > below_bytes and gbps > 0]
    return max(above) if above else None


def llc_hit_share(gbps: float, llc: float, dram_gbps: float) -> float:
    """The share of a triad point's traffic the LLC served, from its rate between the LLC's
    (``llc``) and DRAM's: its time per byte is h at the one and 1 - h at the other (unclamped)."""
    return (1 / dram_gbps - 1 / gbps) / (1 / dram_gbps - 1 / llc)


def effective_llc_bytes(sweep: Mapping[int, float], llc_bytes: int, below_bytes: int,
                        dram_gbps: float | None) -> LLCReading | None:
    """The capacity of the last-level cache as the triad sweep saw it, or None where the sweep
    does not show one below ``llc_bytes`` (the size the OS reports).

    A VM's LLC is shared with other tenants, and the OS reports the whole socket's: a 2-vCPU
    Xeon said 480 MiB while its triad fell from 57 GB/s at 12-48 MiB to 41 at 192 MiB and
    DRAM's 31 at 768 MiB. ``sweep`` maps working-set bytes to GB/s; points at or below
    ``below_bytes`` (the caches under the LLC, every thread's: a 3 MiB triad split over two
    2 MiB L2s ran at 168) say nothing of it. The LLC's rate is the best point above that;
    a point between it and ``dram_gbps`` gives the share h of its traffic the LLC served
    (its time per byte is h at the LLC's rate and 1 - h at DRAM's), and under random
    replacement, the model the mapper's cold term uses, a line survives ``(1 - h) W`` bytes of
    misses with probability ``exp(-(1 - h) W / C)`` = h, so ``C = -(1 - h) W / ln h``.

    Every point with h in ``HIT_SHARE_RANGE`` gives a C; they are averaged in log, each
    weighted by h (1 - h), how well a rate pins its C down (a point near either end moves C
    most for a given error in its rate): one point alone, 10% slower, read 99 MiB where 132
    had been read an hour before. The result is never above ``llc_bytes``.
    """
    llc = llc_gbps(sweep, below_bytes)
    if llc is None or not dram_gbps or dram_gbps <= 0 or llc <= dram_gbps:
        return None
    readings: list[tuple[float, float, int, float]] = []  # (weight, log capacity, working set, GB/s)
    for ws, gbps in sorted(sweep.items()):
        if ws <= below_bytes or gbps <= 0:
            continue
        h = llc_hit_share(gbps, llc, dram_gbps)
        if not HIT_SHARE_RANGE[0] <= h <= HIT_SHARE_RANGE[1]:
            continue
        readings.append((h * (1 - h), math.log(-(1 - h) * ws / math.log(h)), ws, gbps))
    if not readings:
        return None
    capacity = int(math.exp(sum(w * c for w, c, _, _ in readings) / sum(w for w, _, _, _ in readings)))
    if capacity >= llc_bytes:
        return None
    return LLCReading(capacity=capacity, points=tuple((ws, gbps) for _, _, ws, gbps in readings))


def llc_losses(sweep: Mapping[int, float], below_bytes: int, dram_gbps: float | None) -> list[tuple[int, float]]:
    """(working-set bytes, share of it the LLC does not keep) along the triad sweep, from its
    best point past the caches below (``below_bytes``, every thread's) upward; [] where the
    sweep shows no LLC faster than ``dram_gbps``.

    A triad point streams its working set again and again, as a forward streams its weights
    once a forward, so the share of its traffic the LLC served (h, from its rate between the
    LLC's and DRAM's: its time per byte is h at the one and 1 - h at the other) is how much of
    a working set that size survives one pass of itself. The loss is 1 - h, 0 at the best
    point, clamped to [0, 1] and made non-decreasing with size (a slower point below a faster
    one is noise, not a smaller cache)."""
    llc = llc_gbps(sweep, below_bytes)
    if llc is None or not dram_gbps or dram_gbps <= 0 or llc <= dram_gbps:
        return []
    points = sorted((ws, gbps) for ws, gbps in sweep.items() if ws > below_bytes and gbps > 0)
    best = max(range(len(points)), key=lambda i: points[i][1])
    losses, most = [], 0.0
    for ws, gbps in points[best:]:
        most = max(most, min(max(1.0 - llc_hit_share(gbps, llc, dram_gbps), 0.0), 1.0))
        losses.append((ws, most))
    return losses


def interpolate_log(x: float, points: Sequence[tuple[float, float]]) -> float:
    """Piecewise-linear interpolation of ``y`` over ``log(x)``, clamped at both ends.

    ``points`` are (x, y) with x > 0; equal x values are averaged first.
    """
    if not points:
        raise ValueError("interpolate_log needs at least one point")
    merged: dict[float, list[float]] = {}
    for px, py in points:
        if px <= 0:
            raise ValueError(f"interpolation abscissa must be positive, got {px}")
        merged.setdefault(px, []).append(py)
    xs = sorted(merged)
    ys = [sum(merged[px]) / len(merged[px]) for px in xs]
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    lx = math.log(x)
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
        if x0 <= x <= x1:
            t = (lx - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    raise AssertionError("unreachable: x lies within the sorted range")
