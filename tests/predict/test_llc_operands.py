"""Operands a forward leaves in the LLC that a benchmark keeps in the cores' own caches."""

import dataclasses
import math

import pytest
import torch
from factories import metadata, record
from torch import nn

from calibration.measure.fold import fold
from calibration.measure.harness import latency_from_samples
from calibration.predict.mapper import CPUMapper, GPUMapper, predict_latency
from calibration.predict.plan import partition

CACHES = {"L1": 32 << 10, "L2": 512 << 10, "L3": 32 << 20}  # two threads: 1 MiB of private caches
PRIVATE = 2 * (512 << 10)


def _triad(n: int, gbps: float):
    return record("stream_triad", 3 * 4 * n / (gbps * 1e9) * 1e3, n=n)


def _profile(cache_sizes=CACHES, sweep=((1 << 14, 150.0), (1 << 20, 50.0), (1 << 24, 20.0)), extra=()):
    """Ceilings and a triad sweep: 192 KiB at 150 GB/s (the L2s), 12 MiB at 50 (the LLC), 192 MiB at 20."""
    records = [record("matmul", 2 * 1024**3 / 100e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
               record("dispatch", 0.002, n=1), *(_triad(n, gbps) for n, gbps in sweep), *extra]
    return fold(records, metadata(cache_sizes=cache_sizes))


def test_a_working_set_the_l2s_held_pays_the_llc_rate_less_the_rate_it_was_benchmarked_at():
    mapper = CPUMapper(_profile())
    assert mapper._private_caches()[:2] == (PRIVATE, 50.0)
    nbytes = 12 * (1 << 14)  # the 150 GB/s point's own working set
    # a forward that touches far more than the private caches evicts all of it
    assert mapper._from_the_llc_seconds(nbytes, 1 << 40) == pytest.approx(nbytes * (1 / 50 - 1 / 150) / 1e9)
    # one that touches as much as they hold evicts 1 - 1/e of it
    assert mapper._from_the_llc_seconds(nbytes, PRIVATE) == pytest.approx(
        (1 - math.exp(-1)) * nbytes * (1 / 50 - 1 / 150) / 1e9)
    # an MLP whose forward fits the L2s keeps most of its working set there
    assert mapper._from_the_llc_seconds(nbytes, PRIVATE // 10) < 0.1 * mapper._from_the_llc_seconds(nbytes, 1 << 40)


def test_a_working_set_past_the_private_caches_was_benchmarked_from_the_llc_already():
    mapper = CPUMapper(_profile())
    assert mapper._from_the_llc_seconds(PRIVATE + 1, 1 << 40) == 0.0
    assert mapper._from_the_llc_seconds(PRIVATE, 1 << 40) > 0.0


def test_nothing_is_added_without_the_caches_or_the_sweep_to_price_it():
    assert CPUMapper(_profile(cache_sizes={}))._from_the_llc_seconds(1 << 16, 1 << 40) == 0.0
    assert CPUMapper(_profile(cache_sizes={"L3": 32 << 20}))._from_the_llc_seconds(1 << 16, 1 << 40) == 0.0
    # no sweep point past the private caches: no LLC rate
    only_small = _profile(sweep=((1 << 10, 10.0), (1 << 14, 150.0)))
    assert CPUMapper(only_small)._from_the_llc_seconds(1 << 16, 1 << 40) == 0.0
    # a GPU's profile records its host's CPU caches: nothing of them applies to its kernels
    assert GPUMapper(_profile())._from_the_llc_seconds(1 << 16, 1 << 40) == 0.0
    # without a forward's footprint (allocations not recorded) nothing is known of what it evicts
    assert CPUMapper(_profile())._from_the_llc_seconds(1 << 16, None) == 0.0
    # a size the sweep ran slower than the LLC (call-bound, 4 Ki elements at 10 GB/s) is no cache's rate
    call_bound = _profile(sweep=((1 << 10, 10.0), (1 << 14, 150.0), (1 << 20, 50.0)))
    assert CPUMapper(call_bound)._from_the_llc_seconds(12 * (1 << 10), 1 << 40) == 0.0


def test_a_forward_adds_it_to_each_kernel_and_reports_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(), nn.Sigmoid()).eval()
    x = torch.randn(64, 256)  # 64 KiB in, 64 KiB out: well inside the private caches
    cal = _profile(extra=[record("relu", 0.004, n=64 * 256), record("sigmoid", 0.006, n=64 * 256)])
    estimate = predict_latency(model, x, cal)
    kernels = [k for sg in estimate.subgraphs for k in sg.kernels]
    assert [k.operation for k in kernels] == ["relu", "sigmoid"]
    assert all(k.from_llc_seconds > 0 for k in kernels)
    assert all("for operands found in the LLC" in k.source for k in kernels)
    assert estimate.from_llc_ms == pytest.approx(sum(k.from_llc_seconds for k in kernels) * 1e3)
    # each kernel: its calibrated time plus the term at its own working set and the forward's footprint
    footprint = partition(model, x, cal).footprint_bytes()
    assert kernels[0].from_llc_seconds == pytest.approx(
        CPUMapper(cal)._from_the_llc_seconds(2 * 64 * 256 * 4, footprint))
    assert "operands the forward leaves in the LLC" in estimate.table()


def _reread(points_us, warm_us=10.0):
    """reread records: {bytes read between calls: us over the warm twin}."""
    return [dataclasses.replace(record("reread", (warm_us + us) / 1e3, IN=512, OUT=64, between=between),
                                warm_ms=warm_us / 1e3) for between, us in points_us.items()]


def test_the_share_the_private_caches_lose_is_read_off_the_reread_points():
    # lost: 10% of it after half the private caches' bytes, 40% after as many, all after 4x
    cal = _profile(extra=_reread({PRIVATE // 2: 2.0, PRIVATE: 8.0, 2 * PRIVATE: 6.0, 4 * PRIVATE: 20.0}))
    # a running maximum: 2x lost no less than 1x, whatever its median said
    losses = cal.private_cache_losses()
    assert [b for b, _ in losses] == [PRIVATE // 2, PRIVATE, 2 * PRIVATE, 4 * PRIVATE]
    assert [s for _, s in losses] == pytest.approx([0.1, 0.4, 0.4, 1.0])
    mapper = CPUMapper(cal)
    assert mapper._private_share_lost(PRIVATE // 4) == pytest.approx(0.05)  # from none at 0 to the first point
    assert mapper._private_share_lost(PRIVATE) == pytest.approx(0.4)
    assert mapper._private_share_lost(3 * PRIVATE) == pytest.approx(0.4 + 0.6 * math.log(1.5) / math.log(2))
    assert mapper._private_share_lost(64 * PRIVATE) == 1.0
    nbytes = 12 * (1 << 14)
    assert mapper._from_the_llc_seconds(nbytes, PRIVATE) == pytest.approx(0.4 * nbytes * (1 / 50 - 1 / 150) / 1e9)
    # random replacement would have lost 1 - 1/e of it
    assert CPUMapper(_profile())._from_the_llc_seconds(nbytes, PRIVATE) > 1.5 * mapper._from_the_llc_seconds(
        nbytes, PRIVATE)


def test_a_reread_that_keeps_its_working_set_in_some_rounds_and_loses_it_in_others_counts_its_mean():
    # after as many bytes as the private caches hold, 6 of 10 rounds keep the GEMV's weights
    # (+1 us) and 4 lose them all (+30): the median says +1, the share a call pays on average
    # is (6 * 1 + 4 * 30) / 10 = 12.6 of the 30 lost at 4x
    bimodal = [10.0 + us for us in (1.0,) * 6 + (30.0,) * 4]
    split = _reread({PRIVATE: 1.0, 4 * PRIVATE: 30.0})
    split[0] = dataclasses.replace(split[0], latency=latency_from_samples([us / 1e6 for us in bimodal]))
    assert split[0].latency.median_ms == pytest.approx(0.011)
    losses = _profile(extra=split).private_cache_losses()
    assert [s for _, s in losses] == pytest.approx([12.6 / 30, 1.0])


def test_reread_points_that_lost_nothing_at_the_most_give_no_curve():
    assert _profile(extra=_reread({PRIVATE: 3.0, 4 * PRIVATE: -1.0})).private_cache_losses() == []
    assert _profile(extra=_reread({4 * PRIVATE: 20.0})).private_cache_losses() == []
    # then random replacement stands in for them
    mapper = CPUMapper(_profile(extra=_reread({4 * PRIVATE: 20.0})))
    assert mapper._private_share_lost(PRIVATE) == pytest.approx(1 - math.exp(-1))


def test_show_lists_the_share_lost_by_the_bytes_read():
    from calibration.profile.summary import render_summary

    text = render_summary(_profile(extra=_reread({PRIVATE // 2: 2.0, PRIVATE: 8.0, 4 * PRIVATE: 20.0})))
    assert ("share of a working set the cores' own caches lose to other reads, by the bytes read: "
            "0.5 MiB 10%  1 MiB 40%  4 MiB 100%") in text
    assert "own caches lose" not in render_summary(_profile())
