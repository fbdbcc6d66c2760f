"""Squeeze-excitation convs (1x1 on a 1x1 map) at batch 1 and at batch > 1 are different kernels:
one image is a matrix-vector product on one thread (8 us for 512->128 on a 2-vCPU EPYC VM),
several are spread over the threads with tens of us of fixed cost (8 images of 32->8: 55 us).
Priced from the one-image entry, EfficientNet-B0's 32 SE convs at batch 8 came to 0.2 ms and
took 2.3 ms repeated alone."""

from __future__ import annotations

import pytest
import torch
from factories import record
from test_llc_operands import _profile as _ceilings
from torch import nn

from calibration.predict.mapper import CPUMapper
from calibration.predict.plan import partition
from calibration.specs.operations import OPERATIONS

CONV = OPERATIONS["conv2d"]
ITEM = 4


def _se(n: int, cin: int, cout: int) -> dict:
    return dict(N=n, CIN=cin, COUT=cout, H=1, W=1, K=1, STRIDE=1, PAD=0, GROUPS=1)


def _batched_grid() -> list[dict]:
    return [p for p in CONV.shapes(False) if CONV.variant(p) == ("pointwise_1x1_map_batch",)]


def test_one_image_and_several_are_different_variants():
    assert CONV.variant(_se(1, 512, 128)) == ("pointwise_1x1_map",)
    assert CONV.variant(_se(8, 512, 128)) == ("pointwise_1x1_map_batch",)
    assert CONV.variant(_se(2, 16, 4)) == ("pointwise_1x1_map_batch",)
    assert CONV.variant(_se(8, 512, 128) | {"H": 2, "W": 2}) == ("pointwise",)


def test_the_full_grid_times_enough_batched_shapes_to_fit_their_cost_model():
    grid = _batched_grid()
    width = len(CONV.cost_terms(grid[0], ITEM))
    assert len(grid) >= width + 1
    # squeezing and expanding, and activations that do not grow with the weights alone
    assert any(p["CIN"] > p["COUT"] for p in grid) and any(p["CIN"] < p["COUT"] for p in grid)
    ratios = {p["CIN"] * p["COUT"] / (p["CIN"] + p["COUT"]) for p in grid}
    assert max(ratios) / min(ratios) > 10
    assert all(p["N"] > 1 for p in grid)
    assert CONV.variant(_se(1, 512, 128)) in {CONV.variant(p) for p in CONV.shapes(False)}


def _profile(fixed_us: float):
    """Ceilings, and the full grid's SE shapes: one image at 8 us; several at ``fixed_us`` plus
    20 ps a FLOP."""
    records = [record("conv2d", 8e-3, **_se(1, 512, 128))]
    for p in _batched_grid():
        records.append(record("conv2d", (fixed_us * 1e-6 + 2e-11 * CONV.flops(p)) * 1e3, **p))
    return _ceilings(extra=records)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        return self.fc2(self.fc1(x))


@pytest.mark.parametrize("channels,squeezed", [(480, 20), (1152, 48), (96, 24)])
def test_a_batch_of_se_convs_is_priced_from_the_batched_entries_not_the_one_image_one(channels, squeezed):
    cal = _profile(fixed_us=50.0)
    mapper = CPUMapper(cal)
    for n, low, high in ((8, 45e-6, 80e-6), (1, 0.0, 10e-6)):
        part = partition(SqueezeExcite(channels, squeezed).eval(), torch.randn(n, channels, 1, 1), cal)
        convs = [k for sg in mapper.estimate(part).subgraphs for k in sg.kernels if k.operation == "conv2d"]
        assert len(convs) == 2
        for conv in convs:
            assert low < conv.seconds < high, (n, conv.name, conv.seconds, conv.source)
        if n == 8:
            assert all("fitted to 5 calibrated shapes" in c.source for c in convs), [c.source for c in convs]


def test_the_batched_se_shapes_get_no_cold_twin():
    cold = OPERATIONS["conv2d_cold"]
    assert not [p for p in cold.shapes(False) if cold.variant(p) == ("pointwise_1x1_map_batch",)]
    assert _se(1, 512, 128) in list(cold.shapes(False))  # the one-image SE conv keeps its twin
    assert len(cold.shapes(False)) == len(CONV.shapes(False)) - len(_batched_grid())


def test_a_batched_se_conv_is_not_priced_per_evicted_byte_from_twins_timed_cold():
    """A profile from before NOT_COLD has twins of the batched shapes, whose cold time over warm
    is the call's fixed cost after a flush (here 60 us on a few KB): a forward's SE conv keeps its
    warm time, while a one-image SE conv with its twin still pays for what the forward evicts."""
    twins = [record("conv2d_cold", (110e-6 + 2e-11 * CONV.flops(p)) * 1e3, **p) for p in _batched_grid()]
    twins.append(record("conv2d_cold", 40e-3, **_se(1, 512, 128)))
    mapper = CPUMapper(_ceilings(extra=[*twins, record("conv2d", 8e-3, **_se(1, 512, 128)),
                                        *(record("conv2d", (50e-6 + 2e-11 * CONV.flops(p)) * 1e3, **p)
                                          for p in _batched_grid())]))
    part = partition(SqueezeExcite(480, 20).eval(), torch.randn(8, 480, 1, 1), mapper.calibration)
    nodes = [n for sg in part.subgraphs for n in sg.nodes if n.operation == "conv2d"]
    assert nodes and all(mapper._cold_factor(n, reuse_bytes=1 << 30) == 1.0 for n in nodes)
    one = partition(SqueezeExcite(512, 128).eval(), torch.randn(1, 512, 1, 1), mapper.calibration)
    fc1 = next(n for sg in one.subgraphs for n in sg.nodes if n.operation == "conv2d")
    assert mapper._cold_factor(fc1, reuse_bytes=1 << 30) > 2.0
