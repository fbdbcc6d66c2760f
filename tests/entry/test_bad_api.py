"""The catalog of bad arguments to the Python API: each raises one exception of the stated
type whose message names the argument's value and what is allowed, before any benchmark
starts (``pytest.main`` is a stub that fails the case), and leaves every file as it was."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from factories import PREDECESSOR_PROFILE, full_profile, metadata, record, snapshot
from torch import nn

from calibration import ProfileError, calibrate_hardware, load_calibration, partition, predict_latency
from calibration.measure.fold import fold
from calibration.report.compare import compare
from calibration.report.plot import plot_roofline


class Boom(nn.Module):
    def forward(self, x):
        raise ValueError("this model is not implemented")


class Two(nn.Module):
    def forward(self, x, y):
        return x + y


@pytest.fixture
def w(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    def no_benchmark(*args, **kwargs):
        raise AssertionError(f"a benchmark run started: pytest.main{args}")

    monkeypatch.setattr(pytest, "main", no_benchmark)
    monkeypatch.chdir(tmp_path)
    legacy = json.loads(json.dumps(PREDECESSOR_PROFILE))
    legacy["operation_profiles"]["conv_resnet"] = {
        "operation_type": "conv2d", "measured_gflops": 300.0, "achieved_bandwidth_gbps": 10.0,
        "mean_latency_ms": 2.0, "num_trials": 10, "compute_bound": True,
        "extra_params": {"in_channels": 64, "out_channels": 64, "kernel_size": 3},
    }
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        legacy_profile = load_calibration(tmp_path / "legacy.json")
    (tmp_path / "notes.txt").write_text("my notes, not a profile\n")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "outdir").mkdir()
    full = full_profile()
    full.save(tmp_path / "p.json")
    return SimpleNamespace(
        dir=tmp_path, full=full, legacy=legacy_profile,
        dispatch_only=fold([record("dispatch", 0.002, n=1)], metadata()),
    )


MM = dict(M=1024, K=1024, N=1024)
MLP = lambda: nn.Sequential(nn.Linear(784, 16), nn.ReLU()).eval()  # noqa: E731

CASES = [
    # queries of a profile
    ("efficiency-parameter-typo", lambda w: w.full.get_efficiency("matmul", pth="mkldnn", **MM), TypeError,
     ["'pth'", "path"]),
    ("efficiency-metric-unknown", lambda w: w.full.get_efficiency("matmul", metric="latency", **MM), ValueError,
     ["'latency'", "compute", "bandwidth"]),
    ("efficiency-negative-size", lambda w: w.full.get_efficiency("matmul", M=-5, K=1024, N=1024), ValueError,
     ["-5", "M"]),
    ("efficiency-fractional-size", lambda w: w.full.get_efficiency("matmul", M=1024.5, K=1024, N=1024), ValueError,
     ["1024.5"]),
    ("efficiency-bool-size", lambda w: w.full.get_efficiency("matmul", M=True, K=1024, N=1024), ValueError,
     ["True"]),
    ("efficiency-path-unknown", lambda w: w.full.get_efficiency("matmul", path="mkl", **MM), ValueError,
     ["'mkl'", "aten", "mkldnn"]),
    ("efficiency-dtype-unknown", lambda w: w.full.get_efficiency("matmul", dtype="float99", **MM), ValueError,
     ["'float99'", "float32"]),
    ("efficiency-device-unknown", lambda w: w.full.get_efficiency("matmul", device="tpu", **MM), ValueError,
     ["'tpu'", "cpu"]),
    ("efficiency-operation-unknown", lambda w: w.full.get_efficiency("matmull", **MM), KeyError,
     ["'matmull'", "matmul"]),
    ("efficiency-parameters-missing", lambda w: w.full.get_efficiency("conv2d", N=1), KeyError, ["CIN"]),
    ("operation-parameter-typo", lambda w: w.full.get_operation("matmul", pth="aten", **MM), TypeError, ["'pth'"]),
    ("legacy-efficiency-conv", lambda w: w.legacy.get_efficiency(
        "conv2d", N=1, CIN=64, COUT=64, H=56, W=56, K=3, STRIDE=1, PAD=1, GROUPS=1), KeyError,
     ["conv2d", "predecessor"]),
    ("speedup-parameter-typo", lambda w: w.full.get_fusion_speedup("Conv2d_BN_ReLU", CINN=64), TypeError,
     ["'CINN'", "CIN"]),
    ("speedup-variant-unknown", lambda w: w.full.get_fusion_speedup("Add_ReLU", variant="fastest"), ValueError,
     ["'fastest'", "library", "compiled"]),
    ("speedup-negative-size", lambda w: w.full.get_fusion_speedup("Add_ReLU", n=-1), ValueError, ["-1"]),
    ("pattern-dtype-unknown", lambda w: w.full.get_fusion_pattern("Add_ReLU", dtype="float99"), ValueError,
     ["'float99'"]),
    # calibrate_hardware: refused before pytest starts
    ("calibrate-output-empty", lambda w: calibrate_hardware(output_path="", operations=["dispatch"]), ValueError,
     ["''"]),
    ("calibrate-output-directory", lambda w: calibrate_hardware(output_path="outdir", operations=["dispatch"]),
     ProfileError, ["outdir", "directory"]),
    ("calibrate-output-fifo", lambda w: calibrate_hardware(output_path="fifo", operations=["dispatch"]),
     ProfileError, ["fifo", "not a regular file"]),
    ("calibrate-output-not-a-profile", lambda w: calibrate_hardware(output_path="notes.txt", operations=["dispatch"]),
     ProfileError, ["notes.txt", "not a calibration profile"]),
    ("calibrate-output-nul", lambda w: calibrate_hardware(output_path="a\0b.json", operations=["dispatch"]),
     ValueError, ["'a\\x00b.json'"]),
    ("calibrate-operation-unknown", lambda w: calibrate_hardware(operations=["convv"]), ValueError, ["'convv'"]),
    ("calibrate-fusion-unknown", lambda w: calibrate_hardware(fusion_patterns=["convs"]), ValueError, ["'convs'"]),
    ("calibrate-nothing-selected", lambda w: calibrate_hardware(operations=[]), ValueError, ["operations"]),
    ("calibrate-peak-negative", lambda w: calibrate_hardware(theoretical_peak_gflops=-1, operations=["dispatch"]),
     ValueError, ["-1"]),
    ("calibrate-peak-nan", lambda w: calibrate_hardware(theoretical_peak_gflops=float("nan"), operations=["dispatch"]),
     ValueError, ["nan"]),
    ("calibrate-bandwidth-string", lambda w: calibrate_hardware(theoretical_bandwidth_gbps="fast",
                                                                operations=["dispatch"]), ValueError, ["'fast'"]),
    ("calibrate-threads-zero", lambda w: calibrate_hardware(threads=0, operations=["dispatch"]), ValueError, ["0"]),
    ("calibrate-threads-a-million", lambda w: calibrate_hardware(threads=10**6, operations=["dispatch"]),
     ValueError, ["1000000"]),
    ("calibrate-windows-three", lambda w: calibrate_hardware(windows=3, operations=["dispatch"]), ValueError,
     ["'3'", "allowed: 1"]),
    ("calibrate-windows-text", lambda w: calibrate_hardware(windows="2", operations=["dispatch"]), ValueError,
     ["'2'", "1 or 2"]),
    ("calibrate-operations-not-names", lambda w: calibrate_hardware(operations=[3]), ValueError, ["[3]"]),
    ("calibrate-device-tpu", lambda w: calibrate_hardware(device="tpu", operations=["dispatch"]), ValueError,
     ["'tpu'"]),
    ("calibrate-hardware-empty", lambda w: calibrate_hardware(hardware_name="", operations=["dispatch"]), ValueError,
     ["''"]),
    ("calibrate-bench-dir-missing", lambda w: calibrate_hardware(bench_dir="nodir", operations=["dispatch"]),
     ValueError, ["nodir"]),
    # saving
    ("save-directory", lambda w: w.full.save(w.dir / "outdir"), ProfileError, ["outdir", "directory"]),
    ("save-fifo", lambda w: w.full.save(w.dir / "fifo"), ProfileError, ["fifo", "not a regular file"]),
    ("save-parent-missing", lambda w: w.full.save(w.dir / "missing" / "p.json"), ProfileError, ["missing"]),
    # a value set after validation would write a file that cannot be read back
    ("save-infinite-after-validation", lambda w: w.full.model_copy(
        update={"peak_bandwidth_gbps": w.full.peak_bandwidth_gbps, "measured": w.full.measured.model_copy(
            update={"dispatch_overhead_us": float("inf")})}).save(w.dir / "p.json"), ProfileError,
     ["p.json", "dispatch_overhead_us"]),
    # partition and prediction
    ("predict-without-ceilings", lambda w: predict_latency(MLP(), torch.randn(1, 784), w.dispatch_only), ValueError,
     ["compute ceiling", "float32"]),
    ("predict-wrong-shape", lambda w: predict_latency(MLP(), torch.randn(1, 5), w.full), ValueError, ["(1, 5)"]),
    ("predict-mode-unknown", lambda w: predict_latency(MLP(), torch.randn(1, 784), w.full, mode="fast"), ValueError,
     ["'fast'"]),
    ("partition-forward-raises", lambda w: partition(Boom().eval(), torch.randn(1, 4)), ValueError,
     ["Boom", "this model is not implemented"]),
    ("partition-two-inputs", lambda w: partition(Two().eval(), torch.randn(1, 4)), ValueError, ["Two", "y"]),
    ("partition-training-mode", lambda w: partition(MLP().train(), torch.randn(1, 784)), ValueError, ["eval"]),
    # reports
    ("plot-into-directory", lambda w: plot_roofline(w.full, w.dir / "outdir"), ValueError, ["outdir", "directory"]),
    ("plot-without-extension", lambda w: plot_roofline(w.full, w.dir / "roofline"), ValueError, ["roofline", "png"]),
    ("compare-threshold-negative", lambda w: compare(w.full, w.full, threshold=-0.1), ValueError, ["-0.1"]),
    ("compare-alpha-above-one", lambda w: compare(w.full, w.full, alpha=1.5), ValueError, ["1.5"]),
    ("compare-metric-unknown", lambda w: compare(w.full, w.full, metric="power"), ValueError, ["'power'"]),
]


@pytest.mark.parametrize(("call", "error", "named"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_argument_raises_naming_the_value(w, call, error, named):
    before = snapshot(w.dir)
    with pytest.raises(error) as info:
        call(w)
    message = str(info.value.args[0]) if isinstance(info.value, KeyError) else str(info.value)
    first = message.splitlines()[0] if message else ""
    for text in named:
        assert text in first, f"{text!r} not named in: {message}"
    assert snapshot(w.dir) == before
