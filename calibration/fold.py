"""Fold measured cases into a HardwareCalibration: pure, no pytest, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from calibration import roofline, stats, verdict
from calibration.fusion import FusionCase
from calibration.ops import OPERATIONS, Case
from calibration.schema import (
    FusionCalibration,
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


@dataclass(frozen=True)
class FusionRecord:
    """One finished fusion variant case."""

    case: FusionCase
    latency: LatencyStats
    compile_seconds: float | None = None


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


def unpaired(records: Iterable[FusionRecord]) -> list[str]:
    """Keys of fused variants whose unfused twin did not run: no speedup can be given."""
    records = list(records)
    measured = {r.case.shape_key for r in records if r.case.variant == "unfused"}
    return [r.case.key for r in records if r.case.variant != "unfused" and r.case.shape_key not in measured]


def _fusion_entry(cal: HardwareCalibration, fused: FusionRecord, base: FusionRecord) -> FusionCalibration:
    case, spec = fused.case, fused.case.spec
    flops, unfused_bytes, fused_bytes = case.flops, base.case.bytes, case.bytes
    t_unfused, t_fused = base.latency.median_ms / 1e3, fused.latency.median_ms / 1e3
    speedup = t_unfused / t_fused
    if base.latency.samples_ms and fused.latency.samples_ms:
        low, high = verdict.speedup_interval(base.latency.samples_ms, fused.latency.samples_ms)
    else:
        low = high = None
    compute = cal.compute_ceiling(case.dtype)
    levels, dram, caches = cal.measured.bandwidth_by_level_gbps, cal.dram_bandwidth(), cal.metadata.cache_sizes

    def bottleneck(nbytes: int) -> roofline.Bottleneck:
        return roofline.classify(flops, nbytes, compute, roofline.bandwidth_ceiling(nbytes, caches, levels, dram))

    return FusionCalibration(
        key=case.key,
        pattern=case.pattern,
        family=spec.family,
        operators=list(spec.operators),
        params=case.param_dict,
        dtype=case.dtype,
        device=case.device,
        variant=case.variant,
        fused_kernel=spec.library_kernel if case.variant == "library" else "torch.compile (inductor) of the unfused code",
        flops=flops,
        unfused_bytes=unfused_bytes,
        fused_bytes=fused_bytes,
        memory_reduction=1 - fused_bytes / unfused_bytes if unfused_bytes else 0.0,
        unfused=base.latency,
        fused=fused.latency,
        speedup=speedup,
        speedup_ci_low=low,
        speedup_ci_high=high,
        unfused_gflops=roofline.gflops(flops, t_unfused),
        fused_gflops=roofline.gflops(flops, t_fused),
        unfused_arithmetic_intensity=roofline.arithmetic_intensity(flops, unfused_bytes),
        fused_arithmetic_intensity=roofline.arithmetic_intensity(flops, fused_bytes),
        unfused_bottleneck=bottleneck(unfused_bytes),
        fused_bottleneck=bottleneck(fused_bytes),
        verdict=verdict.decide(speedup, low, high),
        compile_seconds=fused.compile_seconds,
    )


def fold(
    records: Iterable[Record],
    metadata: Metadata,
    *,
    fusion_records: Iterable[FusionRecord] = (),
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
            noisy=stats.is_noisy(record.latency.median_ms, record.latency.iqr_ms or 0.0),
        )
    fusion_records = list(fusion_records)
    unfused = {r.case.shape_key: r for r in fusion_records if r.case.variant == "unfused"}
    for record in fusion_records:
        base = unfused.get(record.case.shape_key)
        if record.case.variant == "unfused" or base is None:
            continue
        entry = _fusion_entry(cal, record, base)
        cal.fusion_profiles.setdefault(entry.pattern, []).append(entry)
    return cal
