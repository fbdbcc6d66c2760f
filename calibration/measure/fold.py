"""Fold measured cases into a HardwareCalibration: pure, no pytest, no I/O."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from calibration.measure import stats
from calibration.profile import roofline, verdict
from calibration.profile.fusion import PatternEntries
from calibration.profile.schema import (
    BUSY_CPUS,
    AfterBusyPoint,
    FusionCalibration,
    HardwareCalibration,
    LatencyStats,
    MeasuredSummary,
    Metadata,
    OperationCalibration,
    Peak,
)
from calibration.specs.dtypes import itemsize
from calibration.specs.operations import AFTER_BUSY_PROBES, OPERATIONS, Case
from calibration.specs.patterns import FusionCase

STREAM_KERNELS = ("stream_copy", "stream_scale", "stream_add", "stream_triad")


@dataclass(frozen=True)
class Record:
    """One finished benchmark case: what ran and how long it took."""

    case: Case
    latency: LatencyStats
    # CPUs other work kept busy while the case was timed (host.CpuTimes.other_cpus)
    other_cpus: float | None = None
    # a cold case: its warm twin's median ms, timed in the same rounds
    warm_ms: float | None = None
    # an after_busy case: the median time of the kernel that ran right before each timed call
    preceding_ms: float | None = None
    # the slower of two readings of the host's state canary (measure.canary), taken right
    # before and right after the case's window; None where none was taken
    canary_ms: float | None = None


@dataclass(frozen=True)
class FusionRecord:
    """One finished fusion variant case."""

    case: FusionCase
    latency: LatencyStats
    compile_seconds: float | None = None
    # The unfused twin timed in the same rounds (fused variants); None for the unfused case.
    baseline: LatencyStats | None = None
    other_cpus: float | None = None


def is_busy(other_cpus: float | None) -> bool:
    return other_cpus is not None and other_cpus > BUSY_CPUS


def _seconds(record: Record) -> float:
    return record.latency.median_ms / 1e3


def summarize(records: Iterable[Record], cache_sizes: Mapping[str, int], threads: int = 1) -> MeasuredSummary:
    summary = MeasuredSummary()
    module_calls: dict[tuple[str, str], LatencyStats] = {}  # (module class, form) -> latency
    after_busy: dict[int, list[Record]] = {}  # matmul size -> its probes' records

    def best(table: dict, key: str, value: float) -> None:
        table[key] = max(table.get(key, 0.0), value)

    for record in records:
        case, seconds = record.case, _seconds(record)
        rate, bandwidth = roofline.gflops(case.flops, seconds), roofline.gbps(case.bytes, seconds)
        level = roofline.level_for_working_set(case.bytes, cache_sizes)
        # a level's ceilings come from working sets the caches below cannot hold
        sets_level = roofline.clear_of_the_level_below(case.bytes, level, cache_sizes, threads)
        if case.spec.family == "sequence":
            if case.operation == "after_busy" and record.warm_ms is not None and record.preceding_ms is not None:
                after_busy.setdefault(int(case.param_dict["N"]), []).append(record)
            continue
        if case.flops:
            best(summary.compute_ceiling_gflops, case.dtype, rate)
        # The alloc family times the allocator, and write-only fills are no ceiling; the
        # transition zone between the LLC and DRAM is no level's.
        if case.spec.family != "alloc" and level != roofline.TRANSITION and sets_level:
            best(summary.bandwidth_by_level_gbps, level, bandwidth)
        if case.operation == "matmul":
            best(summary.matmul_gflops_by_path.setdefault(case.dtype, {}), str(case.param_dict["path"]), rate)
            best(summary.matmul_gflops, case.dtype, rate)
        elif case.operation in STREAM_KERNELS:
            if roofline.is_stream_size(int(case.param_dict["n"]) * itemsize(case.dtype), cache_sizes):
                best(summary.stream_gbps, case.operation, bandwidth)
            if case.operation == "stream_triad" and sets_level:
                best(summary.triad_by_level_gbps, level, bandwidth)
        elif case.operation == "dispatch":
            summary.dispatch_overhead_us = record.latency.median_ms * 1e3
        elif case.operation == "module_call":
            module_calls[(str(case.param_dict["module"]), str(case.param_dict["form"]))] = record.latency
    # Both forms run the same kernel on the same input, so what differs is fixed Python work:
    # the fastest rounds, least disturbed by the machine, measure it (tiny oneDNN calls here
    # have an IQR as large as the difference of their medians).
    for (module, form), latency in module_calls.items():
        if form == "module" and (module, "kernel") in module_calls:
            summary.module_overhead_us[module] = (latency.min_ms - module_calls[(module, "kernel")].min_ms) * 1e3
    if ("ReLU", "module") in module_calls:
        summary.module_call_overhead_us = module_calls[("ReLU", "module")].median_ms * 1e3
    summary.after_busy = after_busy_points(after_busy)
    # A ceiling exists only where its reference ran (matmul for a dtype, the triad sweep or
    # STREAM for a level): a run of conv cases alone must not score conv against itself.
    summary.compute_ceiling_gflops = {
        dtype: v for dtype, v in summary.compute_ceiling_gflops.items() if dtype in summary.matmul_gflops
    }
    referenced = set(summary.triad_by_level_gbps) | ({"DRAM"} if summary.stream_gbps else set())
    summary.bandwidth_by_level_gbps = {
        level: v for level, v in summary.bandwidth_by_level_gbps.items() if level in referenced
    }
    return summary


def after_busy_points(by_size: Mapping[int, list[Record]]) -> list[AfterBusyPoint]:
    """Per busy kernel: its median time over the probes' rounds, and what a probe's call took
    over the same call right after itself, averaged over the probes (a point only where every
    probe ran: one probe alone is not what an average call pays)."""
    points = []
    for records in by_size.values():
        if {r.case.param_dict["probe"] for r in records} != set(AFTER_BUSY_PROBES):
            continue
        extra = [(r.latency.median_ms - r.warm_ms) * 1e3 for r in records]
        points.append(AfterBusyPoint(preceding_ms=statistics.median(r.preceding_ms for r in records),
                                     extra_us=sum(extra) / len(extra)))
    return sorted(points, key=lambda p: p.preceding_ms)


def unpaired(records: Iterable[FusionRecord]) -> list[str]:
    """Keys of fused variants whose unfused twin did not run: no speedup can be given."""
    records = list(records)
    measured = {r.case.shape_key for r in records if r.case.variant == "unfused"}
    return [
        r.case.key for r in records
        if r.case.variant != "unfused" and r.baseline is None and r.case.shape_key not in measured
    ]


def _fusion_entry(cal: HardwareCalibration, fused: FusionRecord, base: LatencyStats,
                  alone: LatencyStats | None) -> FusionCalibration:
    """``base``: the unfused latency, interleaved with the fused rounds where available;
    ``alone``: the unfused case timed by itself, where it ran."""
    case, spec = fused.case, fused.case.spec
    flops, fused_bytes = case.flops, case.bytes
    unfused_bytes = spec.bytes_unfused(case.param_dict, itemsize(case.dtype))
    t_unfused, t_fused = base.median_ms / 1e3, fused.latency.median_ms / 1e3
    speedup = t_unfused / t_fused
    if base.samples_ms and fused.latency.samples_ms:
        paired = fused.baseline is not None and len(base.samples_ms) == len(fused.latency.samples_ms)
        low, high = verdict.speedup_interval(base.samples_ms, fused.latency.samples_ms, paired=paired)
    else:
        low = high = None
    compute = cal.compute_ceiling(case.dtype)

    def bottleneck(nbytes: int) -> roofline.Bottleneck:
        return roofline.classify(flops, nbytes, compute, cal.bandwidth_ceiling(nbytes))

    return FusionCalibration(
        key=case.key,
        pattern=case.pattern,
        family=spec.family,
        operators=list(spec.operators),
        params=case.param_dict,
        dtype=case.dtype,
        device=case.device,
        variant=case.variant,
        fused_kernel=(spec.library_kernel if case.variant == "library"
                      else "torch.compile (inductor) of the unfused code"),
        flops=flops,
        unfused_bytes=unfused_bytes,
        fused_bytes=fused_bytes,
        memory_reduction=1 - fused_bytes / unfused_bytes if unfused_bytes else 0.0,
        unfused=base,
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
        other_cpus=fused.other_cpus,
        busy=is_busy(fused.other_cpus),
        unfused_alone_ms=alone.median_ms if alone else None,
        twin_disturbed=verdict.twin_disturbed(base.median_ms, alone.median_ms if alone else None),
    )


def fold(
    records: Iterable[Record],
    metadata: Metadata,
    *,
    fusion_records: Iterable[FusionRecord] = (),
    peak_gflops: Mapping[str, Peak] | None = None,
    peak_bandwidth: Peak | None = None,
    origins: Mapping[str, str] | None = None,
) -> HardwareCalibration:
    """The profile of these records; ``origins`` maps a case key to the models it was calibrated for."""
    origins = origins or {}
    records = list(records)
    cal = HardwareCalibration(
        metadata=metadata,
        peak_gflops=dict(peak_gflops or {}),
        peak_bandwidth_gbps=peak_bandwidth,
        measured=summarize(records, metadata.cache_sizes, metadata.threads),
    )
    for record in records:
        case, seconds = record.case, _seconds(record)
        flops, nbytes = case.flops, case.bytes
        attained_gflops = roofline.gflops(flops, seconds)
        attained_gbps = roofline.gbps(nbytes, seconds)
        compute_ceiling = cal.compute_ceiling(case.dtype) if flops else None
        # the alloc family times the allocator, not the memory system: no roof scores it
        bandwidth_ceiling = None if case.spec.family == "alloc" else cal.bandwidth_ceiling(nbytes)
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
            origin=origins.get(case.key),
            other_cpus=record.other_cpus,
            busy=is_busy(record.other_cpus),
            warm_ms=record.warm_ms,
            preceding_ms=record.preceding_ms,
        )
    fusion_records = list(fusion_records)
    unfused = {r.case.shape_key: r for r in fusion_records if r.case.variant == "unfused"}
    for record in fusion_records:
        standalone = unfused.get(record.case.shape_key)
        base = record.baseline or (standalone.latency if standalone else None)
        if record.case.variant == "unfused" or base is None:
            continue
        entry = _fusion_entry(cal, record, base, standalone.latency if standalone else None)
        entry = entry.model_copy(update={"origin": origins.get(record.case.key)})
        cal.fusion_profiles.setdefault(entry.pattern, PatternEntries()).append(entry)
    return cal
