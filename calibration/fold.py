"""Fold measured cases into a HardwareCalibration: pure, no pytest, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from calibration import roofline, stats
from calibration.ops import OPERATIONS, Case
from calibration.schema import (
    HardwareCalibration,
    LatencyStats,
    MeasuredSummary,
    Metadata,
    OperationCalibration,
    Peak,
)

STREAM_KERNELS = ("stream_copy", "stream_scale", "stream_add", "stream_triad")


@dataclass(frozen=True)
class Record:
    """One finished benchmark case: what ran and how long it took."""

    case: Case
    latency: LatencyStats


def _seconds(record: Record) -> float:
    return record.latency.median_ms / 1e3


def summarize(records: Iterable[Record], cache_sizes: Mapping[str, int]) -> MeasuredSummary:
    summary = MeasuredSummary()
    for record in records:
        case, seconds = record.case, _seconds(record)
        if case.operation == "matmul":
            rate = roofline.gflops(case.flops, seconds)
            path = str(case.param_dict["path"])
            by_path = summary.matmul_gflops_by_path.setdefault(case.dtype, {})
            by_path[path] = max(by_path.get(path, 0.0), rate)
            summary.matmul_gflops[case.dtype] = max(summary.matmul_gflops.get(case.dtype, 0.0), rate)
        elif case.operation in STREAM_KERNELS:
            rate = roofline.gbps(case.bytes, seconds)
            level = roofline.level_for_working_set(case.bytes, cache_sizes)
            if level == "DRAM":
                summary.stream_gbps[case.operation] = max(summary.stream_gbps.get(case.operation, 0.0), rate)
            if case.operation == "stream_triad":
                levels = summary.bandwidth_by_level_gbps
                levels[level] = max(levels.get(level, 0.0), rate)
        elif case.operation == "dispatch":
            summary.dispatch_overhead_us = record.latency.median_ms * 1e3
    return summary


def fold(
    records: Iterable[Record],
    metadata: Metadata,
    *,
    peak_gflops: Mapping[str, Peak] | None = None,
    peak_bandwidth: Peak | None = None,
) -> HardwareCalibration:
    records = list(records)
    cal = HardwareCalibration(
        metadata=metadata,
        peak_gflops=dict(peak_gflops or {}),
        peak_bandwidth_gbps=peak_bandwidth,
        measured=summarize(records, metadata.cache_sizes),
    )
    dram = cal.dram_bandwidth()
    levels = cal.measured.bandwidth_by_level_gbps
    for record in records:
        case, seconds = record.case, _seconds(record)
        flops, nbytes = case.flops, case.bytes
        attained_gflops = roofline.gflops(flops, seconds)
        attained_gbps = roofline.gbps(nbytes, seconds)
        compute_ceiling = cal.compute_ceiling(case.dtype) if flops else None
        bandwidth_ceiling = roofline.bandwidth_ceiling(nbytes, metadata.cache_sizes, levels, dram)
        cal.operation_profiles[case.key] = OperationCalibration(
            key=case.key,
            operation=case.operation,
            family=OPERATIONS[case.operation].family,
            params=case.param_dict,
            dtype=case.dtype,
            device=case.device,
            flops=flops,
            bytes=nbytes,
            latency=record.latency,
            gflops=attained_gflops,
            gbps=attained_gbps,
            arithmetic_intensity=roofline.arithmetic_intensity(flops, nbytes),
            memory_level=roofline.level_for_working_set(nbytes, metadata.cache_sizes),
            compute_ceiling_gflops=compute_ceiling,
            bandwidth_ceiling_gbps=bandwidth_ceiling,
            compute_efficiency=roofline.efficiency(attained_gflops, compute_ceiling),
            bandwidth_efficiency=roofline.efficiency(attained_gbps, bandwidth_ceiling),
            bottleneck=roofline.classify(flops, nbytes, cal.compute_ceiling(case.dtype), bandwidth_ceiling),
            noisy=stats.is_noisy(record.latency.median_ms, record.latency.iqr_ms),
        )
    return cal
