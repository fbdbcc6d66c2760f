"""Where a model's time goes: profiler events mapped to partition kernels, and the rows built
from them. The join is tested on hand-made node timings (no timing is asserted); the
profiler side only on what it finds, never on how long it took."""

from __future__ import annotations

import json

import pytest
import torch
from factories import metadata, record
from torch import nn

from calibration.measure.fold import fold
from calibration.measure.node_profile import GraphProfile, NodeTiming, instrument, profile_graph
from calibration.predict.mapper import mapper_for
from calibration.predict.plan import partition
from calibration.predict.trace import trace
from calibration.report.attribution import attribute

N = 1 << 25


def profile():
    return fold([
        record("matmul", 2 * 1024**3 / 100e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
        record("stream_triad", 3 * 4 * N / 20e9 * 1e3, n=N), record("dispatch", 0.002, n=1),
    ], metadata(cache_sizes={}))


class PermutedLinear(nn.Module):
    """A permute (a view) before a Linear: the Linear copies its operand to make it contiguous."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.fc(x.permute(0, 2, 1)))


def model_and_input():
    torch.manual_seed(0)
    return PermutedLinear().eval(), torch.randn(2, 16, 12)


def test_instrumenting_keeps_the_graph_s_result_and_adds_a_range_per_call_node():
    model, x = model_and_input()
    gm, _ = trace(model, (x,))
    traced = instrument(gm)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), gm(x))
    calls = [n for n in gm.graph.nodes if n.op.startswith("call_")]
    enters = [n for n in traced.graph.nodes if n.target is torch.ops.profiler._record_function_enter_new]
    assert [n.args[0] for n in enters] == [f"node::{n.name}" for n in calls]


def test_the_profiler_finds_every_node_and_the_copy_hidden_in_the_linear():
    model, x = model_and_input()
    gm, _ = trace(model, (x,))
    found = profile_graph(gm, (x,), runs=2, warmup=1)
    assert found.runs == 2
    assert set(found.nodes) == {"permute", "fc", "act"}
    assert "aten::clone" in found.nodes["fc"].hidden_ms  # the permuted operand, materialised
    assert not found.nodes["act"].hidden_ms and not found.nodes["permute"].hidden_ms
    assert found.nodes["fc"].aten_ms.keys() == {"aten::linear"}
    # a node the partition counts as a copy kernel owns its clone
    assert not profile_graph(gm, (x,), runs=1, warmup=0, copy_nodes=frozenset({"fc"})).nodes["fc"].hidden_ms


def rows_for(timings: dict[str, NodeTiming], forward_ms: float, outside_ms: float):
    model, x = model_and_input()
    cal = profile()
    part = partition(model, x, cal)
    estimate = mapper_for(cal).estimate(part)
    measured = GraphProfile(forward_ms=forward_ms, outside_ms=outside_ms, nodes=timings, runs=3)
    return part, estimate, attribute(part, estimate, measured, batch=2, calibration=cal, eager_ms=1.0)


def test_each_kernel_is_a_row_and_so_is_each_time_no_kernel_accounts_for():
    timings = {
        "permute": NodeTiming("permute", 0.01),
        "fc": NodeTiming("fc", 0.50, hidden_ms={"aten::clone": 0.20}),
        "act": NodeTiming("act", 0.10),
    }
    part, estimate, result = rows_for(timings, forward_ms=0.65, outside_ms=0.04)
    rows = {row.name: row for row in result.rows}
    assert rows.keys() == {"permute", "fc", "fc/aten::clone", "act", "(between nodes)"}
    assert (rows["fc"].kind, rows["fc"].measured_ms) == ("kernel", pytest.approx(0.30))  # the copy is its own row
    assert (rows["permute"].kind, rows["(between nodes)"].measured_ms) == ("view", 0.04)
    predicted = {k.name: k.seconds * 1e3 for sg in estimate.subgraphs for k in sg.kernels}
    copy_ms = {k.name: k.copy_seconds * 1e3 for sg in estimate.subgraphs for k in sg.kernels}["fc"]
    assert copy_ms > 0  # the partition saw the copy and the mapper priced it
    assert rows["fc/aten::clone"].kind == "hidden copy"
    assert rows["fc/aten::clone"].predicted_ms == pytest.approx(copy_ms)
    assert rows["fc"].predicted_ms == pytest.approx(predicted["fc"] - copy_ms)
    assert rows["act"].module == "GELU" and rows["fc"].operation == "linear"
    assert result.predicted_ms == pytest.approx(sum(predicted.values()))
    assert result.accounted_ms == pytest.approx(0.65)
    assert result.accounted_share == pytest.approx(1.0)
    misses = [abs(row.miss_ms) for row in result.rows]
    assert misses == sorted(misses, reverse=True)
    assert rows["fc"].roof_ms is not None and rows["fc"].roof_share == pytest.approx(rows["fc"].roof_ms / 0.30)


def test_a_node_the_profiler_never_saw_is_a_kernel_measured_at_zero():
    _, _, result = rows_for({"fc": NodeTiming("fc", 0.5)}, forward_ms=1.0, outside_ms=0.5)
    rows = {row.name: row for row in result.rows}
    assert rows["act"].measured_ms == 0.0 and "permute" not in rows  # a view with no time is no row
    assert result.accounted_share == pytest.approx(1.0)


def test_json_and_text_carry_the_same_rows():
    timings = {"permute": NodeTiming("permute", 0.01), "fc": NodeTiming("fc", 0.5, {"aten::clone": 0.2}),
               "act": NodeTiming("act", 0.1)}
    _, _, result = rows_for(timings, forward_ms=0.65, outside_ms=0.04)
    data = json.loads(json.dumps(result.as_json()))
    assert {"predicted_ms", "measured_ms", "ops"} <= data.keys()
    assert [op["name"] for op in data["ops"]] == [row.name for row in result.rows]
    assert all({"name", "predicted_ms", "measured_ms"} <= op.keys() for op in data["ops"])
    text = result.render(top=3)
    assert len(text.splitlines()) <= 40
    assert "fc/aten::clone" in text or "hidden copy" in text
    assert "100% of the profiled forward" in text
