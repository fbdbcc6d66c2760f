"""--calibrate-model: a model's own kernels and fusion groups become cases (no timing here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import PLUGIN_ARGS, metadata, record

from calibration.measure.fold import fold
from calibration.profile.summary import render_summary
from calibration.specs.operations import OPERATIONS
from calibration.workload import model_cases

TINY = """
import torch
from torch import nn


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 24)).eval()


def wide():
    return nn.Linear(48, 16).eval()
"""


def test_a_model_gives_its_distinct_kernels_and_fusion_groups_at_its_own_shapes():
    found = model_cases(["mlp"], [1, 8], device="cpu")
    linear = {c.key for c in found.operations["linear"]}
    assert linear == {f"linear[B={b},IN={i},OUT={o}]/float32/cpu"
                      for b in (1, 8) for i, o in ((784, 512), (512, 256), (256, 10))}
    assert {c.key for c in found.operations["relu"]} == {f"relu[n={n}]/float32/cpu" for n in (512, 256, 4096, 2048)}
    fused = {(c.pattern, c.param_dict["B"], c.variant) for c in found.fusion["linear"]}
    assert ("Linear_Bias_ReLU", 8, "unfused") in fused and ("Linear_Bias_ReLU", 8, "library") in fused
    assert found.origin["linear[B=8,IN=784,OUT=512]/float32/cpu"] == ["mlp b8"]
    assert found.count() == len(found.origin)
    # each linear also as its cold twin: its time when the forward evicts its weights
    assert {c.key for c in found.operations["linear_cold"]} == {k.replace("linear[", "linear_cold[") for k in linear}
    assert "relu_cold" not in found.operations


def test_each_module_class_the_model_calls_gets_its_module_call_probe():
    """What calling the class costs over its kernel: a quick grid probes two classes only."""
    found = model_cases(["resnet18"], [1], device="cpu")
    probed = {c.param_dict["module"] for c in found.operations["module_call"]}
    assert probed == {"Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "AdaptiveAvgPool2d", "Linear"}
    forms = [c.param_dict["form"] for c in found.operations["module_call"] if c.param_dict["module"] == "Linear"]
    assert sorted(forms) == ["kernel", "module"]
    assert found.origin["module_call[module=Linear,form=module]/float32/cpu"] == ["resnet18 b1"]
    # a class with no probe (the token model's nn.Embedding, nn.LSTM) adds none
    text = model_cases(["calibration.predict.coverage_models:lstm_text"], [1], device="cpu", input_shape=(64,),
                       input_dtype="int64")
    assert {c.param_dict["module"] for c in text.operations["module_call"]} == {"Linear"}


def test_the_kernels_inside_a_composite_module_and_an_attention_s_speedup_become_cases():
    found = model_cases(["calibration.predict.coverage_models:mha_blocks"], [2], device="cpu", input_shape=(64, 256))
    # the blocks' MLP Linears and, inside each nn.MultiheadAttention, its out-projection ...
    assert {c.key for c in found.operations["linear"]} == {
        f"linear[B=128,IN={i},OUT={o}]/float32/cpu" for i, o in ((256, 256), (256, 1024), (1024, 256))}
    # ... its packed in-projection, and its scaled dot-product attention's GEMMs and softmax
    assert "matmul[M=128,K=256,N=768,path=aten]/float32/cpu" in found.origin
    assert {c.key for c in found.operations["bmm"]} == {"bmm[BATCH=16,M=64,K=32,N=64]/float32/cpu",
                                                        "bmm[BATCH=16,M=64,K=64,N=32]/float32/cpu"}
    assert "softmax[ROWS=1024,COLS=64]/float32/cpu" in found.origin
    # the library kernel's speedup over those, at the attention's own shape
    assert {c.key for c in found.fusion["attention"]} == {
        "Attention[B=2,H=8,L=64,D=32]/float32/cpu/unfused", "Attention[B=2,H=8,L=64,D=32]/float32/cpu/library"}


def test_a_token_model_takes_its_input_dtype():
    found = model_cases(["calibration.predict.coverage_models:lstm_text"], [1], device="cpu", input_shape=(64,),
                        input_dtype="int64")
    # each LSTM layer timed whole (its entry prices it), not its parts; the classifier's Linear
    assert {c.key for c in found.operations["lstm"]} == {"lstm[T=64,B=1,I=128,H=256]/float32/cpu",
                                                         "lstm[T=64,B=1,I=256,H=256]/float32/cpu"}
    assert {c.key for c in found.operations["linear"]} == {"linear[B=1,IN=256,OUT=4]/float32/cpu"}
    with pytest.raises(ValueError, match="indices"):
        model_cases(["calibration.predict.coverage_models:lstm_text"], [1], device="cpu", input_shape=(64,))


def test_a_kernel_two_models_share_is_one_case_with_both_origins():
    found = model_cases(["mlp", "calibration.predict.models:mlp"], [1], device="cpu", input_shape=(784,))
    key = "linear[B=1,IN=784,OUT=512]/float32/cpu"
    assert [c.key for c in found.operations["linear"]].count(key) == 1
    assert found.origin[key] == ["mlp b1", "calibration.predict.models:mlp b1"]


def test_conv_cases_carry_every_registry_parameter_and_groups_once():
    found = model_cases(["mobilenet_v2"], [1], device="cpu")
    conv = found.operations["conv2d"][0]
    assert [name for name, _ in conv.params] == ["N", "CIN", "COUT", "H", "W", "K", "STRIDE", "PAD", "GROUPS"]
    for case in found.fusion["conv"]:
        names = [name for name, _ in case.params]
        assert names.count("GROUPS") <= 1 and names[:7] == ["N", "CIN", "COUT", "H", "W", "K", "STRIDE"]


def test_entries_record_their_origin_and_the_summary_counts_them():
    cal = fold([record("relu", 0.01, n=512), record("relu", 0.02, n=1 << 20)], metadata(),
               origins={"relu[n=512]/float32/cpu": "mlp b1"})
    assert cal.operation_profiles["relu[n=512]/float32/cpu"].origin == "mlp b1"
    assert cal.operation_profiles["relu[n=1048576]/float32/cpu"].origin is None
    assert "Calibrated for models (--calibrate-model): mlp b1: 1 entry" in render_summary(cal)


def added_linear_cases(pytester, monkeypatch, *model_args: str) -> set[str]:
    """The linear cases ``model_args`` add to a quick run's grid (collected, not run)."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    bench = Path(__file__).resolve().parents[2] / "bench"
    pytester.makepyfile(test_linear=(bench / "test_matmul.py").read_text(), tiny=TINY)
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    args = (*PLUGIN_ARGS, "--calibrate-quick", "--collect-only", "-q", "-k", "linear")
    plain = [line for line in pytester.runpytest_subprocess(*args).outlines if "::" in line]
    result = pytester.runpytest_subprocess(*args, *model_args)
    return set(line for line in result.outlines if "::" in line) - set(plain)


def test_the_plugin_adds_the_model_s_cases_to_the_grid(pytester, monkeypatch):
    added = added_linear_cases(pytester, monkeypatch, "--calibrate-model", "tiny:tiny",
                               "--calibrate-model-input-shape", "24", "--calibrate-model-batch", "1,8")
    assert added == {f"test_linear.py::test_linear[B={b},IN={i},OUT={o}/float32/cpu]"
                     for b in (1, 8) for i, o in ((24, 40), (40, 24))}


def test_each_factory_model_takes_its_own_input_shape_in_order(pytester, monkeypatch):
    added = added_linear_cases(pytester, monkeypatch, "--calibrate-model", "tiny:tiny", "--calibrate-model", "mlp",
                               "--calibrate-model", "tiny:wide", "--calibrate-model-input-shape", "24",
                               "--calibrate-model-input-shape", "48")
    assert {f"test_linear.py::test_linear[B=1,IN={i},OUT={o}/float32/cpu]"
            for i, o in ((24, 40), (40, 24), (48, 16), (784, 512))} <= added


@pytest.mark.parametrize(("args", "message"), [
    (("--calibrate-model", "tiny:tiny", "--calibrate-model", "tiny:wide", "--calibrate-model-input-shape", "24",
      "--calibrate-model-input-shape", "48", "--calibrate-model-input-shape", "8"),
     "--calibrate-model-input-shape given 3 times for 2 MODULE:FACTORY models; give it once for all of them, "
     "or once for each"),
    (("--calibrate-model", "nosuch"), "--calibrate-model: --model 'nosuch': give one of"),
    (("--calibrate-model", "tiny:tiny"), "needs --input-shape"),
    (("--calibrate-model", "mlp", "--calibrate-model-batch", "0"), "--calibrate-model-batch must be a positive"),
    (("--calibrate-model", "tiny:tiny", "--calibrate-model-input-shape", "24", "--calibrate-model-input-dtype",
      "int64"), "--calibrate-model: Sequential raised RuntimeError on its example input (int64 of shape (1, 24))"),
    (("--calibrate-model", "mlp", "--calibrate-model-input-dtype", "int8"),
     "argument --calibrate-model-input-dtype: invalid choice: 'int8'"),
])
def test_a_model_that_cannot_load_stops_the_run_before_any_case(pytester, monkeypatch, args, message):
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(tiny=TINY)
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "--collect-only", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_a_quick_workload_run_times_the_full_grid_of_the_sequence_probes_and_the_quick_one_of_the_rest(
        pytester, monkeypatch):
    # the model's kernels hit exact entries: what is left is what they pay in sequence
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    bench = Path(__file__).resolve().parents[2] / "bench"
    pytester.makepyfile(test_sequence=(bench / "test_sequence.py").read_text(),
                        test_matmul=(bench / "test_matmul.py").read_text(), tiny=TINY)
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    args = (*PLUGIN_ARGS, "--calibrate-quick", "--collect-only", "-q")

    def collected(*extra: str) -> dict[str, int]:
        lines = [line for line in pytester.runpytest_subprocess(*args, *extra).outlines if "::" in line]
        return {name: sum(f"::test_{name}[" in line for line in lines)
                for name in ("after_busy", "reread", "after_wait", "matmul")}

    plain = collected()
    workload = collected("--calibrate-model", "tiny:tiny", "--calibrate-model-input-shape", "24")
    sequence = ("after_busy", "reread", "after_wait")
    full = {name: len(OPERATIONS[name].cases(quick=False, device="cpu")) for name in sequence}
    quick = {name: len(OPERATIONS[name].cases(quick=True, device="cpu")) for name in (*full, "matmul")}
    assert full["after_busy"] > quick["after_busy"] and full["reread"] > quick["reread"]
    assert plain == quick
    assert workload == {**full, "matmul": quick["matmul"]}
