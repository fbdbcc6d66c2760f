"""What a call's data pays for following a long kernel: the after_busy data probes, per MB."""

import dataclasses
import math

import pytest
import torch
from factories import record
from test_llc_operands import _profile
from torch import nn

from calibration.predict.mapper import CPUMapper
from calibration.predict.plan import partition
from calibration.profile.summary import render_summary
from calibration.specs.operations import AFTER_BUSY_PROBES, AFTER_BUSY_SHAPE


def _busy(points, warm_us=20.0):
    """after_busy records: {matmul N: {probe: us over the warm call}}, after N^3/1e8 ms."""
    return [dataclasses.replace(record("after_busy", (warm_us + us) / 1e3, N=n, probe=probe),
                                warm_ms=warm_us / 1e3, preceding_ms=n**3 / 1e8)
            for n, by_probe in points.items() for probe, us in by_probe.items()]


def _mb(probe: str) -> float:
    return AFTER_BUSY_PROBES[probe] * 4 * torch.Size(AFTER_BUSY_SHAPE).numel() / 1e6


def test_a_probe_s_data_costs_its_time_over_the_view_s_per_mb_the_median_over_probes_a_running_maximum():
    cal = _profile(extra=_busy({
        256: {"view": 2.0, "relu_inplace": 2.0 + 4 * _mb("relu_inplace"), "add": 2.0 + 8 * _mb("add"),
              "batch_norm": 2.0 + 30 * _mb("batch_norm")},  # 4, 8 and 30 us a MB: the median is 8
        512: {"view": 10.0, "batch_norm": 10.0 + 5 * _mb("batch_norm")},  # 5, less than at 256: held at 8
        1024: {"view": 30.0, "add": 30.0 + 40 * _mb("add")}}))
    assert cal.busy_data_costs() == [(pytest.approx(256**3 / 1e8), pytest.approx(8.0)),
                                     (pytest.approx(512**3 / 1e8), pytest.approx(8.0)),
                                     (pytest.approx(1024**3 / 1e8), pytest.approx(40.0))]


@pytest.mark.parametrize("points", [
    {256: {"view": 2.0, "add": 9.0}},  # one matmul size: no curve
    {256: {"add": 9.0}, 512: {"add": 30.0}},  # no view probe to take out
    {256: {"view": 2.0}, 512: {"view": 9.0}},  # no probe that moves data
])
def test_without_two_sizes_with_the_view_and_a_data_probe_there_is_no_data_cost(points):
    assert _profile(extra=_busy(points)).busy_data_costs() == []


def test_a_data_probe_faster_than_the_view_costs_nothing():
    cal = _profile(extra=_busy({256: {"view": 20.0, "add": 5.0}, 512: {"view": 20.0, "add": 20.0 + _mb("add")}}))
    assert cal.busy_data_costs()[0][1] == 0.0


def _conv_then_bn(channels=64, hw=64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)).eval()
    return model, torch.randn(1, channels, hw, hw)


def test_a_call_after_a_long_kernel_pays_per_mb_of_its_activations_not_of_a_conv_s_weights():
    model, x = _conv_then_bn()
    conv = record("conv2d", 5.0, N=1, CIN=64, COUT=64, H=64, W=64, K=3, STRIDE=1, PAD=1, GROUPS=1)
    busy = _busy({256: {"view": 1.0, "batch_norm": 1.0 + 2 * _mb("batch_norm")},
                  1024: {"view": 10.0, "batch_norm": 10.0 + 20 * _mb("batch_norm")}})
    cal = _profile(extra=[conv, *busy])
    part = partition(model, x, cal)
    nodes = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    conv_k, bn_k = [k for sg in CPUMapper(cal).estimate(part).subgraphs for k in sg.kernels]
    mapper = CPUMapper(cal)
    # the batch norm follows the conv: 5 ms, between the two matmuls (0.17 and 10.7 ms)
    conv_ms = (conv_k.seconds - conv_k.after_busy_seconds) * 1e3
    assert 0.168 < conv_ms < 10.7
    data_us = _on(cal, conv_ms) * nodes[1].bytes / 1e6
    assert data_us > 10.0
    assert bn_k.after_busy_seconds * 1e6 == pytest.approx(mapper._after_busy_seconds(conv_ms / 1e3) * 1e6 + data_us)
    assert f"({data_us:.1f} us of it for its data)" in bn_k.source
    # the conv follows the batch norm (a loop of forwards): for its input and output, not its weights
    weights = 64 * 64 * 9 * 4
    bn_ms = (bn_k.seconds - bn_k.after_busy_seconds) * 1e3
    expected = mapper._after_busy_seconds(bn_ms / 1e3) * 1e6 + _on(cal, bn_ms) * (nodes[0].bytes - weights) / 1e6
    assert conv_k.after_busy_seconds * 1e6 == pytest.approx(expected)
    # without the probes that move data, the view's time alone
    views = _busy({256: {"view": 1.0}, 1024: {"view": 10.0}})
    plain = [k for sg in CPUMapper(_profile(extra=[conv, *views])).estimate(part).subgraphs for k in sg.kernels]
    assert plain[1].after_busy_seconds * 1e6 == pytest.approx(mapper._after_busy_seconds(conv_ms / 1e3) * 1e6)


def _on(cal, ms: float) -> float:
    """The profile's us per MB at ``ms``, by hand: log-linear between the two points, scaled below."""
    (lo_ms, lo), (hi_ms, hi) = cal.busy_data_costs()
    if ms >= hi_ms:
        return hi
    if ms <= lo_ms:
        return lo * ms / lo_ms
    return lo + (hi - lo) * math.log(ms / lo_ms) / math.log(hi_ms / lo_ms)


def test_the_data_a_call_pays_for_is_at_most_what_the_llc_holds_and_less_what_finding_it_there_cost():
    busy = _busy({256: {"view": 1.0, "add": 1.0 + 2 * _mb("add")}, 1024: {"view": 10.0, "add": 10.0 + 20 * _mb("add")}})
    mapper = CPUMapper(_profile(extra=busy))
    mapper._llc = (8 << 20, "the test's")
    assert mapper._busy_data_seconds(0.1, 64 << 20) == pytest.approx(20.0 * (8 << 20) / 1e6 / 1e6)
    assert mapper._busy_data_seconds(0.1, 4 << 20) == pytest.approx(20.0 * (4 << 20) / 1e6 / 1e6)
    assert mapper._busy_data_seconds(0.1, 0) == 0.0
    # without the probes nothing
    assert CPUMapper(_profile())._busy_data_seconds(0.1, 4 << 20) == 0.0


def test_show_lists_the_data_cost_by_the_kernel_s_time():
    busy = _busy({256: {"view": 1.0, "add": 1.0 + 2 * _mb("add")}, 1024: {"view": 10.0, "add": 10.0 + 20 * _mb("add")}})
    text = render_summary(_profile(extra=busy))
    assert "... and for its data, us per MB it moves, by the kernel's time: 0.168 ms 2.0  10.7 ms 20.0" in text
