"""Profiles in the predecessor's JSON layout load, upgraded, and say so."""

import json

import pytest

from calibration import ProfileError, load_calibration
from calibration.cli import main
from calibration.profile.storage import LegacyProfileWarning

# The layout of the predecessor's usage guide ("JSON Structure") and its schema.py.
PREDECESSOR_PROFILE = {
    "metadata": {
        "hardware_name": "i7-12700K",
        "calibration_date": "2025-11-05T20:58:12.327496",
        "calibration_tool_version": "0.3",
        "cpu_model": "12th Gen Intel(R) Core(TM) i7-12700K",
        "cpu_count": 12,
        "total_memory_gb": 31.1,
        "python_version": "3.11.4",
        "pytorch_version": "2.1.0",
        "numpy_version": "1.26.0",
        "num_warmup_runs": 3,
        "num_measurement_runs": 10,
        "device_type": "cpu",
        "platform_architecture": "x86_64",
    },
    "theoretical_peak_gflops": 1000.0,
    "theoretical_bandwidth_gbps": 50.0,
    "best_measured_gflops": 772.4,
    "avg_measured_gflops": 758.3,
    "worst_measured_gflops": 744.1,
    "measured_bandwidth_gbps": 52.0,
    "bandwidth_efficiency": 1.039,
    "operation_profiles": {
        "matmul_large": {
            "operation_type": "matmul", "measured_gflops": 729.7, "efficiency": 0.73,
            "achieved_bandwidth_gbps": 4.3, "memory_bound": False, "compute_bound": True,
            "arithmetic_intensity": 170.7, "batch_size": 1, "input_shape": [2048, 2048],
            "output_shape": [2048, 2048], "mean_latency_ms": 23.54, "std_latency_ms": 0.4,
            "min_latency_ms": 23.0, "max_latency_ms": 24.9, "num_trials": 10,
            "extra_params": {"matrix_size": 2048}, "precision_results": {},
        }
    },
    "fusion_profiles": {
        "Linear_Bias": {
            "fusion_pattern": "Linear_Bias", "operators": ["Linear", "Bias"], "num_operators": 2,
            "unfused_latency_ms": 2.34, "fused_latency_ms": 2.36, "unfused_gflops": 219.2,
            "fused_gflops": 215.9, "speedup_factor": 0.99, "memory_reduction": 0.333,
            "gflops_improvement": -0.015, "input_shape": [512, 1024, 1024], "num_trials": 50,
        },
        "Conv2d_BN_ReLU": {
            "fusion_pattern": "Conv2d_BN_ReLU", "operators": ["Conv2d", "BN", "ReLU"], "num_operators": 3,
            "unfused_latency_ms": 12.4, "fused_latency_ms": 10.0, "unfused_gflops": 145.2,
            "fused_gflops": 180.0, "speedup_factor": 1.24, "memory_reduction": 0.628,
            "gflops_improvement": 0.24, "input_shape": [4, 128, 28, 28],
            "extra_params": {"in_channels": 128, "out_channels": 128, "kernel_size": 3}, "num_trials": 50,
        },
    },
}


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


def test_operation_profiles_drop_the_mixed_efficiency(legacy_file):
    with pytest.warns(LegacyProfileWarning):
        cal = load_calibration(legacy_file)
    (entry,) = cal.operation_profiles.values()
    assert entry.operation == "matmul" and entry.gflops == pytest.approx(729.7)
    assert entry.compute_efficiency is None and entry.bandwidth_efficiency is None
    assert entry.bottleneck.value == "compute"
    assert entry.flops == round(729.7 * 23.54e6)


def test_upgraded_profile_saves_in_the_current_schema(legacy_file, tmp_path):
    with pytest.warns(LegacyProfileWarning):
        cal = load_calibration(legacy_file)
    again = load_calibration(cal.save(tmp_path / "new.json"))  # no warning: current layout
    assert again == cal


def test_show_reads_a_predecessor_profile(legacy_file, capsys):
    with pytest.warns(LegacyProfileWarning):
        assert main(["show", str(legacy_file)]) == 0
    out = capsys.readouterr().out
    assert "upgraded from the predecessor's layout" in out
    assert "Conv2d_BN_ReLU" in out


def test_malformed_predecessor_profile_names_the_field(tmp_path):
    data = json.loads(json.dumps(PREDECESSOR_PROFILE))
    del data["fusion_profiles"]["Linear_Bias"]["fused_latency_ms"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="predecessor's layout.*'fused_latency_ms' is missing"):
        load_calibration(path)


def test_neither_layout_is_a_clear_error(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(ProfileError, match="not in the predecessor's layout.*not a calibration profile"):
        load_calibration(path)
