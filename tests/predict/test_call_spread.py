"""A forward pays each call's mean: the profile's mean over median by call time."""

import dataclasses
import math

import pytest
import torch
from factories import latency, metadata, record
from test_llc_operands import _triad
from torch import nn

from calibration.measure.fold import fold
from calibration.predict.mapper import CPUMapper
from calibration.predict.plan import partition
from calibration.profile.lookup import SPREAD_GROUP


def _spread(rec, ratio, source="pytest-benchmark"):
    """``rec`` with a mean ``ratio`` times its median."""
    stats = rec.latency
    return dataclasses.replace(rec, latency=stats.model_copy(update={"mean_ms": stats.median_ms * ratio,
                                                                     "source": source}))


def _adds(ms, ratios):
    """One add entry per ratio, all near ``ms`` (distinct sizes, one decade)."""
    first = int(ms * 1e6)  # a size of its own for each group's entries
    return [_spread(record("add", ms * (1 + i / 100), n=first + i), ratio) for i, ratio in enumerate(ratios)]


def _profile(records):
    return fold([record("matmul", 2 * 1024**3 / 100e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
                 _spread(record("dispatch", 0.002, n=1), 1.0), _triad(1 << 24, 20.0), *records], metadata())


def test_each_decade_of_call_time_gives_the_median_ratio_of_its_entries():
    short = _adds(0.005, [1.02, 1.04, 1.06, 1.08, 1.10, 1.50, 9.0, 1.05])  # 5 us: one outlier moves no median
    long = _adds(5.0, [1.01] * SPREAD_GROUP)  # 5 ms
    points = _profile([*short, *long]).call_spread()
    assert len(points) == 2
    (t_short, r_short), (t_long, r_long) = points
    # the 2 us dispatch joins the 5 us group (fewer than SPREAD_GROUP below its decade)
    assert r_short == pytest.approx(sorted([1.0, 1.02, 1.04, 1.06, 1.08, 1.10, 1.50, 9.0, 1.05])[4])
    # the 5 ms adds with the 21 ms matmul and the triad (means at their medians)
    assert 2e-6 < t_short < 5.1e-6 and 5e-3 < t_long < 21.5e-3
    assert r_long == pytest.approx(1.01)


def test_a_last_group_too_small_joins_the_one_before_and_too_few_entries_give_none():
    points = _profile([*_adds(0.005, [1.05] * SPREAD_GROUP), *_adds(5.0, [1.01] * 2)]).call_spread()
    assert len(points) == 1 and points[0][1] == pytest.approx(1.05)
    # with the dispatch, the matmul and the triad: one entry short of a group
    assert _profile(_adds(0.005, [1.05] * (SPREAD_GROUP - 4))).call_spread() == []


def test_context_cases_busy_and_re_timed_entries_stand_for_no_call():
    base = _adds(0.005, [1.05] * SPREAD_GROUP)
    cold = _spread(record("linear_cold", 0.5, B=1, IN=1024, OUT=1024), 3.0)
    probe = dataclasses.replace(_spread(record("after_evict", 0.02, op="relu"), 5.0), warm_ms=0.01)
    faults = _spread(record("fill_fresh", 0.5, n=1 << 20), 5.0)
    retimed = _spread(record("add", 0.5, n=1 << 20), 5.0, source="re-timed, attempt 2")
    busy = dataclasses.replace(_spread(record("add", 0.5, n=1 << 21), 5.0), other_cpus=1.5)
    cal = _profile([*base, cold, probe, faults, retimed, busy])
    assert cal.operation_profiles[busy.case.key].busy
    assert cal.call_spread() == _profile(base).call_spread()


def _bn_relu():
    torch.manual_seed(0)
    return nn.Sequential(nn.BatchNorm2d(64), nn.ReLU()).eval()


def test_each_call_is_priced_at_the_ratio_of_its_time_interpolated_in_log_time():
    base = [*_adds(0.005, [1.10] * SPREAD_GROUP), *_adds(5.0, [1.01] * SPREAD_GROUP)]
    spread, flat = _profile(base), _profile([dataclasses.replace(r, latency=latency(r.latency.median_ms))
                                             for r in base])
    (t0, r0), (t1, r1) = spread.call_spread()
    part = partition(_bn_relu(), torch.randn(1, 64, 56, 56), spread)
    with_spread, without = CPUMapper(spread).estimate(part), CPUMapper(flat).estimate(part)
    assert flat.call_spread() == [(pytest.approx(t0), 1.0), (pytest.approx(t1), 1.0)]
    pairs = list(zip((k for sg in with_spread.subgraphs for k in sg.kernels),
                     (k for sg in without.subgraphs for k in sg.kernels), strict=True))
    assert pairs and all(k.spread_seconds == 0.0 for _, k in pairs)
    for k, plain in pairs:
        t = plain.seconds
        ratio = r0 + (r1 - r0) * (math.log(t) - math.log(t0)) / (math.log(t1) - math.log(t0)) if t0 < t < t1 else (
            r0 if t <= t0 else r1)
        assert k.spread_seconds == pytest.approx(t * (ratio - 1)) and k.seconds == pytest.approx(t * ratio)
    assert with_spread.spread_ms == pytest.approx(sum(k.spread_seconds for k, _ in pairs) * 1e3)
    assert with_spread.total_ms == pytest.approx(without.total_ms + with_spread.spread_ms)
    assert "calls' spread" in with_spread.table() and "calls' spread" not in without.table()
