"""The registry of fusion patterns: the only place pattern names are defined.

Each :class:`Pattern` declares its family, operators, shapes (full and quick, drawn from
real models), an input builder, the unfused form (an ``nn.Module`` running each operator
as its own eager kernel; it is also what ``torch.compile`` compiles), the library fused
kernel where the framework has one, and FLOP and byte models of the unfused and the
fused forms.

Byte models: *unfused* sums each operator's own compulsory traffic (an intermediate is
written by one kernel and read back by the next); *fused* is the ideal single kernel:
external inputs and parameters read once, the final output written once. FLOPs are the
same for both forms (the math is the pattern's; folding BN into the conv weights saves
work, which shows up as speed, not as fewer FLOPs of the pattern).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from calibration.keys import ParamValue, operation_key
from calibration.ops import DTYPES, ELEMENTWISE_FLOPS, Params, fixed

VARIANTS = ("unfused", "library", "compiled")
FUSED_VARIANTS = ("library", "compiled")
FAMILIES = ("linear", "conv", "attention", "elementwise")
DROPOUT_P = 0.1
DROPOUT_SEED = 1234


@dataclass(frozen=True)
class Instance:
    """One pattern at one shape, ready to run."""

    unfused: nn.Module
    inputs: tuple[torch.Tensor, ...]
    library: Callable[[], torch.Tensor] | None
    # Called before every forward of every variant: reseeds the RNG so train-mode dropout
    # draws the same mask in all forms.
    before_call: Callable[[], None] | None = None


@dataclass(frozen=True)
class Pattern:
    name: str
    family: str
    operators: tuple[str, ...]
    description: str
    shapes: Callable[[bool], tuple[Params, ...]]
    build: Callable[[Params, str, torch.device], Instance]
    flops: Callable[[Params], int]
    bytes_unfused: Callable[[Params, int], int]
    bytes_fused: Callable[[Params, int], int]
    # Devices on which the framework offers a fused kernel for this pattern.
    library_devices: tuple[str, ...] = ()
    library_kernel: str = ""

    def variants(self, device: str) -> tuple[str, ...]:
        return tuple(v for v in VARIANTS if v != "library" or device in self.library_devices)

    def cases(self, *, quick: bool, device: str, dtypes: Iterable[str] = ("float32",)) -> list[FusionCase]:
        return [
            FusionCase(self.name, tuple(params.items()), dtype, device, variant)
            for params in self.shapes(quick)
            for dtype in dtypes
            for variant in self.variants(device)
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
        size = DTYPES[self.dtype].itemsize
        params = self.param_dict
        return self.spec.bytes_unfused(params, size) if self.variant == "unfused" else self.spec.bytes_fused(params, size)


def _randn(shape: Iterable[int], dtype: str, device: torch.device) -> torch.Tensor:
    return torch.randn(*shape, dtype=DTYPES[dtype], device=device)


def _prepare(module: nn.Module, dtype: str, device: torch.device) -> nn.Module:
    return module.to(device=device, dtype=DTYPES[dtype]).eval().requires_grad_(False)


def _seed() -> None:
    torch.manual_seed(DROPOUT_SEED)


# =========================================================================== linear


class LinearBias(nn.Module):
    def __init__(self, fin: int, fout: int, activation: str = "none", dropout: bool = False,
                 training: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fout, fin) / math.sqrt(fin))
        self.bias = nn.Parameter(torch.randn(fout))
        self.activation, self.dropout, self.dropout_training = activation, dropout, training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weight.t())  # the GEMM alone...
        y = y + self.bias  # ...then the bias as its own kernel
        if self.activation == "relu":
            y = torch.relu(y)
        elif self.activation == "gelu":
            y = F.gelu(y)
        if self.dropout:
            y = F.dropout(y, DROPOUT_P, training=self.dropout_training)
        return y


class MLP(nn.Module):
    def __init__(self, fin: int, hidden: int):
        super().__init__()
        self.fc1 = LinearBias(fin, hidden, "relu")
        self.fc2 = LinearBias(hidden, fin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


def _onednn_linear(layer: LinearBias, batch: int, attr: str) -> Callable[[torch.Tensor], torch.Tensor]:
    packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), batch)
    bias = layer.bias.detach()
    algorithm = "none" if attr == "gelu" else ""
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, attr, [], algorithm)


def _build_linear(activation: str, dropout: bool = False):
    def build(p: Params, dtype: str, device: torch.device) -> Instance:
        training = bool(p.get("train", False))
        layer = _prepare(LinearBias(p["IN"], p["OUT"], activation, dropout, training), dtype, device)
        x = _randn((p["B"], p["IN"]), dtype, device)
        library = None
        if device.type == "cpu":
            if activation == "none":
                w, b = layer.weight, layer.bias
                library = lambda: F.linear(x, w, b)  # addmm: bias in the GEMM epilogue  # noqa: E731
            else:
                fused = _onednn_linear(layer, p["B"], activation)
                if dropout:
                    library = lambda: F.dropout(fused(x), DROPOUT_P, training=training)  # noqa: E731
                else:
                    library = lambda: fused(x)  # noqa: E731
        return Instance(layer, (x,), library, _seed if dropout and training else None)

    return build


def _build_mlp(p: Params, dtype: str, device: torch.device) -> Instance:
    mlp = _prepare(MLP(p["IN"], p["HID"]), dtype, device)
    x = _randn((p["B"], p["IN"]), dtype, device)
    library = None
    if device.type == "cpu":
        first = _onednn_linear(mlp.fc1, p["B"], "relu")
        second = _onednn_linear(mlp.fc2, p["B"], "none")
        library = lambda: second(first(x))  # noqa: E731
    return Instance(mlp, (x,), library)


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
        shapes=LINEAR_SHAPES, build=_build_linear(activation),
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


class ConvBlock(nn.Module):
    """conv -> [bias | BN] -> [+ residual] -> [relu | relu6] -> [maxpool], each its own kernel."""

    def __init__(self, p: Params, bias: bool, bn: bool, activation: str, residual: bool, pool: bool):
        super().__init__()
        self.conv = nn.Conv2d(p["CIN"], p["COUT"], p["K"], p["STRIDE"], p["K"] // 2,
                              groups=p.get("GROUPS", 1), bias=False)
        self.bias = nn.Parameter(torch.randn(p["COUT"])) if bias else None
        self.bn = nn.BatchNorm2d(p["COUT"]) if bn else None
        if self.bn is not None:  # non-trivial running statistics, as in a trained network
            with torch.no_grad():
                self.bn.running_mean.normal_()
                self.bn.running_var.uniform_(0.5, 2.0)
                self.bn.weight.normal_()
                self.bn.bias.normal_()
        self.activation, self.residual, self.pool = activation, residual, pool

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        if self.bn is not None:
            y = self.bn(y)
        if self.residual:
            y = y + rest[0]
        if self.activation == "relu":
            y = torch.relu(y)
        elif self.activation == "relu6":
            y = F.relu6(y)
        if self.pool:
            y = F.max_pool2d(y, 3, 2, 1)
        return y


def _folded(block: ConvBlock) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv weight and bias with BN (or the separate bias) folded in."""
    w = block.conv.weight.detach()
    if block.bn is not None:
        bn = block.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return (w * scale.view(-1, 1, 1, 1)).contiguous(), bn.bias - bn.running_mean * scale
    if block.bias is not None:
        return w, block.bias.detach()
    return w, torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)


def _conv_library(block: ConvBlock, p: Params, x: torch.Tensor, residual: torch.Tensor | None,
                  device: torch.device) -> Callable[[], torch.Tensor] | None:
    w, b = _folded(block)
    pad, stride, groups = [p["K"] // 2] * 2, [p["STRIDE"]] * 2, p.get("GROUPS", 1)
    if device.type != "cpu":
        if block.activation == "relu" and not block.pool and block.bn is None and block.bias is None:
            return lambda: torch.cudnn_convolution_relu(x, w, None, stride, pad, [1, 1], groups)
        return None
    attr, scalars = {"none": ("none", []), "relu": ("relu", []), "relu6": ("hardtanh", [0.0, 6.0])}[block.activation]
    if residual is not None:
        return lambda: torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual, w, b, pad, stride, [1, 1], groups, "add", 1.0, attr, scalars, "")
    if block.pool:
        return lambda: F.max_pool2d(
            torch.ops.mkldnn._convolution_pointwise(x, w, b, pad, stride, [1, 1], groups, attr, scalars, ""),
            3, 2, 1)
    if attr == "none":
        return lambda: F.conv2d(x, w, b, stride, pad, 1, groups)
    return lambda: torch.ops.mkldnn._convolution_pointwise(x, w, b, pad, stride, [1, 1], groups, attr, scalars, "")


def _build_conv(bias: bool = False, bn: bool = False, activation: str = "none", residual: bool = False,
                pool: bool = False):
    def build(p: Params, dtype: str, device: torch.device) -> Instance:
        block = _prepare(ConvBlock(p, bias, bn, activation, residual, pool), dtype, device)
        x = _randn((p["N"], p["CIN"], p["H"], p["W"]), dtype, device)
        inputs: tuple[torch.Tensor, ...] = (x,)
        skip = None
        if residual:
            ho = (p["H"] + 2 * (p["K"] // 2) - p["K"]) // p["STRIDE"] + 1
            skip = _randn((p["N"], p["COUT"], ho, ho), dtype, device)
            inputs = (x, skip)
        return Instance(block, inputs, _conv_library(block, p, x, skip, device))

    return build


def _conv_dims(p: Params) -> tuple[int, int, int, int, int]:
    """(input, weight, output, pooled output, channels) element counts."""
    ho = (p["H"] + 2 * (p["K"] // 2) - p["K"]) // p["STRIDE"] + 1
    pooled = (ho + 2 - 3) // 2 + 1
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
        build=_build_conv(bias, bn, activation, residual, pool),
        flops=_conv_flops(per_output, pool),
        bytes_unfused=_conv_bytes(False, bias, bn, act, residual, pool),
        bytes_fused=_conv_bytes(True, bias, bn, act, residual, pool),
        library_devices=("cpu", "cuda") if name == "Conv2d_ReLU" else ("cpu",),
        library_kernel=library_kernel,
    )


# =========================================================================== attention


class QKSoftmax(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(q, k.transpose(-2, -1))
        scores = scores * (q.shape[-1] ** -0.5)
        return torch.softmax(scores, dim=-1)


class SoftmaxV(nn.Module):
    def forward(self, scores: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.softmax(scores, dim=-1), v)


class Attention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
        return torch.matmul(torch.softmax(scores, dim=-1), v)


class MultiHeadAttentionLinear(nn.Module):
    """Packed QKV projection, per-head attention as separate kernels, output projection."""

    def __init__(self, embed: int, heads: int):
        super().__init__()
        self.mha = nn.MultiheadAttention(embed, heads, batch_first=True)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, embed = x.shape
        head_dim = embed // self.heads
        qkv = F.linear(x, self.mha.in_proj_weight, self.mha.in_proj_bias)
        q, k, v = qkv.view(b, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (head_dim ** -0.5)
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        context = context.transpose(1, 2).reshape(b, length, embed)
        return F.linear(context, self.mha.out_proj.weight, self.mha.out_proj.bias)


def _qkv(p: Params, dtype: str, device: torch.device, count: int) -> tuple[torch.Tensor, ...]:
    return tuple(_randn((p["B"], p["H"], p["L"], p["D"]), dtype, device) for _ in range(count))


def _build_qk_softmax(p: Params, dtype: str, device: torch.device) -> Instance:
    return Instance(_prepare(QKSoftmax(), dtype, device), _qkv(p, dtype, device, 2), None)


def _build_softmax_v(p: Params, dtype: str, device: torch.device) -> Instance:
    scores = _randn((p["B"], p["H"], p["L"], p["L"]), dtype, device)
    (v,) = _qkv(p, dtype, device, 1)
    return Instance(_prepare(SoftmaxV(), dtype, device), (scores, v), None)


def _build_attention(p: Params, dtype: str, device: torch.device) -> Instance:
    q, k, v = _qkv(p, dtype, device, 3)
    return Instance(_prepare(Attention(), dtype, device), (q, k, v),
                    lambda: F.scaled_dot_product_attention(q, k, v))


def _build_mha(p: Params, dtype: str, device: torch.device) -> Instance:
    module = _prepare(MultiHeadAttentionLinear(p["E"], p["H"]), dtype, device)
    x = _randn((p["B"], p["L"], p["E"]), dtype, device)
    mha = module.mha
    # nn.MultiheadAttention's inference fast path: one native kernel for projection,
    # attention and output projection.
    return Instance(module, (x,), lambda: mha(x, x, x, need_weights=False)[0])


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


class AddReLU(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.relu(a + b)


class AddLayerNorm(nn.Module):
    def __init__(self, cols: int):
        super().__init__()
        self.norm = nn.LayerNorm(cols)
        with torch.no_grad():
            self.norm.weight.normal_()
            self.norm.bias.normal_()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.norm(a + b)


class MulAddReLU(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.relu(a * b + c)


class SigmoidMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


ELEMENTWISE_SHAPES = fixed(
    full=({"n": 1 << 16}, {"n": 1 << 20}, {"n": 1 << 24}),  # L2-, L3-resident, DRAM-sized
    quick=({"n": 1 << 20},),
)
ROWS_SHAPES = fixed(
    full=({"ROWS": 128, "COLS": 768}, {"ROWS": 1024, "COLS": 768}, {"ROWS": 8192, "COLS": 1024}),
    quick=({"ROWS": 1024, "COLS": 768},),  # BERT-base residual + LayerNorm, batch 8 x seq 128
)


def _vectors(p: Params, dtype: str, device: torch.device, count: int) -> tuple[torch.Tensor, ...]:
    return tuple(_randn((p["n"],), dtype, device) for _ in range(count))


def _build_add_relu(p: Params, dtype: str, device: torch.device) -> Instance:
    a, b = _vectors(p, dtype, device, 2)
    return Instance(_prepare(AddReLU(), dtype, device), (a, b), lambda: torch.ops.aten._add_relu(a, b))


def _build_add_layernorm(p: Params, dtype: str, device: torch.device) -> Instance:
    module = _prepare(AddLayerNorm(p["COLS"]), dtype, device)
    a, b = (_randn((p["ROWS"], p["COLS"]), dtype, device) for _ in range(2))
    return Instance(module, (a, b), None)


def _build_mul_add_relu(p: Params, dtype: str, device: torch.device) -> Instance:
    a, b, c = _vectors(p, dtype, device, 3)
    # addcmul computes c + a * b in one kernel; the ReLU runs in place on its result.
    return Instance(_prepare(MulAddReLU(), dtype, device), (a, b, c), lambda: torch.addcmul(c, a, b).relu_())


def _build_sigmoid_mul(p: Params, dtype: str, device: torch.device) -> Instance:
    (x,) = _vectors(p, dtype, device, 1)
    return Instance(_prepare(SigmoidMul(), dtype, device), (x,), lambda: F.silu(x))


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
        build=_build_linear("relu", dropout=True),
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
        build=_build_mlp, flops=_mlp_flops, bytes_unfused=_mlp_bytes(False), bytes_fused=_mlp_bytes(True),
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
        description="softmax(Q @ K^T / sqrt(d))", shapes=ATTENTION_SHAPES, build=_build_qk_softmax,
        flops=lambda p: _qk_flops(p) + _attn_dims(p)[1] * (1 + ELEMENTWISE_FLOPS["softmax"]),
        bytes_unfused=lambda p, s: (2 * _attn_dims(p)[0] + 5 * _attn_dims(p)[1]) * s,
        bytes_fused=lambda p, s: (2 * _attn_dims(p)[0] + _attn_dims(p)[1]) * s,
    ),
    Pattern(
        name="Softmax_V", family="attention", operators=("Softmax", "MatMul"),
        description="softmax(S) @ V", shapes=ATTENTION_SHAPES, build=_build_softmax_v,
        flops=lambda p: _qk_flops(p) + _attn_dims(p)[1] * ELEMENTWISE_FLOPS["softmax"],
        bytes_unfused=lambda p, s: (3 * _attn_dims(p)[1] + 2 * _attn_dims(p)[0]) * s,
        bytes_fused=lambda p, s: (_attn_dims(p)[1] + 2 * _attn_dims(p)[0]) * s,
    ),
    Pattern(
        name="Attention", family="attention", operators=("MatMul", "Scale", "Softmax", "MatMul"),
        description="softmax(Q @ K^T / sqrt(d)) @ V", shapes=ATTENTION_SHAPES, build=_build_attention,
        flops=lambda p: 2 * _qk_flops(p) + _attn_dims(p)[1] * (1 + ELEMENTWISE_FLOPS["softmax"]),
        bytes_unfused=lambda p, s: (4 * _attn_dims(p)[0] + 6 * _attn_dims(p)[1]) * s,
        bytes_fused=lambda p, s: 4 * _attn_dims(p)[0] * s,
        library_devices=("cpu", "cuda"), library_kernel="F.scaled_dot_product_attention",
    ),
    Pattern(
        name="MultiHeadAttention_Linear", family="attention",
        operators=("Linear", "MatMul", "Scale", "Softmax", "MatMul", "Linear"),
        description="packed QKV projection, multi-head attention, output projection",
        shapes=MHA_SHAPES, build=_build_mha, flops=_mha_flops,
        bytes_unfused=_mha_bytes(False), bytes_fused=_mha_bytes(True),
        library_devices=("cpu", "cuda"), library_kernel="nn.MultiheadAttention inference fast path",
    ),
    Pattern(
        name="Add_ReLU", family="elementwise", operators=("Add", "ReLU"), description="relu(a + b)",
        shapes=ELEMENTWISE_SHAPES, build=_build_add_relu, flops=lambda p: 2 * p["n"],
        bytes_unfused=_elementwise_bytes(5), bytes_fused=_elementwise_bytes(3),
        library_devices=("cpu",), library_kernel="aten._add_relu",
    ),
    Pattern(
        name="Add_LayerNorm", family="elementwise", operators=("Add", "LayerNorm"),
        description="layer_norm(a + b): transformer residual", shapes=ROWS_SHAPES, build=_build_add_layernorm,
        flops=lambda p: (1 + ELEMENTWISE_FLOPS["layernorm"]) * p["ROWS"] * p["COLS"],
        bytes_unfused=lambda p, s: (5 * p["ROWS"] * p["COLS"] + 2 * p["COLS"]) * s,
        bytes_fused=lambda p, s: (3 * p["ROWS"] * p["COLS"] + 2 * p["COLS"]) * s,
    ),
    Pattern(
        name="Mul_Add_ReLU", family="elementwise", operators=("Mul", "Add", "ReLU"), description="relu(a * b + c)",
        shapes=ELEMENTWISE_SHAPES, build=_build_mul_add_relu, flops=lambda p: 3 * p["n"],
        bytes_unfused=_elementwise_bytes(8), bytes_fused=_elementwise_bytes(4),
        library_devices=("cpu", "cuda"), library_kernel="torch.addcmul, then in-place relu",
    ),
    Pattern(
        name="Sigmoid_Mul", family="elementwise", operators=("Sigmoid", "Mul"),
        description="x * sigmoid(x): the SiLU/SwiGLU gate", shapes=ELEMENTWISE_SHAPES, build=_build_sigmoid_mul,
        flops=lambda p: ELEMENTWISE_FLOPS["silu"] * p["n"],
        bytes_unfused=_elementwise_bytes(5), bytes_fused=_elementwise_bytes(2),
        library_devices=("cpu", "cuda"), library_kernel="F.silu",
    ),
)

PATTERNS: dict[str, Pattern] = {pattern.name: pattern for pattern in _ALL}


def resolve_families(names: Iterable[str]) -> set[str]:
    """Pattern names selected by family (``all`` selects every pattern) or by pattern name."""
    selected: set[str] = set()
    for name in names:
        if name == "all":
            selected.update(PATTERNS)
        elif name in FAMILIES:
            selected.update(p.name for p in PATTERNS.values() if p.family == name)
        elif name in PATTERNS:
            selected.add(name)
        else:
            raise ValueError(
                f"unknown fusion family or pattern {name!r}; families: {', '.join(FAMILIES)}, or 'all'; "
                f"patterns: {', '.join(PATTERNS)}"
            )
    return selected
