"""The registry of fusion patterns: the only place pattern names are defined.

Each :class:`Pattern` declares its family, operators, shapes (full and quick, drawn from
real models), the library fused kernel where the framework has one, and FLOP and byte
models of the unfused and the fused forms. The torch side (the unfused ``nn.Module``, which
runs each operator as its own eager kernel and is also what ``torch.compile`` compiles,
and the library call) is built in :mod:`calibration.measure.patterns` from the pattern's
``config``.

Byte models: *unfused* sums each operator's own compulsory traffic (an intermediate is
written by one kernel and read back by the next); *fused* is the ideal single kernel:
external inputs and parameters read once, the final output written once. FLOPs are the
same for both forms (the math is the pattern's; folding BN into the conv weights saves
work, which shows up as speed, not as fewer FLOPs of the pattern).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from calibration.specs.dtypes import itemsize
from calibration.specs.keys import ParamValue, operation_key
from calibration.specs.operations import ELEMENTWISE_FLOPS, Params, conv_out, fixed
from calibration.specs.params import Checked

VARIANTS = ("unfused", "library", "compiled")
DROPOUT_P = 0.1


@dataclass(frozen=True)
class Pattern(Checked):
    name: str
    family: str
    operators: tuple[str, ...]
    description: str
    shapes: Callable[[bool], tuple[Params, ...]]
    flops: Callable[[Params], int]
    bytes_unfused: Callable[[Params, int], int]
    bytes_fused: Callable[[Params, int], int]
    # Devices on which the framework offers a fused kernel for this pattern.
    library_devices: tuple[str, ...] = ()
    library_kernel: str = ""
    # What the unfused form computes, for the builder (activation, bias, BN, residual...).
    config: Mapping[str, ParamValue] = field(default_factory=dict)

    def variants(self, device: str, *, quick: bool = False) -> tuple[str, ...]:
        """The variants timed on ``device``: the library's where it has a fused kernel there.
        A quick run compiles only the patterns it has none for: inductor took 0.2-6 s a pattern
        on a 2-vCPU Xeon with a warm compile cache (22 patterns: 22 of a quick run's 75 s), and
        longer with a cold one; the full run times every pattern compiled."""
        library = device in self.library_devices
        return tuple(v for v in VARIANTS
                     if (v != "library" or library) and not (quick and v == "compiled" and library))

    def cases(self, *, quick: bool, device: str, dtypes: Iterable[str] = ("float32",)) -> list[FusionCase]:
        return [
            FusionCase(self.name, tuple(params.items()), dtype, device, variant)
            for params in self.shapes(quick)
            for dtype in dtypes
            for variant in self.variants(device, quick=quick)
        ]


@dataclass(frozen=True)
class FusionCase:
    pattern: str
    params: tuple[tuple[str, ParamValue], ...]
    dtype: str
    device: str
    variant: str

    @property
    def param_dict(self) -> dict[str, ParamValue]:
        return dict(self.params)

    @property
    def spec(self) -> Pattern:
        return PATTERNS[self.pattern]

    @property
    def shape_key(self) -> str:
        """Key shared by the twins: pattern, shape, dtype, device."""
        return operation_key(self.pattern, self.param_dict, self.dtype, self.device)

    @property
    def key(self) -> str:
        return f"{self.shape_key}/{self.variant}"

    @property
    def id(self) -> str:
        return self.key.replace("]/", "/").replace("[", "/", 1)

    @property
    def flops(self) -> int:
        return self.spec.flops(self.param_dict)

    @property
    def bytes(self) -> int:
        size = itemsize(self.dtype)
        params = self.param_dict
        if self.variant == "unfused":
            return self.spec.bytes_unfused(params, size)
        return self.spec.bytes_fused(params, size)


# =========================================================================== linear


def _linear_sizes(p: Params) -> tuple[int, int, int, int]:
    return p["B"] * p["IN"], p["OUT"] * p["IN"], p["OUT"], p["B"] * p["OUT"]


def _linear_flops(extra_per_output: int) -> Callable[[Params], int]:
    return lambda p: 2 * p["B"] * p["IN"] * p["OUT"] + (1 + extra_per_output) * p["B"] * p["OUT"]


def _linear_bytes(unfused_output_passes: int) -> Callable[[Params, int], int]:
    """X + W + b, plus the output written once by the GEMM and then read+written by each
    later element-wise kernel (``unfused_output_passes`` of them in total, GEMM included)."""

    def nbytes(p: Params, size: int) -> int:
        x, w, b, y = _linear_sizes(p)
        return (x + w + b + (2 * unfused_output_passes - 1) * y) * size

    return nbytes


def _linear_fused_bytes(p: Params, size: int) -> int:
    x, w, b, y = _linear_sizes(p)
    return (x + w + b + y) * size


def _dropout_unfused_bytes(p: Params, size: int) -> int:
    # train, eager CPU dropout is three kernels over a mask of Y elements in Y's dtype:
    # bernoulli_ writes it, div_ rescales it in place (read + write), and the multiply
    # reads Y and the mask and writes the output. Eval-mode dropout launches nothing.
    x, w, b, y = _linear_sizes(p)
    passes = 3  # GEMM, bias, relu
    dropout = (1 + 2 + 3) * y if p["train"] else 0
    return (x + w + b + (2 * passes - 1) * y + dropout) * size


LINEAR_SHAPES = fixed(
    full=(
        {"B": 32, "IN": 256, "OUT": 256},  # small MLP head: cache-resident
        {"B": 128, "IN": 768, "OUT": 3072},  # BERT-base FFN up-projection, seq 128
        {"B": 2048, "IN": 1024, "OUT": 4096},  # large-batch FFN: 32 MiB output, DRAM
    ),
    quick=({"B": 128, "IN": 768, "OUT": 3072},),
)


def _linear_pattern(name: str, operators: tuple[str, ...], activation: str, description: str,
                    extra_flops: int, passes: int) -> Pattern:
    return Pattern(
        name=name, family="linear", operators=operators, description=description,
        shapes=LINEAR_SHAPES, config={"activation": activation},
        flops=_linear_flops(extra_flops), bytes_unfused=_linear_bytes(passes),
        bytes_fused=_linear_fused_bytes, library_devices=("cpu",),
        library_kernel="F.linear (addmm)" if activation == "none" else f"oneDNN _linear_pointwise({activation})",
    )


def _mlp_flops(p: Params) -> int:
    b, fin, hid = p["B"], p["IN"], p["HID"]
    # two GEMMs, bias + relu on the hidden layer, bias on the output
    return 2 * b * fin * hid + 2 * b * hid * fin + 2 * b * hid + b * fin


def _mlp_bytes(fused: bool) -> Callable[[Params, int], int]:
    def nbytes(p: Params, size: int) -> int:
        b, fin, hid = p["B"], p["IN"], p["HID"]
        params = 2 * fin * hid + hid + fin
        x = y = b * fin
        h = b * hid
        if fused:
            return (x + params + y) * size
        # fc1 GEMM writes H, bias and relu each read+write H; fc2 reads H, writes Y, bias r+w Y
        return (x + params + 6 * h + 3 * y) * size

    return nbytes


# =========================================================================== conv


def _conv_dims(p: Params) -> tuple[int, int, int, int, int]:
    """(input, weight, output, pooled output, channels) element counts."""
    ho = conv_out(p["H"], p["K"], p["STRIDE"], p["K"] // 2)
    pooled = conv_out(ho, 3, 2, 1)  # the stem's 3x3/2 max pool, padding 1
    groups = p.get("GROUPS", 1)
    return (p["N"] * p["CIN"] * p["H"] * p["W"], p["COUT"] * (p["CIN"] // groups) * p["K"] ** 2,
            p["N"] * p["COUT"] * ho * ho, p["N"] * p["COUT"] * pooled * pooled, p["COUT"])


def _conv_flops(per_output: int, pool: bool = False) -> Callable[[Params], int]:
    """GEMM-equivalent conv FLOPs, ``per_output`` epilogue FLOPs per conv output, and the
    pool's K*K-1 comparisons per pooled output."""

    def flops(p: Params) -> int:
        _, w, y, pooled, _ = _conv_dims(p)
        conv = 2 * y * (p["CIN"] // p.get("GROUPS", 1)) * p["K"] ** 2
        return conv + per_output * y + (8 * pooled if pool else 0)

    return flops


def _conv_bytes(fused: bool, bias: bool = False, bn: bool = False, act: bool = False,
                residual: bool = False, pool: bool = False) -> Callable[[Params, int], int]:
    def nbytes(p: Params, size: int) -> int:
        x, w, y, pooled, c = _conv_dims(p)
        if fused:
            out = pooled if pool else y
            return (x + w + (c if (bias or bn) else 0) + (y if residual else 0) + out) * size
        total = x + w + y  # conv
        total += (2 * y + c) if bias else 0
        total += (2 * y + 4 * c) if bn else 0
        total += 3 * y if residual else 0
        total += 2 * y if act else 0
        # eager max pooling also writes int64 indices
        return total * size + ((y + pooled) * size + 8 * pooled if pool else 0)

    return nbytes


def _cv(n: int, cin: int, cout: int, hw: int, k: int, s: int, groups: int = 1) -> Params:
    params = {"N": n, "CIN": cin, "COUT": cout, "H": hw, "W": hw, "K": k, "STRIDE": s}
    if groups > 1:
        params["GROUPS"] = groups
    return params


CONV_SHAPES = fixed(
    full=(
        _cv(1, 256, 256, 14, 3, 1),  # ResNet-18 layer3 3x3: weights dominate, cache-resident
        _cv(1, 64, 64, 56, 3, 1),  # ResNet-18 layer1 3x3
        _cv(8, 64, 64, 56, 3, 1),  # the same at batch 8: 6 MiB activations per tensor
        _cv(1, 64, 128, 112, 3, 2),  # strided 3x3 on a large map
    ),
    quick=(_cv(1, 64, 64, 56, 3, 1),),
)
STEM_SHAPES = fixed(
    full=(_cv(1, 3, 64, 224, 7, 2), _cv(1, 64, 64, 56, 3, 1), _cv(8, 3, 64, 224, 7, 2)),
    quick=(_cv(1, 3, 64, 224, 7, 2),),  # ResNet-18 stem: 7x7/2 conv, BN, ReLU, 3x3/2 max pool
)
MOBILENET_SHAPES = fixed(
    full=(_cv(1, 32, 192, 28, 1, 1), _cv(1, 24, 144, 56, 1, 1), _cv(8, 24, 144, 56, 1, 1)),
    quick=(_cv(1, 24, 144, 56, 1, 1),),  # MobileNet-V2 1x1 expansion
)
DEPTHWISE_SHAPES = fixed(
    full=(_cv(1, 960, 960, 7, 3, 1, 960), _cv(1, 144, 144, 56, 3, 1, 144), _cv(8, 144, 144, 56, 3, 1, 144),
          _cv(1, 96, 96, 112, 3, 2, 96)),
    quick=(_cv(1, 144, 144, 56, 3, 1, 144),),
)


def _conv_pattern(name: str, operators: tuple[str, ...], description: str, shapes=CONV_SHAPES, *,
                  bias: bool = False, bn: bool = False, activation: str = "none", residual: bool = False,
                  pool: bool = False, library_kernel: str) -> Pattern:
    per_output = (1 if bias else 0) + (2 if bn else 0) + (1 if residual else 0) + \
        {"none": 0, "relu": 1, "relu6": 2}[activation]
    act = activation != "none"
    return Pattern(
        name=name, family="conv", operators=operators, description=description, shapes=shapes,
        config={"bias": bias, "bn": bn, "activation": activation, "residual": residual, "pool": pool},
        flops=_conv_flops(per_output, pool),
        bytes_unfused=_conv_bytes(False, bias, bn, act, residual, pool),
        bytes_fused=_conv_bytes(True, bias, bn, act, residual, pool),
        library_devices=("cpu", "cuda") if name == "Conv2d_ReLU" else ("cpu",),
        library_kernel=library_kernel,
    )


# =========================================================================== attention


def _attn_dims(p: Params) -> tuple[int, int]:
    return p["B"] * p["H"] * p["L"] * p["D"], p["B"] * p["H"] * p["L"] * p["L"]


def _qk_flops(p: Params) -> int:
    return 2 * p["B"] * p["H"] * p["L"] * p["L"] * p["D"]


ATTENTION_SHAPES = fixed(
    full=(
        {"B": 1, "H": 12, "L": 128, "D": 64},  # BERT-base, seq 128: 768 KiB of scores
        {"B": 4, "H": 8, "L": 512, "D": 64},  # 32 MiB of scores
        {"B": 8, "H": 12, "L": 512, "D": 64},  # 96 MiB of scores: DRAM
    ),
    quick=({"B": 1, "H": 12, "L": 128, "D": 64},),
)
MHA_SHAPES = fixed(
    full=({"B": 1, "L": 128, "E": 768, "H": 12}, {"B": 4, "L": 256, "E": 512, "H": 8},
          {"B": 8, "L": 512, "E": 768, "H": 12}),
    quick=({"B": 1, "L": 128, "E": 768, "H": 12},),
)


def _mha_dims(p: Params) -> tuple[int, int, int]:
    x = p["B"] * p["L"] * p["E"]
    scores = p["B"] * p["H"] * p["L"] * p["L"]
    weights = 4 * p["E"] * p["E"] + 4 * p["E"]
    return x, scores, weights


def _mha_flops(p: Params) -> int:
    x, scores, _ = _mha_dims(p)
    projections = 2 * x * 3 * p["E"] + 3 * x + 2 * x * p["E"] + x
    attention = 2 * 2 * scores * (p["E"] // p["H"]) + scores * (1 + ELEMENTWISE_FLOPS["softmax"])
    return projections + attention


def _mha_bytes(fused: bool) -> Callable[[Params, int], int]:
    def nbytes(p: Params, size: int) -> int:
        x, scores, weights = _mha_dims(p)
        if fused:
            return (x + weights + x) * size
        # in-proj (X in, 3X out), QK^T (2X in, S out), scale (2S), softmax (2S),
        # PV (S + X in, X out), head merge copy (2X), out-proj (X in, X out)
        return (x + 3 * x + 2 * x + 5 * scores + scores + 2 * x + 2 * x + 2 * x + weights) * size

    return nbytes


# =========================================================================== elementwise


ELEMENTWISE_SHAPES = fixed(
    full=({"n": 1 << 16}, {"n": 1 << 20}, {"n": 1 << 24}),  # L2-, L3-resident, DRAM-sized
    quick=({"n": 1 << 20},),
)
ROWS_SHAPES = fixed(
    full=({"ROWS": 128, "COLS": 768}, {"ROWS": 1024, "COLS": 768}, {"ROWS": 8192, "COLS": 1024}),
    quick=({"ROWS": 1024, "COLS": 768},),  # BERT-base residual + LayerNorm, batch 8 x seq 128
)


def _elementwise_bytes(words: int) -> Callable[[Params, int], int]:
    return lambda p, size: words * p["n"] * size


# =========================================================================== registry

_ALL = (
    _linear_pattern("Linear_Bias", ("Linear", "Bias"), "none", "y = x @ W^T + b", 0, 2),
    _linear_pattern("Linear_Bias_ReLU", ("Linear", "Bias", "ReLU"), "relu", "y = relu(x @ W^T + b)", 1, 3),
    Pattern(
        name="Linear_Bias_ReLU_Dropout", family="linear", operators=("Linear", "Bias", "ReLU", "Dropout"),
        description="y = dropout(relu(x @ W^T + b)), p=0.1; train mode reseeds so every form draws one mask",
        shapes=fixed(
            full=tuple({**s, "train": t} for s in LINEAR_SHAPES(False) for t in (False, True)),
            quick=tuple({**s, "train": t} for s in LINEAR_SHAPES(True) for t in (False, True)),
        ),
        config={"activation": "relu", "dropout": True},
        flops=lambda p: _linear_flops(1)(p) + (2 * p["B"] * p["OUT"] if p["train"] else 0),
        bytes_unfused=_dropout_unfused_bytes, bytes_fused=_linear_fused_bytes,
        library_devices=("cpu",), library_kernel="oneDNN _linear_pointwise(relu), then dropout",
    ),
    _linear_pattern("Linear_Bias_GELU", ("Linear", "Bias", "GELU"), "gelu", "y = gelu(x @ W^T + b)",
                    ELEMENTWISE_FLOPS["gelu"], 3),
    Pattern(
        name="MLP", family="linear", operators=("Linear", "Bias", "ReLU", "Linear", "Bias"),
        description="Linear_Bias_ReLU_Linear_Bias: x -> relu(x W1^T + b1) W2^T + b2",
        shapes=fixed(
            full=({"B": 32, "IN": 256, "HID": 1024}, {"B": 128, "IN": 768, "HID": 3072},
                  {"B": 1024, "IN": 1024, "HID": 4096}),
            quick=({"B": 128, "IN": 768, "HID": 3072},),
        ),
        flops=_mlp_flops, bytes_unfused=_mlp_bytes(False), bytes_fused=_mlp_bytes(True),
        library_devices=("cpu",), library_kernel="two oneDNN _linear_pointwise (relu, none)",
    ),
    _conv_pattern("Conv2d_Bias", ("Conv2d", "Bias"), "conv then a broadcast bias add", bias=True,
                  library_kernel="F.conv2d with bias"),
    _conv_pattern("Conv2d_BN", ("Conv2d", "BN"), "conv then eval-mode BatchNorm", bn=True,
                  library_kernel="BN folded into the conv weights and bias"),
    _conv_pattern("Conv2d_BN_ReLU", ("Conv2d", "BN", "ReLU"), "ResNet conv block", bn=True, activation="relu",
                  library_kernel="BN folded + oneDNN _convolution_pointwise(relu)"),
    _conv_pattern("Conv2d_ReLU", ("Conv2d", "ReLU"), "conv then ReLU", activation="relu",
                  library_kernel="oneDNN _convolution_pointwise(relu); cudnn_convolution_relu on CUDA"),
    _conv_pattern("Conv2d_BN_ReLU_MaxPool", ("Conv2d", "BN", "ReLU", "MaxPool"),
                  "ResNet stem: 7x7/2 conv, BN, ReLU, 3x3/2 max pool", STEM_SHAPES, bn=True, activation="relu",
                  pool=True, library_kernel="BN folded + oneDNN _convolution_pointwise(relu), then max pool"),
    _conv_pattern("Conv2d_BN_ReLU6", ("Conv2d", "BN", "ReLU6"), "MobileNet-V2 1x1 expansion", MOBILENET_SHAPES,
                  bn=True, activation="relu6",
                  library_kernel="BN folded + oneDNN _convolution_pointwise(hardtanh 0..6)"),
    _conv_pattern("DWConv2d_BN_ReLU6", ("DWConv2d", "BN", "ReLU6"), "MobileNet-V2 3x3 depthwise",
                  DEPTHWISE_SHAPES, bn=True, activation="relu6",
                  library_kernel="BN folded + oneDNN _convolution_pointwise(hardtanh 0..6)"),
    _conv_pattern("Conv2d_BN_Add_ReLU", ("Conv2d", "BN", "Add", "ReLU"), "ResNet basic-block residual join",
                  bn=True, activation="relu", residual=True,
                  library_kernel="BN folded + oneDNN _convolution_pointwise.binary(sum, relu)"),
    Pattern(
        name="QK_Softmax", family="attention", operators=("MatMul", "Scale", "Softmax"),
        description="softmax(Q @ K^T / sqrt(d))", shapes=ATTENTION_SHAPES,
        flops=lambda p: _qk_flops(p) + _attn_dims(p)[1] * (1 + ELEMENTWISE_FLOPS["softmax"]),
        bytes_unfused=lambda p, s: (2 * _attn_dims(p)[0] + 5 * _attn_dims(p)[1]) * s,
        bytes_fused=lambda p, s: (2 * _attn_dims(p)[0] + _attn_dims(p)[1]) * s,
    ),
    Pattern(
        name="Softmax_V", family="attention", operators=("Softmax", "MatMul"),
        description="softmax(S) @ V", shapes=ATTENTION_SHAPES,
        flops=lambda p: _qk_flops(p) + _attn_dims(p)[1] * ELEMENTWISE_FLOPS["softmax"],
        bytes_unfused=lambda p, s: (3 * _attn_dims(p)[1] + 2 * _attn_dims(p)[0]) * s,
        bytes_fused=lambda p, s: (_attn_dims(p)[1] + 2 * _attn_dims(p)[0]) * s,
    ),
    Pattern(
        name="Attention", family="attention", operators=("MatMul", "Scale", "Softmax", "MatMul"),
        description="softmax(Q @ K^T / sqrt(d)) @ V", shapes=ATTENTION_SHAPES,
        flops=lambda p: 2 * _qk_flops(p) + _attn_dims(p)[1] * (1 + ELEMENTWISE_FLOPS["softmax"]),
        bytes_unfused=lambda p, s: (4 * _attn_dims(p)[0] + 6 * _attn_dims(p)[1]) * s,
        bytes_fused=lambda p, s: 4 * _attn_dims(p)[0] * s,
        library_devices=("cpu", "cuda"), library_kernel="F.scaled_dot_product_attention",
    ),
    Pattern(
        name="MultiHeadAttention_Linear", family="attention",
        operators=("Linear", "MatMul", "Scale", "Softmax", "MatMul", "Linear"),
        description="packed QKV projection, multi-head attention, output projection",
        shapes=MHA_SHAPES, flops=_mha_flops,
        bytes_unfused=_mha_bytes(False), bytes_fused=_mha_bytes(True),
        library_devices=("cpu", "cuda"), library_kernel="nn.MultiheadAttention inference fast path",
    ),
    Pattern(
        name="Add_ReLU", family="elementwise", operators=("Add", "ReLU"), description="relu(a + b)",
        shapes=ELEMENTWISE_SHAPES, flops=lambda p: 2 * p["n"],
        bytes_unfused=_elementwise_bytes(5), bytes_fused=_elementwise_bytes(3),
        library_devices=("cpu",), library_kernel="aten._add_relu",
    ),
    Pattern(
        name="Add_LayerNorm", family="elementwise", operators=("Add", "LayerNorm"),
        description="layer_norm(a + b): transformer residual", shapes=ROWS_SHAPES,
        flops=lambda p: (1 + ELEMENTWISE_FLOPS["layernorm"]) * p["ROWS"] * p["COLS"],
        bytes_unfused=lambda p, s: (5 * p["ROWS"] * p["COLS"] + 2 * p["COLS"]) * s,
        bytes_fused=lambda p, s: (3 * p["ROWS"] * p["COLS"] + 2 * p["COLS"]) * s,
    ),
    Pattern(
        name="Mul_Add_ReLU", family="elementwise", operators=("Mul", "Add", "ReLU"), description="relu(a * b + c)",
        shapes=ELEMENTWISE_SHAPES, flops=lambda p: 3 * p["n"],
        bytes_unfused=_elementwise_bytes(8), bytes_fused=_elementwise_bytes(4),
        library_devices=("cpu", "cuda"), library_kernel="torch.addcmul, then in-place relu",
    ),
    Pattern(
        name="Sigmoid_Mul", family="elementwise", operators=("Sigmoid", "Mul"),
        description="x * sigmoid(x): the SiLU/SwiGLU gate", shapes=ELEMENTWISE_SHAPES,
        flops=lambda p: ELEMENTWISE_FLOPS["silu"] * p["n"],
        bytes_unfused=_elementwise_bytes(5), bytes_fused=_elementwise_bytes(2),
        library_devices=("cpu", "cuda"), library_kernel="F.silu",
    ),
)

PATTERNS: dict[str, Pattern] = {pattern.name: pattern for pattern in _ALL}
FAMILIES: dict[str, tuple[str, ...]] = {}
for _pattern in PATTERNS.values():
    FAMILIES[_pattern.family] = FAMILIES.get(_pattern.family, ()) + (_pattern.name,)


# The predecessor's names for patterns registered here under another name: its calibration
# called the attention patterns QK_AttentionScores and FullAttention_SDPA, and its
# partitioner spelled BatchNorm2d out (which is why the two never met).
RENAMED: dict[str, str] = {
    "QK_AttentionScores": "QK_Softmax",
    "FullAttention_SDPA": "Attention",
    "Conv2d_BatchNorm2d": "Conv2d_BN",
    "Conv2d_BatchNorm2d_ReLU": "Conv2d_BN_ReLU",
    "Conv2d_BatchNorm2d_ReLU6": "Conv2d_BN_ReLU6",
}


def current_name(name: str, *, stacklevel: int = 2) -> str:
    """``name``, or the registered name of a predecessor's pattern name, with a DeprecationWarning."""
    renamed = RENAMED.get(name)
    if renamed is None:
        return name
    warnings.warn(f"fusion pattern {name!r} is the predecessor's name; it is {renamed!r} now",
                  DeprecationWarning, stacklevel=stacklevel + 1)
    return renamed


def resolve_families(names: Iterable[str]) -> set[str]:
    """Pattern names selected by family (``all`` selects every pattern) or by pattern name
    (the predecessor's names too, with a DeprecationWarning)."""
    selected: set[str] = set()
    for name in names:
        name = current_name(name, stacklevel=2)
        if name == "all":
            selected.update(PATTERNS)
        elif name in FAMILIES:
            selected.update(FAMILIES[name])
        elif name in PATTERNS:
            selected.add(name)
        else:
            raise ValueError(
                f"unknown fusion family or pattern {name!r}; families: {', '.join(FAMILIES)}, or 'all'; "
                f"patterns: {', '.join(PATTERNS)}"
            )
    return selected
