"""Which of a model's kernels to re-time beside it, to tell how far the machine has drifted.

The accuracy protocol (``measure.model_timing``) corrects a prediction by how much slower
the machine runs now than when it was calibrated. Generic references (a 1024-cube GEMM, a
conv, STREAM triads) do not drift alike with every kernel on a shared host: in one window
here the GEMM ran x1.0 its profile time while BERT's 128-row linears ran x1.2-1.4. The
kernels a model spends its time in, where the profile has them exactly, are the better
yardstick: :func:`own_references` picks those.
"""

from __future__ import annotations

from calibration.predict.mapper import LatencyEstimate
from calibration.predict.results import Partition
from calibration.profile.schema import HardwareCalibration
from calibration.specs.operations import Case

# at most this many of the model's kernels re-timed per window (each takes ~0.15 s)
OWN_REFERENCES = 4
# and none standing for less than this share of the prediction: a yardstick for little time
# costs a window as much as one for much
MIN_SHARE = 0.03


def own_references(part: Partition, estimate: LatencyEstimate, calibration: HardwareCalibration, *,
                   limit: int = OWN_REFERENCES, min_share: float = MIN_SHARE) -> list[tuple[Case, float, str]]:
    """The model's kernels with an exact, unbusy profile entry that stand for the most predicted
    time: (case, predicted ms of every kernel of the model at that entry, drift class of the
    largest of them), largest first. ``estimate`` is ``part``'s eager estimate; the entry is
    looked up in ``calibration`` whether or not the estimate used it (``--without-exact``
    still re-times the model's shapes, for their drift only)."""
    if estimate.mode != "eager":
        raise ValueError(f"own_references needs the eager estimate (one kernel per node), got mode {estimate.mode!r}")
    by_key: dict[str, list] = {}
    device = calibration.metadata.device_type
    for sg, sg_estimate in zip(part.subgraphs, estimate.subgraphs, strict=True):
        for node, kernel in zip((n for n in sg.nodes if n.kernel), sg_estimate.kernels, strict=True):
            if not node.operation:
                continue
            entry = calibration.get_operation(node.operation, dtype=node.dtype or "float32", device=device,
                                              **node.params)
            if entry is None or entry.busy:
                continue
            ms = kernel.seconds * 1e3
            held = by_key.setdefault(entry.key, [Case(entry.operation, tuple(entry.params.items()), entry.dtype,
                                                      entry.device), 0.0, kernel.drift_class, 0.0])
            held[1] += ms
            if ms > held[3]:
                held[2], held[3] = kernel.drift_class, ms
    chosen = sorted(by_key.values(), key=lambda held: -held[1])
    floor = min_share * estimate.steady_ms
    return [(case, ms, kind) for case, ms, kind, _ in chosen[:limit] if ms >= floor]
