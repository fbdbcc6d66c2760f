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
    assert roofline.level_for_working_set(17 << 20, CACHES) == "DRAM"
    assert roofline.level_for_working_set(1, {}) == "DRAM"


def test_bandwidth_ceiling_falls_back_to_the_next_measured_level():
    levels = {"L1": 100.0, "L3": 60.0, "DRAM": 40.0}
    assert roofline.bandwidth_ceiling(8 << 10, CACHES, levels, 35.0) == 100.0
    assert roofline.bandwidth_ceiling(100 << 10, CACHES, levels, 35.0) == 60.0  # L2 unmeasured
    assert roofline.bandwidth_ceiling(1 << 30, CACHES, levels, 35.0) == 40.0
    assert roofline.bandwidth_ceiling(1 << 30, CACHES, {}, 35.0) == 35.0


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
