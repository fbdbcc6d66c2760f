"""Measure a machine's real compute, bandwidth and fusion behaviour; hand it to performance models."""

from calibration.api import calibrate_hardware
from calibration.mapper import CPUMapper, GPUMapper, LatencyEstimate, predict_latency
from calibration.partitioner import Partition, Subgraph, fusion_benefit, partition, should_fuse
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
    "CPUMapper",
    "GPUMapper",
    "LatencyEstimate",
    "Partition",
    "Subgraph",
    "HardwareCalibration",
    "LatencyStats",
    "MeasuredSummary",
    "Metadata",
    "OperationCalibration",
    "Peak",
    "PeakSource",
    "ProfileError",
    "calibrate_hardware",
    "fusion_benefit",
    "load_calibration",
    "partition",
    "predict_latency",
    "should_fuse",
]
