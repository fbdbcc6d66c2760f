"""Standard reference models to calibrate against: ResNet-18, MobileNet-V2, one BERT-base layer, an MLP.

The convolutional networks copy torchvision's structure, submodule names and forward, so a
torchvision state_dict loads into them with ``strict=True`` and gives the same outputs;
torchvision itself is not needed (it has no CPU build here). The BERT layer copies HuggingFace's
``BertLayer`` (names included: ``attention.self.query``, ``attention.output.LayerNorm``, ...) with
attention written as explicit matmul/softmax, so ``torch.fx.symbolic_trace`` sees each op.

Every builder returns a module in eval mode. Weights are initialised the way the originals do, with
the caller's RNG: seed it (``torch.manual_seed``) for repeatable weights.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence

import torch
import torch.fx
from torch import Tensor, nn

from calibration.specs.dtypes import INPUT_DTYPE_NAMES

__all__ = ["MODELS", "ModelError", "bert_layer", "example_input", "load_model", "mlp", "mobilenet_v2", "resnet18"]


# --------------------------------------------------------------------------- ResNet-18


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 convs with BN, identity (or downsample) shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet (groups 1, width 64, no dilation) of ``block`` stages: BasicBlock, or a
    Bottleneck with the same constructor and an ``expansion`` attribute."""

    def __init__(self, layers: Sequence[int], num_classes: int = 1000, block: type[nn.Module] = BasicBlock):
        super().__init__()
        self.block = block
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        expansion = self.block.expansion
        if stride != 1 or self.inplanes != planes * expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * expansion, stride),
                nn.BatchNorm2d(planes * expansion),
            )
        layers = [self.block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * expansion
        layers.extend(self.block(self.inplanes, planes) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def resnet18(num_classes: int = 1000) -> nn.Module:
    """ResNet-18 as torchvision builds it (11,689,512 parameters at 1000 classes), in eval mode."""
    return ResNet([2, 2, 2, 2], num_classes=num_classes).eval()


# --------------------------------------------------------------------------- MobileNet-V2


class Conv2dNormActivation(nn.Sequential):
    """torchvision.ops.Conv2dNormActivation with BatchNorm2d: Conv2d (no bias, 'same' padding), BN, act."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation_layer: Callable[..., nn.Module] = nn.ReLU6,
    ):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            activation_layer(inplace=True),
        )
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block: [1x1 expand], 3x3 depthwise, 1x1 linear projection + BN."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {stride}")
        self.stride = stride
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup

        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden_dim, kernel_size=1))  # pw
        layers.extend(
            [
                Conv2dNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),  # dw
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),  # pw-linear
                nn.BatchNorm2d(oup),
            ]
        )
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        self._is_cn = stride > 1

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


# t (expansion), c (output channels), n (repeats), s (first stride); width multiplier 1.0, so
# torchvision's rounding to multiples of 8 changes none of these channel counts.
_MOBILENET_V2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 at width multiplier 1.0."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        input_channel = 32
        self.last_channel = 1280
        features: list[nn.Module] = [Conv2dNormActivation(3, input_channel, stride=2)]
        for t, c, n, s in _MOBILENET_V2_SETTING:
            for i in range(n):
                features.append(InvertedResidual(input_channel, c, s if i == 0 else 1, expand_ratio=t))
                input_channel = c
        features.append(Conv2dNormActivation(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(self.last_channel, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    """MobileNet-V2 as torchvision builds it (3,504,872 parameters at 1000 classes), in eval mode."""
    return MobileNetV2(num_classes=num_classes).eval()


# --------------------------------------------------------------------------- BERT layer


def _add_mask(scores: Tensor, attention_mask: Tensor | None) -> Tensor:
    return scores if attention_mask is None else scores + attention_mask


# A leaf for torch.fx: a plain `if attention_mask is not None` is always true on a Proxy, so a
# symbolically traced layer would add None when called without a mask. Wrapped, the traced graph
# keeps one `_add_mask` call and works with and without a mask.
torch.fx.wrap("_add_mask")


class BertSelfAttention(nn.Module):
    """HuggingFace's eager BertSelfAttention (absolute positions, no cache), explicit matmul/softmax."""

    def __init__(self, hidden: int, heads: int, dropout: float = 0.1):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of the {heads} attention heads")
        self.num_attention_heads = heads
        self.attention_head_size = hidden // heads
        self.all_head_size = hidden
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def transpose_for_scores(self, x: Tensor) -> Tensor:
        # (batch, seq, hidden) -> (batch, heads, seq, head_size)
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        x = x.view(new_x_shape)
        return x.permute(0, 2, 1, 3)

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        query_layer = self.transpose_for_scores(self.query(hidden_states))
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))

        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))
        attention_scores = attention_scores / math.sqrt(self.attention_head_size)
        attention_scores = _add_mask(attention_scores, attention_mask)
        attention_probs = nn.functional.softmax(attention_scores, dim=-1)
        attention_probs = self.dropout(attention_probs)

        context_layer = torch.matmul(attention_probs, value_layer)
        context_layer = context_layer.permute(0, 2, 1, 3).contiguous()
        new_context_layer_shape = context_layer.size()[:-2] + (self.all_head_size,)
        return context_layer.view(new_context_layer_shape)


class BertSelfOutput(nn.Module):
    """Dense, dropout, LayerNorm(hidden + input): used after attention (BertSelfOutput) and the MLP (BertOutput)."""

    def __init__(self, in_features: int, hidden: int, eps: float, dropout: float = 0.1):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        hidden_states = self.dropout(self.dense(hidden_states))
        return self.LayerNorm(hidden_states + input_tensor)


class BertAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float):
        super().__init__()
        self.self = BertSelfAttention(hidden, heads)
        self.output = BertSelfOutput(hidden, hidden, eps)

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.output(self.self(hidden_states, attention_mask), hidden_states)


class BertIntermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)
        self.intermediate_act_fn = nn.GELU()  # HF's "gelu": the exact, erf form

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class BertLayer(nn.Module):
    """One BERT encoder layer; returns the hidden states (HF returns them in a 1-tuple)."""

    def __init__(self, hidden: int = 768, heads: int = 12, intermediate: int = 3072, eps: float = 1e-12):
        super().__init__()
        self.attention = BertAttention(hidden, heads, eps)
        self.intermediate = BertIntermediate(hidden, intermediate)
        self.output = BertSelfOutput(intermediate, hidden, eps)

        # HF's BertPreTrainedModel._init_weights with initializer_range 0.02.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        attention_output = self.attention(hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output)


def bert_layer(hidden: int = 768, heads: int = 12, intermediate: int = 3072) -> nn.Module:
    """One BERT-base encoder layer (7,087,872 parameters at the defaults), in eval mode.

    Input (batch, seq, hidden); an optional additive attention mask broadcasts onto the
    (batch, heads, seq, seq) scores, e.g. (batch, 1, 1, seq) with 0 to keep and a large negative to drop.
    """
    return BertLayer(hidden, heads, intermediate).eval()


# --------------------------------------------------------------------------- MLP


def mlp(in_features: int = 784, hidden: Sequence[int] = (512, 256), num_classes: int = 10) -> nn.Module:
    """Linear+ReLU for each hidden width, then a Linear to the classes, in eval mode."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers).eval()


# --------------------------------------------------------------------------- registry

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "mobilenet_v2": mobilenet_v2,
    "bert_layer": bert_layer,
    "mlp": mlp,
}

BERT_SEQ_LEN = 128

_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "resnet18": (3, 224, 224),
    "mobilenet_v2": (3, 224, 224),
    "bert_layer": (BERT_SEQ_LEN, 768),
    "mlp": (784,),
}


def example_input(name: str, batch: int = 1) -> Tensor:
    """A random float32 input of the shape the named model takes at its default size (caller's RNG)."""
    return random_input(_INPUT_SHAPES, name, batch, what="model")


def random_input(shapes: dict[str, tuple[int, ...]], name: str, batch: int, *, what: str) -> Tensor:
    """``torch.randn(batch, *shapes[name])``; an unknown name is a ValueError listing the known ones."""
    try:
        shape = shapes[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(shapes)}") from None
    return torch.randn(batch, *shape)


class ModelError(ValueError):
    """A model that cannot be loaded or run as asked; the message is one line naming it."""


# The dtypes an example input may have (specs.dtypes.INPUT_DTYPE_NAMES, by name).
INPUT_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in INPUT_DTYPE_NAMES}
# Example inputs above this size are refused before allocating them: a typo such as
# --input-shape 100000,100000,100000 asks for petabytes.
MAX_INPUT_BYTES = 4 << 30


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def make_input(shape: tuple[int, ...], dtype: str = "float32") -> Tensor:
    """A random example input (caller's RNG); integer dtypes hold 0 and 1, valid token ids for any vocabulary."""
    try:
        torch_dtype = INPUT_DTYPES[dtype]
    except KeyError:
        raise ModelError(f"Invalid input dtype {dtype!r}; allowed: {', '.join(INPUT_DTYPES)}") from None
    size = math.prod(shape) * torch.empty((), dtype=torch_dtype).element_size()
    if size > MAX_INPUT_BYTES:
        raise ModelError(f"an input of shape {shape} in {dtype} takes {size / 2**30:.3g} GiB; "
                         f"example inputs are limited to {MAX_INPUT_BYTES >> 30} GiB")
    if torch_dtype.is_floating_point:
        return torch.randn(shape, dtype=torch_dtype)
    return torch.randint(0, 2, shape, dtype=torch_dtype)


def load_model(spec: str, batch: int, input_shapes: Sequence[tuple[int, ...]] | None = None,
               input_dtype: str = "float32") -> tuple[nn.Module, tuple[Tensor, ...]]:
    """(model in eval mode, example inputs) for a registered name or a user's ``module:attr``
    factory with one shape (without the batch) per input. Raises ModelError."""
    if input_shapes and isinstance(input_shapes[0], int):
        input_shapes = [tuple(input_shapes)]  # one shape given as a tuple of ints
    if spec in MODELS:
        if input_shapes:
            raise ModelError(f"--model {spec} takes its own input ({', '.join(map(str, _INPUT_SHAPES[spec]))} "
                             "without the batch); --input-shape is for MODULE:FACTORY models")
        return MODELS[spec]().eval(), (make_input((batch, *_INPUT_SHAPES[spec]), input_dtype),)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModelError(f"--model {spec!r}: give one of {', '.join(MODELS)} or MODULE:FACTORY")
    if not input_shapes:
        raise ModelError(f"--model {spec}: a user model needs --input-shape (without the batch), e.g. 3,224,224")
    inputs = tuple(make_input((batch, *shape), input_dtype) for shape in input_shapes)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, SyntaxError, or whatever the module raises at import
        raise ModelError(f"--model {spec}: cannot import {module_name}: {type(exc).__name__}: "
                         f"{first_line(exc)}") from exc
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise ModelError(f"--model {spec}: module {module_name} has no attribute {attr!r}") from None
    if callable(factory) and not isinstance(factory, nn.Module):
        try:
            model = factory()
        except Exception as exc:
            raise ModelError(f"--model {spec}: calling {attr}() raised {type(exc).__name__}: {first_line(exc)}") \
                from exc
    else:
        model = factory
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {spec}: {attr} returned {type(model).__name__}, not an nn.Module")
    return model.eval(), inputs
