"""Roofline arithmetic and statistics helpers: exact numbers, no pytest machinery."""

import math

import pytest

from calibration.measure import stats
from calibration.profile import roofline
from calibration.profile.roofline import Bottleneck

CACHES = {"L1": 32 << 10, "L2": 512 << 10, "L3": 32 << 20}


def test_rates():
    assert roofline.gflops(2_000_000_000, 0.5) == 4.0
    assert roofline.gbps(3_000_000_000, 2.0) == 1.5
    assert roofline.gflops(10, 0.0) == 0.0


def test_ridge_and_classification():
    assert roofline.ridge_point(200.0, 40.0) == 5.0
    assert roofline.classify(flops=1000, nbytes=100, compute_gflops=200, bandwidth_gbps=40) == Bottleneck.COMPUTE
    assert roofline.classify(flops=400, nbytes=100, compute_gflops=200, bandwidth_gbps=40) == Bottleneck.MEMORY
    assert roofline.classify(flops=0, nbytes=100, compute_gflops=None, bandwidth_gbps=None) == Bottleneck.MEMORY
    assert roofline.classify(flops=10, nbytes=100, compute_gflops=None, bandwidth_gbps=40) == Bottleneck.UNKNOWN


def test_roofline_seconds_takes_the_slower_roof():
    # 2 GFLOP at 100 GFLOPS = 20 ms; 0.4 GB at 40 GB/s = 10 ms
    assert roofline.roofline_seconds(2_000_000_000, 400_000_000, 100.0, 40.0) == pytest.approx(0.02)
    assert roofline.roofline_seconds(0, 400_000_000, None, 40.0) == pytest.approx(0.01)
    assert roofline.roofline_seconds(10, 10, None, 40.0) is None
    assert roofline.roofline_seconds(10, 10, 100.0, None) is None
    assert roofline.roofline_seconds(0, 0, None, None) == 0.0


def test_roof_seconds_gives_both_roofs_and_zero_for_an_unknown_one():
    assert roofline.roof_seconds(2_000_000_000, 400_000_000, 100.0, 40.0) == pytest.approx((0.02, 0.01))
    assert roofline.roof_seconds(2_000_000_000, 400_000_000, None, 40.0) == pytest.approx((0.0, 0.01))
    assert roofline.roof_seconds(2_000_000_000, 400_000_000, 100.0, None) == pytest.approx((0.02, 0.0))


def test_level_for_working_set_uses_half_of_each_level():
    assert roofline.level_for_working_set(16 << 10, CACHES) == "L1"
    assert roofline.level_for_working_set((16 << 10) + 1, CACHES) == "L2"
    assert roofline.level_for_working_set(16 << 20, CACHES) == "L3"
    assert roofline.level_for_working_set(1, {}) == "DRAM"


def test_between_half_the_llc_and_four_times_it_a_working_set_lives_in_no_level():
    assert roofline.level_for_working_set((16 << 20) + 1, CACHES) == roofline.TRANSITION
    assert roofline.level_for_working_set(48 << 20, CACHES) == roofline.TRANSITION  # the full sweep's 4 Mi triad
    assert roofline.level_for_working_set((128 << 20) - 1, CACHES) == roofline.TRANSITION
    assert roofline.level_for_working_set(128 << 20, CACHES) == "DRAM"
    assert roofline.levels(CACHES) == ["L1", "L2", "L3", roofline.TRANSITION, "DRAM"]
    assert roofline.levels({}) == ["DRAM"]


def test_stream_size_is_four_times_the_llc_per_array():
    assert roofline.is_stream_size(128 << 20, CACHES)
    assert not roofline.is_stream_size(64 << 20, CACHES)  # the full sweep's 16 Mi triad: DRAM, but not STREAM
    assert roofline.is_stream_size(256 << 20, {}) and not roofline.is_stream_size(128 << 20, {})


def test_bandwidth_ceiling_falls_back_to_the_next_measured_level():
    levels = {"L1": 100.0, "L3": 60.0, "DRAM": 40.0}
    assert roofline.bandwidth_ceiling(8 << 10, CACHES, levels, 35.0) == 100.0
    assert roofline.bandwidth_ceiling(100 << 10, CACHES, levels, 35.0) == 60.0  # L2 unmeasured
    assert roofline.bandwidth_ceiling(1 << 30, CACHES, levels, 35.0) == 40.0
    assert roofline.bandwidth_ceiling(1 << 30, CACHES, {}, 35.0) == 35.0


def test_a_transition_working_set_gets_the_llc_and_dram_ceilings_interpolated_in_log_size():
    levels = {"L3": 160.0, "DRAM": 40.0}
    # 16 MiB (half the LLC) and 128 MiB are the ends; 45.25 MiB lies halfway in log size
    assert roofline.bandwidth_ceiling(16 << 20, CACHES, levels, None) == 160.0
    assert roofline.bandwidth_ceiling(int(16 * 2**1.5 * 2**20), CACHES, levels, None) == pytest.approx(100.0)
    assert roofline.bandwidth_ceiling(128 << 20, CACHES, levels, None) == 40.0
    # without the LLC's ceiling the zone gets DRAM's (the next larger level), as a cache level would
    assert roofline.bandwidth_ceiling(48 << 20, CACHES, {"DRAM": 40.0}, None) == 40.0
    assert roofline.bandwidth_ceiling(48 << 20, CACHES, {"L3": 160.0}, None) is None


def test_interpolate_log_is_linear_in_log_x_and_clamped():
    points = [(100.0, 0.2), (10_000.0, 0.6)]
    assert roofline.interpolate_log(1000.0, points) == pytest.approx(0.4)  # halfway in log10
    assert roofline.interpolate_log(10.0, points) == 0.2
    assert roofline.interpolate_log(1e9, points) == 0.6
    assert roofline.interpolate_log(100.0, [(100.0, 0.2), (100.0, 0.4)]) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        roofline.interpolate_log(1.0, [])


def test_quartiles_match_pytest_benchmark_method():
    q1, med, q3 = stats.quartiles([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (q1, med, q3) == (2.0, 3.0, 4.0)


def test_noise_flag():
    assert stats.is_noisy(1.0, 0.11)
    assert not stats.is_noisy(1.0, 0.10)
    assert math.isinf(stats.relative_spread(0.0, 1.0))


def test_subsample_keeps_order_and_bound():
    data = list(range(1000))
    kept = stats.subsample(data, 200)
    assert len(kept) == 200 and kept[0] == 0 and kept == sorted(kept)
    assert stats.subsample([3, 1, 2], 200) == [3, 1, 2]


def _sweep_point(capacity: float, ws: float, llc_gbps: float, dram_gbps: float) -> float:
    """The triad rate a cache of ``capacity`` under random replacement gives a working set ``ws``."""
    h = 0.5
    for _ in range(200):  # h = exp(-(1 - h) ws / capacity), by fixed point
        h = math.exp(-(1 - h) * ws / capacity)
    return 1 / (h / llc_gbps + (1 - h) / dram_gbps)


MIB = 2**20


def test_the_llc_the_triad_sweep_saw_is_read_off_the_point_between_the_cache_and_dram():
    # the 480 MiB-L3 Xeon's sweep, with its 192 MiB point made by a 140 MiB cache
    point = _sweep_point(140 * MIB, 192 * MIB, 57.0, 31.0)
    sweep = {3 * MIB: 168.0, 12 * MIB: 57.0, 48 * MIB: 56.4, 192 * MIB: point, 768 * MIB: 30.5}
    seen = roofline.effective_llc_bytes(sweep, 480 * MIB, 4 * MIB, 31.0)
    assert seen.capacity == pytest.approx(140 * MIB, rel=1e-3) and seen.points == ((192 * MIB, point),)
    # the 3 MiB point, held by two 2 MiB L2s, is no LLC rate: counted, the LLC would read 168 GB/s
    assert roofline.effective_llc_bytes(sweep, 480 * MIB, 2 * MIB, 31.0).capacity != pytest.approx(140 * MIB, rel=0.05)


def test_the_llc_is_as_reported_where_the_sweep_shows_no_smaller_one():
    # every point at the cache's rate or at DRAM's: no share to read a capacity from
    flat = {12 * MIB: 57.0, 48 * MIB: 56.0, 768 * MIB: 31.5}
    assert roofline.effective_llc_bytes(flat, 480 * MIB, 4 * MIB, 31.0) is None
    # a capacity read off above what the OS reports (an LLC serving more than its size) is not taken
    sweep = {12 * MIB: 57.0, 192 * MIB: _sweep_point(140 * MIB, 192 * MIB, 57.0, 31.0)}
    assert roofline.effective_llc_bytes(sweep, 32 * MIB, 4 * MIB, 31.0) is None
    assert roofline.effective_llc_bytes(sweep, 480 * MIB, 4 * MIB, None) is None
    assert roofline.effective_llc_bytes({}, 480 * MIB, 4 * MIB, 31.0) is None
    # an LLC no faster than DRAM says nothing either
    assert roofline.effective_llc_bytes({12 * MIB: 30.0, 192 * MIB: 29.0}, 480 * MIB, 4 * MIB, 31.0) is None


def test_several_points_between_the_cache_and_dram_are_averaged():
    llc, dram = 57.0, 30.0

    def rate(h: float) -> float:  # the triad's GB/s with a share h of its traffic served by the LLC
        return 1 / (h / llc + (1 - h) / dram)

    # the Xeon VM an hour later: 96 MiB with 87.6% of its traffic from the LLC, 192 MiB with 15%
    # (each reads 86-90 MiB); 48 MiB at the LLC's rate and 768 MiB at DRAM's read nothing
    sweep = {12 * MIB: llc, 48 * MIB: llc, 96 * MIB: rate(0.876), 192 * MIB: rate(0.15), 768 * MIB: dram}
    seen = roofline.effective_llc_bytes(sweep, 480 * MIB, 4 * MIB, dram)
    assert 86 * MIB < seen.capacity < 90 * MIB
    assert [ws for ws, _ in seen.points] == [96 * MIB, 192 * MIB]
    # the 192 MiB point 10% slower falls out of the readable range: alone the LLC would be the
    # OS's 480 MiB, with the 96 MiB point it still reads 90
    slow = {**sweep, 192 * MIB: sweep[192 * MIB] * 0.9}
    assert roofline.effective_llc_bytes({12 * MIB: llc, 192 * MIB: slow[192 * MIB]}, 480 * MIB, 4 * MIB, dram) is None
    assert roofline.effective_llc_bytes(slow, 480 * MIB, 4 * MIB, dram).capacity == pytest.approx(90 * MIB, rel=0.01)




def test_the_llc_loses_what_the_triad_sweep_did_not_serve_from_it_at_each_working_set():
    # rates between the LLC's 56 and DRAM's 30: h = (1/30 - 1/g) / (1/30 - 1/56)
    def rate(h):
        return 1 / (h / 56.0 + (1 - h) / 30.0)

    sweep = {3 * MIB: 168.0, 12 * MIB: 54.0, 48 * MIB: 56.0, 96 * MIB: rate(0.9), 192 * MIB: rate(0.4),
             384 * MIB: rate(0.45), 768 * MIB: 29.0}
    losses = roofline.llc_losses(sweep, 4 * MIB, 30.0)
    # from the best point up: nothing lost there, then 1 - h, never less at a larger set (the
    # 384 MiB point's 0.45 is noise under the 192's 0.4) and never past all of it (29 < DRAM's 30)
    assert [ws for ws, _ in losses] == [48 * MIB, 96 * MIB, 192 * MIB, 384 * MIB, 768 * MIB]
    assert [round(lost, 6) for _, lost in losses] == [0.0, 0.1, 0.6, 0.6, 1.0]
    # the L2-held 3 MiB point is no LLC rate; with it counted the LLC would read 168 GB/s
    assert roofline.llc_losses(sweep, 2 * MIB, 30.0)[0] == (3 * MIB, 0.0)
    # no LLC faster than DRAM, or no DRAM rate: nothing to read
    assert roofline.llc_losses({12 * MIB: 29.0, 768 * MIB: 30.0}, 4 * MIB, 30.0) == []
    assert roofline.llc_losses(sweep, 4 * MIB, None) == []
