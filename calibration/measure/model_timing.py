"""Timing a whole model, and how far the machine has drifted since it was calibrated.

Not part of a calibration run: ``predict --measure`` and ``tools/predict_accuracy.py`` use
these to put a measured latency beside a prediction. A shared machine moves 10-25% over
minutes, as much as the errors being measured, so the protocol times the profile's
reference kernels in the same window as the model, reports the error both raw and
corrected by that drift, repeats the pair in interleaved rounds to show the spread, and
refuses to report an error at all when the machine is not the one that was calibrated.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
from torch.utils import benchmark

from calibration.measure.kernels import build
from calibration.specs import host
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


def reference_kernels(calibration) -> dict[str, tuple]:
    """The profile's reference cases, built once: operation -> (kernel, profile median ms)."""
    built = {}
    for operation, params in DRIFT_REFERENCES:
        case = Case(operation, tuple(params.items()), "float32", calibration.metadata.device_type)
        entry = calibration.operation_profiles.get(case.key)
        if entry is not None:
            built[operation] = (build(case), entry.latency.median_ms)
    return built


def drift(calibration, min_run_time: float = 0.3, kernels: dict[str, tuple] | None = None) -> dict[str, float]:
    """Now / profile median of the reference cases the profile has (1.0: as fast as when calibrated).

    On a shared machine these move 0.85-1.5x within minutes; a prediction error smaller than
    that spread says nothing either way. ``kernels`` (from :func:`reference_kernels`) reuses
    operands built once: building them every round would allocate and free 13 MiB between
    the model's forwards and change which of its blocks glibc hands back to the OS.
    """
    kernels = reference_kernels(calibration) if kernels is None else kernels
    ratios = {}
    for operation, (kernel, profile_ms) in kernels.items():
        timer = benchmark.Timer("kernel()", globals={"kernel": kernel}, num_threads=torch.get_num_threads())
        ratios[operation] = timer.blocked_autorange(min_run_time=min_run_time).median * 1e3 / profile_ms
    return ratios


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


# --------------------------------------------------------------------------- the protocol

# A reference kernel running this much slower or faster than in the profile means another
# machine, another thread count or a neighbour taking the cores: a drift-corrected error
# assumes every kernel drifted alike, which holds for the 10-25% moves a shared VM makes
# over minutes (measured here), not for the 2-57x seen while a second job ran.
DRIFT_LIMIT = 1.5
# Other processes keeping more than this many CPUs busy during the measurement make it
# worthless on a 2-core machine (every 1 Mi-element op became an 8 ms OpenMP wait).
BUSY_LIMIT = 0.5


@dataclass(frozen=True)
class Round:
    """One measurement window: the reference kernels re-timed, then the model, back to back."""

    model_ms: float
    drift: dict[str, float]  # reference operation -> now / profile median

    @property
    def factor(self) -> float | None:
        """How much slower the machine runs now than when calibrated (geometric mean)."""
        if not self.drift:
            return None
        return math.exp(statistics.fmean(math.log(r) for r in self.drift.values()))


@dataclass(frozen=True)
class Measurement:
    rounds: tuple[Round, ...]
    busy_cpus: float | None  # CPUs other processes kept busy during the rounds

    @property
    def model_ms(self) -> float:
        return statistics.median(r.model_ms for r in self.rounds)

    def errors(self, predicted_ms: float) -> tuple[list[float], list[float] | None]:
        """Per round: the raw error and the drift-corrected one (the prediction scaled by the
        drift measured in the same window); None where the profile has no reference case."""
        raw = [predicted_ms / r.model_ms - 1 for r in self.rounds]
        factors = [r.factor for r in self.rounds]
        if any(f is None for f in factors):
            return raw, None
        return raw, [predicted_ms * f / r.model_ms - 1 for f, r in zip(factors, self.rounds, strict=True)]

    def refusal(self, calibration) -> str | None:
        """Why no error should be reported from this measurement, or None."""
        md = calibration.metadata
        if md.device_type != "cpu":
            return f"the profile is for {md.device_type}; this measurement runs on the CPU"
        here = host.cpu_model()
        if md.cpu_model and md.cpu_model != here:
            return f"the profile was measured on {md.cpu_model!r}, this is {here!r}"
        if md.threads and md.threads != torch.get_num_threads():
            return f"the profile ran {md.threads} threads, this process runs {torch.get_num_threads()}"
        if self.busy_cpus is not None and self.busy_cpus > BUSY_LIMIT:
            return f"other processes kept {self.busy_cpus:.1f} CPUs busy while the model was timed"
        for r in self.rounds:
            for name, ratio in r.drift.items():
                if not 1 / DRIFT_LIMIT <= ratio <= DRIFT_LIMIT:
                    return (f"the reference {name} ran x{ratio:.2f} its profile time (allowed: "
                            f"x{1 / DRIFT_LIMIT:.2f}-x{DRIFT_LIMIT:.2f}): not the calibrated machine right now")
        return None


def measure_rounds(model, example, calibration, *, rounds: int = 3, min_run_time: float = 0.5,
                   drift_run_time: float = 0.2) -> Measurement:
    """``rounds`` windows, each re-timing the reference kernels and then the model."""
    before = host.cpu_times()
    kernels = reference_kernels(calibration)
    done = []
    for _ in range(rounds):
        ratios = drift(calibration, min_run_time=drift_run_time, kernels=kernels)
        done.append(Round(model_ms=measure_latency_ms(model, example, min_run_time), drift=ratios))
    return Measurement(tuple(done), other_cpus_since(before))


def other_cpus_since(before: host.CpuTimes | None) -> float | None:
    """CPUs other processes kept busy since ``before`` (None where /proc cannot say)."""
    after = host.cpu_times()
    return (after - before).other_cpus() if before is not None and after is not None else None
