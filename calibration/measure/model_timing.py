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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch.utils import benchmark

from calibration.measure import canary
from calibration.measure.harness import Plan, synchronizer, time_rounds
from calibration.measure.kernels import build
from calibration.profile import roofline
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


# Profile entries re-timed to tell how fast the machine runs now against calibration time, by
# the class of kernel whose time they track (specs.operations.DRIFT_CLASSES). A shared machine
# does not drift alike for all of them: a neighbour on the memory bus slows a STREAM triad and
# leaves a GEMM alone, and a descheduled vCPU makes every small parallel kernel wait on its
# threads. "small" and "memory" are the profile's STREAM triad entries by size (the sweep's
# sizes depend on the host's caches): the smallest that runs on all threads and stays in L2,
# the one nearest an LLC-resident 1 Mi elements, and the largest (DRAM).
COMPUTE_REFERENCES = (
    ("matmul", {"M": 1024, "K": 1024, "N": 1024, "path": "aten"}),
    ("conv2d", {"N": 1, "CIN": 64, "COUT": 64, "H": 56, "W": 56, "K": 3, "STRIDE": 1, "PAD": 1, "GROUPS": 1}),
)
PARALLEL_GRAIN = 32768  # ATen's grain: a smaller element-wise kernel runs on one thread
SMALL_REFERENCE_MAX = 1 << 18
LLC_REFERENCE = 1 << 20


def _triad_references(calibration, device: str) -> list[tuple[str, int]]:
    # an entry timed while other processes kept the machine busy is no yardstick: its ratio
    # would be that moment's neighbours, not the machine's drift since (small memory-bound
    # entries are mostly 'noisy', IQR > 10%, on a VM, and stay usable)
    sizes = sorted(entry.params["n"] for entry in calibration.operation_profiles.values()
                   if entry.operation == "stream_triad" and entry.dtype == "float32" and entry.device == device
                   and not entry.busy)
    chosen: list[tuple[str, int]] = []
    small = [n for n in sizes if PARALLEL_GRAIN <= n <= SMALL_REFERENCE_MAX]
    if small:
        chosen.append(("small", small[0]))
    large = [n for n in sizes if n > SMALL_REFERENCE_MAX]
    if large:
        chosen.append(("memory", min(large, key=lambda n: abs(n - LLC_REFERENCE))))
        # DRAM's: the smallest that lives there, not the largest of the sweep (on a 480 MiB-L3
        # host the STREAM size's 6 GiB, 0.2 s a call, against the sweep's 3 GiB one)
        in_dram = [n for n in large if roofline.level_for_working_set(
            Case("stream_triad", (("n", n),), "float32", device).bytes, calibration.metadata.cache_sizes) == "DRAM"]
        chosen.append(("memory", in_dram[0] if in_dram else large[-1]))
    return list(dict.fromkeys(chosen))


class Reference(NamedTuple):
    """A profile entry re-timed in each measurement window."""

    kernel: Callable[[], object]
    profile_ms: float  # the entry's fastest round (generic) or its median (the model's: what the mapper used)
    kind: str  # its drift class (specs.operations.DRIFT_CLASSES)
    # > 0: an entry the measured model's prediction stands on, for this many ms of it
    weight_ms: float = 0.0
    iterations: int = 1  # calls per timed round in the profile (the model's entries are re-timed alike)


def reference_kernels(calibration, own: Sequence[tuple[Case, float, str]] = (),
                      shared: dict[str, Callable[[], object]] | None = None) -> dict[str, Reference]:
    """The profile's reference cases, built once: label -> :class:`Reference`.

    The generic references (a GEMM, a conv, triads by cache level) are the same for every
    model. ``own`` adds the entries the measured model's prediction stands on (its exact
    shapes, or the nearest calibrated ones; ``predict.references.own_references``) as (case,
    predicted ms it stands for, drift class): a 128-row linear and a 1024-cube matmul did not
    drift alike here (x1.2-1.4 against x1.0 in one window), so each corrects the time that
    stands on it (:meth:`Round.factor_for`).

    A generic reference's profile time is its fastest round, compared with the fastest block
    now: a burst from a neighbour during a few of either's rounds moves a median (the
    profile's small triads have IQRs of 10-30% on a VM) but not the best round, while a
    machine that runs slower throughout moves both. The model's entries are compared median
    to median instead, re-timed the way the calibration timed them (rounds of the entry's
    calls per round, ``harness.time_rounds``): the mapper predicted from their medians, and
    an entry timed through a noisy stretch (one full profile's 8-row linears ran medians
    1.3-1.4x their best rounds, the profile before 1.1-1.2x) predicts the model that much
    slower, which best rounds would not show. (torch.utils.benchmark's blocks, back-to-back
    calls, ran those linears below the profile's best round: a median of blocks is not a
    median of rounds.)

    ``shared`` (case key -> kernel), passed to every call of a script that measures several
    models, builds each entry's operands once for all of them: the DRAM triad's arrays are
    four times the LLC, 6 GiB on a 480 MiB-L3 host, and eight models' own copies of them ran
    a 23.5 GiB machine out of memory.
    """
    shared = {} if shared is None else shared
    device = calibration.metadata.device_type
    wanted = [("compute", Case(operation, tuple(params.items()), "float32", device), 0.0)
              for operation, params in COMPUTE_REFERENCES]
    wanted += [(kind, Case("stream_triad", (("n", n),), "float32", device), 0.0)
               for kind, n in _triad_references(calibration, device)]
    wanted += [(kind, case, ms) for case, ms, kind in own if ms > 0]
    built: dict[str, Reference] = {}
    for kind, case, weight in wanted:
        entry = calibration.operation_profiles.get(case.key)
        if entry is None or entry.busy:
            continue
        if weight:
            dtype = "" if case.dtype == "float32" else f" {case.dtype}"
            label = "for the model: " + case.key.rsplit("/", 2)[0] + dtype
        else:
            label = case.operation if case.operation != "stream_triad" else f"triad {case.param_dict['n']}"
        if label in built and not weight:
            continue
        then = entry.latency.median_ms if weight else (entry.latency.min_ms or entry.latency.median_ms)
        if case.key not in shared:
            shared[case.key] = build(case)
        built[label] = Reference(shared[case.key], then, kind, weight, max(1, entry.latency.iterations or 1))
    return built


def drift(calibration, min_run_time: float = 0.15, kernels: dict[str, Reference] | None = None
          ) -> dict[str, float]:
    """Now / then of the reference cases the profile has (1.0: as fast as when calibrated):
    fastest round to fastest block for the generic ones, median to median for the entries a
    model's prediction stands on (see :func:`reference_kernels`).

    On a shared machine these move 0.85-1.5x within minutes; a prediction error smaller than
    that spread says nothing either way. ``kernels`` (from :func:`reference_kernels`) reuses
    operands built once: building them every round would allocate and free 13 MiB between
    the model's forwards and change which of its blocks glibc hands back to the OS.
    """
    kernels = reference_kernels(calibration) if kernels is None else kernels
    sync = synchronizer(calibration.metadata.device_type)
    ratios = {}
    for label, ref in kernels.items():
        if ref.weight_ms:
            rounds = max(5, math.ceil(min_run_time / (ref.iterations * ref.profile_ms / 1e3)))
            samples = time_rounds(ref.kernel, sync, Plan(iterations=ref.iterations, rounds=rounds))
            ratios[label] = statistics.median(samples) * 1e3 / ref.profile_ms
            continue
        timer = benchmark.Timer("kernel()", globals={"kernel": ref.kernel}, num_threads=torch.get_num_threads())
        ratios[label] = min(timer.blocked_autorange(min_run_time=min_run_time).times) * 1e3 / ref.profile_ms
    return ratios


def page_faults_per_forward(model, example, calls: int = 7) -> tuple[int, ...] | None:
    """Minor page faults of each of ``calls`` warm forward passes (None where getrusage is missing).

    Memory the allocator handed back to the OS is faulted in again when an output is
    written: on glibc that is every block above its mmap threshold, and heap trimmed
    between calls, at about a microsecond per 4 KiB page on a VM. Under glibc's defaults
    the count moves from one forward to the next (0-48 MiB on one model), so each is kept.
    """
    try:
        import resource
    except ImportError:
        return None

    inputs = _inputs(example)
    counts = []
    with torch.no_grad():
        model(*inputs)
        for _ in range(calls):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            model(*inputs)
            counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return tuple(counts)


# --------------------------------------------------------------------------- the protocol

# A reference kernel running this much slower or faster than in the profile means another
# machine, another thread count or a neighbour taking the cores: a drift-corrected error
# assumes every kernel drifted alike, which holds for the 10-25% moves a shared VM makes
# over minutes (measured here), not for the 2-57x seen while a second job ran.
DRIFT_LIMIT = 1.5
# Other processes keeping more than this many CPUs busy during the measurement make it
# worthless on a 2-core machine (every 1 Mi-element op became an 8 ms OpenMP wait).
BUSY_LIMIT = 0.5


def _geomean(values) -> float:
    values = list(values)
    return math.exp(statistics.fmean(math.log(v) for v in values))


@dataclass(frozen=True)
class Round:
    """One measurement window: the reference kernels re-timed, then the model, back to back."""

    model_ms: float
    drift: dict[str, float]  # reference label -> now / profile median
    classes: dict[str, str] = field(default_factory=dict)  # reference label -> its drift class
    # reference label -> the model's predicted ms it stands for (the entries its prediction stands on)
    weights: dict[str, float] = field(default_factory=dict)
    # the host-state canary at the round's start over the profile's fastest reading (None where
    # the profile has none), and the seconds the round waited for it to read the profile's state
    state_ratio: float | None = None
    waited_s: float = 0.0

    @property
    def factor(self) -> float | None:
        """How much slower the machine runs now than when calibrated (geometric mean)."""
        return _geomean(self.drift.values()) if self.drift else None

    def _by_class(self) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, float]]]]:
        """Drift class -> the ratios of its generic references, and -> (ratio, predicted ms it
        stands for) of the entries the model's prediction stands on."""
        generic: dict[str, list[float]] = {}
        own: dict[str, list[tuple[float, float]]] = {}
        for label, ratio in self.drift.items():
            kind, weight = self.classes.get(label, "compute"), self.weights.get(label, 0.0)
            if weight > 0:
                own.setdefault(kind, []).append((ratio, weight))
            else:
                generic.setdefault(kind, []).append(ratio)
        return generic, own

    def class_factors(self) -> dict[str, float]:
        """Drift class -> the geometric mean of its references' ratios: of the entries the
        model's prediction stands on alone, weighted by the time they stand for, where the
        class has any. What the drift limits (:meth:`outside_limits`) are read against."""
        generic, own = self._by_class()
        factors = {kind: _geomean(ratios) for kind, ratios in generic.items()}
        for kind, pairs in own.items():
            total = sum(w for _, w in pairs)
            factors[kind] = math.exp(sum(w * math.log(r) for r, w in pairs) / total)
        return factors

    def outside_limits(self) -> tuple[str, float] | None:
        """The first drift class whose references ran outside x1/DRIFT_LIMIT-xDRIFT_LIMIT of the
        profile in this window, with its factor; None where every class was within."""
        for kind, ratio in self.class_factors().items():
            if not 1 / DRIFT_LIMIT <= ratio <= DRIFT_LIMIT:
                return kind, ratio
        return None

    def factor_for(self, weights: Mapping[str, float] | None) -> float | None:
        """The drift of a prediction whose time splits over the drift classes as ``weights``
        (predicted ms by class, as ``LatencyEstimate.time_by_class`` gives them).

        The entries the prediction stands on (``self.weights``: the ms of it each stands for)
        correct that time by their own ratios; the rest of a class's time by the geometric
        mean of every reference of the class, its own entries and the generic ones alike (a
        class with none: of all the references). One entry's ratio says how that entry moved:
        a profile times its families one after another, and a slow stretch of the host lands
        on a run of them (in one full profile the norms, pools and softmaxes ran x1.3-1.5
        their times in the profile before while convs, GEMMs and element-wise kernels ran
        x0.95-1.12), so a batch norm entry's x0.75 in the accuracy run says little of the
        SiLUs beside it in the memory class. Scaling the whole class by its own entries had
        put EfficientNet-B0 b8 15-23% under where its raw error was 3-17%."""
        overall = self.factor
        if overall is None or not weights or sum(weights.values()) <= 0:
            return overall
        generic, own = self._by_class()
        corrected = 0.0
        for kind, ms in weights.items():
            pairs = own.get(kind, [])
            stood_on = sum(w for _, w in pairs)
            # the entries' shares of the class, scaled down where they stand for more than it has
            scale = min(1.0, ms / stood_on) if stood_on > 0 else 0.0
            corrected += scale * sum(w * r for r, w in pairs)
            every = generic.get(kind, []) + [r for r, _ in pairs]
            corrected += max(0.0, ms - stood_on) * (_geomean(every) if every else overall)
        return corrected / sum(weights.values())


@dataclass(frozen=True)
class Measurement:
    """Interleaved rounds. A round whose references say the machine was not the calibrated one
    in that window (a class outside x0.67-x1.5) is set aside; the errors and the model's time
    come from the rest, and the measurement is refused when fewer than half are left."""

    rounds: tuple[Round, ...]
    busy_cpus: float | None  # CPUs other processes kept busy during the rounds

    @property
    def kept(self) -> tuple[Round, ...]:
        """The rounds whose every drift class was within the limits (all of them where none was)."""
        within = tuple(r for r in self.rounds if r.outside_limits() is None)
        return within or self.rounds

    @property
    def model_ms(self) -> float:
        return statistics.median(r.model_ms for r in self.kept)

    def errors(self, predicted_ms: float, weights: Mapping[str, float] | None = None
               ) -> tuple[list[float], list[float] | None]:
        """Per kept round: the raw error and the drift-corrected one (the prediction scaled by
        the drift measured in the same window, per class where ``weights`` splits the
        prediction over the drift classes); None where the profile has no reference case."""
        rounds = self.kept
        raw = [predicted_ms / r.model_ms - 1 for r in rounds]
        factors = [r.factor_for(weights) for r in rounds]
        if any(f is None for f in factors):
            return raw, None
        return raw, [predicted_ms * f / r.model_ms - 1 for f, r in zip(factors, rounds, strict=True)]

    def references(self) -> dict[str, dict]:
        """What the drift stood on, for a report: each reference label -> its drift class, the
        model's predicted ms it stands for (0 for a generic one) and its now / profile ratio in
        every kept round (None in a round that did not re-time it)."""
        labels = dict.fromkeys(label for r in self.kept for label in r.drift)
        return {label: {"class": next((r.classes[label] for r in self.kept if label in r.classes), "compute"),
                        "weight_ms": next((r.weights[label] for r in self.kept if label in r.weights), 0.0),
                        "ratios": [r.drift.get(label) for r in self.kept]}
                for label in labels}

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
        outside = [(r, found) for r in self.rounds if (found := r.outside_limits()) is not None]
        if 2 * len(outside) > len(self.rounds):
            r, (kind, ratio) = max(outside, key=lambda pair: abs(math.log(pair[1][1])))
            names = ", ".join(label for label in r.drift if r.classes.get(label, "compute") == kind)
            return (f"{len(outside)} of {len(self.rounds)} rounds ran outside the calibrated machine's speed "
                    f"(the {kind} references ({names}) at x{ratio:.2f} their profile time; allowed: "
                    f"x{1 / DRIFT_LIMIT:.2f}-x{DRIFT_LIMIT:.2f})")
        return None


# how long a round waits at most for the host's vCPUs to be in the state the profile was taken
# in (measure.canary): its slow state held 5-30 s at a time, about half of an hour
STATE_WAIT_SECONDS = 4.0
STATE_POLL_SECONDS = 0.2


def await_profile_state(calibration, *, wait_seconds: float = STATE_WAIT_SECONDS,
                        read: Callable[[], float] = canary.canary_ms,
                        sleep: Callable[[float], None] = time.sleep,
                        clock: Callable[[], float] = time.perf_counter) -> tuple[float | None, float]:
    """Wait up to ``wait_seconds`` for the host-state canary to read no slower than x``canary.SLOW``
    the profile's fastest reading (``Metadata.canary_ms``): a kernel timed in the slow state
    of a shared VM's vCPUs runs x1-3 its profile time by its size, which no one drift factor
    a class corrects. Returns the last reading over the profile's (None where the profile has
    none or is not a CPU profile) and the seconds waited."""
    fastest = calibration.metadata.canary_ms
    if not fastest or calibration.metadata.device_type != "cpu":
        return None, 0.0
    start, waited = clock(), 0.0
    ratio = read() / fastest
    while ratio > canary.SLOW and waited < wait_seconds:
        sleep(STATE_POLL_SECONDS)
        ratio = read() / fastest
        waited = clock() - start
    return ratio, waited


def measure_rounds(model, example, calibration, *, rounds: int = 5, min_run_time: float = 0.4,
                   drift_run_time: float = 0.15, kernels: dict[str, Reference] | None = None,
                   state_wait_seconds: float = STATE_WAIT_SECONDS) -> Measurement:
    """``rounds`` windows, each (once the host is in the profile's state, or after
    ``state_wait_seconds``: :func:`await_profile_state`) re-timing the reference kernels and
    then the model."""
    before = host.cpu_times()
    kernels = reference_kernels(calibration) if kernels is None else kernels
    classes = {label: ref.kind for label, ref in kernels.items()}
    weights = {label: ref.weight_ms for label, ref in kernels.items() if ref.weight_ms > 0}
    done = []
    for _ in range(rounds):
        state_ratio, waited = await_profile_state(calibration, wait_seconds=state_wait_seconds)
        ratios = drift(calibration, min_run_time=drift_run_time, kernels=kernels)
        done.append(Round(model_ms=measure_latency_ms(model, example, min_run_time), drift=ratios, classes=classes,
                          weights=weights, state_ratio=state_ratio, waited_s=waited))
    return Measurement(tuple(done), other_cpus_since(before))


def other_cpus_since(before: host.CpuTimes | None) -> float | None:
    """CPUs other processes kept busy since ``before`` (None where /proc cannot say)."""
    after = host.cpu_times()
    return (after - before).other_cpus() if before is not None and after is not None else None
