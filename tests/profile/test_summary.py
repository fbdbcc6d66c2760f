"""The text summary of synthetic profiles: what it says about fusion, and how it reads."""

from __future__ import annotations

import pytest
from factories import metadata

from calibration.measure.fold import FusionRecord, fold
from calibration.profile.schema import LatencyStats
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
