"""The catalog of bad input to the pytest plugin's options: each is a usage error (pytest exit
code 4) whose message names the option and the value, raised before any case runs, leaving
every file in the folder as it was. The runs are in-process (they stop before timing
anything); the ones that calibrate run in a subprocess."""

from __future__ import annotations

import os

import pytest
from factories import BAD_PROFILES, PLUGIN_ARGS, full_profile, snapshot

from calibration import load_calibration

LONG_NAME = "x" * 300 + ".json"


@pytest.fixture
def folder(bench: pytest.Pytester) -> pytest.Pytester:
    full_profile().save(bench.path / "p.json")
    (bench.path / "notes.txt").write_text("my notes, not a profile\n")
    os.mkfifo(bench.path / "fifo")
    (bench.path / "outdir").mkdir()
    for bad in BAD_PROFILES:
        bad.write(bench.path)
    return bench


CASES = [
    ("out-empty", ["--calibrate-out="], ["--calibrate-out", "''"]),
    ("out-directory", ["--calibrate-out=outdir"], ["outdir", "directory"]),
    ("out-trailing-slash", ["--calibrate-out=newdir/"], ["newdir/"]),
    ("out-parent-missing", ["--calibrate-out=missing/p.json"], ["missing", "does not exist"]),
    ("out-fifo", ["--calibrate-out=fifo"], ["fifo", "not a regular file"]),
    ("out-not-a-profile", ["--calibrate-out=notes.txt"], ["notes.txt", "not a calibration profile"]),
    ("out-corrupt-profile", ["--calibrate-out=median-infinity.json"], ["median-infinity.json"]),
    ("out-name-too-long", [f"--calibrate-out={LONG_NAME}"], ["too long"]),
    ("out-is-benchmark-json", ["--calibrate-out=o.json", "--benchmark-json=o.json"], ["o.json", "--benchmark-json"]),
    ("compare-empty", ["--calibrate-compare="], ["--calibrate-compare", "''"]),
    ("compare-missing", ["--calibrate-compare=nope.json"], ["nope.json"]),
    ("compare-fail-without-compare", ["--calibrate-compare-fail=10%"], ["--calibrate-compare"]),
    ("compare-fail-word", ["--calibrate-compare=p.json", "--calibrate-compare-fail=abc"], ["'abc'"]),
    ("peak-duplicate-dtype", ["--calibrate-peak-gflops=float32=1,float32=2"], ["float32"]),
    ("peak-negative", ["--calibrate-peak-gflops=-5"], ["'-5'"]),
    ("bandwidth-nan", ["--calibrate-peak-bandwidth=nan"], ["'nan'"]),
    ("hardware-empty", ["--calibrate-hardware="], ["--calibrate-hardware", "''"]),
    ("threads-negative", ["--calibrate-threads=-1"], ["'-1'"]),
    ("threads-a-million", ["--calibrate-threads=1000000"], ["'1000000'"]),
    ("device-tpu", ["--calibrate-device=tpu"], ["'tpu'"]),
    ("windows-three", ["--calibrate-windows=3"], ["--windows", "'3'", "allowed: 1", "or 2"]),
    ("windows-word", ["--calibrate-windows=two"], ["--windows", "'two'"]),
    ("operations-empty", ["--calibrate-operations="], ["--calibrate-operations"]),
    ("operations-none-alone", ["--calibrate-operations=none"], ["none", "--calibrate-fusion-patterns"]),
    ("fusion-unknown", ["--calibrate-fusion-patterns=QK_Attentionscores"], ["'QK_Attentionscores'"]),
] + [
    (f"compare-{bad.id}", [f"--calibrate-compare={bad.id}.json"], [bad.names])
    for bad in BAD_PROFILES
    if bad.id in ("median-infinity", "nested-metadata", "rounds-5000-digits", "legacy-fused-zero",
                  "legacy-fusion-profiles-list", "legacy-metadata-list")
]


@pytest.mark.parametrize(("args", "named"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_option_is_a_usage_error_before_any_case_runs(folder, args, named):
    before = snapshot(folder.path)

    result = folder.runpytest_inprocess(*PLUGIN_ARGS, "--calibrate-quick", *args)

    assert result.ret == pytest.ExitCode.USAGE_ERROR, "\n".join(result.outlines + result.errlines)
    errors = [line for line in result.errlines if all(text in line for text in named)]
    assert errors, "\n".join(result.errlines)
    assert not (folder.path / "ran.marker").exists()
    assert snapshot(folder.path) == before


@pytest.mark.times_kernels
def test_a_symlinked_profile_is_written_through_to_its_target(bench):
    full_profile().save(bench.path / "target.json")
    (bench.path / "link.json").symlink_to("target.json")

    result = bench.runpytest_subprocess(*PLUGIN_ARGS, "--calibrate-quick", "--calibrate-out=link.json")

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert os.readlink(bench.path / "link.json") == "target.json"  # still the link the user made
    profile = load_calibration(bench.path / "target.json")
    assert list(profile.operation_profiles) == ["dispatch[n=1]/float32/cpu"]  # this run's, not the old one
    assert sorted(p.name for p in bench.path.iterdir() if p.name.startswith((".link.json", ".target.json"))) == []
