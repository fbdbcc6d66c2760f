"""tools/in_sequence.py: each call of a forward in its place against the same call alone."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

TOOL = Path(__file__).resolve().parents[2] / "tools" / "in_sequence.py"
spec = importlib.util.spec_from_file_location("in_sequence", TOOL)
in_sequence = importlib.util.module_from_spec(spec)
sys.modules["in_sequence"] = in_sequence  # its dataclass looks its module up while being defined
spec.loader.exec_module(in_sequence)


class _Net(nn.Sequential):
    """A Linear and a ReLU (module calls), then a method and a function call."""

    def forward(self, x):
        return super().forward(x).flatten(1) + 1


def test_the_graph_s_calls_come_in_forward_order_with_their_own_arguments():
    torch.manual_seed(0)
    model, x = _Net(nn.Linear(8, 4), nn.ReLU()).eval(), torch.randn(2, 8)
    calls = in_sequence.graph_calls(model, (x,))
    assert [(name, op) for name, op, *_ in calls] == [("_0", "Linear"), ("_1", "ReLU"), ("flatten", "flatten"),
                                                      ("add", "add")]
    # replaying the calls with the captured arguments gives the forward's output
    *_, (_, _, fn, args, kwargs) = calls
    torch.testing.assert_close(fn(*args, **kwargs), model(x))


def test_the_report_sums_by_callee_and_lists_the_calls_that_lose_most():
    calls = [in_sequence.Call("bn1", "BatchNorm2d", 0.12, 0.04, 0.05), in_sequence.Call("c1", "Conv2d", 1.8, 1.7, 1.6),
             in_sequence.Call("bn2", "BatchNorm2d", 0.10, 0.05, None), in_sequence.Call("v", "flatten", 0.02, 0.03)]
    text = in_sequence.report("toy", 8, calls, top=2)
    lines = text.splitlines()
    assert lines[0] == "toy batch 8: 4 calls, 2.040 ms in sequence, 1.820 ms alone (x1.12), 1.650 ms predicted"
    # the callee that loses most first: two batch norms, +0.13 ms, x2.44
    assert lines[2].split() == ["BatchNorm2d", "2", "0.220", "0.090", "2.44", "0.050"]
    assert lines[3].split()[0] == "Conv2d"
    assert lines[4].split() == ["flatten", "1", "0.020", "0.030", "0.67", "-"]  # no prediction
    assert "calls losing most in sequence (2 of 4)" in lines[5]
    assert lines[-2].split()[:2] == ["c1", "Conv2d"] and "(+0.1000)" in lines[-2]
    assert lines[-1].split()[:2] == ["bn1", "BatchNorm2d"]


def test_the_report_sets_the_forward_itself_beside_the_sum_of_its_calls():
    calls = [in_sequence.Call("c1", "Conv2d", 1.8, 1.7), in_sequence.Call("bn1", "BatchNorm2d", 0.2, 0.1)]
    first = in_sequence.report("toy", 1, calls, top=1, forward=2.2).splitlines()[0]
    assert first == ("toy batch 1: 2 calls, 2.000 ms in sequence, 1.800 ms alone (x1.11); "
                     "the forward itself 2.200 ms (x1.10 the calls in sequence)")
    assert "forward itself" not in in_sequence.report("toy", 1, calls, top=1)


def test_a_bad_model_or_count_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        in_sequence.main(["resnet99"])
    assert "unknown model 'resnet99'; models: resnet18" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        in_sequence.main(["mlp", "--rounds", "0"])
    assert "--rounds: must be a positive integer, got '0'" in capsys.readouterr().err


@pytest.mark.times_kernels
def test_the_tool_times_every_call_of_a_model_and_writes_them(tmp_path, capsys):
    out = tmp_path / "calls.json"
    assert in_sequence.main(["mlp", "--rounds", "1", "--replays", "2", "--repeats", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [c["op"] for c in data["calls"]] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert all(c["in_sequence_ms"] > 0 and c["alone_ms"] > 0 and c["predicted_ms"] is None for c in data["calls"])
    assert data["forward_ms"] > 0
    out_text = capsys.readouterr().out
    assert out_text.startswith("mlp batch 1: 5 calls") and "the forward itself" in out_text.splitlines()[0]


def test_in_sequence_each_call_takes_what_the_calls_before_it_made_in_the_same_forward():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval(), torch.randn(2, 4)
    seen = []
    model[1].register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    replay = in_sequence.forward_replay(model, (x,))
    with torch.no_grad():
        seconds = replay()
        assert len(seconds) == len(in_sequence.graph_calls(model, (x,))) == 2 and all(t > 0 for t in seconds)
        model[0].weight.mul_(2.0)  # a forward after this one hands the ReLU another input
        replay()
        torch.testing.assert_close(seen[-1], model[0](x))
