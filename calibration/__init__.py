"""Measure a machine's real compute, bandwidth and fusion behaviour; hand it to performance models."""

from calibration.api import calibrate_hardware
from calibration.schema import (
    SCHEMA_VERSION,
    HardwareCalibration,
    LatencyStats,
    MeasuredSummary,
    Metadata,
    OperationCalibration,
    Peak,
    PeakSource,
)
from calibration.storage import ProfileError, load_calibration

__all__ = [
    "SCHEMA_VERSION",
    "HardwareCalibration",
    "LatencyStats",
    "MeasuredSummary",
    "Metadata",
    "OperationCalibration",
    "Peak",
    "PeakSource",
    "ProfileError",
    "calibrate_hardware",
    "load_calibration",
]
