"""Getting a fusion variant ready to time: build, compile, and check it against its twin.

Every fused variant's output is compared with the unfused output on the same inputs
before anything is timed; a mismatch raises AssertionError, which fails the case, so a
wrong kernel is never recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from calibration.measure.patterns import Instance, build
from calibration.specs.patterns import FusionCase

# float32 outputs differ from the unfused form only by reassociation (GEMM blocking, BN
# folded into weights), well inside 1e-3; bf16/fp16 keep 8/11 mantissa bits.
TOLERANCES: dict[str, dict[str, float]] = {
    "float32": {"rtol": 1e-3, "atol": 1e-3},
    "tf32": {"rtol": 1e-2, "atol": 1e-2},
    "float16": {"rtol": 1e-2, "atol": 1e-2},
    "bfloat16": {"rtol": 5e-2, "atol": 5e-2},
}
# One compiled graph per pattern, shape and dtype: far more than dynamo's default limit
# of 8 recompiles for one code object, after which it would silently run eager code.
RECOMPILE_LIMIT = 256


class CompilerUnavailable(RuntimeError):
    """torch.compile cannot produce code on this machine (no C++ compiler, no backend)."""


@dataclass(frozen=True)
class Prepared:
    kernel: Callable[[], object]
    compile_seconds: float | None = None
    # The unfused form on the same inputs, timed in the same rounds as a fused kernel.
    baseline: Callable[[], object] | None = None


def _with_reseed(instance: Instance, fn: Callable[[], object]) -> Callable[[], object]:
    reseed = instance.before_call
    if reseed is None:
        return fn

    def call() -> object:
        reseed()
        return fn()

    return call


def compile_unfused(instance: Instance, device: torch.device) -> tuple[Callable[[], object], float]:
    """torch.compile (inductor) of the unfused module; returns (kernel, compile seconds).

    On CPU, freezing lets inductor fold BN into convolutions and fuse epilogues into the
    oneDNN GEMM/conv calls, as it does for inference. ``fallback_random`` keeps eager's
    RNG so train-mode dropout draws the same mask as the unfused form.
    """
    import torch._dynamo
    import torch._inductor.config as inductor_config

    compiled = torch.compile(instance.unfused, fullgraph=True, dynamic=False)
    inputs = instance.inputs
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    start = time.perf_counter()
    try:
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True), \
                inductor_config.patch(freezing=device.type == "cpu", fallback_random=True):
            if instance.before_call:
                instance.before_call()
            compiled(*inputs)
    except torch._dynamo.exc.BackendCompilerFailed as exc:
        raise CompilerUnavailable(f"torch.compile failed in the inductor backend: {exc}") from exc
    seconds = time.perf_counter() - start
    if torch._dynamo.utils.counters["stats"]["unique_graphs"] <= graphs_before:
        raise AssertionError("torch.compile produced no graph: the 'compiled' variant would run eager code")
    return lambda: compiled(*inputs), seconds


def prepare(case: FusionCase) -> Prepared:
    """Build ``case``'s variant; for a fused variant, check it against the unfused output."""
    device = torch.device(case.device)
    instance = build(case, device)
    unfused = _with_reseed(instance, lambda: instance.unfused(*instance.inputs))
    if case.variant == "unfused":
        return Prepared(unfused)
    compile_seconds = None
    if case.variant == "library":
        if instance.library is None:
            raise ValueError(f"{case.pattern} has no library kernel on {case.device}")
        fused = _with_reseed(instance, instance.library)
    elif case.variant == "compiled":
        kernel, compile_seconds = compile_unfused(instance, device)
        fused = _with_reseed(instance, kernel)
    else:
        raise ValueError(f"unknown fusion variant {case.variant!r}")
    torch.testing.assert_close(
        fused(), unfused(), **TOLERANCES[case.dtype],
        msg=lambda detail: f"{case.key}: fused output differs from the unfused output\n{detail}",
    )
    return Prepared(fused, compile_seconds, baseline=unfused)
