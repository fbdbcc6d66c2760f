"""python -m calibration: schema, show, run; and the calibrate_hardware API."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from factories import metadata, record

from calibration import calibrate_hardware, load_calibration
from calibration.cli import main
from calibration.measure.fold import fold

REPO = Path(__file__).resolve().parents[2]


def test_schema_prints_the_json_schema(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "HardwareCalibration"


def test_show_prints_the_summary(tmp_path, capsys):
    cal = fold([record("matmul", 10.0, M=1024, K=1024, N=1024, path="aten")], metadata(hardware_name="box-1"))
    path = cal.save(tmp_path / "p.json")
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Hardware calibration: box-1" in out
    assert "matmul float32" in out and "214.7 GFLOPS" in out  # 2*1024^3 / 10 ms
    assert "matmul[M=1024,K=1024,N=1024,path=aten]" in out


def test_show_bad_profile_exits_2_with_the_reason(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text('{"schema_version": 99}')
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "schema_version" in err and "99" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--peak-gflops", "-1"], "--peak-gflops (GFLOPS) must be a positive number, got '-1'"),
        (["--peak-bandwidth", "fast"], "must be a positive number, got 'fast'"),
        (["--operations", "convv"], "unknown operation or family 'convv'"),
        (["--threads", "0"], "--threads must be a positive integer, got '0'"),
        (["--device", "tpu"], "--device must be one of cpu, cuda, got 'tpu'"),
    ],
)
def test_run_rejects_bad_values(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--output", str(tmp_path / "p.json"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.times_kernels
def test_run_calibrates_through_pytest_from_any_folder(tmp_path):
    """The cases installed with the package run; no checkout's bench/ is needed (CI checks
    the same from a wheel in a clean environment: .ci/run)."""
    out = tmp_path / "p.json"
    proc = subprocess.run(
        [sys.executable, "-m", "calibration", "run", "--hardware", "ci-box", "--peak-gflops", "100",
         "--operations", "dispatch", "--quick", "--output", "p.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cal = load_calibration(out)
    assert cal.metadata.hardware_name == "ci-box"
    assert cal.peak_gflops["float32"].value == 100.0
    # the dispatch family: a bare one-element op call, and nothing else
    assert sorted(cal.operation_profiles) == ["dispatch[n=1]/float32/cpu"]


@pytest.mark.times_kernels
def test_calibrate_hardware_api(tmp_path):
    out = tmp_path / "api.json"
    cal = calibrate_hardware(
        hardware_name="api-box", theoretical_bandwidth_gbps=50.0, output_path=out,
        operations=["dispatch"], quick=True,
    )
    assert cal.metadata.hardware_name == "api-box"
    assert cal.peak_bandwidth_gbps.value == 50.0
    assert load_calibration(out) == cal


SELECTIONS = [
    # (operations, fusion_patterns) -> the plugin's selection options
    ((None, None), []),  # everything, as the plugin runs by default
    ((["dispatch"], None), ["--calibrate-operations", "dispatch"]),
    # the predecessor's way
    ((None, ["Add_ReLU"]), ["--calibrate-operations", "all", "--calibrate-fusion-patterns", "Add_ReLU"]),
    (([], ["Add_ReLU"]), ["--calibrate-fusion-patterns", "Add_ReLU"]),  # fusion cases alone
    ((["none"], ["Add_ReLU"]), ["--calibrate-fusion-patterns", "Add_ReLU"]),
    ((["matmul"], ["Add_ReLU"]), ["--calibrate-operations", "matmul", "--calibrate-fusion-patterns", "Add_ReLU"]),
    (("dispatch,matmul", None), ["--calibrate-operations", "dispatch,matmul"]),  # a string may hold several names
]


@pytest.mark.parametrize(("given", "expected"), SELECTIONS)
def test_fusion_patterns_run_with_the_base_operations_unless_operations_are_given(given, expected):
    from calibration.api import selection

    assert selection(*given).args() == expected


def test_run_with_fusion_patterns_also_runs_the_operations(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "calibration", "run", "--quick", "--fusion-patterns", "all", "-o", "p.json",
         "--", "--collect-only"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # collected, not run: no profile
    ran = {line.split("::")[1].split("[")[0] for line in proc.stdout.splitlines() if "::" in line}
    assert {"test_matmul", "test_stream_triad", "test_dispatch", "test_conv_fusion", "test_attention_fusion"} <= ran


def test_the_predecessors_pattern_names_select_with_a_deprecation_warning():
    from calibration.api import selection

    with pytest.warns(DeprecationWarning) as warned:
        chosen = selection(["dispatch"], ["FullAttention_SDPA", "QK_AttentionScores"])
    assert chosen.fusion_patterns == ["Attention", "QK_Softmax"]
    assert sorted(str(w.message) for w in warned) == [
        "fusion pattern 'FullAttention_SDPA' is the predecessor's name; it is 'Attention' now",
        "fusion pattern 'QK_AttentionScores' is the predecessor's name; it is 'QK_Softmax' now",
    ]


def test_run_rejects_an_unknown_fusion_family(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--output", str(tmp_path / "p.json"), "--fusion-patterns", "convs"])
    assert exc.value.code == 2
    assert "unknown fusion family or pattern 'convs'" in capsys.readouterr().err


@pytest.mark.times_kernels
def test_calibrate_hardware_runs_the_selected_fusion_patterns(tmp_path):
    cal = calibrate_hardware(
        output_path=tmp_path / "fusion.json", operations=[], fusion_patterns=["Add_ReLU"], quick=True,
    )
    assert cal.operation_profiles == {}  # operations=[]: the fusion cases alone
    variants = sorted(entry.variant for entry in cal.fusion_profiles["Add_ReLU"])
    assert variants == ["compiled", "library"] or variants == ["library"]  # compiled skips without a compiler
    assert list(cal.fusion_profiles) == ["Add_ReLU"]


def test_partition_prints_the_report_for_a_registered_model(capsys):
    assert main(["partition", "--model", "mlp", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "Linear_Bias_ReLU:" in out and "After fusion" in out


def test_partition_takes_a_user_factory_with_an_input_shape(capsys):
    assert main(["partition", "--model", "calibration.predict.models:mlp", "--input-shape", "784"]) == 0
    assert "Linear_Bias_ReLU:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nosuch"], "give one of resnet18, mobilenet_v2, bert_layer, mlp or MODULE:FACTORY"),
        (["--model", "calibration.predict.models:mlp"], "needs --input-shape"),
        (["--model", "calibration.predict.models:nosuch", "--input-shape", "784"], "nosuch"),
        (["--model", "mlp", "--profile", "/nonexistent/p.json"], "no such profile"),
    ],
)
def test_partition_bad_input_exits_2(capsys, args, message):
    assert main(["partition", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["partition", "predict"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_a_bad_batch_is_reported_as_a_bad_batch(capsys, command, value):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--model", "mlp", "--profile", "p.json", "--batch", value])
    assert exit_info.value.code == 2
    assert f"--batch must be a positive integer, got {value!r}" in capsys.readouterr().err


@pytest.mark.times_kernels
def test_predict_prints_where_the_time_goes_and_with_measure_the_protocol(tmp_path, capsys):
    n = 1 << 25
    cal = fold(
        [record("matmul", 2 * 1024**3 / 100e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
         record("stream_triad", 3 * 4 * n / 20e9 * 1e3, n=n), record("dispatch", 0.002, n=1)],
        metadata(),
    )
    path = cal.save(tmp_path / "p.json")
    assert main(["predict", "--model", "mlp", "--profile", str(path)]) == 0
    out = capsys.readouterr().out
    assert "predicted eager" in out and "fused" in out and "by operation" in out and "slowest kernels" in out
    assert len(out.splitlines()) <= 40
    assert main(["predict", "--model", "mlp", "--profile", str(path), "--measure", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "median of 1 interleaved rounds" in out
    # the synthetic profile names another CPU: the error is refused, not printed
    assert "error not reported: the profile was measured on 'Test CPU'" in out
    assert main(["predict", "--model", "mlp", "--profile", str(tmp_path / "nope.json")]) == 2


def test_predict_says_what_calls_after_longer_kernels_add(tmp_path, capsys):
    from dataclasses import replace

    n = 1 << 25
    records = [record("matmul", 2 * 1024**3 / 100e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
               record("stream_triad", 3 * 4 * n / 20e9 * 1e3, n=n), record("dispatch", 0.002, n=1)]
    records += [replace(record("after_busy", 0.025, N=768, probe=probe), warm_ms=0.005, preceding_ms=0.01)
                for probe in ("view", "relu_inplace", "add", "batch_norm")]  # +20 us after a 10 us kernel
    path = fold(records, metadata()).save(tmp_path / "p.json")
    assert main(["predict", "--model", "mlp", "--profile", str(path)]) == 0
    assert "for calls right after longer kernels" in capsys.readouterr().out
    assert main(["predict", "--model", "mlp", "--profile", str(path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["after_busy_ms"] > 0
    assert any("us after a" in k["source"] for k in data["kernels"])


@pytest.mark.times_kernels
def test_predict_by_op_as_json_has_a_row_per_kernel(tmp_path, capsys):
    n = 1 << 25
    cal = fold([record("matmul", 2 * 1024**3 / 100e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
                record("stream_triad", 3 * 4 * n / 20e9 * 1e3, n=n), record("dispatch", 0.002, n=1)], metadata())
    path = cal.save(tmp_path / "p.json")
    assert main(["predict", "--model", "mlp", "--profile", str(path), "--by-op", "--rounds", "1",
                 "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    kernels = [op for op in data["ops"] if op["kind"] == "kernel"]
    assert [op["op"] for op in kernels].count("linear") == 3 and [op["op"] for op in kernels].count("relu") == 2
    assert data["accounted_ms"] == pytest.approx(sum(op["measured_ms"] for op in data["ops"]))
    assert data["measurement"]["refused"] and data["measurement"]["error_raw"] is None


def test_page_faults_per_forward_counts_what_each_forward_faults_in(monkeypatch):
    from calibration.measure import model_timing

    class Fresh(torch.nn.Module):
        def forward(self, x):
            return x + 1

    readings = iter([100, 107, 107, 107, 200, 203])  # ru_minflt before and after each of three calls
    fake = type("Usage", (), {})

    def getrusage(_who):
        usage = fake()
        usage.ru_minflt = next(readings)
        return usage

    import resource
    monkeypatch.setattr(resource, "getrusage", getrusage)
    assert model_timing.page_faults_per_forward(Fresh(), torch.zeros(4), calls=3) == (7, 0, 3)


@pytest.mark.times_kernels
def test_drift_divides_the_fastest_time_now_by_the_profile_s():
    from calibration.measure import model_timing

    slow = fold([record("matmul", 1e6, M=1024, K=1024, N=1024, path="aten")], metadata())  # 1000 s
    ratios = model_timing.drift(slow, min_run_time=0.01)
    assert list(ratios) == ["matmul"] and 0 < ratios["matmul"] < 1e-3
    assert model_timing.drift(fold([], metadata())) == {}


def test_summary_flags_cache_levels_whose_triad_is_a_per_call_cost():
    from calibration.profile.summary import render_summary

    cal = fold([
        record("dispatch", 0.002, n=1),  # 2 us a call
        record("stream_triad", 0.004, n=1024),  # 12 KiB in L1 in 4 us: two dispatches
        record("stream_triad", 0.5, n=1 << 20),  # 12 MiB in L3 in 500 us: bandwidth
        record("stream_triad", 20.0, n=1 << 25),
    ], metadata())
    note = [line for line in render_summary(cal).splitlines() if "per-call costs" in line]
    assert len(note) == 1 and note[0].strip().startswith("note: L1 triad calls")


def test_run_that_writes_no_profile_says_so_and_fails(tmp_path):
    """The cases pass untimed under --benchmark-disable: pytest says OK, but nothing was calibrated."""
    proc = subprocess.run(
        [sys.executable, "-m", "calibration", "run", "--quick", "--operations", "dispatch", "-o", "p.json",
         "--", "--benchmark-disable"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[-1] == "error: no profile was written to p.json (the summary above says why)"
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize(("args", "expected"), [([], None), (["--windows", "1"], "1"), (["--windows", "2"], "2")])
def test_run_passes_windows_on_to_the_plugin(tmp_path, monkeypatch, args, expected):
    seen = []
    monkeypatch.setattr(pytest, "main", lambda argv: seen.append(list(argv)) or pytest.ExitCode.OK)
    # pytest.main wrote nothing: run says so and exits 1
    assert main(["run", "--output", str(tmp_path / "p.json"), "--operations", "dispatch", *args]) == 1
    argv = seen[0]
    if expected is None:  # the plugin's default: 2 windows, 1 with --quick
        assert "--calibrate-windows" not in argv
    else:
        assert argv[argv.index("--calibrate-windows") + 1] == expected
