"""Comparing two profiles: the U test, the entry matching and flags, the renderings and the
``python -m calibration compare`` exit codes. Synthetic profiles only, nothing is timed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from factories import latency, metadata

from calibration import cli
from calibration.measure import options
from calibration.measure.fold import FusionRecord, Record, fold
from calibration.measure.stats import quartiles
from calibration.profile.schema import HardwareCalibration, LatencyStats
from calibration.profile.verdict import Verdict
from calibration.report.compare import Method, NothingInCommon, Status, compare
from calibration.report.compare_report import render_markdown, render_text
from calibration.report.ranktest import (
    mann_whitney_u,
    midranks,
    smallest_p_value,
    u_counts,
)
from calibration.specs.operations import Case
from calibration.specs.patterns import FusionCase

RELU = "relu[n=1048576]/float32/cpu"
ADD = "add[n=1048576]/float32/cpu"
MUL = "mul[n=1048576]/float32/cpu"
LIBRARY = "Add_ReLU[n=1048576]/float32/cpu/library"


# --------------------------------------------------------------------------- building profiles


def stats(samples) -> LatencyStats:
    samples = [float(s) for s in samples]
    q1, median, q3 = quartiles(samples)
    return LatencyStats(median_ms=median, iqr_ms=q3 - q1, min_ms=min(samples), mean_ms=float(np.mean(samples)),
                        stddev_ms=float(np.std(samples)), rounds=len(samples), iterations=1, samples_ms=samples)


def noisy(median_ms: float, spread: float, seed: int, rounds: int = 50) -> LatencyStats:
    """Log-normal round times around ``median_ms``; ``spread`` is the sigma of the log."""
    rng = np.random.default_rng(seed)
    return stats(median_ms * np.exp(spread * rng.standard_normal(rounds)))


def profile(timings: dict[str, LatencyStats], **meta) -> HardwareCalibration:
    """Element-wise operation entries, one per name (relu, add, stream_copy...), n = 2^20."""
    records = [Record(Case(op, (("n", 1 << 20),), "float32", "cpu"), t) for op, t in timings.items()]
    return fold(records, metadata(**meta))


def fusion_profile(unfused: LatencyStats, fused: LatencyStats) -> HardwareCalibration:
    """One Add_ReLU library entry, timed interleaved with its unfused twin."""
    def case(variant: str) -> FusionCase:
        return FusionCase("Add_ReLU", (("n", 1 << 20),), "float32", "cpu", variant)

    return fold([], metadata(), fusion_records=[FusionRecord(case("library"), fused, None, unfused)])


def steady(seed: int, relu_ms: float = 1.0) -> HardwareCalibration:
    return profile({"relu": noisy(relu_ms, 0.01, seed), "add": noisy(2.0, 0.01, seed + 100)})


@pytest.fixture
def write(tmp_path):
    def write_profile(name: str, cal: HardwareCalibration) -> str:
        return str(cal.save(tmp_path / name))

    return write_profile


@pytest.fixture
def main(capsys):
    """Run ``python -m calibration compare ARGS`` in-process: (exit code, stdout, stderr)."""
    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = cli.main(["compare", *args])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


# --------------------------------------------------------------------------- the U test


def test_exact_null_distribution_by_hand():
    # n = m = 2: orderings xxyy..yyxx give U = 0, 1, 2, 2, 3, 4
    assert u_counts(2, 2) == (1, 1, 2, 1, 1)
    assert u_counts(3, 3) == (1, 1, 2, 3, 3, 3, 3, 2, 1, 1)
    assert u_counts(1, 4) == (1, 1, 1, 1, 1)
    for n, m in ((1, 1), (4, 7), (20, 20)):
        counts = u_counts(n, m)
        assert len(counts) == n * m + 1 and sum(counts) == math.comb(n + m, n)
        assert counts == counts[::-1]  # symmetric about n*m/2


def test_midranks_share_the_average_rank():
    ranks, groups = midranks(np.array([3.0, 1.0, 3.0, 2.0]))
    assert ranks.tolist() == [3.5, 1.0, 3.5, 2.0]
    assert sorted(groups.tolist()) == [1, 1, 2]


@pytest.mark.parametrize(
    ("x", "y", "u", "p"),
    [
        ([1, 2], [3, 4], 0.0, 2 / 6),  # complete separation: P(U <= 0) = 1/6, two-sided
        ([1, 3], [2, 4], 1.0, 4 / 6),  # P(U <= 1) = 2/6
        ([1, 2, 3], [4, 5, 6], 0.0, 2 / 20),
        ([4, 5, 6], [1, 2, 3], 9.0, 2 / 20),  # the other side: same p
        ([1, 4], [2, 3], 2.0, 1.0),  # U at its mean
    ],
)
def test_exact_p_values_by_hand(x, y, u, p):
    result = mann_whitney_u(x, y)
    assert result.method == "exact"
    assert result.u == u and result.p_value == pytest.approx(p)


def test_normal_approximation_with_ties_by_hand():
    # ranks of 1,1,2,2,3,3: 1.5,1.5,3.5,3.5,5.5,5.5; U_x = 6.5 - 6 = 0.5, U_y = 8.5, mean 4.5
    # variance 3*3/12 * (7 - 3*(2^3-2)/(6*5)) = 0.75 * 6.4 = 4.8
    # z = (8.5 - 4.5 - 0.5) / sqrt(4.8) = 1.5975; p = 2 * (1 - Phi(z)) = 0.11015
    result = mann_whitney_u([1, 1, 2], [2, 3, 3])
    assert result.method == "normal" and result.u == 0.5
    assert result.p_value == pytest.approx(0.110149, abs=1e-6)


def test_normal_approximation_for_large_samples_by_hand():
    # 25 against 25, separated: U = 625 against mean 312.5, sd sqrt(25*25*51/12) = 51.539
    # z = (625 - 312.5 - 0.5) / 51.539 = 6.0537; p = erfc(z / sqrt 2) = 1.4157e-9
    result = mann_whitney_u(range(25, 50), range(25))
    assert result.method == "normal" and result.u == 625
    assert result.p_value == pytest.approx(1.4157e-9, rel=1e-3)


def test_all_values_equal_is_no_evidence():
    assert mann_whitney_u([2.0] * 10, [2.0] * 12).p_value == 1.0


def test_constant_samples_that_differ_are_significant():
    # all ties within each side: the tie-corrected normal approximation, p = 1.6e-5
    assert mann_whitney_u([1.0] * 10, [1.3] * 10).p_value == pytest.approx(1.6e-5, rel=0.05)


def test_empty_samples_are_an_error():
    with pytest.raises(ValueError, match="samples on both sides, got 0 and 2"):
        mann_whitney_u([], [1, 2])


def test_smallest_reachable_p_value():
    assert smallest_p_value(3, 3) == pytest.approx(0.1)
    assert smallest_p_value(10, 10) == pytest.approx(2 / 184756)


def test_agrees_with_scipy_where_installed():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    for n, m, shift, rounding in ((6, 9, 0.5, None), (15, 20, 1.0, None), (40, 60, 0.3, None), (30, 25, 0.2, 1)):
        x, y = rng.standard_normal(n), rng.standard_normal(m) + shift
        if rounding is not None:
            x, y = np.round(x, rounding), np.round(y, rounding)
        ours = mann_whitney_u(x, y)
        method = "exact" if ours.method == "exact" else "asymptotic"
        theirs = scipy_stats.mannwhitneyu(x, y, alternative="two-sided", method=method, use_continuity=True)
        assert ours.u == pytest.approx(theirs.statistic)
        assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-6)


# --------------------------------------------------------------------------- the comparison


def test_identical_profiles_exit_0_and_flag_nothing(write, main):
    cal = steady(1)
    code, out, _ = main(write("a.json", cal), write("b.json", cal))
    assert code == 0
    assert "REGRESSION" not in out and "improvement" not in out
    assert "0 regressed, 0 improved; 2 of 2 entries unchanged" in out


def test_noise_within_the_spread_is_not_flagged(write, main):
    base = profile({"relu": noisy(1.0, 0.08, 1), "add": noisy(2.0, 0.08, 2), "sigmoid": noisy(3.0, 0.08, 3)})
    new = profile({"relu": noisy(1.0, 0.08, 11), "add": noisy(2.0, 0.08, 12), "sigmoid": noisy(3.0, 0.08, 13)})
    comparison = compare(base, new)
    assert not comparison.regressed
    assert all(e.method is Method.RANK and not e.significant for e in comparison.entries)
    assert main(write("a.json", base), write("b.json", new))[0] == 0


def test_a_tight_30_percent_slowdown_is_a_regression(write, main):
    code, out, _ = main(write("base.json", steady(1)), write("new.json", steady(2, relu_ms=1.3)))
    assert code == 1
    (line,) = [line for line in out.splitlines() if "REGRESSION" in line]
    assert line.startswith(RELU) and "+30" in line
    assert "1 regressed, 0 improved; 1 of 2 entries unchanged" in out


def test_a_30_percent_change_within_a_huge_spread_is_not_significant(write, main):
    # the same draws, 1.3x slower: the medians are exactly 30% apart, the spread is +-80%
    base = profile({"relu": noisy(1.0, 0.8, 1, rounds=12)})
    new = profile({"relu": noisy(1.3, 0.8, 1, rounds=12)})
    (entry,) = compare(base, new).entries
    assert entry.ratio == pytest.approx(1.3) and entry.p_value > 0.002
    assert entry.status is Status.UNCHANGED
    code, out, _ = main(write("a.json", base), write("b.json", new))
    assert code == 0
    assert "worse, not significant" in out


def test_an_improvement_is_reported_not_failed(write, main):
    code, out, _ = main(write("a.json", steady(1, relu_ms=1.5)), write("b.json", steady(2)))
    assert code == 0
    assert "0 regressed, 1 improved" in out and "improvement" in out


def test_threshold_decides_what_counts(write, main):
    base, new = write("a.json", steady(1)), write("b.json", steady(2, relu_ms=1.3))
    assert main(base, new, "--threshold", "50%")[0] == 0
    assert main(base, new, "--threshold", "25")[0] == 1


def test_a_flipped_fusion_verdict_is_reported_but_does_not_fail(write, main):
    # the fused kernel takes the same time; the unfused code got 4x faster: fuse -> avoid
    base, new = fusion_profile(latency(2.0), latency(1.0)), fusion_profile(latency(0.5), latency(1.0))
    comparison = compare(base, new)
    assert [(f.key, f.base, f.new) for f in comparison.verdict_flips] == [(LIBRARY, Verdict.FUSE, Verdict.AVOID)]
    code, out, _ = main(write("a.json", base), write("b.json", new))
    assert code == 0
    assert f"fusion verdicts flipped (1):\n  {LIBRARY}: fuse -> avoid" in out


def test_speedup_metric_tests_the_per_round_speedups(write, main):
    base, new = fusion_profile(latency(2.0), latency(1.0)), fusion_profile(latency(1.2), latency(1.0))
    (entry,) = compare(base, new, metric="speedup").entries
    assert (entry.base, entry.new) == (2.0, 1.2)
    assert entry.worse_by == pytest.approx(0.4) and entry.regression
    assert main(write("a.json", base), write("b.json", new), "--metric", "speedup")[0] == 1


def test_speedup_metric_needs_fusion_entries(write, main):
    code, out, err = main(write("a.json", steady(1)), write("b.json", steady(2)), "--metric", "speedup")
    assert code == 2 and out == ""
    assert "no fusion entries (--metric speedup compares fusion entries only) in common" in err


def test_gflops_metric_skips_entries_without_flops():
    base = profile({"relu": noisy(1.0, 0.01, 1), "stream_copy": noisy(1.0, 0.01, 2)})
    new = profile({"relu": noisy(1.3, 0.01, 3), "stream_copy": noisy(1.0, 0.01, 4)})
    comparison = compare(base, new, metric="gflops")
    (entry,) = comparison.entries
    assert entry.key == RELU and entry.regression
    assert entry.ratio == pytest.approx(1 / 1.3, rel=0.02) and entry.worse_by == pytest.approx(1 - entry.ratio)
    assert comparison.not_applicable == ["stream_copy[n=1048576]/float32/cpu"]
    assert "1 shared entries have no GFLOPS and were skipped" in render_text(comparison)


def without_samples(cal: HardwareCalibration, iqr: bool) -> HardwareCalibration:
    """As a profile upgraded from the predecessor: no raw samples, perhaps no IQR."""
    data = cal.model_dump()
    for entry in data["operation_profiles"].values():
        entry["latency"]["samples_ms"] = []
        if not iqr:
            entry["latency"]["iqr_ms"] = None
    return HardwareCalibration.model_validate(data)


def test_without_samples_the_median_notches_decide():
    base = without_samples(steady(1), iqr=True)
    new = without_samples(steady(2, relu_ms=1.3), iqr=True)
    relu, add = compare(base, new).entries
    assert relu.method is Method.NOTCHES and relu.p_value is None
    assert relu.regression  # IQR ~1.3% of the median, 50 rounds: notches far apart
    assert add.method is Method.NOTCHES and not add.significant


def test_without_samples_or_iqr_an_entry_is_not_testable_and_never_flagged(write, main):
    base = without_samples(steady(1), iqr=False)
    new = without_samples(steady(2, relu_ms=3.0), iqr=False)
    relu, _ = compare(base, new).entries
    assert relu.method is Method.NONE and relu.worse_by > 1 and not relu.regression
    code, out, _ = main(write("a.json", base), write("b.json", new))
    assert code == 0
    assert "not testable" in out


def test_too_few_rounds_to_ever_be_significant_is_said():
    base, new = profile({"relu": stats([1.0, 1.01, 0.99])}), profile({"relu": stats([2.0, 2.01, 1.99])})
    (entry,) = compare(base, new).entries
    assert entry.p_value == pytest.approx(0.1) and not entry.regression
    assert entry.note == "too few samples (3 and 3) to reach p < 0.002"
    assert entry.note in render_text(compare(base, new))


def test_entries_in_only_one_profile_are_counted_in_a_line_and_listed_on_request(write, main):
    base = profile({"relu": noisy(1.0, 0.01, 1), "add": noisy(2.0, 0.01, 2), "mul": noisy(2.0, 0.01, 5)})
    new = profile({"relu": noisy(1.0, 0.01, 3), "sigmoid": noisy(2.0, 0.01, 4)})
    comparison = compare(base, new)
    assert comparison.only_in_base == [ADD, MUL] and comparison.only_in_new == ["sigmoid[n=1048576]/float32/cpu"]
    base_path, new_path = write("a.json", base), write("b.json", new)
    code, out, _ = main(base_path, new_path)
    assert code == 0
    assert f"only in {base_path}: 2 entries, not compared (add 1, mul 1; --list-unmatched lists them)\n" in out
    assert f"only in {new_path}: 1 entry, not compared (sigmoid 1; --list-unmatched lists them)\n" in out
    assert ADD not in out
    code, out, _ = main(base_path, new_path, "--list-unmatched")
    assert f"only in {base_path} (2, not compared):\n  {ADD}\n  {MUL}" in out
    assert f"only in {new_path} (1, not compared):\n  sigmoid[n=1048576]/float32/cpu" in out


def test_latency_columns_hold_one_unit(write, main):
    base = profile({"relu": noisy(0.5, 0.01, 1), "add": noisy(2.0, 0.01, 2)})  # 0.5 ms and 2 ms
    new = profile({"relu": noisy(0.5, 0.01, 3), "add": noisy(2.0, 0.01, 4)})
    code, out, _ = main(write("a.json", base), write("b.json", new))
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("entry"))
    assert header.split()[1:5] == ["base", "us", "new", "us"]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("relu", "add"))}
    assert 495 < float(rows[RELU][1]) < 505 and 1980 < float(rows[ADD][1]) < 2020
    assert "ms" not in out.replace("ms:", "")


def test_filter_and_sort_select_and_order_the_rows(write, main):
    base = profile({"relu": noisy(1.0, 0.01, 1), "add": noisy(2.0, 0.01, 2), "mul": noisy(1.0, 0.01, 5)})
    new = profile({"relu": noisy(1.5, 0.01, 3), "add": noisy(2.0, 0.01, 4), "mul": noisy(1.2, 0.01, 6)})
    a, b = write("a.json", base), write("b.json", new)

    def keys(out: str) -> list[str]:
        return [line.split()[0] for line in out.splitlines() if "/float32/cpu" in line]

    assert keys(main(a, b, "-k", "relu or add")[1]) == [RELU, ADD]
    assert keys(main(a, b, "--filter", "not relu", "--sort", "name")[1]) == [ADD, MUL]
    assert keys(main(a, b, "--sort", "change")[1]) == [RELU, MUL, ADD]
    code, _, err = main(a, b, "-k", "relu and (add")
    assert code == 2 and "filter 'relu and (add': expected ')' at the end" in err
    code, _, err = main(a, b, "-k", "sigmoid")
    assert code == 2 and "no entries in common" in err and "0 shared keys matching the filter" in err


def test_metadata_differences_head_the_report():
    base = steady(1)
    new = profile({"relu": noisy(1.0, 0.01, 2), "add": noisy(2.0, 0.01, 3)},
                  threads=1, torch_version="2.14.0+cpu", quick=False, date=base.metadata.date.replace(year=2027))
    comparison = compare(base, new)
    assert [(d.field, d.base, d.new) for d in comparison.metadata_differences] == [
        ("threads", 2, 1), ("torch_version", "2.13.0+cpu", "2.14.0+cpu"), ("quick", True, False),
    ]  # the date is expected to differ and is not reported
    text = render_text(comparison).splitlines()
    assert text[2].startswith("metadata differs")
    assert text[3:6] == [
        "  threads        2 -> 1", "  torch_version  2.13.0+cpu -> 2.14.0+cpu", "  quick          True -> False",
    ]
    markdown = render_markdown(comparison)
    assert markdown.index("| threads | `2` | `1` |") < markdown.index("### Regressions")


def test_a_profile_measured_on_a_busy_machine_is_called_out():
    base = steady(1)
    new = profile({"relu": noisy(1.0, 0.01, 2), "add": noisy(2.0, 0.01, 3)}, busy_cpus_before=1.9)
    comparison = compare(base, new, base_name="base.json", new_name="new.json")
    why = ("new.json (other processes kept 1.9 of 2 CPUs busy when the run started; "
           "they competed for cores and memory bandwidth)")
    assert comparison.busy == [why]
    assert f"measured on a busy machine, timings inflated: {why}" in render_text(comparison)
    assert f"> Measured on a busy machine, timings inflated: `{why}`" in render_markdown(comparison)
    assert compare(base, steady(2)).busy == []


def test_entries_timed_while_busy_say_so_in_text_and_markdown():
    base = steady(1)
    new = steady(2, relu_ms=1.5)  # a regression, so that markdown lists it
    relu = new.operation_profiles[RELU]
    new.operation_profiles[RELU] = relu.model_copy(update={"other_cpus": 1.1, "busy": True})
    comparison = compare(base, new, base_name="base.json", new_name="new.json")
    entry = next(e for e in comparison.entries if e.key == RELU)
    assert entry.busy == "new"
    assert [e.busy for e in comparison.entries if e.key != RELU] == [None]
    row = next(line for line in render_text(comparison).splitlines() if line.startswith(RELU))
    assert row.endswith("timed while busy (new)")
    assert f"| `{RELU}` |" in render_markdown(comparison)
    assert "| timed while busy (new) |" in render_markdown(comparison)


def test_markdown_lists_regressions_then_improvements_then_counts_the_rest():
    base = profile({"relu": noisy(1.0, 0.01, 1), "add": noisy(2.0, 0.01, 2), "sigmoid": noisy(1.0, 0.01, 3),
                    "mul": noisy(1.0, 0.01, 4)})
    new = profile({"relu": noisy(0.5, 0.01, 5), "add": noisy(2.6, 0.01, 6), "sigmoid": noisy(1.0, 0.01, 7),
                   "mul": noisy(2.0, 0.01, 8)})
    markdown = render_markdown(compare(base, new, base_name="base.json", new_name="new.json"))
    lines = markdown.splitlines()
    regressions, improvements = lines.index("### Regressions (2)"), lines.index("### Improvements (1)")
    unchanged = next(i for i, line in enumerate(lines) if line.startswith("1 of 4 entries unchanged"))
    assert lines[0] == "## Calibration compare"
    assert regressions < improvements < unchanged
    rows = [line for line in lines if line.startswith("| `")]
    # worst first: mul +100%, then add +30%; then the improvement
    assert [row.split("`")[1] for row in rows] == [
        "mul[n=1048576]/float32/cpu", ADD, RELU,
    ]
    assert "sigmoid" not in markdown


def test_json_output_has_every_compared_entry(write, main):
    code, out, _ = main(write("a.json", steady(1)), write("b.json", steady(2, relu_ms=1.3)), "--format", "json")
    assert code == 1
    data = json.loads(out)
    assert data["metric"] == "latency" and data["threshold"] == 0.1 and data["alpha"] == 0.002
    assert data["regressed"] is True and data["counts"] == {"regression": 1, "improvement": 0, "unchanged": 1}
    by_key = {e["key"]: e for e in data["entries"]}
    assert set(by_key) == {RELU, ADD}
    for entry in by_key.values():
        assert {"ratio", "p_value", "significant", "regression", "status", "base", "new"} <= set(entry)
    assert by_key[RELU]["regression"] is True and by_key[RELU]["ratio"] == pytest.approx(1.3, rel=0.02)
    assert by_key[ADD]["regression"] is False and 0 <= by_key[ADD]["p_value"] <= 1


def test_markdown_format_from_the_command_line(write, main):
    base, new = write("a.json", steady(1)), write("b.json", steady(2, relu_ms=1.3))
    code, out, _ = main(base, new, "--format", "markdown")
    assert code == 1
    assert out.startswith("## Calibration compare\n") and f"| `{RELU}` |" in out


# --------------------------------------------------------------------------- bad input


def test_missing_file_exits_2_naming_it(write, main, tmp_path):
    code, out, err = main(str(tmp_path / "nope.json"), write("b.json", steady(1)))
    assert code == 2 and out == ""
    assert err == f"error: {tmp_path / 'nope.json'}: no such profile\n"


def test_corrupt_json_exits_2(write, main, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "metadata": {')
    code, _, err = main(write("a.json", steady(1)), str(bad))
    assert code == 2
    assert f"error: {bad}: not valid JSON" in err and "truncated" in err


def test_another_schema_version_exits_2(write, main, tmp_path):
    data = json.loads(steady(1).model_dump_json())
    data["schema_version"] = 99
    other = tmp_path / "v99.json"
    other.write_text(json.dumps(data))
    code, _, err = main(write("a.json", steady(1)), str(other))
    assert code == 2
    assert "field 'schema_version' is 99; this version of calibration reads schema version 1" in err


def test_nothing_in_common_exits_2(write, main):
    base = profile({"relu": noisy(1.0, 0.01, 1)})
    new = profile({"add": noisy(1.0, 0.01, 2)})
    with pytest.raises(NothingInCommon):
        compare(base, new)
    code, _, err = main(write("a.json", base), write("b.json", new))
    assert code == 2
    assert "have no entries in common (1 entries in" in err


@pytest.mark.parametrize("value", ["abc", "-5%", "nan", "10%%", ""])
def test_bad_threshold_exits_2_naming_the_value(write, main, value):
    a = write("a.json", steady(1))
    code, out, err = main(a, a, f"--threshold={value}")
    assert code == 2 and out == ""
    assert f"argument --threshold: --threshold must be a percentage of zero or more such as 10% or 10 " \
           f"(both ten percent), got {value!r}" in err


@pytest.mark.parametrize("value", ["0", "1", "abc"])
def test_bad_alpha_exits_2(write, main, value):
    a = write("a.json", steady(1))
    code, _, err = main(a, a, f"--alpha={value}")
    assert code == 2 and f"got {value!r}" in err


@pytest.mark.parametrize(
    ("text", "fraction"), [("10%", 0.1), ("10", 0.1), (" 2.5 % ", 0.025), ("0", 0.0), ("0.5", 0.005)]
)
def test_threshold_is_a_percentage_with_or_without_the_sign(text, fraction):
    assert options.parse_threshold(text) == pytest.approx(fraction)
