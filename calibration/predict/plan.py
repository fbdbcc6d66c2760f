"""Partition a model into the kernels it runs and group them into fusion-pattern subgraphs.

``partition(model, example_inputs, calibration)`` traces the model (:mod:`.trace`), counts
each node (:mod:`.cost`), matches chains of kernels against the pattern names of
:data:`calibration.specs.patterns.PATTERNS` (:mod:`.match`) and, given a calibration, keeps a
fusion only where the measured verdict says it pays.

Views and aliases (view, reshape of a contiguous tensor, permute, transpose, getitem,
eval-mode dropout, ...) launch no kernel: they are attached to a neighbouring subgraph with
zero cost. Whether an op aliased its input is read from the storage the real run produced,
so a ``reshape`` or ``contiguous`` that had to copy is counted as the copy it is.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import fx, nn

from calibration.predict.cost import (
    KernelGraph,
    input_nodes,
    module_params,
    written_bytes,
)
from calibration.predict.match import match_pattern, pattern_shape
from calibration.predict.models import ModelError, first_line
from calibration.predict.results import Partition, Subgraph, Totals
from calibration.predict.trace import Recorder, TraceFailed, count_module_calls, record_allocations, trace
from calibration.profile import roofline
from calibration.profile.roofline import Bottleneck
from calibration.profile.schema import HardwareCalibration
from calibration.profile.verdict import Verdict
from calibration.specs.keys import ParamValue


def should_fuse(calibration: HardwareCalibration | None, pattern: str, shape: Mapping[str, ParamValue],
                dtype: str = "float32") -> tuple[bool, str]:
    """Fuse unless the calibration measured, at the nearest calibrated size, that it does not pay."""
    if calibration is None:
        return True, "no calibration given: fused by default"
    try:
        entry = calibration.get_fusion_pattern(pattern, dtype=dtype, **shape)
    except (TypeError, ValueError) as exc:  # a dtype or shape the registry does not calibrate (float64, groups)
        return True, f"no calibrated {pattern} like this one ({exc}): fused by default"
    if entry is None:
        return True, "pattern not calibrated: fused by default"
    where = ", ".join(f"{k}={v}" for k, v in entry.params.items())
    measured = f"{entry.variant} {entry.speedup:.2f}x at {where}"
    if entry.verdict is Verdict.FUSE:
        return True, f"calibrated fuse ({measured})"
    return False, f"calibrated {entry.verdict.value} ({measured}): left unfused"


def fusion_benefit(calibration: HardwareCalibration | None, pattern: str, shape: Mapping[str, ParamValue],
                   dtype: str = "float32") -> float:
    """Measured speedup of fusing ``pattern`` at ``shape`` (interpolated); 1.0 when unknown."""
    if calibration is None:
        return 1.0
    try:
        return calibration.get_fusion_speedup(pattern, 1.0, dtype=dtype, **shape)
    except (TypeError, ValueError):  # as in should_fuse: nothing calibrated like it
        return 1.0


# --------------------------------------------------------------------------- partition


class _Plan(NamedTuple):
    pattern: str | None
    candidate: str | None
    fused: bool
    decision: str
    kernels: list[fx.Node]
    shape: dict[str, ParamValue]
    speedup: float


def _attach_free(g: KernelGraph, group_of: dict[fx.Node, int]) -> dict[fx.Node, int]:
    """Each view goes with the kernel that produced its data, else the first that reads it."""
    owner: dict[fx.Node, int] = {}
    last = next(iter(group_of.values()), 0)
    pending: list[fx.Node] = []
    for n in g.order:
        if g.costs[n].kernel:
            last = group_of[n]
            owner[n] = last
            for p in pending:
                owner[p] = last
            pending = []
            continue
        producer = g.producer(n)
        if producer is not None:
            owner[n] = group_of[producer]
        else:
            consumers = [u for u in n.users if u in group_of]
            if consumers:
                owner[n] = group_of[consumers[0]]
            else:
                pending.append(n)  # a view of an input read only by other views: goes with the next kernel
    for p in pending:
        owner[p] = last
    return owner


def _subgraph_bytes(g: KernelGraph, members: set[fx.Node]) -> tuple[int, int]:
    """(external, sum of the standalone kernels' bytes) of a set of kernels."""
    external = 0
    sources: dict[fx.Node, None] = {}
    for k in members:
        for s in input_nodes(k):
            producer = g.producer(s)
            if producer is None or producer not in members:
                sources.setdefault(s, None)
        if k.op == "call_module":
            external += module_params(g.gm.get_submodule(str(k.target)))
        # written out when read elsewhere, returned, or never read (then nothing keeps it on chip)
        escapes = k in g.escapes or not g.consumers[k] or any(c not in members for c in g.consumers[k])
        if escapes:
            external += written_bytes(g.costs[k].op, g.rec.values[k])
    external += sum(t.read for s in sources for t in g.rec.values.get(s, []))
    return external, sum(g.costs[k].bytes for k in members)


def describe_inputs(inputs: Sequence[torch.Tensor]) -> str:
    return ", ".join(f"{str(t.dtype).removeprefix('torch.')} of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor)
                     else type(t).__name__ for t in inputs)


def _arity_hint(model: nn.Module, given: int) -> str:
    """What to do when forward takes another number of inputs than were given."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return ""
    needed = [p.name for p in parameters
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if len(needed) == given:
        return ""
    return (f"; its forward takes {len(needed)} input{'s' if len(needed) != 1 else ''} ({', '.join(needed)}) "
            f"and {given} {'was' if given == 1 else 'were'} given (--input-shape once per input)")


def run_example(model: nn.Module, inputs: Sequence[torch.Tensor]) -> None:
    """Run the model once on its example inputs: a model that fails there is the model's
    problem, told in one line, not a traceback from deep inside the tracer."""
    try:
        with torch.no_grad():
            model(*inputs)
    except Exception as exc:
        hint = _arity_hint(model, len(inputs)) if isinstance(exc, TypeError) else ""
        raise ModelError(f"{type(model).__name__} raised {type(exc).__name__} on its example input "
                         f"({describe_inputs(inputs)}): {first_line(exc)}{hint}") from exc


def partition(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
              calibration: HardwareCalibration | None = None) -> Partition:
    """Trace ``model``, count every node and group its kernels into fusion-pattern subgraphs.

    Raises ValueError (ModelError) when the model is in training mode, fails on its example
    inputs or cannot be traced, with a one-line message naming the model.
    """
    if model.training:
        raise ModelError("partition() models inference: call model.eval() first "
                         "(train-mode BatchNorm and Dropout do different work)")
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    module_calls = count_module_calls(lambda: run_example(model, inputs))
    try:
        gm, traced_with = trace(model, inputs)
    except TraceFailed as exc:
        raise ModelError(str(exc)) from exc
    rec = Recorder(gm)
    try:
        with torch.no_grad():
            rec.propagate(*inputs)
    except Exception as exc:  # ran eagerly above: this is the traced graph diverging from the model
        raise ModelError(f"the graph traced from {type(model).__name__} failed on the example input that the "
                         f"model itself ran: {type(exc).__name__}: {first_line(exc)}") from exc
    with torch.no_grad():
        # the model's own forward, after those runs: what each eager call allocates and frees
        allocations = record_allocations(lambda: model(*inputs))
    # modules the graph has no node for (containers, blocks, the model itself) still cost a
    # Module.__call__ each in the eager forward
    flattened = max(module_calls - sum(1 for n in gm.graph.nodes if n.op == "call_module"), 0)
    g = KernelGraph(gm, rec)

    # Greedy: the first pattern found from each kernel in execution order wins.
    taken: set[fx.Node] = set()
    groups: list[tuple[str | None, list[fx.Node]]] = []
    for k in g.kernels:
        if k in taken:
            continue
        matched = match_pattern(g, k, taken)
        if matched is None:
            groups.append((None, [k]))
        else:
            groups.append(matched)
            taken.update(matched[1])
        taken.add(k)

    planned: list[_Plan] = []
    for pattern, nodes in groups:
        if pattern is None:
            planned.append(_Plan(None, None, False, "no registered pattern starts here", nodes, {}, 1.0))
            continue
        dtype = g.costs[nodes[0]].dtype or "float32"
        shape = pattern_shape(g, pattern, nodes)
        fuse, reason = should_fuse(calibration, pattern, shape, dtype)
        speedup = fusion_benefit(calibration, pattern, shape, dtype)
        if fuse:
            planned.append(_Plan(pattern, pattern, True, reason, nodes, shape, speedup))
        else:  # split back into single ops, each remembering why
            planned.extend(_Plan(None, pattern, False, f"{pattern}: {reason}", [k], shape, speedup) for k in nodes)
    position = {n: i for i, n in enumerate(g.order)}
    planned.sort(key=lambda plan: position[plan.kernels[0]])

    group_of = {k: i for i, plan in enumerate(planned) for k in plan.kernels}
    members: list[list[fx.Node]] = [[] for _ in planned]
    for node, i in _attach_free(g, group_of).items():
        members[i].append(node)  # in execution order: owners are assigned walking g.order
    subgraphs = []
    for i, (pattern, candidate, fused, decision, kernels, shape, speedup) in enumerate(planned):
        external, standalone = _subgraph_bytes(g, set(kernels))
        flops = sum(g.costs[k].flops for k in kernels)
        dtype = g.costs[kernels[0]].dtype
        subgraphs.append(Subgraph(
            index=i, name=pattern or g.costs[kernels[0]].op, pattern=pattern, candidate=candidate, fused=fused,
            decision=decision, nodes=tuple(g.costs[n] for n in sorted(members[i], key=position.__getitem__)),
            shape=shape, dtype=dtype, flops=flops,
            external_bytes=external, internal_bytes=standalone - external,
            arithmetic_intensity=roofline.arithmetic_intensity(flops, external),
            bottleneck=_bottleneck(calibration, flops, external, dtype), speedup=speedup,
        ))
    if not subgraphs and g.order:  # a model that only reshapes its input
        subgraphs.append(Subgraph(
            index=0, name="view", pattern=None, candidate=None, fused=False, decision="no kernels",
            nodes=tuple(g.costs[n] for n in g.order), shape={}, dtype=None, flops=0, external_bytes=0,
            internal_bytes=0, arithmetic_intensity=None, bottleneck=None, speedup=1.0))

    total_flops = sum(g.costs[k].flops for k in g.kernels)
    fused_flops = sum(s.flops for s in subgraphs)
    if fused_flops != total_flops:  # every kernel belongs to exactly one subgraph
        raise AssertionError(f"FLOPs changed by grouping: {total_flops} before, {fused_flops} after")
    histogram = Counter(s.pattern or "Unfused" for s in subgraphs)
    return Partition(
        model=type(model).__name__, traced_with=traced_with, subgraphs=tuple(subgraphs), total_flops=total_flops,
        unfused=Totals(subgraphs=len(g.kernels), flops=total_flops, bytes=sum(g.costs[k].bytes for k in g.kernels)),
        fused=Totals(subgraphs=len(subgraphs), flops=fused_flops, bytes=sum(s.external_bytes for s in subgraphs)),
        histogram=dict(histogram.most_common()), uncounted=tuple(sorted(set(g.uncounted))),
        allocations=allocations, flattened_module_calls=flattened,
        parameter_bytes=sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())),
    )


def _bottleneck(calibration: HardwareCalibration | None, flops: int, nbytes: int,
                dtype: str | None) -> Bottleneck | None:
    if calibration is None or dtype is None:
        return None
    ceiling = calibration.bandwidth_ceiling(nbytes)
    verdict = roofline.classify(flops, nbytes, calibration.compute_ceiling(dtype), ceiling)
    return None if verdict is Bottleneck.UNKNOWN else verdict


