"""What a partition is (pydantic results) and how it reads (the partitioner's report)."""

from __future__ import annotations

from collections import Counter

from calibration.profile.entries import FrozenModel
from calibration.profile.roofline import Bottleneck
from calibration.specs.keys import ParamValue


class NodeCost(FrozenModel):
    """One fx node. ``kernel`` is False for views, aliases and nodes returning non-tensors."""

    name: str
    kind: str  # fx op: call_module, call_function, call_method
    target: str
    module: str | None = None  # the nn.Module class a call_module node calls
    op: str  # canonical operation name (conv2d, batch_norm, relu, add, matmul, view, ...)
    shape: tuple[int, ...] | None
    dtype: str | None
    kernel: bool
    flops: int
    bytes: int  # standalone kernel: distinct inputs and parameters read once, outputs written once
    # The ops registry's operation and parameters for this kernel, so a mapper can ask the
    # calibration about it (None when the registry has no such operation).
    operation: str | None = None
    params: dict[str, ParamValue] = {}
    # bytes of output this kernel allocates (0 for in-place kernels, which write into an input)
    allocated_bytes: int = 0
    # bytes the call copied before its kernel ran: an operand it could not read as it was (a
    # permuted activation reshaped for a Linear's GEMM); priced as a STREAM copy of that size
    copy_bytes: int = 0
    # buffers the kernel allocates and frees inside the call, each of these sizes: oneDNN runs
    # an NCHW convolution on channel-blocked copies of its input and output
    scratch_bytes: tuple[int, ...] = ()


class Subgraph(FrozenModel):
    index: int
    name: str
    pattern: str | None  # a PATTERNS key when fused; None for a single op
    candidate: str | None  # the pattern matched, also when the calibration left it unfused
    fused: bool
    decision: str
    nodes: tuple[NodeCost, ...]
    shape: dict[str, ParamValue]  # the candidate pattern's parameters, as the registry names them
    dtype: str | None
    flops: int
    external_bytes: int  # read from / written to tensors outside the subgraph, parameters included
    internal_bytes: int  # intermediates a fused kernel keeps on chip (0 when unfused)
    arithmetic_intensity: float | None  # FLOPs per external byte
    bottleneck: Bottleneck | None  # only with a calibration that has ceilings
    speedup: float  # calibrated fusion speedup of the candidate pattern; 1.0 when unknown

    @property
    def kernels(self) -> int:
        return sum(node.kernel for node in self.nodes)


class Totals(FrozenModel):
    subgraphs: int
    flops: int
    bytes: int


class Partition(FrozenModel):
    model: str
    traced_with: str  # "fx" or "export"
    subgraphs: tuple[Subgraph, ...]
    total_flops: int
    unfused: Totals  # one subgraph per kernel
    fused: Totals
    histogram: dict[str, int]  # pattern name (or "Unfused") -> subgraph count
    uncounted: tuple[str, ...]  # ops whose FLOPs no formula here models (counted as 0)
    # The CPU allocator's requests during one forward of the example, in order: (block, bytes)
    # allocates, (block, 0) frees; None where they could not be recorded. The allocator term
    # replays them (predict.allocator).
    allocations: tuple[tuple[int, int], ...] | None = None

    def report(self) -> str:
        return render_report(self)


# --------------------------------------------------------------------------- the report


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB"


def _gflops(flops: int) -> str:
    return f"{flops / 1e9:.3f} GFLOPs"


def render_report(p: Partition, top: int = 5) -> str:
    """The report in the predecessor's layout (its partitioner printed these sections), with FLOPs that agree."""
    before, after = p.unfused, p.fused
    saved = before.bytes - after.bytes
    lines = [
        f"### {p.model}", "",
        "**Before Fusion** (one subgraph per operator):",
        f"- {before.subgraphs} subgraphs (operators)", f"- {_gflops(before.flops)}",
        f"- {_mb(before.bytes)} memory traffic", "",
        "**After Fusion** (aggregated subgraphs):",
        f"- {after.subgraphs} subgraphs", f"- {_gflops(after.flops)}", f"- {_mb(after.bytes)} memory traffic", "",
        "**Improvements**:",
        f"- {before.subgraphs / max(after.subgraphs, 1):.1f}x fewer kernel launches "
        f"({before.subgraphs} -> {after.subgraphs})",
        f"- {100 * saved / before.bytes if before.bytes else 0.0:.1f}% reduction in memory traffic "
        f"({_mb(saved)} saved)",
        f"- Average {sum(s.kernels for s in p.subgraphs) / max(len(p.subgraphs), 1):.1f} operators per subgraph",
        f"- Largest subgraph: {max((s.kernels for s in p.subgraphs), default=0)} operators", "",
        "**Fusion Patterns**:", "```",
    ]
    width = max((len(name) for name in p.histogram), default=0) + 1
    for name, count in p.histogram.items():
        lines.append(f"{name + ':':<{width}} {count:3d} ({100 * count / max(after.subgraphs, 1):.1f}%)")
    lines.append("```")
    rejected = Counter(s.candidate for s in p.subgraphs if s.candidate and not s.fused)
    if rejected:
        lines += ["", "**Left unfused by the calibration** (operators):"]
        lines += [f"- {name}: {count}" for name, count in rejected.items()]
    lines += ["", "**Top Fused Subgraphs** (by data movement reduction):", ""]
    fused = sorted((s for s in p.subgraphs if s.fused), key=lambda s: s.internal_bytes, reverse=True)
    for rank, s in enumerate(fused[:top], 1):
        total = s.external_bytes + s.internal_bytes
        intensity = f"{s.arithmetic_intensity:.1f} FLOPs/byte" if s.arithmetic_intensity is not None else "n/a"
        lines += [
            f"{rank}. **{s.pattern} (Subgraph {s.index})**: {', '.join(n.name for n in s.nodes if n.kernel)}",
            f"   - FLOPs: {s.flops / 1e9:.3f} G "
            f"({100 * s.flops / p.total_flops if p.total_flops else 0:.1f}% of total)",
            f"   - External memory: {_mb(s.external_bytes)}",
            f"   - Internal memory: {_mb(s.internal_bytes)} (stays in cache) <- "
            f"{100 * s.internal_bytes / total if total else 0:.1f}% reduction",
            f"   - Arithmetic Intensity: {intensity}",
            f"   - Bottleneck: {s.bottleneck.value if s.bottleneck else 'unknown (no calibration ceilings)'}",
            f"   - Decision: {s.decision}",
        ]
    kinds = Counter(n.kind for s in p.subgraphs for n in s.nodes if n.kernel)
    lines += [
        "", "### Validation", "",
        f"- FLOPs: {before.flops} before fusion == {after.flops} after "
        f"(every kernel counted: {', '.join(f'{c} {k}' for k, c in sorted(kinds.items()))})",
        f"- Traced with {p.traced_with}",
    ]
    if p.uncounted:
        lines.append(f"- Ops without a FLOP formula (counted as 0): {', '.join(p.uncounted)}")
    return "\n".join(lines) + "\n"
