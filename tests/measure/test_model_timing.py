"""The accuracy protocol's arithmetic and its refusals, on hand-made rounds (no timing)."""

from __future__ import annotations

import math

import pytest
import torch
from factories import metadata, record

from calibration.measure.fold import fold
from calibration.measure.model_timing import (
    DRIFT_LIMIT,
    STATE_POLL_SECONDS,
    Measurement,
    Round,
    await_profile_state,
    reference_kernels,
)
from calibration.specs import host
from calibration.specs.operations import Case


def cal(**overrides):
    fields = {"cpu_model": host.cpu_model(), "threads": torch.get_num_threads()} | overrides
    return fold([], metadata(**fields))


def test_the_drift_factor_is_the_geometric_mean_of_the_reference_ratios():
    assert Round(10.0, {"matmul": 1.21, "conv2d": 1.0}).factor == pytest.approx(1.1)
    assert Round(10.0, {}).factor is None


def test_each_drift_class_corrects_its_own_share_of_the_prediction():
    r = Round(10.0, {"matmul": 1.0, "conv2d": 1.0, "triad 1048576": 1.5, "triad 65536": 2.0},
              classes={"matmul": "compute", "conv2d": "compute", "triad 1048576": "memory", "triad 65536": "small"})
    assert r.class_factors() == pytest.approx({"compute": 1.0, "memory": 1.5, "small": 2.0})
    # 6 ms compute-bound, 3 ms memory-bound, 1 ms of small kernels
    assert r.factor_for({"compute": 6.0, "memory": 3.0, "small": 1.0}) == pytest.approx((6 + 4.5 + 2) / 10)
    assert r.factor_for({"compute": 1.0}) == pytest.approx(1.0)  # a pure GEMM model ignores the memory drift
    assert r.factor_for(None) == pytest.approx(r.factor)  # no split: all references alike
    only_compute = Round(10.0, {"matmul": 1.2}, classes={"matmul": "compute"})
    # a class without a reference in the profile is corrected by all the references there are
    assert only_compute.factor_for({"compute": 1.0, "small": 1.0}) == pytest.approx(1.2)
    m = Measurement((r,), busy_cpus=0.0)
    assert m.errors(10.0, {"memory": 1.0})[1] == pytest.approx([10 * 1.5 / 10 - 1])


def test_a_class_drifting_past_the_limit_refuses_and_names_its_references():
    r = Round(10.0, {"matmul": 1.0, "triad 65536": 1.7, "triad 32768": 1.6},
              classes={"matmul": "compute", "triad 65536": "small", "triad 32768": "small"})
    says = Measurement((r,), 0.0).refusal(cal())
    assert "small references (triad 65536, triad 32768) at x1.65" in says


def test_rounds_outside_the_drift_limits_are_set_aside_and_a_majority_of_them_refuses():
    quiet, loud = {"matmul": 1.0}, {"matmul": 1.8}
    m = Measurement((Round(10.0, quiet), Round(30.0, loud), Round(12.0, quiet)), busy_cpus=0.0)
    assert [r.model_ms for r in m.kept] == [10.0, 12.0] and m.model_ms == 11.0
    raw, corrected = m.errors(11.0)
    assert raw == pytest.approx([0.1, 11 / 12 - 1])  # the 30 ms window says nothing about the model
    assert m.refusal(cal()) is None
    mostly_loud = Measurement((Round(10.0, quiet), Round(30.0, loud), Round(31.0, loud)), busy_cpus=0.0)
    assert "2 of 3 rounds ran outside" in mostly_loud.refusal(cal())
    assert len(mostly_loud.kept) == 1


def test_a_report_shows_each_reference_ratio_in_the_kept_rounds_with_its_class_and_weight():
    own = "for the model: linear[B=8,IN=1024,OUT=1024]"
    kept = Round(10.0, {"matmul": 0.9, own: 1.2}, classes={"matmul": "compute", own: "memory"}, weights={own: 0.7})
    loud = Round(30.0, {"matmul": 1.9, own: 1.9}, classes={"matmul": "compute", own: "memory"}, weights={own: 0.7})
    without_own = Round(11.0, {"matmul": 1.1}, classes={"matmul": "compute"})
    refs = Measurement((kept, loud, without_own), busy_cpus=0.0).references()
    # the loud round is set aside and shows nowhere; a round that did not re-time a reference shows None
    assert refs == {"matmul": {"class": "compute", "weight_ms": 0.0, "ratios": [0.9, 1.1]},
                    own: {"class": "memory", "weight_ms": 0.7, "ratios": [1.2, None]}}
    assert Measurement((Round(10.0, {}),), 0.0).references() == {}


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
    (Measurement((Round(10.0, {"conv2d": 57.0}),), 0.0), cal(), "(conv2d) at x57.00"),
    (Measurement((Round(10.0, {"matmul": 1 / (DRIFT_LIMIT * 1.1)}),), 0.0), cal(), "(matmul) at x0.61"),
    (Measurement((Round(10.0, {}),), 1.4), cal(), "kept 1.4 CPUs busy"),
    (Measurement((Round(10.0, {}),), 0.0), cal(cpu_model="Some Other CPU"), "'Some Other CPU'"),
    (Measurement((Round(10.0, {}),), 0.0), cal(threads=torch.get_num_threads() + 7), "this process runs"),
])
def test_the_machine_not_being_the_calibrated_one_refuses_an_error(measurement, profile, says):
    assert says in measurement.refusal(profile)


def test_a_drift_at_the_limit_is_still_reported():
    for ratio in (DRIFT_LIMIT, 1 / DRIFT_LIMIT):
        assert Measurement((Round(10.0, {"matmul": ratio}),), 0.0).refusal(cal()) is None


def test_the_memory_and_small_references_are_the_profile_s_own_triad_sizes():
    sweep = (1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 33554432)
    profile = fold([record("stream_triad", 1.0, n=n) for n in sweep]
                   + [record("matmul", 1.0, M=1024, K=1024, N=1024, path="aten")], metadata())
    kinds = {label: ref.kind for label, ref in reference_kernels(profile).items()}
    # the smallest triad that runs on every thread (ATen's 32 Ki grain) and stays in L2; the one
    # nearest an LLC-resident 1 Mi elements; the largest (DRAM)
    assert kinds == {"matmul": "compute", "triad 65536": "small", "triad 1048576": "memory",
                     "triad 33554432": "memory"}
    quick = fold([record("stream_triad", 1.0, n=n) for n in (1024, 32768, 1048576, 33554432)], metadata())
    assert set(reference_kernels(quick)) == {"triad 32768", "triad 1048576", "triad 33554432"}
    assert reference_kernels(fold([], metadata())) == {}


def test_the_dram_reference_is_the_smallest_triad_that_lives_in_dram_and_is_built_once():
    # a sweep that goes on past STREAM's size (a big-LLC host's full sweep): the 384 MiB triad
    # tracks DRAM as well as the 1.5 GiB one, at a quarter of its memory and time
    sweep = (65536, 1048576, 33554432, 134217728)
    profile = fold([record("stream_triad", 1.0, n=n) for n in sweep], metadata())
    shared: dict = {}
    refs = reference_kernels(profile, shared=shared)
    assert set(refs) == {"triad 65536", "triad 1048576", "triad 33554432"}
    again = reference_kernels(profile, shared=shared)  # another model of the same run
    assert all(again[label].kernel is refs[label].kernel for label in refs)
    assert reference_kernels(profile)["triad 33554432"].kernel is not refs["triad 33554432"].kernel


def test_the_model_s_own_kernels_alone_correct_their_class_weighted_by_predicted_time():
    big, few = "for the model: linear[B=128]", "for the model: linear[B=8]"
    classes = {"matmul": "compute", "triad 1048576": "memory", big: "compute", few: "compute"}
    r = Round(10.0, {"matmul": 1.0, "triad 1048576": 1.5, big: 1.3, few: 1.1},
              classes=classes, weights={big: 3.0, few: 1.0})
    factors = r.class_factors()
    # the generic GEMM (x1.0) is left out of a class the model's own kernels cover
    assert factors["compute"] == pytest.approx(math.exp((3 * math.log(1.3) + math.log(1.1)) / 4))
    assert factors["memory"] == pytest.approx(1.5)  # no own kernel there: the generic triad
    unweighted = Round(10.0, r.drift, classes=classes)
    assert unweighted.class_factors()["compute"] == pytest.approx((1.0 * 1.3 * 1.1) ** (1 / 3))


def test_an_entry_the_prediction_stands_on_corrects_the_time_it_stands_for_and_no_more():
    bn = "for the model: batchnorm[N=8]"
    classes = {"conv2d": "compute", "triad 1048576": "memory", "triad 65536": "small", bn: "memory"}
    r = Round(10.0, {"conv2d": 1.0, "triad 1048576": 1.1, "triad 65536": 1.0, bn: 0.7},
              classes=classes, weights={bn: 2.0})
    # 2 ms of batch norms stand on the entry (x0.7); the other 6 ms of the memory class (SiLUs,
    # pools) on every memory reference, x(0.7 * 1.1) ** 0.5; the compute ms on the conv
    rest = (0.7 * 1.1) ** 0.5
    assert r.factor_for({"compute": 2.0, "memory": 8.0}) == pytest.approx((2 * 1.0 + 2 * 0.7 + 6 * rest) / 10)
    # the whole class standing on it: its ratio alone
    assert r.factor_for({"memory": 2.0}) == pytest.approx(0.7)
    # an entry standing for more than the class has (other ms counts) scales down to the class
    assert r.factor_for({"memory": 1.0}) == pytest.approx(0.7)
    # the refusal limits still read the class by its own entries
    assert r.class_factors()["memory"] == pytest.approx(0.7)
    no_class = Round(10.0, {"conv2d": 1.2}, classes={"conv2d": "compute"})
    assert no_class.factor_for({"memory": 1.0}) == pytest.approx(1.2)


def test_own_references_are_built_from_the_profile_with_their_weight_and_class():
    own_case = Case("linear", (("B", 4), ("IN", 64), ("OUT", 32)), "float32", "cpu")
    missing = Case("linear", (("B", 4), ("IN", 64), ("OUT", 99)), "float32", "cpu")
    busy = Case("linear", (("B", 8), ("IN", 64), ("OUT", 32)), "float32", "cpu")
    profile = fold([record("matmul", 1.0, M=1024, K=1024, N=1024, path="aten"),
                    record("linear", 0.5, B=4, IN=64, OUT=32), record("linear", 0.7, B=8, IN=64, OUT=32)], metadata())
    ops = profile.operation_profiles
    ops[busy.key] = ops[busy.key].model_copy(update={"busy": True})
    for key in (own_case.key, "matmul[M=1024,K=1024,N=1024,path=aten]/float32/cpu"):  # best rounds 80% of the median
        ops[key] = ops[key].model_copy(update={"latency": ops[key].latency.model_copy(
            update={"min_ms": 0.8 * ops[key].latency.median_ms})})
    refs = reference_kernels(profile, [(own_case, 2.5, "small"), (missing, 1.0, "compute"), (busy, 1.0, "compute")])
    assert set(refs) == {"matmul", "for the model: linear[B=4,IN=64,OUT=32]"}
    ref = refs["for the model: linear[B=4,IN=64,OUT=32]"]
    # the model's entry is compared median to median (the mapper used its median), a generic
    # reference best round to best block
    assert (ref.profile_ms, ref.kind, ref.weight_ms) == (0.5, "small", 2.5)
    assert (refs["matmul"].profile_ms, refs["matmul"].weight_ms) == (pytest.approx(0.8), 0.0)
    assert ref.kernel() is not None  # a built kernel: the entry's own operands


def test_the_model_s_entries_are_re_timed_in_rounds_like_the_calibration_median_to_median(monkeypatch):
    import calibration.measure.model_timing as mt

    seen = []

    def rounds(kernel, sync, plan):
        seen.append(plan)
        return [0.9e-3, 1.2e-3, 1.0e-3]  # seconds per call: median 1.0 ms

    monkeypatch.setattr(mt, "time_rounds", rounds)
    refs = {"for the model: x": mt.Reference(lambda: None, 0.8, "compute", weight_ms=3.0, iterations=4)}
    assert mt.drift(cal(), min_run_time=0.1, kernels=refs) == {"for the model: x": pytest.approx(1.0 / 0.8)}
    # the entry's calls per round, and rounds enough for the window (0.1 s at 4 x 0.8 ms a round)
    assert seen[0].iterations == 4 and seen[0].rounds == 32


class _Clock:
    """A clock that moves only when the waiter sleeps."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_round_waits_for_the_host_state_the_profile_was_taken_in():
    readings = iter([0.45, 0.40, 0.12])  # slow, slow, then fast against the profile's 0.1
    clock = _Clock()
    ratio, waited = await_profile_state(cal(canary_ms=0.1), read=lambda: next(readings), sleep=clock.sleep,
                                        clock=clock)
    assert ratio == pytest.approx(1.2) and waited == pytest.approx(2 * STATE_POLL_SECONDS)


def test_a_round_in_the_profiles_state_waits_for_nothing():
    clock = _Clock()
    assert await_profile_state(cal(canary_ms=0.1), read=lambda: 0.14, sleep=clock.sleep, clock=clock) == (
        pytest.approx(1.4), 0.0)


def test_a_round_waits_no_longer_than_its_limit_and_says_the_state_it_ran_in():
    clock = _Clock()
    ratio, waited = await_profile_state(cal(canary_ms=0.1), wait_seconds=1.0, read=lambda: 0.4, sleep=clock.sleep,
                                        clock=clock)
    assert ratio == pytest.approx(4.0) and 1.0 <= waited < 1.0 + STATE_POLL_SECONDS


def test_a_profile_without_a_canary_reading_waits_for_nothing():
    def never():
        raise AssertionError("read the canary")

    assert await_profile_state(cal(), read=never) == (None, 0.0)
    assert await_profile_state(cal(canary_ms=0.1, device_type="cuda"), read=never) == (None, 0.0)
