"""Matching chains of kernels against the fusion patterns of :data:`calibration.specs.patterns.PATTERNS`."""

from __future__ import annotations

import math

from torch import fx

from calibration.predict.cost import KernelGraph, arg, conv_args, input_nodes
from calibration.specs.keys import ParamValue
from calibration.specs.patterns import PATTERNS


def _is_relu6(g: KernelGraph, k: fx.Node) -> bool:
    if g.op[k] == "relu6":
        return True
    if g.op[k] != "hardtanh":
        return False
    if k.op == "call_module":
        m = g.gm.get_submodule(str(k.target))
        return (m.min_val, m.max_val) == (0.0, 6.0)
    args, kwargs = g.rec.args[k]
    return (arg(args, kwargs, 1, "min_val", -1.0), arg(args, kwargs, 2, "max_val", 1.0)) == (0.0, 6.0)


def _has_bias(g: KernelGraph, k: fx.Node) -> bool:
    if k.op == "call_module":
        return g.gm.get_submodule(str(k.target)).bias is not None
    args, kwargs = g.rec.args[k]
    return arg(args, kwargs, 2, "bias") is not None


def _tensor_args(g: KernelGraph, k: fx.Node) -> int:
    return sum(bool(g.rec.values.get(s)) for s in input_nodes(k))


def _features(g: KernelGraph, linear: fx.Node) -> tuple[int, int]:
    """(in, out) features of a linear node, from the shapes it read and wrote."""
    return g.rec.args[linear][0][0][-1], g.rec.values[linear][0].shape[-1]


def match_pattern(g: KernelGraph, k: fx.Node, taken: set[fx.Node]) -> tuple[str, list[fx.Node]] | None:
    """The longest registered pattern starting at kernel ``k`` along single-consumer links."""

    def nxt(node: fx.Node, *ops: str) -> fx.Node | None:
        c = g.sole_consumer(node)
        if c is None or c in taken:
            return None
        return c if (g.op[c] in ops or ("relu6" in ops and _is_relu6(g, c))) else None

    op = g.op[k]
    if op == "conv2d":
        conv = conv_args(k, g.gm, g.rec)
        bn = nxt(k, "batch_norm")
        if bn is None:
            relu = nxt(k, "relu")
            return ("Conv2d_ReLU", [k, relu]) if relu is not None else None
        act = nxt(bn, "relu", "relu6")
        if act is not None and _is_relu6(g, act):
            depthwise = conv.groups > 1 and conv.groups == conv.cin
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
            other = [s for s in input_nodes(mul) if g.rec.values.get(s) and g.producer(s) is not k]
            if other and other == [s for s in input_nodes(k) if g.rec.values.get(s)]:
                return "Sigmoid_Mul", [k, mul]
    return None


def pattern_shape(g: KernelGraph, pattern: str, nodes: list[fx.Node]) -> dict[str, ParamValue]:
    """The candidate's parameters under the names its registry entry uses."""
    family = PATTERNS[pattern].family
    first, last = nodes[0], nodes[-1]
    args = g.rec.args[first][0]
    if family == "conv":
        conv = conv_args(first, g.gm, g.rec)
        n, _, h, w = args[0]
        shape: dict[str, ParamValue] = {"N": n, "CIN": conv.cin, "COUT": conv.cout, "H": h, "W": w,
                                        "K": conv.kernel[0], "STRIDE": conv.stride[0]}
        if conv.groups > 1:
            shape["GROUPS"] = conv.groups
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


