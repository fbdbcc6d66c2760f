"""A one-row Linear (a GEMV) at a shape the grid has not timed is priced by its variant's cost
model (a call, bytes per output row, bytes of weights), not by an efficiency interpolated in
FLOPs between calibrated sizes: on a 2-vCPU EPYC VM that priced 784->512 at 27.7 us against 32
measured, and 256->10 at 1.4 us against 2.3. Few-row GEMMs keep the interpolation."""

from __future__ import annotations

import functools

import pytest
import torch
from factories import record
from test_llc_operands import _profile as _ceilings
from torch import nn

from calibration.predict.mapper import CPUMapper
from calibration.predict.plan import partition
from calibration.profile import lookup, shape_model
from calibration.specs.operations import OPERATIONS

LINEAR = OPERATIONS["linear"]
ITEM = 4
# a GEMV costs 2.5 us a call, its activations at a fifth of their level's bandwidth and its
# weights at 80% of theirs (the cost model prices bytes at the roof of the level they fit in)
CALL_S, ROW_PRICE, WEIGHT_PRICE = 2.5e-6, 5.0, 1.25


def _gemv_grid() -> list[dict]:
    return [p for p in LINEAR.shapes(False) if LINEAR.variant(p) == ("gemv",)]


@functools.cache
def _mapper() -> CPUMapper:
    """The ceilings' mapper, built once: every shape's made-up time reads its roofs."""
    return CPUMapper(_ceilings())


def _made(p: dict) -> float:
    """Seconds of a GEMV that costs a call, its activation bytes and its weight bytes."""
    mapper = _mapper()
    _, rows, weights, _ = shape_model.roofline_terms(LINEAR, p, ITEM, mapper._compute_ceiling("float32"),
                                                     mapper._bandwidth_ceiling)
    return CALL_S + ROW_PRICE * rows + WEIGHT_PRICE * weights


def test_the_cost_terms_count_a_call_activations_weights_and_flops_by_hand():
    # 784 inputs read and 512 outputs written; 784x512 weights and 512 biases; a multiply-add a weight
    assert LINEAR.cost_terms({"B": 1, "IN": 784, "OUT": 512}, ITEM) == (
        1.0, (784 + 512) * 4.0, (784 * 512 + 512) * 4.0, 2.0 * 784 * 512 + 512)
    assert LINEAR.cost_terms({"B": 8, "IN": 10, "OUT": 3}, 2) == (1.0, (80 + 24) * 2.0, 33 * 2.0, 2.0 * 8 * 30 + 24)


def test_only_the_one_row_variant_has_the_cost_model():
    assert LINEAR.has_cost_model({"B": 1, "IN": 784, "OUT": 512})
    assert not LINEAR.has_cost_model({"B": 8, "IN": 784, "OUT": 512})
    assert OPERATIONS["conv2d"].has_cost_model(dict(N=1, CIN=8, COUT=8, H=8, W=8, K=3, STRIDE=1, PAD=1, GROUPS=1))
    assert not OPERATIONS["relu"].has_cost_model({"n": 1024})


def test_the_full_grid_times_enough_one_row_shapes_of_both_aspects_to_fit_it():
    grid = _gemv_grid()
    assert len(grid) >= len(LINEAR.cost_terms(grid[0], ITEM)) + 1
    assert any(p["IN"] > 2 * p["OUT"] for p in grid) and any(p["OUT"] > 2 * p["IN"] for p in grid)
    # weights from a few hundred KB to past the last-level cache
    sizes = [p["IN"] * p["OUT"] * ITEM for p in grid]
    assert min(sizes) < 1 << 20 and max(sizes) > 64 << 20


def _profile():
    records = [record("linear", _made(p) * 1e3, **p) for p in _gemv_grid()]
    # few-row GEMMs at 40 GFLOPS
    records += [record("linear", LINEAR.flops(p) / 40e9 * 1e3, **p)
                for p in LINEAR.shapes(False) if LINEAR.variant(p) == ("gemm",)]
    return _ceilings(extra=records)


@pytest.mark.parametrize("inputs,outputs", [(784, 512), (512, 256), (256, 10), (2048, 1000), (96, 4000)])
def test_a_gemv_off_the_grid_is_priced_by_what_it_spends_time_on(inputs, outputs):
    cal = _profile()
    p = {"B": 1, "IN": inputs, "OUT": outputs}
    assert cal.get_operation("linear", dtype="float32", device="cpu", **p) is None
    mapper = CPUMapper(cal)
    candidates = lookup.candidates(cal, "linear", "float32", "cpu", p)
    fitted = shape_model.estimate(LINEAR, candidates, p, ITEM, floor_seconds=mapper._dispatch_seconds(),
                                  compute_gflops=mapper._compute_ceiling("float32"),
                                  bandwidth_gbps=mapper._bandwidth_ceiling)
    assert fitted is not None and fitted.entries == len(_gemv_grid())
    # the grid's times are exactly linear in the terms, so the fit finds the time of any shape
    # (a FLOPs interpolation puts 256->10 at its FLOPs' share of the 256x256 call)
    assert fitted.seconds == pytest.approx(_made(p), rel=0.02)


def test_a_model_s_gemvs_are_fitted_and_its_few_row_gemms_interpolated():
    cal = _profile()
    mapper = CPUMapper(cal)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    for batch, fitted in ((1, True), (8, False)):
        part = partition(model, torch.randn(batch, 784), cal)
        linears = [k for sg in mapper.estimate(part).subgraphs for k in sg.kernels if k.operation == "linear"]
        assert len(linears) == 2
        for k in linears:
            assert ("fitted to" in k.source) is fitted, (batch, k.source)
    part = partition(nn.Linear(256, 10).eval(), torch.randn(1, 256), cal)
    (head,) = [k for sg in mapper.estimate(part).subgraphs for k in sg.kernels]
    assert head.seconds >= _made({"B": 1, "IN": 256, "OUT": 10})
