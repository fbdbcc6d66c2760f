"""The registry of operation microbenchmarks.

Each :class:`Operation` is the one place that knows an operation's name, family, shapes
(full and ``--quick``) and FLOP and byte model. The benchmarks in ``bench/``, the profile
keys, the lookups and the mapper all read this registry; the torch kernel that runs each
operation is built in :mod:`calibration.measure.kernels`, under the same name.

Counting conventions (tested in ``tests/test_ops.py``):

* FLOPs count every arithmetic operation the math needs, one multiply-add being two FLOPs;
  for GEMM and convolution this equals ``torch.utils.flop_counter.FlopCounterMode``, plus
  one FLOP per output element for a bias. Element-wise ops use the nominal per-element
  costs in :data:`ELEMENTWISE_FLOPS`; they are memory-bound, so FLOPs only place them on
  the roofline.
* Bytes are the compulsory traffic of the kernel that is timed: every input read once,
  every output written once, at the dtype's size (STREAM's convention: copy moves two words
  per element, triad three). Max-pooling also writes its int64 indices, because the eager
  kernel does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from calibration.specs import host
from calibration.specs.dtypes import itemsize
from calibration.specs.keys import ParamValue, operation_key
from calibration.specs.params import Checked, Domain

Params = Mapping[str, ParamValue]

# Nominal FLOPs per element. relu is a compare-select; sigmoid is exp + add + reciprocal
# (+ negate); silu is sigmoid then a multiply; gelu (erf form) is x*0.5*(1+erf(x/sqrt2)),
# erf counted as one; softmax is max, subtract, exp, sum, divide; layer norm is mean, centre,
# square, sum, rsqrt-scale, affine.
ELEMENTWISE_FLOPS: dict[str, int] = {
    "add": 1,
    "mul": 1,
    "relu": 1,
    "sigmoid": 4,
    "silu": 5,
    "gelu": 5,
    # tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): cube (2), scale and add (2),
    # scale (1), tanh (1), add (1), multiply by x (1) and by a half (1)
    "gelu_tanh": 9,
    "softmax": 5,
    "layernorm": 8,
    "batchnorm": 2,  # eval mode: x * scale + shift per element, scale/shift per channel
    "masked_fill": 1,  # a select per element
    "where": 1,
}




@dataclass(frozen=True)
class Case:
    """One parametrized benchmark case: an operation at one shape, dtype and device."""

    operation: str
    params: tuple[tuple[str, ParamValue], ...]
    dtype: str
    device: str

    @property
    def param_dict(self) -> dict[str, ParamValue]:
        return dict(self.params)

    @property
    def key(self) -> str:
        return operation_key(self.operation, self.param_dict, self.dtype, self.device)

    @property
    def id(self) -> str:
        """pytest id: the key without the operation name (the test name carries it)."""
        return self.key.split("[", 1)[1].replace("]/", "/")

    @property
    def spec(self) -> Operation:
        return OPERATIONS[self.operation]

    @property
    def flops(self) -> int:
        return self.spec.flops(self.param_dict)

    @property
    def bytes(self) -> int:
        return self.spec.bytes_moved(self.param_dict, itemsize(self.dtype))


@dataclass(frozen=True)
class Operation(Checked):
    name: str
    family: str
    description: str
    flops: Callable[[Params], int]
    bytes_moved: Callable[[Params, int], int]
    # shapes(quick) -> the parameter sets to benchmark; a function because some depend on
    # the machine (STREAM arrays are sized from the last-level cache).
    shapes: Callable[[bool], tuple[Params, ...]]
    # The kind of kernel a parameter set selects (matmul library path, dense vs depthwise
    # conv): lookups only match and interpolate between entries of the same variant.
    variant: Callable[[Params], tuple[ParamValue, ...]] = lambda params: ()
    # What a kernel's efficiency follows most, to interpolate over in log space (default: its
    # FLOPs). A small-batch GEMM's rate follows its row count, not its size: at 8 rows MKL
    # runs 35-46 GFLOPS for 256x256 and 4096x4096 weights alike, 150 at 128 rows.
    scale: Callable[[Params], float] | None = None
    # The parameter counting a GEMM's rows, whose one-row form is a GEMV (another variant).
    # Below the fewest rows calibrated, a mapper takes the lesser of a GEMV per row and those
    # rows' time (predict.mapper), not the FLOPs-scaled time of the fewest rows: MKL runs 2-4
    # rows as that many GEMVs, 2-7x what 8 rows' rate scaled down to them gives.
    rows: str | None = None
    # Values a query may leave out (e.g. the matmul path eager PyTorch takes).
    defaults: Mapping[str, ParamValue] = field(default_factory=dict)
    # Parameters a shape carries only where it differs from the grid's form (a conv's
    # non-square kernel): part of its key and of an exact match, absent from the grid's shapes.
    optional: Mapping[str, Domain] = field(default_factory=dict)
    cpu_dtypes: tuple[str, ...] = ("float32",)
    cuda_dtypes: tuple[str, ...] = ("float32",)
    # Parameters that only exist on one device (e.g. oneDNN paths on CPU).
    cpu_only: Callable[[Params], bool] = lambda params: False
    # A shape-aware time model for shapes the grid has not timed (``profile.shape_model``):
    # ``cost_terms(params, itemsize)`` are the quantities a call's time is taken to be linear
    # in (a call, bytes of each operand class, FLOPs), fitted per variant to the calibrated
    # shapes; ``shape_features(params)`` place a shape among them (log2 of the dimensions
    # that set how the library tiles it) to correct the fit by its nearest neighbours.
    cost_terms: Callable[[Params, int], tuple[float, ...]] | None = None
    cost_units: tuple[str, ...] = ()  # per term: "call", "bytes" or "flops"
    shape_features: Callable[[Params], tuple[float, ...]] | None = None
    # The variants (``variant(params)`` values) the cost model prices; None: all of them. The
    # others keep the efficiency interpolated between their calibrated sizes.
    cost_model_variants: frozenset[ParamValue] | None = None

    def has_cost_model(self, params: Params) -> bool:
        """Whether shapes of ``params``'s variant are priced by the fitted cost model."""
        if self.cost_terms is None or self.shape_features is None:
            return False
        return self.cost_model_variants is None or bool(self.cost_model_variants.intersection(self.variant(params)))

    def dtypes(self, device: str) -> tuple[str, ...]:
        return self.cpu_dtypes if device == "cpu" else self.cuda_dtypes

    def cases(self, *, quick: bool, device: str) -> list[Case]:
        out = []
        for params in self.shapes(quick):
            if device != "cpu" and self.cpu_only(params):
                continue
            for dtype in self.dtypes(device):
                out.append(Case(self.name, tuple(params.items()), dtype, device))
        return out

    def complete(self, params: Params) -> dict[str, ParamValue]:
        return {**self.defaults, **params}

    @cached_property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.shapes(False)[0])



def fixed(full: tuple[Params, ...], quick: tuple[Params, ...]) -> Callable[[bool], tuple[Params, ...]]:
    return lambda is_quick: quick if is_quick else full




# --------------------------------------------------------------------------- matmul

MATMUL_PATHS = ("aten", "mkldnn", "mkldnn_packed")


def _matmul_flops(p: Params) -> int:
    return 2 * p["M"] * p["K"] * p["N"]


def _matmul_bytes(p: Params, size: int) -> int:
    return (p["M"] * p["K"] + p["K"] * p["N"] + p["M"] * p["N"]) * size




def _mm(M: int, K: int, N: int, path: str = "aten") -> Params:
    return {"M": M, "K": K, "N": N, "path": path}


MATMUL = Operation(
    name="matmul",
    family="matmul",
    description="C = A @ B, A (M x K), B (K x N); 'path' selects the library kernel",
    flops=_matmul_flops,
    bytes_moved=_matmul_bytes,
    shapes=fixed(
        full=tuple(
            _mm(n, n, n, path) for n in (256, 512, 1024, 2048, 4096) for path in MATMUL_PATHS
            if not (n == 4096 and path != "aten")
        )
        # the GEMV, the fewest rows (8: a batch's decode step) and skinny GEMMs, 64 MiB of weights or 16
        + (_mm(1, 4096, 4096), _mm(8, 4096, 4096), _mm(64, 4096, 1024), _mm(128, 1024, 4096)),
        quick=tuple(_mm(1024, 1024, 1024, path) for path in MATMUL_PATHS) + (_mm(64, 4096, 1024),),
    ),
    variant=lambda p: (p["path"], _gemm_kind(p["M"])),
    scale=lambda p: p["M"],
    rows="M",
    defaults={"path": "aten"},
    cpu_dtypes=("float32", "bfloat16"),
    cuda_dtypes=("float32", "tf32", "float16", "bfloat16"),
    cpu_only=lambda p: p["path"] != "aten",
)


# --------------------------------------------------------------------------- linear, bmm


def _gemm_kind(rows: int) -> str:
    """One row is a matrix-vector product (a different BLAS kernel, bound by the weights' bandwidth)."""
    return "gemv" if rows == 1 else "gemm"


def _linear_flops(p: Params) -> int:
    return 2 * p["B"] * p["IN"] * p["OUT"] + p["B"] * p["OUT"]  # GEMM + bias


def _linear_bytes(p: Params, size: int) -> int:
    B, IN, OUT = p["B"], p["IN"], p["OUT"]
    return (B * IN + OUT * IN + OUT + B * OUT) * size


def _linear_terms(p: Params, size: int) -> tuple[float, ...]:
    """A call; activation bytes (input read, output written: a GEMV pays per output row as
    well as per weight); weight and bias bytes; FLOPs."""
    B, IN, OUT = p["B"], p["IN"], p["OUT"]
    return (1.0, float((B * IN + B * OUT) * size), float((IN * OUT + OUT) * size), float(_linear_flops(p)))


def _linear_features(p: Params) -> tuple[float, ...]:
    return (math.log2(p["B"]), math.log2(p["IN"]), math.log2(p["OUT"]))


LINEAR = Operation(
    name="linear",
    family="linear",
    description="y = x @ W^T + b (nn.Linear), x (B x IN)",
    flops=_linear_flops,
    bytes_moved=_linear_bytes,
    # A grid of batch sizes (GEMV to GEMM) and weight sizes (L2-, L3- and DRAM-resident), not
    # the layers of any model the predictions are checked on: a mapper interpolates between them.
    # Widths of 1024 and 2048 floats run some few-row GEMMs up to 1.5x slower here than widths
    # that are not powers of two (8 rows: 1024x1024 at 32-43 GFLOPS, 768x768 at 48-52), so
    # the small-row grid has both kinds.
    # A few-row GEMM's rate follows where its weights sit: on the 2-vCPU Xeon VM, 26 shapes at
    # 8 rows ran 51-57 GB/s of weights up to 2.4 MB (the cores' L2s), 28-35 GB/s at 3-5 MB
    # and 18.5 GB/s from 8 MB on; one row ran 90-120, 75-90 and 55. Each class has two shapes
    # of different aspect here. MKL runs a few shapes at half their class's rate (8 rows:
    # 640x640, 784x640, 1000x640), and a grid point at one of them priced every few-row
    # GEMM of its size at that rate (784x512 at 8 rows at 1.9x its time), so the grid holds
    # none: 768x768 ran at its class's rate on both VMs measured.
    shapes=fixed(full=(
        {"B": 1, "IN": 256, "OUT": 256},
        {"B": 8, "IN": 256, "OUT": 256},
        # one-row shapes of 0.8-6 MB of weights and of both aspects, for the GEMV's cost model
        {"B": 1, "IN": 768, "OUT": 256},
        {"B": 1, "IN": 256, "OUT": 2048},
        {"B": 1, "IN": 3072, "OUT": 512},
        {"B": 1, "IN": 1536, "OUT": 384},
        {"B": 8, "IN": 384, "OUT": 1536},
        {"B": 8, "IN": 768, "OUT": 768},
        {"B": 1, "IN": 512, "OUT": 2048},
        {"B": 8, "IN": 2048, "OUT": 512},
        {"B": 1, "IN": 1024, "OUT": 1024},
        {"B": 8, "IN": 1024, "OUT": 1024},
        {"B": 8, "IN": 1280, "OUT": 2560},
        {"B": 64, "IN": 1024, "OUT": 1024},
        {"B": 64, "IN": 1280, "OUT": 2560},
        # Between the cores' caches and DRAM, where a VM's shared LLC stops holding a GEMV repeated
        # alone: on the 2-vCPU EPYC VM (32 MiB L3) one row over 12 MiB of weights ran at 52 GB/s
        # as the 6 MiB one did, over 16 MiB at 21-44 GB/s from one run to the next, over 24 MiB
        # at 16-20, DRAM's rate (the triad ran 117 GB/s at 24 MiB there). Interpolated between
        # 6 and 64 MiB, a 16 MiB GEMV was priced at 48 GB/s; it ran at 27-35.
        {"B": 1, "IN": 1536, "OUT": 2048},
        {"B": 1, "IN": 2048, "OUT": 3072},
        {"B": 8, "IN": 2048, "OUT": 3072},
        {"B": 1, "IN": 4096, "OUT": 4096},
        # a GEMV over 256 MiB of weights, past STREAM's arrays: the one-row variant's only
        # DRAM-level point (a classifier over a flattened conv map, VGG's 400 MB, is one)
        {"B": 1, "IN": 16384, "OUT": 4096},
        {"B": 8, "IN": 8192, "OUT": 2048},  # few rows, 64 MiB of weights streamed from DRAM
        {"B": 256, "IN": 1024, "OUT": 4096},
        {"B": 256, "IN": 4096, "OUT": 1024},
        {"B": 1024, "IN": 1024, "OUT": 1024},
    ),
    quick=({"B": 256, "IN": 1024, "OUT": 4096},)),
    variant=lambda p: (_gemm_kind(p["B"]),),
    scale=lambda p: p["B"],
    rows="B",
    # A GEMV's time is a call, a cost per output row and a cost per weight byte; interpolating
    # an efficiency in FLOPs between sizes misses the first two. On the 2-vCPU EPYC VM, 73
    # one-row shapes (IN 256-4096, OUT 10-4096) not in the grid: median |error| 8.0% fitted
    # from its nine one-row shapes, 14.7% interpolated from the six it had before; 784->512
    # ran 32 us, 27.7 interpolated, 30.6 fitted, and 256->10 2.3 us, 1.4 interpolated. The
    # few-row GEMMs keep the interpolation: MKL runs them at rates that jump between widths
    # (8 rows: 1024x1024 at 14 GB/s of weights where 1000x1000 ran 20), which a smooth cost
    # model spreads over their neighbours (80 shapes at 8 rows: 24% fitted, 20% interpolated).
    cost_terms=_linear_terms,
    cost_units=("call", "bytes", "bytes", "flops"),
    shape_features=_linear_features,
    cost_model_variants=frozenset({"gemv"}),
)


# --------------------------------------------------------------------------- fused LSTM layer


def lstm_parts(p: Params) -> tuple[Params, Params, int]:
    """What one layer and direction of a fused LSTM (oneDNN's ``mkldnn_rnn_layer``) computes:
    the input projection of all T steps as one Linear, one Linear of the hidden state per step
    (B rows, H in, 4H gates out, as ``nn.LSTMCell`` calls it), and the element count of the gates
    (one sigmoid-like pass over each)."""
    gates = 4 * p["H"]
    return ({"B": p["T"] * p["B"], "IN": p["I"], "OUT": gates}, {"B": p["B"], "IN": p["H"], "OUT": gates},
            p["T"] * p["B"] * gates)


def _lstm_flops(p: Params) -> int:
    projection, step, gates = lstm_parts(p)
    return _linear_flops(projection) + p["T"] * _linear_flops(step) + ELEMENTWISE_FLOPS["sigmoid"] * gates


def _lstm_bytes(p: Params, size: int) -> int:
    """Weights and both biases, the input sequence, the output sequence, and the initial and
    final hidden and cell states."""
    steps, batch, features, hidden = p["T"], p["B"], p["I"], p["H"]
    return (4 * hidden * (features + hidden) + 8 * hidden + steps * batch * (features + hidden)
            + 4 * batch * hidden) * size


LSTM = Operation(
    name="lstm",
    family="rnn",
    description="one nn.LSTM layer (oneDNN's fused RNN), x (T x B x I), hidden H",
    flops=_lstm_flops,
    bytes_moved=_lstm_bytes,
    # Batches from one sequence to a few, hidden sizes from L2-resident weights (128: 0.5 MiB)
    # to 8 MiB; the step GEMM's rows are the batch. A mapper scales an unseen shape's
    # decomposition (lstm_parts, each priced) by what the nearest of these measured over theirs.
    shapes=fixed(full=(
        {"T": 32, "B": 1, "I": 64, "H": 128},
        {"T": 32, "B": 1, "I": 512, "H": 512},
        {"T": 32, "B": 4, "I": 320, "H": 320},
        {"T": 32, "B": 16, "I": 128, "H": 128},
        {"T": 32, "B": 16, "I": 512, "H": 512},
    ),
    quick=({"T": 32, "B": 4, "I": 320, "H": 320},)),
    scale=lambda p: p["B"],
    cpu_only=lambda p: True,
)


def _bmm_flops(p: Params) -> int:
    return 2 * p["BATCH"] * p["M"] * p["K"] * p["N"]


def _bmm_bytes(p: Params, size: int) -> int:
    return p["BATCH"] * (p["M"] * p["K"] + p["K"] * p["N"] + p["M"] * p["N"]) * size




BMM = Operation(
    name="bmm",
    family="bmm",
    description="batched C[i] = A[i] @ B[i] (attention score and context products)",
    flops=_bmm_flops,
    bytes_moved=_bmm_bytes,
    shapes=fixed(full=(
        {"BATCH": 8, "M": 256, "K": 64, "N": 256},  # 8 heads of 64, sequence 256: Q K^T
        {"BATCH": 8, "M": 256, "K": 256, "N": 64},  # and attention @ V
        {"BATCH": 32, "M": 512, "K": 64, "N": 512},  # 4 x 8 heads, seq 512
    ),
    quick=({"BATCH": 8, "M": 256, "K": 64, "N": 256},)),
)


# --------------------------------------------------------------------------- conv2d


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# A conv's parameters beyond the square grid's, each given only where it differs from the
# square, undilated default: the width's kernel, stride and padding (a 1x7 kernel; a 1-D conv,
# which ATen runs as a 2-D conv of one row) and the dilation of each axis.
CONV_WIDTH_PARAMS: dict[str, Domain] = {"KW": Domain(int, minimum=1), "STRIDE_W": Domain(int, minimum=1),
                                         "PAD_W": Domain(int, minimum=0), "DIL": Domain(int, minimum=1),
                                         "DIL_W": Domain(int, minimum=1)}


class ConvGeometry(NamedTuple):
    kernel: tuple[int, int]  # (height, width) of each
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]


def conv_geometry(p: Params) -> ConvGeometry:
    """A conv's kernel, stride, padding and dilation per axis: K, STRIDE, PAD and DIL are the
    height's, and the width's (KW, STRIDE_W, PAD_W, DIL_W) default to them."""
    dil = int(p.get("DIL", 1))
    return ConvGeometry((int(p["K"]), int(p.get("KW", p["K"]))),
                        (int(p["STRIDE"]), int(p.get("STRIDE_W", p["STRIDE"]))),
                        (int(p["PAD"]), int(p.get("PAD_W", p["PAD"]))), (dil, int(p.get("DIL_W", dil))))


def _conv_output_pixels(p: Params) -> int:
    """Output height x width of one image."""
    g = conv_geometry(p)
    return (conv_out(p["H"], g.kernel[0], g.stride[0], g.pad[0], g.dilation[0])
            * conv_out(p["W"], g.kernel[1], g.stride[1], g.pad[1], g.dilation[1]))


def _conv_taps(p: Params) -> int:
    """Kernel height x width."""
    kh, kw = conv_geometry(p).kernel
    return kh * kw


def _conv_elements(p: Params) -> tuple[int, int, int]:
    """Elements of the input, the weights and the output."""
    return (p["N"] * p["CIN"] * p["H"] * p["W"], p["COUT"] * (p["CIN"] // p["GROUPS"]) * _conv_taps(p),
            p["N"] * p["COUT"] * _conv_output_pixels(p))


def _conv_flops(p: Params) -> int:
    per_output = (p["CIN"] // p["GROUPS"]) * _conv_taps(p)
    return 2 * p["N"] * p["COUT"] * _conv_output_pixels(p) * per_output


def _conv_bytes(p: Params, size: int) -> int:
    return sum(_conv_elements(p)) * size




def _conv_terms(p: Params, size: int) -> tuple[float, ...]:
    """A call; activation bytes (input read, output written); weight bytes; FLOPs."""
    inputs, weights, outputs = _conv_elements(p)
    return (1.0, float((inputs + outputs) * size), float(weights * size), float(_conv_flops(p)))


def _conv_features(p: Params) -> tuple[float, ...]:
    """The conv as the GEMM it lowers to: output pixels (rows), reduction depth per group,
    output channels per group; and the channel count (depthwise convs differ only there)."""
    per_group = p["CIN"] // p["GROUPS"]
    return (math.log2(p["N"] * _conv_output_pixels(p)), math.log2(per_group * _conv_taps(p)),
            math.log2(p["COUT"] // p["GROUPS"]), math.log2(p["CIN"]))


def _conv_kind(p: Params) -> str:
    if p["GROUPS"] > 1:
        return "depthwise" if p["GROUPS"] == p["CIN"] else "grouped"
    if _conv_taps(p) == 1:
        # on a 1x1 map (squeeze-excitation) a pointwise conv is a matrix-vector product per
        # image: 8 us for 512->128 where a 256->64 conv on 14x14 takes 140 us. One image runs
        # on one thread; several, oneDNN spreads over the threads and pays for starting them:
        # 8 images of 32->8 took 55 us on a 2-vCPU EPYC VM where one took 8 (and 8.6 on one
        # thread), so the two are different kernels, never interpolated between
        if p["H"] == p["W"] == 1:
            return "pointwise_1x1_map" if p["N"] == 1 else "pointwise_1x1_map_batch"
        return "pointwise"
    return "dense"


def _conv(n: int, cin: int, cout: int, hw: int, k: int, s: int, groups: int = 1) -> Params:
    return {"N": n, "CIN": cin, "COUT": cout, "H": hw, "W": hw, "K": k,
            "STRIDE": s, "PAD": k // 2, "GROUPS": groups}


CONV2D = Operation(
    name="conv2d",
    family="conv",
    description="2-D convolution, no bias, eval/no_grad: ResNet-18 and MobileNet-V2 layers at 224x224, and a grid",
    flops=_conv_flops,
    bytes_moved=_conv_bytes,
    shapes=fixed(full=(
        _conv(1, 3, 64, 224, 7, 2),  # resnet18.conv1
        _conv(1, 64, 64, 56, 3, 1),  # resnet18.layer1.conv3x3
        _conv(1, 64, 128, 56, 3, 2),  # resnet18.layer2.conv3x3_s2
        _conv(1, 64, 128, 56, 1, 2),  # resnet18.layer2.downsample1x1
        _conv(1, 512, 512, 7, 3, 1),  # resnet18.layer4.conv3x3
        _conv(8, 64, 64, 56, 3, 1),  # resnet18.layer1.conv3x3
        _conv(1, 24, 144, 56, 1, 1),  # mobilenet_v2.expand1x1
        _conv(1, 144, 24, 56, 1, 1),  # mobilenet_v2.project1x1
        _conv(1, 144, 144, 56, 3, 1, groups=144),  # mobilenet_v2.dw3x3
        _conv(1, 144, 144, 56, 3, 2, groups=144),  # mobilenet_v2.dw3x3_s2
        _conv(1, 960, 960, 7, 3, 1, groups=960),  # mobilenet_v2.dw3x3_late
        # A generic grid between and around those, matching no layer of the models the
        # predictions are checked on, so a mapper interpolates rather than looks up.
        _conv(1, 3, 32, 160, 3, 2),
        _conv(1, 32, 32, 112, 3, 1),
        _conv(1, 96, 96, 40, 3, 1),
        _conv(1, 192, 192, 20, 3, 1),
        _conv(1, 384, 384, 10, 3, 1),
        _conv(8, 192, 192, 20, 3, 1),
        _conv(1, 48, 192, 40, 1, 1),
        _conv(1, 192, 48, 40, 1, 1),
        _conv(1, 512, 512, 10, 1, 1),
        _conv(8, 96, 384, 20, 1, 1),
        _conv(1, 96, 96, 80, 3, 1, groups=96),
        _conv(1, 384, 384, 20, 5, 1, groups=384),
        _conv(1, 768, 768, 10, 3, 1, groups=768),
        _conv(8, 96, 96, 40, 3, 1, groups=96),
        # batch 8 on large maps: activations of 26 MiB, past the LLC, where an inverted
        # residual's 1x1 convs and depthwise conv spend their time streaming from DRAM
        _conv(8, 32, 128, 80, 1, 1),
        _conv(8, 128, 32, 80, 1, 1),
        _conv(8, 128, 128, 80, 3, 1, groups=128),
        # where mobile and residual architectures spend their late layers: 1x1 convs that
        # expand or project on 14x14 and 7x7 maps, a 5x5 depthwise, a strided 3x3 at batch 8
        # (positions of a typical network, no layer of the models the predictions are checked on)
        _conv(1, 128, 512, 14, 1, 1),
        _conv(1, 640, 160, 7, 1, 1),
        _conv(8, 256, 64, 14, 1, 1),
        _conv(1, 320, 320, 14, 5, 1, groups=320),
        _conv(8, 96, 192, 40, 3, 2),
        # small kernels, where a call's fixed cost (oneDNN reorders, dispatch) is most of it
        _conv(1, 64, 64, 7, 3, 1),
        _conv(1, 256, 64, 14, 1, 1),
        _conv(1, 512, 128, 1, 1, 1),  # a squeeze-excitation-style 1x1 on a 1x1 map
        # the same at batch 8 (pointwise_1x1_map_batch: tens of us of fixed cost on two threads
        # that one image does not pay), five shapes so that the variant's cost model is fitted:
        # an efficiency interpolated in FLOPs between call-bound sizes priced an SE conv at
        # 0.1-4x its time. Squeezing and expanding, with activations that vary apart from the
        # weights (2048->32, 32->2048); with only square-ish ones the fit put the fixed cost on
        # the activation bytes and priced 1152->48 at 186 us against 82 measured
        _conv(8, 16, 4, 1, 1, 1),
        _conv(8, 64, 256, 1, 1, 1),
        _conv(8, 1024, 256, 1, 1, 1),
        _conv(8, 2048, 32, 1, 1, 1),
        _conv(8, 32, 2048, 1, 1, 1),
        _conv(1, 192, 192, 7, 3, 1, groups=192),
        # CIFAR-scale 3x3 convs (32x32 inputs, a CIFAR ResNet's three stages): narrow on small
        # maps, where the 224x224 layers above say nothing of a call's rate. The nearest the
        # grid had to a 32-channel 3x3 on a 32x32 map were 32 channels on 112x112 (230
        # GFLOP/s) and 64 on 7x7; such a conv ran 140 GFLOP/s and was predicted 25% fast
        _conv(1, 16, 16, 32, 3, 1),
        _conv(1, 32, 32, 16, 3, 1),
        _conv(1, 64, 64, 8, 3, 1),
    ),
    quick=(
        _conv(1, 64, 64, 56, 3, 1),  # resnet18.layer1.conv3x3
        _conv(1, 144, 144, 56, 3, 1, groups=144),  # mobilenet_v2.dw3x3
    )),
    variant=lambda p: (_conv_kind(p),),
    optional=CONV_WIDTH_PARAMS,
    cost_terms=_conv_terms,
    cost_units=("call", "bytes", "bytes", "flops"),
    shape_features=_conv_features,
)


# --------------------------------------------------------------------------- drift classes

# How a kernel's time moves when a shared machine drifts: a big compute-bound kernel with the
# cores it gets, a memory-bound one with the memory system, a small one (tens of µs) with
# dispatch and how fast its threads wake. The accuracy protocol re-times references of each
# class and corrects each class's share of a prediction by its own.
DRIFT_CLASSES = ("compute", "memory", "small")
SMALL_KERNEL_S = 30e-6


# --------------------------------------------------------------------------- element-wise

# Sizes chosen against this class of machine (32-48 KiB L1d, 0.5-1 MiB L2, 32 MiB L3):
# 4 Ki elements run on one thread (below ATen's 32 Ki grain), 64 Ki stay in L2, 1 Mi in L3,
# 16 Mi (64 MiB per fp32 tensor) go to DRAM.
ELEMENTWISE_SIZES = ({"n": 1 << 12}, {"n": 1 << 16}, {"n": 1 << 20}, {"n": 1 << 24})
ELEMENTWISE_QUICK = ({"n": 1 << 20}, {"n": 1 << 24})


def _elementwise(name: str, inputs: int, description: str, mask_bytes: int = 0) -> Operation:
    """``inputs`` arrays of the dtype in, one out; ``mask_bytes`` a bool mask's per element."""
    def flops(p: Params) -> int:
        return ELEMENTWISE_FLOPS[name] * p["n"]

    def nbytes(p: Params, size: int) -> int:
        return ((inputs + 1) * size + mask_bytes) * p["n"]

    return Operation(name, "elementwise", description, flops, nbytes,
                     fixed(ELEMENTWISE_SIZES, ELEMENTWISE_QUICK))


ELEMENTWISE = (
    _elementwise("add", 2, "c = a + b"),
    _elementwise("mul", 2, "c = a * b"),
    _elementwise("relu", 1, "y = max(x, 0)"),
    _elementwise("gelu", 1, "y = gelu(x), erf form"),
    # a kernel of its own: on a 2-vCPU Xeon it ran 164 us where the erf form ran 42 (64x3072)
    _elementwise("gelu_tanh", 1, "y = gelu(x, approximate='tanh'), tanh form"),
    _elementwise("sigmoid", 1, "y = 1 / (1 + exp(-x))"),
    _elementwise("silu", 1, "y = x * sigmoid(x)"),
    # an attention mask's select: priced as an add it came out at half its time (a GPT-2 block's
    # 12x256x256 scores: 329 us against 162), as ATen copies x then fills in place. Timed with a
    # causal mask (runs of set and unset): a random one ran the same fill 5x slower here, its
    # branches mispredicted
    _elementwise("masked_fill", 1, "y = x with a value where a bool mask is set (a causal mask over rows of up to "
                 "256: runs, as an attention mask has)", mask_bytes=1),
    _elementwise("where", 1, "y = x where a bool mask is set, else a scalar (the causal mask masked_fill times)",
                 mask_bytes=1),
)


# --------------------------------------------------------------------------- STREAM


def _stream(name: str, words: int, flops_per_element: int, description: str) -> Operation:
    def flops(p: Params) -> int:
        return flops_per_element * p["n"]

    def nbytes(p: Params, size: int) -> int:
        return words * p["n"] * size

    def shapes(quick: bool) -> tuple[Params, ...]:
        if name == "stream_triad":
            return tuple({"n": n} for n in host.triad_sweep_elements(quick=quick))
        # a quick run's DRAM ceiling is the triad's: STREAM's arrays are 4x the LLC each (2 GiB
        # under a 480 MiB L3), and copy, scale and add took 12-16 s of a 67-73 s quick run on a
        # VM whose host backed that memory afresh (a first 2 GiB array filled in 0.4 s, a second
        # in 3.6)
        return () if quick else ({"n": host.stream_elements()},)

    return Operation(name, "memory", description, flops, nbytes, shapes)


STREAM_SCALAR = 3.0
STREAM = (
    _stream("stream_copy", 2, 0, "a = b (STREAM copy: 2 words/element)"),
    _stream("stream_scale", 2, 1, "a = s * b (STREAM scale: 2 words/element)"),
    _stream("stream_add", 3, 1, "a = b + c (STREAM add: 3 words/element)"),
    _stream("stream_triad", 3, 2, "a = b + s * c (STREAM triad: 3 words/element)"),
)


# --------------------------------------------------------------------------- softmax, norms




SOFTMAX = Operation(
    name="softmax",
    family="softmax",
    description="softmax over the last dimension of a (ROWS x COLS) matrix",
    flops=lambda p: ELEMENTWISE_FLOPS["softmax"] * p["ROWS"] * p["COLS"],
    bytes_moved=lambda p, size: 2 * p["ROWS"] * p["COLS"] * size,
    shapes=fixed(full=({"ROWS": 2048, "COLS": 256}, {"ROWS": 4096, "COLS": 512}, {"ROWS": 8192, "COLS": 2048}),
    quick=({"ROWS": 2048, "COLS": 256},)),
)




LAYERNORM = Operation(
    name="layernorm",
    family="norm",
    description="layer norm over the last dimension with affine weight and bias",
    flops=lambda p: ELEMENTWISE_FLOPS["layernorm"] * p["ROWS"] * p["COLS"],
    bytes_moved=lambda p, size: (2 * p["ROWS"] * p["COLS"] + 2 * p["COLS"]) * size,
    # under 32 MiB of output: glibc would hand a larger fresh block back to the OS on each free
    shapes=fixed(full=({"ROWS": 256, "COLS": 1024}, {"ROWS": 2048, "COLS": 1024}, {"ROWS": 6144, "COLS": 1024}),
    quick=({"ROWS": 2048, "COLS": 1024},)),
)




def _nchw(p: Params) -> int:
    return p["N"] * p["C"] * p["H"] * p["W"]


BATCHNORM = Operation(
    name="batchnorm",
    family="norm",
    description="batch norm in eval mode (running statistics), NCHW",
    flops=lambda p: ELEMENTWISE_FLOPS["batchnorm"] * _nchw(p),
    bytes_moved=lambda p, size: (2 * _nchw(p) + 4 * p["C"]) * size,
    shapes=fixed(full=(
        {"N": 1, "C": 32, "H": 128, "W": 128},
        {"N": 1, "C": 128, "H": 32, "W": 32},
        {"N": 1, "C": 512, "H": 8, "W": 8},
        {"N": 8, "C": 64, "H": 64, "W": 64},
    ),
    quick=({"N": 1, "C": 128, "H": 32, "W": 32},)),
)


# --------------------------------------------------------------------------- pooling


def _pool_out(p: Params) -> int:
    ho = conv_out(p["H"], p["K"], p["STRIDE"], p["PAD"])
    wo = conv_out(p["W"], p["K"], p["STRIDE"], p["PAD"])
    return p["N"] * p["C"] * ho * wo






def _pool(n: int, c: int, hw: int, k: int, s: int, pad: int) -> Params:
    return {"N": n, "C": c, "H": hw, "W": hw, "K": k, "STRIDE": s, "PAD": pad}


def _pool_terms(p: Params, size: int) -> tuple[float, ...]:
    """A call; bytes of the input read and the output written; window elements visited (an
    output's K x K inputs). ATen's NCHW pooling pays per window element, not per byte: here a
    2x2 max pool over 26 MiB took 19 ms where a 3x3 one over 17 MiB took 16 ms."""
    return (1.0, float((_nchw(p) + _pool_out(p)) * size), float(_pool_out(p) * p["K"] * p["K"]))


def _pool_features(p: Params) -> tuple[float, ...]:
    """Output elements, window size, and the input plane (the stride's work per output)."""
    return (math.log2(_pool_out(p)), math.log2(p["K"] * p["K"]), math.log2(p["H"] * p["W"]))


# Pools of a late stage's or a small input's maps, tens of kB: without them every grid shape
# took 110 us or more and the fit read a call as 54-100 us (nothing in the grid told a call
# from bytes), so a 16x16 2x2 max pool of 24 us came out 124 (2-vCPU Xeon VM)
_SMALL_POOLS = (_pool(1, 16, 16, 3, 2, 1), _pool(1, 256, 14, 2, 2, 0))

# max and average pooling share one cost model (profile.shape_model fits it per operation)
_POOL_COST_MODEL = {"cost_terms": _pool_terms, "cost_units": ("call", "bytes", "flops"),
                    "shape_features": _pool_features}


MAXPOOL = Operation(
    name="maxpool",
    family="pool",
    description="2-D max pooling (eager kernel also writes int64 indices)",
    flops=lambda p: _pool_out(p) * (p["K"] * p["K"] - 1),
    bytes_moved=lambda p, size: _nchw(p) * size + _pool_out(p) * (size + 8),
    shapes=fixed(full=(_pool(1, 32, 128, 3, 2, 1), _pool(8, 32, 128, 3, 2, 1), _pool(1, 128, 32, 2, 2, 0),
                       _pool(8, 64, 48, 2, 2, 0), _pool(1, 192, 28, 3, 1, 1), *_SMALL_POOLS),
                 quick=(_pool(1, 32, 128, 3, 2, 1),)),
    **_POOL_COST_MODEL,
)

AVGPOOL = Operation(
    name="avgpool",
    family="pool",
    description="2-D average pooling (K x K window summed, then divided)",
    flops=lambda p: _pool_out(p) * p["K"] * p["K"],
    bytes_moved=lambda p, size: (_nchw(p) + _pool_out(p)) * size,
    shapes=fixed(full=(_pool(1, 96, 40, 3, 2, 1), _pool(1, 32, 64, 2, 2, 0), _pool(8, 128, 32, 2, 2, 0),
                       _pool(8, 48, 64, 3, 2, 1), _pool(1, 320, 14, 3, 1, 1), *_SMALL_POOLS),
                 quick=(_pool(1, 32, 64, 2, 2, 0),)),
    **_POOL_COST_MODEL,
)




GLOBAL_AVGPOOL = Operation(
    name="global_avgpool",
    family="pool",
    description="global average pooling: adaptive_avg_pool2d to 1x1, one mean per channel",
    flops=_nchw,
    bytes_moved=lambda p, size: (_nchw(p) + p["N"] * p["C"]) * size,
    shapes=fixed(full=({"N": 1, "C": 256, "H": 14, "W": 14}, {"N": 1, "C": 1024, "H": 8, "W": 8},
                       {"N": 8, "C": 384, "H": 10, "W": 10}),
                 quick=({"N": 1, "C": 1024, "H": 8, "W": 8},)),
)


# --------------------------------------------------------------------------- dispatch




DISPATCH = Operation(
    name="dispatch",
    family="dispatch",
    description="a one-element add: the per-call cost of Python + dispatcher + kernel launch",
    flops=lambda p: p["n"],
    bytes_moved=lambda p, size: 3 * p["n"] * size,
    shapes=fixed(full=({"n": 1},),
    quick=({"n": 1},)),
)


@dataclass(frozen=True)
class ModuleProbe:
    """An nn.Module class on a tiny input, and the registry kernel that module runs on it.

    The module itself is constructed in :data:`calibration.measure.kernels.PROBE_MODULES`."""

    input_shape: tuple[int, ...]
    operation: str  # the registry operation whose builder times the same kernel
    params: Params  # its parameters for ``input_shape``


# A model calls nn.Modules; the microbenchmarks call kernels. What lies between the two
# (Module.__call__, forward's attribute lookups and argument handling) costs 1-6 us a call
# on this class of machine, 5-6 for Conv2d, Linear and BatchNorm2d, and a builder's own call
# path (an aten ``.out`` overload) can cost more than the module's. Each probe times the module and the registry
# kernel on the same tiny input; a mapper adds the difference to every call of that class.
MODULE_PROBES: dict[str, ModuleProbe] = {
    # one channel, one pixel: an 8-channel 3x3 conv's time swings 13-22 us between runs
    # here (oneDNN's threads), as much as the difference being measured
    "Conv2d": ModuleProbe((1, 1, 1, 1),
                          "conv2d", {"N": 1, "CIN": 1, "COUT": 1, "H": 1, "W": 1, "K": 1,
                                     "STRIDE": 1, "PAD": 0, "GROUPS": 1}),
    "BatchNorm2d": ModuleProbe((1, 1, 1, 1),
                               "batchnorm", {"N": 1, "C": 1, "H": 1, "W": 1}),
    "Linear": ModuleProbe((1, 16), "linear", {"B": 1, "IN": 16, "OUT": 16}),
    "LayerNorm": ModuleProbe((1, 16), "layernorm", {"ROWS": 1, "COLS": 16}),
    "MaxPool2d": ModuleProbe((1, 8, 8, 8),
                             "maxpool", {"N": 1, "C": 8, "H": 8, "W": 8, "K": 3, "STRIDE": 2, "PAD": 1}),
    "AdaptiveAvgPool2d": ModuleProbe((1, 8, 8, 8),
                                     "global_avgpool", {"N": 1, "C": 8, "H": 8, "W": 8}),
    # ReLU6 runs hardtanh; the registry's relu kernel (clamp_min) is the nearest twin
    **{name: ModuleProbe((256,), operation, {"n": 256}) for name, operation in (
        ("ReLU", "relu"), ("ReLU6", "relu"), ("GELU", "gelu"), ("SiLU", "silu"), ("Sigmoid", "sigmoid"))},
}
MODULE_CALL_FORMS = ("module", "kernel")
MODULE_PROBES_QUICK = ("Conv2d", "ReLU")


def _module_calls(names: Iterable[str]) -> tuple[Params, ...]:
    return tuple({"module": name, "form": form} for name in names for form in MODULE_CALL_FORMS)


def probe_operation(p: Params) -> tuple[ModuleProbe, Operation]:
    if p["module"] not in MODULE_PROBES:
        raise ValueError(f"no module-call probe for {p['module']!r}; probed: {', '.join(MODULE_PROBES)}")
    probe = MODULE_PROBES[str(p["module"])]
    return probe, OPERATIONS[probe.operation]


def _probe_twin_flops(probe: ModuleProbe, operation: Operation) -> int:
    return operation.flops(probe.params)


def _probe_twin_bytes(probe: ModuleProbe, operation: Operation, size: int) -> int:
    return operation.bytes_moved(probe.params, size)


MODULE_CALL = Operation(
    name="module_call",
    family="module",
    description="an nn.Module call (form=module) and the registry kernel it runs (form=kernel) on a tiny input",
    flops=lambda p: _probe_twin_flops(*probe_operation(p)),
    bytes_moved=lambda p, size: _probe_twin_bytes(*probe_operation(p), size),
    shapes=fixed(full=_module_calls(MODULE_PROBES), quick=_module_calls(MODULE_PROBES_QUICK)),
)


# --------------------------------------------------------------------------- fresh outputs

# Eager PyTorch allocates every output. An allocator hands small blocks back from its pool,
# but returns large ones to the OS on free, so each call page-faults its output in again:
# glibc does so above 32 MiB, which here costs 0.4 ms per MiB, 20x the write itself. The
# sweep brackets such a threshold; a mapper charges a kernel's fresh output the difference
# between the two forms at its size.
# Largest first, fresh before reused (bench/test_alloc.py): a request above 32 MiB that an
# earlier, larger free block in the heap can serve faults nothing in, which is what made a
# profile price a 34 MiB output at 0.5 ms over a reused one in one run and 10 ms in the next.
ALLOC_SIZES_MIB = (96, 48, 34, 30, 24, 8, 1)
ALLOC_QUICK_MIB = (34, 30)


def _mib_elements(sizes: tuple[int, ...]) -> tuple[Params, ...]:
    return tuple({"n": mib * 2**20 // 4} for mib in sizes)  # float32 elements


def _alloc_op(name: str, description: str) -> Operation:
    return Operation(name=name, family="alloc", description=description, flops=lambda p: 0,
                     bytes_moved=lambda p, size: p["n"] * size,
                     shapes=fixed(full=_mib_elements(ALLOC_SIZES_MIB), quick=_mib_elements(ALLOC_QUICK_MIB)))


FILL = _alloc_op("fill", "fill a preallocated array: the write alone, to compare fill_fresh with")
FILL_FRESH = _alloc_op(
    "fill_fresh", "allocate an array and fill it, as an eager op writes its output: the write plus any page faults")


# --------------------------------------------------------------------------- cold operands

# A benchmark re-runs one kernel, so its weights and output stay in the caches between calls.
# Inside a model whose forward touches more than the last-level cache, a layer's weights were
# last read one forward ago and come from DRAM, while its input was just written by the layer
# before: a ResNet-18 3x3 conv at 7x7 ran 1.5x its benchmarked time after the LLC was evicted.
# Each cold operation times its warm twin's shapes with the weights and output evicted (a
# write over twice the LLC) and the input activation read back before every call; a mapper
# scales a kernel whose weights' reuse distance exceeds the LLC by cold / warm at its size.
#
# Not for the variants in NOT_COLD: their weights and output are a few KB, and what the cold
# twin times over the warm one is the call's fixed cost after a flush (8 images of a 16->4
# SE conv: +56 us for 2 KB), which a mapper pricing it per evicted byte had put on EfficientNet-
# B0's batch-8 SE convs as x3-11 their time.
NOT_COLD = frozenset({"pointwise_1x1_map_batch"})


def has_cold_twin(warm: Operation, params: Params) -> bool:
    """Whether the cold family times this shape of ``warm`` (none of the NOT_COLD variants)."""
    return not NOT_COLD.intersection(warm.variant(warm.complete(params)))


def _cold(warm: Operation) -> Operation:
    def shapes(quick: bool) -> tuple[Params, ...]:
        return tuple(p for p in warm.shapes(quick) if has_cold_twin(warm, p))

    return Operation(
        name=f"{warm.name}_cold", family="cold",
        description=f"{warm.name} with its weights and output evicted from the caches and its input just read, "
                    "as inside a model whose forward overflows the last-level cache",
        flops=warm.flops, bytes_moved=warm.bytes_moved, shapes=shapes, variant=warm.variant,
        scale=warm.scale, defaults=warm.defaults, optional=warm.optional, cpu_only=lambda p: True)


CONV2D_COLD = _cold(CONV2D)
LINEAR_COLD = _cold(LINEAR)
COLD_TWINS: dict[str, str] = {CONV2D.name: CONV2D_COLD.name, LINEAR.name: LINEAR_COLD.name}  # warm -> cold
# What a cold case's entry says of how it was timed (its LatencyStats.source), where its warm
# twin is the third call after the cold one: a warm twin, so that the cold cost is the cold
# call over it, drift-free. Entries without it timed the second call, which could still be
# cold, and a mapper falls back to the warm entry where that twin ran far over it.
COLD_CONTEXT = "cold: caches evicted, input and output block touched, before each call; warm twin its third call after"


# --------------------------------------------------------------------------- calls after a busy kernel

# A benchmark calls one kernel again and again, so the code, data and page-table entries its
# call touches stay in the caches. In a forward each call comes after another kernel, and on a
# shared host what a call finds cold grows with how long that kernel ran: here a batch norm
# over a 0.8 MB activation took +6 us after a 20 us matmul, +97 us after a 2.3 ms one and
# +263 us after a 19 ms one (a view: +1, +10, +62 us), where an LLC flush between calls, the
# cold twins' context, gave +111 to +145 us. Each case times a probe right after a square
# matmul of N (its time, measured in the same rounds, is the busy time) and again right after
# itself; a mapper adds the difference, averaged over the probes and interpolated in the log of
# the busy time, to every kernel after the one before it.
# the probes, on a 1x64x56x56 activation, and how many arrays of its size each reads and writes
AFTER_BUSY_PROBES: dict[str, int] = {"view": 0, "relu_inplace": 2, "add": 3, "batch_norm": 2}
AFTER_BUSY_SIZES = (64, 128, 256, 384, 512, 768, 1024)
# a quick run: a short matmul, a long one and one between, with the probe a mapper takes (the
# view) and one that moves data. With the long one alone a mapper scaled its point down to zero
# below, where a call after a few-us kernel still paid +0.6-1.3 us (the full grid's view probe
# after 6-100 us), an MLP's five calls 5 us of its 41. Without the one between, it drew a line
# in log time from +1.9 us after 7 us to +21 after 2.5 ms, where the full grid's view probe
# stays at +1-2 up to 0.11 ms (N=256) and steps up to +13 at 0.36 (N=384): each of an MLP's
# ReLUs after a 26 us GEMV took +6 us (it paid +3 in place) and the MLP came out 20-37% over
AFTER_BUSY_QUICK = (64, 256, 768)
AFTER_BUSY_QUICK_PROBES = ("view", "batch_norm")
AFTER_BUSY_SHAPE = (1, 64, 56, 56)


def _after_busy(sizes: tuple[int, ...], probes: Iterable[str] = tuple(AFTER_BUSY_PROBES)) -> tuple[Params, ...]:
    return tuple({"N": n, "probe": probe} for n in sizes for probe in probes)


def _probe_bytes(p: Params, size: int) -> int:
    if p["probe"] not in AFTER_BUSY_PROBES:
        raise ValueError(f"after_busy probe {p['probe']!r}; probes: {', '.join(AFTER_BUSY_PROBES)}")
    return AFTER_BUSY_PROBES[str(p["probe"])] * math.prod(AFTER_BUSY_SHAPE) * size


AFTER_BUSY = Operation(
    name="after_busy",
    family="sequence",
    description="a small call (probe) right after an NxN matmul has kept the CPUs busy, against the same call "
                "right after itself: what a call in a forward pays for following a longer kernel",
    flops=lambda p: 0,
    bytes_moved=_probe_bytes,
    shapes=fixed(full=_after_busy(AFTER_BUSY_SIZES), quick=_after_busy(AFTER_BUSY_QUICK, AFTER_BUSY_QUICK_PROBES)),
    cpu_only=lambda p: True,
)



# --------------------------------------------------------------------------- what the cores' caches keep

# A benchmark repeats one call, so a working set that fits the cores' own caches (their L2s)
# stays there; in a forward the rest of the forward passes through them between two of its
# calls. How much of it they lose is not what random replacement gives: on the 2-vCPU Xeon VM
# (2 MiB of L2 a core, 4 over the two) a 1 MiB GEMV re-read after 2 MiB of other reads had
# lost 5-20% of what it lost after 16 MiB (4x), after 4 MiB 30-35%, after 8 MiB 60-70% (random
# replacement: 39, 63 and 86%), and an MLP whose forward touches 2 MiB ran its GEMVs at their
# repeated times. Each case reads ``between`` bytes of other data (over all threads, as a
# forward's kernels do) right before a GEMV whose weights fill a quarter of the private caches,
# and times the GEMV again right after itself; a mapper reads the share of a working set lost
# to a forward's other traffic off these points (predict.mapper).
# the last: all of it gone from the private caches, and the LLC still holding it (after 16x, 64
# MiB, the Xeon VM's GEMV ran 10 us slower again than after 4x: the LLC losing part of it)
REREAD_PRIVATE_MULTIPLES = (1 / 8, 1 / 4, 1 / 2, 1, 2, 4)
REREAD_QUICK_MULTIPLES = (1 / 2, 1, 2, 4)
REREAD_IN = 512


def private_bytes() -> int:
    """What the cores' own caches hold over this process's CPUs, the size the sequence probes
    scale by; 1 MiB a CPU without the cache sizes (no sysfs): a mapper does not use the probes
    then (it needs the sizes to place a forward's footprint), but their shapes stay defined."""
    return host.private_cache_bytes(host.cache_sizes(), host.usable_cpus()) or host.usable_cpus() << 20


def _reread_shapes(quick: bool) -> tuple[Params, ...]:
    private = private_bytes()
    out = max(64, 1 << ((private // 4 // (REREAD_IN * 4)).bit_length() - 1))
    multiples = REREAD_QUICK_MULTIPLES if quick else REREAD_PRIVATE_MULTIPLES
    return tuple({"IN": REREAD_IN, "OUT": out, "between": int(private * m)} for m in multiples)


REREAD = Operation(
    name="reread",
    family="sequence",
    description="a GEMV right after 'between' bytes of other data were read, against the same GEMV right after "
                "itself: how much of a working set the cores' own caches lose to a forward's other traffic",
    flops=lambda p: 2 * p["IN"] * p["OUT"],
    bytes_moved=lambda p, size: (p["IN"] * p["OUT"] + p["IN"] + p["OUT"]) * size,
    shapes=_reread_shapes,
    cpu_only=lambda p: True,
)


# --------------------------------------------------------------------------- a call's own code, evicted

# What a call pays in a forward is mostly not its data: on the 2-vCPU Xeon VM a batch norm over
# 128 KB ran 12.8 us repeated and 92.8 right after a 16 MB read, 74.1 with its input read back
# after the read and 21.0 with the same op called on a 2x2 map in between. The traffic evicts
# the op's instructions and what they touch (its dispatch path, the pages of both), and a call
# fetches them again. Each case calls one op kind on a tiny input right after reading four
# times what the cores' own caches hold and then running a view and an add (the dispatch path
# every call shares, which a forward keeps warm), against the same call repeated; a mapper adds
# it for the share of those caches the forward's traffic since the last call of that kind
# evicted (predict.mapper). The kinds are registry operations, a forward's calls keyed by them.
AFTER_EVICT_KINDS = ("conv2d", "linear", "batchnorm", "layernorm", "relu", "add", "mul", "gelu", "silu",
                     "sigmoid", "softmax", "maxpool", "global_avgpool", "bmm", "stream_copy")
AFTER_EVICT_PRIVATE_MULTIPLE = 4
AFTER_EVICT_ELEMENTS = 1024  # the most elements a tiny call's input or output has
AFTER_EVICT = Operation(
    name="after_evict",
    family="sequence",
    description="a tiny call of one op kind right after the cores' own caches were evicted (the shared dispatch "
                "path warm again), against the same call repeated: what a call's code costs it to fetch again",
    flops=lambda p: 0,
    bytes_moved=lambda p, size: 2 * AFTER_EVICT_ELEMENTS * size,  # an input and an output, at most
    shapes=lambda quick: tuple({"op": kind} for kind in AFTER_EVICT_KINDS),  # every kind, quick or full
    cpu_only=lambda p: True,
)


# --------------------------------------------------------------------------- what the LLC keeps over time

# A forward calls each of its convs and linears once: their weights come back a forward later,
# after the rest of it has run, and the LLC loses them to time as well as to the forward's own
# traffic. A VM shares its host's LLC with other tenants: on the 2-vCPU Xeon VM a GEMV over 16
# MiB of weights ran 318 us repeated and 599 right after the LLC was flushed, and right after
# the process had touched no memory for 1, 2, 5, 10, 20 and 50 ms (a spin) it had lost 5, 5,
# 23, 38, 92 and 100% of what the flush took; 64 MiB lost 2, 0, 15, 42, 86 and 100%. A 12.6 MB
# add ran 672 us repeated and x1.9-2.1 after a 20 ms matmul, a 20 ms spin or a 20 ms sleep,
# but x1.0-1.1 right after a 16 MB read: what the forward's own bytes evict (``1 - exp(-reuse /
# LLC)``) leaves most of a ResNet-18's weights hot where its 22 ms forward leaves few. Each
# case times a GEMV whose weights are four times the cores' own caches (at least 16 MiB) right
# after ``ms`` milliseconds in which this process touched no memory, against the same GEMV
# right after itself; one case times it right after the LLC was flushed, the share's whole.
# What time takes depends on how much the process held: on a 2-vCPU EPYC VM (32 MiB L3) a
# GEMV over 4 MiB lost 10-12% of what a flush took after 1 ms and 34-44% after 2, one over
# 16 MiB 67-92% and 90-96%, and 8 MiB fell between (the other tenants' traffic replaces the
# least recently used lines first, and the more the process holds, the sooner that reaches
# them). A CIFAR CNN's 4 MiB classifier, priced by the 16 MiB ladder alone, came out at 2.8x
# its time in the forward. So the ladder is timed at two working sets: twice the cores' own
# caches (the smallest that the LLC holds and the cores do not) and the larger one above.
AFTER_WAIT_MS = (1, 2, 5, 10, 20, 50)
AFTER_WAIT_IN = 1024
AFTER_WAIT_MIN_BYTES = 16 << 20


def after_wait_sizes() -> tuple[int, ...]:
    """The GEMV output rows of the after_wait ladders, smaller working set first: twice the
    cores' own caches, and four times them but at least ``AFTER_WAIT_MIN_BYTES``."""
    private, row = private_bytes(), AFTER_WAIT_IN * 4
    return tuple(sorted({max(2 * private // row, 1), max(4 * private, AFTER_WAIT_MIN_BYTES) // row}))


def _after_wait_shapes(quick: bool) -> tuple[Params, ...]:
    return tuple(shape for out in after_wait_sizes() for shape in (
        *({"IN": AFTER_WAIT_IN, "OUT": out, "after": "wait", "ms": ms} for ms in AFTER_WAIT_MS),
        {"IN": AFTER_WAIT_IN, "OUT": out, "after": "flush", "ms": 0}))


AFTER_WAIT = Operation(
    name="after_wait",
    family="sequence",
    description="a GEMV over weights the LLC holds, right after 'ms' milliseconds in which this process touched "
                "no memory (or right after the LLC was flushed), against the same GEMV right after itself: how "
                "much of a forward's weights the LLC loses to time between two of their calls",
    flops=lambda p: 2 * p["IN"] * p["OUT"],
    bytes_moved=lambda p, size: (p["IN"] * p["OUT"] + p["IN"] + p["OUT"]) * size,
    shapes=_after_wait_shapes,  # every wait at both sizes, quick or full: about 7 s in all
    cpu_only=lambda p: True,
)


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (MATMUL, LINEAR, LSTM, BMM, CONV2D, *ELEMENTWISE, *STREAM, SOFTMAX, LAYERNORM,
               BATCHNORM, MAXPOOL, AVGPOOL, GLOBAL_AVGPOOL, DISPATCH, MODULE_CALL, FILL, FILL_FRESH,
               CONV2D_COLD, LINEAR_COLD, AFTER_BUSY, REREAD, AFTER_EVICT, AFTER_WAIT)
}
FAMILIES: dict[str, tuple[str, ...]] = {}
for _op in OPERATIONS.values():
    FAMILIES[_op.family] = FAMILIES.get(_op.family, ()) + (_op.name,)


def resolve_selection(names: Iterable[str]) -> set[str]:
    """Operation names selected by family or operation names (``all`` selects everything)."""
    selected: set[str] = set()
    for name in names:
        if name == "all":
            selected.update(OPERATIONS)
        elif name in FAMILIES:
            selected.update(FAMILIES[name])
        elif name in OPERATIONS:
            selected.add(name)
        else:
            raise ValueError(
                f"unknown operation or family {name!r}; families: {', '.join(sorted(FAMILIES))}; "
                f"operations: {', '.join(sorted(OPERATIONS))}; or 'all'"
            )
    return selected
