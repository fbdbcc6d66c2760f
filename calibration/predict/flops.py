"""FLOP formulas torch's ``FlopCounterMode`` lacks, registered only while a count needs them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils import flop_counter


@contextmanager
def sdpa_flop_formula() -> Iterator[None]:
    """Count the CPU flash-attention kernel inside the block.

    FlopCounterMode (torch 2.13) counts ``_scaled_dot_product_flash_attention_for_cpu`` as
    0 FLOPs; this teaches it the two-GEMM formula it uses for the CUDA kernels,
    and leaves torch's global registry as it found it on exit.
    """
    registry = flop_counter.flop_registry
    before = dict(registry)
    packet = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if not any(getattr(packet, name, None) in registry for name in packet.overloads()):

        @flop_counter.register_flop_formula(packet)
        def _sdpa_cpu(query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    try:
        yield
    finally:
        registry.clear()
        registry.update(before)
