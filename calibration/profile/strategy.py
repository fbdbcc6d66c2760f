"""The predecessor's fusion-strategy helpers, answered from today's profiles.

Its users wrote cost models that call ``should_fuse(op1, op2, threshold)`` and
``get_fusion_patterns(min_speedup)``; :class:`FusionCostModel` gives both, and
``fusion_benefit(pattern)``, over a profile that keeps every size and variant: a speedup is
the one :meth:`~calibration.profile.lookup.ProfileQueries.get_fusion_speedup` gives
(interpolated at a shape when one is given, else the median over calibrated sizes of the
fastest fused variant), and each pattern also says how many sizes its 95% interval calls
worth fusing. Torch-free, like the profile. A partitioner that has the model's shapes uses
:func:`calibration.predict.plan.should_fuse`, which decides by the measured verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from calibration.profile.fusion import SUMMARY_DTYPE, best_per_shape
from calibration.profile.schema import HardwareCalibration
from calibration.profile.verdict import Verdict
from calibration.specs.keys import ParamValue
from calibration.specs.patterns import current_name

# The predecessor's default: fuse when it buys at least 10%.
DEFAULT_THRESHOLD = 1.1


class PatternBenefit(TypedDict):
    pattern: str
    speedup: float  # median over calibrated sizes of the fastest fused variant
    memory_reduction: float
    sizes: int  # calibrated shapes
    fuse_at: int  # of those, where the 95% interval of the speedup says fusing pays


class FusionCostModel:
    """Measured fusion benefits for a partitioner's decisions, from a profile or its path."""

    def __init__(self, calibration: HardwareCalibration | str | Path):
        if not isinstance(calibration, HardwareCalibration):
            from calibration.profile.storage import load_calibration

            calibration = load_calibration(calibration)
        self.calibration = calibration

    def fusion_benefit(self, pattern: str, **shape: ParamValue) -> float:
        """Measured speedup of fusing ``pattern`` (1.0: no benefit, or never calibrated)."""
        return self.calibration.get_fusion_speedup(current_name(pattern), 1.0, **shape)

    def should_fuse(self, op1: str, op2: str, threshold: float = DEFAULT_THRESHOLD, **shape: ParamValue) -> bool:
        """Whether fusing ``op1`` and ``op2`` (the pattern ``f"{op1}_{op2}"``, e.g. Linear_Bias)
        was measured at least ``threshold`` times faster; False for a pattern never calibrated."""
        return self.fusion_benefit(f"{op1}_{op2}", **shape) >= threshold

    def get_fusion_patterns(self, min_speedup: float = DEFAULT_THRESHOLD) -> list[PatternBenefit]:
        """The patterns whose speedup reaches ``min_speedup``, fastest first."""
        beneficial = []
        for pattern, entries in self.calibration.fusion_profiles.items():
            if not entries or entries.speedup_factor < min_speedup:
                continue
            device = self.calibration.metadata.device_type
            best = best_per_shape(e for e in entries if e.dtype == SUMMARY_DTYPE and e.device == device)
            beneficial.append(PatternBenefit(
                pattern=pattern, speedup=entries.speedup_factor, memory_reduction=entries.memory_reduction,
                sizes=len(best), fuse_at=sum(e.verdict is Verdict.FUSE for e in best),
            ))
        return sorted(beneficial, key=lambda benefit: benefit["speedup"], reverse=True)
