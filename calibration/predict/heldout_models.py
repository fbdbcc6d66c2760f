"""Held-out models: check that latency predictions generalise beyond the reference models.

The calibrator is built and tuned against the reference models in ``calibration/predict/models.py``
(ResNet-18, MobileNet-V2, one BERT-base layer, an MLP). A prediction that is only accurate on
those says little, so these models are kept out of calibration and out of any tuning of the
mapper, and are used only to measure how well predictions carry over to networks the calibrator
never saw (``python tools/predict_accuracy.py PROFILE.json --heldout``). Do not tune against them.

They cover other shapes and ops than the reference set: ResNet-50 (bottleneck 1x1-3x3-1x1 convs),
VGG-11 with BatchNorm (large dense 3x3 convs, a 25088-wide classifier), EfficientNet-B0 (SiLU, 5x5
depthwise convs, squeeze-excitation), one GPT-2 small block (pre-LayerNorm, fused QKV, causal
mask, tanh GELU), a wide MLP and a small CIFAR-style CNN.

ResNet-50, VGG-11-BN and EfficientNet-B0 copy torchvision's structure, submodule names and forward;
the GPT-2 block copies HuggingFace's ``GPT2Block`` (names included, with ``nn.Linear`` in place of its
transposed ``Conv1D``) with attention written as explicit matmul/softmax. Neither torchvision nor
transformers is needed. Every model traces with ``torch.fx.symbolic_trace``, and every builder
returns a module in eval mode, initialised the way the original is (PyTorch's defaults for the MLP
and the small CNN's Linears), with the caller's RNG: seed it (``torch.manual_seed``) for repeatable weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from calibration.predict.models import ResNet, random_input

__all__ = [
    "HELDOUT",
    "efficientnet_b0",
    "gpt2_block",
    "heldout_input",
    "resnet50",
    "small_cnn",
    "vgg11_bn",
    "wide_mlp",
]


# --------------------------------------------------------------------------- ResNet-50


class Bottleneck(nn.Module):
    """torchvision's ResNet Bottleneck (v1.5): 1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        width = planes  # groups 1, base width 64
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def resnet50(num_classes: int = 1000) -> nn.Module:
    """ResNet-50 as torchvision builds it (25,557,032 parameters at 1000 classes), in eval mode."""
    return ResNet([3, 4, 6, 3], num_classes=num_classes, block=Bottleneck).eval()


# --------------------------------------------------------------------------- VGG-11 (BN)

# torchvision's configuration "A": output channels of each 3x3 conv, "M" for a 2x2 max pool.
_VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """torchvision's VGG: features, adaptive average pool to 7x7, three-Linear classifier with dropout."""

    def __init__(self, features: nn.Module, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def _vgg_layers(cfg: Sequence[int | str], batch_norm: bool) -> nn.Sequential:
    """torchvision's ``make_layers``: 3x3 convs (with bias) [+ BN] + ReLU, and 2x2 max pools."""
    layers: list[nn.Module] = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(v, int)
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            in_channels = v
    return nn.Sequential(*layers)


def vgg11_bn(num_classes: int = 1000) -> nn.Module:
    """VGG-11 with BatchNorm as torchvision builds it (132,868,840 parameters at 1000 classes), in eval mode.

    Held out at a 112x112 input: the features end at 3x3, which the adaptive pool spreads to
    the 7x7 the classifier expects, so the classifier is the full 25088->4096->4096->classes one.
    """
    return VGG(_vgg_layers(_VGG11_CFG, batch_norm=True), num_classes=num_classes).eval()


# --------------------------------------------------------------------------- EfficientNet-B0


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, never more than 10% down."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvNormActivation(nn.Sequential):
    """torchvision.ops.Conv2dNormActivation with BatchNorm2d: Conv2d (no bias, 'same' padding), BN, [act]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation_layer: Callable[..., nn.Module] | None = nn.SiLU,
    ):
        padding = (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: global average pool, 1x1 conv, act, 1x1 conv, sigmoid, scale."""

    def __init__(self, input_channels: int, squeeze_channels: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = nn.SiLU()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return self.scale_activation(scale) * x


class MBConv(nn.Module):
    """torchvision's EfficientNet MBConv: [1x1 expand], depthwise kxk, squeeze-excitation, 1x1 projection.

    Stochastic depth is left out: it is the identity in eval mode and has no parameters.
    """

    def __init__(self, expand_ratio: float, kernel: int, stride: int, input_channels: int, out_channels: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {stride}")
        self.use_res_connect = stride == 1 and input_channels == out_channels

        layers: list[nn.Module] = []
        expanded_channels = _make_divisible(input_channels * expand_ratio, 8)
        if expanded_channels != input_channels:
            layers.append(ConvNormActivation(input_channels, expanded_channels, kernel_size=1))
        layers.append(
            ConvNormActivation(expanded_channels, expanded_channels, kernel, stride, groups=expanded_channels)
        )
        layers.append(SqueezeExcitation(expanded_channels, max(1, input_channels // 4)))
        layers.append(ConvNormActivation(expanded_channels, out_channels, kernel_size=1, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


# expand_ratio, kernel, stride, input_channels, out_channels, num_layers: B0 (width and depth 1.0),
# so torchvision's width rounding and depth scaling change none of these.
_EFFICIENTNET_B0_SETTING = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


class EfficientNet(nn.Module):
    """torchvision's EfficientNet (V1) for a given MBConv setting; B0 at the default one."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        setting = _EFFICIENTNET_B0_SETTING
        layers: list[nn.Module] = [ConvNormActivation(3, setting[0][3], kernel_size=3, stride=2)]
        for expand_ratio, kernel, stride, input_channels, out_channels, num_layers in setting:
            stage = [MBConv(expand_ratio, kernel, stride, input_channels, out_channels)]
            stage.extend(MBConv(expand_ratio, kernel, 1, out_channels, out_channels) for _ in range(1, num_layers))
            layers.append(nn.Sequential(*stage))
        last_in = setting[-1][4]
        last_channel = 4 * last_in
        layers.append(ConvNormActivation(last_in, last_channel, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(last_channel, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                init_range = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -init_range, init_range)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def efficientnet_b0(num_classes: int = 1000) -> nn.Module:
    """EfficientNet-B0 as torchvision builds it (5,288,548 parameters at 1000 classes), in eval mode."""
    return EfficientNet(num_classes=num_classes).eval()


# --------------------------------------------------------------------------- GPT-2 block


class GPT2Attention(nn.Module):
    """HuggingFace's eager GPT2Attention (no cache, no cross-attention): fused QKV, causal mask, explicit softmax."""

    def __init__(self, hidden: int, heads: int, max_positions: int, dropout: float = 0.1):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of the {heads} attention heads")
        self.embed_dim = hidden
        self.num_heads = heads
        self.head_dim = hidden // heads
        self.split_size = hidden
        # The causal mask as a buffer, True above the diagonal (the future positions to drop): the
        # complement of HF's lower-triangular ``bias``, so forward needs no logical not. Forward
        # cuts it to the sequence length with torch.narrow (a view) rather than HF's slicing:
        # symbolic_trace hands the buffer over as a plain tensor, and a tensor cannot be indexed
        # with a traced size, but torch.narrow takes one and traces as get_attr + narrow.
        future = torch.triu(torch.ones(max_positions, max_positions, dtype=torch.bool), diagonal=1)
        self.register_buffer("future_mask", future.view(1, 1, max_positions, max_positions), persistent=False)
        self.mask_value = torch.finfo(torch.float32).min
        self.c_attn = nn.Linear(hidden, 3 * hidden)
        self.c_proj = nn.Linear(hidden, hidden)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def _split_heads(self, x: Tensor) -> Tensor:
        # (batch, seq, hidden) -> (batch, heads, seq, head_dim)
        x = x.view(x.size()[:-1] + (self.num_heads, self.head_dim))
        return x.permute(0, 2, 1, 3)

    def _merge_heads(self, x: Tensor) -> Tensor:
        # (batch, heads, seq, head_dim) -> (batch, seq, hidden)
        x = x.permute(0, 2, 1, 3).contiguous()
        return x.view(x.size()[:-2] + (self.embed_dim,))

    def forward(self, hidden_states: Tensor) -> Tensor:
        qkv = self.c_attn(hidden_states).split(self.split_size, dim=2)
        query = self._split_heads(qkv[0])
        key = self._split_heads(qkv[1])
        value = self._split_heads(qkv[2])

        attn_weights = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_dim)
        seq_len = query.size(-2)
        future_mask = torch.narrow(torch.narrow(self.future_mask, 2, 0, seq_len), 3, 0, seq_len)
        attn_weights = attn_weights.masked_fill(future_mask, self.mask_value)
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_weights = self.attn_dropout(attn_weights)

        attn_output = self._merge_heads(torch.matmul(attn_weights, value))
        return self.resid_dropout(self.c_proj(attn_output))


class GPT2MLP(nn.Module):
    """HuggingFace's GPT2MLP: c_fc, tanh-approximate GELU ("gelu_new"), c_proj, dropout."""

    def __init__(self, hidden: int, intermediate: int, dropout: float = 0.1):
        super().__init__()
        self.c_fc = nn.Linear(hidden, intermediate)
        self.c_proj = nn.Linear(intermediate, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class GPT2Block(nn.Module):
    """HuggingFace's GPT2Block: pre-LayerNorm attention and MLP, each with a residual add."""

    def __init__(
        self,
        hidden: int = 768,
        heads: int = 12,
        intermediate: int = 3072,
        max_positions: int = 1024,
        eps: float = 1e-5,
        n_layer: int = 12,
    ):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden, eps=eps)
        self.attn = GPT2Attention(hidden, heads, max_positions)
        self.ln_2 = nn.LayerNorm(hidden, eps=eps)
        self.mlp = GPT2MLP(hidden, intermediate)

        # HF's GPT2PreTrainedModel._init_weights with initializer_range 0.02, the residual
        # projections scaled by 1/sqrt(2 * n_layer) as in a 12-layer GPT-2 small.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for proj in (self.attn.c_proj, self.mlp.c_proj):
            nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, hidden_states: Tensor) -> Tensor:
        hidden_states = hidden_states + self.attn(self.ln_1(hidden_states))
        return hidden_states + self.mlp(self.ln_2(hidden_states))


def gpt2_block(hidden: int = 768, heads: int = 12, intermediate: int = 3072) -> nn.Module:
    """One GPT-2 small transformer block (7,087,872 parameters at the defaults), in eval mode.

    Input (batch, seq, hidden) with seq at most 1024; attention is causal.
    """
    return GPT2Block(hidden, heads, intermediate).eval()


# --------------------------------------------------------------------------- wide MLP and small CNN


def wide_mlp(in_features: int = 1024, hidden: int = 4096, num_classes: int = 1000) -> nn.Module:
    """Linear 1024->4096, GELU, Linear 4096->4096, GELU, Linear 4096->1000 (25,076,712 parameters), in eval mode."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.Linear(hidden, num_classes),
    ).eval()


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """A CIFAR-style CNN: two (conv3x3-BN-ReLU x2, 2x2 max pool) stages, then Linear-ReLU-Linear."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(3, 32),
            *_conv_bn_relu(32, 32),
            nn.MaxPool2d(2),
            *_conv_bn_relu(32, 64),
            *_conv_bn_relu(64, 64),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(64 * 8 * 8, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def small_cnn(num_classes: int = 10) -> nn.Module:
    """The CIFAR-style CNN for 3x32x32 inputs (1,117,162 parameters at 10 classes), in eval mode."""
    return SmallCNN(num_classes=num_classes).eval()


# --------------------------------------------------------------------------- registry

HELDOUT: dict[str, Callable[[], nn.Module]] = {
    "resnet50": resnet50,
    "vgg11_bn": vgg11_bn,
    "efficientnet_b0": efficientnet_b0,
    "gpt2_block": gpt2_block,
    "wide_mlp": wide_mlp,
    "small_cnn": small_cnn,
}

GPT2_SEQ_LEN = 256

_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "resnet50": (3, 224, 224),
    "vgg11_bn": (3, 112, 112),
    "efficientnet_b0": (3, 224, 224),
    "gpt2_block": (GPT2_SEQ_LEN, 768),
    "wide_mlp": (1024,),
    "small_cnn": (3, 32, 32),
}


def heldout_input(name: str, batch: int = 1) -> Tensor:
    """A random float32 input of the shape the named held-out model takes (caller's RNG)."""
    return random_input(_INPUT_SHAPES, name, batch, what="held-out model")
