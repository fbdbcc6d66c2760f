"""The profile schema: pydantic v2 models, no I/O (see ``calibration.profile.storage``).

Latencies are in milliseconds, throughputs in GFLOP/s and GB/s (10^9), sizes in bytes.
Efficiencies are fractions of the *measured* ceilings recorded on each entry, never of a
made-up peak, and compute and bandwidth efficiency are two separate fields.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, field_validator, model_validator

from calibration.profile.roofline import Bottleneck
from calibration.profile.verdict import Verdict
from calibration.specs.dtypes import DTYPE_NAMES
from calibration.specs.keys import operation_key
from calibration.specs.operations import OPERATIONS
from calibration.specs.params import InvalidParameter, UnknownParameter
from calibration.specs.patterns import PATTERNS, VARIANTS


class _Model(BaseModel):
    # Unknown fields are an error: a typo in a hand-edited profile should not vanish. No
    # float may be infinite or NaN: a latency of Infinity would print "inf ms" in a
    # prediction and "+inf%" in a comparison rather than be refused where it was read.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Counts of FLOPs, bytes, rounds: at most what a 64-bit counter holds, so that no arithmetic
# on them overflows a float (10**400 FLOPs / 1.0 s raises OverflowError).
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
# A parameter value in a profile: the kinds the registry uses, integers within range.
Param = Annotated[int, Field(ge=-(2**62), le=2**62)] | float | str | bool
Dtype = Literal[DTYPE_NAMES]  # type: ignore[valid-type]
Device = Literal["cpu", "cuda"]
# A legacy entry (upgraded from the predecessor's layout) keeps the parameters it had; only
# entries of the registry are checked against it.
LEGACY_FAMILY = "legacy"


def _check_registered(spec, entry: FusionCalibration | OperationCalibration, key: str) -> None:
    """An entry of a registered operation or pattern (``spec``) has its family, its
    parameters, and ``key``, the key made of its fields (compare matches entries by key)."""
    if entry.family != spec.family:
        raise ValueError(f"Invalid family {entry.family!r} of entry {entry.key}; allowed: {spec.family!r} "
                         f"(or {LEGACY_FAMILY!r} for an entry upgraded from the predecessor)")
    try:
        spec.check(entry.params, complete=True, where="params.")
    except (UnknownParameter, InvalidParameter) as exc:
        raise ValueError(f"entry {entry.key}: {exc}") from None
    if entry.key != key:
        raise ValueError(f"entry key {entry.key!r} does not match its fields ({key!r})")


class FrozenModel(BaseModel):
    """An immutable result (a comparison, a partition, an estimate), not a profile entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PeakSource(str, Enum):
    USER = "user"
    DETECTED = "detected"


class Peak(_Model):
    value: PositiveFloat
    source: PeakSource


class CudaInfo(_Model):
    name: str
    capability: str
    memory_gib: float
    multiprocessors: int
    cuda_version: str | None
    cudnn_version: int | None


class Metadata(_Model):
    """Where and how a profile was measured. A value that could not be read is null."""

    hardware_name: str
    device_type: Literal["cpu", "cuda"]
    device_name: str
    cpu_model: str | None = None
    physical_cores: int | None = Field(default=None, ge=1)
    logical_cpus: int | None = Field(default=None, ge=1)
    usable_cpus: int | None = Field(default=None, ge=1)
    threads: int | None = Field(default=None, ge=1, description="torch.get_num_threads() during the run")
    interop_threads: int | None = Field(default=None, ge=1)
    memory_gib: NonNegativeFloat | None = None
    cache_sizes: dict[str, Annotated[Count, Field(gt=0)]] = Field(
        default_factory=dict, description="per-core data cache bytes by level")
    cpu_capability: str | None = Field(default=None, description="ATen's vector ISA (e.g. AVX2, AVX512)")
    os: str | None = None
    python_version: str | None = None
    torch_version: str | None = None
    numpy_version: str | None = None
    pydantic_version: str | None = None
    pytest_version: str | None = None
    pytest_benchmark_version: str | None = None
    calibration_version: str | None = None
    date: datetime
    git_commit: str | None = None
    git_dirty: bool | None = None
    allocator: dict[str, str | None] = Field(default_factory=dict)
    thread_env: dict[str, str | None] = Field(default_factory=dict)
    cuda: CudaInfo | None = None
    quick: bool | None = None
    command: list[str] = Field(default_factory=list)
    busy_cpus_before: NonNegativeFloat | None = Field(
        default=None, description="CPUs kept busy by other work just before the run started")
    busy_cpus_during: NonNegativeFloat | None = Field(
        default=None, description="CPUs kept busy by other work while the cases were timed, on average")
    load_average_before: NonNegativeFloat | None = Field(
        default=None, description="1-minute load average at the start")
    load_average_after: NonNegativeFloat | None = None
    canary_ms: PositiveFloat | None = Field(
        default=None, description="the fastest reading of the host-state canary during the run (measure.canary: a "
        "16->16 channel 3x3 conv at 32x32, batch 1, ms a call); a reading over x1.5 this is the host's slow state")
    upgraded_from: str | None = Field(
        default=None, description="set when the profile was converted from another layout"
    )
    merged_from: list[datetime] = Field(
        default_factory=list, description="dates of the calibrations this profile is the per-case median of "
                                          "(python -m calibration merge); empty for one run")

    def busy_warning(self) -> str | None:
        """Why this run's timings are suspect because other work competed, or None."""
        cpus = self.usable_cpus or self.logical_cpus
        of = f" of {cpus}" if cpus else ""
        during, before = self.busy_cpus_during, self.busy_cpus_before
        if during is not None and during > BUSY_CPUS:
            return f"other processes kept {during:.1f}{of} CPUs busy on average while the cases were timed"
        if before is None or before <= BUSY_CPUS:
            return None
        return (f"other processes kept {before:.1f}{of} CPUs busy when the run started; "
                "they competed for cores and memory bandwidth")


# Other work using more than half a CPU when a run starts makes its timings suspect: on
# this project's 2-core machine a busy neighbour turned every 1 Mi element op into an
# ~8 ms OpenMP wait with a tight IQR, which the 'noisy' flag cannot catch.
BUSY_CPUS = 0.5


# LatencyStats.source of statistics as pytest-benchmark computed them from its rounds (not re-timed,
# not a later window's, not converted)
BENCHMARK_SOURCE = "pytest-benchmark"


class LatencyStats(_Model):
    """Per-call latency statistics of one case, in milliseconds."""

    median_ms: float = Field(ge=0)
    iqr_ms: float | None = Field(ge=0)
    min_ms: float | None = Field(ge=0)
    mean_ms: float = Field(ge=0)
    stddev_ms: float | None = Field(ge=0)
    rounds: Count = Field(ge=1)
    iterations: Count | None = Field(ge=1, description="calls per timed round")
    samples_ms: list[NonNegativeFloat] = Field(
        default_factory=list, description="per-call time of each round (at most 200, in run order)"
    )
    source: str = Field(
        default=BENCHMARK_SOURCE,
        description="who computed these; a converted profile may only have had a mean",
    )
    windows_ms: list[NonNegativeFloat] = Field(
        default_factory=list,
        description="medians of the windows the case was timed in, first the run's and then the later ones at its "
                    "end (empty: one window); where they disagreed the statistics are those of the middle window",
    )

    @field_validator("samples_ms", "windows_ms")
    @classmethod
    def _four_significant_digits(cls, samples: list[float]) -> list[float]:
        # Run-to-run noise is percent-level; 4 digits keep a full profile a few times smaller.
        return [float(f"{t:.4g}") for t in samples]


# Provenance both kinds of entry carry.
Origin = Annotated[str | None, Field(
    description="the models (and batches) this entry was calibrated for (--calibrate-model)")]
OtherCpus = Annotated[NonNegativeFloat | None, Field(
    description="CPUs other work (other processes, the hypervisor's steal) kept busy while this entry was timed: "
                "all busy CPU time in /proc/stat less this process's own")]
Busy = Annotated[bool, Field(description="other_cpus above BUSY_CPUS (0.5): the timing is suspect")]


class FusionCalibration(_Model):
    """One fused variant of one pattern at one shape, against its unfused twin."""

    key: str = Field(description="pattern[params]/dtype/device/variant")
    pattern: str
    family: str
    operators: list[str]
    params: dict[str, Param]
    dtype: Dtype
    device: Device
    variant: str = Field(description="library or compiled")
    fused_kernel: str = Field(description="what runs in the fused variant")
    flops: Count = Field(description="the same for both forms")
    unfused_bytes: Count
    fused_bytes: Count = Field(description="ideal single-kernel traffic")
    memory_reduction: float = Field(description="1 - fused_bytes / unfused_bytes")
    unfused: LatencyStats
    fused: LatencyStats
    speedup: float = Field(gt=0, description="unfused median / fused median")
    speedup_ci_low: PositiveFloat | None = Field(description="95% bootstrap interval of the speedup")
    speedup_ci_high: PositiveFloat | None
    unfused_gflops: NonNegativeFloat
    fused_gflops: NonNegativeFloat
    unfused_arithmetic_intensity: NonNegativeFloat | None
    fused_arithmetic_intensity: NonNegativeFloat | None
    unfused_bottleneck: Bottleneck
    fused_bottleneck: Bottleneck
    verdict: Verdict
    compile_seconds: NonNegativeFloat | None = Field(
        default=None, description="first call of the compiled variant (compilation), excluded from timing"
    )
    origin: Origin = None
    other_cpus: OtherCpus = None
    busy: Busy = False
    unfused_alone_ms: NonNegativeFloat | None = Field(
        default=None, description="median of the unfused case timed on its own (the twin in 'unfused' was timed "
                                  "round by round beside this variant)")
    twin_disturbed: bool = Field(
        default=False, description="the twin's median is over 1.5x off unfused_alone_ms: the speedup compares "
                                   "with a baseline that ran unlike the unfused code alone")

    @model_validator(mode="after")
    def _registered(self) -> FusionCalibration:
        """An entry of a registered pattern has its parameters, a fused variant and a key made of them."""
        spec = PATTERNS.get(self.pattern)
        if spec is None or self.family == LEGACY_FAMILY:
            return self
        if self.variant not in VARIANTS[1:]:
            raise ValueError(f"Invalid variant {self.variant!r} of entry {self.key}; allowed: "
                             f"{', '.join(VARIANTS[1:])}")
        _check_registered(spec, self, f"{operation_key(self.pattern, self.params, self.dtype, self.device)}/"
                                      f"{self.variant}")
        return self


class OperationCalibration(_Model):
    key: str
    operation: str
    family: str
    params: dict[str, Param]
    dtype: Dtype
    device: Device
    flops: Count
    bytes: Count = Field(description="compulsory traffic of the timed kernel")
    latency: LatencyStats
    gflops: NonNegativeFloat
    gbps: NonNegativeFloat
    arithmetic_intensity: NonNegativeFloat | None = Field(description="FLOPs per byte")
    memory_level: str = Field(
        description="cache level the working set fits in (at most half of it), LLC-DRAM between that and STREAM's "
                    "size (4x the last-level cache), else DRAM")
    compute_ceiling_gflops: PositiveFloat | None = Field(description="the ceiling compute_efficiency divides by")
    bandwidth_ceiling_gbps: PositiveFloat | None = Field(description="the ceiling bandwidth_efficiency divides by")
    compute_efficiency: NonNegativeFloat | None
    bandwidth_efficiency: NonNegativeFloat | None
    bottleneck: Bottleneck
    noisy: bool = Field(description="IQR above 10% of the median")
    origin: Origin = None
    other_cpus: OtherCpus = None
    busy: Busy = False
    warm_ms: NonNegativeFloat | None = Field(
        default=None, description="cold cases (family 'cold'): the median of the same kernel called again right "
                                  "after each cold call, cache-hot, in the same rounds; cold / warm is its penalty. "
                                  "after_busy cases (family 'sequence'): the probe's third call in a row, each round")
    preceding_ms: NonNegativeFloat | None = Field(
        default=None, description="after_busy cases: the median time of the NxN matmul that ran right before each "
                                  "timed call")

    @model_validator(mode="after")
    def _registered(self) -> OperationCalibration:
        """An entry of a registered operation has its parameters and a key made of them."""
        spec = OPERATIONS.get(self.operation)
        if spec is None or self.family == LEGACY_FAMILY:
            return self
        _check_registered(spec, self, operation_key(self.operation, self.params, self.dtype, self.device))
        return self


class AfterBusyPoint(_Model):
    """What a call costs over its repeated time when the kernel before it ran ``preceding_ms``."""

    preceding_ms: PositiveFloat
    extra_us: float = Field(description="the after_busy probes' median after the busy kernel less their median "
                                        "after themselves, averaged over the probes (noise can make it negative)")


class MeasuredSummary(_Model):
    """Ceilings measured in this run. A ceiling exists where its reference ran (matmul for
    a dtype; the triad sweep or STREAM for a memory level) and is the best that any case
    attained there, so noise in the one reference case cannot push an efficiency above 1.
    The matmul, STREAM and triad figures show where the ceilings come from."""

    compute_ceiling_gflops: dict[Dtype, PositiveFloat] = Field(
        default_factory=dict, description="per dtype: best GFLOPS of any operation case (in practice matmul)"
    )
    bandwidth_by_level_gbps: dict[str, PositiveFloat] = Field(
        default_factory=dict,
        description="per memory level: best GB/s of any operation case whose working set lives in that level "
                    "(none for LLC-DRAM, the transition zone between the last-level cache and DRAM)",
    )
    matmul_gflops: dict[Dtype, NonNegativeFloat] = Field(
        default_factory=dict, description="best matmul GFLOPS per dtype over every path"
    )
    matmul_gflops_by_path: dict[Dtype, dict[str, NonNegativeFloat]] = Field(
        default_factory=dict, description="dtype -> library path -> best GFLOPS"
    )
    stream_gbps: dict[str, NonNegativeFloat] = Field(
        default_factory=dict, description="STREAM copy/scale/add/triad with arrays of 4x the last-level cache"
    )
    triad_by_level_gbps: dict[str, NonNegativeFloat] = Field(
        default_factory=dict,
        description="best triad sweep bandwidth with the working set in each level (LLC-DRAM included)"
    )
    dispatch_overhead_us: NonNegativeFloat | None = None
    after_busy: list[AfterBusyPoint] = Field(
        default_factory=list,
        description="by the preceding kernel's time, ascending: what a call pays over its repeated time for "
                    "following that kernel (the after_busy cases)")
    module_call_overhead_us: NonNegativeFloat | None = Field(
        default=None, description="a small nn.ReLU module call: dispatch plus Module.__call__")
    module_overhead_us: dict[str, float] = Field(
        default_factory=dict,
        description="nn.Module class -> what a call of it costs over the registry kernel it runs, on a tiny "
                    "input (negative where the kernel's benchmarked call path is the slower one)")
