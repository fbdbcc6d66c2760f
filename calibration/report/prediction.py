"""What ``python -m calibration predict`` prints: where a model's predicted (and measured)
time goes, in one screen; and the same as data for ``--format json``.

Text stays under 40 lines whatever the model: totals per operation type, the kernels that
take the most time (or, with a measurement per kernel, miss the most), the allocator term
on its own line, and the measured error raw and corrected for drift.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calibration.measure.model_timing import Measurement
    from calibration.predict.mapper import LatencyEstimate
    from calibration.predict.results import Partition
    from calibration.profile.schema import HardwareCalibration
    from calibration.report.attribution import Attribution

TOP_KERNELS = 10
TOP_TYPES = 8


def _kernels(part: Partition, eager: LatencyEstimate, calibration: HardwareCalibration) -> list[dict[str, Any]]:
    """Every kernel with its prediction, module and share of the roof, the slowest first."""
    predicted = {k.name: k for sg in eager.subgraphs for k in sg.kernels}
    rows = []
    for sg in part.subgraphs:
        for node in sg.nodes:
            if not node.kernel or node.name not in predicted:
                continue
            k = predicted[node.name]
            roof = calibration.roofline_seconds(node.flops, node.bytes, node.dtype or "float32")
            rows.append({"name": node.name, "target": node.target, "module": node.module, "op": node.op,
                         "operation": node.operation, "bound": k.bottleneck.value, "source": k.source,
                         "predicted_ms": k.seconds * 1e3, "roof_ms": roof * 1e3 if roof is not None else None})
    return sorted(rows, key=lambda r: -r["predicted_ms"])


def _by_type(kernels: list[dict[str, Any]]) -> list[tuple[str, int, float]]:
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for k in kernels:
        totals[k["op"]][0] += 1
        totals[k["op"]][1] += k["predicted_ms"]
    return sorted(((op, int(n), ms) for op, (n, ms) in totals.items()), key=lambda t: -t[2])


def _pct(values: list[float]) -> str:
    middle = statistics.median(values)
    return f"{100 * middle:+.1f}% ({100 * min(values):+.1f} to {100 * max(values):+.1f})"


def _allocator_line(estimate: LatencyEstimate, faults: Sequence[int] | None) -> str:
    term = estimate.allocator
    if term is None:
        return "allocator: not replayed (the partition could not record this model's allocations)"
    if term.fault_bytes is None:
        return f"allocator ({term.allocator}): the replay could not run here"
    volume = f"{_mib(term.fault_bytes)} MiB"
    if term.fault_bytes_low is not None and term.fault_bytes_high is not None \
            and term.fault_bytes_low != term.fault_bytes_high:
        volume += f" ({_mib(term.fault_bytes_low)}-{_mib(term.fault_bytes_high)} over heap histories)"
    if term.ms is None:
        priced = "unpriced: the profile has no fill_fresh/fill pair above 32 MiB"
    else:
        priced = f"{term.ms:.3f} ms ({term.ms_low:.3f}-{term.ms_high:.3f}), which a caching allocator saves"
    measured = ""
    if faults:
        middle = statistics.median(faults)
        measured = (f"; measured {_mib(middle * 4096)} MiB ({middle:.0f} faults; median of {len(faults)} "
                    f"forwards, {_mib(min(faults) * 4096)}-{_mib(max(faults) * 4096)})")
    return f"allocator ({term.allocator}): replay faults in {volume} per forward, {priced}{measured}"


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f}"


def render(*, model: str, batch: int, part: Partition, eager: LatencyEstimate, fused: LatencyEstimate | None,
           calibration: HardwareCalibration, measurement: Measurement | None = None,
           refusal: str | None = None, faults: Sequence[int] | None = None,
           attribution: Attribution | None = None) -> str:
    md = calibration.metadata
    lines = [f"{model} batch {batch} on {md.hardware_name} ({md.threads or '?'} threads in the profile)"]
    steady = f"steady {eager.steady_ms:.3f}"
    if eager.after_busy_ms:
        steady += f", of which {eager.after_busy_ms:.3f} for calls right after longer kernels"
    if eager.allocator is not None and eager.allocator.ms:
        steady += f" + page faults {eager.allocator.ms:.3f}"
    line = f"predicted eager {eager.total_ms:.3f} ms ({steady})"
    if fused is not None:
        line += f"; fused {fused.total_ms:.3f} ms ({eager.total_ms / fused.total_ms:.2f}x at the measured speedups)"
    lines.append(line)
    lines.append(_allocator_line(eager, faults))
    if attribution is not None:
        lines += ["", attribution.render(top=TOP_KERNELS)]
    else:
        kernels = _kernels(part, eager, calibration)
        lines += ["", f"  {'by operation':<22}{'kernels':>8}{'eager ms':>11}{'share':>7}"]
        for op, count, ms in _by_type(kernels)[:TOP_TYPES]:
            lines.append(f"  {op[:22]:<22}{count:>8}{ms:>11.3f}{100 * ms / eager.steady_ms:>6.0f}%")
        lines += ["", f"  slowest kernels ({min(TOP_KERNELS, len(kernels))} of {len(kernels)})",
                  f"  {'node':<26}{'module':<12}{'op':<12}{'bound':<8}{'ms':>8}{'of roof':>8}"]
        for k in kernels[:TOP_KERNELS]:
            share = f"{100 * k['roof_ms'] / k['predicted_ms']:.0f}%" if k["roof_ms"] and k["predicted_ms"] else "-"
            lines.append(f"  {k['name'][-26:]:<26}{(k['module'] or '-')[:11]:<12}{k['op'][:11]:<12}"
                         f"{k['bound'][:7]:<8}{k['predicted_ms']:>8.3f}{share:>8}")
    if measurement is not None:
        lines.append("")
        lines += _measurement_lines(eager, measurement, refusal)
    notes = [n for n in eager.notes if "not calibrated" not in n][:2]
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def _measurement_lines(eager: LatencyEstimate, m: Measurement, refusal: str | None) -> list[str]:
    times = [r.model_ms for r in m.kept]
    aside = len(m.rounds) - len(m.kept)
    lines = [f"measured {m.model_ms:.3f} ms (median of {len(times)} interleaved rounds, "
             f"{min(times):.3f}-{max(times):.3f}"
             + (f"; {aside} more set aside: their references ran outside the profile's speed)" if aside else ")")]
    factors = [r.factor for r in m.rounds if r.factor is not None]
    if factors:
        refs = ", ".join(f"{name} ({m.rounds[0].classes.get(name, 'compute')}) "
                         f"x{statistics.median(r.drift[name] for r in m.rounds):.2f}" for name in m.rounds[0].drift)
        lines.append(f"reference kernels now vs the profile: {refs}")
        split = eager.time_by_class()
        total = sum(split.values()) or 1.0
        lines.append("the prediction by drift class: " + ", ".join(
            f"{kind} {100 * ms / total:.0f}%" for kind, ms in split.items()) + " (each corrected by its references)")
    if refusal:
        lines.append(f"error not reported: {refusal}")
        return lines
    raw, corrected = m.errors(eager.total_ms, eager.time_by_class())
    text = f"error: raw {_pct(raw)}"
    text += f", drift-corrected {_pct(corrected)}" if corrected else " (no reference case in the profile to correct by)"
    lines.append(text)
    return lines


def as_json(*, model: str, batch: int, part: Partition, eager: LatencyEstimate, fused: LatencyEstimate | None,
            calibration: HardwareCalibration, measurement: Measurement | None = None, refusal: str | None = None,
            faults: Sequence[int] | None = None, attribution: Attribution | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model, "batch": batch, "predicted_ms": eager.total_ms, "steady_ms": eager.steady_ms,
        "after_busy_ms": eager.after_busy_ms,
        "fused_ms": fused.total_ms if fused is not None else None,
        "allocator": eager.allocator.model_dump() if eager.allocator is not None else None,
        "notes": list(eager.notes),
    }
    if attribution is not None:
        out.update({k: v for k, v in attribution.as_json().items() if k not in ("model", "batch", "predicted_ms")})
    else:
        out["kernels"] = _kernels(part, eager, calibration)
    if measurement is not None:
        raw, corrected = measurement.errors(eager.total_ms, eager.time_by_class())
        out["measurement"] = {
            "rounds": [{"model_ms": r.model_ms, "drift": r.drift, "classes": r.classes, "factor": r.factor,
                        "factor_for_prediction": r.factor_for(eager.time_by_class()),
                        "set_aside": r not in measurement.kept} for r in measurement.rounds],
            "model_ms": measurement.model_ms, "busy_cpus": measurement.busy_cpus,
            "page_faults": statistics.median(faults) if faults else faults,
            "page_faults_per_forward": list(faults) if faults is not None else None, "refused": refusal,
            "error_raw": None if refusal else statistics.median(raw),
            "error_corrected": None if refusal or corrected is None else statistics.median(corrected),
            "errors_raw": None if refusal else raw, "errors_corrected": None if refusal else corrected,
        }
    return out
