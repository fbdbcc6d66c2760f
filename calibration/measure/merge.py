"""One profile from several calibrations of one machine: each case at the median of its runs.

A calibration times a case in a window of seconds, so a profile carries the state the shared
host was in during its minutes. On the 2-vCPU AVX2 VM two full profiles a session apart put
all twenty accuracy cases 5-30% apart, every one the same way, and the accuracy protocol's
re-timed references took out only part of it (against the same measured rounds, the faster
profile scored 12-19% where the other scored 6-7%). Merging calibrations run at different
times keeps, for each case, the entry whose median is the median of its runs, with that
run's own statistics: a median of three ignores one run taken in an odd state, where a mean
would move a third of the way to it. At least three profiles are merged; a case found in an
even number of them (a grid one run lacked) keeps the lower of its two middle runs.

The ceilings (compute, bandwidth per level, dispatch) are derived again from the merged
entries, as a run derives them from its records, so every efficiency is against the merged
ceilings. A fusion entry keeps the run whose speedup is the median. Every profile must come
from the same machine and software (device, CPU model, threads, vector ISA, torch version).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from calibration.measure.fold import Record, fold
from calibration.profile.entries import LEGACY_FAMILY, FusionCalibration, OperationCalibration
from calibration.profile.schema import HardwareCalibration
from calibration.specs.operations import OPERATIONS, Case

# Metadata whose difference makes two profiles measurements of different things.
SAME_MACHINE = ("device_type", "device_name", "cpu_model", "logical_cpus", "threads", "cpu_capability",
                "torch_version")


# Of two runs the median is either: it takes a third to outvote one taken in an odd state.
MIN_PROFILES = 3


class MergeError(ValueError):
    """The profiles cannot be merged; the message names the profile and the value."""


@dataclass(frozen=True)
class MergeSummary:
    profiles: int
    operation_entries: int
    in_every_profile: int  # operation entries every profile had
    kept_per_profile: tuple[int, ...]  # operation entries whose median run each profile supplied
    fusion_entries: int


def _median_low(entries: list, value) -> object:
    """The entry whose value is the median (the lower middle one for an even count)."""
    ordered = sorted(entries, key=value)
    return ordered[(len(ordered) - 1) // 2]


def _check_same_machine(profiles: Sequence[HardwareCalibration], names: Sequence[str]) -> None:
    first = profiles[0].metadata
    for profile, name in zip(profiles[1:], names[1:], strict=True):
        for field in SAME_MACHINE:
            mine, theirs = getattr(first, field), getattr(profile.metadata, field)
            if mine != theirs:
                raise MergeError(f"{name} was calibrated with {field} {theirs!r}, {names[0]} with {mine!r}; "
                                 f"merge only calibrations of one machine and software ({', '.join(SAME_MACHINE)})")


def _record(entry: OperationCalibration, name: str) -> Record:
    if entry.family == LEGACY_FAMILY or entry.operation not in OPERATIONS:
        raise MergeError(f"{name} has the entry {entry.key!r}, which this tool's registry cannot place (an entry "
                         "of the predecessor's layout or of an operation since removed); merge profiles this "
                         "version calibrated")
    spec = OPERATIONS[entry.operation]
    names = (*spec.param_names, *spec.optional)
    case = Case(entry.operation, tuple((p, entry.params[p]) for p in names if p in entry.params),
                entry.dtype, entry.device)
    if case.key != entry.key:
        raise MergeError(f"{name}: the entry {entry.key!r} does not have the parameters its key says "
                         f"(the registry reads them as {case.key!r})")
    return Record(case=case, latency=entry.latency, other_cpus=entry.other_cpus, warm_ms=entry.warm_ms,
                  preceding_ms=entry.preceding_ms)


def _provenance(source: str, medians: Sequence[float], total: int) -> str:
    runs = ", ".join(f"{m:.4g}" for m in sorted(medians))
    return f"{source}; the median run of {len(medians)} of {total} merged calibrations (medians {runs} ms)"


def merge_profiles(profiles: Sequence[HardwareCalibration],
                   names: Sequence[str] | None = None) -> tuple[HardwareCalibration, MergeSummary]:
    """The profile whose every case is at the median of its runs in ``profiles``, and what
    the merge kept. ``names`` (e.g. the files) label the profiles in errors. The metadata
    is the first profile's, with ``merged_from`` listing every run's date."""
    names = list(names) if names is not None else [f"profile {i + 1}" for i in range(len(profiles))]
    if len(profiles) < MIN_PROFILES:
        raise MergeError(f"merge needs at least {MIN_PROFILES} profiles, got {len(profiles)}: of two runs a median "
                         "cannot tell which one is off")
    if len(names) != len(profiles):
        raise MergeError(f"{len(names)} names for {len(profiles)} profiles")
    _check_same_machine(profiles, names)
    # every entry must be one the registry can re-fold, whichever run the merge keeps
    runs: dict[str, list[tuple[int, Record, str | None]]] = {}
    for i, (profile, name) in enumerate(zip(profiles, names, strict=True)):
        for key, entry in profile.operation_profiles.items():
            runs.setdefault(key, []).append((i, _record(entry, name), entry.origin))
    kept = [0] * len(profiles)
    records, origins = [], {}
    for key, found in runs.items():
        index, record, origin = _median_low(found, lambda run: run[1].latency.median_ms)  # type: ignore[misc]
        kept[index] += 1
        if len(found) > 1:
            record = replace(record, latency=record.latency.model_copy(update={
                "source": _provenance(record.latency.source, [r.latency.median_ms for _, r, _ in found],
                                      len(profiles))}))
        records.append(record)
        if origin:
            origins[key] = origin
    first = profiles[0]
    dates = sorted(p.metadata.date for p in profiles)
    metadata = first.metadata.model_copy(update={"date": dates[-1], "merged_from": dates})
    merged = fold(records, metadata, peak_gflops=first.peak_gflops, peak_bandwidth=first.peak_bandwidth_gbps,
                  origins=origins)
    fusion: dict[str, dict[str, list[FusionCalibration]]] = {}
    for profile in profiles:
        for pattern, entries in profile.fusion_profiles.items():
            for entry in entries:
                fusion.setdefault(pattern, {}).setdefault(entry.key, []).append(entry)
    merged.fusion_profiles = {pattern: [_median_low(found, lambda e: e.speedup) for found in by_key.values()]
                              for pattern, by_key in fusion.items()}
    summary = MergeSummary(
        profiles=len(profiles), operation_entries=len(runs),
        in_every_profile=sum(len(found) == len(profiles) for found in runs.values()),
        kept_per_profile=tuple(kept),
        fusion_entries=sum(len(entries) for entries in merged.fusion_profiles.values()))
    return HardwareCalibration.model_validate(merged.model_dump()), summary
