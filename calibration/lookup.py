"""Finding entries in a profile: exact matches and interpolation between sizes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from calibration import roofline
from calibration.keys import ParamValue

if TYPE_CHECKING:
    from calibration.schema import HardwareCalibration, OperationCalibration

Metric = Literal["compute", "bandwidth"]


def _spec(operation: str):
    from calibration.ops import OPERATIONS

    try:
        return OPERATIONS[operation]
    except KeyError:
        raise KeyError(
            f"unknown operation {operation!r}; known: {', '.join(sorted(OPERATIONS))}"
        ) from None


def candidates(
    cal: HardwareCalibration, operation: str, dtype: str, device: str, params: Mapping[str, ParamValue]
) -> list[OperationCalibration]:
    """Entries of the same operation, dtype, device and kernel variant as ``params``."""
    spec = _spec(operation)
    want = spec.variant(spec.complete(params))
    return [
        entry
        for entry in cal.operation_profiles.values()
        if entry.operation == operation
        and entry.dtype == dtype
        and entry.device == device
        and spec.variant(entry.params) == want
    ]


def find_exact(
    cal: HardwareCalibration, operation: str, dtype: str, device: str, params: Mapping[str, ParamValue]
) -> OperationCalibration | None:
    params = _spec(operation).complete(params)
    for entry in candidates(cal, operation, dtype, device, params):
        if all(entry.params.get(name) == value for name, value in params.items()):
            return entry
    return None


def _value(entry: OperationCalibration, metric: Metric) -> float | None:
    return entry.compute_efficiency if metric == "compute" else entry.bandwidth_efficiency


def efficiency_at(
    cal: HardwareCalibration,
    operation: str,
    dtype: str,
    device: str,
    params: Mapping[str, ParamValue],
    metric: Metric | None,
) -> float:
    spec = _spec(operation)
    params = spec.complete(params)
    missing = [name for name in spec.param_names if name not in params]
    pool = candidates(cal, operation, dtype, device, params)
    if not pool:
        raise KeyError(
            f"the profile has no {operation} entries for dtype {dtype} on {device} "
            f"with variant {spec.variant(params) or '(default)'}"
        )
    exact = find_exact(cal, operation, dtype, device, params) if not missing else None
    if missing and exact is None:
        raise KeyError(f"{operation} needs parameters {', '.join(missing)} to interpolate")
    from calibration.ops import itemsize

    flops = spec.flops(params)
    nbytes = spec.bytes_moved(params, itemsize(dtype))
    if metric is None:
        if exact is not None:
            bottleneck = exact.bottleneck
        else:
            bw = roofline.bandwidth_ceiling(
                nbytes, cal.metadata.cache_sizes, cal.measured.bandwidth_by_level_gbps, cal.dram_bandwidth()
            )
            bottleneck = roofline.classify(flops, nbytes, cal.compute_ceiling(dtype), bw)
        metric = "compute" if bottleneck == roofline.Bottleneck.COMPUTE else "bandwidth"
    if exact is not None and _value(exact, metric) is not None:
        return _value(exact, metric)  # type: ignore[return-value]
    # Interpolate in log FLOPs; operations that do no arithmetic (copies) use log bytes.
    use_flops = flops > 0
    points = [
        (entry.flops if use_flops else entry.bytes, value)
        for entry in pool
        if (value := _value(entry, metric)) is not None and (entry.flops if use_flops else entry.bytes) > 0
    ]
    if not points:
        raise KeyError(f"no {operation} entry in the profile has a {metric} efficiency")
    return roofline.interpolate_log(flops if use_flops else nbytes, points)
