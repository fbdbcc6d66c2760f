"""The profile: :class:`HardwareCalibration`, one pydantic v2 model per JSON profile.

Its entries are in :mod:`calibration.profile.entries`, its queries in
:mod:`calibration.profile.lookup` and its text summary in :mod:`calibration.profile.summary`;
reading a file is :func:`calibration.profile.storage.load_calibration`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from calibration.profile.entries import (
    BUSY_CPUS,
    AfterBusyPoint,
    CudaInfo,
    Dtype,
    FrozenModel,
    FusionCalibration,
    LatencyStats,
    MeasuredSummary,
    Metadata,
    OperationCalibration,
    Peak,
    PeakSource,
    _Model,
)
from calibration.profile.files import ProfileError, save_calibration, validation_message
from calibration.profile.fusion import PatternEntries
from calibration.profile.lookup import ProfileQueries
from calibration.profile.summary import ProfileSummary

SCHEMA_VERSION = 1

__all__ = [
    "BUSY_CPUS", "SCHEMA_VERSION", "CudaInfo", "FrozenModel", "FusionCalibration", "HardwareCalibration",
    "AfterBusyPoint", "LatencyStats", "MeasuredSummary", "Metadata", "OperationCalibration", "Peak", "PeakSource",
]


class HardwareCalibration(_Model, ProfileQueries, ProfileSummary):
    schema_version: int = SCHEMA_VERSION
    metadata: Metadata
    peak_gflops: dict[Dtype, Peak] = Field(default_factory=dict, description="theoretical peak per dtype")
    peak_bandwidth_gbps: Peak | None = None
    measured: MeasuredSummary = Field(default_factory=MeasuredSummary)
    operation_profiles: dict[str, OperationCalibration] = Field(default_factory=dict)
    # A list per pattern, which also answers as the predecessor's per-pattern profile
    # (speedup_factor, memory_reduction...; see calibration.profile.fusion).
    fusion_profiles: dict[str, PatternEntries] = Field(
        default_factory=dict, description="pattern name -> one entry per shape, dtype and fused variant"
    )

    @model_validator(mode="after")
    def _keyed_by_their_entries(self) -> HardwareCalibration:
        # compare matches entries by these keys: a key that is not its entry's compares the wrong pair
        for key, entry in self.operation_profiles.items():
            if key != entry.key:
                raise ValueError(f"operation_profiles key {key!r} is not the key of its entry ({entry.key!r})")
        for pattern, entries in self.fusion_profiles.items():
            for entry in entries:
                if entry.pattern != pattern:
                    raise ValueError(f"fusion_profiles[{pattern!r}] holds an entry of pattern {entry.pattern!r}")
        return self

    def save(self, path: str | Path) -> Path:
        """Write atomically: a reader sees the old file or the new one, never a partial one.

        A profile that would not load back (a field set to Infinity after validation, say)
        raises ProfileError and writes nothing: the file there, if any, stays readable.
        """
        try:
            type(self).model_validate(self.model_dump())
        except ValidationError as exc:
            raise ProfileError(f"{path}: not saved, it would not load back: {validation_message(exc)}") from None
        return save_calibration(self, path)
