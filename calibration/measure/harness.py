"""Running one case under pytest-benchmark: how many calls per round, how many rounds.

pytest-benchmark's own calibration aims at ``--benchmark-max-time`` per case (1 s by
default) with no warmup; a calibration run wants a fixed time budget per case so that a
quick run finishes in well under a minute, plus a warmup so first-call costs (page faults,
oneDNN primitive creation, lazy CUDA init) are not timed. So each case is planned here
and run with ``benchmark.pedantic``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from calibration.measure import stats
from calibration.measure.fold import Record
from calibration.measure.kernels import Kernel, PreparedKernel, build
from calibration.profile.schema import LatencyStats
from calibration.specs.operations import Case

# A timed round lasts at least this long, so timer resolution (~100 ns for
# perf_counter) and the timer call itself stay below 0.1% of a round.
MIN_ROUND_SECONDS = 1e-3
# Untimed calls before planning: enough to fault in outputs and build kernels.
WARMUP_SECONDS = 0.02
MAX_ROUNDS = 2000
# A kernel timed on a quiet machine has its median within a few percent of its fastest
# round (10-30% for memory-bound kernels). A median this many times the fastest round means
# something else ran on the machine for most of the case (seen here: 3x on a conv while
# another process ran); such a case is re-timed, up to RETIMES times, and the attempt with
# the lowest median kept, saying so in its source.
DISTURBED_RATIO = 1.5
RETIMES = 2


@dataclass(frozen=True)
class Budget:
    """Seconds of timed work per case, and the fewest rounds that give a median and IQR."""

    seconds: float
    min_rounds: int
    # The most rounds of a case timed after a context (time_prepared), whose setup is not
    # timed. A cold case's rounds each rewrite twice the LLC first (51 ms for the 960 MiB of a
    # 480 MiB L3), an after_busy case's run a matmul of up to tens of ms; a full run's 25 (a
    # quick run's 15) are enough for a median (each round has its warm twin) and keep the conv
    # and linear grids' cold twins to about a second each: at 40 their 55 cases took 2 of a
    # full run's 10 minutes.
    prepared_rounds: int = 25

    @classmethod
    def for_run(cls, quick: bool) -> Budget:
        # 0.8 s a case keeps the full grid (440 cases, half of them fusion pairs, inductor
        # compiling 72) within 10 minutes on a 2-vCPU AVX2 EPYC with a cold compile cache
        # (1.0 s took 10 min 43 s there)
        return cls(seconds=0.25, min_rounds=5, prepared_rounds=15) if quick else cls(seconds=0.8, min_rounds=7)


@dataclass(frozen=True)
class Plan:
    iterations: int
    rounds: int


def synchronizer(device: str) -> Callable[[], None]:
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def cuda_synchronized_timer() -> float:
    """perf_counter after draining the GPU queue: the timer for CUDA cases.

    CUDA launches return before the kernel runs; timing them without a synchronize would
    measure the launch rate, not the kernel.
    """
    import torch

    torch.cuda.synchronize()
    return time.perf_counter()


def estimate_call_seconds(kernel: Kernel, sync: Callable[[], None]) -> float:
    """Warm the kernel up, then estimate the time of one call."""
    kernel()
    sync()
    start = time.perf_counter()
    calls = 0
    while True:
        kernel()
        calls += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= WARMUP_SECONDS:
            return elapsed / calls


def rounds_for(round_seconds: float, budget: Budget) -> int:
    """Rounds that fill the budget, at least budget.min_rounds and at most MAX_ROUNDS."""
    return min(MAX_ROUNDS, max(budget.min_rounds, int(budget.seconds / max(round_seconds, 1e-9))))


def plan(call_seconds: float, budget: Budget) -> Plan:
    iterations = max(1, math.ceil(MIN_ROUND_SECONDS / call_seconds)) if call_seconds > 0 else 1000
    return Plan(iterations=iterations, rounds=rounds_for(iterations * call_seconds, budget))


def latency_from_pytest_benchmark(bench_stats, iterations: int) -> LatencyStats:
    """Translate pytest-benchmark's Stats (seconds per call) into a LatencyStats (ms)."""
    ms = 1e3
    return LatencyStats(
        median_ms=bench_stats.median * ms,
        iqr_ms=bench_stats.iqr * ms,
        min_ms=bench_stats.min * ms,
        mean_ms=bench_stats.mean * ms,
        stddev_ms=bench_stats.stddev * ms,
        rounds=bench_stats.rounds,
        iterations=iterations,
        samples_ms=[t * ms for t in stats.subsample(bench_stats.data)],
    )


def time_kernel(benchmark, kernel: Kernel, *, device: str, budget: Budget) -> LatencyStats | None:
    """Time ``kernel`` with the pytest-benchmark fixture; None when benchmarking is disabled."""
    if not benchmark.enabled:
        benchmark(kernel)  # runs once, as pytest-benchmark does when disabled
        return None
    sync = synchronizer(device)
    p = plan(estimate_call_seconds(kernel, sync), budget)
    benchmark.pedantic(kernel, rounds=p.rounds, iterations=p.iterations, warmup_rounds=1)
    metadata = benchmark.stats
    latency = latency_from_pytest_benchmark(metadata.stats, metadata.iterations)
    kept = retime_if_disturbed(latency, kernel, sync, p)
    if kept is not latency:
        benchmark.extra_info["retimed"] = kept.source
    return kept


def disturbed(latency: LatencyStats) -> bool:
    return bool(latency.min_ms) and latency.median_ms > DISTURBED_RATIO * latency.min_ms


def time_rounds(kernel: Kernel, sync: Callable[[], None], p: Plan) -> list[float]:
    """Seconds per call of each of ``p.rounds`` rounds, timed the way pytest-benchmark does."""
    kernel()  # one warmup round, as in time_kernel
    sync()
    samples = []
    for _ in range(p.rounds):
        start = time.perf_counter()
        for _ in range(p.iterations):
            kernel()
        sync()
        samples.append((time.perf_counter() - start) / p.iterations)
    return samples


def retime_if_disturbed(latency: LatencyStats, kernel: Kernel, sync: Callable[[], None], p: Plan,
                        *, retimes: int = RETIMES) -> LatencyStats:
    """``latency``, or the quietest of up to ``retimes`` re-timings when it looks disturbed."""
    if not disturbed(latency):
        return latency
    first = f"median {latency.median_ms / latency.min_ms:.1f}x the fastest round"
    attempts = [latency]
    for attempt in range(2, retimes + 2):
        again = latency_from_samples(time_rounds(kernel, sync, p), iterations=p.iterations)
        attempts.append(again.model_copy(update={
            "source": f"re-timed, attempt {attempt}: the pytest-benchmark rounds looked disturbed ({first})"}))
        if not disturbed(again):
            break
    return min(attempts, key=lambda stats: stats.median_ms)


def latency_from_samples(samples_s: list[float], iterations: int = 1,
                         source: str = "interleaved with the fused variant's rounds") -> LatencyStats:
    """LatencyStats (ms) from per-call samples (s) timed here rather than by pytest-benchmark."""
    q1, median, q3 = stats.quartiles(samples_s)
    ms = 1e3
    return LatencyStats(
        median_ms=median * ms,
        iqr_ms=(q3 - q1) * ms,
        min_ms=min(samples_s) * ms,
        mean_ms=statistics.fmean(samples_s) * ms,
        stddev_ms=(statistics.stdev(samples_s) if len(samples_s) > 1 else 0.0) * ms,
        rounds=len(samples_s),
        iterations=iterations,
        samples_ms=[t * ms for t in stats.subsample(samples_s)],
        source=source,
    )


def time_interleaved(
    benchmark, kernel: Kernel, baseline: Kernel, *, device: str, budget: Budget
) -> tuple[LatencyStats, LatencyStats] | None:
    """Time ``kernel`` with pytest-benchmark and ``baseline`` just before each of its rounds.

    Speedups between cases timed minutes apart on a shared machine drift by 20-30%
    between runs; timing the twin in the same rounds (one call each, alternating) makes
    the two share that drift, so their ratio and its interval are trustworthy. One call
    per round because pytest-benchmark allows a per-round setup only then.
    """
    if not benchmark.enabled:
        benchmark(kernel)
        return None
    sync = synchronizer(device)
    call = estimate_call_seconds(kernel, sync) + estimate_call_seconds(baseline, sync)
    rounds = rounds_for(call, budget)
    samples: list[float] = []

    def time_baseline() -> None:
        sync()
        start = time.perf_counter()
        baseline()
        sync()
        samples.append(time.perf_counter() - start)

    warmup = 1
    benchmark.pedantic(kernel, setup=time_baseline, rounds=rounds, iterations=1, warmup_rounds=warmup)
    metadata = benchmark.stats
    fused = latency_from_pytest_benchmark(metadata.stats, metadata.iterations)
    return fused, latency_from_samples(samples[warmup:])


def time_prepared(benchmark, kernel: PreparedKernel, *, budget: Budget) -> tuple[LatencyStats, float] | None:
    """One call per round, each after ``kernel.prepare()`` (untimed: pytest-benchmark's setup),
    and the warm twin in the same rounds: the setup first times the kernel once more
    (``kernel.time_warm()``), hot from the call before it. Returns (latency after the context,
    warm median ms)."""
    if not benchmark.enabled:
        benchmark(kernel)
        return None
    call = estimate_call_seconds(kernel, lambda: None)
    rounds = min(budget.prepared_rounds, rounds_for(call, budget))
    warm: list[float] = []

    def setup() -> None:
        warm.append(kernel.time_warm())
        kernel.prepare()

    benchmark.pedantic(kernel, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)
    latency = latency_from_pytest_benchmark(benchmark.stats.stats, 1)
    latency = latency.model_copy(update={"source": kernel.context})
    return latency, statistics.median(warm[2:] or warm) * 1e3  # the first follow the warmup


def measure(benchmark, case: Case, budget: Budget) -> Record | None:
    """Time an operation case; None when benchmarking is disabled."""
    kernel = build(case)
    benchmark.group = case.operation
    benchmark.extra_info.update(
        calibration_key=case.key, flops=case.flops, bytes=case.bytes, dtype=case.dtype
    )
    if isinstance(kernel, PreparedKernel):
        timed = time_prepared(benchmark, kernel, budget=budget)
        return None if timed is None else Record(case=case, latency=timed[0], warm_ms=timed[1],
                                                 preceding_ms=kernel.preceding_ms())
    latency = time_kernel(benchmark, kernel, device=case.device, budget=budget)
    return None if latency is None else Record(case=case, latency=latency)
