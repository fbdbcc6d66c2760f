"""The dtypes a profile names, and their sizes, without importing torch."""

from __future__ import annotations

# float32 storage for tf32 (TensorFloat-32 tensor-core math, CUDA only).
ITEMSIZE: dict[str, int] = {"float32": 4, "tf32": 4, "float16": 2, "bfloat16": 2}
DTYPE_NAMES: tuple[str, ...] = tuple(ITEMSIZE)


def itemsize(dtype: str) -> int:
    try:
        return ITEMSIZE[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_NAMES)}") from None
