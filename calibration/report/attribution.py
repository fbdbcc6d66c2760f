"""Predicted against measured time, kernel by kernel: where a model's time goes.

Joins a partition's kernels and the mapper's per-kernel predictions with the per-node
times a profiled forward measured (:mod:`calibration.measure.node_profile`). Each kernel
is a row; so is every measured time no kernel accounts for: tensors materialised inside a
kernel's call (a permuted operand made contiguous), view nodes that took time, and the
forward's glue between nodes. Rows sort by the absolute miss, the largest first.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Literal

from calibration.profile.entries import FrozenModel

if TYPE_CHECKING:
    from calibration.measure.node_profile import GraphProfile
    from calibration.predict.mapper import LatencyEstimate
    from calibration.predict.results import Partition
    from calibration.profile.schema import HardwareCalibration

RowKind = Literal["kernel", "hidden copy", "view", "glue"]
# Rows the text report lists one by one; the JSON has them all.
TOP_ROWS = 15


class AttributionRow(FrozenModel):
    name: str  # fx node name; a hidden copy is "node/aten::op"
    kind: RowKind
    op: str | None = None  # the partition's canonical op (conv2d, batch_norm, copy, ...)
    module: str | None = None  # the nn.Module class a call_module node calls
    target: str | None = None  # the module path or function the node calls
    operation: str | None = None  # the registry operation the prediction looked up
    bound: str | None = None
    source: str | None = None  # how the prediction was obtained
    predicted_ms: float
    measured_ms: float
    roof_ms: float | None = None  # time at the profile's ceilings (no efficiency)

    @property
    def miss_ms(self) -> float:
        return self.predicted_ms - self.measured_ms

    @property
    def roof_share(self) -> float | None:
        """How much of the roof the measured call reached (roof time / measured time)."""
        if self.roof_ms is None or self.measured_ms <= 0:
            return None
        return self.roof_ms / self.measured_ms


class Attribution(FrozenModel):
    model: str
    batch: int
    predicted_ms: float  # the eager prediction: the sum of the kernel rows' predictions
    measured_ms: float  # one forward under the profiler (median of the profiled runs)
    eager_ms: float | None = None  # one forward without the profiler, where measured
    runs: int
    rows: tuple[AttributionRow, ...]

    @property
    def accounted_ms(self) -> float:
        return sum(row.measured_ms for row in self.rows)

    @property
    def accounted_share(self) -> float:
        return self.accounted_ms / self.measured_ms if self.measured_ms else 0.0

    def by_type(self) -> list[tuple[str, int, float, float]]:
        """(op or row kind, rows, predicted ms, measured ms), the most measured time first."""
        totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        for row in self.rows:
            key = row.op if row.kind == "kernel" and row.op else row.kind
            totals[key][0] += 1
            totals[key][1] += row.predicted_ms
            totals[key][2] += row.measured_ms
        return sorted(((k, int(v[0]), v[1], v[2]) for k, v in totals.items()), key=lambda t: -t[3])

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "batch": self.batch, "predicted_ms": self.predicted_ms,
            "measured_ms": self.measured_ms, "eager_ms": self.eager_ms, "profiled_runs": self.runs,
            "accounted_ms": self.accounted_ms, "accounted_share": self.accounted_share,
            "ops": [{**row.model_dump(), "miss_ms": row.miss_ms, "roof_share": row.roof_share} for row in self.rows],
        }

    def render(self, top: int = TOP_ROWS) -> str:
        eager = f"; without the profiler {self.eager_ms:.3f} ms" if self.eager_ms is not None else ""
        lines = [
            f"{self.model} batch {self.batch}: predicted {self.predicted_ms:.3f} ms (eager); measured "
            f"{self.measured_ms:.3f} ms under the profiler (median of {self.runs}){eager}",
            f"the rows account for {self.accounted_ms:.3f} ms, {100 * self.accounted_share:.0f}% of the "
            "profiled forward",
            "",
            f"  {'by operation':<22}{'rows':>5}{'predicted ms':>14}{'measured ms':>13}{'miss ms':>10}{'share':>7}",
        ]
        for key, count, predicted, measured in self.by_type():
            share = 100 * measured / self.measured_ms if self.measured_ms else 0.0
            lines.append(f"  {key[:22]:<22}{count:>5}{predicted:>14.3f}{measured:>13.3f}"
                         f"{predicted - measured:>+10.3f}{share:>6.0f}%")
        lines += ["", f"  largest misses ({top} of {len(self.rows)} rows; --format json lists all)",
                  f"  {'node':<26}{'op':<14}{'bound':<8}{'predicted':>10}{'measured':>10}{'miss':>9}{'of roof':>8}"]
        for row in self.rows[:top]:
            roof = f"{100 * row.roof_share:.0f}%" if row.roof_share is not None else "-"
            lines.append(f"  {row.name[-26:]:<26}{(row.op or row.kind)[:13]:<14}{(row.bound or '-')[:7]:<8}"
                         f"{row.predicted_ms:>10.3f}{row.measured_ms:>10.3f}{row.miss_ms:>+9.3f}{roof:>8}")
        return "\n".join(lines)


def attribute(part: Partition, estimate: LatencyEstimate, measured: GraphProfile, *, batch: int,
              calibration: HardwareCalibration | None = None, eager_ms: float | None = None) -> Attribution:
    """One row per kernel of ``part`` and per measured time no kernel accounts for."""
    predicted = {k.name: k for sg in estimate.subgraphs for k in sg.kernels}
    rows: list[AttributionRow] = []
    for sg in part.subgraphs:
        for node in sg.nodes:
            timing = measured.nodes.get(node.name)
            total = timing.total_ms if timing else 0.0
            hidden = timing.hidden_ms if timing else {}
            if not node.kernel:
                if total > 0:
                    rows.append(AttributionRow(name=node.name, kind="view", op=node.op, module=node.module,
                                               target=node.target, predicted_ms=0.0, measured_ms=total))
                continue
            k = predicted.get(node.name)
            copy_ms = k.copy_seconds * 1e3 if k else 0.0
            # the partition's predicted copy goes to the measured copy rows, shared by their time
            for op, ms in hidden.items():
                share = ms / sum(hidden.values()) if sum(hidden.values()) else 1 / len(hidden)
                rows.append(AttributionRow(name=f"{node.name}/{op}", kind="hidden copy", op="copy",
                                           target=node.target, predicted_ms=copy_ms * share, measured_ms=ms))
            rows.append(AttributionRow(
                name=node.name, kind="kernel", op=node.op, module=node.module, target=node.target,
                operation=node.operation, bound=k.bottleneck.value if k else None, source=k.source if k else None,
                predicted_ms=(k.seconds * 1e3 - (copy_ms if hidden else 0.0)) if k else 0.0,
                measured_ms=total - sum(hidden.values()),
                roof_ms=_roof_ms(calibration, node.flops, node.bytes, node.dtype),
            ))
    rows.append(AttributionRow(name="(between nodes)", kind="glue", predicted_ms=0.0,
                               measured_ms=max(measured.outside_ms, 0.0)))
    rows.sort(key=lambda r: -abs(r.miss_ms))
    return Attribution(model=part.model, batch=batch, predicted_ms=sum(r.predicted_ms for r in rows),
                       measured_ms=measured.forward_ms, eager_ms=eager_ms, runs=measured.runs, rows=tuple(rows))


def _roof_ms(calibration: HardwareCalibration | None, flops: int, nbytes: int, dtype: str | None) -> float | None:
    if calibration is None:
        return None
    seconds = calibration.roofline_seconds(flops, nbytes, dtype or "float32")
    return seconds * 1e3 if seconds is not None else None
