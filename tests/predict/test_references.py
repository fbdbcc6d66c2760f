"""Which of a model's kernels the accuracy protocol re-times as its drift yardstick."""

from __future__ import annotations

import pytest
import torch
from factories import metadata, record
from torch import nn

from calibration.measure.fold import fold
from calibration.predict.mapper import CPUMapper
from calibration.predict.plan import partition
from calibration.predict.references import own_references


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32)).eval()


def _records():
    n = 1 << 25
    return [
        record("matmul", 21.5, M=1024, K=1024, N=1024, path="aten"),
        record("stream_triad", 20.0, n=n),
        record("dispatch", 0.002, n=1),
        record("linear", 1.0, B=4, IN=64, OUT=32),   # the first layer
        record("linear", 0.6, B=4, IN=32, OUT=32),   # the second and third: one entry, two kernels
        record("relu", 0.005, n=128),
    ]


def _profile():
    return fold(_records(), metadata(cache_sizes={}))


def test_the_kernels_standing_for_the_most_predicted_time_come_first_summed_per_entry():
    cal = _profile()
    part = partition(_mlp(), torch.randn(4, 64), cal)
    estimate = CPUMapper(cal).estimate(part)
    refs = own_references(part, estimate, cal)
    keys = [case.key for case, _, _ in refs]
    # 2 x 0.6 ms at the 32->32 entry outweighs the one 1 ms kernel; the relus (0.005 ms each,
    # under 3% of the prediction) are no yardstick
    assert keys == ["linear[B=4,IN=32,OUT=32]/float32/cpu", "linear[B=4,IN=64,OUT=32]/float32/cpu"]
    assert [ms for _, ms, _ in refs] == pytest.approx([1.2, 1.0], rel=1e-6)
    assert refs[0][2] in ("compute", "memory")
    assert own_references(part, estimate, cal, limit=1)[0][0].key == keys[0]
    assert own_references(part, estimate, cal, min_share=0.99) == []


def test_a_kernel_the_profile_lacks_stands_on_the_nearest_shapes_of_its_variant():
    far = record("linear", 5.0, B=64, IN=1024, OUT=1024)  # a GEMM too, but 2^10 x the work
    gemv = record("linear", 0.5, B=1, IN=64, OUT=32)  # nearer by work, but the one-row variant
    cal = fold([*_records(), far, gemv], metadata(cache_sizes={}))
    part = partition(_mlp(), torch.randn(8, 64), cal)  # batch 8: no entry at B=8
    estimate = CPUMapper(cal).estimate(part)
    refs = own_references(part, estimate, cal)
    keys = {case.key for case, _, _ in refs}
    assert keys == {"linear[B=4,IN=64,OUT=32]/float32/cpu", "linear[B=4,IN=32,OUT=32]/float32/cpu"}
    # every linear's time is split between the two shapes it stands on: nothing lost, nothing counted twice
    linears = sum(k.seconds for sg in estimate.subgraphs for k in sg.kernels if k.operation == "linear") * 1e3
    assert sum(ms for _, ms, _ in refs) == pytest.approx(linears, rel=1e-6)


def test_the_fused_estimate_is_refused():
    cal = _profile()
    part = partition(_mlp(), torch.randn(4, 64), cal)
    with pytest.raises(ValueError, match="eager"):
        own_references(part, CPUMapper(cal).estimate(part, "fused"), cal)
