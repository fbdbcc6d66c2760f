"""Synthetic profile pieces for tests: no timing, no hardware."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from calibration.measure.fold import FusionRecord, Record, fold
from calibration.profile.schema import HardwareCalibration, LatencyStats, Metadata
from calibration.specs.operations import Case
from calibration.specs.patterns import FusionCase

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


# --------------------------------------------------------------------------- whole profiles

MATMUL_KEY = "matmul[M=1024,K=1024,N=1024,path=aten]/float32/cpu"
TRIAD_N = 1 << 25


def fusion_record(pattern: str, variant: str, median_ms: float, **params) -> FusionRecord:
    return FusionRecord(FusionCase(pattern, tuple(params.items()), "float32", "cpu", variant), latency(median_ms))


def full_profile(**overrides) -> HardwareCalibration:
    """A profile holding every ceiling a prediction needs (matmul, a DRAM triad, dispatch)
    and one fusion pattern (Add_ReLU, library variant twice as fast as unfused)."""
    return fold(
        [record("matmul", 2 * 1024**3 / 100e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
         record("stream_triad", 3 * 4 * TRIAD_N / 20e9 * 1e3, n=TRIAD_N),
         record("dispatch", 0.002, n=1)],
        metadata(**overrides),
        fusion_records=[fusion_record("Add_ReLU", "unfused", 2.0, n=1 << 20),
                        fusion_record("Add_ReLU", "library", 1.0, n=1 << 20)],
    )


# The predecessor's layout, as its usage guide ("JSON Structure") and its schema.py wrote it.
PREDECESSOR_PROFILE = {
    "metadata": {
        "hardware_name": "i7-12700K",
        "calibration_date": "2025-11-05T20:58:12.327496",
        "calibration_tool_version": "0.3",
        "cpu_model": "12th Gen Intel(R) Core(TM) i7-12700K",
        "cpu_count": 12,
        "total_memory_gb": 31.1,
        "python_version": "3.11.4",
        "pytorch_version": "2.1.0",
        "numpy_version": "1.26.0",
        "num_warmup_runs": 3,
        "num_measurement_runs": 10,
        "device_type": "cpu",
        "platform_architecture": "x86_64",
    },
    "theoretical_peak_gflops": 1000.0,
    "theoretical_bandwidth_gbps": 50.0,
    "best_measured_gflops": 772.4,
    "avg_measured_gflops": 758.3,
    "worst_measured_gflops": 744.1,
    "measured_bandwidth_gbps": 52.0,
    "bandwidth_efficiency": 1.039,
    "operation_profiles": {
        "matmul_large": {
            "operation_type": "matmul", "measured_gflops": 729.7, "efficiency": 0.73,
            "achieved_bandwidth_gbps": 4.3, "memory_bound": False, "compute_bound": True,
            "arithmetic_intensity": 170.7, "batch_size": 1, "input_shape": [2048, 2048],
            "output_shape": [2048, 2048], "mean_latency_ms": 23.54, "std_latency_ms": 0.4,
            "min_latency_ms": 23.0, "max_latency_ms": 24.9, "num_trials": 10,
            "extra_params": {"matrix_size": 2048}, "precision_results": {},
        }
    },
    "fusion_profiles": {
        "Linear_Bias": {
            "fusion_pattern": "Linear_Bias", "operators": ["Linear", "Bias"], "num_operators": 2,
            "unfused_latency_ms": 2.34, "fused_latency_ms": 2.36, "unfused_gflops": 219.2,
            "fused_gflops": 215.9, "speedup_factor": 0.99, "memory_reduction": 0.333,
            "gflops_improvement": -0.015, "input_shape": [512, 1024, 1024], "num_trials": 50,
        },
        "Conv2d_BN_ReLU": {
            "fusion_pattern": "Conv2d_BN_ReLU", "operators": ["Conv2d", "BN", "ReLU"], "num_operators": 3,
            "unfused_latency_ms": 12.4, "fused_latency_ms": 10.0, "unfused_gflops": 145.2,
            "fused_gflops": 180.0, "speedup_factor": 1.24, "memory_reduction": 0.628,
            "gflops_improvement": 0.24, "input_shape": [4, 128, 28, 28],
            "extra_params": {"in_channels": 128, "out_channels": 128, "kernel_size": 3}, "num_trials": 50,
        },
    },
}


# --------------------------------------------------------------------------- bad input

def snapshot(root: Path) -> dict[str, tuple]:
    """What every path under ``root`` is and holds (dot files included, ``__pycache__`` not),
    to show that a refused input left every file as it was and no stray file behind."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                out[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                out[str(path.relative_to(root))] = ("file", path.read_bytes(), stat.S_IMODE(info.st_mode))
            else:
                out[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode),)
    return out


def assert_one_line_error(err: str, *named: str, prefix: str = "error: ") -> str:
    """``err`` is one line starting with ``prefix``, with no traceback, naming each of ``named``."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{err}"
    assert lines[0].startswith(prefix), err
    for text in named:
        assert text in lines[0], f"{text!r} not named in: {lines[0]}"
    return lines[0]


@dataclass(frozen=True)
class BadProfile:
    """A malformed profile file, and what the error must name (a field or a value)."""

    id: str
    names: str
    text: Callable[[], str | bytes]

    def write(self, folder: Path) -> Path:
        path = folder / f"{self.id}.json"
        text = self.text()
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path


def _current(edit: Callable[[dict], object]) -> Callable[[], str]:
    def text() -> str:
        data = json.loads(full_profile().model_dump_json())
        edit(data)
        return json.dumps(data)  # writes NaN and Infinity as those literals, as json.dumps(inf) does

    return text


def _predecessor(edit: Callable[[dict], object]) -> Callable[[], str]:
    def text() -> str:
        data = json.loads(json.dumps(PREDECESSOR_PROFILE))
        edit(data)
        return json.dumps(data)

    return text


def _set(*where_and_value):
    *where, value = where_and_value

    def edit(data: dict) -> None:
        parent = data
        for part in where[:-1]:
            parent = parent[part]
        parent[where[-1]] = value

    return edit


def _op(field: str, value, sub: str | None = None):
    return _set("operation_profiles", MATMUL_KEY, *((sub,) if sub else ()), field, value)


def _fusion(field: str, value):
    return _set("fusion_profiles", "Add_ReLU", 0, field, value)


def _legacy_fusion(field: str, value, pattern: str = "Linear_Bias"):
    return _set("fusion_profiles", pattern, field, value)


def _legacy_op(field: str, value):
    return _set("operation_profiles", "matmul_large", field, value)


def _without(*where):
    def edit(data: dict) -> None:
        parent = data
        for part in where[:-1]:
            parent = parent[part]
        del parent[where[-1]]

    return edit


def _both(*edits):
    def edit(data: dict) -> None:
        for one in edits:
            one(data)

    return edit


def _rekey(data: dict) -> None:
    data["operation_profiles"]["matmul[M=2048]/float32/cpu"] = data["operation_profiles"].pop(MATMUL_KEY)


def _raw(text: str | bytes) -> Callable[[], str | bytes]:
    return lambda: text


DEEP = 100_000
INF, NAN = float("inf"), float("nan")

# Each cause of a bad profile once: non-finite and negative numbers where the schema had no
# bound, structures the predecessor's converter did not expect, parser limits.
BAD_PROFILES = (
    BadProfile("median-infinity", "latency.median_ms", _current(_op("median_ms", INF, "latency"))),
    BadProfile("mean-nan", "latency.mean_ms", _current(_op("mean_ms", NAN, "latency"))),
    BadProfile("samples-negative", "samples_ms", _current(_op("samples_ms", [1.0, -1.0], "latency"))),
    BadProfile("samples-infinity", "samples_ms", _current(_op("samples_ms", [1.0, INF], "latency"))),
    BadProfile("speedup-infinity", "fusion_profiles.Add_ReLU.0.speedup", _current(_fusion("speedup", INF))),
    BadProfile("speedup-ci-nan", "speedup_ci_high", _current(_fusion("speedup_ci_high", NAN))),
    BadProfile("gflops-infinity", "gflops", _current(_op("gflops", INF))),
    BadProfile("efficiency-nan", "compute_efficiency", _current(_op("compute_efficiency", NAN))),
    BadProfile("ceiling-infinity", "measured.compute_ceiling_gflops",
               _current(_set("measured", "compute_ceiling_gflops", "float32", INF))),
    BadProfile("bandwidth-negative", "measured.bandwidth_by_level_gbps",
               _current(_set("measured", "bandwidth_by_level_gbps", "DRAM", -5.0))),
    BadProfile("dispatch-negative", "measured.dispatch_overhead_us",
               _current(_set("measured", "dispatch_overhead_us", -1.0))),
    BadProfile("peak-infinity", "peak_gflops",
               _current(_set("peak_gflops", {"float32": {"value": INF, "source": "user"}}))),
    BadProfile("cache-negative", "metadata.cache_sizes", _current(_set("metadata", "cache_sizes", "L1", -1))),
    BadProfile("flops-huge", "flops", _current(_op("flops", 10**400))),
    BadProfile("rounds-5000-digits", "digits",
               lambda: _current(_op("rounds", 7, "latency"))().replace('"rounds": 7', '"rounds": ' + "9" * 5000)),
    BadProfile("nested-metadata", "nested", _raw('{"schema_version": 1, "metadata": ' + "[" * DEEP + "]" * DEEP + "}")),
    BadProfile("nested-top-level", "nested", _raw("[" * DEEP + "]" * DEEP)),
    BadProfile("param-wrong-type", "params.M", _current(_op("M", "big", "params"))),
    BadProfile("param-unknown-name", "pth", _current(_both(_op("pth", "aten", "params")))),
    BadProfile("param-bad-path", "mkl", _current(_op("path", "mkl", "params"))),
    BadProfile("fusion-param-unknown", "CINN", _current(_set("fusion_profiles", "Add_ReLU", 0, "params", "CINN", 64))),
    BadProfile("key-mismatch", "matmul[M=2048]/float32/cpu", _current(_rekey)),
    BadProfile("dtype-unknown", "float99", _current(_op("dtype", "float99"))),
    BadProfile("family-wrong", "'conv'", _current(_op("family", "conv"))),
    BadProfile("ceiling-dtype-unknown", "float99",
               _current(_set("measured", "compute_ceiling_gflops", {"float32": 100.0, "float99": 5.0}))),
    BadProfile("hardware-name-number", "metadata.hardware_name", _current(_set("metadata", "hardware_name", 42))),
    BadProfile("device-unknown", "tpu", _current(_op("device", "tpu"))),
    BadProfile("duplicate-key", "median_ms", lambda: _current(lambda d: None)().replace(
        '"median_ms": ', '"median_ms": 5.0, "median_ms": ', 1)),
    BadProfile("operation-profiles-list", "operation_profiles", _current(_set("operation_profiles", []))),
    BadProfile("fusion-entries-dict", "fusion_profiles.Add_ReLU", _current(_set("fusion_profiles", "Add_ReLU", {}))),
    BadProfile("schema-version-string", "schema_version", _current(_set("schema_version", "1"))),
    BadProfile("date-garbage", "metadata.date", _current(_set("metadata", "date", "yesterday"))),
    BadProfile("verdict-unknown", "verdict", _current(_fusion("verdict", "maybe"))),
    BadProfile("top-level-null", "NoneType", _raw("null")),
    BadProfile("binary", "cannot read", _raw(b"\xff\xfe\x00 not text")),
    # the predecessor's layout
    BadProfile("legacy-fused-zero", "fused_latency_ms",
               _predecessor(_both(_legacy_fusion("fused_latency_ms", 0), _without("fusion_profiles", "Linear_Bias",
                                                                                  "speedup_factor")))),
    BadProfile("legacy-fused-zero-speedup-zero", "fused_latency_ms",
               _predecessor(_both(_legacy_fusion("fused_latency_ms", 0), _legacy_fusion("speedup_factor", 0)))),
    BadProfile("legacy-fusion-profiles-list", "fusion_profiles", _predecessor(_set("fusion_profiles", []))),
    BadProfile("legacy-fusion-entry-list", "fusion_profiles.Linear_Bias",
               _predecessor(_set("fusion_profiles", "Linear_Bias", [1, 2]))),
    BadProfile("legacy-operation-string", "operation_profiles.matmul_large",
               _predecessor(_set("operation_profiles", "matmul_large", "fast"))),
    BadProfile("legacy-operation-type-missing", "operation_type",
               _predecessor(_without("operation_profiles", "matmul_large", "operation_type"))),
    BadProfile("legacy-metadata-list", "metadata", _predecessor(_set("metadata", [1]))),
    BadProfile("legacy-peak-negative", "theoretical_peak_gflops", _predecessor(_set("theoretical_peak_gflops", -5))),
    BadProfile("legacy-peak-string", "theoretical_peak_gflops", _predecessor(_set("theoretical_peak_gflops", "fast"))),
    BadProfile("legacy-unfused-infinity", "unfused_latency_ms",
               _predecessor(_legacy_fusion("unfused_latency_ms", INF))),
    BadProfile("legacy-speedup-nan", "speedup_factor", _predecessor(_legacy_fusion("speedup_factor", NAN))),
    BadProfile("legacy-speedup-negative", "speedup_factor", _predecessor(_legacy_fusion("speedup_factor", -1))),
    BadProfile("legacy-unfused-string", "unfused_latency_ms",
               _predecessor(_legacy_fusion("unfused_latency_ms", "slow"))),
    BadProfile("legacy-date-number", "calibration_date", _predecessor(_set("metadata", "calibration_date", 12345))),
    BadProfile("legacy-cpu-count-string", "cpu_count", _predecessor(_set("metadata", "cpu_count", "twelve"))),
    BadProfile("legacy-input-shape-number", "input_shape", _predecessor(_legacy_fusion("input_shape", 5))),
    BadProfile("legacy-extra-params-list", "extra_params", _predecessor(_legacy_op("extra_params", [1, 2]))),
    BadProfile("legacy-trials-infinity", "num_trials", _predecessor(_legacy_op("num_trials", INF))),
    BadProfile("legacy-mean-negative", "mean_latency_ms", _predecessor(_legacy_op("mean_latency_ms", -3))),
    BadProfile("legacy-bandwidth-infinity", "measured_bandwidth_gbps",
               _predecessor(_set("measured_bandwidth_gbps", INF))),
    BadProfile("legacy-best-gflops-string", "best_measured_gflops", _predecessor(_set("best_measured_gflops", "x"))),
    BadProfile("legacy-fused-missing", "fused_latency_ms",
               _predecessor(_without("fusion_profiles", "Linear_Bias", "fused_latency_ms"))),
)
