"""A call's code fetched again after the forward's traffic since the last call of its kind."""

import dataclasses
import math

import pytest
import torch
from factories import record
from test_llc_operands import PRIVATE, _profile, _reread
from torch import nn

from calibration.measure.kernels import AfterEvictKernel, _after_evict, tiny_call
from calibration.predict.mapper import CPUMapper, predict_latency
from calibration.predict.plan import partition
from calibration.specs.operations import AFTER_EVICT_KINDS, OPERATIONS


def _evict(us_by_kind, warm_us=5.0):
    """after_evict records: {op kind: us over the repeated call}."""
    return [dataclasses.replace(record("after_evict", (warm_us + us) / 1e3, op=kind), warm_ms=warm_us / 1e3)
            for kind, us in us_by_kind.items()]


def test_every_kind_has_a_case_in_both_grids_and_a_tiny_call():
    for quick in (False, True):
        kinds = [c.param_dict["op"] for c in OPERATIONS["after_evict"].cases(quick=quick, device="cpu")]
        assert kinds == list(AFTER_EVICT_KINDS)
    assert OPERATIONS["after_evict"].cases(quick=False, device="cuda") == []
    assert set(AFTER_EVICT_KINDS) <= set(OPERATIONS)  # kinds are registry operations: a forward's calls key by them
    with torch.inference_mode():
        for kind in AFTER_EVICT_KINDS:
            out = tiny_call(kind, torch.device("cpu"))()
            assert isinstance(out, torch.Tensor) and out.numel() <= 1024


def test_a_kind_without_a_tiny_call_and_a_gpu_are_refused_by_name():
    with pytest.raises(ValueError, match="after_evict op 'conv3d'; kinds: conv2d, linear"):
        tiny_call("conv3d", torch.device("cpu"))
    with pytest.raises(ValueError, match="CPU only"):
        _after_evict({"op": "relu"}, "float32", torch.device("meta"))
    kernel = _after_evict({"op": "relu"}, "float32", torch.device("cpu"))
    assert isinstance(kernel, AfterEvictKernel) and kernel.other.numel() * 4 >= 4 << 20 // 4
    kernel.prepare()
    assert kernel.time_warm() > 0


def test_the_profile_gives_each_kind_its_cost_over_the_repeated_call_never_below_zero():
    cal = _profile(extra=_evict({"batchnorm": 40.0, "relu": 8.0, "add": -2.0}))
    assert cal.after_evict_us() == pytest.approx({"batchnorm": 40.0, "relu": 8.0, "add": 0.0})
    assert _profile().after_evict_us() == {}


def _bn_relu_bn():
    torch.manual_seed(0)
    return nn.Sequential(nn.BatchNorm2d(64), nn.ReLU(), nn.BatchNorm2d(64)).eval()


def test_each_call_pays_its_kind_s_cost_for_the_share_the_traffic_since_its_last_call_evicted():
    # lost: 10% after half the private caches' bytes, 40% after as many, all after 4x
    losses = _reread({PRIVATE // 2: 2.0, PRIVATE: 8.0, 2 * PRIVATE: 8.0, 4 * PRIVATE: 20.0})
    cal = _profile(extra=[*losses, *_evict({"batchnorm": 40.0, "relu": 10.0})])
    mapper = CPUMapper(cal)
    x = torch.randn(1, 64, 32, 32)  # 256 KiB: a call moves 512 KiB (in and out), half the private caches
    part = partition(_bn_relu_bn(), x, cal)
    kernels = [k for sg in mapper.estimate(part).subgraphs for k in sg.kernels]
    moved = [n.bytes for sg in part.subgraphs for n in sg.nodes if n.kernel]
    assert len(kernels) == 3
    # the second batch norm: the ReLU between (512 KiB, half the private caches: 10% lost); the
    # first follows the second of the forward before, nothing between; the ReLU, called once,
    # sees the rest of the forward (both batch norms, 1 MiB: 40%)
    share = mapper._private_share_lost
    assert share(moved[1]) == pytest.approx(0.1) and share(moved[0] + moved[2]) == pytest.approx(0.4, rel=0.01)
    assert kernels[2].refetch_seconds == pytest.approx(40e-6 * share(moved[1]))
    assert kernels[0].refetch_seconds == 0.0
    assert kernels[1].refetch_seconds == pytest.approx(10e-6 * share(moved[0] + moved[2]))
    estimate = mapper.estimate(part)
    assert estimate.refetch_ms == pytest.approx(sum(k.refetch_seconds for k in kernels) * 1e3)
    assert "code the forward's traffic evicted" in estimate.table()
    assert "for its code after 0.524 MB of other calls" in kernels[2].source


def test_a_kind_no_probe_covers_pays_the_probes_median_and_says_so():
    cal = _profile(extra=[*_reread({PRIVATE: 8.0, 4 * PRIVATE: 20.0}), *_evict({"relu": 10.0, "add": 30.0})])
    estimate = predict_latency(_bn_relu_bn(), torch.randn(1, 64, 32, 32), cal)
    bn = estimate.subgraphs[2].kernels[0]
    # the median of 10 and 30 us, for the ReLU's half of the private caches (0.4 lost at all of them)
    assert bn.refetch_seconds == pytest.approx(20e-6 * 0.2, rel=1e-6)
    assert any("after_evict probes do not cover pay the probes' median" in note for note in estimate.notes)
    # no probes, or no cache sizes to say what the traffic evicts: no term
    assert predict_latency(_bn_relu_bn(), torch.randn(1, 64, 32, 32), _profile()).refetch_ms == 0.0
    no_sizes = _profile(cache_sizes={}, extra=_evict({"relu": 10.0}))
    assert predict_latency(_bn_relu_bn(), torch.randn(1, 64, 32, 32), no_sizes).refetch_ms == 0.0


def test_the_cold_twin_s_added_time_leaves_out_what_its_code_cost_it():
    params = dict(B=1, IN=1024, OUT=1024)
    base = [record("linear", 0.1, **params),
            dataclasses.replace(record("linear_cold", 0.3, **params), warm_ms=0.1)]
    cal = _profile(cache_sizes={"L2": 512 << 10, "L3": 1024}, extra=base)
    with_probe = _profile(cache_sizes={"L2": 512 << 10, "L3": 1024}, extra=[*base, *_evict({"linear": 50.0})])
    node = [n for sg in partition(nn.Sequential(nn.Linear(1024, 1024)).eval(), torch.randn(1, 1024)).subgraphs
            for n in sg.nodes if n.kernel][0]
    # 0.2 ms added by the cold call; 0.05 of it the code's: 0.15 left for the evicted bytes
    assert CPUMapper(cal)._cold_factor(node, reuse_bytes=10**9, warm_seconds=1e-4) == pytest.approx(3.0)
    assert CPUMapper(with_probe)._cold_factor(node, reuse_bytes=10**9, warm_seconds=1e-4) == pytest.approx(2.5)


def _busy(points, warm_us=20.0):
    """after_busy records: {matmul N: {probe: us over the warm call}}."""
    return [dataclasses.replace(record("after_busy", (warm_us + us) / 1e3, N=n, probe=probe),
                                warm_ms=warm_us / 1e3, preceding_ms=n**3 / 1e8)
            for n, by_probe in points.items() for probe, us in by_probe.items()]


def test_what_a_matmul_takes_is_the_data_probes_median_share_of_the_largest_by_its_operands_bytes():
    cal = _profile(extra=_busy({
        128: {"view": 50.0, "relu_inplace": 1.0, "add": 2.0, "batch_norm": 3.0},  # the view is left out
        384: {"relu_inplace": 10.0, "add": 40.0, "batch_norm": 40.0},
        512: {"relu_inplace": 30.0, "add": 35.0, "batch_norm": 70.0},  # 35 of 100, less than at 384: held
        1024: {"relu_inplace": 100.0, "add": 100.0, "batch_norm": 100.0}}))
    assert cal.busy_losses() == [(3 * 128**2 * 4, pytest.approx(0.02)), (3 * 384**2 * 4, pytest.approx(0.4)),
                                 (3 * 512**2 * 4, pytest.approx(0.4)), (3 * 1024**2 * 4, 1.0)]
    assert _profile(extra=_busy({128: {"add": 5.0}})).busy_losses() == []  # one size: no curve
    assert _profile(extra=_busy({128: {"add": 5.0}, 256: {"add": -1.0}})).busy_losses() == []  # nothing lost
    assert _profile().busy_losses() == []


def test_compute_bound_calls_take_through_the_matmul_points_and_streaming_ones_through_the_reread_points():
    losses = _reread({PRIVATE: 8.0, 4 * PRIVATE: 20.0})  # 40% lost to as many bytes as the private caches
    busy = _busy({128: {"batch_norm": 10.0}, 512: {"batch_norm": 100.0}})  # 10% at 196 KiB, all at 3 MiB
    mapper = CPUMapper(_profile(extra=[*losses, *busy]))
    reread = mapper._private_share_lost
    assert mapper._share_taken(0, PRIVATE) == pytest.approx(0.4) == pytest.approx(reread(PRIVATE))
    assert mapper._share_taken(3 * 128**2 * 4, 0) == pytest.approx(0.1)
    assert mapper._share_taken(3 * 128**2 * 4 // 2, 0) == pytest.approx(0.05)  # below the first point: to 0
    assert mapper._share_taken(3 * 512**2 * 4, 0) == 1.0
    # each keeps what the other left
    assert mapper._share_taken(3 * 128**2 * 4, PRIVATE) == pytest.approx(1 - 0.9 * 0.6)
    assert mapper._share_taken(0, 0) == 0.0
    # without after_busy probes every byte goes through the reread points
    plain = CPUMapper(_profile(extra=losses))
    assert plain._share_taken(PRIVATE // 2, PRIVATE // 2) == pytest.approx(plain._private_share_lost(PRIVATE))


def test_a_batch_norm_after_a_conv_pays_the_conv_s_bytes_through_the_matmul_points():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(64), nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)).eval()
    x = torch.randn(1, 64, 32, 32)
    losses = _reread({PRIVATE: 8.0, 4 * PRIVATE: 20.0})
    busy = _busy({128: {"batch_norm": 10.0}, 512: {"batch_norm": 100.0}})
    conv = record("conv2d", 1.0, N=1, CIN=64, COUT=64, H=32, W=32, K=3, STRIDE=1, PAD=1, GROUPS=1)
    cal = _profile(extra=[*losses, *busy, conv, *_evict({"batchnorm": 40.0, "conv2d": 30.0})])
    part = partition(model, x, cal)
    kernels = [k for sg in CPUMapper(cal).estimate(part).subgraphs for k in sg.kernels]
    nodes = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    assert kernels[1].bottleneck.value == "compute" and kernels[2].bottleneck.value == "memory"
    mapper = CPUMapper(cal)
    # the second batch norm: the conv between, compute-bound, through the matmul points
    assert kernels[2].refetch_seconds == pytest.approx(40e-6 * mapper._share_taken(nodes[1].bytes, 0))
    low, high = 3 * 128**2 * 4, 3 * 512**2 * 4
    t = math.log(nodes[1].bytes / low) / math.log(high / low)
    assert mapper._share_taken(nodes[1].bytes, 0) == pytest.approx(0.1 + 0.9 * t)
    assert mapper._share_taken(nodes[1].bytes, 0) > 1.5 * mapper._private_share_lost(nodes[1].bytes)
    # the conv, called once, sees both batch norms (streaming) through the reread points
    assert kernels[1].refetch_seconds == pytest.approx(30e-6 * mapper._share_taken(0, nodes[0].bytes + nodes[2].bytes))


def test_a_composite_module_s_calls_pay_inside_it_for_the_call_before_and_for_their_code():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, dropout=0.0)
    encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    x = torch.randn(1, 16, 64)
    losses = _reread({PRIVATE // 8: 1.0, PRIVATE: 8.0, 4 * PRIVATE: 20.0})
    probes = _evict({"linear": 30.0, "layernorm": 20.0, "add": 5.0, "relu": 5.0, "softmax": 10.0})
    cal = _profile(extra=[*losses, *probes])
    part = partition(nn.Sequential(encoder).eval(), x, cal)  # a submodule: fx keeps it one node
    (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.module == "TransformerEncoder"]
    assert len([k for k in node.inner if k.kernel]) > 10
    mapper = CPUMapper(cal)
    inside = mapper._inside(node)
    parts = sum(mapper._kernel(k).seconds for k in node.inner)
    # its calls, in a loop of forwards, find their code taken by the others: more than their parts
    assert inside.refetch_seconds > 0
    assert inside.seconds == pytest.approx(parts + inside.refetch_seconds + inside.after_busy_seconds)
    assert "us for their code" in inside.source
    # without probes the same kernels cost their parts alone
    plain = CPUMapper(_profile(extra=losses))._inside(node)
    assert plain.refetch_seconds == 0.0 and plain.seconds == pytest.approx(parts)
    # and the forward's total carries them in its breakdown
    estimate = mapper.estimate(part)
    assert estimate.refetch_ms >= inside.refetch_seconds * 1e3


def test_a_fused_kernel_priced_from_its_parts_pays_nothing_inside():
    class Attend(nn.Module):
        def forward(self, q):
            return nn.functional.scaled_dot_product_attention(q, q, q)

    q = torch.randn(1, 4, 16, 32)
    cal = _profile(extra=[*_reread({PRIVATE: 8.0, 4 * PRIVATE: 20.0}), *_evict({"bmm": 30.0, "softmax": 10.0})])
    part = partition(Attend().eval(), q, cal)
    (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.inner]
    inside = CPUMapper(cal)._inside(node)
    assert inside.refetch_seconds == 0.0 and inside.after_busy_seconds == 0.0
