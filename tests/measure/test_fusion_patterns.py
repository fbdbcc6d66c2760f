"""Fusion patterns: the registry, fused-vs-unfused agreement at small shapes, the FLOP and
byte models against hand counts, folding fusion records, and speedup lookups.

No timing is asserted anywhere. The compiled-variant agreement tests run torch.compile
(inductor) once per pattern and dominate this file's run time; deselect them with
``-k "not compiled"``.
"""

import dataclasses
import math

import pytest
import torch
from factories import latency, metadata
from torch.utils.flop_counter import FlopCounterMode

from calibration.measure.fold import FusionRecord, fold, unpaired
from calibration.measure.fusion_runner import CompilerUnavailable, prepare
from calibration.measure.patterns import BUILDERS, Instance
from calibration.profile.schema import LatencyStats
from calibration.profile.storage import load_calibration
from calibration.profile.verdict import Verdict
from calibration.specs.patterns import (
    DROPOUT_P,
    FAMILIES,
    PATTERNS,
    VARIANTS,
    FusionCase,
    Pattern,
    resolve_families,
)

CPU = torch.device("cpu")

# Tiny values for every parameter name a pattern's shapes use. Kernel size, stride and
# train/eval are kept from the real shape: they change which code runs, not how much.
SMALL = {
    "B": 4, "IN": 16, "OUT": 8, "HID": 32,  # linear
    "N": 1, "CIN": 8, "COUT": 8, "GROUPS": 8, "H": 10, "W": 10,  # conv (depthwise: GROUPS = CIN)
    "L": 8, "D": 4, "E": 16,  # attention; heads H below
    "n": 64, "ROWS": 4, "COLS": 16,  # element-wise
}
ATTENTION_HEADS = 2
KEPT = {"K", "STRIDE", "train"}


def shrink(pattern: str, params) -> dict:
    """The same parameter names as ``params`` at tiny values."""
    family = PATTERNS[pattern].family
    small = {}
    for name, value in params.items():
        if name in KEPT:
            small[name] = value
        elif name == "H" and family == "attention":
            small[name] = ATTENTION_HEADS
        else:
            assert name in SMALL, f"{pattern}: no small value for parameter {name}"
            small[name] = SMALL[name]
    return small


def small_shapes(pattern: str) -> list[dict]:
    shapes = []
    for params in PATTERNS[pattern].shapes(True):
        small = shrink(pattern, params)
        if small not in shapes:
            shapes.append(small)
    return shapes


def fcase(pattern: str, variant: str = "unfused", dtype: str = "float32", **params) -> FusionCase:
    return FusionCase(pattern, tuple(params.items()), dtype, "cpu", variant)


def output(kernel):
    with torch.no_grad():
        return kernel()


def agreement_cases(variants) -> list:
    return [
        pytest.param(fcase(name, variant, **small), id=fcase(name, variant, **small).id)
        for name, pattern in PATTERNS.items()
        for small in small_shapes(name)
        for variant in pattern.variants("cpu")
        if variant in variants
    ]


# ------------------------------------------------------------------ registry

ALL_NAMES = {
    "Linear_Bias", "Linear_Bias_ReLU", "Linear_Bias_ReLU_Dropout", "Linear_Bias_GELU", "MLP",
    "Conv2d_Bias", "Conv2d_BN", "Conv2d_BN_ReLU", "Conv2d_ReLU", "Conv2d_BN_ReLU_MaxPool",
    "Conv2d_BN_ReLU6", "DWConv2d_BN_ReLU6", "Conv2d_BN_Add_ReLU",
    "QK_Softmax", "Softmax_V", "Attention", "MultiHeadAttention_Linear",
    "Add_ReLU", "Add_LayerNorm", "Mul_Add_ReLU", "Sigmoid_Mul",
}


def test_registry_holds_exactly_the_documented_patterns():
    assert len(PATTERNS) == 21
    assert set(PATTERNS) == ALL_NAMES


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_every_pattern_declares_what_it_is(name):
    pattern = PATTERNS[name]
    assert pattern.name == name
    assert pattern.family in FAMILIES
    assert len(pattern.operators) >= 2
    assert pattern.description
    assert len(pattern.shapes(False)) >= 3
    assert len(pattern.shapes(True)) >= 1
    variants = pattern.variants("cpu")
    assert variants[0] == "unfused" and "compiled" in variants
    assert set(variants) <= set(VARIANTS)
    assert ("library" in variants) == ("cpu" in pattern.library_devices)
    if pattern.library_devices:
        assert pattern.library_kernel
    for quick in (True, False):
        for c in pattern.cases(quick=quick, device="cpu"):
            assert c.flops > 0 and c.bytes > 0
            assert c.key.startswith(f"{name}[") and c.key.endswith(f"/float32/cpu/{c.variant}")


def test_case_keys_are_unique():
    keys = [c.key for p in PATTERNS.values() for c in p.cases(quick=False, device="cpu")]
    assert len(keys) == len(set(keys))
    ids = [c.id for p in PATTERNS.values() for c in p.cases(quick=False, device="cpu")]
    assert len(ids) == len(set(ids))


def test_twins_share_a_shape_key():
    cases = [c for c in PATTERNS["Add_ReLU"].cases(quick=False, device="cpu") if c.param_dict["n"] == 1 << 20]
    assert [c.variant for c in cases] == ["unfused", "library", "compiled"]
    assert len({c.shape_key for c in cases}) == 1
    assert cases[0].key == "Add_ReLU[n=1048576]/float32/cpu/unfused"
    assert cases[0].id == "Add_ReLU/n=1048576/float32/cpu/unfused"


def test_resolve_families():
    assert resolve_families(["conv"]) == {
        "Conv2d_Bias", "Conv2d_BN", "Conv2d_BN_ReLU", "Conv2d_ReLU", "Conv2d_BN_ReLU_MaxPool",
        "Conv2d_BN_ReLU6", "DWConv2d_BN_ReLU6", "Conv2d_BN_Add_ReLU",
    }
    assert resolve_families(["linear"]) == {
        "Linear_Bias", "Linear_Bias_ReLU", "Linear_Bias_ReLU_Dropout", "Linear_Bias_GELU", "MLP",
    }
    assert resolve_families(["attention"]) == {"QK_Softmax", "Softmax_V", "Attention", "MultiHeadAttention_Linear"}
    assert resolve_families(["elementwise", "MLP"]) == {"Add_ReLU", "Add_LayerNorm", "Mul_Add_ReLU", "Sigmoid_Mul",
                                                        "MLP"}
    assert resolve_families(["all"]) == ALL_NAMES
    assert resolve_families([]) == set()
    assert set().union(*(resolve_families([f]) for f in FAMILIES)) == ALL_NAMES


def test_unknown_family_names_the_choices():
    with pytest.raises(ValueError, match="unknown fusion family or pattern 'convv'; families: linear, conv"):
        resolve_families(["convv"])


def test_shrink_keeps_the_parameter_names():
    for name, pattern in PATTERNS.items():
        for params in pattern.shapes(True):
            assert list(shrink(name, params)) == list(params)
    assert shrink("DWConv2d_BN_ReLU6", PATTERNS["DWConv2d_BN_ReLU6"].shapes(True)[0])["GROUPS"] == SMALL["CIN"]
    assert shrink("Attention", {"B": 1, "H": 12, "L": 128, "D": 64}) == {"B": 4, "H": 2, "L": 8, "D": 4}


# ------------------------------------------------------------------ fused == unfused at small shapes

UNFUSED_AND_LIBRARY = agreement_cases(("unfused", "library"))
COMPILED = agreement_cases(("compiled",))


def unfused_output(c: FusionCase) -> torch.Tensor:
    return output(prepare(dataclasses.replace(c, variant="unfused")).kernel)


@pytest.mark.parametrize("c", UNFUSED_AND_LIBRARY)
def test_unfused_and_library_variants_agree(c):
    # prepare() asserts the fused output equals the unfused output before returning
    with torch.no_grad():
        prepared = prepare(c)
    out = output(prepared.kernel)
    assert isinstance(out, torch.Tensor) and torch.isfinite(out).all()
    assert out.shape == unfused_output(c).shape
    assert prepared.compile_seconds is None


@pytest.mark.parametrize("c", COMPILED)
def test_compiled_variant_agrees(c):
    try:
        with torch.no_grad():
            prepared = prepare(c)
    except CompilerUnavailable as exc:  # pragma: no cover - only without a C++ compiler
        pytest.skip(str(exc))
    assert prepared.compile_seconds is not None and prepared.compile_seconds > 0
    out = output(prepared.kernel)
    assert out.shape == unfused_output(c).shape


def test_every_pattern_and_cpu_variant_is_covered():
    covered = {(c.values[0].pattern, c.values[0].variant) for c in UNFUSED_AND_LIBRARY + COMPILED}
    assert covered == {(name, v) for name, p in PATTERNS.items() for v in p.variants("cpu")}


def _with_wrong_library(monkeypatch, name: str) -> Pattern:
    """A copy of pattern ``name`` whose library kernel adds one to the right answer."""
    real, real_build = PATTERNS[name], BUILDERS[name]

    def build(params, dtype, device) -> Instance:
        instance = real_build(params, dtype, device)
        right = instance.library
        return dataclasses.replace(instance, library=lambda: right() + 1.0)

    broken = dataclasses.replace(real, name=f"Broken_{name}")
    monkeypatch.setitem(PATTERNS, broken.name, broken)
    monkeypatch.setitem(BUILDERS, broken.name, build)
    return broken


@pytest.mark.parametrize("name", ["Add_ReLU", "Conv2d_BN_ReLU", "Linear_Bias_GELU"])
def test_a_wrong_library_kernel_fails_the_check(monkeypatch, name):
    broken = _with_wrong_library(monkeypatch, name)
    small = small_shapes(name)[0]
    with pytest.raises(AssertionError, match="fused output differs from the unfused output"):
        with torch.no_grad():
            prepare(fcase(broken.name, "library", **small))
    prepare(fcase(broken.name, "unfused", **small))  # the unfused form is not checked against anything


def test_a_quick_run_compiles_only_the_patterns_without_a_library_kernel():
    quick = {(c.pattern, c.variant) for p in PATTERNS.values() for c in p.cases(quick=True, device="cpu")}
    full = {(c.pattern, c.variant) for p in PATTERNS.values() for c in p.cases(quick=False, device="cpu")}
    assert ("Conv2d_BN_ReLU", "library") in quick and ("Conv2d_BN_ReLU", "compiled") not in quick
    assert ("Conv2d_BN_ReLU", "compiled") in full
    assert {("QK_Softmax", "unfused"), ("QK_Softmax", "compiled")} <= quick
    compiled = {name for name, variant in quick if variant == "compiled"}
    assert compiled == {name for name, p in PATTERNS.items() if "cpu" not in p.library_devices}
    # every pattern keeps a fused variant and its unfused twin
    assert {name for name, variant in quick if variant != "unfused"} == {name for name, _ in quick}


def test_library_variant_without_a_library_kernel_is_an_error():
    assert "library" not in PATTERNS["QK_Softmax"].variants("cpu")
    with pytest.raises(ValueError, match="QK_Softmax has no library kernel on cpu"):
        prepare(fcase("QK_Softmax", "library", B=1, H=2, L=8, D=4))


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="unknown fusion variant 'fused'"):
        prepare(fcase("Add_ReLU", "fused", n=64))


# ------------------------------------------------------------------ train-mode dropout

DROPOUT = {"B": 16, "IN": 32, "OUT": 64}  # 1024 outputs: about 100 dropped at p = 0.1


def seeded(c: FusionCase):
    """Prepare ``c`` with weights and inputs drawn from seed 0: every call builds the same ones."""
    torch.manual_seed(0)
    with torch.no_grad():
        return prepare(c)


def test_train_mode_dropout_draws_one_mask_in_every_form():
    train = seeded(fcase("Linear_Bias_ReLU_Dropout", **DROPOUT, train=True))
    library = seeded(fcase("Linear_Bias_ReLU_Dropout", "library", **DROPOUT, train=True))
    evaluated = seeded(fcase("Linear_Bias_ReLU_Dropout", **DROPOUT, train=False))  # only the mode differs
    first, second = output(train.kernel), output(train.kernel)
    assert torch.equal(first, second)  # reseeded before every call: the same mask
    torch.testing.assert_close(output(library.kernel), first, rtol=1e-3, atol=1e-3)  # prepare checked it too

    reference = output(evaluated.kernel)  # relu(x W^T + b), nothing dropped
    assert torch.equal(reference, output(evaluated.kernel))
    dropped = (first == 0) & (reference != 0)
    assert 0 < dropped.sum() < reference.numel() * 3 * DROPOUT_P
    kept = first != 0
    assert (kept | dropped | (reference == 0)).all()
    torch.testing.assert_close(first[kept], reference[kept] / (1 - DROPOUT_P))


def test_eval_mode_dropout_is_the_identity():
    dropout = output(seeded(fcase("Linear_Bias_ReLU_Dropout", **DROPOUT, train=False)).kernel)
    relu = output(seeded(fcase("Linear_Bias_ReLU", **DROPOUT)).kernel)
    assert torch.equal(dropout, relu)


# ------------------------------------------------------------------ FLOP and byte models: hand counts


def models(name: str, dtype: str = "float32", **params) -> tuple[int, int, int]:
    """(flops, unfused bytes, fused bytes), read through FusionCase as fold reads them."""
    unfused, fused = fcase(name, "unfused", dtype, **params), fcase(name, "compiled", dtype, **params)
    assert unfused.flops == fused.flops  # the math is the pattern's, whatever runs it
    return unfused.flops, unfused.bytes, fused.bytes


def test_linear_bias_relu_hand_count():
    flops, unfused, fused = models("Linear_Bias_ReLU", B=128, IN=768, OUT=3072)
    x, w, b, y = 128 * 768, 3072 * 768, 3072, 128 * 3072
    # GEMM, then one FLOP per output for the bias and one for the ReLU
    assert flops == 2 * 128 * 768 * 3072 + 2 * y == 604_766_208
    # GEMM writes Y; bias and ReLU each read and write it
    assert unfused == (x + w + b + y + 2 * y + 2 * y) * 4 == 17_707_008
    assert fused == (x + w + b + y) * 4 == 11_415_552
    assert 1 - fused / unfused == pytest.approx(1 - 2_853_888 / 4_426_752)


def test_linear_bias_and_gelu_hand_counts():
    y = 4 * 8
    assert models("Linear_Bias", B=4, IN=16, OUT=8) == (2 * 4 * 16 * 8 + y, (64 + 128 + 8 + 3 * y) * 4,
                                                        (64 + 128 + 8 + y) * 4)
    flops, unfused, _ = models("Linear_Bias_GELU", B=4, IN=16, OUT=8)
    assert flops == 2 * 4 * 16 * 8 + (1 + 5) * y  # bias + GELU at 5 FLOPs per element
    assert unfused == (64 + 128 + 8 + 5 * y) * 4


def test_dropout_hand_count():
    x, w, b, y = 128 * 768, 3072 * 768, 3072, 128 * 3072
    flops, unfused, fused = models("Linear_Bias_ReLU_Dropout", B=128, IN=768, OUT=3072, train=False)
    assert (flops, unfused, fused) == (604_766_208, 17_707_008, 11_415_552)  # eval: no dropout kernel
    flops, unfused, fused = models("Linear_Bias_ReLU_Dropout", B=128, IN=768, OUT=3072, train=True)
    assert flops == 604_766_208 + 2 * y  # scale the mask, multiply by it
    # + bernoulli_ writes a mask (y), div_ rescales it (2y), mul reads Y and mask, writes out (3y)
    assert unfused == (x + w + b + 5 * y + y + 2 * y + 3 * y) * 4 == 27_144_192
    assert fused == 11_415_552


def test_mlp_hand_count():
    flops, unfused, fused = models("MLP", B=128, IN=768, HID=3072)
    x = y = 128 * 768
    h = 128 * 3072
    params = 768 * 3072 + 3072 + 3072 * 768 + 768
    assert flops == 2 * 128 * 768 * 3072 * 2 + 2 * h + y == 1_208_844_288
    # fc1: GEMM writes H, bias r+w H, ReLU r+w H; fc2: GEMM reads H writes Y, bias r+w Y
    assert unfused == (x + params + h + 2 * h + 2 * h + h + y + 2 * y) * 4 == 29_899_776
    assert fused == (x + params + y) * 4 == 19_676_160


def test_conv_bn_relu_hand_count():
    # ResNet-18 layer1 3x3: 64 -> 64 channels on 56x56, stride 1, padding 1
    flops, unfused, fused = models("Conv2d_BN_ReLU", N=1, CIN=64, COUT=64, H=56, W=56, K=3, STRIDE=1)
    x = y = 64 * 56 * 56
    w, c = 64 * 64 * 9, 64
    assert flops == 2 * y * 64 * 9 + 2 * y + y == 231_813_120  # conv, BN (scale+shift), ReLU
    # conv x+w -> y; BN reads y and mean/var/gamma/beta, writes y; ReLU r+w y
    assert unfused == (x + w + y + 2 * y + 4 * c + 2 * y) * 4 == 4_965_376
    assert fused == (x + w + c + y) * 4 == 1_753_344  # BN folded into weights and one bias vector
    assert 1 - fused / unfused == pytest.approx(1 - 438_336 / 1_241_344)


def test_depthwise_conv_bn_relu6_hand_count():
    flops, unfused, fused = models("DWConv2d_BN_ReLU6", N=1, CIN=144, COUT=144, H=56, W=56, K=3, STRIDE=1,
                                   GROUPS=144)
    x = y = 144 * 56 * 56
    w, c = 144 * 1 * 9, 144
    # one input channel per group: 9 MACs per output; BN 2, ReLU6 2 (clamp below and above)
    assert flops == 2 * y * 9 + 2 * y + 2 * y == 9_934_848
    assert unfused == (x + w + y + 2 * y + 4 * c + 2 * y) * 4 == 10_845_504
    assert fused == (x + w + c + y) * 4 == 3_618_432
    # stride 2 on 112x112: 56x56 outputs
    flops, _, fused = models("DWConv2d_BN_ReLU6", N=1, CIN=96, COUT=96, H=112, W=112, K=3, STRIDE=2, GROUPS=96)
    y = 96 * 56 * 56
    assert flops == 2 * y * 9 + 4 * y
    assert fused == (96 * 112 * 112 + 96 * 9 + 96 + y) * 4


def test_conv_bn_add_relu_hand_count():
    flops, unfused, fused = models("Conv2d_BN_Add_ReLU", N=1, CIN=64, COUT=64, H=56, W=56, K=3, STRIDE=1)
    x = y = skip = 64 * 56 * 56
    w, c = 64 * 64 * 9, 64
    assert flops == 2 * y * 64 * 9 + 2 * y + y + y == 232_013_824  # conv, BN, add, ReLU
    # ... + the add reads y and the skip and writes y
    assert unfused == (x + w + y + (2 * y + 4 * c) + 3 * y + 2 * y) * 4 == 7_373_824
    assert fused == (x + w + c + skip + y) * 4 == 2_556_160


def test_resnet_stem_with_max_pool_hand_count():
    flops, unfused, fused = models("Conv2d_BN_ReLU_MaxPool", N=1, CIN=3, COUT=64, H=224, W=224, K=7, STRIDE=2)
    x, w, c = 3 * 224 * 224, 64 * 3 * 49, 64
    y = 64 * 112 * 112  # 7x7/2, padding 3
    pooled = 64 * 56 * 56  # 3x3/2, padding 1
    # conv (as tests/test_ops.py's stem), BN 2 + ReLU 1 per conv output, 8 comparisons per pooled output
    assert flops == 236_027_904 + 3 * y + 8 * pooled == 240_041_984
    # ... + the pool reads y, writes the pooled output and its int64 indices
    assert unfused == (x + w + y + 2 * y + 4 * c + 2 * y + y + pooled) * 4 + pooled * 8 == 22_316_800
    assert fused == (x + w + c + pooled) * 4 == 1_442_816


def test_attention_hand_counts():
    x = 1 * 12 * 128 * 64  # one of Q, K, V or the output
    s = 1 * 12 * 128 * 128  # the score matrix
    qk = 2 * 12 * 128 * 128 * 64
    flops, unfused, fused = models("Attention", B=1, H=12, L=128, D=64)
    assert flops == qk + qk + s * (1 + 5) == 51_511_296  # two batched GEMMs, scale, softmax (5/elem)
    # QK^T reads Q,K writes S; scale r+w S; softmax r+w S; PV reads P,V writes O
    assert unfused == (2 * x + s + 2 * s + 2 * s + s + x + x) * 4 == 6_291_456
    assert fused == (3 * x + x) * 4 == 1_572_864  # the score matrix never reaches memory
    flops, unfused, fused = models("QK_Softmax", B=1, H=12, L=128, D=64)
    assert flops == qk + s + 5 * s == 26_345_472
    assert unfused == (2 * x + s + 2 * s + 2 * s) * 4 == 4_718_592
    assert fused == (2 * x + s) * 4 == 1_572_864
    flops, unfused, fused = models("Softmax_V", B=1, H=12, L=128, D=64)
    assert flops == qk + 5 * s
    assert unfused == (2 * s + s + x + x) * 4
    assert fused == (s + x + x) * 4


def test_multi_head_attention_hand_count():
    b, length, e, heads = 1, 128, 768, 12
    x = b * length * e
    s = b * heads * length * length
    flops, unfused, fused = models("MultiHeadAttention_Linear", B=b, L=length, E=e, H=heads)
    assert flops == (2 * x * 3 * e + 3 * x) + 2 * 2 * s * (e // heads) + 6 * s + (2 * x * e + x)
    weights = 3 * e * e + 3 * e + e * e + e
    assert fused == (x + weights + x) * 4
    assert unfused == (x + 3 * x + 2 * x + s + 2 * s + 2 * s + s + x + x + 2 * x + x + x + weights) * 4


def test_elementwise_hand_counts():
    n = 1 << 20
    assert models("Add_ReLU", n=n) == (2 * n, (3 * n + 2 * n) * 4, 3 * n * 4) == (2_097_152, 20_971_520, 12_582_912)
    assert models("Sigmoid_Mul", n=n) == (5 * n, (2 * n + 3 * n) * 4, 2 * n * 4)  # sigmoid 4 + mul 1 = SiLU's 5
    assert models("Mul_Add_ReLU", n=n) == (3 * n, (3 * n + 3 * n + 2 * n) * 4, 4 * n * 4)
    rows, cols = 1024, 768
    rc = rows * cols
    # add 1 + LayerNorm 8 per element; LayerNorm reads gamma and beta
    assert models("Add_LayerNorm", ROWS=rows, COLS=cols) == (
        9 * rc, (3 * rc + 2 * rc + 2 * cols) * 4, (3 * rc + 2 * cols) * 4) == (7_077_888, 15_734_784, 9_443_328)


def test_memory_reduction_of_the_elementwise_patterns():
    def reduction(name, **p):
        _, unfused, fused = models(name, **p)
        return 1 - fused / unfused

    assert reduction("Add_ReLU", n=1000) == pytest.approx(1 - 3 / 5)
    assert reduction("Sigmoid_Mul", n=1000) == pytest.approx(1 - 2 / 5)
    assert reduction("Mul_Add_ReLU", n=1000) == pytest.approx(1 - 4 / 8)


def test_bfloat16_halves_the_bytes_not_the_flops():
    for name, pattern in PATTERNS.items():
        params = dict(pattern.shapes(True)[0])
        f32, bf16 = models(name, **params), models(name, "bfloat16", **params)
        assert bf16[0] == f32[0], name
        if name != "Conv2d_BN_ReLU_MaxPool":  # its int64 pool indices keep their size
            assert (2 * bf16[1], 2 * bf16[2]) == f32[1:], name


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_fusion_never_adds_traffic(name):
    for params in PATTERNS[name].shapes(False):
        _, unfused, fused = models(name, **params)
        assert 0 < fused < unfused


# ------------------------------------------------------------------ FLOP models against FlopCounterMode


def elementwise_flops(name: str, p: dict) -> int:
    """FLOPs FlopCounterMode does not see (it counts GEMMs and convolutions only), by hand."""
    if PATTERNS[name].family == "conv":
        ho = (p["H"] + 2 * (p["K"] // 2) - p["K"]) // p["STRIDE"] + 1
        y = p["N"] * p["COUT"] * ho * ho
        pooled = p["N"] * p["COUT"] * ((ho - 1) // 2 + 1) ** 2
    if PATTERNS[name].family == "attention" and "D" in p:
        s = p["B"] * p["H"] * p["L"] * p["L"]
    return {
        "Linear_Bias": lambda: p["B"] * p["OUT"],
        "Linear_Bias_ReLU": lambda: 2 * p["B"] * p["OUT"],
        "Linear_Bias_ReLU_Dropout": lambda: (4 if p["train"] else 2) * p["B"] * p["OUT"],
        "Linear_Bias_GELU": lambda: (1 + 5) * p["B"] * p["OUT"],
        "MLP": lambda: 2 * p["B"] * p["HID"] + p["B"] * p["IN"],
        "Conv2d_Bias": lambda: y,
        "Conv2d_BN": lambda: 2 * y,
        "Conv2d_BN_ReLU": lambda: 3 * y,
        "Conv2d_ReLU": lambda: y,
        "Conv2d_BN_ReLU_MaxPool": lambda: 3 * y + 8 * pooled,
        "Conv2d_BN_ReLU6": lambda: 4 * y,
        "DWConv2d_BN_ReLU6": lambda: 4 * y,
        "Conv2d_BN_Add_ReLU": lambda: 4 * y,
        "QK_Softmax": lambda: s + 5 * s,
        "Softmax_V": lambda: 5 * s,
        "Attention": lambda: s + 5 * s,
        # both projection biases, then scale and softmax over every head's scores
        "MultiHeadAttention_Linear": lambda: 3 * p["B"] * p["L"] * p["E"] + p["B"] * p["L"] * p["E"]
        + 6 * p["B"] * p["H"] * p["L"] * p["L"],
        "Add_ReLU": lambda: 2 * p["n"],
        "Add_LayerNorm": lambda: 9 * p["ROWS"] * p["COLS"],
        "Mul_Add_ReLU": lambda: 3 * p["n"],
        "Sigmoid_Mul": lambda: 5 * p["n"],
    }[name]()


FLOP_SHAPES = [
    pytest.param(name, small, id=fcase(name, **small).shape_key)
    for name in PATTERNS
    for small in small_shapes(name)
] + [
    # strided, non-square and batched variations of the small shapes
    pytest.param("Conv2d_BN_ReLU", {"N": 2, "CIN": 4, "COUT": 6, "H": 9, "W": 9, "K": 3, "STRIDE": 2}, id="conv-s2"),
    pytest.param("Conv2d_BN_ReLU_MaxPool", {"N": 2, "CIN": 3, "COUT": 4, "H": 16, "W": 16, "K": 7, "STRIDE": 2},
                 id="stem-16"),
    pytest.param("DWConv2d_BN_ReLU6", {"N": 1, "CIN": 6, "COUT": 6, "H": 11, "W": 11, "K": 3, "STRIDE": 2,
                                       "GROUPS": 6}, id="dw-s2"),
    pytest.param("MultiHeadAttention_Linear", {"B": 2, "L": 5, "E": 12, "H": 3}, id="mha-3heads"),
]


@pytest.mark.parametrize(("name", "params"), FLOP_SHAPES)
def test_flops_are_flop_counter_plus_hand_counted_elementwise(name, params):
    instance = BUILDERS[name](params, "float32", CPU)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        instance.unfused(*instance.inputs)
    gemm = counter.get_total_flops()
    assert (gemm > 0) == (PATTERNS[name].family != "elementwise")
    assert PATTERNS[name].flops(params) == gemm + elementwise_flops(name, params)


# ------------------------------------------------------------------ folding fusion records

SIZES = (1 << 16, 1 << 20, 1 << 24)


def frecord(variant: str, timing: float | LatencyStats, n: int = 1 << 20, **kwargs) -> FusionRecord:
    """An Add_ReLU record; a bare median gets that time in every one of 10 rounds."""
    stats = timing if isinstance(timing, LatencyStats) else latency(timing)
    return FusionRecord(fcase("Add_ReLU", variant, n=n), stats, **kwargs)


def samples(values: list[float]) -> LatencyStats:
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    return LatencyStats(median_ms=median, iqr_ms=0.0, min_ms=ordered[0], mean_ms=sum(values) / len(values),
                        stddev_ms=0.0, rounds=len(values), iterations=1, samples_ms=values)


def test_fold_computes_speedup_gflops_and_memory_reduction():
    n = 1 << 20
    cal = fold([], metadata(), fusion_records=[
        frecord("unfused", 2.0),
        frecord("library", 0.8),
        frecord("compiled", 1.6, compile_seconds=3.5),
    ])
    assert list(cal.fusion_profiles) == ["Add_ReLU"]
    library, compiled = cal.fusion_profiles["Add_ReLU"]
    assert (library.variant, compiled.variant) == ("library", "compiled")
    assert library.speedup == 2.0 / 0.8 and compiled.speedup == 2.0 / 1.6
    assert library.key == "Add_ReLU[n=1048576]/float32/cpu/library"
    assert library.family == "elementwise" and library.operators == ["Add", "ReLU"]
    assert library.params == {"n": n}
    assert library.fused_kernel == "aten._add_relu"
    assert "torch.compile" in compiled.fused_kernel
    assert library.flops == compiled.flops == 2 * n
    assert library.unfused_bytes == 5 * n * 4 and library.fused_bytes == 3 * n * 4
    assert library.memory_reduction == pytest.approx(0.4)
    assert library.unfused_gflops == pytest.approx(2 * n / 2e-3 / 1e9)
    assert library.fused_gflops == pytest.approx(2 * n / 0.8e-3 / 1e9)
    assert compiled.fused_gflops == pytest.approx(2 * n / 1.6e-3 / 1e9)
    assert library.unfused_arithmetic_intensity == pytest.approx(2 / 20)
    assert library.fused_arithmetic_intensity == pytest.approx(2 / 12)
    # identical samples in every round: the interval collapses onto the ratio
    assert library.speedup_ci_low == pytest.approx(2.5) and library.speedup_ci_high == pytest.approx(2.5)
    assert library.verdict is Verdict.FUSE and compiled.verdict is Verdict.FUSE
    assert compiled.compile_seconds == 3.5 and library.compile_seconds is None
    assert library.unfused.median_ms == 2.0 and library.fused.median_ms == 0.8


def test_fold_verdicts_from_samples():
    unfused = samples([1.00, 1.01, 0.99, 1.02, 0.98, 1.00, 1.01])
    cal = fold([], metadata(), fusion_records=[
        frecord("unfused", unfused),
        frecord("library", samples([0.50, 0.51, 0.49, 0.50, 0.52, 0.50, 0.48])),  # 2x, tight
        frecord("compiled", samples([1.30, 1.31, 1.29, 1.30, 1.32, 1.28, 1.30])),  # 0.77x, tight
        frecord("unfused", unfused, n=1 << 16),
        frecord("compiled", samples([0.5, 2.0, 0.9, 1.5, 0.6, 1.8, 0.95]), n=1 << 16),  # noisy
    ])
    library, compiled, noisy = cal.fusion_profiles["Add_ReLU"]
    assert library.verdict is Verdict.FUSE and library.speedup == pytest.approx(1.0 / 0.5)
    assert compiled.verdict is Verdict.AVOID and compiled.speedup == pytest.approx(1.0 / 1.3)
    assert compiled.speedup_ci_high < 1
    assert noisy.params == {"n": 1 << 16}
    assert noisy.speedup == pytest.approx(1.0 / 0.95) and noisy.verdict is Verdict.NEUTRAL
    assert noisy.speedup_ci_low < 1 < noisy.speedup_ci_high


def test_fold_small_significant_gain_is_neutral():
    cal = fold([], metadata(), fusion_records=[frecord("unfused", 1.03), frecord("library", 1.0)])
    (entry,) = cal.fusion_profiles["Add_ReLU"]
    assert entry.speedup_ci_low > 1 and entry.speedup == pytest.approx(1.03)
    assert entry.verdict is Verdict.NEUTRAL


def test_fold_without_samples_uses_the_point_estimate():
    bare = {"iqr_ms": 0.0, "stddev_ms": 0.0, "rounds": 5, "iterations": 1}

    def stats(ms):
        return LatencyStats(median_ms=ms, min_ms=ms, mean_ms=ms, **bare)

    cal = fold([], metadata(), fusion_records=[
        frecord("unfused", stats(1.2)),
        frecord("library", stats(1.0)),  # 1.2x
        frecord("compiled", stats(1.12)),  # 1.07x: below the 10% margin
    ])
    library, compiled = cal.fusion_profiles["Add_ReLU"]
    assert library.speedup_ci_low is None and library.speedup_ci_high is None
    assert library.verdict is Verdict.FUSE
    assert compiled.verdict is Verdict.NEUTRAL


def test_fused_record_without_its_twin_is_skipped_and_reported():
    records = [
        frecord("unfused", 2.0, n=1 << 20),
        frecord("library", 1.0, n=1 << 20),
        frecord("library", 1.0, n=1 << 16),  # its unfused twin never ran
        frecord("compiled", 1.0, n=1 << 16),
        frecord("unfused", 2.0, n=1 << 24),  # an unfused form alone is fine
    ]
    cal = fold([], metadata(), fusion_records=records)
    assert [e.key for e in cal.fusion_profiles["Add_ReLU"]] == ["Add_ReLU[n=1048576]/float32/cpu/library"]
    assert unpaired(records) == ["Add_ReLU[n=65536]/float32/cpu/library", "Add_ReLU[n=65536]/float32/cpu/compiled"]
    assert unpaired(records[:2]) == []


def test_twins_must_match_in_dtype_too():
    records = [frecord("unfused", 2.0), FusionRecord(fcase("Add_ReLU", "library", "bfloat16", n=1 << 20), latency(1.0))]
    assert fold([], metadata(), fusion_records=records).fusion_profiles == {}
    assert unpaired(records) == ["Add_ReLU[n=1048576]/bfloat16/cpu/library"]


def three_sizes() -> list[FusionRecord]:
    """Add_ReLU at three sizes; library speedups 1.2, 1.5, 1.1; compiled 1.4, 1.3, 0.9."""
    speedups = {"library": (1.2, 1.5, 1.1), "compiled": (1.4, 1.3, 0.9)}
    records = []
    for i, n in enumerate(SIZES):
        records.append(frecord("unfused", 1.0, n=n))
        for variant, values in speedups.items():
            records.append(frecord(variant, 1.0 / values[i], n=n))
    return records


@pytest.fixture
def sized():
    return fold([], metadata(), fusion_records=three_sizes())


def test_three_sizes_of_one_pattern_are_all_kept(sized):
    entries = sized.fusion_profiles["Add_ReLU"]
    assert len(entries) == 6
    assert sorted({e.params["n"] for e in entries}) == list(SIZES)
    assert [(e.params["n"], e.variant) for e in entries] == [(n, v) for n in SIZES for v in ("library", "compiled")]
    assert len({e.key for e in entries}) == 6


def test_save_and_load_keep_every_fusion_entry(sized, tmp_path):
    path = sized.save(tmp_path / "profile.json")
    loaded = load_calibration(path)
    assert loaded == sized
    assert len(loaded.fusion_profiles["Add_ReLU"]) == 6
    assert loaded.fusion_profiles["Add_ReLU"][0].verdict is Verdict.FUSE
    assert loaded.get_fusion_speedup("Add_ReLU", n=1 << 20) == pytest.approx(1.5)


# ------------------------------------------------------------------ lookups


def test_fusion_speedup_exact_shape_uses_the_fastest_variant(sized):
    assert sized.get_fusion_speedup("Add_ReLU", n=1 << 16) == pytest.approx(1.4)  # compiled
    assert sized.get_fusion_speedup("Add_ReLU", n=1 << 20) == pytest.approx(1.5)  # library
    assert sized.get_fusion_speedup("Add_ReLU", n=1 << 24) == pytest.approx(1.1)  # library
    assert sized.get_fusion_speedup("Add_ReLU", variant="compiled", n=1 << 20) == pytest.approx(1.3)
    assert sized.get_fusion_speedup("Add_ReLU", variant="library", n=1 << 16) == pytest.approx(1.2)


def test_fusion_speedup_interpolates_in_log_flops(sized):
    # n = 2^17: 2^18 FLOPs, a quarter of the way from 2^17 to 2^21 FLOPs in log space
    t = (math.log(2 * (1 << 17)) - math.log(2 * (1 << 16))) / (math.log(2 * (1 << 20)) - math.log(2 * (1 << 16)))
    assert t == pytest.approx(0.25)
    assert sized.get_fusion_speedup("Add_ReLU", n=1 << 17) == pytest.approx(1.4 + 0.25 * (1.5 - 1.4))
    assert sized.get_fusion_speedup("Add_ReLU", variant="compiled", n=1 << 17) == pytest.approx(1.375)
    assert sized.get_fusion_speedup("Add_ReLU", variant="library", n=1 << 22) == pytest.approx((1.5 + 1.1) / 2)


def test_fusion_speedup_is_clamped_beyond_the_calibrated_sizes(sized):
    assert sized.get_fusion_speedup("Add_ReLU", n=1 << 10) == pytest.approx(1.4)
    assert sized.get_fusion_speedup("Add_ReLU", n=1 << 30) == pytest.approx(1.1)
    assert sized.get_fusion_speedup("Add_ReLU", variant="compiled", n=1 << 30) == pytest.approx(0.9)


def test_fusion_speedup_without_a_shape_is_the_median_over_sizes(sized):
    assert sized.get_fusion_speedup("Add_ReLU") == pytest.approx(1.4)  # median of 1.4, 1.5, 1.1
    assert sized.get_fusion_speedup("Add_ReLU", variant="compiled") == pytest.approx(1.3)  # of 1.4, 1.3, 0.9
    assert sized.get_fusion_speedup("Add_ReLU", variant="library") == pytest.approx(1.2)  # of 1.2, 1.5, 1.1
    two = fold([], metadata(), fusion_records=three_sizes()[:6])  # the two smaller sizes
    assert two.get_fusion_speedup("Add_ReLU") == pytest.approx((1.4 + 1.5) / 2)


def test_fusion_speedup_default_when_never_calibrated(sized):
    assert sized.get_fusion_speedup("Sigmoid_Mul") == 1.0
    assert sized.get_fusion_speedup("Sigmoid_Mul", 0.7, n=1 << 20) == 0.7
    assert sized.get_fusion_speedup("Add_ReLU", 0.7, dtype="bfloat16") == 0.7
    assert sized.get_fusion_speedup("Add_ReLU", 0.7, device="cuda") == 0.7
    assert sized.get_fusion_speedup("Add_ReLU", 0.7, variant="unfused") == 0.7


def test_fusion_speedup_needs_the_parameters_of_the_flop_model(sized):
    cal = fold([], metadata(), fusion_records=[
        FusionRecord(fcase("Linear_Bias", "unfused", B=32, IN=256, OUT=256), latency(2.0)),
        FusionRecord(fcase("Linear_Bias", "library", B=32, IN=256, OUT=256), latency(1.0)),
    ])
    assert cal.get_fusion_speedup("Linear_Bias", B=32, IN=256, OUT=256) == pytest.approx(2.0)
    with pytest.raises(KeyError, match="Linear_Bias needs parameter OUT"):
        cal.get_fusion_speedup("Linear_Bias", B=64, IN=256)


def test_get_fusion_pattern_returns_the_nearest_size(sized):
    exact = sized.get_fusion_pattern("Add_ReLU", n=1 << 20)
    assert (exact.params, exact.variant) == ({"n": 1 << 20}, "library")
    near = sized.get_fusion_pattern("Add_ReLU", n=1 << 19)  # one octave from 2^20, three from 2^16
    assert (near.params, near.variant, near.speedup) == ({"n": 1 << 20}, "library", pytest.approx(1.5))
    small = sized.get_fusion_pattern("Add_ReLU", n=1 << 17)
    assert (small.params, small.variant) == ({"n": 1 << 16}, "compiled")
    assert sized.get_fusion_pattern("Add_ReLU", n=1 << 40).params == {"n": 1 << 24}
    compiled = sized.get_fusion_pattern("Add_ReLU", variant="compiled", n=1 << 19)
    assert (compiled.params, compiled.variant, compiled.speedup) == ({"n": 1 << 20}, "compiled", pytest.approx(1.3))
    assert sized.get_fusion_pattern("Add_ReLU").params == {"n": 1 << 20}  # no shape: the middle size
    assert sized.get_fusion_pattern("Sigmoid_Mul") is None
    assert sized.get_fusion_pattern("Add_ReLU", dtype="float16") is None
