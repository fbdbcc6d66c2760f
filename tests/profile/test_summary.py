"""The text summary of synthetic profiles: what it says about fusion, and how it reads."""

from __future__ import annotations

import math
import re

import pytest
from factories import metadata, record

from calibration.cli import main
from calibration.measure.fold import FusionRecord, fold
from calibration.profile.schema import LatencyStats
from calibration.profile.select import FilterError, parse_filter
from calibration.profile.verdict import Verdict
from calibration.specs.patterns import FusionCase

MLP = (("B", 128), ("IN", 768), ("HID", 3072))


def timed(median_ms: float, rounds: int = 41, spread: float = 0.02) -> LatencyStats:
    """Rounds spread evenly around the median (+-spread): a bootstrap interval of width > 0."""
    samples = [median_ms * (1 + spread * (2 * i / (rounds - 1) - 1)) for i in range(rounds)]
    return LatencyStats(median_ms=median_ms, iqr_ms=median_ms * spread, min_ms=min(samples), mean_ms=median_ms,
                        stddev_ms=median_ms * spread / 2, rounds=rounds, iterations=1, samples_ms=samples)


def mlp(variant: str, params=MLP) -> FusionCase:
    return FusionCase("MLP", params, "float32", "cpu", variant)


@pytest.fixture
def issue_profile():
    """The issue's MLP: the library variant fuses at every size; torch.compile loses at one
    and, at another, ran at 24 ms with its interleaved twin at 39.9 ms against 0.55 ms alone."""
    small = (("B", 8), ("IN", 768), ("HID", 3072))
    return fold([], metadata(), fusion_records=[
        FusionRecord(mlp("unfused"), timed(8.0)),
        FusionRecord(mlp("library"), timed(3.5, spread=0.1), baseline=timed(8.0)),
        FusionRecord(mlp("compiled"), timed(8.6), baseline=timed(8.1)),
        FusionRecord(mlp("unfused", small), timed(0.55)),
        FusionRecord(mlp("library", small), timed(0.25), baseline=timed(0.56)),
        FusionRecord(mlp("compiled", small), timed(24.0), baseline=timed(39.9), other_cpus=1.2),
    ])


def fusion_lines(cal) -> list[str]:
    text = cal.summary()
    return text[text.index("Fusion, per size"):].splitlines()


def test_each_size_and_variant_gets_its_own_times_speedup_and_interval(issue_profile):
    lines = fusion_lines(issue_profile)
    assert "  MLP[B=128,IN=768,HID=3072]  (saves 34% of the bytes; unfused alone 8000.0 us)" in lines
    rows = [line.split() for line in lines if line.startswith("    library") or line.startswith("    compiled")]
    # variant, twin us, fused us, speedup, the interval of that one size, verdict
    assert rows[0][:3] == ["compiled", "8100.0", "8600.0"] and rows[0][3] == "0.94x" and rows[0][5] == "avoid"
    assert rows[1][:4] == ["library", "8000.0", "3500.0", "2.29x"] and rows[1][5] == "fuse"
    entry = issue_profile.get_fusion_pattern("MLP", variant="library", B=128, IN=768, HID=3072)
    assert entry.speedup_ci_low < entry.speedup < entry.speedup_ci_high
    # that one size's interval, not a union over sizes (the small size's is 2.24)
    assert rows[1][4] == f"{entry.speedup_ci_low:.2f}-{entry.speedup_ci_high:.2f}"


def test_a_twin_far_from_the_unfused_case_alone_is_flagged(issue_profile):
    disturbed = issue_profile.get_fusion_pattern("MLP", variant="compiled", B=8, IN=768, HID=3072)
    assert disturbed.twin_disturbed and disturbed.unfused_alone_ms == pytest.approx(0.55)
    assert disturbed.speedup == pytest.approx(39.9 / 24.0)  # what the issue saw as "1.66x fuse"
    row = next(line for line in fusion_lines(issue_profile) if line.startswith("    compiled") and "24000.0" in line)
    assert row.split()[:4] == ["compiled", "39900.0", "24000.0", "1.66x"]
    assert row.endswith("twin 73x alone: not a fair baseline  busy")
    steady = issue_profile.get_fusion_pattern("MLP", variant="library", B=8, IN=768, HID=3072)
    assert not steady.twin_disturbed


def test_conclusions_go_by_the_fastest_variant_and_name_compile_losses_apart(issue_profile):
    lines = fusion_lines(issue_profile)
    assert "  fusion pays at every size (fastest variant): MLP" in lines
    assert not any(line.startswith("  fusion hurts") for line in lines)
    assert "  torch.compile loses where the library kernel pays: MLP" in lines
    assert issue_profile.get_fusion_pattern("MLP", B=128, IN=768, HID=3072).verdict is Verdict.FUSE


def test_fusion_hurts_only_where_even_the_fastest_variant_loses():
    cal = fold([], metadata(), fusion_records=[
        FusionRecord(mlp("unfused"), timed(8.0)),
        FusionRecord(mlp("library"), timed(9.0), baseline=timed(8.0)),
        FusionRecord(mlp("compiled"), timed(9.5), baseline=timed(8.0)),
    ])
    lines = fusion_lines(cal)
    assert "  fusion hurts (even the fastest variant loses at some size): MLP" in lines
    assert not any("torch.compile loses" in line for line in lines)


# --------------------------------------------------------------------------- show: operations


def conv(groups: int, ms: float):
    c = groups
    return record("conv2d", ms, N=1, CIN=c if groups > 1 else 64, COUT=c if groups > 1 else 64, H=56, W=56, K=3,
                  STRIDE=1, PAD=1, GROUPS=groups)


@pytest.fixture
def ops():
    return fold([conv(1, 1.2), conv(144, 0.35), conv(32, 0.02), record("relu", 0.05, n=1 << 20),
                 record("relu", 8.0, n=1 << 24), record("dispatch", 0.0011, n=1)], metadata())


def op_rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  operation "))
    return [line.split() for line in lines[start + 1:] if line.startswith("  ") and "[" in line]


def test_operation_names_are_whole_and_medians_are_all_in_microseconds(ops):
    text = ops.summary()
    header = next(line for line in text.splitlines() if line.startswith("  operation "))
    assert "median us" in header
    rows = op_rows(text)
    names = [row[0] for row in rows]
    assert "conv2d[N=1,CIN=144,COUT=144,H=56,W=56,K=3,STRIDE=1,PAD=1,GROUPS=144]" in names
    assert len(set(names)) == len(names) == 6
    medians = {row[0]: row[2] for row in rows}
    assert medians["relu[n=16777216]"] == "8000.0" and medians["dispatch[n=1]"] == "1.1"


def test_filter_keeps_matching_entries_and_counts_them(ops):
    text = ops.summary(select=parse_filter("conv2d and not GROUPS=1]"))
    assert "Operations (2 of 6 match the filter;" in text
    assert sorted(row[0].split("GROUPS=")[1] for row in op_rows(text)) == ["144]", "32]"]
    assert "Operations: none of 6 match the filter" in ops.summary(select=parse_filter("softmax"))


@pytest.mark.parametrize(("sort", "first"), [
    ("time", "relu[n=16777216]"), ("name", "conv2d[N=1,CIN=144,COUT=144,H=56,W=56,K=3,STRIDE=1,PAD=1,GROUPS=144]"),
    ("family", "conv2d[N=1,CIN=32,COUT=32,H=56,W=56,K=3,STRIDE=1,PAD=1,GROUPS=32]"),
])
def test_sort_orders_the_operations(ops, sort, first):
    assert op_rows(ops.summary(sort=sort))[0][0] == first


def test_show_takes_filter_and_sort_and_rejects_bad_ones(ops, tmp_path, capsys):
    path = str(ops.save(tmp_path / "p.json"))
    assert main(["show", path, "-k", "relu", "--sort", "time"]) == 0
    assert [row[0] for row in op_rows(capsys.readouterr().out)] == ["relu[n=16777216]", "relu[n=1048576]"]
    for args, message in ((["-k", "relu or"], "filter 'relu or': expected a name at the end"),
                          (["--sort", "speed"], "invalid choice: 'speed'")):
        with pytest.raises(SystemExit) as exc:
            main(["show", path, *args])
        assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(("expression", "matches"), [
    ("relu", ["relu[n=1]/float32/cpu", "relu[n=2]/bfloat16/cpu"]),
    ("RELU and not bfloat16", ["relu[n=1]/float32/cpu"]),
    ("add or relu and bfloat16", ["add[n=1]/float32/cpu", "relu[n=2]/bfloat16/cpu"]),  # and binds first
    ("(add or relu) and float32", ["add[n=1]/float32/cpu", "relu[n=1]/float32/cpu"]),
    ("not not add", ["add[n=1]/float32/cpu"]),
    ("n=2]", ["relu[n=2]/bfloat16/cpu"]),
])
def test_filter_expressions_work_as_pytest_k(expression, matches):
    keys = ["add[n=1]/float32/cpu", "relu[n=1]/float32/cpu", "relu[n=2]/bfloat16/cpu"]
    assert [key for key in keys if parse_filter(expression)(key)] == matches


@pytest.mark.parametrize(("expression", "message"), [
    ("", "filter '' is empty"),
    ("relu and", "expected a name at the end"),
    ("(relu", "expected ')' at the end"),
    ("relu add", "expected 'and', 'or' or the end at column 6 ('add')"),
    ("or relu", "expected a name at column 1 ('or')"),
])
def test_malformed_filters_say_where(expression, message):
    with pytest.raises(FilterError, match=re.escape(message)):
        parse_filter(expression)


def test_the_summary_says_which_llc_size_the_cold_term_uses_where_the_sweep_saw_less():
    mib, h = 2**20, 0.5
    for _ in range(200):  # the 192 MiB triad's share served by a 140 MiB cache, random replacement
        h = math.exp(-(1 - h) * 192 / 140)
    sweep = {1 << 20: 57.0, 1 << 24: 1 / (h / 57.0 + (1 - h) / 31.0), 1 << 29: 31.0}  # n: GB/s
    triads = [record("stream_triad", 12 * n / (gbps * 1e9) * 1e3, n=n) for n, gbps in sweep.items()]
    caches = {"L2": 2 * mib, "L3": 480 * mib}
    text = fold(triads, metadata(cache_sizes=caches)).summary()
    assert "last-level cache: 140 MiB, the L3 as the triad sweep saw it: 192 MiB at" in text
    assert "(the OS reports 480 MiB)" in text
    flat = [record("stream_triad", 12 * n / (gbps * 1e9) * 1e3, n=n) for n, gbps in ((1 << 20, 57.0), (1 << 29, 31.0))]
    assert "last-level cache" not in fold(flat, metadata(cache_sizes=caches)).summary()
