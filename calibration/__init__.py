"""Measure a machine's real compute, bandwidth and fusion behaviour; hand it to performance models.

The names below are the public API. They load on first use (PEP 562), so that reading or
comparing a profile does not import torch; see the README's architecture section for the
layers behind them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "SCHEMA_VERSION": "calibration.profile.schema",
    "HardwareCalibration": "calibration.profile.schema",
    "LatencyStats": "calibration.profile.schema",
    "MeasuredSummary": "calibration.profile.schema",
    "Metadata": "calibration.profile.schema",
    "OperationCalibration": "calibration.profile.schema",
    "FusionCalibration": "calibration.profile.schema",
    "FusionCostModel": "calibration.profile.strategy",
    "Peak": "calibration.profile.schema",
    "PeakSource": "calibration.profile.schema",
    "ProfileError": "calibration.profile.storage",
    "load_calibration": "calibration.profile.storage",
    "calibrate_hardware": "calibration.api",
    "merge_profiles": "calibration.measure.merge",
    "CPUMapper": "calibration.predict.mapper",
    "GPUMapper": "calibration.predict.mapper",
    "LatencyEstimate": "calibration.predict.mapper",
    "predict_latency": "calibration.predict.mapper",
    "Partition": "calibration.predict.results",
    "Subgraph": "calibration.predict.results",
    "partition": "calibration.predict.plan",
    "fusion_benefit": "calibration.predict.plan",
    "should_fuse": "calibration.predict.plan",
}

# public name -> a module exported as it is (the README's ``from calibration import models``)
_MODULES: dict[str, str] = {"models": "calibration.predict.models"}

__all__ = [
    "CPUMapper",
    "FusionCalibration",
    "FusionCostModel",
    "GPUMapper",
    "HardwareCalibration",
    "LatencyEstimate",
    "LatencyStats",
    "MeasuredSummary",
    "Metadata",
    "OperationCalibration",
    "Partition",
    "Peak",
    "PeakSource",
    "ProfileError",
    "SCHEMA_VERSION",
    "Subgraph",
    "calibrate_hardware",
    "fusion_benefit",
    "load_calibration",
    "merge_profiles",
    "models",
    "partition",
    "predict_latency",
    "should_fuse",
]
if set(__all__) != set(_EXPORTS) | set(_MODULES):
    raise ImportError("calibration.__all__ and its lazy exports disagree")


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
        globals()[name] = value
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'calibration' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from calibration.api import calibrate_hardware
    from calibration.measure.merge import merge_profiles
    from calibration.predict.mapper import (
        CPUMapper,
        GPUMapper,
        LatencyEstimate,
        predict_latency,
    )
    from calibration.predict.plan import fusion_benefit, partition, should_fuse
    from calibration.predict.results import Partition, Subgraph
    from calibration.profile.schema import (
        SCHEMA_VERSION,
        FusionCalibration,
        HardwareCalibration,
        LatencyStats,
        MeasuredSummary,
        Metadata,
        OperationCalibration,
        Peak,
        PeakSource,
    )
    from calibration.profile.storage import ProfileError, load_calibration
    from calibration.profile.strategy import FusionCostModel
