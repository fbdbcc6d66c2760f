"""Compare two profiles entry by entry: pure, no pytest, no file I/O.

Entries are matched by their stable key (operation keys; fusion entries by their own
``key``). Each matched entry gets the ratio new/base of one metric, whether it got worse
by more than a threshold, and whether the difference is significant: a two-sided
Mann-Whitney U test on the stored raw samples (asv's choice) at ``alpha``. A regression is
worse than the threshold *and* significant, so noise alone does not fail a comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal

import numpy as np
from pydantic import computed_field

from calibration.profile.entries import FrozenModel
from calibration.profile.schema import (
    FusionCalibration,
    HardwareCalibration,
    LatencyStats,
    OperationCalibration,
)
from calibration.profile.verdict import Verdict
from calibration.report.ranktest import mann_whitney_u, smallest_p_value

Metric = Literal["latency", "gflops", "speedup"]
METRICS: tuple[Metric, ...] = ("latency", "gflops", "speedup")
DEFAULT_THRESHOLD = 0.10
# asv's significance level: strict, because a profile holds hundreds of entries and a CI
# gate that fails on one false positive in twenty is worse than none.
DEFAULT_ALPHA = 0.002
# McGill's notch half-width, in IQRs per sqrt(rounds): two medians whose notches do not
# overlap differ at roughly the 5% level. Only for profiles without raw samples.
NOTCH_FACTOR = 1.57
# Metadata that changes what the timings mean: a difference is reported above the table.
COMPARED_METADATA = (
    "hardware_name", "device_type", "device_name", "cpu_model", "threads", "torch_version",
    "calibration_version", "quick",
)

Entry = OperationCalibration | FusionCalibration
COMPARABLE = {
    "latency": "entries",
    "gflops": "entries with FLOPs (--metric gflops skips the rest)",
    "speedup": "fusion entries (--metric speedup compares fusion entries only)",
}


class NothingInCommon(ValueError):
    """The two profiles share no entry that the chosen metric applies to."""


class Method(str, Enum):
    RANK = "mann-whitney"  # U test on the raw samples; p_value is set
    NOTCHES = "median-notches"  # no samples: non-overlapping intervals of the medians
    NONE = "not testable"  # neither samples nor IQR: never flagged


class Status(str, Enum):
    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    UNCHANGED = "unchanged"


class MetadataDifference(FrozenModel):
    field: str
    base: str | int | bool | None
    new: str | int | bool | None


class VerdictFlip(FrozenModel):
    key: str
    base: Verdict
    new: Verdict


class EntryComparison(FrozenModel):
    key: str
    kind: Literal["operation", "fusion"]
    base: float
    new: float
    ratio: float  # new / base
    worse_by: float  # fraction the metric got worse by (latency up, GFLOPS or speedup down); < 0: better
    method: Method  # how significance was decided
    p_value: float | None  # Mann-Whitney only
    significant: bool
    regression: bool  # worse by more than the threshold and significant
    improvement: bool  # better by more than the threshold and significant
    note: str | None = None
    busy: str | None = None  # "base", "new" or "base and new": timed while other work kept the machine busy

    @computed_field
    @property
    def status(self) -> Status:
        if self.regression:
            return Status.REGRESSION
        return Status.IMPROVEMENT if self.improvement else Status.UNCHANGED


class Comparison(FrozenModel):
    base_name: str
    new_name: str
    metric: Metric
    threshold: float
    alpha: float
    metadata_differences: list[MetadataDifference]
    busy: list[str]  # the profiles whose run started on a busy machine, with the load
    entries: list[EntryComparison]
    only_in_base: list[str]
    only_in_new: list[str]
    not_applicable: list[str]  # in both, but the metric does not apply (no FLOPs, not a fusion entry)
    verdict_flips: list[VerdictFlip]

    @computed_field
    @property
    def regressed(self) -> bool:
        return any(e.regression for e in self.entries)

    @computed_field
    @property
    def counts(self) -> dict[str, int]:
        """Compared entries per status."""
        return {status.value: len(self.with_status(status)) for status in Status}

    def with_status(self, status: Status) -> list[EntryComparison]:
        return [e for e in self.entries if e.status is status]


# --------------------------------------------------------------------------- significance


@dataclass(frozen=True)
class _Evidence:
    """What a metric's significance is tested on: raw samples, else an interval of the median."""

    samples: Sequence[float]
    interval: tuple[float, float] | None


def _latency_evidence(stats: LatencyStats) -> _Evidence:
    interval = None
    if stats.iqr_ms is not None:
        half = NOTCH_FACTOR * stats.iqr_ms / math.sqrt(stats.rounds)
        interval = (stats.median_ms - half, stats.median_ms + half)
    return _Evidence(stats.samples_ms, interval)


def _speedup_evidence(entry: FusionCalibration) -> _Evidence:
    """Per-round speedups. Fused variants are timed interleaved with their unfused twin
    (equal sample counts, round i of each taken back to back), so unfused_i / fused_i
    cancels the drift both saw and the test asks whether the fused kernel gained or lost
    *relative to the unfused code on the same machine state*. Without that pairing each
    fused round is divided by the unfused median. Without samples, the stored 95%
    bootstrap interval of the speedup stands in for the notches."""
    unfused, fused = entry.unfused.samples_ms, entry.fused.samples_ms
    if unfused and len(unfused) == len(fused):
        samples = list(np.divide(unfused, fused))
    elif fused:
        samples = list(entry.unfused.median_ms / np.asarray(fused))
    else:
        samples = []
    low, high = entry.speedup_ci_low, entry.speedup_ci_high
    return _Evidence(samples, (low, high) if low is not None and high is not None else None)


def _significance(
    base: _Evidence, new: _Evidence, alpha: float
) -> tuple[Method, float | None, bool, str | None]:
    """How it was decided, the p-value (U test only), whether significant, and a note."""
    if base.samples and new.samples:
        result = mann_whitney_u(base.samples, new.samples)
        floor = smallest_p_value(len(base.samples), len(new.samples))
        note = None
        if floor >= alpha:
            note = f"too few samples ({len(base.samples)} and {len(new.samples)}) to reach p < {alpha:g}"
        return Method.RANK, result.p_value, result.p_value < alpha, note
    if base.interval and new.interval:
        apart = base.interval[1] < new.interval[0] or new.interval[1] < base.interval[0]
        return Method.NOTCHES, None, apart, "no raw samples: compared median intervals"
    return Method.NONE, None, False, "no samples and no spread recorded: not testable"


# --------------------------------------------------------------------------- metrics


def _measure(entry: Entry, metric: Metric) -> tuple[float, _Evidence] | None:
    """The metric's value for one entry and what its significance rests on; None where the
    metric does not apply. GFLOPS is FLOPs / median latency, a monotone function of the
    latency, so its rank test is the latency's."""
    if isinstance(entry, OperationCalibration):
        if metric == "latency":
            return entry.latency.median_ms, _latency_evidence(entry.latency)
        if metric == "gflops" and entry.flops:
            return entry.gflops, _latency_evidence(entry.latency)
        return None
    if metric == "latency":
        return entry.fused.median_ms, _latency_evidence(entry.fused)
    if metric == "gflops" and entry.flops:
        return entry.fused_gflops, _latency_evidence(entry.fused)
    if metric == "speedup":
        return entry.speedup, _speedup_evidence(entry)
    return None


def _compare_entry(
    key: str, base: Entry, new: Entry, metric: Metric, threshold: float, alpha: float
) -> EntryComparison | None:
    measured_base, measured_new = _measure(base, metric), _measure(new, metric)
    if measured_base is None or measured_new is None or measured_base[0] <= 0:
        return None
    (value_base, evidence_base), (value_new, evidence_new) = measured_base, measured_new
    ratio = value_new / value_base
    worse_by = ratio - 1 if metric == "latency" else 1 - ratio
    method, p_value, significant, note = _significance(evidence_base, evidence_new, alpha)
    return EntryComparison(
        key=key,
        kind="operation" if isinstance(base, OperationCalibration) else "fusion",
        base=value_base,
        new=value_new,
        ratio=ratio,
        worse_by=worse_by,
        method=method,
        p_value=p_value,
        significant=significant,
        regression=significant and worse_by > threshold,
        improvement=significant and -worse_by > threshold,
        note=note,
        busy=" and ".join(side for side, entry in (("base", base), ("new", new)) if entry.busy) or None,
    )


def entries(profile: HardwareCalibration, select: Callable[[str], bool] | None = None) -> dict[str, Entry]:
    """Every entry of a profile by its key (those ``select`` accepts): operations, then fusion entries."""
    table: dict[str, Entry] = dict(profile.operation_profiles)
    for pattern_entries in profile.fusion_profiles.values():
        table.update((entry.key, entry) for entry in pattern_entries)
    return table if select is None else {key: entry for key, entry in table.items() if select(key)}


def metadata_differences(base: HardwareCalibration, new: HardwareCalibration) -> list[MetadataDifference]:
    return [
        MetadataDifference(field=name, base=getattr(base.metadata, name), new=getattr(new.metadata, name))
        for name in COMPARED_METADATA
        if getattr(base.metadata, name) != getattr(new.metadata, name)
    ]


def busy(name: str, profile: HardwareCalibration) -> list[str]:
    """``name`` and why, when its run started with other work competing for the cores."""
    warning = profile.metadata.busy_warning()
    return [f"{name} ({warning})"] if warning else []


def compare(
    base: HardwareCalibration,
    new: HardwareCalibration,
    *,
    metric: Metric = "latency",
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    base_name: str = "base",
    new_name: str = "new",
    select: Callable[[str], bool] | None = None,
) -> Comparison:
    """Compare ``new`` against ``base``, the entries whose key ``select`` accepts (default:
    all; see :func:`calibration.profile.select.parse_filter`); raises NothingInCommon when
    no entry can be compared."""
    if metric not in METRICS:
        raise ValueError(f"Invalid metric {metric!r}; allowed: {', '.join(METRICS)}")
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"Invalid threshold {threshold!r}; allowed: a fraction of zero or more (0.1 is ten percent)")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"Invalid alpha {alpha!r}; allowed: a probability between 0 and 1, exclusive")
    old_entries, new_entries = entries(base, select), entries(new, select)
    shared = [key for key in old_entries if key in new_entries]
    compared, not_applicable, flips = [], [], []
    for key in shared:
        before, after = old_entries[key], new_entries[key]
        result = _compare_entry(key, before, after, metric, threshold, alpha)
        if result is None:
            not_applicable.append(key)
        else:
            compared.append(result)
        if isinstance(before, FusionCalibration) and isinstance(after, FusionCalibration) \
                and before.verdict != after.verdict:
            flips.append(VerdictFlip(key=key, base=before.verdict, new=after.verdict))
    if not compared:
        raise NothingInCommon(
            f"{base_name} and {new_name} have no {COMPARABLE[metric]} in common "
            f"({len(old_entries)} entries in {base_name}, {len(new_entries)} in {new_name}, "
            f"{len(shared)} shared keys{' matching the filter' if select else ''}); "
            "were they made with the same --quick and selection?"
        )
    return Comparison(
        base_name=base_name,
        new_name=new_name,
        metric=metric,
        threshold=threshold,
        alpha=alpha,
        metadata_differences=metadata_differences(base, new),
        busy=busy(base_name, base) + busy(new_name, new),
        entries=compared,
        only_in_base=[key for key in old_entries if key not in new_entries],
        only_in_new=[key for key in new_entries if key not in old_entries],
        not_applicable=not_applicable,
        verdict_flips=flips,
    )
