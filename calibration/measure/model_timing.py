"""Timing a whole model, and how far the machine has drifted since it was calibrated.

Not part of a calibration run: ``predict --measure`` and ``tools/predict_accuracy.py`` use
these to put a measured latency beside a prediction.
"""

from __future__ import annotations

import torch
from torch.utils import benchmark

from calibration.measure.kernels import build
from calibration.specs.operations import Case


def _inputs(example) -> tuple:
    """A model's positional inputs: one tensor, or a sequence of them."""
    return (example,) if isinstance(example, torch.Tensor) else tuple(example)


def measure_latency_ms(model, example, min_run_time: float = 1.0) -> float:
    """Median eager latency with torch.utils.benchmark at this process's thread count."""
    with torch.no_grad():
        timer = benchmark.Timer("model(*x)", globals={"model": model, "x": _inputs(example)},
                                num_threads=torch.get_num_threads())
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


# Profile entries re-timed to tell how fast the machine runs now against calibration time.
DRIFT_REFERENCES = (
    ("matmul", {"M": 1024, "K": 1024, "N": 1024, "path": "aten"}),
    ("conv2d", {"N": 1, "CIN": 64, "COUT": 64, "H": 56, "W": 56, "K": 3, "STRIDE": 1, "PAD": 1, "GROUPS": 1}),
)


def drift(calibration, min_run_time: float = 0.3) -> dict[str, float]:
    """Now / profile median of the reference cases the profile has (1.0: as fast as when calibrated).

    On a shared machine these move 0.85-1.5x within minutes; a prediction error smaller than
    that spread says nothing either way.
    """
    ratios = {}
    for operation, params in DRIFT_REFERENCES:
        case = Case(operation, tuple(params.items()), "float32", calibration.metadata.device_type)
        entry = calibration.operation_profiles.get(case.key)
        if entry is None:
            continue
        timer = benchmark.Timer("kernel()", globals={"kernel": build(case)}, num_threads=torch.get_num_threads())
        ratios[operation] = timer.blocked_autorange(min_run_time=min_run_time).median * 1e3 / entry.latency.median_ms
    return ratios


def format_drift(ratios: dict[str, float]) -> str:
    return ", ".join(f"{name} x{ratio:.2f}" for name, ratio in ratios.items()) or "no reference case in the profile"


def page_faults_per_call(model, example, calls: int = 5) -> int | None:
    """Minor page faults per warm forward pass (None where getrusage is missing).

    Memory the allocator handed back to the OS is faulted in again when an output is
    written: on glibc that is every block above its mmap threshold, and heap trimmed
    between calls, at about a microsecond per 4 KiB page on a VM.
    """
    try:
        import resource
    except ImportError:
        return None

    inputs = _inputs(example)
    with torch.no_grad():
        model(*inputs)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(calls):
            model(*inputs)
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // calls
