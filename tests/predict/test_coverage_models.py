"""The coverage models: ops neither the reference nor the held-out set uses, each costed as
what it runs (no composite module left as one call, every op but bilinear upsampling counted)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from calibration.predict.coverage_models import COVERAGE, coverage_input
from calibration.predict.plan import partition
from calibration.specs.operations import OPERATIONS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(COVERAGE))
def test_each_coverage_model_traces_and_every_composite_module_is_costed_inside(name):
    torch.manual_seed(0)
    model, x = COVERAGE[name](), coverage_input(name, 2)
    assert not model.training
    part = partition(model, x)
    assert part.traced_with == "fx"
    kernels = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    for node in kernels:
        if node.module in ("TransformerEncoder", "MultiheadAttention", "LSTM"):
            assert node.inner and node.flops == sum(k.flops for k in node.inner) > 0, node.name
    # bilinear upsampling (F.interpolate runs aten's upsample_bilinear2d) is the one op whose
    # arithmetic no formula here counts
    assert set(part.uncounted) <= {"upsample_bilinear2d"}
    # every 1-D and 2-D conv is the registry's conv2d at its own geometry (none on the roofline)
    convs = [n for n in kernels if n.op in ("conv1d", "conv2d")]
    for node in convs:
        bias = node.flops - OPERATIONS["conv2d"].flops(node.params)
        assert node.operation == "conv2d" and bias in (0, math.prod(node.shape)), node.name


def test_the_conv_models_hold_the_geometry_they_are_there_for():
    def params(name):
        part = partition(COVERAGE[name](), coverage_input(name, 1))
        return [n.params for sg in part.subgraphs for n in sg.nodes if n.operation == "conv2d"]

    assert all(p["H"] == 1 and p["K"] == 1 for p in params("tcn") + params("audio_frontend"))
    assert {p.get("DIL_W") for p in params("tcn")} == {None, 2, 4, 8, 16, 32}
    assert {(p["K"], p.get("KW")) for p in params("inception_like")} >= {(1, 7), (7, 1)}
    assert {p.get("DIL") for p in params("dilated_head")} == {None, 6, 12, 18}


def test_the_lstm_model_takes_token_ids_and_the_others_floats():
    assert coverage_input("lstm_text", 3).dtype == torch.int64
    assert coverage_input("lstm_text", 3).shape == (3, 64)
    assert coverage_input("vit_tiny", 2).shape == (2, 3, 224, 224)
    with pytest.raises(ValueError, match="unknown coverage model 'resnet18'; choose from vit_tiny"):
        coverage_input("resnet18")


@pytest.mark.parametrize(("flags", "message"), [
    (["--coverage", "--models", "unet,nope"], "--models: unknown model 'nope'; this set has vit_tiny"),
    (["--models", "unet"], "--models: unknown model 'unet'; this set has resnet18"),
    (["--coverage", "--heldout"], "argument --heldout: not allowed with argument --coverage"),
    (["--batches", "1,0,x"], "--batches: '0', 'x' is not a positive integer"),
])
def test_the_accuracy_tool_refuses_a_model_outside_its_set_by_name(tmp_path, flags, message):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "predict_accuracy.py"), str(tmp_path / "p.json"),
                           *flags], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert message in done.stderr
