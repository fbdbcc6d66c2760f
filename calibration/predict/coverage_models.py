"""Coverage models: ops neither the reference nor the held-out models use.

The reference and held-out models are convolutions, Linears, explicit attention and the
usual activations. A user's model is often built from ``torch.nn`` composites that fx keeps
as one node (``nn.TransformerEncoder``, ``nn.MultiheadAttention``, ``nn.LSTM``) and from ops
neither set has (GroupNorm, LeakyReLU, a transposed convolution, ``cat``, bilinear
upsampling, an embedding, Hardswish and Hardsigmoid), and from convolutions off the square
grid (conv1d, 1x7 and 7x1 kernels, dilation). These models check that such models are costed
as what they run (``python tools/predict_accuracy.py PROFILE.json
--coverage``). Like the held-out models, they are never used to tune the calibrator.

Every builder returns a module in eval mode with PyTorch's default initialisation and the
caller's RNG; every model traces with ``torch.fx.symbolic_trace``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from calibration.predict.models import random_input

LSTM_VOCAB, LSTM_TOKENS = 10000, 64

__all__ = ["COVERAGE", "audio_frontend", "coverage_input", "dilated_head", "inception_like", "lstm_text", "mha_blocks",
           "mobilenet_v3_like", "tcn", "unet", "vit_tiny"]


class ViT(nn.Module):
    """Patch embedding, a class token and learned positions, ``nn.TransformerEncoder``, a head."""

    def __init__(self, dim: int = 192, depth: int = 4, heads: int = 3, mlp: int = 768, patch: int = 16,
                 image: int = 224, classes: int = 1000):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        tokens = (image // patch) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        x = self.encoder(x)
        return self.head(self.norm(x[:, 0]))


class MHABlock(nn.Module):
    """torchvision's ViT block: nn.MultiheadAttention called with need_weights=False, a GELU MLP."""

    def __init__(self, dim: int = 256, heads: int = 8):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class MHANet(nn.Module):
    def __init__(self, depth: int = 3):
        super().__init__()
        self.blocks = nn.Sequential(*[MHABlock() for _ in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class UNet(nn.Module):
    """Two 2x downsamplings and back up, with skip connections concatenated."""

    def __init__(self, c: int = 32):
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(8, o), nn.LeakyReLU(0.1),
                                 nn.Conv2d(o, o, 3, padding=1), nn.GroupNorm(8, o), nn.LeakyReLU(0.1))

        self.e1, self.e2, self.e3 = block(3, c), block(c, 2 * c), block(2 * c, 4 * c)
        self.u2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.d2 = block(4 * c, 2 * c)
        self.d1 = block(3 * c, c)
        self.out = nn.Conv2d(c, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.e1(x)
        b = self.e2(F.max_pool2d(a, 2))
        c = self.e3(F.max_pool2d(b, 2))
        d = self.d2(torch.cat([self.u2(c), b], 1))
        u = F.interpolate(d, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out(self.d1(torch.cat([u, a], 1)))


class LSTMText(nn.Module):
    """Token ids, an embedding, a 2-layer LSTM; the last step's state classified."""

    def __init__(self, vocab: int = LSTM_VOCAB, dim: int = 128, hidden: int = 256):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, 4)

    def forward(self, tokens: Tensor) -> Tensor:
        y, _ = self.lstm(self.emb(tokens))
        return self.head(y[:, -1])


class SqueezeExcitation(nn.Module):
    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)
        self.act, self.gate = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class InvertedResidual(nn.Module):
    """1x1 expansion, KxK depthwise, optional squeeze-excitation, 1x1 projection."""

    def __init__(self, i: int, e: int, o: int, k: int, s: int, se: bool):
        super().__init__()
        layers = [nn.Conv2d(i, e, 1, bias=False), nn.BatchNorm2d(e), nn.Hardswish(),
                  nn.Conv2d(e, e, k, s, k // 2, groups=e, bias=False), nn.BatchNorm2d(e), nn.Hardswish()]
        if se:
            layers.append(SqueezeExcitation(e))
        layers += [nn.Conv2d(e, o, 1, bias=False), nn.BatchNorm2d(o)]
        self.body = nn.Sequential(*layers)
        self.res = s == 1 and i == o

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return x + y if self.res else y


class MobileNetV3Like(nn.Module):
    def __init__(self):
        super().__init__()
        cfg = [(16, 64, 24, 3, 2, False), (24, 72, 24, 3, 1, False), (24, 96, 40, 5, 2, True),
               (40, 240, 40, 5, 1, True), (40, 120, 48, 5, 1, True), (48, 288, 96, 5, 2, True),
               (96, 576, 96, 5, 1, True)]
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(*[InvertedResidual(*c) for c in cfg])
        self.head = nn.Sequential(nn.Conv2d(96, 576, 1, bias=False), nn.BatchNorm2d(576), nn.Hardswish(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(576, 1000))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


def _conv1d_bn_relu(cin: int, cout: int, k: int, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv1d(cin, cout, k, padding=dilation * (k - 1) // 2, dilation=dilation, bias=False),
            nn.BatchNorm1d(cout), nn.ReLU()]


def _conv_bn_relu(cin: int, cout: int, k: int | tuple[int, int], pad: int | tuple[int, int], stride: int = 1,
                  dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, pad, dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class Factorised7x7(nn.Module):
    """Inception-v3's factorised 7x7 branch (1x1, 1x7, 7x1) beside a 1x1 branch, summed."""

    def __init__(self, c: int, mid: int):
        super().__init__()
        self.a = nn.Sequential(*_conv_bn_relu(c, mid, 1, 0), *_conv_bn_relu(mid, mid, (1, 7), (0, 3)),
                               *_conv_bn_relu(mid, c, (7, 1), (3, 0)))
        self.b = nn.Sequential(*_conv_bn_relu(c, c, 1, 0))

    def forward(self, x: Tensor) -> Tensor:
        return self.a(x) + self.b(x)


class ASPP(nn.Module):
    """DeepLab's atrous spatial pyramid pooling without its image-pool branch: a 1x1 conv and
    3x3 convs dilated 6, 12 and 18, concatenated and projected."""

    def __init__(self, c: int, out: int):
        super().__init__()
        self.branches = nn.ModuleList([nn.Sequential(*_conv_bn_relu(c, out, 1, 0))]
                                      + [nn.Sequential(*_conv_bn_relu(c, out, 3, r, dilation=r)) for r in (6, 12, 18)])
        self.project = nn.Sequential(*_conv_bn_relu(4 * out, out, 1, 0))

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], 1))


def vit_tiny() -> nn.Module:
    """A ViT-tiny-like image classifier: 16x16 patches of a 224x224 image, 4 pre-norm
    ``nn.TransformerEncoderLayer`` blocks (192 wide, 3 heads, GELU MLP of 768)."""
    return ViT().eval()


def mha_blocks() -> nn.Module:
    """Three pre-norm blocks of ``nn.MultiheadAttention`` (256 wide, 8 heads, called as
    torchvision's ViT calls it, ``need_weights=False``) and a GELU MLP, over 64 tokens."""
    return MHANet().eval()


def unet() -> nn.Module:
    """A small UNet: GroupNorm and LeakyReLU blocks, max pooling, a transposed convolution,
    skip connections by ``torch.cat`` and bilinear upsampling, at 128x128."""
    return UNet().eval()


def lstm_text() -> nn.Module:
    """An embedding of 10,000 tokens, a 2-layer ``nn.LSTM`` of 256 and a Linear, over 64 tokens."""
    return LSTMText().eval()


def mobilenet_v3_like() -> nn.Module:
    """MobileNet-V3-like blocks: Hardswish, 5x5 depthwise convs and squeeze-excitation gated by
    Hardsigmoid."""
    return MobileNetV3Like().eval()


def tcn() -> nn.Module:
    """A temporal conv net over 32 channels x 4000 steps: 3-tap conv1ds of 64 channels dilated
    1 to 32, batch norm and ReLU, and a pointwise conv1d out."""
    layers = _conv1d_bn_relu(32, 64, 3)
    for dilation in (1, 2, 4, 8, 16, 32):
        layers += _conv1d_bn_relu(64, 64, 3, dilation)
    return nn.Sequential(*layers, nn.Conv1d(64, 16, 1)).eval()


def audio_frontend() -> nn.Module:
    """A wav2vec-like feature extractor over 16,000 samples: a 10-tap conv1d of stride 5 from
    one channel, GroupNorm, then six strided conv1ds of 256 channels, GELU between."""
    layers: list[nn.Module] = [nn.Conv1d(1, 256, 10, 5, bias=False), nn.GroupNorm(256, 256), nn.GELU()]
    for k, stride in ((3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2)):
        layers += [nn.Conv1d(256, 256, k, stride, bias=False), nn.GELU()]
    return nn.Sequential(*layers).eval()


def inception_like() -> nn.Module:
    """A strided stem to a 19x19 map of 192 channels, then four of Inception-v3's factorised
    7x7 blocks (1x7 and 7x1 convs), average pooling and a Linear, at 149x149."""
    return nn.Sequential(*_conv_bn_relu(3, 32, 3, 0, 2), *_conv_bn_relu(32, 64, 3, 1, 2),
                         *_conv_bn_relu(64, 192, 3, 1, 2), *[Factorised7x7(192, 128) for _ in range(4)],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(192, 100)).eval()


def dilated_head() -> nn.Module:
    """A DeepLab-style head: a strided stem to a 33x33 map of 256 channels, then 3x3 convs
    dilated 6, 12 and 18 beside a 1x1, at 257x257."""
    return nn.Sequential(*_conv_bn_relu(3, 64, 3, 1, 2), *_conv_bn_relu(64, 128, 3, 1, 2),
                         *_conv_bn_relu(128, 256, 3, 1, 2), ASPP(256, 128)).eval()


COVERAGE: dict[str, Callable[[], nn.Module]] = {
    "vit_tiny": vit_tiny,
    "mha_blocks": mha_blocks,
    "unet": unet,
    "lstm_text": lstm_text,
    "mobilenet_v3_like": mobilenet_v3_like,
    "tcn": tcn,
    "audio_frontend": audio_frontend,
    "inception_like": inception_like,
    "dilated_head": dilated_head,
}

_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "vit_tiny": (3, 224, 224),
    "mha_blocks": (64, 256),
    "unet": (3, 128, 128),
    "lstm_text": (LSTM_TOKENS,),
    "mobilenet_v3_like": (3, 224, 224),
    "tcn": (32, 4000),
    "audio_frontend": (1, 16000),
    "inception_like": (3, 149, 149),
    "dilated_head": (3, 257, 257),
}


def coverage_input(name: str, batch: int = 1) -> Tensor:
    """A random input of the shape the named coverage model takes (caller's RNG): token ids
    for the LSTM, float32 for the others."""
    x = random_input(_INPUT_SHAPES, name, batch, what="coverage model")
    return torch.randint(0, LSTM_VOCAB, x.shape) if name == "lstm_text" else x
