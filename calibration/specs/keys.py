"""Stable keys for profile entries.

A key names one measured case: operation, its parameters in registry order, dtype and
device, e.g. ``matmul[M=1024,K=1024,N=1024,path=aten]/float32/cpu``. Benchmarks, profile
keys and lookups all build keys here so a name is never assembled in two places.
"""

from __future__ import annotations

from collections.abc import Mapping

ParamValue = int | float | str | bool


def format_params(params: Mapping[str, ParamValue]) -> str:
    return ",".join(f"{name}={value}" for name, value in params.items())


def operation_key(operation: str, params: Mapping[str, ParamValue], dtype: str, device: str) -> str:
    return f"{operation}[{format_params(params)}]/{dtype}/{device}"
