"""Profiles in the predecessor's JSON layout load, upgraded, and say so."""

import json

import pytest
from factories import PREDECESSOR_PROFILE

from calibration import ProfileError, load_calibration
from calibration.cli import main
from calibration.profile.storage import LegacyProfileWarning


@pytest.fixture
def legacy_file(tmp_path):
    path = tmp_path / "i7_12700k_fusion.json"
    path.write_text(json.dumps(PREDECESSOR_PROFILE))
    return path


def test_predecessor_profile_is_upgraded_with_a_warning(legacy_file):
    with pytest.warns(LegacyProfileWarning, match="upgraded from the predecessor's layout"):
        cal = load_calibration(legacy_file)
    assert cal.metadata.hardware_name == "i7-12700K"
    assert cal.metadata.upgraded_from is not None
    assert cal.metadata.date.year == 2025
    assert cal.peak_gflops["float32"].value == 1000.0
    assert cal.peak_bandwidth_gbps.value == 50.0


def test_fusion_profiles_keep_speedups_without_inventing_intervals(legacy_file):
    with pytest.warns(LegacyProfileWarning):
        cal = load_calibration(legacy_file)
    assert cal.get_fusion_speedup("Linear_Bias") == pytest.approx(0.99)
    conv = cal.get_fusion_pattern("Conv2d_BN_ReLU")
    assert conv.speedup == pytest.approx(1.24)
    assert conv.speedup_ci_low is None and conv.speedup_ci_high is None
    assert conv.verdict.value == "fuse"  # 1.24 clears the 10% point-estimate margin
    assert cal.get_fusion_pattern("Linear_Bias").verdict.value == "neutral"
    assert conv.unfused.median_ms == 12.4 and "mean" in conv.unfused.source
    assert conv.params["input_shape"] == "4x128x28x28" and conv.params["kernel_size"] == 3


def test_a_square_matmul_becomes_a_registry_entry_scored_against_the_best_matmul(legacy_file):
    with pytest.warns(LegacyProfileWarning):
        cal = load_calibration(legacy_file)
    (entry,) = cal.operation_profiles.values()
    assert entry.key == "matmul[M=2048,K=2048,N=2048,path=aten]/float32/cpu"
    assert entry.flops == 2 * 2048**3  # the registry's FLOP model, not the predecessor's rate x time
    assert entry.gflops == pytest.approx(2 * 2048**3 / 23.54e6)  # 729.8; the file said 729.7
    # its own 0.73 (of an assumed 1000 GFLOPS peak) is dropped; the best matmul is the ceiling
    assert entry.compute_efficiency == 1.0 and entry.bandwidth_efficiency is None
    assert cal.measured.compute_ceiling_gflops == {"float32": entry.gflops}
    assert entry.bottleneck.value == "compute"
    assert entry.latency.median_ms == 23.54 and "mean" in entry.latency.source


def test_upgraded_profile_saves_in_the_current_schema(legacy_file, tmp_path):
    with pytest.warns(LegacyProfileWarning):
        cal = load_calibration(legacy_file)
    again = load_calibration(cal.save(tmp_path / "new.json"))  # no warning: current layout
    assert again == cal


def test_show_reads_a_predecessor_profile(legacy_file, capsys):
    assert main(["show", str(legacy_file)]) == 0
    out, err = capsys.readouterr()
    assert "upgraded from the predecessor's layout" in out
    assert "Conv2d_BN_ReLU" in out
    # the command line says it once, on one line
    assert err.splitlines() == [f"warning: {legacy_file}: upgraded from the predecessor's layout "
                                "(graphs.hardware.calibration); save it to write the current schema (version 1)"]


def test_malformed_predecessor_profile_names_the_field(tmp_path):
    data = json.loads(json.dumps(PREDECESSOR_PROFILE))
    del data["fusion_profiles"]["Linear_Bias"]["fused_latency_ms"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    field = r"'fusion_profiles\.Linear_Bias\.fused_latency_ms' is missing"
    with pytest.raises(ProfileError, match=r"predecessor's layout.*" + field):
        load_calibration(path)


def test_neither_layout_is_a_clear_error(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(ProfileError, match="not in the predecessor's layout.*not a calibration profile"):
        load_calibration(path)
