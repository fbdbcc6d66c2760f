"""The accuracy protocol's arithmetic and its refusals, on hand-made rounds (no timing)."""

from __future__ import annotations

import pytest
import torch
from factories import metadata

from calibration.measure.fold import fold
from calibration.measure.model_timing import DRIFT_LIMIT, Measurement, Round
from calibration.specs import host


def cal(**overrides):
    fields = {"cpu_model": host.cpu_model(), "threads": torch.get_num_threads()} | overrides
    return fold([], metadata(**fields))


def test_the_drift_factor_is_the_geometric_mean_of_the_reference_ratios():
    assert Round(10.0, {"matmul": 1.21, "conv2d": 1.0}).factor == pytest.approx(1.1)
    assert Round(10.0, {}).factor is None


def test_errors_raw_and_corrected_by_the_drift_of_the_same_round():
    m = Measurement((Round(10.0, {"matmul": 1.1}), Round(12.0, {"matmul": 1.2})), busy_cpus=0.0)
    raw, corrected = m.errors(9.0)
    assert raw == pytest.approx([9 / 10 - 1, 9 / 12 - 1])
    assert corrected == pytest.approx([9 * 1.1 / 10 - 1, 9 * 1.2 / 12 - 1])
    assert m.model_ms == pytest.approx(11.0)
    assert Measurement((Round(10.0, {}),), 0.0).errors(9.0)[1] is None  # nothing to correct by


def test_a_measurement_on_the_calibrated_machine_is_reported():
    m = Measurement((Round(10.0, {"matmul": 1.2, "conv2d": 0.8}),), busy_cpus=0.1)
    assert m.refusal(cal()) is None


@pytest.mark.parametrize(("measurement", "profile", "says"), [
    (Measurement((Round(10.0, {"conv2d": 57.0}),), 0.0), cal(), "conv2d ran x57.00"),
    (Measurement((Round(10.0, {"matmul": 1 / (DRIFT_LIMIT * 1.1)}),), 0.0), cal(), "matmul ran x0.61"),
    (Measurement((Round(10.0, {}),), 1.4), cal(), "kept 1.4 CPUs busy"),
    (Measurement((Round(10.0, {}),), 0.0), cal(cpu_model="Some Other CPU"), "'Some Other CPU'"),
    (Measurement((Round(10.0, {}),), 0.0), cal(threads=torch.get_num_threads() + 7), "this process runs"),
])
def test_the_machine_not_being_the_calibrated_one_refuses_an_error(measurement, profile, says):
    assert says in measurement.refusal(profile)


def test_a_drift_at_the_limit_is_still_reported():
    for ratio in (DRIFT_LIMIT, 1 / DRIFT_LIMIT):
        assert Measurement((Round(10.0, {"matmul": ratio}),), 0.0).refusal(cal()) is None
