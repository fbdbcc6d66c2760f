"""The shape-aware cost model: non-negative least squares, the fit, the neighbours' correction."""

import itertools
import math

import numpy as np
import pytest
from factories import metadata, record

from calibration.measure.fold import fold
from calibration.profile import shape_model
from calibration.specs.operations import CONV2D, OPERATIONS

ITEM = 4


def _brute_force_residual(a, b):
    """The least residual over non-negative x: the optimum is the least-squares solution on its
    own support, so the best of those that come out non-negative."""
    best = np.linalg.norm(b)  # x = 0
    for k in range(1, a.shape[1] + 1):
        for subset in itertools.combinations(range(a.shape[1]), k):
            solution = np.linalg.lstsq(a[:, subset], b, rcond=None)[0]
            if (solution >= 0).all():
                best = min(best, np.linalg.norm(a[:, subset] @ solution - b))
    return best


def test_nnls_matches_the_best_non_negative_solution_found_by_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.normal(size=(8, 3))
        b = rng.normal(size=8)
        x = shape_model.nnls(a, b)
        assert (x >= 0).all()
        assert np.linalg.norm(a @ x - b) == pytest.approx(_brute_force_residual(a, b), rel=1e-6, abs=1e-9)


def test_nnls_keeps_an_unconstrained_solution_that_is_already_non_negative():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert shape_model.nnls(a, a @ np.array([2.0, 3.0])) == pytest.approx([2.0, 3.0])
    # a price the data would make negative is held at zero
    assert shape_model.nnls(np.array([[1.0, 1.0], [1.0, 2.0]]), np.array([3.0, 2.0]))[1] == 0.0


def test_the_fit_recovers_the_prices_that_made_the_times():
    terms = [(1.0, 1e6 * k, 2e8 / k) for k in (1, 2, 4, 8, 16)]
    prices = (5e-6, 1e-10, 2e-12)
    seconds = [sum(p * t for p, t in zip(prices, row, strict=True)) for row in terms]
    assert shape_model.fit_prices(terms, seconds) == pytest.approx(prices, rel=1e-6)
    # with a floor, the rest is fitted above it
    assert shape_model.fit_prices(terms, [s + 2e-6 for s in seconds], floor=2e-6) == pytest.approx(prices, rel=1e-6)


def _conv(n, cin, cout, hw, k=3, s=1, g=1):
    return dict(N=n, CIN=cin, COUT=cout, H=hw, W=hw, K=k, STRIDE=s, PAD=k // 2, GROUPS=g)


GRID = [_conv(1, 32, 32, 56), _conv(1, 64, 64, 28), _conv(1, 128, 128, 14), _conv(1, 256, 256, 7),
        _conv(8, 64, 64, 28), _conv(1, 64, 128, 56, s=2)]


def _made_by(call_s, byte_s, flop_s):
    """Times of GRID made by a known cost: call_s a call, byte_s per byte, flop_s per FLOP."""
    def seconds(p):
        _, activations, weights, flops = CONV2D.cost_terms(p, ITEM)
        return call_s + byte_s * (activations + weights) + flop_s * flops
    return seconds


def _entries(seconds, params=GRID):
    cal = fold([record("conv2d", seconds(p) * 1e3, **p) for p in params], metadata(cache_sizes={}))
    return list(cal.operation_profiles.values())


def test_a_shape_between_calibrated_ones_gets_the_time_of_the_cost_that_made_them():
    seconds = _made_by(5e-6, 2e-11, 1e-11)
    query = _conv(1, 96, 96, 20)
    got = shape_model.estimate(CONV2D, _entries(seconds), query, ITEM)
    assert got is not None and got.entries == len(GRID)
    # every neighbour fits exactly, so nothing to correct
    assert got.seconds == pytest.approx(seconds(query), rel=1e-6)
    assert got.fitted_seconds == pytest.approx(got.seconds, rel=1e-9)


def test_the_nearest_shapes_correct_the_fit_by_their_error_fading_with_distance():
    seconds = _made_by(5e-6, 2e-11, 1e-11)
    slow = _conv(1, 128, 128, 14)
    off = {str(sorted(slow.items()))}

    def with_one_slow(p):  # one calibrated shape runs 2x what the cost says
        return seconds(p) * (2.0 if str(sorted(p.items())) in off else 1.0)

    entries = _entries(with_one_slow)
    near = shape_model.estimate(CONV2D, entries, _conv(1, 128, 160, 14), ITEM)
    far = shape_model.estimate(CONV2D, entries, _conv(1, 32, 48, 56), ITEM)
    assert near.neighbours[0].startswith("conv2d[N=1,CIN=128,COUT=128,H=14")
    near_ratio = near.seconds / near.fitted_seconds
    far_ratio = far.seconds / far.fitted_seconds
    assert 1.0 < near_ratio < 2.0  # corrected toward its slow neighbour, not all the way
    assert abs(math.log(far_ratio)) < abs(math.log(near_ratio))


def test_too_few_calibrated_shapes_or_no_cost_model_leave_it_to_interpolation():
    seconds = _made_by(5e-6, 2e-11, 1e-11)
    assert shape_model.estimate(CONV2D, _entries(seconds, GRID[:4]), _conv(1, 96, 96, 20), ITEM) is None
    relu = OPERATIONS["relu"]
    assert relu.cost_terms is None
    assert shape_model.estimate(relu, [], {"n": 1024}, ITEM) is None


def test_bytes_are_priced_at_the_bandwidth_of_the_level_their_traffic_fits_in():
    # the same conv in a cache level twice as fast costs half as much per byte
    p = _conv(1, 64, 64, 28)
    slow = shape_model.roofline_terms(CONV2D, p, ITEM, 100.0, lambda nbytes: 10.0)
    fast = shape_model.roofline_terms(CONV2D, p, ITEM, 100.0, lambda nbytes: 20.0)
    raw = CONV2D.cost_terms(p, ITEM)
    assert slow[0] == fast[0] == 1.0
    assert slow[1] == pytest.approx(raw[1] / 10e9) and fast[1] == pytest.approx(slow[1] / 2)
    assert slow[3] == pytest.approx(raw[3] / 100e9)
    # unknown roofs keep the raw quantities
    assert shape_model.roofline_terms(CONV2D, p, ITEM, None, lambda nbytes: None) == pytest.approx(raw)


def test_a_pointwise_conv_on_a_one_pixel_map_is_its_own_variant():
    se = _conv(1, 512, 128, 1, k=1)
    assert CONV2D.variant(se) == ("pointwise_1x1_map",)
    assert CONV2D.variant(_conv(1, 512, 128, 14, k=1)) == ("pointwise",)
    assert CONV2D.variant(_conv(1, 64, 64, 14, g=64)) == ("depthwise",)
