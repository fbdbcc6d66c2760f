"""Reading profiles written by the predecessor (``graphs.hardware.calibration``).

Its layout: top-level ``theoretical_peak_gflops`` / ``theoretical_bandwidth_gbps``,
``metadata`` (``calibration_date``, ``cpu_count``, ``total_memory_gb``...),
``operation_profiles`` keyed by a size class, each with a mean latency and one
``efficiency`` whose meaning depended on the operation, and ``fusion_profiles`` keyed by
pattern name with ``unfused_latency_ms``, ``fused_latency_ms``, ``speedup_factor``...

What it did not record stays null here: its efficiencies are dropped (compute and
bandwidth efficiency were mixed), its means stand in for medians and say so in
``latency.source``, and speedups without samples get no interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from calibration.profile import verdict
from calibration.profile.roofline import Bottleneck
from calibration.profile.schema import (
    FusionCalibration,
    HardwareCalibration,
    LatencyStats,
    MeasuredSummary,
    Metadata,
    OperationCalibration,
    Peak,
    PeakSource,
)

PREDECESSOR = "the predecessor's layout (graphs.hardware.calibration)"
MEAN_SOURCE = "predecessor: mean of one timing loop (no median recorded)"


def is_legacy(data: Mapping[str, Any]) -> bool:
    return "schema_version" not in data and "theoretical_peak_gflops" in data


def _scalar_params(extra: Mapping[str, Any] | None, shape: Any) -> dict[str, Any]:
    params = {k: v for k, v in (extra or {}).items() if isinstance(v, (int, float, str, bool))}
    if shape:
        params["input_shape"] = "x".join(str(d) for d in shape)
    return params


def _latency(mean_ms: float, trials: int | None, std: float | None = None, low: float | None = None) -> LatencyStats:
    return LatencyStats(
        median_ms=mean_ms, iqr_ms=None, min_ms=low, mean_ms=mean_ms, stddev_ms=std,
        rounds=max(1, int(trials or 1)), iterations=None, source=MEAN_SOURCE,
    )


def _work(rate_g: float | None, latency_ms: float) -> int:
    """FLOPs or bytes implied by a rate (10^9/s) and a latency, as the predecessor computed them."""
    return max(0, round((rate_g or 0.0) * latency_ms * 1e6))


def _metadata(md: Mapping[str, Any]) -> Metadata:
    date = md.get("calibration_date")
    try:
        when = datetime.fromisoformat(date) if date else datetime.fromtimestamp(0, timezone.utc)
    except ValueError:
        when = datetime.fromtimestamp(0, timezone.utc)
    device = md.get("device_type", "cpu")
    return Metadata(
        hardware_name=md.get("hardware_name", "unknown"),
        device_type=device if device in ("cpu", "cuda") else "cpu",
        device_name=md.get("cpu_model") or md.get("hardware_name", "unknown"),
        cpu_model=md.get("cpu_model"),
        physical_cores=md.get("cpu_count"),
        memory_gib=md.get("total_memory_gb"),
        python_version=md.get("python_version"),
        torch_version=md.get("pytorch_version"),
        numpy_version=md.get("numpy_version"),
        calibration_version=md.get("calibration_tool_version"),
        date=when,
        upgraded_from=PREDECESSOR,
    )


def _operation(old_key: str, entry: Mapping[str, Any], device: str) -> OperationCalibration:
    op = entry["operation_type"]
    mean = float(entry["mean_latency_ms"])
    flops = _work(entry.get("measured_gflops"), mean)
    nbytes = _work(entry.get("achieved_bandwidth_gbps"), mean)
    if entry.get("compute_bound"):
        bottleneck = Bottleneck.COMPUTE
    elif entry.get("memory_bound"):
        bottleneck = Bottleneck.MEMORY
    else:
        bottleneck = Bottleneck.UNKNOWN
    return OperationCalibration(
        key=f"{op}[legacy={old_key}]/float32/{device}",
        operation=op,
        family="legacy",
        params=_scalar_params(entry.get("extra_params"), entry.get("input_shape")),
        dtype="float32",
        device=device,
        flops=flops,
        bytes=nbytes,
        latency=_latency(mean, entry.get("num_trials"), entry.get("std_latency_ms"), entry.get("min_latency_ms")),
        gflops=float(entry.get("measured_gflops") or 0.0),
        gbps=float(entry.get("achieved_bandwidth_gbps") or 0.0),
        arithmetic_intensity=entry.get("arithmetic_intensity"),
        memory_level="unknown",
        compute_ceiling_gflops=None,
        bandwidth_ceiling_gbps=None,
        compute_efficiency=None,
        bandwidth_efficiency=None,
        bottleneck=bottleneck,
        noisy=False,
    )


def _fusion(pattern: str, entry: Mapping[str, Any], device: str) -> FusionCalibration:
    unfused_ms = float(entry["unfused_latency_ms"])
    fused_ms = float(entry["fused_latency_ms"])
    speedup = float(entry.get("speedup_factor") or unfused_ms / fused_ms)
    unfused_bytes = int(entry.get("unfused_memory_bytes") or 0)
    fused_bytes = int(entry.get("fused_memory_bytes") or 0)
    reduction = entry.get("memory_reduction")
    if reduction is None:
        reduction = 1 - fused_bytes / unfused_bytes if unfused_bytes else 0.0
    flops = _work(entry.get("unfused_gflops"), unfused_ms)
    operators = list(entry.get("operators") or pattern.split("_"))
    return FusionCalibration(
        key=f"{pattern}[legacy]/float32/{device}/legacy",
        pattern=pattern,
        family="legacy",
        operators=operators,
        params=_scalar_params(entry.get("extra_params"), entry.get("input_shape")),
        dtype="float32",
        device=device,
        variant="legacy",
        fused_kernel="the predecessor's fused variant (outputs never checked against the unfused form)",
        flops=flops,
        unfused_bytes=unfused_bytes,
        fused_bytes=fused_bytes,
        memory_reduction=float(reduction),
        unfused=_latency(unfused_ms, entry.get("num_trials")),
        fused=_latency(fused_ms, entry.get("num_trials")),
        speedup=speedup,
        speedup_ci_low=None,
        speedup_ci_high=None,
        unfused_gflops=float(entry.get("unfused_gflops") or 0.0),
        fused_gflops=float(entry.get("fused_gflops") or 0.0),
        unfused_arithmetic_intensity=flops / unfused_bytes if unfused_bytes else None,
        fused_arithmetic_intensity=flops / fused_bytes if fused_bytes else None,
        unfused_bottleneck=Bottleneck.UNKNOWN,
        fused_bottleneck=Bottleneck.UNKNOWN,
        verdict=verdict.decide(speedup, None, None),
    )


def upgrade(data: Mapping[str, Any]) -> HardwareCalibration:
    """Convert a predecessor profile; raises KeyError/TypeError/ValueError on a malformed one."""
    md = _metadata(data.get("metadata") or {})
    device = md.device_type
    peak = data.get("theoretical_peak_gflops")
    bandwidth = data.get("theoretical_bandwidth_gbps")
    measured = MeasuredSummary()
    if data.get("best_measured_gflops"):
        measured.matmul_gflops["float32"] = float(data["best_measured_gflops"])
    if data.get("measured_bandwidth_gbps"):
        measured.stream_gbps["stream_copy"] = float(data["measured_bandwidth_gbps"])
    cal = HardwareCalibration(
        metadata=md,
        peak_gflops={"float32": Peak(value=peak, source=PeakSource.USER)} if peak else {},
        peak_bandwidth_gbps=Peak(value=bandwidth, source=PeakSource.USER) if bandwidth else None,
        measured=measured,
    )
    for old_key, entry in (data.get("operation_profiles") or {}).items():
        op = _operation(old_key, entry, device)
        cal.operation_profiles[op.key] = op
    for pattern, entry in (data.get("fusion_profiles") or {}).items():
        name = entry.get("fusion_pattern", pattern)
        cal.fusion_profiles.setdefault(name, []).append(_fusion(name, entry, device))
    return cal
