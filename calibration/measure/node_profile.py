"""Where a model's time goes, node by node: its fx graph run under ``torch.profiler``.

Each call node of the graph is wrapped in a profiler range named after the node (the
range is inserted into a copy of the graph as two ops, so the forward still runs as the
graph's generated code, without an interpreter between the nodes). A node's measured time
is its range's CPU time: the aten ops it ran and the Python around them (an
``nn.Module`` call's own overhead included). Aten ops that materialise a tensor the
partition treats as a view (``clone``, ``contiguous``, ``_to_copy`` under a node that is
not itself a copy) are kept apart as hidden copies, and the forward's time outside every
node (the graph's glue code) is reported too, so the rows add up to the forward.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import fx
from torch.profiler import ProfilerActivity, profile, record_function

from calibration.specs import host

NODE_PREFIX = "node::"
FORWARD = "forward::"
# Aten ops whose time under a non-copy node is a tensor materialised on the way in (a
# permuted or sliced operand made contiguous), not the node's own kernel.
MATERIALISING_OPS = frozenset({"aten::clone", "aten::contiguous", "aten::_to_copy"})
CALL_OPS = ("call_module", "call_function", "call_method")


@dataclass(frozen=True)
class NodeTiming:
    """Median over the profiled forwards of one node's time, in milliseconds."""

    name: str
    total_ms: float  # the node's range: kernel, hidden copies and Python overhead
    hidden_ms: dict[str, float] = field(default_factory=dict)  # materialising aten op -> ms inside the node
    aten_ms: dict[str, float] = field(default_factory=dict)  # top-level aten op -> ms (total, children included)


@dataclass(frozen=True)
class GraphProfile:
    forward_ms: float  # median CPU time of one whole forward under the profiler
    outside_ms: float  # median time of the forward outside every node's range
    nodes: dict[str, NodeTiming]
    runs: int


def instrument(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` whose call nodes each run inside a profiler range named ``node::NAME``."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op in CALL_OPS:
            handle = graph.call_function(torch.ops.profiler._record_function_enter_new,
                                         (NODE_PREFIX + node.name, None))
            env[node] = graph.node_copy(node, lambda n: env[n])
            graph.call_function(torch.ops.profiler._record_function_exit._RecordFunction, (handle,))
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
    return fx.GraphModule(gm, graph)


def _hidden(node_event, is_copy: bool) -> dict[str, float]:
    """ms of the outermost materialising ops inside a node (none for a node that is a copy)."""
    if is_copy:
        return {}
    found: dict[str, float] = {}
    stack = list(node_event.cpu_children)
    while stack:
        e = stack.pop()
        if e.name in MATERIALISING_OPS:
            found[e.name] = found.get(e.name, 0.0) + e.cpu_time_total / 1e3
            continue  # its children are part of it
        stack.extend(e.cpu_children)
    return found


def profile_graph(gm: fx.GraphModule, inputs: Sequence[torch.Tensor], *, runs: int = 5, warmup: int = 2,
                  copy_nodes: frozenset[str] = frozenset()) -> GraphProfile:
    """Run ``gm`` ``warmup`` times, then ``runs`` times under the profiler; medians per node.

    ``copy_nodes``: nodes the partition counts as copy kernels, whose clone/contiguous is
    their own work rather than a hidden copy.
    """
    traced = instrument(gm)
    with torch.no_grad():
        for _ in range(warmup):
            traced(*inputs)
        with host.quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(runs):
                with record_function(f"{FORWARD}{i}"):
                    traced(*inputs)
    forwards = [e for e in prof.events() if e.name.startswith(FORWARD)]
    per_node: dict[str, list[tuple[float, dict[str, float], dict[str, float]]]] = {}
    outside = []
    for forward in forwards:
        inside = 0.0
        for e in forward.cpu_children:
            if not e.name.startswith(NODE_PREFIX):
                continue
            name = e.name[len(NODE_PREFIX):]
            aten: dict[str, float] = {}
            for child in e.cpu_children:
                aten[child.name] = aten.get(child.name, 0.0) + child.cpu_time_total / 1e3
            per_node.setdefault(name, []).append((e.cpu_time_total / 1e3, _hidden(e, name in copy_nodes), aten))
            inside += e.cpu_time_total / 1e3
        outside.append(forward.cpu_time_total / 1e3 - inside)
    nodes = {}
    for name, samples in per_node.items():
        ops = {op for _, hidden, _ in samples for op in hidden}
        aten_ops = {op for _, _, aten in samples for op in aten}
        nodes[name] = NodeTiming(
            name=name,
            total_ms=statistics.median(t for t, _, _ in samples),
            hidden_ms={op: statistics.median(h.get(op, 0.0) for _, h, _ in samples) for op in sorted(ops)},
            aten_ms={op: statistics.median(a.get(op, 0.0) for _, _, a in samples) for op in sorted(aten_ops)},
        )
    return GraphProfile(
        forward_ms=statistics.median(e.cpu_time_total / 1e3 for e in forwards),
        outside_ms=statistics.median(outside), nodes=nodes, runs=len(forwards))
