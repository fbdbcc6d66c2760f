"""Tracing a model and recording what its example run did, node by node.

``trace`` gives an fx graph (``torch.fx``, falling back to ``torch.export``); :class:`Recorder`
runs it once on the example inputs and keeps every tensor's shape, dtype and storage, and
whether an op aliased its input; :func:`op_name` gives each node one canonical name, the same
for its fx, method and aten forms.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import fx, nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils._python_dispatch import TorchDispatchMode

from calibration.specs import host
from calibration.specs.operations import ELEMENTWISE_FLOPS

# Ops that may return an alias of an input. When the real run shows they did, they are free;
# when they copied (reshape of a transposed tensor, contiguous of a permuted one) they are a
# copy kernel. Any other op is a kernel even when it writes in place.
VIEW_OPS = frozenset({
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "t", "contiguous", "expand",
    "expand_as", "view_as", "reshape_as", "squeeze", "unsqueeze", "getitem", "chunk", "split",
    "unbind", "narrow", "select", "slice", "dropout", "identity", "detach", "alias", "to", "type",
    "float", "split_with_sizes", "_unsafe_view",
})
# Nodes that return Python values (shapes, sizes) rather than tensors cost nothing either.

# Ops that only move data: a concatenation, a gather, nearest-neighbour upsampling, a pad, a
# pixel shuffle. No FLOPs; each output element read once and written once, as a copy.
DATA_MOVEMENT_OPS = frozenset({
    "copy", "clone", "cat", "stack", "embedding", "embedding_bag", "pixel_shuffle", "pixel_unshuffle",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "constant_pad_nd", "reflection_pad1d",
    "reflection_pad2d", "replication_pad2d", "roll", "flip", "repeat", "tile",
})

# Ops that write a constant: no FLOPs, each output element written once.
FILL_OPS = frozenset({"zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "new_zeros", "new_ones",
                      "new_full", "fill", "zero"})

# Per-element FLOPs not in specs.operations.ELEMENTWISE_FLOPS. relu6/hardtanh clamp on both sides (two
# compares, as specs.patterns counts ReLU6); other unary math (exp, tanh, sqrt...) counts as one,
# the way erf counts as one inside gelu.
POINTWISE_FLOPS: dict[str, int] = {
    **ELEMENTWISE_FLOPS,
    "sub": 1, "div": 1, "neg": 1, "relu6": 2, "hardtanh": 2, "exp": 1, "tanh": 1, "sqrt": 1,
    "rsqrt": 1, "pow": 1, "abs": 1, "clamp": 2, "log": 1, "erf": 1, "where": 1, "masked_fill": 1,
    "batch_norm": ELEMENTWISE_FLOPS["batchnorm"], "layer_norm": ELEMENTWISE_FLOPS["layernorm"],
    "log_softmax": ELEMENTWISE_FLOPS["softmax"], **dict.fromkeys(DATA_MOVEMENT_OPS | FILL_OPS, 0),
    # compare and scale; hardsigmoid is relu6(x + 3) / 6, hardswish that times x; elu and
    # softplus an exp plus a compare or log and an add; mish is x * tanh(softplus(x))
    "leaky_relu": 2, "hardsigmoid": 4, "hardswish": 5, "elu": 3, "softplus": 3, "mish": 5, "maximum": 1,
    "minimum": 1, "group_norm": ELEMENTWISE_FLOPS["layernorm"], "clamp_min": 1, "clamp_max": 1, "prelu": 2,
    "_prelu_kernel": 2,
}

_ALIASES: dict[str, str] = {
    "iadd": "add", "radd": "add", "__add__": "add", "__radd__": "add", "isub": "sub", "rsub": "sub",
    "imul": "mul", "__mul__": "mul", "__rmul__": "mul", "truediv": "div", "itruediv": "div", "__truediv__": "div",
    "__matmul__": "matmul", "_softmax": "softmax", "_log_softmax": "log_softmax",
    "_native_batch_norm_legit_no_training": "batch_norm", "native_batch_norm": "batch_norm",
    "native_layer_norm": "layer_norm", "convolution": "conv2d", "_convolution": "conv2d",
    "_scaled_dot_product_flash_attention_for_cpu": "scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention": "scaled_dot_product_attention",
    "_scaled_dot_product_efficient_attention": "scaled_dot_product_attention",
    "max_pool2d_with_indices": "max_pool2d", "_adaptive_avg_pool2d": "adaptive_avg_pool2d",
    "hardtanh_": "hardtanh", "_to_copy": "copy", "copy_": "copy", "native_dropout": "dropout",
    "feature_dropout": "dropout", "native_group_norm": "group_norm", "_embedding_bag": "embedding_bag",
    "upsample": "interpolate", "_upsample_bilinear2d_aa": "upsample_bilinear2d",
}

_MODULE_OPS: dict[type[nn.Module], str] = {
    nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.Conv3d: "conv3d", nn.Linear: "linear",
    nn.BatchNorm1d: "batch_norm", nn.BatchNorm2d: "batch_norm", nn.BatchNorm3d: "batch_norm",
    nn.LayerNorm: "layer_norm", nn.ReLU: "relu", nn.ReLU6: "relu6", nn.GELU: "gelu", nn.SiLU: "silu",
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Softmax: "softmax", nn.Hardtanh: "hardtanh",
    nn.MaxPool2d: "max_pool2d", nn.AvgPool2d: "avg_pool2d", nn.AdaptiveAvgPool2d: "adaptive_avg_pool2d",
    nn.Dropout: "dropout", nn.Flatten: "flatten", nn.Identity: "identity", nn.Unflatten: "unflatten",
    nn.GroupNorm: "group_norm", nn.LeakyReLU: "leaky_relu", nn.Hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid", nn.ELU: "elu", nn.Softplus: "softplus", nn.Mish: "mish",
}


def op_name(node: fx.Node, gm: fx.GraphModule) -> str:
    """The canonical name of what a node computes, the same for its fx, method and aten forms."""
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        name = _MODULE_OPS.get(type(module), type(module).__name__)
    elif node.op == "call_method":
        name = str(node.target)
    else:
        target = node.target
        if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
            name = aten_name(target)
            if name in ("convolution", "_convolution") and len(node.args) > 6 and node.args[6] is True:
                name = "conv_transpose"  # aten.convolution(..., transposed=True, ...)
        else:
            name = getattr(target, "__name__", str(target))
    return canonical(name)


def aten_name(op: torch._ops.OpOverload | torch._ops.OpOverloadPacket) -> str:
    qualified = op._schema.name if isinstance(op, torch._ops.OpOverload) else op._qualified_op_name
    return qualified.split("::")[-1]


def canonical(name: str) -> str:
    """One name per operation, whatever form (fx, method, aten, in-place) it came in."""
    name = _ALIASES.get(name, name)
    if name.endswith("_") and not name.startswith("_") and name[:-1] in POINTWISE_FLOPS:
        name = name[:-1]  # in-place form: same math, same traffic
    return _ALIASES.get(name, name)


class TraceFailed(ValueError):
    """Neither torch.fx nor torch.export could turn the model into a graph; one line says why."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def trace(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> tuple[fx.GraphModule, str]:
    """fx symbolic trace; torch.export where data-dependent Python control flow defeats it."""
    try:
        return fx.symbolic_trace(model), "fx"
    except Exception as fx_error:  # fx raises TraceError, TypeError, AttributeError... on control flow
        # A failing export prints the graph it got so far to stderr; the error below says why
        # in one line, so that dump is kept only when the export succeeds.
        printed = io.StringIO()
        try:
            with contextlib.redirect_stderr(printed):
                exported = torch.export.export(model, tuple(example_inputs)).module()
        except Exception as export_error:
            raise TraceFailed(
                f"cannot trace {type(model).__name__} into a graph: torch.fx said {_first_line(fx_error)}; "
                f"torch.export said {_first_line(export_error)}"
            ) from export_error
        sys.stderr.write(printed.getvalue())
        return exported, "export"


def tensors(value: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    torch.utils._pytree.tree_map_(lambda v: out.append(v) if isinstance(v, torch.Tensor) else None, value)
    return out


class TensorInfo(NamedTuple):
    """What the cost model keeps of a tensor the example run produced (not its data)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    numel: int
    nbytes: int  # written by the kernel that produces it
    read: int  # read by a kernel that consumes it

    @classmethod
    def of(cls, t: torch.Tensor) -> TensorInfo:
        nbytes = t.numel() * t.element_size()
        # a slice reads only its elements; a broadcast (expand) view reads its storage once
        return cls(tuple(t.shape), t.dtype, t.numel(), nbytes, min(nbytes, t.untyped_storage().nbytes()))


def dtype_name(dtype: torch.dtype) -> str:
    """The profile's name of a dtype: float32, bfloat16, ... (tf32 is a matmul mode, not a dtype)."""
    return str(dtype).removeprefix("torch.")


def _opaque(n: fx.Node) -> bool:
    """A call of a plain Python function from outside torch: fx.wrap leaves, for instance."""
    if n.op != "call_function" or isinstance(n.target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return False
    module = getattr(n.target, "__module__", None) or ""
    return callable(n.target) and not module.startswith(("torch", "_operator", "operator", "builtins", "math"))


# Aten ops that materialise a tensor; seen inside a GEMM's call, they copy an operand the
# GEMM cannot read as it is (a permuted activation before a Linear).
COPY_ATEN_OPS = frozenset({"clone", "_to_copy", "copy_", "contiguous"})
# Composite ops that reshape their operands into a GEMM and copy those that are not viewable.
GEMM_OPS = frozenset({"linear", "matmul", "bmm", "mm", "addmm", "baddbmm", "einsum"})


# Ops whose CPU kernel makes a non-contiguous input contiguous before it runs (ATen's
# layer_norm, group_norm and softmax call contiguous() on it): a permuted input is copied.
CONTIGUOUS_INPUT_OPS = frozenset({"layer_norm", "group_norm", "softmax", "log_softmax"})
# Elementwise ops of several operands: one laid out unlike the output (a permuted activation
# added to a contiguous one) is read element by element in the output's order.
LAYOUT_OPS = frozenset({"add", "sub", "mul", "div", "where", "maximum", "minimum", "masked_fill"})


def _layout(t: torch.Tensor) -> tuple[int, ...] | None:
    """The order of a tensor's dimensions longer than 1 from the outermost in memory (a
    size-1 dim's stride is free); None for a broadcast (a zero stride), which is read as it is."""
    dims = [d for d in range(t.dim()) if t.shape[d] > 1]
    if any(t.stride(d) == 0 for d in dims):
        return None
    return tuple(sorted(dims, key=lambda d: -t.stride(d)))


def layout_copy_bytes(op: str, inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor]) -> int:
    """The bytes a call of ``op`` reads in another layout than its kernel runs in, which the
    mapper prices as a STREAM copy: the input of a norm or softmax that is not contiguous,
    and an elementwise operand of the output's shape whose dimensions lie in memory in another
    order than the output's (a permuted one; not a slice or a broadcast, read in order). On the
    Xeon VM (timed between runs of a reference conv) a LayerNorm over a permuted 1 x 56 x 56
    x 96 input ran 155 us, 63 contiguous, its copy 58; an add of a permuted and a contiguous
    1 x 96 x 56 x 56 ran 102 us, 25 with both contiguous."""
    if not inputs or not outputs:
        return 0
    if op in CONTIGUOUS_INPUT_OPS:
        first = inputs[0]
        return 0 if first.is_contiguous() else first.numel() * first.element_size()
    if op in LAYOUT_OPS:
        out = outputs[0]
        order = _layout(out)
        return sum(t.numel() * t.element_size() for t in inputs
                   if t.shape == out.shape and (own := _layout(t)) is not None and order is not None and own != order)
    return 0


class _AtenRecorder(TorchDispatchMode):
    """The aten ops run inside a block, by name (views and aliases left out), and the bytes
    written by the copies among them."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []
        self.copied = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if not func.is_view:
            name = aten_name(func)
            self.ops.append(name)
            if name in COPY_ATEN_OPS:
                self.copied += sum(t.numel() * t.element_size() for t in tensors(result))
        return result


# Ops cost._node_flops has a formula for, besides POINTWISE_FLOPS: a call of anything else
# is costed as the aten ops it runs (inner_graph).
FORMULA_OPS = frozenset({
    "conv1d", "conv2d", "conv3d", "conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "scaled_dot_product_attention", "max_pool2d",
    "avg_pool2d", "adaptive_avg_pool2d", "mean", "sum",
})


def opaque_module(module: nn.Module) -> bool:
    """A torch.nn module fx keeps as one node but no formula here models: a multi-head
    attention, a transformer layer, an RNN, a group norm... Its cost is what it runs inside."""
    cls = type(module)
    return cls not in _MODULE_OPS and cls.__module__.startswith("torch.nn.")


def _opaque_call(n: fx.Node, gm: fx.GraphModule) -> Callable[..., Any] | None:
    """What a node calls, where no formula models it and it is no single aten op: an opaque
    torch.nn module, ``torch.einsum``, ``F.normalize``... (None for everything else)."""
    if n.op == "call_module":
        module = gm.get_submodule(str(n.target))
        return module if opaque_module(module) else None
    if n.op not in ("call_function", "call_method") or isinstance(n.target, (torch._ops.OpOverload,
                                                                             torch._ops.OpOverloadPacket)):
        return None
    op = op_name(n, gm)
    if op in FORMULA_OPS or op in POINTWISE_FLOPS or op in VIEW_OPS or _opaque(n):
        return None
    if n.op == "call_method":
        name = str(n.target)
        return lambda self, *args, **kwargs: getattr(self, name)(*args, **kwargs)
    return n.target if callable(n.target) else None


def inner_graph(call: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[fx.GraphModule,
                                                                                list[torch.Tensor]] | None:
    """The aten graph of one call (``make_fx``, which takes the composite path rather than a
    fused fast path: multi-head attention as its GEMMs and softmax, einsum as its bmm), and
    the tensors it takes; None where the call does not trace."""
    flat, spec = torch.utils._pytree.tree_flatten((args, kwargs))
    at = [i for i, v in enumerate(flat) if isinstance(v, torch.Tensor)]

    def with_tensors(*tensor_args: torch.Tensor) -> Any:
        values = list(flat)
        for i, t in zip(at, tensor_args, strict=True):
            values[i] = t
        a, k = torch.utils._pytree.tree_unflatten(values, spec)
        return call(*a, **k)

    tensor_args = [flat[i] for i in at]
    try:
        with torch.random.fork_rng(devices=[]), host.quiet_stderr():
            return make_fx(with_tensors)(*tensor_args), tensor_args
    except Exception:  # a module make_fx cannot follow keeps its single-node cost
        return None


class Recorder(ShapeProp):
    """ShapeProp that also keeps, per node, what a cost model needs from the real values."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[fx.Node, list[TensorInfo]] = {}  # tensors each node produced
        self.aliased: dict[fx.Node, bool] = {}
        self.args: dict[fx.Node, tuple[Any, dict[str, Any]]] = {}
        # for calls of user functions fx keeps opaque (torch.fx.wrap): the aten ops they ran
        self.inner_ops: dict[fx.Node, list[str]] = {}
        # bytes a node's call copied to make its operands readable: a GEMM's (seen as aten
        # copies), a norm's or elementwise op's in another layout (layout_copy_bytes); 0 or absent: none
        self.copied: dict[fx.Node, int] = {}
        # for calls no formula models (opaque torch.nn modules, einsum...): the aten graph of
        # the call, recorded on the same arguments
        self.inner: dict[fx.Node, tuple[fx.GraphModule, Recorder]] = {}

    def run_node(self, n: fx.Node) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        name = op_name(n, self.module) if n.op.startswith("call_") else None
        if _opaque(n) or name in GEMM_OPS:
            with _AtenRecorder() as seen:
                result = super().run_node(n)
            if _opaque(n):
                self.inner_ops[n] = seen.ops
            else:
                self.copied[n] = seen.copied
        else:
            result = super().run_node(n)
        if (call := _opaque_call(n, self.module)) is not None and tensors(result):
            if (traced := inner_graph(call, args, kwargs)) is not None:
                inner_rec = Recorder(traced[0])
                inner_rec.propagate(*traced[1])
                self.inner[n] = (traced[0], inner_rec)
        outputs = tensors(result)
        inputs = tensors((args, kwargs))
        if name is not None and (relaid := layout_copy_bytes(name, inputs, outputs)):
            self.copied[n] = self.copied.get(n, 0) + relaid
        storages = {t.untyped_storage().data_ptr() for t in inputs if t.untyped_storage().nbytes()}
        self.values[n] = [TensorInfo.of(t) for t in outputs]
        self.aliased[n] = bool(outputs) and all(
            t.untyped_storage().data_ptr() in storages or not t.untyped_storage().nbytes() for t in outputs)
        # Only shapes and scalars are kept from the arguments, not the tensors themselves.
        self.args[n] = torch.utils._pytree.tree_map(
            lambda v: tuple(v.shape) if isinstance(v, torch.Tensor) else v, (args, kwargs))
        return result




def count_module_calls(run: Callable[[], Any]) -> int:
    """How many times ``run()`` calls an nn.Module (every ``Module.__call__``, nested ones too)."""
    calls = 0

    def count(module: nn.Module, args: Any) -> None:
        nonlocal calls
        calls += 1

    handle = nn.modules.module.register_module_forward_pre_hook(count)
    try:
        run()
    finally:
        handle.remove()
    return calls


def record_allocations(run: Callable[[], Any]) -> tuple[tuple[int, int], ...] | None:
    """The CPU allocator's requests while ``run()`` executes, in order.

    ``(block, nbytes)`` allocates a block, ``(block, 0)`` frees it. A block still live at
    the end is freed there if ``run`` returned it (the caller drops a forward's output), and
    left out otherwise: a cache that outlives the call faults in once, not every call.
    None where this torch's profiler cannot report allocations.
    """
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile

        with host.quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = run()
        found: list[tuple[int, int, int]] = []
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            event = stack.pop()
            if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
                found.append((event.start_time_ns, event.extra_fields.ptr, event.extra_fields.alloc_size))
            stack.extend(event.children)
    except (ImportError, AttributeError, RuntimeError):
        return None
    returned = {t.untyped_storage().data_ptr() for t in tensors(result)}
    live: dict[int, int] = {}
    events: list[tuple[int, int]] = []
    for _, ptr, nbytes in sorted(found):
        if nbytes > 0:
            live[ptr] = len(events) + 1
            events.append((live[ptr], nbytes))
        elif ptr in live:
            events.append((live.pop(ptr), 0))
    events += [(block, 0) for ptr, block in live.items() if ptr in returned]
    dropped = set(live[ptr] for ptr in live if ptr not in returned)
    return tuple(e for e in events if e[0] not in dropped)
