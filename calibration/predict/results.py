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
    # the kernels an op no formula here models runs inside (a multi-head attention's GEMMs,
    # softmax and adds; an RNN's GEMMs): each priced as a kernel of its own
    inner: tuple[NodeCost, ...] = ()


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
    # the model's parameters and buffers: with the live activations, what one forward keeps
    # coming back to (a kernel's weights are evicted when the rest of it exceeds the LLC)
    parameter_bytes: int = 0
    # nn.Module calls of one eager forward that no node stands for: containers and blocks the
    # trace flattened (nn.Sequential, a residual block) and the model itself
    flattened_module_calls: int = 0

    def footprint_bytes(self) -> int | None:
        """Distinct memory one forward touches: the parameters plus the most activation
        memory live at once (a caching allocator hands freed blocks to later outputs, so the
        activations reuse that much); None where the allocations were not recorded."""
        if self.allocations is None:
            return None
        live, peak, sizes = 0, 0, {}
        for block, nbytes in self.allocations:
            if nbytes:
                sizes[block] = nbytes
                live += nbytes
                peak = max(peak, live)
            else:
                live -= sizes.pop(block, 0)
        return self.parameter_bytes + peak

    def report(self) -> str:
        return render_report(self)


# --------------------------------------------------------------------------- the report


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB"


def _gflops(flops: int) -> str:
    return f"{flops / 1e9:.3f} GFLOPs"


class _Layout:
    """Headings and lists as a terminal shows them, or as markdown (for a pull request or notes)."""

    def __init__(self, markdown: bool) -> None:
        self.markdown = markdown

    def title(self, text: str) -> list[str]:
        return [f"### {text}", ""] if self.markdown else [text, "=" * len(text)]

    def heading(self, text: str) -> list[str]:
        return ["", f"**{text}**", ""] if self.markdown else ["", text]

    def item(self, text: str, depth: int = 0) -> str:
        return f"{'   ' * depth}- {text}" if self.markdown else f"{'    ' * (depth + 1)}{text}"

    def block(self, lines: list[str]) -> list[str]:
        return ["```", *lines, "```"] if self.markdown else [f"  {line}" for line in lines]


def _kernels(s: Subgraph) -> str:
    return ", ".join(f"{n.name} ({n.op})" if s.pattern is None else n.name for n in s.nodes if n.kernel)


def render_report(p: Partition, top: int | None = None, *, markdown: bool = False) -> str:
    """The partition as text: totals, the pattern histogram, what the calibration left unfused
    and why, every fused subgraph (or the ``top`` that save the most traffic), and every kernel
    left on its own. ``markdown`` lays it out for a pull request, as the predecessor did."""
    out = _Layout(markdown)
    before, after = p.unfused, p.fused
    saved = before.bytes - after.bytes
    lines = out.title(f"{p.model}: fusion partition (traced with {p.traced_with})")
    lines += out.heading("Before fusion (one subgraph per kernel):")
    lines += [out.item(f"{before.subgraphs} subgraphs (kernels)"), out.item(_gflops(before.flops)),
              out.item(f"{_mb(before.bytes)} memory traffic")]
    lines += out.heading("After fusion (aggregated subgraphs):")
    lines += [out.item(f"{after.subgraphs} subgraphs"), out.item(_gflops(after.flops)),
              out.item(f"{_mb(after.bytes)} memory traffic")]
    lines += out.heading("Improvements:")
    lines += [
        out.item(f"{before.subgraphs / max(after.subgraphs, 1):.1f}x fewer kernel launches "
                 f"({before.subgraphs} -> {after.subgraphs})"),
        out.item(f"{100 * saved / before.bytes if before.bytes else 0.0:.1f}% less memory traffic "
                 f"({_mb(saved)} saved)"),
        out.item(f"average {sum(s.kernels for s in p.subgraphs) / max(len(p.subgraphs), 1):.1f} kernels per "
                 f"subgraph, the largest {max((s.kernels for s in p.subgraphs), default=0)}"),
    ]
    lines += out.heading("Fusion patterns (subgraphs; Unfused: kernels matching no pattern or left unfused):")
    width = max((len(name) for name in p.histogram), default=0) + 1
    lines += out.block([f"{name + ':':<{width}} {count:3d} ({100 * count / max(after.subgraphs, 1):.1f}%)"
                        for name, count in p.histogram.items()])

    # A rejected candidate is split into single kernels that each carry the same decision,
    # which names the measurement behind it: the variant, its speedup and the calibrated size.
    rejected = Counter((s.candidate, s.decision) for s in p.subgraphs if s.candidate and not s.fused)
    if rejected:
        lines += out.heading("Left unfused by the calibration (kernels; the fastest fused variant at the nearest "
                             "calibrated size):")
        lines += [out.item(f"{decision.removesuffix(': left unfused')} ({count} kernels)")
                  for (_, decision), count in rejected.items()]

    fused = sorted((s for s in p.subgraphs if s.fused), key=lambda s: s.internal_bytes, reverse=True)
    shown = fused if top is None else fused[:top]
    more = f", the {len(shown)} that save the most" if len(shown) < len(fused) else ""
    lines += out.heading(f"Fused subgraphs ({len(fused)}{more}; by traffic saved):")
    for rank, s in enumerate(shown, 1):
        total = s.external_bytes + s.internal_bytes
        intensity = f"{s.arithmetic_intensity:.1f} FLOPs/byte" if s.arithmetic_intensity is not None else "no traffic"
        bound = f"{s.bottleneck.value}-bound" if s.bottleneck else "bound unknown (no calibration ceilings)"
        head = f"{rank}. {s.pattern} (subgraph {s.index}): {_kernels(s)}"
        lines += [
            f"**{head}**" if markdown else f"  {head}",
            out.item(f"{s.flops / 1e9:.3f} GFLOPs ({100 * s.flops / p.total_flops if p.total_flops else 0:.1f}% of "
                     f"the model); {intensity}, {bound}", 1),
            out.item(f"traffic {_mb(s.external_bytes)} in and out; {_mb(s.internal_bytes)} of intermediates the "
                     f"separate kernels write and read back ({100 * s.internal_bytes / total if total else 0:.1f}% "
                     "of theirs)", 1),
            out.item(f"decision: {s.decision}", 1),
        ]
    if len(shown) < len(fused):
        lines.append(out.item(f"... {len(fused) - len(shown)} more (without --top: all)"))

    alone = [s for s in p.subgraphs if not s.fused and s.kernels]
    if alone:
        lines += out.heading(f"Single kernels ({len(alone)}):")
        lines += [out.item(f"subgraph {s.index}: {_kernels(s)}: {s.decision}") for s in alone]

    kinds = Counter(n.kind for s in p.subgraphs for n in s.nodes if n.kernel)
    lines += out.heading("Validation:")
    lines += [
        out.item(f"FLOPs: {before.flops} before fusion == {after.flops} after "
                 f"(every kernel counted: {', '.join(f'{c} {k}' for k, c in sorted(kinds.items()))})"),
        out.item(f"traced with {p.traced_with}"),
    ]
    if p.uncounted:
        lines.append(out.item(f"ops without a FLOP formula (counted as 0): {', '.join(p.uncounted)}"))
    return "\n".join(lines) + "\n"
