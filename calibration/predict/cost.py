"""Per-node costs and the kernel graph.

Each node's FLOPs and bytes follow the conventions of :mod:`calibration.specs.operations`
(multiply-add = 2 FLOPs, bias = 1 FLOP per output element, element-wise costs from
``ELEMENTWISE_FLOPS``, bytes = compulsory traffic at the real dtype size), and a kernel the
operation registry models gets that operation's name and parameters, so a mapper can ask the
profile about it. :class:`KernelGraph` makes views transparent: who produces what each
kernel reads.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import fx, nn

from calibration.predict.results import NodeCost
from calibration.predict.trace import (
    DATA_MOVEMENT_OPS,
    FILL_OPS,
    POINTWISE_FLOPS,
    VIEW_OPS,
    Recorder,
    TensorInfo,
    canonical,
    dtype_name,
    op_name,
)
from calibration.specs.operations import ELEMENTWISE_FLOPS, OPERATIONS, lstm_parts


def module_params(module: nn.Module) -> int:
    """Floating-point parameters and buffers: what the kernel reads (BN's num_batches_tracked is not).
    A module fx keeps as one node runs all of them, its submodules' too (a transformer layer's Linears)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors if t.is_floating_point())


# A transposed conv's names: aten.convolution(transposed=True) (trace.op_name) and the functionals
TRANSPOSED_CONV_OPS = frozenset({"conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"})


def arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _node_flops(op: str, node: fx.Node, gm: fx.GraphModule, rec: Recorder) -> int | None:
    """FLOPs of one kernel node, or None when no formula models ``op``."""
    outs = rec.values[node]
    out = outs[0] if outs else None
    numel = out.numel if out is not None else 0
    args, kwargs = rec.args[node]
    shapes = [a for a in args if isinstance(a, tuple) and all(isinstance(x, int) for x in a)]
    module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
    if op in ("conv1d", "conv2d", "conv3d"):  # only conv2d starts a pattern; all count alike
        weight = tuple(module.weight.shape) if module is not None else shapes[1]
        has_bias = (module.bias is not None) if module is not None else arg(args, kwargs, 2, "bias") is not None
        return 2 * numel * math.prod(weight[1:]) + (numel if has_bias else 0)
    if op in TRANSPOSED_CONV_OPS:
        # weight (CIN, COUT / groups, *kernel): each input element scatters into COUT/groups x kernel outputs
        has_bias = arg(args, kwargs, 2, "bias") is not None
        return 2 * math.prod(shapes[0]) * math.prod(shapes[1][1:]) + (numel if has_bias else 0)
    if op == "linear":
        fin = module.in_features if module is not None else shapes[1][-1]
        has_bias = (module.bias is not None) if module is not None else arg(args, kwargs, 2, "bias") is not None
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
        kernel = module.kernel_size if module is not None else arg(args, kwargs, 1, "kernel_size")
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        return numel * (kh * kw - 1)  # K*K-1 comparisons per output, as ops.MAXPOOL
    if op == "avg_pool2d":
        kernel = module.kernel_size if module is not None else arg(args, kwargs, 1, "kernel_size")
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        return numel * kh * kw
    if op in ("adaptive_avg_pool2d", "mean", "sum"):
        return math.prod(shapes[0])  # each input element is added once
    if op == "gelu" and _gelu_approximate(module, args, kwargs) == "tanh":
        return ELEMENTWISE_FLOPS["gelu_tanh"] * numel
    if op in POINTWISE_FLOPS:
        return POINTWISE_FLOPS[op] * numel
    return None


# Canonical op -> the ops registry's element-wise operation of the same kernel, or of the
# nearest one: the profile times these, and one input's cheap arithmetic runs as ReLU does,
# one input's exp, log or tanh as the sigmoid does, two inputs as add does.
_ELEMENTWISE_OPERATION = {"add": "add", "mul": "mul", "relu": "relu", "gelu": "gelu", "sigmoid": "sigmoid",
                          "silu": "silu", "relu6": "relu", "hardtanh": "relu", "clamp": "relu", "sub": "add",
                          "div": "mul", "leaky_relu": "relu", "hardsigmoid": "relu", "hardswish": "relu",
                          "abs": "relu", "neg": "relu", "tanh": "sigmoid", "exp": "sigmoid", "log": "sigmoid",
                          "erf": "sigmoid", "sqrt": "sigmoid", "rsqrt": "sigmoid", "elu": "sigmoid",
                          "softplus": "sigmoid", "mish": "silu", "maximum": "add", "minimum": "add",
                          "masked_fill": "masked_fill", "where": "where", "clamp_min": "relu", "clamp_max": "relu",
                          "prelu": "relu", "_prelu_kernel": "relu"}
# Ops that move data without arithmetic, and upsampling that reads each input element a few
# times from cache and writes its output once: priced as the STREAM copy of their output.
_COPY_OPS = DATA_MOVEMENT_OPS | {"interpolate", "upsample_bilinear2d", "upsample_bicubic2d", "upsample_linear1d",
                                 "upsample_trilinear3d"}


def _pair(value: Any) -> int:
    return value if isinstance(value, int) else int(value[0])


def _axes(value: Any, n: int) -> tuple[int, ...]:
    """A conv argument given as one int or one per spatial axis, as ``n`` ints."""
    return (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)


class ConvArgs(NamedTuple):
    cin: int
    cout: int
    kernel: tuple[int, ...]  # one value per spatial axis, as stride, pad and dilation
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int


def conv_args(node: fx.Node, gm: fx.GraphModule, rec: Recorder) -> ConvArgs:
    """A conv node's geometry, whether it calls nn.Conv1d/2d, F.conv2d, aten.conv2d or
    aten.convolution. Padding "valid" is none; "same" pads each side by half the dilated kernel."""
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        cin, cout, groups, kernel = m.in_channels, m.out_channels, m.groups, tuple(m.kernel_size)
        stride, padding, dilation = m.stride, m.padding, m.dilation
    else:
        args, kwargs = rec.args[node]
        weight = args[1]
        # F.conv2d / aten.conv2d take groups 7th; aten.convolution 9th, after transposed and output_padding
        groups_at = 8 if node.target in (torch.ops.aten.convolution.default, torch.ops.aten._convolution.default) else 6
        groups = int(arg(args, kwargs, groups_at, "groups", 1))
        cin, cout, kernel = weight[1] * groups, weight[0], tuple(weight[2:])
        stride, padding = arg(args, kwargs, 3, "stride", 1), arg(args, kwargs, 4, "padding", 0)
        dilation = arg(args, kwargs, 5, "dilation", 1)
    n = len(kernel)
    dilation = _axes(dilation, n)
    if padding == "valid":
        padding = 0
    elif padding == "same":
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
    return ConvArgs(cin, cout, kernel, _axes(stride, n), _axes(padding, n), dilation, groups)


def conv2d_params(n: int, cin: int, size: tuple[int, ...], conv: ConvArgs) -> dict[str, int] | None:
    """The registry's conv2d parameters of a 2-D conv, or of a 1-D one as the 2-D conv of one
    row ATen runs it as; the width's values (``CONV_WIDTH_PARAMS``) only where they differ."""
    if len(size) == 1:  # (N, C, L): one row of L, the kernel 1 x k
        size, conv = (1, *size), ConvArgs(conv.cin, conv.cout, (1, *conv.kernel), (1, *conv.stride), (0, *conv.pad),
                                          (1, *conv.dilation), conv.groups)
    if len(size) != 2 or len(conv.kernel) != 2:
        return None
    params = {"N": n, "CIN": cin, "COUT": conv.cout, "H": size[0], "W": size[1], "K": conv.kernel[0],
              "STRIDE": conv.stride[0], "PAD": conv.pad[0], "GROUPS": conv.groups}
    width = {"KW": (conv.kernel, "K"), "STRIDE_W": (conv.stride, "STRIDE"), "PAD_W": (conv.pad, "PAD")}
    for name, (pair, height) in width.items():
        if pair[1] != params[height]:
            params[name] = pair[1]
    if conv.dilation[0] != 1:
        params["DIL"] = conv.dilation[0]
    if conv.dilation[1] != conv.dilation[0]:
        params["DIL_W"] = conv.dilation[1]
    return params


def _gelu_approximate(module: Any, args: tuple, kwargs: dict) -> str:
    """A GELU's form, 'none' (erf) or 'tanh': nn.GELU's attribute, else F.gelu's or aten.gelu's
    keyword (or second argument)."""
    if module is not None:
        return str(getattr(module, "approximate", "none"))
    return str(arg(args, kwargs, 1, "approximate", "none"))


def _registry_params(op: str, node: fx.Node, gm: fx.GraphModule, rec: Recorder) -> dict[str, Any]:
    """{'operation': registry name, 'params': its parameters} for kernels the registry models."""
    outs = rec.values[node]
    if not outs:
        return {}
    out = outs[0]
    args, kwargs = rec.args[node]
    shapes = [a for a in args if isinstance(a, tuple) and all(isinstance(x, int) for x in a)]
    module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
    if op in ("conv1d", "conv2d") and shapes and len(shapes[0]) in (3, 4):
        n, cin, *size = shapes[0]
        params = conv2d_params(n, cin, tuple(size), conv_args(node, gm, rec))
        if params is None:
            return {}
        # Reorders to and from oneDNN's 8-channel blocks (ONEDNN_VERBOSE shows them); an input
        # of under 8 channels, an RGB stem's, is read as it is.
        in_bytes = out.nbytes // out.numel * n * cin * math.prod(size) if out.numel else 0
        scratch = ((in_bytes,) if cin >= 8 else ()) + (out.nbytes,)
        return {"operation": "conv2d", "params": params, "scratch_bytes": scratch}
    if op in TRANSPOSED_CONV_OPS and shapes and len(out.shape) in (3, 4):  # 1-D or 2-D; a 3-D one stays unpriced
        # The direct conv whose input gradient it computes, over its output: the same FLOPs
        # (each input element scattered over COUT/groups x kernel outputs is that conv's
        # multiply-adds), and what oneDNN runs it as (a backward-data convolution).
        conv = conv_args(node, gm, rec)
        if module is not None:  # nn.ConvTranspose: its in_channels are the direct conv's output channels
            conv = conv._replace(cin=conv.cout, cout=conv.cin)
        n, channels, *size = out.shape
        params = conv2d_params(n, channels, tuple(size), conv)
        if params is None:
            return {}
        return {"operation": "conv2d", "params": params}
    if op == "linear" and shapes:
        fin = module.in_features if module is not None else shapes[0][-1]
        return {"operation": "linear",
                "params": {"B": out.numel // out.shape[-1], "IN": fin, "OUT": out.shape[-1]}}
    if op == "addmm" and len(shapes) >= 3 and len(out.shape) == 2:  # bias + mat1 @ mat2: a Linear's kernel
        return {"operation": "linear", "params": {"B": out.shape[0], "IN": shapes[1][-1], "OUT": out.shape[1]}}
    if op in ("matmul", "mm", "bmm", "baddbmm") and len(shapes) >= 2 and len(out.shape) >= 2:
        batch = math.prod(out.shape[:-2])
        k = shapes[1][-1] if op == "baddbmm" else shapes[0][-1]  # baddbmm(bias, a, b)
        return {"operation": "bmm" if batch > 1 else "matmul",
                "params": ({"BATCH": batch} if batch > 1 else {})
                | {"M": out.shape[-2], "K": k, "N": out.shape[-1]}}
    if op == "gelu" and _gelu_approximate(module, args, kwargs) == "tanh":
        return {"operation": "gelu_tanh", "params": {"n": out.numel}}
    if op in _ELEMENTWISE_OPERATION:
        return {"operation": _ELEMENTWISE_OPERATION[op], "params": {"n": out.numel}}
    if op in _COPY_OPS:  # a reshape or contiguous that had to copy, a concatenation: a STREAM copy
        return {"operation": "stream_copy", "params": {"n": out.numel}}
    if op in FILL_OPS:  # the write alone, into an array as an eager op's output
        return {"operation": "fill", "params": {"n": out.numel}}
    if op == "group_norm" and len(out.shape) >= 2:  # normalises N x groups rows, as LayerNorm does
        if module is not None:
            groups = module.num_groups
        else:  # aten.native_group_norm(input, weight, bias, N, C, HxW, group, eps), else F.group_norm
            groups = int(args[6] if len(args) >= 7 else arg(args, kwargs, 1, "num_groups"))
        rows = out.shape[0] * groups
        return {"operation": "layernorm", "params": {"ROWS": rows, "COLS": out.numel // rows}}
    if op in ("softmax", "log_softmax", "layer_norm") and out.shape:
        return {"operation": "layernorm" if op == "layer_norm" else "softmax",
                "params": {"ROWS": out.numel // out.shape[-1], "COLS": out.shape[-1]}}
    if op == "batch_norm" and 2 <= len(out.shape) <= 5:  # (N, C), (N, C, L), (N, C, D, H, W) as N, C, H, W
        rest = math.prod(out.shape[2:])
        return {"operation": "batchnorm", "params": {"N": out.shape[0], "C": out.shape[1], "H": rest, "W": 1}
                if len(out.shape) != 4 else dict(zip("NCHW", out.shape, strict=True))}
    if op in ("max_pool2d", "avg_pool2d") and shapes and len(shapes[0]) == 4:
        if module is not None:
            k, pad = _pair(module.kernel_size), _pair(module.padding)
            stride = _pair(module.stride or module.kernel_size)
        else:
            k = _pair(arg(args, kwargs, 1, "kernel_size"))
            stride = _pair(arg(args, kwargs, 2, "stride", None) or k)
            pad = _pair(arg(args, kwargs, 3, "padding", 0))
        n, c, h, w = shapes[0]
        return {"operation": "maxpool" if op == "max_pool2d" else "avgpool",
                "params": {"N": n, "C": c, "H": h, "W": w, "K": k, "STRIDE": stride, "PAD": pad}}
    if op == "mkldnn_rnn_layer" and len(shapes) >= 3 and (lstm := lstm_params(*shapes[:3])):
        return {"operation": "lstm", "params": lstm}
    if op == "adaptive_avg_pool2d" and shapes and len(shapes[0]) == 4 and tuple(out.shape[-2:]) == (1, 1):
        n, c, h, w = shapes[0]  # global average pooling
        return {"operation": "global_avgpool", "params": {"N": n, "C": c, "H": h, "W": w}}
    return {}


def _registry_kernel(name: str, op: str, operation: str, params: dict[str, int], dtype: torch.dtype,
                     shape: tuple[int, ...]) -> NodeCost:
    """A kernel an op runs inside, with the registry's FLOPs and bytes for ``operation``."""
    spec = OPERATIONS[operation]
    return NodeCost(name=name, kind="call_function", target=op, op=op, shape=shape, dtype=dtype_name(dtype),
                    kernel=True, flops=spec.flops(params), bytes=spec.bytes_moved(params, dtype.itemsize),
                    operation=operation, params=params)


def attention_kernels(name: str, q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...],
                      dtype: torch.dtype) -> tuple[NodeCost, ...]:
    """``scaled_dot_product_attention`` as the unfused kernels of the Attention pattern:
    Q @ K^T, the scale, the softmax and @ V. The profile prices each; the mapper then applies
    the speedup measured for the library's fused kernel over them."""
    batch, lq, d, lk, dv = math.prod(q[:-2]), q[-2], q[-1], k[-2], v[-1]

    def gemm(suffix: str, m: int, kk: int, n: int) -> NodeCost:
        params = ({"BATCH": batch} if batch > 1 else {}) | {"M": m, "K": kk, "N": n}
        return _registry_kernel(f"{name}/{suffix}", "bmm" if batch > 1 else "matmul",
                                "bmm" if batch > 1 else "matmul", params, dtype, (*q[:-2], m, n))

    scores = (*q[:-2], lq, lk)
    return (gemm("scores", lq, d, lk),
            _registry_kernel(f"{name}/scale", "mul", "mul", {"n": batch * lq * lk}, dtype, scores),
            _registry_kernel(f"{name}/softmax", "softmax", "softmax", {"ROWS": batch * lq, "COLS": lk}, dtype,
                             scores),
            gemm("values", lq, lk, dv))


def lstm_params(x: tuple[int, ...], w_ih: tuple[int, ...], w_hh: tuple[int, ...]) -> dict[str, int] | None:
    """The registry's lstm parameters of an ``mkldnn_rnn_layer`` call on (T, B, I) inputs; None
    for a layer whose hidden state is projected (``proj_size``), which the grid does not time."""
    steps, batch, features = x
    hidden = w_ih[0] // 4
    return {"T": steps, "B": batch, "I": features, "H": hidden} if w_hh[1] == hidden else None


def rnn_kernels(name: str, x: tuple[int, ...], w_ih: tuple[int, ...], w_hh: tuple[int, ...],
                dtype: torch.dtype) -> tuple[NodeCost, ...]:
    """One layer and direction of oneDNN's fused RNN (``mkldnn_rnn_layer``, an LSTM's on the
    CPU) as what it computes (``specs.operations.lstm_parts``): the input projection of every
    step as one Linear, then one Linear of the hidden state per step, then the gates' math as
    one sigmoid-like pass over every gate value."""
    steps, batch, features = x
    gates = w_ih[0]
    projection, step, cells = lstm_parts({"T": steps, "B": batch, "I": features, "H": gates // 4})
    step = step | {"IN": w_hh[1]}  # the projected size where proj_size is set
    return (_registry_kernel(f"{name}/input", "linear", "linear", projection, dtype, (steps, batch, gates)),
            *(_registry_kernel(f"{name}/step", "linear", "linear", step, dtype, (batch, gates)),) * steps,
            _registry_kernel(f"{name}/gates", "sigmoid", "sigmoid", {"n": cells}, dtype, (steps, batch, gates)))


def _node_bytes(op: str, node: fx.Node, gm: fx.GraphModule, rec: Recorder) -> tuple[int, int]:
    """(bytes read, bytes written) of a standalone kernel: each distinct input node once."""
    read = 0
    for source in input_nodes(node):
        read += sum(t.read for t in rec.values.get(source, []))
    if node.op == "call_module":
        read += module_params(gm.get_submodule(str(node.target)))
    written = written_bytes(op, rec.values[node])
    return read, written


def written_bytes(op: str, outputs: list[TensorInfo]) -> int:
    extra = outputs[0].numel * 8 if op == "max_pool2d" and len(outputs) == 1 else 0  # eager max pooling
    return sum(t.nbytes for t in outputs) + extra  # also writes int64 indices (ops.MAXPOOL)


def input_nodes(node: fx.Node) -> list[fx.Node]:
    seen: dict[fx.Node, None] = {}
    fx.node.map_arg((node.args, node.kwargs), lambda a: seen.setdefault(a, None))
    return list(seen)


# --------------------------------------------------------------------------- the kernel graph


class KernelGraph:
    """Kernels with views made transparent: who produces what each kernel reads."""

    def __init__(self, gm: fx.GraphModule, rec: Recorder):
        self.gm, self.rec = gm, rec
        self.order: list[fx.Node] = [n for n in gm.graph.nodes if n.op.startswith("call_")]
        self.op: dict[fx.Node, str] = {n: op_name(n, gm) for n in self.order}
        for n, inner in rec.inner_ops.items():
            if len(inner) == 1:  # a wrapped function that runs one op is that op (a mask's add)
                self.op[n] = canonical(inner[0])
        self.costs: dict[fx.Node, NodeCost] = {}
        self.uncounted: list[str] = []
        for n in self.order:
            self.costs[n] = self._cost(n)
        self.kernels = [n for n in self.order if self.costs[n].kernel]
        self.consumers: dict[fx.Node, list[fx.Node]] = {k: [] for k in self.kernels}
        self.escapes: set[fx.Node] = set()
        for k in self.kernels:
            for source in input_nodes(k):
                producer = self.producer(source)
                if producer is not None and k not in self.consumers[producer]:
                    self.consumers[producer].append(k)
        for n in gm.graph.nodes:
            if n.op == "output":
                for source in input_nodes(n):
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
        inner: tuple[NodeCost, ...] = ()
        if op == "scaled_dot_product_attention" and not free and outs:
            q, k, v = [a for a in self.rec.args[n][0] if isinstance(a, tuple)][:3]
            inner = attention_kernels(n.name, q, k, v, outs[0].dtype)
        if op == "mkldnn_rnn_layer" and not free and outs:
            x, w_ih, w_hh = self.rec.args[n][0][:3]
            inner = rnn_kernels(n.name, x, w_ih, w_hh, outs[0].dtype)
            counted = sum(k.flops for k in inner)
        if counted is None and not free and n in self.rec.inner:
            inside = KernelGraph(*self.rec.inner[n])
            inner = tuple(inside.costs[k] for k in inside.kernels)
            counted = sum(k.flops for k in inner)
            self.uncounted.extend(inside.uncounted)
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
            dtype=dtype_name(meta.dtype) if meta is not None else None,
            kernel=not free, flops=flops, bytes=nbytes,
            allocated_bytes=0 if free or self.rec.aliased[n] else sum(t.nbytes for t in outs),
            copy_bytes=0 if free or op == "copy" else self.rec.copied.get(n, 0), inner=inner,
            **({} if free else _registry_params(op, n, self.gm, self.rec)),
        )

    def producer(self, node: fx.Node) -> fx.Node | None:
        """The kernel whose output ``node`` is or views; None for inputs and parameters."""
        if not self.rec.values.get(node):
            return None  # a shape or a scalar carries no data dependency
        while node.op.startswith("call_") and not self.costs[node].kernel:
            sources = [s for s in input_nodes(node) if self.rec.values.get(s)]
            if not sources:
                return None
            node = sources[0]  # a view's data is its first tensor argument's
        return node if node.op.startswith("call_") else None

    def sole_consumer(self, k: fx.Node) -> fx.Node | None:
        users = self.consumers[k]
        return users[0] if len(users) == 1 and k not in self.escapes else None

    def inputs(self, k: fx.Node) -> list[fx.Node | None]:
        """Producers of the tensor arguments of ``k`` (None: a graph input or a parameter)."""
        return [self.producer(s) for s in input_nodes(k) if self.rec.values.get(s)]


def _target_name(n: fx.Node) -> str:
    if isinstance(n.target, str):
        return n.target
    return getattr(n.target, "__qualname__", None) or str(n.target)


