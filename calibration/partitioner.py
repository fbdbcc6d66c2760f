"""Partition a model into the kernels it runs and group them into fusion-pattern subgraphs.

``partition(model, example_inputs, calibration)`` traces the model (``torch.fx``, falling
back to ``torch.export``), runs it once on the example inputs to learn every tensor's shape,
dtype and storage, and counts each node's FLOPs and bytes with the conventions of
:mod:`calibration.ops` (multiply-add = 2 FLOPs, bias = 1 FLOP per output element,
element-wise costs from :data:`~calibration.ops.ELEMENTWISE_FLOPS`, bytes = compulsory
traffic at the real dtype size). It then matches chains of kernels against the pattern
names of :data:`calibration.fusion.PATTERNS` and, given a calibration, keeps a fusion only
where the measured verdict says it pays.

Views and aliases (view, reshape of a contiguous tensor, permute, transpose, getitem,
eval-mode dropout, ...) launch no kernel: they are attached to a neighbouring subgraph with
zero cost. Whether an op aliased its input is read from the storage the real run produced,
so a ``reshape`` or ``contiguous`` that had to copy is counted as the copy it is.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

from calibration import roofline
from calibration.fusion import PATTERNS
from calibration.keys import ParamValue
from calibration.ops import DTYPES, ELEMENTWISE_FLOPS
from calibration.roofline import Bottleneck
from calibration.schema import HardwareCalibration
from calibration.verdict import Verdict

# --------------------------------------------------------------------------- FLOP formulas


def _register_sdpa_flop_formula() -> None:
    """FlopCounterMode counts the CPU flash-attention kernel as 0 FLOPs (shared/MACHINE.md);
    teach it the same two-GEMM formula it uses for the CUDA kernels."""
    packet = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if packet in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(packet)
    def _sdpa_cpu(query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


_register_sdpa_flop_formula()

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

# Per-element FLOPs not in ops.ELEMENTWISE_FLOPS. relu6/hardtanh clamp on both sides (two
# compares, as fusion.py counts ReLU6); other unary math (exp, tanh, sqrt...) counts as one,
# the way erf counts as one inside gelu.
_POINTWISE_FLOPS: dict[str, int] = {
    **ELEMENTWISE_FLOPS,
    "sub": 1, "div": 1, "neg": 1, "relu6": 2, "hardtanh": 2, "exp": 1, "tanh": 1, "sqrt": 1,
    "rsqrt": 1, "pow": 1, "abs": 1, "clamp": 2, "log": 1, "erf": 1, "where": 1, "masked_fill": 1,
    "batch_norm": ELEMENTWISE_FLOPS["batchnorm"], "layer_norm": ELEMENTWISE_FLOPS["layernorm"],
    "log_softmax": ELEMENTWISE_FLOPS["softmax"], "copy": 0, "cat": 0, "stack": 0, "clone": 0,
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
    "feature_dropout": "dropout",
}

_MODULE_OPS: dict[type[nn.Module], str] = {
    nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.Conv3d: "conv3d", nn.Linear: "linear",
    nn.BatchNorm1d: "batch_norm", nn.BatchNorm2d: "batch_norm", nn.BatchNorm3d: "batch_norm",
    nn.LayerNorm: "layer_norm", nn.ReLU: "relu", nn.ReLU6: "relu6", nn.GELU: "gelu", nn.SiLU: "silu",
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Softmax: "softmax", nn.Hardtanh: "hardtanh",
    nn.MaxPool2d: "max_pool2d", nn.AvgPool2d: "avg_pool2d", nn.AdaptiveAvgPool2d: "adaptive_avg_pool2d",
    nn.Dropout: "dropout", nn.Flatten: "flatten", nn.Identity: "identity", nn.Unflatten: "unflatten",
}


def _op_name(node: fx.Node, gm: fx.GraphModule) -> str:
    """The canonical name of what a node computes, the same for its fx, method and aten forms."""
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        name = _MODULE_OPS.get(type(module), type(module).__name__)
    elif node.op == "call_method":
        name = str(node.target)
    else:
        target = node.target
        if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
            name = _aten_name(target)
        else:
            name = getattr(target, "__name__", str(target))
    return _canonical(name)


def _aten_name(op: torch._ops.OpOverload | torch._ops.OpOverloadPacket) -> str:
    qualified = op._schema.name if isinstance(op, torch._ops.OpOverload) else op._qualified_op_name
    return qualified.split("::")[-1]


def _canonical(name: str) -> str:
    """One name per operation, whatever form (fx, method, aten, in-place) it came in."""
    name = _ALIASES.get(name, name)
    if name.endswith("_") and not name.startswith("_") and name[:-1] in _POINTWISE_FLOPS:
        name = name[:-1]  # in-place form: same math, same traffic
    return _ALIASES.get(name, name)


# --------------------------------------------------------------------------- result models


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeCost(_Frozen):
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
    # buffers the kernel allocates and frees inside the call, each of these sizes: oneDNN runs
    # an NCHW convolution on channel-blocked copies of its input and output
    scratch_bytes: tuple[int, ...] = ()


class Subgraph(_Frozen):
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


class Totals(_Frozen):
    subgraphs: int
    flops: int
    bytes: int


class Partition(_Frozen):
    model: str
    traced_with: str  # "fx" or "export"
    subgraphs: tuple[Subgraph, ...]
    total_flops: int
    unfused: Totals  # one subgraph per kernel
    fused: Totals
    histogram: dict[str, int]  # pattern name (or "Unfused") -> subgraph count
    uncounted: tuple[str, ...]  # ops whose FLOPs no formula here models (counted as 0)

    def report(self) -> str:
        return render_report(self)


# --------------------------------------------------------------------------- tracing


def trace(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> tuple[fx.GraphModule, str]:
    """fx symbolic trace; torch.export where data-dependent Python control flow defeats it."""
    try:
        return fx.symbolic_trace(model), "fx"
    except Exception as fx_error:  # fx raises TraceError, TypeError, AttributeError... on control flow
        try:
            return torch.export.export(model, tuple(example_inputs)).module(), "export"
        except Exception as export_error:
            raise RuntimeError(
                f"could not trace {type(model).__name__}: fx said {fx_error!r}; torch.export said {export_error!r}"
            ) from export_error


def _tensors(value: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    torch.utils._pytree.tree_map_(lambda v: out.append(v) if isinstance(v, torch.Tensor) else None, value)
    return out


class _Tensor(NamedTuple):
    """What the cost model keeps of a tensor the example run produced (not its data)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    numel: int
    nbytes: int  # written by the kernel that produces it
    read: int  # read by a kernel that consumes it

    @classmethod
    def of(cls, t: torch.Tensor) -> _Tensor:
        nbytes = t.numel() * t.element_size()
        # a slice reads only its elements; a broadcast (expand) view reads its storage once
        return cls(tuple(t.shape), t.dtype, t.numel(), nbytes, min(nbytes, t.untyped_storage().nbytes()))


def _dtype_name(dtype: torch.dtype) -> str:
    return next((name for name, d in DTYPES.items() if d == dtype and name != "tf32"), str(dtype).removeprefix("torch."))


def _opaque(n: fx.Node) -> bool:
    """A call of a plain Python function from outside torch: fx.wrap leaves, for instance."""
    if n.op != "call_function" or isinstance(n.target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return False
    module = getattr(n.target, "__module__", None) or ""
    return callable(n.target) and not module.startswith(("torch", "_operator", "operator", "builtins", "math"))


class _AtenRecorder(TorchDispatchMode):
    """The aten ops run inside a block, by name (views and aliases left out)."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops.append(_aten_name(func))
        return func(*args, **(kwargs or {}))


class _Recorder(ShapeProp):
    """ShapeProp that also keeps, per node, what a cost model needs from the real values."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[fx.Node, list[_Tensor]] = {}  # tensors each node produced
        self.aliased: dict[fx.Node, bool] = {}
        self.args: dict[fx.Node, tuple[Any, dict[str, Any]]] = {}
        # for calls of user functions fx keeps opaque (torch.fx.wrap): the aten ops they ran
        self.inner_ops: dict[fx.Node, list[str]] = {}

    def run_node(self, n: fx.Node) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if _opaque(n):
            with _AtenRecorder() as seen:
                result = super().run_node(n)
            self.inner_ops[n] = seen.ops
        else:
            result = super().run_node(n)
        outputs = _tensors(result)
        inputs = _tensors((args, kwargs))
        storages = {t.untyped_storage().data_ptr() for t in inputs if t.untyped_storage().nbytes()}
        self.values[n] = [_Tensor.of(t) for t in outputs]
        self.aliased[n] = bool(outputs) and all(
            t.untyped_storage().data_ptr() in storages or not t.untyped_storage().nbytes() for t in outputs)
        # Only shapes and scalars are kept from the arguments, not the tensors themselves.
        self.args[n] = torch.utils._pytree.tree_map(
            lambda v: tuple(v.shape) if isinstance(v, torch.Tensor) else v, (args, kwargs))
        return result


# --------------------------------------------------------------------------- per-node costs


def _module_params(module: nn.Module) -> int:
    """Floating-point parameters and buffers: what the kernel reads (BN's num_batches_tracked is not)."""
    tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
    return sum(t.numel() * t.element_size() for t in tensors if t.is_floating_point())


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _node_flops(op: str, node: fx.Node, gm: fx.GraphModule, rec: _Recorder) -> int | None:
    """FLOPs of one kernel node, or None when no formula models ``op``."""
    outs = rec.values[node]
    out = outs[0] if outs else None
    numel = out.numel if out is not None else 0
    args, kwargs = rec.args[node]
    shapes = [a for a in args if isinstance(a, tuple) and all(isinstance(x, int) for x in a)]
    module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
    if op in ("conv1d", "conv2d", "conv3d"):  # only conv2d starts a pattern; all count alike
        weight = tuple(module.weight.shape) if module is not None else shapes[1]
        has_bias = (module.bias is not None) if module is not None else _arg(args, kwargs, 2, "bias") is not None
        return 2 * numel * math.prod(weight[1:]) + (numel if has_bias else 0)
    if op == "linear":
        fin = module.in_features if module is not None else shapes[1][-1]
        has_bias = (module.bias is not None) if module is not None else _arg(args, kwargs, 2, "bias") is not None
        return 2 * numel * fin + (numel if has_bias else 0)
    if op in ("matmul", "mm", "bmm"):
        return 2 * numel * shapes[0][-1]
    if op in ("addmm", "baddbmm"):  # bias + a @ b
        return 2 * numel * shapes[1][-1] + numel
    if op == "scaled_dot_product_attention":
        q, k, v = shapes[:3]
        scores = math.prod(q[:-1]) * k[-2]
        # the two GEMMs (FlopCounterMode's formula), then scale and softmax per score
        return 2 * scores * q[-1] + 2 * scores * v[-1] + scores * (1 + ELEMENTWISE_FLOPS["softmax"])
    if op == "max_pool2d":
        kernel = module.kernel_size if module is not None else _arg(args, kwargs, 1, "kernel_size")
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        return numel * (kh * kw - 1)  # K*K-1 comparisons per output, as ops.MAXPOOL
    if op == "avg_pool2d":
        kernel = module.kernel_size if module is not None else _arg(args, kwargs, 1, "kernel_size")
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        return numel * kh * kw
    if op in ("adaptive_avg_pool2d", "mean", "sum"):
        return math.prod(shapes[0])  # each input element is added once
    if op in _POINTWISE_FLOPS:
        return _POINTWISE_FLOPS[op] * numel
    return None


# Canonical op -> the ops registry's element-wise operation of the same kernel.
_ELEMENTWISE_OPERATION = {"add": "add", "mul": "mul", "relu": "relu", "gelu": "gelu", "sigmoid": "sigmoid",
                          "silu": "silu", "relu6": "relu", "hardtanh": "relu", "clamp": "relu", "sub": "add",
                          "div": "mul"}


def _pair(value: Any) -> int:
    return value if isinstance(value, int) else int(value[0])


def _registry_params(op: str, node: fx.Node, gm: fx.GraphModule, rec: _Recorder) -> dict[str, Any]:
    """{'operation': registry name, 'params': its parameters} for kernels the registry models."""
    outs = rec.values[node]
    if not outs:
        return {}
    out = outs[0]
    args, kwargs = rec.args[node]
    shapes = [a for a in args if isinstance(a, tuple) and all(isinstance(x, int) for x in a)]
    module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
    if op == "conv2d" and shapes and len(shapes[0]) == 4:
        n, cin, h, w = shapes[0]
        if module is not None:
            cout, k, stride, pad, groups = (module.out_channels, _pair(module.kernel_size), _pair(module.stride),
                                            _pair(module.padding), module.groups)
        else:
            weight = shapes[1]
            cout, k = weight[0], weight[-1]
            stride = _pair(_arg(args, kwargs, 3, "stride", 1))
            pad = _pair(_arg(args, kwargs, 4, "padding", 0))
            groups = _arg(args, kwargs, 6, "groups", 1)
        params = {"N": n, "CIN": cin, "COUT": cout, "H": h, "W": w, "K": k, "STRIDE": stride, "PAD": pad,
                  "GROUPS": groups}
        # Reorders to and from oneDNN's 8-channel blocks (ONEDNN_VERBOSE shows them); an input
        # of under 8 channels, an RGB stem's, is read as it is.
        in_bytes = out.nbytes // out.numel * n * cin * h * w if out.numel else 0
        scratch = ((in_bytes,) if cin >= 8 else ()) + (out.nbytes,)
        return {"operation": "conv2d", "params": params, "scratch_bytes": scratch}
    if op == "linear" and shapes:
        fin = module.in_features if module is not None else shapes[0][-1]
        return {"operation": "linear",
                "params": {"B": out.numel // out.shape[-1], "IN": fin, "OUT": out.shape[-1]}}
    if op in ("matmul", "mm", "bmm") and len(shapes) >= 2 and len(out.shape) >= 2:
        batch = math.prod(out.shape[:-2])
        return {"operation": "bmm" if batch > 1 else "matmul",
                "params": ({"BATCH": batch} if batch > 1 else {})
                | {"M": out.shape[-2], "K": shapes[0][-1], "N": out.shape[-1]}}
    if op in _ELEMENTWISE_OPERATION:
        return {"operation": _ELEMENTWISE_OPERATION[op], "params": {"n": out.numel}}
    if op == "copy":  # a reshape or contiguous that had to copy: a STREAM copy
        return {"operation": "stream_copy", "params": {"n": out.numel}}
    if op in ("softmax", "layer_norm") and out.shape:
        return {"operation": "softmax" if op == "softmax" else "layernorm",
                "params": {"ROWS": out.numel // out.shape[-1], "COLS": out.shape[-1]}}
    if op == "batch_norm" and len(out.shape) == 4:
        return {"operation": "batchnorm", "params": dict(zip("NCHW", out.shape))}
    if op in ("max_pool2d", "avg_pool2d") and shapes and len(shapes[0]) == 4:
        if module is not None:
            k, stride, pad = _pair(module.kernel_size), _pair(module.stride or module.kernel_size), _pair(module.padding)
        else:
            k = _pair(_arg(args, kwargs, 1, "kernel_size"))
            stride = _pair(_arg(args, kwargs, 2, "stride", None) or k)
            pad = _pair(_arg(args, kwargs, 3, "padding", 0))
        n, c, h, w = shapes[0]
        return {"operation": "maxpool" if op == "max_pool2d" else "avgpool",
                "params": {"N": n, "C": c, "H": h, "W": w, "K": k, "STRIDE": stride, "PAD": pad}}
    if op == "adaptive_avg_pool2d" and shapes and len(shapes[0]) == 4 and tuple(out.shape[-2:]) == (1, 1):
        n, c, h, w = shapes[0]  # global average pooling
        return {"operation": "global_avgpool", "params": {"N": n, "C": c, "H": h, "W": w}}
    return {}


def _node_bytes(op: str, node: fx.Node, gm: fx.GraphModule, rec: _Recorder) -> tuple[int, int]:
    """(bytes read, bytes written) of a standalone kernel: each distinct input node once."""
    read = 0
    for source in _input_nodes(node):
        read += sum(t.read for t in rec.values.get(source, []))
    if node.op == "call_module":
        read += _module_params(gm.get_submodule(str(node.target)))
    written = _written(op, rec.values[node])
    return read, written


def _written(op: str, outputs: list[_Tensor]) -> int:
    extra = outputs[0].numel * 8 if op == "max_pool2d" and len(outputs) == 1 else 0  # eager max pooling
    return sum(t.nbytes for t in outputs) + extra  # also writes int64 indices (ops.MAXPOOL)


def _input_nodes(node: fx.Node) -> list[fx.Node]:
    seen: dict[fx.Node, None] = {}
    fx.node.map_arg((node.args, node.kwargs), lambda a: seen.setdefault(a, None))
    return list(seen)


# --------------------------------------------------------------------------- the kernel graph


class _Graph:
    """Kernels with views made transparent: who produces what each kernel reads."""

    def __init__(self, gm: fx.GraphModule, rec: _Recorder):
        self.gm, self.rec = gm, rec
        self.order: list[fx.Node] = [n for n in gm.graph.nodes if n.op.startswith("call_")]
        self.op: dict[fx.Node, str] = {n: _op_name(n, gm) for n in self.order}
        for n, inner in rec.inner_ops.items():
            if len(inner) == 1:  # a wrapped function that runs one op is that op (a mask's add)
                self.op[n] = _canonical(inner[0])
        self.costs: dict[fx.Node, NodeCost] = {}
        self.uncounted: list[str] = []
        for n in self.order:
            self.costs[n] = self._cost(n)
        self.kernels = [n for n in self.order if self.costs[n].kernel]
        self.consumers: dict[fx.Node, list[fx.Node]] = {k: [] for k in self.kernels}
        self.escapes: set[fx.Node] = set()
        for k in self.kernels:
            for source in _input_nodes(k):
                producer = self.producer(source)
                if producer is not None and k not in self.consumers[producer]:
                    self.consumers[producer].append(k)
        for n in gm.graph.nodes:
            if n.op == "output":
                for source in _input_nodes(n):
                    if (producer := self.producer(source)) is not None:
                        self.escapes.add(producer)

    def _cost(self, n: fx.Node) -> NodeCost:
        op = self.op[n]
        outs = self.rec.values[n]
        free = not outs or (op in VIEW_OPS and self.rec.aliased[n])
        if op in VIEW_OPS and not free:
            op = "copy"  # a reshape/contiguous that could not alias copies its input
        flops, nbytes = 0, 0
        counted = None if free else _node_flops(op, n, self.gm, self.rec)
        if counted is None and not free and self.rec.aliased[n]:
            # an op no formula knows that handed back its input (a wrapped helper such as
            # "add the mask if there is one", called without one) did no work
            free = True
        if not free:
            if counted is None:
                self.uncounted.append(op)
            flops = counted or 0
            nbytes = sum(_node_bytes(op, n, self.gm, self.rec))
        meta = outs[0] if outs else None
        return NodeCost(
            name=n.name, kind=n.op, target=_target_name(n), op=op,
            module=type(self.gm.get_submodule(str(n.target))).__name__ if n.op == "call_module" else None,
            shape=tuple(meta.shape) if meta is not None else None,
            dtype=_dtype_name(meta.dtype) if meta is not None else None,
            kernel=not free, flops=flops, bytes=nbytes,
            allocated_bytes=0 if free or self.rec.aliased[n] else sum(t.nbytes for t in outs),
            **({} if free else _registry_params(op, n, self.gm, self.rec)),
        )

    def producer(self, node: fx.Node) -> fx.Node | None:
        """The kernel whose output ``node`` is or views; None for inputs and parameters."""
        if not self.rec.values.get(node):
            return None  # a shape or a scalar carries no data dependency
        while node.op.startswith("call_") and not self.costs[node].kernel:
            sources = [s for s in _input_nodes(node) if self.rec.values.get(s)]
            if not sources:
                return None
            node = sources[0]  # a view's data is its first tensor argument's
        return node if node.op.startswith("call_") else None

    def sole_consumer(self, k: fx.Node) -> fx.Node | None:
        users = self.consumers[k]
        return users[0] if len(users) == 1 and k not in self.escapes else None

    def inputs(self, k: fx.Node) -> list[fx.Node | None]:
        """Producers of the tensor arguments of ``k`` (None: a graph input or a parameter)."""
        return [self.producer(s) for s in _input_nodes(k) if self.rec.values.get(s)]


def _target_name(n: fx.Node) -> str:
    if isinstance(n.target, str):
        return n.target
    return getattr(n.target, "__qualname__", None) or str(n.target)


# --------------------------------------------------------------------------- pattern matching


def _conv_module(g: _Graph, k: fx.Node) -> tuple[int, int, tuple[int, ...], int, int]:
    """(groups, in channels, kernel, stride, out channels) of a conv node in either form."""
    if k.op == "call_module":
        m = g.gm.get_submodule(str(k.target))
        return m.groups, m.in_channels, tuple(m.kernel_size), m.stride[0], m.out_channels
    args, kwargs = g.rec.args[k]
    weight = args[1]
    stride = _arg(args, kwargs, 3, "stride", 1)
    # F.conv2d / aten.conv2d take groups 7th; aten.convolution 9th, after transposed and output_padding
    groups_at = 8 if k.target in (torch.ops.aten.convolution.default, torch.ops.aten._convolution.default) else 6
    groups = _arg(args, kwargs, groups_at, "groups", 1)
    stride = stride if isinstance(stride, int) else stride[0]
    return int(groups), weight[1] * int(groups), tuple(weight[2:]), stride, weight[0]


def _is_relu6(g: _Graph, k: fx.Node) -> bool:
    if g.op[k] == "relu6":
        return True
    if g.op[k] != "hardtanh":
        return False
    if k.op == "call_module":
        m = g.gm.get_submodule(str(k.target))
        return (m.min_val, m.max_val) == (0.0, 6.0)
    args, kwargs = g.rec.args[k]
    return (_arg(args, kwargs, 1, "min_val", -1.0), _arg(args, kwargs, 2, "max_val", 1.0)) == (0.0, 6.0)


def _has_bias(g: _Graph, k: fx.Node) -> bool:
    if k.op == "call_module":
        return g.gm.get_submodule(str(k.target)).bias is not None
    args, kwargs = g.rec.args[k]
    return _arg(args, kwargs, 2, "bias") is not None


def _tensor_args(g: _Graph, k: fx.Node) -> int:
    return sum(bool(g.rec.values.get(s)) for s in _input_nodes(k))


def _features(g: _Graph, linear: fx.Node) -> tuple[int, int]:
    """(in, out) features of a linear node, from the shapes it read and wrote."""
    return g.rec.args[linear][0][0][-1], g.rec.values[linear][0].shape[-1]


def _match(g: _Graph, k: fx.Node, taken: set[fx.Node]) -> tuple[str, list[fx.Node]] | None:
    """The longest registered pattern starting at kernel ``k`` along single-consumer links."""

    def nxt(node: fx.Node, *ops: str) -> fx.Node | None:
        c = g.sole_consumer(node)
        if c is None or c in taken:
            return None
        return c if (g.op[c] in ops or ("relu6" in ops and _is_relu6(g, c))) else None

    op = g.op[k]
    if op == "conv2d":
        groups, cin, _, _, _ = _conv_module(g, k)
        bn = nxt(k, "batch_norm")
        if bn is None:
            relu = nxt(k, "relu")
            return ("Conv2d_ReLU", [k, relu]) if relu is not None else None
        act = nxt(bn, "relu", "relu6")
        if act is not None and _is_relu6(g, act):
            depthwise = groups > 1 and groups == cin
            return ("DWConv2d_BN_ReLU6" if depthwise else "Conv2d_BN_ReLU6", [k, bn, act])
        if act is not None:
            pool = nxt(act, "max_pool2d")
            if pool is not None:
                return "Conv2d_BN_ReLU_MaxPool", [k, bn, act, pool]
            return "Conv2d_BN_ReLU", [k, bn, act]
        add = nxt(bn, "add")
        # the residual join: the add's other operand comes from another branch
        if add is not None and _tensor_args(g, add) == 2 and (relu := nxt(add, "relu")) is not None:
            return "Conv2d_BN_Add_ReLU", [k, bn, add, relu]
        return "Conv2d_BN", [k, bn]
    if op == "linear" and _has_bias(g, k):
        act = nxt(k, "relu", "gelu")
        if act is None:
            return None
        down = nxt(act, "linear") if g.op[act] == "relu" else None
        if down is not None and _has_bias(g, down) and _features(g, down) == _features(g, k)[::-1]:
            return "MLP", [k, act, down]  # up- and down-projection back to the input width
        return ("Linear_Bias_ReLU" if g.op[act] == "relu" else "Linear_Bias_GELU"), [k, act]
    if op in ("matmul", "bmm"):
        chain = [k]
        node: fx.Node | None = k
        scale = nxt(k, "mul", "div")
        if scale is not None and _tensor_args(g, scale) == 1:  # multiplied by a Python scalar
            chain.append(scale)
            node = scale
        mask = nxt(node, "add", "masked_fill")  # an additive or boolean attention mask
        if mask is not None and (g.op[mask] == "masked_fill" or _tensor_args(g, mask) == 2):
            chain.append(mask)
            node = mask
        softmax = nxt(node, "softmax")
        if softmax is None:
            return None
        chain.append(softmax)
        pv = nxt(softmax, "matmul", "bmm")
        if pv is not None and g.inputs(pv)[0] is softmax:
            return "Attention", [*chain, pv]
        return "QK_Softmax", chain
    if op == "softmax":
        pv = nxt(k, "matmul", "bmm")
        if pv is not None and g.inputs(pv)[0] is k:
            return "Softmax_V", [k, pv]
        return None
    if op == "mul" and _tensor_args(g, k) == 2:
        add = nxt(k, "add")
        if add is not None and _tensor_args(g, add) == 2 and (relu := nxt(add, "relu")) is not None:
            return "Mul_Add_ReLU", [k, add, relu]
        return None
    if op == "add" and _tensor_args(g, k) == 2:
        nxt_op = nxt(k, "relu", "layer_norm")
        if nxt_op is not None:
            return ("Add_ReLU" if g.op[nxt_op] == "relu" else "Add_LayerNorm"), [k, nxt_op]
        return None
    if op == "sigmoid":
        mul = nxt(k, "mul")
        # x * sigmoid(x): the multiply's other operand is the sigmoid's own input
        if mul is not None:
            other = [s for s in _input_nodes(mul) if g.rec.values.get(s) and g.producer(s) is not k]
            if other and other == [s for s in _input_nodes(k) if g.rec.values.get(s)]:
                return "Sigmoid_Mul", [k, mul]
    return None


def _pattern_shape(g: _Graph, pattern: str, nodes: list[fx.Node]) -> dict[str, ParamValue]:
    """The candidate's parameters under the names its registry entry uses."""
    family = PATTERNS[pattern].family
    first, last = nodes[0], nodes[-1]
    args = g.rec.args[first][0]
    if family == "conv":
        groups, cin, kernel, stride, cout = _conv_module(g, first)
        n, _, h, w = args[0]
        shape: dict[str, ParamValue] = {"N": n, "CIN": cin, "COUT": cout, "H": h, "W": w, "K": kernel[0],
                                        "STRIDE": stride}
        if groups > 1:
            shape["GROUPS"] = groups
        return shape
    if family == "linear":
        x = args[0]
        fout = g.rec.values[first][0].shape[-1]
        if pattern == "MLP":
            return {"B": math.prod(x[:-1]), "IN": x[-1], "HID": fout}
        return {"B": math.prod(x[:-1]), "IN": x[-1], "OUT": fout}
    if family == "attention":
        scores = g.rec.values[first][0].shape  # (..., L, L) for QK^T; softmax keeps the shape
        head = g.rec.args[last][0][1] if pattern == "Softmax_V" else args[0]  # V, else Q: (..., L, D)
        lead = tuple(head[:-2])
        b = lead[0] if lead else 1
        h = math.prod(lead[1:]) if len(lead) > 1 else 1
        return {"B": b, "H": h, "L": scores[-2], "D": head[-1]}
    out = g.rec.values[last][0]
    if pattern == "Add_LayerNorm":
        return {"ROWS": out.numel // out.shape[-1], "COLS": out.shape[-1]}
    return {"n": out.numel}


# --------------------------------------------------------------------------- fusion decision


def should_fuse(calibration: HardwareCalibration | None, pattern: str, shape: Mapping[str, ParamValue],
                dtype: str = "float32") -> tuple[bool, str]:
    """Fuse unless the calibration measured, at the nearest calibrated size, that it does not pay."""
    if calibration is None:
        return True, "no calibration given: fused by default"
    entry = calibration.get_fusion_pattern(pattern, dtype=dtype, **shape)
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
    return calibration.get_fusion_speedup(pattern, 1.0, dtype=dtype, **shape)


# --------------------------------------------------------------------------- partition


class _Plan(NamedTuple):
    pattern: str | None
    candidate: str | None
    fused: bool
    decision: str
    kernels: list[fx.Node]
    shape: dict[str, ParamValue]
    speedup: float


def _attach_free(g: _Graph, group_of: dict[fx.Node, int]) -> dict[fx.Node, int]:
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


def _subgraph_bytes(g: _Graph, members: set[fx.Node]) -> tuple[int, int]:
    """(external, sum of the standalone kernels' bytes) of a set of kernels."""
    external = 0
    sources: dict[fx.Node, None] = {}
    for k in members:
        for s in _input_nodes(k):
            producer = g.producer(s)
            if producer is None or producer not in members:
                sources.setdefault(s, None)
        if k.op == "call_module":
            external += _module_params(g.gm.get_submodule(str(k.target)))
        # written out when read elsewhere, returned, or never read (then nothing keeps it on chip)
        escapes = k in g.escapes or not g.consumers[k] or any(c not in members for c in g.consumers[k])
        if escapes:
            external += _written(g.costs[k].op, g.rec.values[k])
    external += sum(t.read for s in sources for t in g.rec.values.get(s, []))
    return external, sum(g.costs[k].bytes for k in members)


def partition(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
              calibration: HardwareCalibration | None = None) -> Partition:
    """Trace ``model``, count every node and group its kernels into fusion-pattern subgraphs."""
    if model.training:
        raise ValueError("partition() models inference: call model.eval() first "
                         "(train-mode BatchNorm and Dropout do different work)")
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    gm, traced_with = trace(model, inputs)
    rec = _Recorder(gm)
    with torch.no_grad():
        rec.propagate(*inputs)
    g = _Graph(gm, rec)

    # Greedy: the first pattern found from each kernel in execution order wins.
    taken: set[fx.Node] = set()
    groups: list[tuple[str | None, list[fx.Node]]] = []
    for k in g.kernels:
        if k in taken:
            continue
        matched = _match(g, k, taken)
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
        shape = _pattern_shape(g, pattern, nodes)
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
            decision=decision, nodes=tuple(g.costs[n] for n in sorted(members[i], key=position.__getitem__)), shape=shape, dtype=dtype, flops=flops,
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
    )


def _bottleneck(calibration: HardwareCalibration | None, flops: int, nbytes: int,
                dtype: str | None) -> Bottleneck | None:
    if calibration is None or dtype is None:
        return None
    bandwidth = roofline.bandwidth_ceiling(nbytes, calibration.metadata.cache_sizes,
                                           calibration.measured.bandwidth_by_level_gbps, calibration.dram_bandwidth())
    verdict = roofline.classify(flops, nbytes, calibration.compute_ceiling(dtype), bandwidth)
    return None if verdict is Bottleneck.UNKNOWN else verdict


# --------------------------------------------------------------------------- report


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB"


def _gflops(flops: int) -> str:
    return f"{flops / 1e9:.3f} GFLOPs"


def render_report(p: Partition, top: int = 5) -> str:
    """The predecessor's partitioner report (shared/reference/003), with FLOPs that agree."""
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
            f"   - FLOPs: {s.flops / 1e9:.3f} G ({100 * s.flops / p.total_flops if p.total_flops else 0:.1f}% of total)",
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
