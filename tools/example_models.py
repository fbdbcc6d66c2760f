"""Small models of the kinds the reference set lacks, for ``--model tools.example_models:NAME``.

    python -m calibration predict --model tools.example_models:mixer_block --input-shape 196,256 \\
        --profile p.json --measure --by-op

Run from the repository root (``tools`` is then importable).
"""

from __future__ import annotations

import torch
from torch import nn


class MixerBlock(nn.Module):
    """An MLP-Mixer block: a token-mixing MLP applied across the sequence (the activations
    permuted before and after it, so its Linears read a transposed operand), then a
    channel-mixing MLP, each behind a LayerNorm and a residual add."""

    def __init__(self, tokens: int = 196, channels: int = 256, token_hidden: int = 128, channel_hidden: int = 1024):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens))
        self.norm2 = nn.LayerNorm(channels)
        self.channel_mlp = nn.Sequential(nn.Linear(channels, channel_hidden), nn.GELU(),
                                         nn.Linear(channel_hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x).permute(0, 2, 1)  # (B, C, T): mix along the tokens
        x = x + self.token_mlp(y).permute(0, 2, 1)
        return x + self.channel_mlp(self.norm2(x))


def mixer_block() -> nn.Module:
    torch.manual_seed(0)
    return MixerBlock().eval()
