"""A forward's weights lose to the time between two of their calls, not only to its bytes."""

import dataclasses
import math
import time

import pytest
import torch
from factories import latency, metadata, record
from test_mapper import ceilings
from torch import nn

from calibration.measure.fold import Record, fold
from calibration.measure.kernels import AfterWaitKernel, _after_wait, build
from calibration.predict.mapper import CPUMapper, predict_latency
from calibration.predict.plan import partition
from calibration.specs import host
from calibration.specs.operations import AFTER_WAIT_MIN_BYTES, AFTER_WAIT_MS, OPERATIONS, Case, after_wait_sizes

GEMV = {"IN": 1024, "OUT": 4096}


def _wait(after: str, ms: int, added_us: float, warm_us: float = 300.0, *, outlier_us: float = 0.0,
          out: int = GEMV["OUT"]) -> Record:
    """An after_wait record of a 1024 x ``out`` GEMV: its rounds' median ``added_us`` over its
    warm twin, one round of ten ``outlier_us`` slower still (the host holding it up)."""
    median = (warm_us + added_us) / 1e3
    samples = [median] * 9 + [median + outlier_us / 1e3]
    stats = latency(median).model_copy(update={"samples_ms": samples, "mean_ms": sum(samples) / len(samples)})
    return Record(Case("after_wait", tuple({**GEMV, "OUT": out, "after": after, "ms": ms}.items()), "float32", "cpu"),
                  stats, warm_ms=warm_us / 1e3)


def _waits(added_by_ms: dict[int, float], flushed_us: float | None = 300.0, out: int = GEMV["OUT"]) -> list[Record]:
    records = [_wait("wait", ms, us, out=out) for ms, us in added_by_ms.items()]
    return records + ([_wait("flush", 0, flushed_us, out=out)] if flushed_us is not None else [])


def _conv(extra=(), llc: int = 64 << 20, cold_ms: float = 2.0):
    """A 64-channel 3x3 conv at 1 ms warm and ``cold_ms`` cold, an LLC of ``llc`` bytes."""
    params = dict(N=1, CIN=64, COUT=64, H=32, W=32, K=3, STRIDE=1, PAD=1, GROUPS=1)
    records = [record("conv2d", 1.0, **params), record("conv2d_cold", cold_ms, **params), *extra]
    return fold(ceilings() + records, metadata(cache_sizes={"L1": 32 << 10, "L2": 1 << 20, "L3": llc})), params


def test_every_wait_and_the_flush_time_gemvs_of_two_sizes_past_the_private_caches_quick_or_full():
    private = host.private_cache_bytes(host.cache_sizes(), host.usable_cpus()) or host.usable_cpus() << 20
    small, large = after_wait_sizes()
    row = 1024 * 4
    assert small * row >= 2 * private - row  # twice the cores' own caches: past the L2s
    assert large * row >= max(4 * private, AFTER_WAIT_MIN_BYTES) - row  # and 16 MiB at least
    for quick in (False, True):
        shapes = OPERATIONS["after_wait"].shapes(quick)
        assert len(shapes) == 2 * (len(AFTER_WAIT_MS) + 1)
        for out in (small, large):
            ladder = [p for p in shapes if p["OUT"] == out]
            assert [p["ms"] for p in ladder if p["after"] == "wait"] == list(AFTER_WAIT_MS)
            assert [p for p in ladder if p["after"] == "flush"]
    assert OPERATIONS["after_wait"].cases(quick=False, device="cuda") == []
    assert OPERATIONS["after_wait"].family == "sequence"


def test_a_wait_case_spends_its_wait_touching_nothing_and_the_flush_case_writes_the_llc_flush():
    small = {"IN": 64, "OUT": 64}
    waiting = build(Case("after_wait", tuple({**small, "after": "wait", "ms": 3}.items()), "float32", "cpu"))
    assert isinstance(waiting, AfterWaitKernel) and waiting.flush is None and "3 ms" in waiting.context
    began = time.perf_counter()
    waiting.prepare()
    assert time.perf_counter() - began >= 3e-3  # a spin on the clock: never shorter than the wait
    assert waiting().shape == (1, 64) and waiting.time_warm() > 0
    flushing = build(Case("after_wait", tuple({**small, "after": "flush", "ms": 0}.items()), "float32", "cpu"))
    assert flushing.flush is not None and flushing.flush.numel() * 4 >= (host.last_level_cache() or 0)
    assert "flushed" in flushing.context
    before = flushing.flush[:8].clone()
    flushing.prepare()
    assert torch.equal(flushing.flush[:8], before + 1)  # the cold twins' write over the LLC
    build(Case("relu", (("n", 64),), "float32", "cpu"))  # the next case gives the flush buffer back


@pytest.mark.parametrize("params, named", [
    ({"after": "nap", "ms": 1}, "'after' is 'wait' or 'flush'; got 'nap'"),
    ({"after": "wait", "ms": -2}, "'ms' is the milliseconds waited, >= 0; got -2"),
])
def test_a_bad_wait_is_refused_by_name(params, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        _after_wait({"IN": 64, "OUT": 64, **params}, "float32", torch.device("cpu"))
    with pytest.raises(ValueError, match="CPU only"):
        _after_wait({"IN": 64, "OUT": 64, "after": "wait", "ms": 1}, "float32", torch.device("meta"))


def test_the_share_lost_is_each_wait_s_median_added_time_over_the_flush_s_a_running_maximum_at_most_1():
    cal, _ = _conv(_waits({1: 15.0, 5: 60.0, 10: 45.0, 20: 150.0, 50: 450.0}))
    assert cal.wait_losses() == [(1.0, pytest.approx(0.05)), (5.0, pytest.approx(0.2)),
                                 (10.0, pytest.approx(0.2)),  # 10 ms lost no less than 5
                                 (20.0, pytest.approx(0.5)), (50.0, 1.0)]  # slower than a flush: all of it
    # the median of the rounds: one round the host held up 700 us moves no share
    held_up, _ = _conv([_wait("wait", 2, 30.0, outlier_us=700.0), _wait("wait", 20, 150.0),
                        _wait("flush", 0, 300.0, outlier_us=700.0)])
    assert held_up.wait_losses() == [(2.0, pytest.approx(0.1)), (20.0, pytest.approx(0.5))]


def test_each_size_s_shares_stand_on_the_median_of_its_warm_twins_not_the_flushed_case_s_own():
    # the flushed case's twin, right after the flush's writes, ran 500 us where the waits' ran 300
    waits = [_wait("wait", 2, 30.0), _wait("wait", 20, 150.0), _wait("wait", 50, 240.0)]
    flushed = dataclasses.replace(_wait("flush", 0, 300.0), warm_ms=0.5)
    cal, _ = _conv([*waits, flushed])
    # against 300 us warm: the flush added 300, the waits 30, 150 and 240 (not 300 over a 500 us twin: 3x)
    assert cal.wait_losses() == [(2.0, pytest.approx(0.1)), (20.0, pytest.approx(0.5)), (50.0, pytest.approx(0.8))]


@pytest.mark.parametrize("added_by_ms, flushed", [
    ({1: 15.0, 5: 60.0}, None),  # nothing to take a share of
    ({1: 15.0, 5: 60.0}, -5.0),  # the flush lost nothing: a GEMV past the LLC
    ({5: 60.0}, 300.0),  # one wait: no curve
])
def test_without_a_flush_that_lost_something_or_two_waits_there_is_no_curve(added_by_ms, flushed):
    cal, _ = _conv(_waits(added_by_ms, flushed))
    assert cal.wait_losses() == []


def test_the_share_over_time_is_linear_in_log_ms_scaled_to_zero_below_and_held_beyond():
    cal, _ = _conv(_waits({2: 30.0, 20: 150.0}))
    mapper = CPUMapper(cal)
    assert mapper._wait_share(1e-3) == pytest.approx(0.05)  # half the first wait: half its share
    assert mapper._wait_share(20e-3 / math.sqrt(10)) == pytest.approx(0.3)  # halfway in log time
    assert mapper._wait_share(1.0) == pytest.approx(0.5)
    assert mapper._wait_share(0.0) == 0.0
    assert CPUMapper(_conv()[0])._wait_share(1.0) == 0.0  # a profile without after_wait cases


def test_each_gemv_size_has_its_curve_and_the_share_is_linear_in_log_bytes_between_them():
    small = _waits({2: 20.0, 20: 150.0}, flushed_us=200.0, out=1024)  # 4 MiB: 10% after 2 ms, 75% after 20
    large = _waits({2: 240.0, 20: 300.0}, flushed_us=300.0)  # 16 MiB: 80% and all of it
    cal, _ = _conv(small + large)
    assert cal.wait_loss_curves() == [(4 << 20, [(2.0, pytest.approx(0.1)), (20.0, pytest.approx(0.75))]),
                                      (16 << 20, [(2.0, pytest.approx(0.8)), (20.0, pytest.approx(1.0))])]
    assert cal.wait_losses() == cal.wait_loss_curves()[-1][1]  # the largest set's
    mapper = CPUMapper(cal)
    assert mapper._wait_share(2e-3, 4 << 20) == pytest.approx(0.1)
    assert mapper._wait_share(2e-3, 8 << 20) == pytest.approx(0.45)  # halfway in log bytes
    assert mapper._wait_share(2e-3, 1 << 20) == pytest.approx(0.1)  # held below the smallest
    assert mapper._wait_share(2e-3, 1 << 30) == pytest.approx(0.8)  # and beyond the largest
    assert mapper._wait_share(2e-3) == pytest.approx(0.8)  # no working set: the largest's


def test_a_larger_working_set_loses_no_less_than_a_smaller_one_to_the_same_wait():
    # the 16 MiB ladder read less than the 4 MiB one after 2 ms (a quiet moment on the host)
    cal, _ = _conv(_waits({2: 100.0, 20: 200.0}, 200.0, out=1024) + _waits({2: 60.0, 20: 300.0}))
    mapper = CPUMapper(cal)
    assert mapper._wait_share(2e-3, 4 << 20) == pytest.approx(0.5)
    assert mapper._wait_share(2e-3, 16 << 20) == pytest.approx(0.5)
    assert mapper._wait_share(2e-3, 8 << 20) == pytest.approx(0.5)


def test_a_small_forward_s_weights_lose_the_small_ladder_s_share_to_the_same_time():
    params = dict(N=1, CIN=64, COUT=64, H=32, W=32, K=3, STRIDE=1, PAD=1, GROUPS=1)
    node = partition(nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False)).eval(),
                     torch.randn(1, *[params[k] for k in ("CIN", "H", "W")]), _conv()[0]).subgraphs[0].nodes[0]
    one_size, _ = _conv(_waits({2: 240.0, 20: 300.0}))
    two_sizes, _ = _conv(_waits({2: 20.0, 20: 150.0}, 200.0, out=1024) + _waits({2: 240.0, 20: 300.0}))
    reuse = 1 << 20  # the rest of a forward touching 1 MiB: under the small ladder's 4 MiB
    by_large = CPUMapper(one_size)._cold_factor(node, reuse, warm_seconds=1e-3, since_seconds=2e-3)
    by_small = CPUMapper(two_sizes)._cold_factor(node, reuse, warm_seconds=1e-3, since_seconds=2e-3)
    bytes_share = 1 - math.exp(-reuse / (64 << 20))
    weights, output = 64 * 64 * 9 * 4, 64 * 32 * 32 * 4
    per_byte = 1e-3 / (weights + output)
    for factor, lost in ((by_large, 0.8), (by_small, 0.1)):
        weights_share = 1 - (1 - bytes_share) * (1 - lost)
        assert factor == pytest.approx(1 + per_byte * (weights * weights_share + output * bytes_share) / 1e-3)


def test_a_conv_s_weights_lose_to_the_time_since_its_last_call_its_output_does_not():
    cal, params = _conv(_waits({2: 30.0, 20: 150.0}))
    mapper = CPUMapper(cal)
    node = partition(nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False)).eval(),
                     torch.randn(1, 64, 32, 32), cal).subgraphs[0].nodes[0]
    reuse = 1 << 20  # evicts 1 - exp(-1/64) of a 64 MiB LLC
    bytes_share = 1 - math.exp(-reuse / (64 << 20))
    weights, output = 64 * 64 * 9 * 4, 64 * 32 * 32 * 4
    per_byte = 1e-3 / (weights + output)  # the cold twin adds 1 ms over the warm 1 ms
    without = mapper._cold_factor(node, reuse, warm_seconds=1e-3)
    assert without == pytest.approx(1 + per_byte * (weights + output) * bytes_share / 1e-3)
    # 20 ms later half of what the bytes left of its weights is gone too; its output keeps the bytes' share
    later = mapper._cold_factor(node, reuse, warm_seconds=1e-3, since_seconds=20e-3)
    weights_share = 1 - (1 - bytes_share) * (1 - 0.5)
    assert later == pytest.approx(1 + per_byte * (weights * weights_share + output * bytes_share) / 1e-3)
    assert mapper._cold_factor(node, reuse, warm_seconds=1e-3, since_seconds=0.0) == pytest.approx(without)
    assert mapper._cold_factor(node, None, warm_seconds=1e-3, since_seconds=20e-3) == 1.0  # a kernel alone


def _conv_then_slow_relus():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.ReLU(), nn.ReLU()).eval()


def test_a_forward_s_conv_pays_for_the_time_the_rest_of_the_forward_takes():
    relu = record("relu", 10.0, n=64 * 32 * 32)  # 10 ms each: the conv comes back 20 ms later
    x = torch.randn(1, 64, 32, 32)
    plain, _ = _conv([relu])
    timed, _ = _conv([relu, *_waits({2: 30.0, 20: 150.0})])
    conv_plain = predict_latency(_conv_then_slow_relus(), x, plain).subgraphs[0].kernels[0]
    conv_timed = predict_latency(_conv_then_slow_relus(), x, timed).subgraphs[0].kernels[0]
    assert conv_timed.cold_factor > conv_plain.cold_factor >= 1.0
    mapper = CPUMapper(timed)
    part = partition(_conv_then_slow_relus(), x, timed)
    conv, *relus = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    rest = sum(mapper._kernel(n).seconds for n in relus)
    assert rest == pytest.approx(20e-3, rel=0.01)  # the two relus, alone
    reuse = part.footprint_bytes() - 64 * 64 * 9 * 4
    assert conv_timed.cold_factor == pytest.approx(
        mapper._cold_factor(conv, reuse, warm_seconds=mapper._kernel(conv).seconds, since_seconds=rest))
    # a conv alone comes back right after itself: no time between
    alone = predict_latency(nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False)).eval(), x, timed)
    alone_plain = predict_latency(nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False)).eval(), x, plain)
    assert alone.subgraphs[0].kernels[0].cold_factor == pytest.approx(alone_plain.subgraphs[0].kernels[0].cold_factor)


def test_after_wait_records_are_no_after_busy_points():
    cal, _ = _conv([dataclasses.replace(r, preceding_ms=5.0) for r in _waits({2: 30.0, 20: 150.0})])
    assert cal.measured.after_busy == []
    assert len(cal.wait_losses()) == 2


def test_show_lists_the_share_lost_by_the_ms_waited():
    from calibration.profile.summary import render_summary

    cal, _ = _conv(_waits({2: 30.0, 20: 150.0, 50: 450.0}))
    assert "share of 16 MiB the LLC held lost to time alone, by the ms waited: 2 ms 10%  20 ms 50%  50 ms 100%" in (
        render_summary(cal))
    assert "lost to time alone" not in render_summary(_conv()[0])
