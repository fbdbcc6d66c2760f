"""Merging calibrations of one machine: each case at its median run, ceilings derived again."""

from datetime import datetime, timezone

import pytest
from factories import fusion_record, metadata, record

from calibration.cli import main
from calibration.measure.fold import fold
from calibration.measure.merge import MergeError, merge_profiles
from calibration.profile.storage import load_calibration

MATMUL = dict(M=1024, K=1024, N=1024, path="aten")
MATMUL_KEY = "matmul[M=1024,K=1024,N=1024,path=aten]/float32/cpu"
RELU_KEY = "relu[n=4096]/float32/cpu"


def run(day: int, matmul_ms: float, relu_ms: float | None = 0.01, fused_ms: float = 1.0, **machine):
    """One calibration on day ``day`` of November 2026."""
    records = [record("matmul", matmul_ms, **MATMUL), record("dispatch", 0.002, n=1)]
    if relu_ms is not None:
        records.append(record("relu", relu_ms, n=4096))
    return fold(records, metadata(date=datetime(2026, 11, day, tzinfo=timezone.utc), **machine),
                fusion_records=[fusion_record("Add_ReLU", "unfused", 2.0, n=1 << 20),
                                fusion_record("Add_ReLU", "library", fused_ms, n=1 << 20)])


def test_each_case_keeps_its_median_run_and_the_ceilings_follow_the_kept_entries():
    profiles = [run(1, 30.0, 0.012), run(2, 10.0, 0.030), run(3, 20.0, 0.010)]
    merged, summary = merge_profiles(profiles, names=["a.json", "b.json", "c.json"])
    matmul = merged.operation_profiles[MATMUL_KEY]
    assert matmul.latency.median_ms == 20.0  # of 30, 10 and 20
    assert merged.operation_profiles[RELU_KEY].latency.median_ms == 0.012  # of 0.012, 0.030 and 0.010
    assert "median run of 3 of 3 merged calibrations (medians 10, 20, 30 ms)" in matmul.latency.source
    # the compute ceiling is the kept matmul's rate, not the fastest run's
    assert merged.compute_ceiling("float32") == pytest.approx(2 * 1024**3 / 20e-3 / 1e9, rel=1e-6)
    assert matmul.compute_efficiency == pytest.approx(1.0)
    assert merged.metadata.merged_from == [p.metadata.date for p in profiles]
    assert merged.metadata.date == profiles[-1].metadata.date
    # relu from a, matmul from c, dispatch (equal in all three: in run order) from b
    assert summary.kept_per_profile == (1, 1, 1)
    assert summary.in_every_profile == summary.operation_entries == 3


def test_a_case_some_runs_lack_keeps_its_median_among_those_that_have_it():
    merged, summary = merge_profiles([run(1, 20.0, None), run(2, 20.0, 0.030), run(3, 20.0, 0.010)])
    relu = merged.operation_profiles[RELU_KEY]
    assert relu.latency.median_ms == 0.010  # two runs: the lower middle one
    assert "median run of 2 of 3" in relu.latency.source
    assert summary.in_every_profile == 2
    only_one = merge_profiles([run(1, 20.0, None), run(2, 20.0, None), run(3, 20.0, 0.025)])[0]
    assert only_one.operation_profiles[RELU_KEY].latency.source == "pytest-benchmark"  # one run: as it was


def test_a_fusion_entry_keeps_the_run_with_the_median_speedup():
    merged, summary = merge_profiles([run(1, 20.0, fused_ms=0.5), run(2, 20.0, fused_ms=1.6),
                                      run(3, 20.0, fused_ms=1.0)])
    (entry,) = merged.fusion_profiles["Add_ReLU"]
    assert entry.speedup == pytest.approx(2.0)  # of 4, 1.25 and 2
    assert summary.fusion_entries == 1


@pytest.mark.parametrize(("field", "value"), [("threads", 1), ("cpu_model", "Other CPU"),
                                              ("torch_version", "2.12.0+cpu"), ("cpu_capability", "AVX512")])
def test_runs_of_another_machine_or_software_are_refused_by_name(field, value):
    with pytest.raises(MergeError) as exc:
        merge_profiles([run(1, 20.0), run(2, 20.0), run(3, 20.0, **{field: value})], names=["a", "b", "c"])
    assert f"c was calibrated with {field} {value!r}" in str(exc.value)


def test_fewer_than_three_runs_are_refused():
    with pytest.raises(MergeError, match="at least 3 profiles, got 2"):
        merge_profiles([run(1, 20.0), run(2, 20.0)])


def test_the_merge_command_writes_a_profile_that_loads(tmp_path, capsys):
    paths = []
    for day, ms in ((1, 30.0), (2, 10.0), (3, 20.0)):
        paths.append(str(run(day, ms).save(tmp_path / f"run{day}.json")))
    out = tmp_path / "merged.json"
    assert main(["merge", "-o", str(out), *paths]) == 0
    said = capsys.readouterr().out
    assert "merged 3 calibrations of test-machine: 3 operation cases (3 in every one)" in said
    assert f"wrote {out}" in said
    merged = load_calibration(out)
    assert merged.operation_profiles[MATMUL_KEY].latency.median_ms == 20.0
    assert ("each case at its median run of 3 merged calibrations (2026-11-01 00:00, 2026-11-02 00:00, "
            "2026-11-03 00:00 UTC)") in merged.summary()
    assert "merged calibrations" not in run(1, 20.0).summary()


def test_the_merge_command_refuses_bad_input_and_writes_nothing(tmp_path, capsys):
    paths = [str(run(day, 20.0).save(tmp_path / f"run{day}.json")) for day in (1, 2)]
    notes = tmp_path / "notes.txt"
    notes.write_text("not json")
    other = str(run(3, 20.0, threads=1).save(tmp_path / "other.json"))
    out = tmp_path / "merged.json"
    for inputs, message in (([*paths], "at least 3 profiles, got 2"),
                            ([*paths, str(notes)], "notes.txt"),
                            ([*paths, other], "threads 1"),
                            ([*paths, str(tmp_path / "missing.json")], "missing.json")):
        assert main(["merge", "-o", str(out), *inputs]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()
    # an existing file that is not a profile is never overwritten
    assert main(["merge", "-o", str(notes), *paths, str(run(3, 20.0).save(tmp_path / "run3.json"))]) == 2
    assert "not a calibration profile" in capsys.readouterr().err
    assert notes.read_text() == "not json"
