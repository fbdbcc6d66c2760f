"""Synthetic profile pieces for tests: no timing, no hardware."""

from __future__ import annotations

from datetime import datetime, timezone

from calibration.measure.fold import Record
from calibration.profile.schema import LatencyStats, Metadata
from calibration.specs.operations import Case

CACHES = {"L1": 32 << 10, "L2": 512 << 10, "L3": 32 << 20}


def metadata(**overrides) -> Metadata:
    fields = dict(
        hardware_name="test-machine",
        device_type="cpu",
        device_name="Test CPU",
        cpu_model="Test CPU",
        physical_cores=2,
        logical_cpus=2,
        usable_cpus=2,
        threads=2,
        interop_threads=2,
        memory_gib=24.0,
        cache_sizes=CACHES,
        cpu_capability="AVX2",
        os="Linux",
        python_version="3.11.7",
        torch_version="2.13.0+cpu",
        numpy_version="2.4.6",
        pydantic_version="2.13.4",
        pytest_version="9.0.3",
        pytest_benchmark_version="5.2.3",
        calibration_version="0.1.0",
        date=datetime(2026, 11, 21, tzinfo=timezone.utc),
        git_commit=None,
        git_dirty=None,
        allocator={"GLIBC_TUNABLES": None},
        thread_env={"OMP_NUM_THREADS": None},
        quick=True,
        command=["pytest", "bench/"],
    )
    fields.update(overrides)
    return Metadata(**fields)


def latency(median_ms: float, iqr_ms: float = 0.0, rounds: int = 10) -> LatencyStats:
    return LatencyStats(
        median_ms=median_ms, iqr_ms=iqr_ms, min_ms=median_ms, mean_ms=median_ms,
        stddev_ms=iqr_ms, rounds=rounds, iterations=1, samples_ms=[median_ms] * rounds,
    )


def record(operation: str, median_ms: float, dtype: str = "float32", iqr_ms: float = 0.0, **params) -> Record:
    return Record(Case(operation, tuple(params.items()), dtype, "cpu"), latency(median_ms, iqr_ms))


# --------------------------------------------------------------------------- plugin runs

DISPATCH_KEY = "dispatch[n=1]/float32/cpu"
# The plugin is named explicitly (not left to the entry point); hypothesis's plugin is off
# because it adds a second of imports to every run and nothing here uses it.
PLUGIN_ARGS = ("-p", "calibration.plugin", "-p", "no:cacheprovider", "-p", "no:hypothesispytest")

# A one-case bench file: the 1-element dispatch add, the cheapest case there is.
DISPATCH_BENCH = """
    import pathlib

    import pytest


    @pytest.mark.operation("dispatch")
    def test_dispatch(op_case, calibrate):
        pathlib.Path(__file__).with_name("ran.marker").touch()
        calibrate(op_case)
"""


def run_bench(pytester, *args: str):
    """pytest with the calibration plugin and ``--calibrate-quick`` in a subprocess, in ``pytester``'s folder."""
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, "--calibrate-quick", *args)
