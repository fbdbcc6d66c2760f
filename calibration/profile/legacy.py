"""Reading profiles written by the predecessor (``graphs.hardware.calibration``).

Its layout: top-level ``theoretical_peak_gflops`` / ``theoretical_bandwidth_gbps``,
``metadata`` (``calibration_date``, ``cpu_count``, ``total_memory_gb``...),
``operation_profiles`` keyed by a size class, each with a mean latency and one
``efficiency`` whose meaning depended on the operation, and ``fusion_profiles`` keyed by
pattern name with ``unfused_latency_ms``, ``fused_latency_ms``, ``speedup_factor``...

What it did not record stays null here: its efficiencies are dropped (compute and
bandwidth efficiency were mixed, against assumed peaks), its means stand in for medians and
say so in ``latency.source``, and speedups without samples get no interval. Its square
matmul entries become matmul entries of this registry (``M=K=N``, the ``aten`` path its
``torch.matmul`` took) whose compute efficiency is of the best of them, the way a
calibration here divides by its best matmul; so ``get_efficiency("matmul", ...)`` answers
from them. Its other operations kept no shape this registry can place; they stay in the
profile for reading, and a query for them says so. Patterns it named differently
(``QK_AttentionScores``...) are stored under the registered name.

Every field is read with its type and range checked: a malformed file raises
:class:`LegacyFieldError` naming the field (``fusion_profiles.Linear_Bias.fused_latency_ms``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from calibration.profile import roofline, verdict
from calibration.profile.fusion import PatternEntries
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
from calibration.specs.keys import operation_key
from calibration.specs.operations import OPERATIONS
from calibration.specs.patterns import PATTERNS, RENAMED

PREDECESSOR = "the predecessor's layout (graphs.hardware.calibration)"
MEAN_SOURCE = "predecessor: mean of one timing loop (no median recorded)"
LEGACY = "legacy"  # the family and variant of what the registry cannot place


class LegacyFieldError(ValueError):
    """A field of a predecessor profile that is missing or holds what the predecessor never wrote there."""


def is_legacy(data: Mapping[str, Any]) -> bool:
    return "schema_version" not in data and "theoretical_peak_gflops" in data


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), repr(value))


class _Fields:
    """Typed reads of one JSON object of a predecessor profile; errors name the field's path."""

    def __init__(self, data: Any, where: str):
        if not isinstance(data, dict):
            raise LegacyFieldError(f"field '{where}' should be an object, found {_type(data)}")
        self.data, self.where = data, where

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def number(self, key: str, *, required: bool = False, minimum: float | None = None,
               above: float | None = None) -> float | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise LegacyFieldError(f"field '{self.name(key)}' is missing")
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LegacyFieldError(f"field '{self.name(key)}' should be a number, found {_type(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise LegacyFieldError(f"field '{self.name(key)}' is {value}, not a finite number")
        if above is not None and number <= above:
            raise LegacyFieldError(f"field '{self.name(key)}' is {value!r}; it must be above {above:g}")
        if minimum is not None and number < minimum:
            raise LegacyFieldError(f"field '{self.name(key)}' is {value!r}; it must be at least {minimum:g}")
        return number

    def integer(self, key: str, *, minimum: int = 0) -> int | None:
        number = self.number(key, minimum=minimum)
        if number is None:
            return None
        if not number.is_integer() or number > 2**53:
            raise LegacyFieldError(f"field '{self.name(key)}' is {self.data[key]!r}, not a whole number")
        return int(number)

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise LegacyFieldError(f"field '{self.name(key)}' should be a string, found {_type(value)}")
        return value

    def flag(self, key: str) -> bool:
        value = self.data.get(key)
        if value is not None and not isinstance(value, bool):
            raise LegacyFieldError(f"field '{self.name(key)}' should be true or false, found {_type(value)}")
        return bool(value)

    def obj(self, key: str) -> _Fields | None:
        value = self.data.get(key)
        return None if value is None else _Fields(value, self.name(key))

    def shape(self, key: str) -> list[int] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in value):
            raise LegacyFieldError(f"field '{self.name(key)}' should be a list of sizes, found {value!r}"[:300])
        return value

    def names(self, key: str) -> list[str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise LegacyFieldError(f"field '{self.name(key)}' should be a list of names, found {value!r}"[:300])
        return value


def _scalar_params(entry: _Fields) -> dict[str, Any]:
    extra = entry.obj("extra_params")
    params = {}
    if extra is not None:
        for name, value in extra.data.items():
            finite = not isinstance(value, float) or math.isfinite(value)
            if isinstance(value, (int, float, str, bool)) and finite:
                params[name] = value
    shape = entry.shape("input_shape")
    if shape:
        params["input_shape"] = "x".join(str(d) for d in shape)
    return params


def _latency(mean_ms: float, trials: int | None, std: float | None = None, low: float | None = None) -> LatencyStats:
    return LatencyStats(
        median_ms=mean_ms, iqr_ms=None, min_ms=low, mean_ms=mean_ms, stddev_ms=std,
        rounds=max(1, trials or 1), iterations=None, source=MEAN_SOURCE,
    )


def _work(rate_g: float | None, latency_ms: float) -> int:
    """FLOPs or bytes implied by a rate (10^9/s) and a latency, as the predecessor computed them."""
    return max(0, round((rate_g or 0.0) * latency_ms * 1e6))


def _metadata(md: _Fields) -> Metadata:
    date = md.text("calibration_date")
    try:
        when = datetime.fromisoformat(date) if date else datetime.fromtimestamp(0, timezone.utc)
    except ValueError:
        when = datetime.fromtimestamp(0, timezone.utc)
    device = md.text("device_type") or "cpu"
    return Metadata(
        hardware_name=md.text("hardware_name") or "unknown",
        device_type=device if device in ("cpu", "cuda") else "cpu",
        device_name=md.text("cpu_model") or md.text("hardware_name") or "unknown",
        cpu_model=md.text("cpu_model"),
        physical_cores=md.integer("cpu_count", minimum=1),
        memory_gib=md.number("total_memory_gb", minimum=0),
        python_version=md.text("python_version"),
        torch_version=md.text("pytorch_version"),
        numpy_version=md.text("numpy_version"),
        calibration_version=md.text("calibration_tool_version"),
        date=when,
        upgraded_from=PREDECESSOR,
    )


def _square_size(entry: _Fields) -> int | None:
    """The n of an n x n x n matmul entry: its ``matrix_size``, else a square ``input_shape``."""
    extra = entry.obj("extra_params")
    size = extra.integer("matrix_size", minimum=1) if extra is not None else None
    if size is not None:
        return size
    shape = entry.shape("input_shape")
    if shape and len(shape) == 2 and shape[0] == shape[1] and shape[0] >= 1:
        return shape[0]
    return None


def _operation(old_key: str, entry: _Fields, device: str) -> OperationCalibration:
    op = entry.text("operation_type")
    if not op:
        raise LegacyFieldError(f"field '{entry.name('operation_type')}' is missing")
    mean = entry.number("mean_latency_ms", required=True, minimum=0)
    gflops = entry.number("measured_gflops", minimum=0)
    gbps = entry.number("achieved_bandwidth_gbps", minimum=0)
    latency = _latency(mean, entry.integer("num_trials", minimum=0), entry.number("std_latency_ms", minimum=0),
                       entry.number("min_latency_ms", minimum=0))
    intensity = entry.number("arithmetic_intensity", minimum=0)
    if entry.flag("compute_bound"):
        bottleneck = Bottleneck.COMPUTE
    elif entry.flag("memory_bound"):
        bottleneck = Bottleneck.MEMORY
    else:
        bottleneck = Bottleneck.UNKNOWN
    size = _square_size(entry) if op == "matmul" else None
    if size is not None and mean > 0:
        spec, params = OPERATIONS["matmul"], {"M": size, "K": size, "N": size, "path": "aten"}
        flops, nbytes = spec.flops(params), spec.bytes_moved(params, 4)
        return OperationCalibration(
            key=operation_key("matmul", params, "float32", device), operation="matmul", family="matmul",
            params=params, dtype="float32", device=device, flops=flops, bytes=nbytes, latency=latency,
            gflops=roofline.gflops(flops, mean / 1e3), gbps=roofline.gbps(nbytes, mean / 1e3),
            arithmetic_intensity=roofline.arithmetic_intensity(flops, nbytes), memory_level="unknown",
            compute_ceiling_gflops=None, bandwidth_ceiling_gbps=None, compute_efficiency=None,
            bandwidth_efficiency=None, bottleneck=bottleneck, noisy=False,
        )
    return OperationCalibration(
        key=f"{op}[legacy={old_key}]/float32/{device}",
        operation=op,
        family=LEGACY,
        params=_scalar_params(entry),
        dtype="float32",
        device=device,
        flops=_work(gflops, mean),
        bytes=_work(gbps, mean),
        latency=latency,
        gflops=gflops or 0.0,
        gbps=gbps or 0.0,
        arithmetic_intensity=intensity,
        memory_level="unknown",
        compute_ceiling_gflops=None,
        bandwidth_ceiling_gbps=None,
        compute_efficiency=None,
        bandwidth_efficiency=None,
        bottleneck=bottleneck,
        noisy=False,
    )


def _fusion(pattern: str, entry: _Fields, device: str) -> FusionCalibration:
    unfused_ms = entry.number("unfused_latency_ms", required=True, above=0)
    fused_ms = entry.number("fused_latency_ms", required=True, above=0)
    speedup = entry.number("speedup_factor", above=0) or unfused_ms / fused_ms
    unfused_bytes = entry.integer("unfused_memory_bytes") or 0
    fused_bytes = entry.integer("fused_memory_bytes") or 0
    reduction = entry.number("memory_reduction", minimum=-1e9)
    if reduction is None:
        reduction = 1 - fused_bytes / unfused_bytes if unfused_bytes else 0.0
    unfused_gflops = entry.number("unfused_gflops", minimum=0)
    fused_gflops = entry.number("fused_gflops", minimum=0)
    trials = entry.integer("num_trials")
    flops = _work(unfused_gflops, unfused_ms)
    registered = PATTERNS.get(pattern)
    operators = entry.names("operators") or (list(registered.operators) if registered else pattern.split("_"))
    return FusionCalibration(
        key=f"{pattern}[legacy]/float32/{device}/legacy",
        pattern=pattern,
        family=LEGACY,
        operators=operators,
        params=_scalar_params(entry),
        dtype="float32",
        device=device,
        variant=LEGACY,
        fused_kernel="the predecessor's fused variant (outputs never checked against the unfused form)",
        flops=flops,
        unfused_bytes=unfused_bytes,
        fused_bytes=fused_bytes,
        memory_reduction=reduction,
        unfused=_latency(unfused_ms, trials),
        fused=_latency(fused_ms, trials),
        speedup=speedup,
        speedup_ci_low=None,
        speedup_ci_high=None,
        unfused_gflops=unfused_gflops or 0.0,
        fused_gflops=fused_gflops or 0.0,
        unfused_arithmetic_intensity=flops / unfused_bytes if unfused_bytes else None,
        fused_arithmetic_intensity=flops / fused_bytes if fused_bytes else None,
        unfused_bottleneck=Bottleneck.UNKNOWN,
        fused_bottleneck=Bottleneck.UNKNOWN,
        verdict=verdict.decide(speedup, None, None),
    )


def _peak(top: _Fields, key: str) -> Peak | None:
    value = top.number(key)
    if value is None or value == 0:  # the predecessor wrote 0 for "not given"
        return None
    if value < 0:
        raise LegacyFieldError(f"field '{key}' is {top.data[key]!r}; it must be above 0")
    return Peak(value=value, source=PeakSource.USER)


def upgrade(data: Mapping[str, Any]) -> tuple[HardwareCalibration, dict[str, str]]:
    """Convert a predecessor profile; returns it and the pattern names it renamed.

    Raises LegacyFieldError (or pydantic's ValidationError) on a malformed one."""
    top = _Fields(dict(data), "")
    md = _metadata(top.obj("metadata") or _Fields({}, "metadata"))
    device = md.device_type
    measured = MeasuredSummary()
    best = top.number("best_measured_gflops", minimum=0)
    if best:
        measured.matmul_gflops["float32"] = best
    bandwidth = top.number("measured_bandwidth_gbps", minimum=0)
    if bandwidth:
        measured.stream_gbps["stream_copy"] = bandwidth
    cal = HardwareCalibration(
        metadata=md,
        peak_gflops={"float32": peak} if (peak := _peak(top, "theoretical_peak_gflops")) else {},
        peak_bandwidth_gbps=_peak(top, "theoretical_bandwidth_gbps"),
        measured=measured,
    )
    operations = top.obj("operation_profiles")
    for old_key, value in (operations.data.items() if operations else ()):
        op = _operation(old_key, _Fields(value, operations.name(old_key)), device)
        cal.operation_profiles.setdefault(op.key, op)  # two entries of one size: the first stays
    _score_matmuls(cal)
    renamed: dict[str, str] = {}
    fusions = top.obj("fusion_profiles")
    for pattern, value in (fusions.data.items() if fusions else ()):
        entry = _Fields(value, fusions.name(pattern))
        name = entry.text("fusion_pattern") or pattern
        if name in RENAMED:
            renamed[name], name = RENAMED[name], RENAMED[name]
        cal.fusion_profiles.setdefault(name, PatternEntries()).append(_fusion(name, entry, device))
    return cal, renamed


def _score_matmuls(cal: HardwareCalibration) -> None:
    """Compute efficiencies of the upgraded matmul entries, of the best of them."""
    matmuls = [e for e in cal.operation_profiles.values() if e.operation == "matmul" and e.family != LEGACY]
    ceiling = max((e.gflops for e in matmuls), default=0.0)
    if ceiling <= 0:
        return
    cal.measured.compute_ceiling_gflops["float32"] = ceiling
    for entry in matmuls:
        bound = entry.bottleneck if entry.bottleneck != Bottleneck.UNKNOWN else roofline.classify(
            entry.flops, entry.bytes, ceiling, cal.dram_bandwidth())
        cal.operation_profiles[entry.key] = entry.model_copy(update={
            "compute_ceiling_gflops": ceiling, "compute_efficiency": entry.gflops / ceiling, "bottleneck": bound})
