"""A call's code fetched again after the forward's traffic since the last call of its kind."""

import dataclasses

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
