"""Which of a model's kernels to re-time beside it, to tell how far the machine has drifted.

The accuracy protocol (``measure.model_timing``) corrects a prediction by how much slower
the machine runs now than when it was calibrated. Generic references (a 1024-cube GEMM, a
conv, STREAM triads) do not drift alike with every kernel on a shared host: in one window
here the GEMM ran x1.0 its profile time while BERT's 128-row linears ran x1.2-1.4. The
kernels a model spends its time in, where the profile has them exactly, are the better
yardstick: :func:`own_references` picks those, and for a kernel the profile lacks, the
nearest calibrated shapes of its variant that its time was derived from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from calibration.predict.mapper import LatencyEstimate
from calibration.predict.results import NodeCost, Partition
from calibration.profile import lookup
from calibration.profile.entries import OperationCalibration
from calibration.profile.schema import HardwareCalibration
from calibration.specs.dtypes import itemsize
from calibration.specs.operations import OPERATIONS, Case

# at most this many of the model's kernels re-timed per window (each takes ~0.15 s)
OWN_REFERENCES = 4
# and none standing for less than this share of the prediction: a yardstick for little time
# costs a window as much as one for much
MIN_SHARE = 0.03
# a kernel the profile lacks stands on this many of its variant's nearest calibrated shapes
NEAREST = 2


def _place(spec, params, size: int) -> tuple[float, ...]:
    """Where a shape sits among its variant's: the cost model's shape features where the
    operation has them, else log work (FLOPs, or bytes for an op without arithmetic) and
    log scale (a GEMM's rows), the two things its efficiency is interpolated over."""
    if spec.shape_features is not None:
        return spec.shape_features(params)
    work = spec.flops(params) or spec.bytes_moved(params, size)
    place = (math.log2(max(work, 1)),)
    return place + ((math.log2(max(float(spec.scale(params)), 1.0)),) if spec.scale is not None else ())


def nearest_entries(calibration: HardwareCalibration, node: NodeCost, *, count: int = NEAREST
                    ) -> list[OperationCalibration]:
    """The ``count`` calibrated shapes of the node's operation and variant nearest its own
    (unbusy entries only); [] where the operation has none or the shape cannot be placed."""
    spec = OPERATIONS.get(node.operation or "")
    if spec is None:
        return []
    dtype, device = node.dtype or "float32", calibration.metadata.device_type
    try:
        params = spec.complete(node.params)
        pool = [e for e in lookup.candidates(calibration, spec.name, dtype, device, params) if not e.busy]
        at = _place(spec, params, itemsize(dtype))
        placed = [(math.dist(at, _place(spec, e.params, itemsize(dtype))), e.key, e) for e in pool]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return []
    return [e for _, _, e in sorted(placed, key=lambda t: (t[0], t[1]))[:count]]


@dataclass
class _Standing:
    """One profile entry and the predicted time of the model's kernels standing on it."""

    case: Case
    ms: float = 0.0
    kind: str = ""  # the drift class of the largest kernel's share
    largest_ms: float = 0.0


def own_references(part: Partition, estimate: LatencyEstimate, calibration: HardwareCalibration, *,
                   limit: int = OWN_REFERENCES, min_share: float = MIN_SHARE) -> list[tuple[Case, float, str]]:
    """The profile entries that stand for the most of the model's predicted time: (case,
    predicted ms it stands for, drift class of the largest kernel behind it), largest first.

    A kernel stands on its exact, unbusy entry; one the profile lacks on the ``NEAREST``
    nearest calibrated shapes of its variant, its time split between them (the shapes its
    time was derived from, or next to them). ``estimate`` is ``part``'s eager estimate; the
    entries are looked up in ``calibration`` whether or not the estimate used them
    (``--without-exact`` still re-times the model's shapes, for their drift only)."""
    if estimate.mode != "eager":
        raise ValueError(f"own_references needs the eager estimate (one kernel per node), got mode {estimate.mode!r}")
    by_key: dict[str, _Standing] = {}
    device = calibration.metadata.device_type
    for sg, sg_estimate in zip(part.subgraphs, estimate.subgraphs, strict=True):
        for node, kernel in zip((n for n in sg.nodes if n.kernel), sg_estimate.kernels, strict=True):
            if not node.operation:
                continue
            exact = calibration.get_operation(node.operation, dtype=node.dtype or "float32", device=device,
                                              **node.params)
            standing = [exact] if exact is not None and not exact.busy else nearest_entries(calibration, node)
            for entry in standing:
                ms = kernel.seconds * 1e3 / len(standing)
                held = by_key.setdefault(entry.key, _Standing(
                    Case(entry.operation, tuple(entry.params.items()), entry.dtype, entry.device)))
                held.ms += ms
                if ms > held.largest_ms:
                    held.kind, held.largest_ms = kernel.drift_class, ms
    chosen = sorted(by_key.values(), key=lambda held: -held.ms)
    floor = min_share * estimate.steady_ms
    return [(held.case, held.ms, held.kind) for held in chosen[:limit] if held.ms >= floor]
