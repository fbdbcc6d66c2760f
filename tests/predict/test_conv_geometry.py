"""Convolutions off the square grid: a 1x7 kernel, a different stride or padding per axis,
dilation, padding="same", and 1-D convs (which ATen runs as 2-D convs of one row) get the
registry's conv2d parameters with their real geometry, so the profile prices them by their
own FLOPs and bytes rather than as the square conv of their kernel's height."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from factories import metadata, record
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from calibration.measure.fold import fold
from calibration.measure.kernels import build
from calibration.predict.mapper import CPUMapper, weight_bytes
from calibration.predict.plan import partition
from calibration.profile.lookup import find_exact
from calibration.specs.operations import CONV_WIDTH_PARAMS, OPERATIONS, Case, conv_geometry, conv_out
from calibration.workload import model_cases

CONV = OPERATIONS["conv2d"]


def conv_nodes(model: nn.Module, x: torch.Tensor, cal=None):
    part = partition(model.eval(), x, cal)
    return [n for sg in part.subgraphs for n in sg.nodes if n.kernel and n.op.startswith("conv")]


def torch_flops(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def test_output_size_with_dilation_matches_torch():
    for size, k, s, p, d in [(17, 3, 1, 1, 1), (17, 3, 2, 0, 2), (32, 7, 1, 3, 1), (31, 5, 3, 4, 3), (10, 1, 2, 0, 1)]:
        out = F.conv1d(torch.zeros(1, 1, size), torch.zeros(1, 1, k), stride=s, padding=p, dilation=d)
        assert conv_out(size, k, s, p, d) == out.shape[-1]


def test_the_width_defaults_to_the_height():
    square = {"N": 1, "CIN": 8, "COUT": 8, "H": 9, "W": 9, "K": 3, "STRIDE": 2, "PAD": 1, "GROUPS": 1}
    g = conv_geometry(square)
    assert (g.kernel, g.stride, g.pad, g.dilation) == ((3, 3), (2, 2), (1, 1), (1, 1))
    g = conv_geometry(square | {"KW": 7, "PAD_W": 3, "DIL": 2})
    assert (g.kernel, g.stride, g.pad, g.dilation) == ((3, 7), (2, 2), (1, 3), (2, 2))


class Convs(nn.Module):
    """A 1x7 then 7x1 conv (Inception's factorised 7x7), a dilated 3x3, a "same" conv and a
    strided 2x3 kernel with its own padding per axis."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(16, 24, (1, 7), padding=(0, 3), bias=False)
        self.b = nn.Conv2d(24, 24, (7, 1), padding=(3, 0), bias=False)
        self.c = nn.Conv2d(24, 32, 3, padding=2, dilation=2, bias=False)
        self.d = nn.Conv2d(32, 32, 5, padding="same", groups=4, bias=False)
        self.e = nn.Conv2d(32, 16, (2, 3), stride=(2, 1), padding=(1, 0), bias=False)

    def forward(self, x):
        return self.e(self.d(self.c(self.b(self.a(x)))))


class Convs1d(nn.Module):
    """A 1-D stack as a temporal conv net or an audio front end has it: strided, dilated,
    depthwise and pointwise."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(8, 32, 10, stride=5, bias=False)
        self.b = nn.Conv1d(32, 32, 3, padding=4, dilation=4, bias=False)
        self.c = nn.Conv1d(32, 32, 5, padding=2, groups=32, bias=False)
        self.d = nn.Conv1d(32, 64, 1, bias=False)

    def forward(self, x):
        return self.d(self.c(self.b(self.a(x))))


@pytest.mark.parametrize("model, x", [(Convs(), torch.randn(2, 16, 20, 18)), (Convs1d(), torch.randn(2, 8, 400))],
                         ids=["2d", "1d"])
def test_each_conv_gets_its_own_geometry_and_the_registry_counts_its_flops(model, x):
    nodes = conv_nodes(model, x)
    assert len(nodes) == len(list(model.children()))
    for node in nodes:
        assert node.operation == "conv2d"
        assert set(node.params) <= {*CONV.param_names, *CONV_WIDTH_PARAMS}
        assert CONV.flops(node.params) == node.flops  # no bias: the node's count is the conv's
    # the registry's counts add up to what torch counts for the whole forward
    assert sum(CONV.flops(n.params) for n in nodes) == torch_flops(model, x)


def test_the_width_parameters_appear_only_where_they_differ():
    a, b, c, d, e = (n.params for n in conv_nodes(Convs(), torch.randn(2, 16, 20, 18)))
    assert (a["K"], a["KW"], a["PAD"], a["PAD_W"]) == (1, 7, 0, 3) and "STRIDE_W" not in a
    assert (b["K"], b["KW"], b["PAD"], b["PAD_W"]) == (7, 1, 3, 0)
    assert (c["K"], c["DIL"], c["PAD"]) == (3, 2, 2) and not set(c) & {"KW", "PAD_W", "DIL_W"}
    assert (d["K"], d["PAD"], d["GROUPS"]) == (5, 2, 4) and not set(d) & set(CONV_WIDTH_PARAMS)
    assert (e["K"], e["KW"], e["STRIDE"], e["STRIDE_W"], e["PAD"], e["PAD_W"]) == (2, 3, 2, 1, 1, 0)


def test_a_1d_conv_is_the_2d_conv_of_one_row():
    (a, b, *_) = (n.params for n in conv_nodes(Convs1d(), torch.randn(2, 8, 400)))
    assert a == {"N": 2, "CIN": 8, "COUT": 32, "H": 1, "W": 400, "K": 1, "STRIDE": 1, "PAD": 0, "GROUPS": 1,
                 "KW": 10, "STRIDE_W": 5}
    assert (b["W"], b["KW"], b["PAD_W"], b["DIL_W"]) == (79, 3, 4, 4) and "DIL" not in b


def test_a_functional_conv_reads_its_geometry_from_the_call():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(12, 6, 1, 5))

        def forward(self, x):
            return F.conv2d(x, self.w, None, (1, 2), (0, 2), (1, 3))

    model, x = Functional(), torch.randn(1, 6, 8, 30)
    (node,) = conv_nodes(model, x)
    assert {k: node.params.get(k) for k in ("K", "KW", "STRIDE", "STRIDE_W", "PAD", "PAD_W", "DIL", "DIL_W")} == \
        {"K": 1, "KW": 5, "STRIDE": 1, "STRIDE_W": 2, "PAD": 0, "PAD_W": 2, "DIL": None, "DIL_W": 3}
    assert CONV.flops(node.params) == torch_flops(model, x)


def test_the_benchmark_runs_the_conv_its_parameters_name():
    params = {"N": 1, "CIN": 8, "COUT": 16, "H": 1, "W": 50, "K": 1, "STRIDE": 1, "PAD": 0, "GROUPS": 2,
              "KW": 3, "STRIDE_W": 2, "PAD_W": 2, "DIL_W": 2}
    kernel = build(Case("conv2d", tuple(params.items()), "float32", "cpu"))
    out = kernel()
    assert tuple(out.shape) == (1, 16, 1, conv_out(50, 3, 2, 2, 2))
    with FlopCounterMode(display=False) as counter:
        kernel()
    assert counter.get_total_flops() == CONV.flops(params)


def square_entry_profile():
    """A 1x1 conv timed at 1 ms: the square conv a 1x7 kernel used to be read as."""
    one = {"N": 2, "CIN": 16, "COUT": 24, "H": 20, "W": 18, "K": 1, "STRIDE": 1, "PAD": 0, "GROUPS": 1}
    return fold([record("matmul", 2 * 1024**3 / 100e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
                 record("stream_triad", 3 * 4 * (1 << 25) / 20e9 * 1e3, n=1 << 25),
                 record("dispatch", 0.002, n=1), record("conv2d", 1.0, **one)], metadata(cache_sizes={})), one


def test_a_square_entry_is_not_an_exact_match_for_a_wider_kernel():
    cal, one = square_entry_profile()
    assert find_exact(cal, "conv2d", "float32", "cpu", one) is not None
    assert find_exact(cal, "conv2d", "float32", "cpu", one | {"KW": 7, "PAD_W": 3}) is None
    wide = fold([record("conv2d", 3.0, **(one | {"KW": 7, "PAD_W": 3}))], metadata(cache_sizes={}))
    assert find_exact(wide, "conv2d", "float32", "cpu", one) is None  # nor the other way round
    assert find_exact(wide, "conv2d", "float32", "cpu", one | {"KW": 7, "PAD_W": 3}) is not None


def test_weights_count_every_tap():
    (a, _, c, d, e) = conv_nodes(Convs(), torch.randn(2, 16, 20, 18))
    assert weight_bytes(a) == 24 * 16 * 7 * 4
    assert weight_bytes(c) == 32 * 24 * 9 * 4
    assert weight_bytes(d) == 32 * 8 * 25 * 4
    assert weight_bytes(e) == 16 * 32 * 6 * 4
    cal, _ = square_entry_profile()
    # priced from the profile as the conv it is: not the 1x1 entry's time
    assert CPUMapper(cal).kernel(a).seconds != pytest.approx(1e-3)


def test_the_workload_calibrates_the_conv_a_model_runs(tmp_path, monkeypatch):
    (tmp_path / "tcn_factory.py").write_text(
        "from torch import nn\n\n\ndef tcn():\n"
        "    return nn.Sequential(nn.Conv1d(8, 32, 10, stride=5, bias=False),\n"
        "                         nn.Conv1d(32, 32, 3, padding=4, dilation=4, bias=False)).eval()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = model_cases(["tcn_factory:tcn"], [2], device="cpu", input_shape=(8, 400))
    keys = [c.key for c in found.operations["conv2d"]]
    assert keys == ["conv2d[N=2,CIN=8,COUT=32,H=1,W=400,K=1,STRIDE=1,PAD=0,GROUPS=1,KW=10,STRIDE_W=5]/float32/cpu",
                    "conv2d[N=2,CIN=32,COUT=32,H=1,W=79,K=1,STRIDE=1,PAD=0,GROUPS=1,KW=3,PAD_W=4,DIL_W=4]/float32/cpu"]
    # each case builds the conv it names
    for case in found.operations["conv2d"]:
        assert tuple(build(case)().shape) == (2, 32, 1, 79)
