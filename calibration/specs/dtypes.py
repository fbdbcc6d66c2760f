"""The dtypes a profile names, and their sizes, without importing torch."""

from __future__ import annotations

# float32 storage for tf32 (TensorFloat-32 tensor-core math, CUDA only).
ITEMSIZE: dict[str, int] = {"float32": 4, "tf32": 4, "float16": 2, "bfloat16": 2}
DTYPE_NAMES: tuple[str, ...] = tuple(ITEMSIZE)
# What a model's example input may be (``partition``/``predict --input-dtype``): floating
# point for most models, integers for token ids.
INPUT_DTYPE_NAMES: tuple[str, ...] = ("float32", "float64", "float16", "bfloat16", "int64", "int32")


def itemsize(dtype: str) -> int:
    try:
        return ITEMSIZE[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_NAMES)}") from None
