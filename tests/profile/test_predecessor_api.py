"""The predecessor's scripts run against today's profiles with only the import changed.

The snippets are those of its usage guide (/work/shared/reference/000_..., "Inspect All
Fusion Patterns", "Cost Model Based on Calibration", "Adaptive Fusion Strategy") and its
mapper notes (004_..., ``get_efficiency('matmul', matrix_size=N)``), run as written.
"""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
import warnings

import pytest
from factories import PREDECESSOR_PROFILE, fusion_record, latency, metadata, record

from calibration import FusionCostModel, load_calibration
from calibration.measure.fold import FusionRecord, fold
from calibration.specs.patterns import FusionCase


def _shape(pattern: str, variant: str, median_ms: float, dtype: str = "float32", **params) -> FusionRecord:
    return FusionRecord(FusionCase(pattern, tuple(params.items()), dtype, "cpu", variant), latency(median_ms))


@pytest.fixture
def profile_path(tmp_path):
    """A profile of today's kind: three sizes of Add_ReLU with two fused variants each, a
    bfloat16 size, and Linear_Bias at one size, where fusing loses."""
    records = []
    for n, unfused, library, compiled in ((1 << 12, 1.0, 0.8, 2.0), (1 << 20, 2.0, 1.0, 1.6), (1 << 24, 4.0, 2.5, 2.0)):
        records += [_shape("Add_ReLU", "unfused", unfused, n=n), _shape("Add_ReLU", "library", library, n=n),
                    _shape("Add_ReLU", "compiled", compiled, n=n)]
    records += [_shape("Add_ReLU", "unfused", 1.0, "bfloat16", n=1 << 20),
                _shape("Add_ReLU", "library", 0.1, "bfloat16", n=1 << 20)]
    records += [fusion_record("Linear_Bias", "unfused", 1.0, B=32, IN=256, OUT=256),
                fusion_record("Linear_Bias", "library", 1.25, B=32, IN=256, OUT=256)]
    cal = fold([record("matmul", 20.0, M=1024, K=1024, N=1024, path="aten")], metadata(), fusion_records=records)
    return cal.save(tmp_path / "i7_12700k_fusion.json")


@pytest.fixture
def predecessor_path(tmp_path):
    path = tmp_path / "predecessor.json"
    data = json.loads(json.dumps(PREDECESSOR_PROFILE))
    data["fusion_profiles"]["QK_AttentionScores"] = {
        "fusion_pattern": "QK_AttentionScores", "operators": ["MatMul", "Softmax"], "unfused_latency_ms": 1.07,
        "fused_latency_ms": 1.0, "speedup_factor": 1.07, "memory_reduction": 0.571, "num_trials": 50,
    }
    path.write_text(json.dumps(data))
    return path


# 000, "Inspect All Fusion Patterns", with its import changed from graphs.hardware.calibration.
INSPECT = """
from calibration import load_calibration
from pathlib import Path

calibration = load_calibration(Path(PROFILE))

print(f"Found {len(calibration.fusion_profiles)} fusion patterns:\\n")

for pattern, profile in calibration.fusion_profiles.items():
    print(f"{pattern}:")
    print(f"  Operators: {' + '.join(profile.operators)}")
    print(f"  Speedup: {profile.speedup_factor:.2f}×")
    print(f"  Memory reduction: {profile.memory_reduction*100:.1f}%")
    print(f"  GFLOPS improvement: {profile.gflops_improvement*100:+.1f}%")

    # Determine if fusion is beneficial
    if profile.speedup_factor > 1.2:
        print(f"  ✓ Strong benefit - recommended for partitioner")
    elif profile.speedup_factor > 1.1:
        print(f"  ✓ Moderate benefit")
    elif profile.speedup_factor > 0.95:
        print(f"  ⚠ Minimal benefit")
    else:
        print(f"  ✗ Fusion hurts performance - avoid!")
    print()
"""


def _run(snippet: str, **names) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a predecessor profile warns that it was upgraded
        exec(textwrap.dedent(snippet), dict(names))  # noqa: S102 - the predecessor's snippet, verbatim
    return out.getvalue()


@pytest.mark.parametrize("which", ["today", "predecessor"])
def test_the_inspection_loop_runs_unchanged(profile_path, predecessor_path, which):
    path = profile_path if which == "today" else predecessor_path
    printed = _run(INSPECT, PROFILE=str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = load_calibration(path)
    assert printed.startswith(f"Found {len(cal.fusion_profiles)} fusion patterns:")
    for pattern, entries in cal.fusion_profiles.items():
        speedup = cal.get_fusion_speedup(pattern)
        assert f"{pattern}:\n  Operators: {' + '.join(entries.operators)}\n  Speedup: {speedup:.2f}×\n" in printed


def test_the_per_pattern_numbers_agree_with_the_queries_and_every_entry_stays(profile_path):
    cal = load_calibration(profile_path)
    add_relu = cal.fusion_profiles["Add_ReLU"]
    # fastest variant per float32 size: 1.25 (library), 2.0 (library), 2.0 (compiled); median 2.0
    assert add_relu.speedup_factor == cal.get_fusion_speedup("Add_ReLU") == pytest.approx(2.0)
    assert add_relu.gflops_improvement == pytest.approx(1.0)
    assert add_relu.memory_reduction == pytest.approx(0.4)  # 5 words unfused, 3 fused
    assert add_relu.operators == ["Add", "ReLU"] and add_relu.num_operators == 2
    assert add_relu.fusion_pattern == "Add_ReLU"
    assert len(add_relu) == 7  # 3 sizes x 2 variants, and the bfloat16 size: every entry is there
    assert {(e.dtype, e.variant) for e in add_relu} >= {("bfloat16", "library"), ("float32", "compiled")}
    assert add_relu[0].params == {"n": 1 << 12}
    linear = cal.fusion_profiles["Linear_Bias"]
    assert linear.speedup_factor == pytest.approx(0.8) and linear.gflops_improvement == pytest.approx(-0.2)
    # the JSON is today's: a list of entries per pattern
    assert isinstance(json.loads(profile_path.read_text())["fusion_profiles"]["Add_ReLU"], list)


def test_the_predecessors_cost_model_class_runs_unchanged(profile_path):
    snippet = """
    from calibration import load_calibration
    from pathlib import Path

    class CalibrationBasedCostModel:
        def __init__(self, calibration_path: Path):
            self.calibration = load_calibration(calibration_path)

        def should_fuse(self, op1: str, op2: str, threshold: float = 1.1) -> bool:
            pattern = f"{op1}_{op2}"
            speedup = self.calibration.get_fusion_speedup(pattern, default=1.0)
            return speedup >= threshold

        def get_fusion_patterns(self, min_speedup: float = 1.1) -> list:
            beneficial = []
            for pattern, profile in self.calibration.fusion_profiles.items():
                if profile.speedup_factor >= min_speedup:
                    beneficial.append({
                        'pattern': pattern,
                        'speedup': profile.speedup_factor,
                        'memory_reduction': profile.memory_reduction
                    })
            return sorted(beneficial, key=lambda x: x['speedup'], reverse=True)

    cost_model = CalibrationBasedCostModel(Path(PROFILE))
    print(cost_model.should_fuse('Linear', 'Bias'), cost_model.should_fuse('Add', 'ReLU'))
    for pattern_info in cost_model.get_fusion_patterns(min_speedup=1.1):
        print(f"  {pattern_info['pattern']}: {pattern_info['speedup']:.2f}× speedup")
    """
    assert _run(snippet, PROFILE=str(profile_path)) == "False True\n  Add_ReLU: 2.00× speedup\n"


def test_the_cost_model_helpers_exist_in_todays_terms(profile_path):
    model = FusionCostModel(profile_path)
    assert model.should_fuse("Add", "ReLU") and not model.should_fuse("Linear", "Bias")
    assert not model.should_fuse("Add", "ReLU", threshold=2.5)
    assert model.should_fuse("Add", "ReLU", n=1 << 20)  # 2.0x at that size
    assert not model.should_fuse("Add", "ReLU", threshold=1.5, n=1 << 12)  # 1.25x there
    assert not model.should_fuse("Nothing", "Measured")  # never calibrated: no benefit
    assert model.fusion_benefit("Linear_Bias") == pytest.approx(0.8)
    (add_relu,) = model.get_fusion_patterns(min_speedup=1.1)
    assert add_relu == {"pattern": "Add_ReLU", "speedup": pytest.approx(2.0), "memory_reduction": pytest.approx(0.4),
                        "sizes": 3, "fuse_at": 3}
    assert [p["pattern"] for p in model.get_fusion_patterns(min_speedup=0.5)] == ["Add_ReLU", "Linear_Bias"]


def test_the_adaptive_strategy_snippet_runs_unchanged(predecessor_path):
    snippet = """
    from calibration import load_calibration
    from pathlib import Path

    calibration = load_calibration(Path(PROFILE))
    strategy = {}
    for pattern, profile in calibration.fusion_profiles.items():
        if profile.speedup_factor >= 1.5:
            priority = 'HIGH'
        elif profile.speedup_factor >= 1.1:
            priority = 'MEDIUM'
        elif profile.speedup_factor >= 0.95:
            priority = 'LOW'
        else:
            priority = 'AVOID'
        strategy[pattern] = {'priority': priority, 'speedup': profile.speedup_factor,
                             'memory_reduction': profile.memory_reduction}
    for pattern, info in sorted(strategy.items(), key=lambda x: x[1]['speedup'], reverse=True):
        print(f"{pattern}: {info['priority']} ({info['speedup']:.2f}×, {info['memory_reduction']*100:.1f}%)")
    """
    assert _run(snippet, PROFILE=str(predecessor_path)).splitlines() == [
        "Conv2d_BN_ReLU: MEDIUM (1.24×, 62.8%)",
        "QK_Softmax: LOW (1.07×, 57.1%)",  # stored under today's name
        "Linear_Bias: LOW (0.99×, 33.3%)",
    ]


def test_the_predecessors_pattern_names_resolve_with_a_deprecation_warning(predecessor_path):
    with pytest.warns(UserWarning, match="pattern QK_AttentionScores is QK_Softmax now"):
        cal = load_calibration(predecessor_path)
    with pytest.warns(DeprecationWarning, match="'QK_AttentionScores' is the predecessor's name; it is 'QK_Softmax'"):
        assert cal.get_fusion_speedup("QK_AttentionScores") == pytest.approx(1.07)
    with pytest.warns(DeprecationWarning, match="'FullAttention_SDPA'"):
        assert cal.get_fusion_pattern("FullAttention_SDPA") is None  # not in this profile: none, as for any
    with pytest.warns(DeprecationWarning, match="'Conv2d_BatchNorm2d_ReLU'"):  # its partitioner's spelling
        assert cal.get_fusion_speedup("Conv2d_BatchNorm2d_ReLU") == pytest.approx(1.24)


def test_matrix_size_means_a_square_matmul_with_a_deprecation_warning(profile_path, predecessor_path):
    cal = load_calibration(profile_path)
    with pytest.warns(DeprecationWarning, match="matrix_size=N\\) is the predecessor's form; it means M=K=N=N"):
        by_size = cal.get_efficiency("matmul", matrix_size=1024, metric="compute")
    assert by_size == cal.get_efficiency("matmul", M=1024, K=1024, N=1024, metric="compute") == 1.0
    with pytest.raises(TypeError, match="matrix_size or M, not both"):
        cal.get_efficiency("matmul", matrix_size=1024, M=5)


def test_a_predecessor_profile_answers_for_the_matmuls_it_holds(predecessor_path):
    with pytest.warns(UserWarning):
        cal = load_calibration(predecessor_path)
    # its one matmul (2048^3) is the best it measured: efficiency 1 there and, held flat, below
    assert cal.get_efficiency("matmul", M=512, K=512, N=512) == 1.0
    assert cal.get_efficiency("matmul", M=2048, K=2048, N=2048, metric="compute") == 1.0
    with pytest.warns(DeprecationWarning):
        assert cal.get_efficiency("matmul", matrix_size=2048) == 1.0
    with pytest.raises(KeyError, match="no matmul entries for dtype float32 on cpu with variant \\('mkldnn'"):
        cal.get_efficiency("matmul", M=512, K=512, N=512, path="mkldnn")
