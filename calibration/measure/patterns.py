"""The torch side of each fusion pattern in :data:`calibration.specs.patterns.PATTERNS`.

For one pattern at one shape a builder returns an :class:`Instance`: the unfused
``nn.Module`` (each operator its own eager kernel; also what ``torch.compile`` compiles),
its inputs, and the library's fused kernel where the framework has one. Which module a
pattern gets follows from its spec's ``config``, so names and counting stay in the spec.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from calibration.measure.kernels import DTYPES
from calibration.specs.operations import Params, conv_out
from calibration.specs.patterns import DROPOUT_P, PATTERNS, FusionCase, Pattern

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


def _randn(shape: Iterable[int], dtype: str, device: torch.device) -> torch.Tensor:
    return torch.randn(*shape, dtype=DTYPES[dtype], device=device)


def _prepare(module: nn.Module, dtype: str, device: torch.device) -> nn.Module:
    return module.to(device=device, dtype=DTYPES[dtype]).eval().requires_grad_(False)


def _seed() -> None:
    torch.manual_seed(DROPOUT_SEED)


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
            ho = conv_out(p["H"], p["K"], p["STRIDE"], p["K"] // 2)
            skip = _randn((p["N"], p["COUT"], ho, ho), dtype, device)
            inputs = (x, skip)
        return Instance(block, inputs, _conv_library(block, p, x, skip, device))

    return build


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



Builder = Callable[[Params, str, torch.device], Instance]

# Patterns whose module is their own; the linear and conv families build from their config.
_BY_NAME: dict[str, Builder] = {
    "MLP": _build_mlp,
    "QK_Softmax": _build_qk_softmax,
    "Softmax_V": _build_softmax_v,
    "Attention": _build_attention,
    "MultiHeadAttention_Linear": _build_mha,
    "Add_ReLU": _build_add_relu,
    "Add_LayerNorm": _build_add_layernorm,
    "Mul_Add_ReLU": _build_mul_add_relu,
    "Sigmoid_Mul": _build_sigmoid_mul,
}


def _builder(pattern: Pattern) -> Builder:
    if pattern.name in _BY_NAME:
        return _BY_NAME[pattern.name]
    if pattern.family == "linear":
        return _build_linear(**pattern.config)
    if pattern.family == "conv":
        return _build_conv(**pattern.config)
    raise ImportError(f"fusion pattern {pattern.name!r} has no builder")


BUILDERS: dict[str, Builder] = {name: _builder(pattern) for name, pattern in PATTERNS.items()}


def build(case: FusionCase, device: torch.device | None = None) -> Instance:
    """The pattern of ``case`` at its shape, ready to run in any variant."""
    return BUILDERS[case.pattern](case.param_dict, case.dtype, device or torch.device(case.device))
