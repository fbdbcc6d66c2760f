"""A kernel's time at a shape the grid has not timed, from the shapes it has.

Interpolating an efficiency in log FLOPs between sizes of one kernel variant places a shape
by its size alone: a stride-2 depthwise conv sits next to a stride-1 one of the same FLOPs
that reads four times its input, and a 1x1 conv on a large map next to a small-map one whose
time is all call overhead. Here a variant's calibrated shapes fit a cost model in the
quantities its time is spent on (``Operation.cost_terms``: a call, bytes of activations,
bytes of weights, FLOPs), each with a non-negative price, by least squares in relative error.
The fit is then corrected by its error at the query's nearest calibrated neighbours in log
shape space (``Operation.shape_features``), a correction that fades with their distance.

Exact shapes never come here: the profile's own time is used for those.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from calibration.profile.entries import OperationCalibration
from calibration.specs.keys import ParamValue
from calibration.specs.operations import Operation

NEIGHBOURS = 2
# a neighbour d octaves away (Euclidean, over the shape features) keeps exp(-d / FADE) of its
# error as a correction; two octaves off in one dimension keep 37%
FADE_OCTAVES = 2.0


@dataclass(frozen=True)
class ShapeEstimate:
    seconds: float
    fitted_seconds: float  # the cost model alone, before the neighbours' correction
    neighbours: tuple[str, ...]  # keys of the entries the correction came from
    entries: int  # calibrated shapes the fit used


def nnls(a: np.ndarray, b: np.ndarray, max_iterations: int = 200) -> np.ndarray:
    """min ||a x - b|| subject to x >= 0 (Lawson and Hanson's active-set method)."""
    rows, cols = a.shape
    x = np.zeros(cols)
    active: list[int] = []
    for _ in range(max_iterations):
        gradient = a.T @ (b - a @ x)
        free = [j for j in range(cols) if j not in active]
        if not free or max(gradient[j] for j in free) <= 1e-12 * max(1.0, float(np.abs(gradient).max())):
            break
        active.append(max(free, key=lambda j: gradient[j]))
        while True:
            trial = np.zeros(cols)
            trial[active] = np.linalg.lstsq(a[:, active], b, rcond=None)[0]
            if all(trial[j] > 0 for j in active):
                x = trial
                break
            # step back to the boundary and drop the terms that reached zero
            blocking = [j for j in active if trial[j] <= 0]
            step = min(x[j] / (x[j] - trial[j]) for j in blocking)
            x = x + step * (trial - x)
            active = [j for j in active if x[j] > 1e-15]
            if not active:
                break
    return x


def fit_prices(terms: Sequence[Sequence[float]], seconds: Sequence[float], floor: float = 0.0) -> np.ndarray:
    """Non-negative price per unit of each term so that floor + terms . prices ~ seconds, in
    relative error (a 10 us kernel counts as much as a 10 ms one)."""
    a = np.asarray(terms, dtype=float)
    y = np.asarray(seconds, dtype=float)
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    weighted = (a / scale) / y[:, None]
    return nnls(weighted, (y - floor) / y) / scale


def roofline_terms(
    spec: Operation, params: Mapping[str, ParamValue], size: int,
    compute_gflops: float | None, bandwidth_gbps: Callable[[int], float | None],
) -> tuple[float, ...]:
    """``spec.cost_terms`` as seconds at the machine's roofs: bytes at the bandwidth of the
    cache level the kernel's traffic fits in, FLOPs at the compute ceiling, so that a fitted
    price is an inverse efficiency and a kernel whose traffic moves from the LLC to DRAM pays
    DRAM's rate (where a roof is unknown the raw quantity stays: the fit still prices it)."""
    terms = spec.cost_terms(params, size)  # type: ignore[misc]
    footprint = spec.bytes_moved(params, size)
    bandwidth = bandwidth_gbps(footprint)
    out = []
    for value, unit in zip(terms, spec.cost_units or ("",) * len(terms), strict=True):
        if unit == "bytes" and bandwidth:
            value = value / (bandwidth * 1e9)
        elif unit == "flops" and compute_gflops:
            value = value / (compute_gflops * 1e9)
        out.append(value)
    return tuple(out)


def estimate(
    spec: Operation, entries: Sequence[OperationCalibration], params: Mapping[str, ParamValue], size: int,
    *, floor_seconds: float = 0.0, compute_gflops: float | None = None,
    bandwidth_gbps: Callable[[int], float | None] = lambda nbytes: None,
) -> ShapeEstimate | None:
    """The time of ``params`` from ``entries`` (calibrated shapes of its variant), or None
    where the operation has no cost model or too few shapes are calibrated to fit one (a
    shape per term and one more), or whose variant the cost model does not price."""
    if not spec.has_cost_model(params):
        return None
    timed = [e for e in entries if e.latency.median_ms > 0]
    width = len(spec.cost_terms(params, size))
    if len(timed) < width + 1:
        return None
    seconds = [e.latency.median_ms / 1e3 for e in timed]
    floor = min(floor_seconds, min(seconds))
    terms = [roofline_terms(spec, e.params, size, compute_gflops, bandwidth_gbps) for e in timed]
    prices = fit_prices(terms, seconds, floor)

    def model(row: Sequence[float]) -> float:
        return max(floor + float(np.dot(prices, row)), 1e-9)

    fitted = model(roofline_terms(spec, params, size, compute_gflops, bandwidth_gbps))
    at = spec.shape_features(params)
    nearest = sorted(((math.dist(at, spec.shape_features(e.params)), i) for i, e in enumerate(timed)))[:NEIGHBOURS]
    weights = [1.0 / max(distance, 1e-6) ** 2 for distance, _ in nearest]
    errors = [math.log(seconds[i] / model(terms[i])) for _, i in nearest]
    error = sum(w * e for w, e in zip(weights, errors, strict=True)) / sum(weights)
    correction = math.exp(error * math.exp(-nearest[0][0] / FADE_OCTAVES))
    return ShapeEstimate(seconds=fitted * correction, fitted_seconds=fitted,
                         neighbours=tuple(timed[i].key for _, i in nearest), entries=len(timed))
