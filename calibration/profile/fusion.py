"""One pattern's fusion entries, which also answer as the predecessor's per-pattern profile.

A profile keeps every size, dtype and fused variant of a pattern (``fusion_profiles[pattern]``
is a list of :class:`FusionCalibration`). The predecessor kept one object per pattern, and
its users' scripts read ``profile.speedup_factor``, ``.memory_reduction``,
``.gflops_improvement`` and ``.operators`` while iterating ``fusion_profiles.items()``.
:class:`PatternEntries` is that list with those attributes added, computed from its entries
the way :meth:`~calibration.profile.lookup.ProfileQueries.get_fusion_speedup` summarises a
pattern: so old loops run unchanged, the numbers agree with the queries, and every entry
stays available by indexing and iteration.

A list subclass rather than a view object, because the field's type, its JSON (a plain
array), its JSON Schema and ``==`` with a list all stay as they were: pydantic validates the
array into a list and this class only wraps it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from calibration.profile.entries import FusionCalibration

# What the predecessor's attributes summarise: float32 entries, as its calibration measured
# only float32 and as get_fusion_speedup(pattern) answers by default.
SUMMARY_DTYPE = "float32"
NO_SPEEDUP = 1.0  # get_fusion_speedup's default for a pattern with no entry to summarise


def best_per_shape(entries: Iterable[FusionCalibration]) -> list[FusionCalibration]:
    """The fastest fused variant at each calibrated shape, in the order the shapes first appear."""
    groups: dict[tuple, list[FusionCalibration]] = {}
    for entry in entries:
        groups.setdefault(tuple(sorted(entry.params.items(), key=str)), []).append(entry)
    return [max(group, key=lambda e: e.speedup) for group in groups.values()]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


class PatternEntries(list):
    """A pattern's entries (one per shape, dtype and fused variant), plus the predecessor's
    per-pattern attributes summarising the float32 ones."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls, handler.generate_schema(list[FusionCalibration]))

    def _summarised(self) -> list[FusionCalibration]:
        entries = [e for e in self if e.dtype == SUMMARY_DTYPE]
        if not entries:
            return []
        # one device per profile; get_fusion_speedup asks for the profile's
        device = entries[0].device
        return best_per_shape(e for e in entries if e.device == device)

    @property
    def fusion_pattern(self) -> str | None:
        return self[0].pattern if self else None

    @property
    def operators(self) -> list[str]:
        return list(self[0].operators) if self else []

    @property
    def num_operators(self) -> int:
        return len(self.operators)

    @property
    def speedup_factor(self) -> float:
        """Unfused over fused latency: the median over calibrated sizes of the fastest fused
        variant at each, as ``get_fusion_speedup(pattern)`` gives it (1.0 without entries)."""
        best = self._summarised()
        return median([e.speedup for e in best]) if best else NO_SPEEDUP

    @property
    def memory_reduction(self) -> float:
        """1 - fused bytes / unfused bytes, the median over the same entries."""
        best = self._summarised()
        return median([e.memory_reduction for e in best]) if best else 0.0

    @property
    def gflops_improvement(self) -> float:
        """Fused over unfused GFLOPS, less one: the FLOPs are the same in both forms, so it is
        ``speedup_factor - 1`` (the predecessor's (fused - unfused) / unfused GFLOPS)."""
        return self.speedup_factor - 1.0
