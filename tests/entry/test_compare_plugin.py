"""--calibrate-compare at the end of a pytest run, in pytester subprocesses timing only the
``dispatch`` case (see tests/entry/conftest.py). A regression cannot be forced by timing, so the
base profile is the first run's with its dispatch latency divided by 10: the second run
then looks 10x slower. (With a factor of 3 the test failed once, output unseen, while the
2-core machine was busy with other runs; 10x leaves a wide margin for run-to-run drift.)"""

from __future__ import annotations

import pytest
from factories import DISPATCH_KEY as KEY
from factories import run_bench as run

from calibration import load_calibration

FACTOR = 10


@pytest.mark.times_kernels
def test_a_significantly_slower_run_fails_and_names_the_entry(bench):
    first = run(bench, "--calibrate-out=base.json")
    assert first.ret == pytest.ExitCode.OK
    base = load_calibration(bench.path / "base.json")
    entry = base.operation_profiles[KEY]
    timing = entry.latency
    faster = timing.model_copy(update={
        "median_ms": timing.median_ms / FACTOR, "iqr_ms": timing.iqr_ms / FACTOR, "min_ms": timing.min_ms / FACTOR,
        "mean_ms": timing.mean_ms / FACTOR, "stddev_ms": timing.stddev_ms / FACTOR,
        "samples_ms": [s / FACTOR for s in timing.samples_ms],
    })
    base.operation_profiles[KEY] = entry.model_copy(update={"latency": faster})
    base.save(bench.path / "base.json")

    # no --calibrate-out: the profile of this run is compared in memory
    result = run(bench, "--calibrate-compare=base.json", "--calibrate-compare-fail=10%")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1)  # every test passed; the comparison failed the run
    result.stdout.fnmatch_lines([
        "*- calibration compare -*",
        "calibration compare: base.json -> this run",
        "median latency, threshold 10%, significant: Mann-Whitney U p < 0.002",
    ])
    (line,) = [line for line in result.outlines if "REGRESSION" in line]
    assert line.startswith(KEY)
    assert "calibration regressed against base.json: fails the run" in result.outlines
    assert not (bench.path / "this run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--calibrate-compare=base.json",),
         "ERROR: --calibrate-compare: base.json: not valid JSON at line 1 column 2: *(the file looks truncated)"),
        (("--calibrate-compare-fail=10%",),
         "ERROR: --calibrate-compare-fail needs --calibrate-compare=BASE.json to compare with"),
    ],
    ids=["invalid-base", "fail-without-base"],
)
def test_bad_compare_options_are_usage_errors_before_any_benchmark(bench, args, message):
    (bench.path / "base.json").write_text("{")

    result = run(bench, *args)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert not (bench.path / "ran.marker").exists()
