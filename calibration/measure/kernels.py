"""The torch kernels that run each operation of :data:`calibration.specs.operations.OPERATIONS`.

A builder takes an operation's parameters, a dtype name and a device, allocates its inputs
(and, where the eager call would reuse one, its output) and returns a zero-argument kernel
that the harness times. Names, shapes and FLOP/byte models are the spec's; this module only
runs them.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable

import torch

from calibration.measure import heap
from calibration.specs import host
from calibration.specs.operations import (
    AFTER_BUSY_PROBES,
    AFTER_BUSY_SHAPE,
    AFTER_EVICT_PRIVATE_MULTIPLE,
    COLD_CONTEXT,
    MATMUL_PATHS,
    MODULE_CALL_FORMS,
    OPERATIONS,
    STREAM_SCALAR,
    Case,
    Params,
    conv_geometry,
    private_bytes,
    probe_operation,
)

Kernel = Callable[[], object]
Builder = Callable[[Params, str, torch.device], Kernel]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "tf32": torch.float32,  # float32 storage, TensorFloat-32 tensor-core math (CUDA only)
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def dtype_unsupported_reason(dtype: str, device: str) -> str | None:
    """Why ``dtype`` cannot be calibrated on ``device`` here, or None if it can."""
    if dtype not in DTYPES:
        return f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}"
    if device == "cpu":
        if dtype in ("tf32", "float16"):
            return f"{dtype} matmul is a CUDA path"
        if dtype == "bfloat16" and not (
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        ):
            return "this CPU has no native bfloat16 (avx512_bf16 or AMX): bf16 would be emulated"
    if device == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            return "this GPU does not support bfloat16"
    return None


def _randn(shape: Iterable[int], dtype: str, device: torch.device) -> torch.Tensor:
    return torch.randn(*shape, dtype=DTYPES[dtype], device=device)


def _build_matmul(p: Params, dtype: str, device: torch.device) -> Kernel:
    M, K, N, path = p["M"], p["K"], p["N"], p["path"]
    a = _randn((M, K), dtype, device)
    b = _randn((K, N), dtype, device)
    if path == "aten":
        c = torch.empty(M, N, dtype=DTYPES[dtype], device=device)
        if device.type == "cuda":
            allow_tf32 = dtype == "tf32"

            def run_cuda() -> object:
                torch.backends.cuda.matmul.allow_tf32 = allow_tf32
                return torch.mm(a, b, out=c)

            return run_cuda
        return lambda: torch.mm(a, b, out=c)
    if device.type != "cpu":
        raise ValueError(f"matmul path {path!r} exists only on CPU")
    weight = b.t().contiguous()  # oneDNN linear takes W as (N, K)
    expected = torch.mm(a, b)
    if path == "mkldnn":
        a_m, w_m = a.to_mkldnn(), weight.to_mkldnn()

        def run() -> object:
            return torch._C._nn.mkldnn_linear(a_m, w_m, None)

        got = run().to_dense()
    elif path == "mkldnn_packed":
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, M)

        def run() -> object:
            return torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")

        got = run()
    else:
        raise ValueError(f"unknown matmul path {path!r}; known: {', '.join(MATMUL_PATHS)}")
    # An alternative path only counts toward the ceiling if it computes the same product.
    tol = 1e-2 if dtype == "bfloat16" else 1e-4
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol * math.sqrt(K))
    return run


def _linear_operands(p: Params, dtype: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Kernel]:
    """(input, output, kernel) of a linear case."""
    x = _randn((p["B"], p["IN"]), dtype, device)
    w = _randn((p["OUT"], p["IN"]), dtype, device)
    bias = _randn((p["OUT"],), dtype, device)
    y = torch.empty(p["B"], p["OUT"], dtype=DTYPES[dtype], device=device)
    wt = w.t()
    return x, y, lambda: torch.addmm(bias, x, wt, out=y)  # the kernel F.linear dispatches to


def _build_linear(p: Params, dtype: str, device: torch.device) -> Kernel:
    return _linear_operands(p, dtype, device)[2]


def _build_bmm(p: Params, dtype: str, device: torch.device) -> Kernel:
    a = _randn((p["BATCH"], p["M"], p["K"]), dtype, device)
    b = _randn((p["BATCH"], p["K"], p["N"]), dtype, device)
    c = torch.empty(p["BATCH"], p["M"], p["N"], dtype=DTYPES[dtype], device=device)
    return lambda: torch.bmm(a, b, out=c)


def _conv_operands(p: Params, dtype: str, device: torch.device) -> tuple[torch.Tensor, Kernel]:
    x = _randn((p["N"], p["CIN"], p["H"], p["W"]), dtype, device)
    g = conv_geometry(p)
    w = _randn((p["COUT"], p["CIN"] // p["GROUPS"], *g.kernel), dtype, device)
    groups = p["GROUPS"]
    conv = torch.nn.functional.conv2d
    return x, lambda: conv(x, w, None, g.stride, g.pad, g.dilation, groups)


def _build_lstm(p: Params, dtype: str, device: torch.device) -> Kernel:
    """One nn.LSTM layer over a (T, B, I) sequence, inference: on the CPU oneDNN's fused RNN."""
    layer = torch.nn.LSTM(p["I"], p["H"]).to(device=device, dtype=DTYPES[dtype]).eval().requires_grad_(False)
    x = _randn((p["T"], p["B"], p["I"]), dtype, device)
    return lambda: layer(x)


def _build_conv(p: Params, dtype: str, device: torch.device) -> Kernel:
    return _conv_operands(p, dtype, device)[1]


# Bytes written between two calls of a cold kernel: twice the last-level cache evicts it
# whatever its replacement policy (the LLC's size where the host does not say).
COLD_FLUSH_LLC_MULTIPLE = 2
UNKNOWN_LLC_BYTES = 32 << 20


# One flush buffer for every cold case in a row (twice the LLC: 960 MiB on a 480 MiB L3, whose
# allocation and first write took 0.27 s a case), given back with the last of them.
_flush_buffers: dict[str, torch.Tensor] = {}


def _flush_buffer(device: torch.device) -> torch.Tensor:
    if str(device) not in _flush_buffers:
        llc = host.last_level_cache() or UNKNOWN_LLC_BYTES
        with heap.operands_mapped():
            _flush_buffers[str(device)] = torch.zeros(COLD_FLUSH_LLC_MULTIPLE * llc // 4, device=device)
    return _flush_buffers[str(device)]


class PreparedKernel:
    """A kernel timed after ``prepare()`` puts the machine in a context before every timed
    call (pytest-benchmark's setup, untimed), with its warm twin timed in the same rounds
    (``measure.harness.time_prepared``)."""

    run: Kernel
    context = ""  # what each timed call followed (LatencyStats.source of the entry)

    def prepare(self) -> None:
        raise NotImplementedError

    def __call__(self) -> object:
        return self.run()

    def time_warm(self) -> float:
        """Seconds of the warm twin's call: the kernel again, right after its timed call."""
        start = time.perf_counter()
        self.run()
        return time.perf_counter() - start

    def preceding_ms(self) -> float | None:
        """The median time of what ``prepare`` ran before each call, where that is the point."""
        return None


class ThirdCallWarm(PreparedKernel):
    """A prepared probe whose warm twin is its third call in a row, as a benchmark times it
    (one call after the context is not enough to warm everything a call touches: an add took
    113 us on its second call after a 7 ms matmul, 25 us repeated)."""

    def time_warm(self) -> float:
        self.run()
        self.run()
        return super().time_warm()


class ColdKernel(ThirdCallWarm):
    """A kernel timed as a model runs it: ``prepare()``, before every timed call, evicts the
    caches (a write over twice the LLC), then reads the input back, as the layer before
    leaves it, and writes an output-sized block, as the caching allocator hands a recently
    freed block to the output. Only the weights come from memory.

    Its warm twin is its third call after the cold one, not the second: on a 2-vCPU EPYC VM
    the second call after the flush still ran a 512x512 3x3 conv at 7x7 24% over its repeated
    time and a 1024x1024 GEMV 30% over (the third 16% and 16%), and a profile's second calls
    ran 1.0-1.5x the warm entries, so that the cold cost (cold over twin) of EfficientNet-B0's
    1x1 convs came out near nothing in one profile and 60-90% of their warm time in the next."""

    context = COLD_CONTEXT

    def __init__(self, run: Kernel, activation: torch.Tensor, touch_output: Kernel, device: torch.device):
        self.run = run
        self.activation = activation
        self.touch_output = touch_output
        self.flush = _flush_buffer(device)

    def prepare(self) -> None:
        self.flush.add_(1.0)
        self.activation.sum()
        self.touch_output()


class AfterBusyKernel(ThirdCallWarm):
    """A probe timed as a forward calls it: ``prepare()`` runs an NxN matmul (timed: its
    median is the busy time) right before each call."""

    context = "after a busy kernel: an NxN matmul right before each call"

    def __init__(self, run: Kernel, n: int, device: torch.device):
        self.run = run
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        out = torch.empty(n, n, device=device)
        self.busy = lambda: torch.mm(a, b, out=out)
        self.busy_seconds: list[float] = []

    def prepare(self) -> None:
        start = time.perf_counter()
        self.busy()
        self.busy_seconds.append(time.perf_counter() - start)

    def preceding_ms(self) -> float | None:
        return statistics.median(self.busy_seconds) * 1e3 if self.busy_seconds else None


def _after_busy(p: Params, dtype: str, device: torch.device) -> Kernel:
    if device.type != "cpu":
        raise ValueError("after_busy cases time a CPU's caches and page tables between calls; CPU only")
    probe = str(p["probe"])
    x = _randn(AFTER_BUSY_SHAPE, dtype, device)
    if probe == "view":
        run = lambda: x.flatten(1)  # noqa: E731
    elif probe == "relu_inplace":
        run = lambda: torch.relu_(x)  # noqa: E731
    elif probe == "add":
        y = _randn(AFTER_BUSY_SHAPE, dtype, device)
        run = lambda: torch.add(x, y)  # noqa: E731
    elif probe == "batch_norm":
        c = AFTER_BUSY_SHAPE[1]
        mean, var = torch.zeros(c, device=device), torch.ones(c, device=device)
        weight, bias = torch.ones(c, device=device), torch.zeros(c, device=device)
        run = lambda: torch.batch_norm(x, weight, bias, mean, var, False, 0.1, 1e-5, False)  # noqa: E731
    else:
        raise ValueError(f"after_busy probe {probe!r}; probes: {', '.join(AFTER_BUSY_PROBES)}")
    return AfterBusyKernel(run, int(p["N"]), device)



class RereadKernel(PreparedKernel):
    """A GEMV timed right after ``prepare()`` reads ``between`` bytes of other data (a sum:
    every thread reads its share, as a forward's kernels pass through every core's cache)."""

    context = "re-read: other data read before each call"

    def __init__(self, run: Kernel, between: int, device: torch.device):
        self.run = run
        with heap.operands_mapped():
            self.other = torch.ones(max(between // 4, 1), device=device)

    def prepare(self) -> None:
        self.other.sum()


def _reread(p: Params, dtype: str, device: torch.device) -> Kernel:
    if device.type != "cpu":
        raise ValueError("reread cases time what a CPU's own caches keep between calls; CPU only")
    if p["between"] < 0:
        raise ValueError(f"reread: 'between' is the bytes read between calls, >= 0; got {p['between']}")
    *_, run = _linear_operands({"B": 1, "IN": p["IN"], "OUT": p["OUT"]}, dtype, device)
    return RereadKernel(run, int(p["between"]), device)


class AfterWaitKernel(ThirdCallWarm):
    """A GEMV timed right after ``prepare()`` spends ``wait_ms`` touching no memory (a spin
    on the clock), or, with ``flush``, right after the LLC is flushed (the cold twins' write
    over twice the LLC): what time alone takes of a working set the LLC held."""

    def __init__(self, run: Kernel, wait_ms: float, flush: bool, device: torch.device):
        self.run = run
        self.wait_s = wait_ms / 1e3
        self.flush = _flush_buffer(device) if flush else None
        self.context = ("after the LLC was flushed, before each call" if flush
                        else f"after {wait_ms:g} ms touching no memory, before each call")

    def prepare(self) -> None:
        if self.flush is not None:
            self.flush.add_(1.0)
            return
        end = time.perf_counter() + self.wait_s
        while time.perf_counter() < end:
            pass


def _after_wait(p: Params, dtype: str, device: torch.device) -> Kernel:
    if device.type != "cpu":
        raise ValueError("after_wait cases time what a CPU's LLC keeps over time; CPU only")
    if p["after"] not in ("wait", "flush"):
        raise ValueError(f"after_wait: 'after' is 'wait' or 'flush'; got {p['after']!r}")
    if not isinstance(p["ms"], int | float) or p["ms"] < 0:
        raise ValueError(f"after_wait: 'ms' is the milliseconds waited, >= 0; got {p['ms']!r}")
    *_, run = _linear_operands({"B": 1, "IN": p["IN"], "OUT": p["OUT"]}, dtype, device)
    return AfterWaitKernel(run, float(p["ms"]), p["after"] == "flush", device)


def tiny_call(kind: str, device: torch.device, dtype: str = "float32") -> Kernel:
    """A call of op ``kind`` (an ``AFTER_EVICT_KINDS`` registry operation) on an input of at
    most 1,024 elements: what it costs after the caches were evicted is its code's, not its data's."""
    f = torch.nn.functional
    x, y = _randn((1, 16, 8, 8), dtype, device), _randn((1, 16, 8, 8), dtype, device)
    row, weight, bias = _randn((1, 64), dtype, device), _randn((64, 64), dtype, device), _randn((64,), dtype, device)
    channels = [_randn((16,), dtype, device).abs() + 0.5 for _ in range(4)]
    filters, batched = _randn((16, 16, 3, 3), dtype, device), _randn((4, 16, 16), dtype, device)
    calls: dict[str, Kernel] = {
        "conv2d": lambda: f.conv2d(x, filters, padding=1),
        "linear": lambda: f.linear(row, weight, bias),
        "batchnorm": lambda: torch.batch_norm(x, *channels, False, 0.1, 1e-5, False),
        "layernorm": lambda: f.layer_norm(row, (64,), bias, bias),
        "relu": lambda: torch.relu(x),
        "add": lambda: x + y,
        "mul": lambda: x * y,
        "gelu": lambda: f.gelu(row),
        "silu": lambda: f.silu(x),
        "sigmoid": lambda: torch.sigmoid(x),
        "softmax": lambda: batched.softmax(-1),
        "maxpool": lambda: f.max_pool2d(x, 2, 2),
        "global_avgpool": lambda: f.adaptive_avg_pool2d(x, 1),
        "bmm": lambda: torch.bmm(batched, batched),
        "stream_copy": lambda: y.copy_(x),
    }
    if kind not in calls:
        raise ValueError(f"after_evict op {kind!r}; kinds: {', '.join(calls)}")
    return calls[kind]


class AfterEvictKernel(RereadKernel, ThirdCallWarm):
    """A tiny call timed as a forward makes it once its own code has been evicted:
    ``prepare()`` reads four times what the cores' own caches hold (a reread's read), then
    runs a view and an add (the dispatch path every call shares, which the forward keeps
    warm); its warm twin is its third call in a row."""

    context = "after an eviction: 4x the private caches read, then a view and an add, before each call"

    def __init__(self, run: Kernel, read_bytes: int, device: torch.device):
        super().__init__(run, read_bytes, device)
        self.shared = torch.ones(4, device=device)

    def prepare(self) -> None:
        super().prepare()
        self.shared.flatten()
        self.shared.add(1.0)


def _after_evict(p: Params, dtype: str, device: torch.device) -> Kernel:
    if device.type != "cpu":
        raise ValueError("after_evict cases time what a CPU's caches lose of a call's code; CPU only")
    return AfterEvictKernel(tiny_call(str(p["op"]), device, dtype), AFTER_EVICT_PRIVATE_MULTIPLE * private_bytes(),
                            device)


def _cpu_only_cold(device: torch.device) -> None:
    if device.type != "cpu":
        raise ValueError("cold cases evict a CPU's caches; on a GPU the weights stream from memory anyway")


def _cold_linear(p: Params, dtype: str, device: torch.device) -> Kernel:
    _cpu_only_cold(device)
    x, y, run = _linear_operands(p, dtype, device)
    return ColdKernel(run, x, lambda: y.fill_(0.0), device)


def _cold_conv(p: Params, dtype: str, device: torch.device) -> Kernel:
    _cpu_only_cold(device)
    x, run = _conv_operands(p, dtype, device)
    out_shape = run().shape
    # the conv allocates its output: the block freed just before is the one it gets
    return ColdKernel(run, x, lambda: torch.empty(out_shape, dtype=x.dtype, device=device).fill_(0.0), device)


def _build_softmax(p: Params, dtype: str, device: torch.device) -> Kernel:
    x = _randn((p["ROWS"], p["COLS"]), dtype, device)
    y = torch.empty_like(x)
    return lambda: torch.ops.aten._softmax.out(x, -1, False, out=y)


def _build_layernorm(p: Params, dtype: str, device: torch.device) -> Kernel:
    rows, cols = p["ROWS"], p["COLS"]
    x = _randn((rows, cols), dtype, device)
    weight, bias = _randn((cols,), dtype, device), _randn((cols,), dtype, device)
    # The function nn.LayerNorm reaches. Its aten .out overload computes into a temporary and
    # copies, 1.5x slower here, so this one allocates its output as a model's call does.
    return lambda: torch.native_layer_norm(x, [cols], weight, bias, 1e-5)


def _build_batchnorm(p: Params, dtype: str, device: torch.device) -> Kernel:
    x = _randn((p["N"], p["C"], p["H"], p["W"]), dtype, device)
    weight, bias = _randn((p["C"],), dtype, device), _randn((p["C"],), dtype, device)
    mean = _randn((p["C"],), dtype, device)
    var = torch.rand(p["C"], dtype=DTYPES[dtype], device=device) + 0.5
    y = torch.empty_like(x)
    save_mean, save_rstd = torch.empty(0, device=device), torch.empty(0, device=device)
    # native_batch_norm is what nn.BatchNorm2d in eval runs; _native_batch_norm_legit_no_training.out
    # computes into a temporary and copies, which ran 1.5-2x slower here.
    return lambda: torch.ops.aten.native_batch_norm.out(
        x, weight, bias, mean, var, False, 0.1, 1e-5, out=y, save_mean=save_mean, save_invstd=save_rstd)


def _build_maxpool(p: Params, dtype: str, device: torch.device) -> Kernel:
    x = _randn((p["N"], p["C"], p["H"], p["W"]), dtype, device)
    y = torch.empty(0, dtype=DTYPES[dtype], device=device)
    idx = torch.empty(0, dtype=torch.int64, device=device)
    k, s, pad = [p["K"]] * 2, [p["STRIDE"]] * 2, [p["PAD"]] * 2
    return lambda: torch.ops.aten.max_pool2d_with_indices.out(x, k, s, pad, [1, 1], False, out=y, indices=idx)


def _build_avgpool(p: Params, dtype: str, device: torch.device) -> Kernel:
    x = _randn((p["N"], p["C"], p["H"], p["W"]), dtype, device)
    y = torch.empty(0, dtype=DTYPES[dtype], device=device)
    k, s, pad = [p["K"]] * 2, [p["STRIDE"]] * 2, [p["PAD"]] * 2
    return lambda: torch.ops.aten.avg_pool2d.out(x, k, s, pad, False, True, None, out=y)


def _build_global_avgpool(p: Params, dtype: str, device: torch.device) -> Kernel:
    x = _randn((p["N"], p["C"], p["H"], p["W"]), dtype, device)
    pool = torch.nn.functional.adaptive_avg_pool2d
    # the function nn.AdaptiveAvgPool2d(1) calls; its .out overload and avg_pool2d with a
    # whole-plane window are different kernels, 2.5-3x slower here
    return lambda: pool(x, 1)


def _build_dispatch(p: Params, dtype: str, device: torch.device) -> Kernel:
    a, b = _randn((p["n"],), dtype, device), _randn((p["n"],), dtype, device)
    c = torch.empty_like(a)
    return lambda: torch.add(a, b, out=c)


def _build_module_call(p: Params, dtype: str, device: torch.device) -> Kernel:
    probe, operation = probe_operation(p)
    if p["form"] == "kernel":
        return BUILDERS[operation.name](probe.params, dtype, device)
    if p["form"] != "module":
        raise ValueError(f"module_call form must be one of {MODULE_CALL_FORMS}, got {p['form']!r}")
    module = PROBE_MODULES[str(p["module"])]().to(device=device, dtype=DTYPES[dtype]).eval().requires_grad_(False)
    x = _randn(probe.input_shape, dtype, device)
    return lambda: module(x)


def _build_fill(p: Params, dtype: str, device: torch.device) -> Kernel:
    y = torch.empty(p["n"], dtype=DTYPES[dtype], device=device)
    return lambda: y.fill_(1.0)


def _build_fill_fresh(p: Params, dtype: str, device: torch.device) -> Kernel:
    n, torch_dtype = p["n"], DTYPES[dtype]
    return lambda: torch.empty(n, dtype=torch_dtype, device=device).fill_(1.0)  # freed on return



def _build_elementwise(kernel: Callable[..., object], inputs: int) -> Builder:
    def build(p: Params, dtype: str, device: torch.device) -> Kernel:
        args = [_randn((p["n"],), dtype, device) for _ in range(inputs)]
        out = torch.empty(p["n"], dtype=DTYPES[dtype], device=device)
        return lambda: kernel(*args, out=out)

    return build


# A causal attention mask's row length: masked_fill's time follows how its mask's runs fall
# (a random mask ran 5x a causal one here), so it is timed with a mask an attention has.
CAUSAL_ROW = 256


def causal_mask(n: int, device: torch.device) -> torch.Tensor:
    """``n`` bools as causal masks over rows of ``min(256, sqrt(n))``, flattened: each row's
    elements past its index set (masked), as a decoder's future mask."""
    row = max(1, min(CAUSAL_ROW, math.isqrt(n)))
    i = torch.arange(n, device=device)
    return (i % row) > ((i // row) % row)


def _build_masked(kernel: Callable[..., object]) -> Builder:
    def build(p: Params, dtype: str, device: torch.device) -> Kernel:
        x = _randn((p["n"],), dtype, device)
        mask = causal_mask(p["n"], device)
        fill = torch.tensor(torch.finfo(DTYPES[dtype]).min, dtype=DTYPES[dtype], device=device)
        out = torch.empty(p["n"], dtype=DTYPES[dtype], device=device)
        return lambda: kernel(x, mask, fill, out)

    return build


# The arrays of the last STREAM size built: copy, scale, add and triad run one after another
# at that size and only ever write ``a``, so they share them rather than each mapping and
# faulting in 3 x 4x the LLC of its own (6 GiB on a 480 MiB-L3 host, about a second a case).
_stream_arrays: dict[tuple[int, str, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _stream_operands(n: int, dtype: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    key = (n, dtype, str(device))
    if key not in _stream_arrays:
        _stream_arrays.clear()  # the previous size's arrays go back to the OS with their last kernel
        with heap.operands_mapped():  # arrays of 4x the LLC: mapped, not kept by a steady heap
            _stream_arrays[key] = (torch.zeros(n, dtype=DTYPES[dtype], device=device),
                                   torch.full((n,), 1.0, dtype=DTYPES[dtype], device=device),
                                   torch.full((n,), 2.0, dtype=DTYPES[dtype], device=device))
    return _stream_arrays[key]


def _build_stream(kernel: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], object]) -> Builder:
    def build(p: Params, dtype: str, device: torch.device) -> Kernel:
        a, b, c = _stream_operands(p["n"], dtype, device)
        return lambda: kernel(a, b, c)

    return build


# The modules the module_call probes call (their input shapes and twin kernels are specs).
PROBE_MODULES: dict[str, Callable[[], torch.nn.Module]] = {
    "Conv2d": lambda: torch.nn.Conv2d(1, 1, 1, bias=False),
    "BatchNorm2d": lambda: torch.nn.BatchNorm2d(1),
    "Linear": lambda: torch.nn.Linear(16, 16),
    "LayerNorm": lambda: torch.nn.LayerNorm(16),
    "MaxPool2d": lambda: torch.nn.MaxPool2d(3, 2, 1),
    "AdaptiveAvgPool2d": lambda: torch.nn.AdaptiveAvgPool2d(1),
    "ReLU": torch.nn.ReLU,
    "ReLU6": torch.nn.ReLU6,
    "GELU": torch.nn.GELU,
    "SiLU": torch.nn.SiLU,
    "Sigmoid": torch.nn.Sigmoid,
}

BUILDERS: dict[str, Builder] = {
    "matmul": _build_matmul,
    "linear": _build_linear,
    "bmm": _build_bmm,
    "lstm": _build_lstm,
    "conv2d": _build_conv,
    "conv2d_cold": _cold_conv,
    "linear_cold": _cold_linear,
    "reread": _reread,
    "after_busy": _after_busy,
    "after_evict": _after_evict,
    "after_wait": _after_wait,
    "add": _build_elementwise(torch.add, 2),
    "mul": _build_elementwise(torch.mul, 2),
    # ATen implements relu as clamp_min(x, 0); its out= form is the same kernel.
    "relu": _build_elementwise(lambda x, out: torch.clamp_min(x, 0, out=out), 1),
    "gelu": _build_elementwise(torch._C._nn.gelu, 1),
    "gelu_tanh": _build_elementwise(lambda x, out: torch._C._nn.gelu(x, approximate="tanh", out=out), 1),
    "sigmoid": _build_elementwise(torch.sigmoid, 1),
    "silu": _build_elementwise(torch._C._nn.silu, 1),
    "masked_fill": _build_masked(lambda x, mask, fill, out: out.copy_(x).masked_fill_(mask, fill)),
    "where": _build_masked(lambda x, mask, fill, out: torch.where(mask, x, fill, out=out)),
    "stream_copy": _build_stream(lambda a, b, c: a.copy_(b)),
    "stream_scale": _build_stream(lambda a, b, c: torch.mul(b, STREAM_SCALAR, out=a)),
    "stream_add": _build_stream(lambda a, b, c: torch.add(b, c, out=a)),
    "stream_triad": _build_stream(lambda a, b, c: torch.add(b, c, alpha=STREAM_SCALAR, out=a)),
    "softmax": _build_softmax,
    "layernorm": _build_layernorm,
    "batchnorm": _build_batchnorm,
    "maxpool": _build_maxpool,
    "avgpool": _build_avgpool,
    "global_avgpool": _build_global_avgpool,
    "dispatch": _build_dispatch,
    "module_call": _build_module_call,
    "fill": _build_fill,
    "fill_fresh": _build_fill_fresh,
}
if set(BUILDERS) != set(OPERATIONS):  # a spec without a kernel, or a kernel without a spec
    raise ImportError(f"operation specs and kernels disagree: {sorted(set(BUILDERS) ^ set(OPERATIONS))}")


def build(case: Case) -> Kernel:
    """A ready-to-time kernel for ``case``."""
    if not case.operation.startswith("stream_"):
        _stream_arrays.clear()  # past the STREAM cases: their arrays leave with their kernels
    spec = OPERATIONS.get(case.operation)
    if spec is None or spec.family != "cold":
        _flush_buffers.clear()  # and past the cold ones, their flush buffer
    return BUILDERS[case.operation](case.param_dict, case.dtype, torch.device(case.device))
