"""Ops the partitioner has no formula for, on models nobody tuned for: a torch.nn module fx
keeps as one node (multi-head attention, a transformer layer, an RNN) is costed as the
kernels it runs inside; attention and oneDNN's fused RNN as what they compute; element-wise
and data-movement ops as the nearest operation the profile times."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from factories import fusion_record, metadata, record
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from calibration.measure.fold import fold
from calibration.predict.flops import sdpa_flop_formula
from calibration.predict.mapper import CPUMapper, predict_latency
from calibration.predict.plan import partition
from calibration.specs.operations import OPERATIONS

F32 = 4


def ceilings():
    """A matmul at 100 GFLOPS, a DRAM triad at 20 GB/s and 2 us a call."""
    return [record("matmul", 2 * 1024**3 / 100e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
            record("stream_triad", 3 * 4 * (1 << 25) / 20e9 * 1e3, n=1 << 25),
            record("dispatch", 0.002, n=1)]


class Wrap(nn.Module):
    """One module inside a model, as a model holds it (fx keeps torch.nn modules as one node)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if isinstance(self.inner, nn.MultiheadAttention):
            return self.inner(x, x, x, need_weights=False)[0]
        out = self.inner(x)
        return out[0] if isinstance(out, tuple) else out


def kernels(model: nn.Module, x: torch.Tensor, cal=None):
    part = partition(model.eval(), x, cal)
    return [n for sg in part.subgraphs for n in sg.nodes if n.kernel], part


def gemm_flops(node) -> int:
    """FLOPs of the GEMMs a node runs inside, without their bias adds (FlopCounterMode's count)."""
    total = 0
    for k in node.inner:
        if k.inner:
            total += gemm_flops(k)
        elif k.operation == "linear":
            total += k.flops - k.params["B"] * k.params["OUT"]
        elif k.operation in ("matmul", "bmm"):
            total += k.flops
    return total


def counted(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), sdpa_flop_formula(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def test_a_multi_head_attention_module_is_costed_as_its_gemms_softmax_and_adds():
    torch.manual_seed(0)
    model, x = Wrap(nn.MultiheadAttention(64, 4, batch_first=True)), torch.randn(2, 10, 64)
    (mha,), part = kernels(model, x)
    assert mha.module == "MultiheadAttention" and len(mha.inner) > 4
    ops = {k.operation for k in mha.inner} | {i.operation for k in mha.inner for i in k.inner}
    assert {"linear", "softmax", "bmm"} <= ops  # softmax and bmm inside its scaled dot-product attention
    # the in-projection (20 tokens x 64 -> 192), the scores and the values (8 heads-batches of
    # 10x16 by 16x10, 10x10 by 10x16) and the out-projection (64 -> 64), by hand ...
    hand = 2 * 20 * 64 * 192 + 2 * (2 * 8 * 10 * 16 * 10) + 2 * 20 * 64 * 64
    assert gemm_flops(mha) == hand
    # ... and as torch counts the eager call (its fused fast path counts as nothing)
    assert gemm_flops(mha) == counted(_decomposed_mha(model), x)
    # the node's FLOPs are its kernels' (GEMMs, bias adds, scale, softmax)
    assert mha.flops == sum(k.flops for k in mha.inner) > hand
    # the weights are read by the node: in-projection and out-projection, weights and biases
    assert mha.bytes >= (64 * 192 + 192 + 64 * 64 + 64) * F32
    assert "MultiheadAttention" not in part.uncounted


def _decomposed_mha(model: Wrap) -> nn.Module:
    """The same attention, written as F.multi_head_attention_forward's GEMMs (no fast path)."""
    mha = model.inner

    class Decomposed(nn.Module):
        def forward(self, x):
            b, t, e = x.shape
            h, d = mha.num_heads, e // mha.num_heads
            qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
            q, k, v = (z.reshape(b, t, h, d).transpose(1, 2) for z in qkv.chunk(3, -1))
            attn = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, -1) @ v
            return F.linear(attn.transpose(1, 2).reshape(b, t, e), mha.out_proj.weight, mha.out_proj.bias)

    return Decomposed()


def test_a_transformer_encoder_layer_is_costed_from_the_profile_kernel_by_kernel():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(128, 4, 256, batch_first=True, dropout=0.0)
    model, x = Wrap(layer), torch.randn(2, 16, 128)
    cal = fold(ceilings() + [record("linear", 0.050, B=32, IN=128, OUT=256)], metadata(cache_sizes={}))
    (enc,), _ = kernels(model, x, cal)
    linears = [k for k in enc.inner if k.operation == "linear"]
    # the out-projection and the two feed-forward Linears (the packed in-projection is an mm)
    assert sorted((k.params["IN"], k.params["OUT"]) for k in linears) == [(128, 128), (128, 256), (256, 128)]
    assert [k.op for k in enc.inner].count("layer_norm") == 2
    (sdpa,) = [k for k in enc.inner if k.op == "scaled_dot_product_attention"]
    assert [k.operation for k in sdpa.inner] == ["bmm", "mul", "softmax", "bmm"]
    estimate = CPUMapper(cal).kernel(enc)
    priced = {k.name: CPUMapper(cal)._kernel(k).seconds for k in enc.inner}
    (ff1,) = [k for k in linears if k.params["OUT"] == 256]
    assert priced[ff1.name] == pytest.approx(50e-6)  # the calibrated entry, exactly
    module_call = estimate.seconds - sum(priced.values())
    assert module_call >= 0 and estimate.source == f"the {len(enc.inner)} kernels it runs inside, each priced"


def test_scaled_dot_product_attention_is_its_unfused_kernels_scaled_to_the_library_s_time_at_a_calibrated_shape():
    torch.manual_seed(0)

    class Attention(nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q)

    q = torch.randn(1, 12, 128, 64)
    shape = {"B": 1, "H": 12, "L": 128, "D": 64}
    base = ceilings()
    slow = fold(base, metadata(cache_sizes={}))
    fast = fold(base, metadata(cache_sizes={}), fusion_records=[
        fusion_record("Attention", "unfused", 3.0, **shape), fusion_record("Attention", "library", 1.0, **shape)])
    (node,), _ = kernels(Attention(), q)
    scores, scale, softmax, values = node.inner
    assert (scores.operation, scores.params) == ("bmm", {"BATCH": 12, "M": 128, "K": 64, "N": 128})
    assert (values.operation, values.params) == ("bmm", {"BATCH": 12, "M": 128, "K": 128, "N": 64})
    assert softmax.params == {"ROWS": 12 * 128, "COLS": 128} and scale.params == {"n": 12 * 128 * 128}
    # the node's FLOPs stay torch's count of the two GEMMs plus the scale and softmax
    with sdpa_flop_formula(), FlopCounterMode(display=False) as counter:
        Attention()(q)
    assert node.flops == counter.get_total_flops() + 12 * 128 * 128 * (1 + 5)
    unfused = CPUMapper(slow)._kernel(node)
    assert unfused.source == "the 4 kernels it runs inside, each priced"  # no Attention entry: their sum
    # at the calibrated shape: what the library's kernel measured there, whatever the parts price at
    fused = CPUMapper(fast)._kernel(node)
    assert fused.seconds == pytest.approx(1e-3)
    ratio = 1e-3 / unfused.seconds
    assert f"x{ratio:.2f}: the library's fused kernel over the same kernels priced at the calibrated 1x12x128x64" \
        in fused.source
    # elsewhere: the parts priced there, times that ratio (not the unfused/fused speedup of 3)
    (other,), _ = kernels(Attention(), torch.randn(1, 3, 197, 64))
    parts = CPUMapper(slow)._kernel(other).seconds
    assert CPUMapper(fast)._kernel(other).seconds == pytest.approx(parts * ratio)
    assert ratio != pytest.approx(1 / 3.0, rel=0.05)


def test_an_lstm_is_its_input_projection_one_recurrent_gemm_a_step_and_its_gates():
    torch.manual_seed(0)
    steps, batch, features, hidden = 20, 2, 64, 128
    model, x = Wrap(nn.LSTM(features, hidden, batch_first=True)), torch.randn(batch, steps, features)
    (lstm,), _ = kernels(model, x)
    layers = [k for k in lstm.inner if k.inner]
    if not layers:
        pytest.skip("this torch runs the LSTM without oneDNN's fused layer")
    (layer,) = layers
    projection, *recurrent, gates = layer.inner
    assert (projection.operation, projection.params) == ("linear", {"B": steps * batch, "IN": features,
                                                                    "OUT": 4 * hidden})
    assert len(recurrent) == steps
    assert {(k.operation, tuple(k.params.items())) for k in recurrent} == {
        ("linear", (("B", batch), ("IN", hidden), ("OUT", 4 * hidden)))}  # h @ W_hh^T + b_hh each step
    assert gates.params == {"n": steps * batch * 4 * hidden}
    gemm = 2 * steps * batch * 4 * hidden * (features + hidden)
    assert gemm_flops(lstm) == gemm
    # priced as the projection, twenty steps and the gates: far above one call of anything
    mapper = CPUMapper(fold(ceilings(), metadata(cache_sizes={})))
    assert mapper._kernel(lstm).seconds >= (steps + 2) * 2e-6


def lstm_layer(steps=20, batch=2, features=64, hidden=128, cal=None, **kw):
    model = Wrap(nn.LSTM(features, hidden, batch_first=True, **kw))
    (lstm,), _ = kernels(model, torch.randn(batch, steps, features), cal)
    layers = [k for k in lstm.inner if k.inner]
    if not layers:
        pytest.skip("this torch runs the LSTM without oneDNN's fused layer")
    return layers[0]


def test_a_fused_lstm_layer_is_the_registry_s_lstm_with_its_flops_and_bytes():
    layer = lstm_layer()
    assert (layer.operation, layer.params) == ("lstm", {"T": 20, "B": 2, "I": 64, "H": 128})
    spec = OPERATIONS["lstm"]
    # by hand: the GEMMs of every step (input and hidden), both biases, four gates' sigmoids
    gates = 20 * 2 * 4 * 128
    assert spec.flops(layer.params) == 2 * gates * (64 + 128) + 2 * gates + 4 * gates == layer.flops
    # weights and biases, the input and output sequences, h and c in and out
    assert spec.bytes_moved(layer.params, F32) == (512 * (64 + 128) + 1024 + 20 * 2 * 64 + 20 * 2 * 128
                                                   + 4 * 2 * 128) * F32


def lstm_profile(*entries):
    return fold(ceilings() + [record("lstm", ms, **params) for ms, params in entries], metadata(cache_sizes={}))


def test_an_lstm_layer_timed_at_its_shape_is_priced_by_that_entry():
    cal = lstm_profile((1.5, {"T": 20, "B": 2, "I": 64, "H": 128}))
    estimate = CPUMapper(cal)._kernel(lstm_layer(cal=cal))
    assert estimate.seconds == pytest.approx(1.5e-3) and estimate.source == "calibrated at this shape"


def test_an_unseen_lstm_shape_is_its_parts_scaled_as_the_calibrated_layers_ran():
    near, far = {"T": 32, "B": 2, "I": 64, "H": 128}, {"T": 32, "B": 16, "I": 512, "H": 512}
    bare = CPUMapper(fold(ceilings(), metadata(cache_sizes={})))
    layer = lstm_layer()  # T=20, B=2, I=64, H=128
    parts = bare._kernel(layer).seconds
    assert parts == pytest.approx(sum(bare._kernel(k).seconds for k in layer.inner))
    assert "no lstm cases" in " ".join(bare.notes)

    def own_parts(params) -> float:
        return bare._kernel(lstm_layer(params["T"], params["B"], params["I"], params["H"])).seconds

    # the near layer ran at half its parts' time, the far one at twice
    cal = lstm_profile((0.5 * own_parts(near) * 1e3, near), (2.0 * own_parts(far) * 1e3, far))
    estimate = CPUMapper(cal)._kernel(layer)
    # squared log2 distances by hand: near (32/20)^2 terms only; far adds B x8, I x8, H x4
    d_near = math.log2(32 / 20) ** 2
    d_far = d_near + 3**2 + 3**2 + 2**2
    ratio = math.exp((math.log(0.5) / d_near + math.log(2.0) / d_far) / (1 / d_near + 1 / d_far))
    assert 0.5 < ratio < 0.55
    assert estimate.seconds == pytest.approx(ratio * parts, rel=1e-6)
    assert f"x{ratio:.2f}" in estimate.source and "2 calibrated layers" in estimate.source


def test_a_gru_without_a_fused_kernel_is_its_per_step_gemms_and_gates():
    torch.manual_seed(0)
    model, x = Wrap(nn.GRU(32, 64, num_layers=2, batch_first=True)), torch.randn(2, 15, 32)
    (gru,), _ = kernels(model, x)
    gemms = [k for k in gru.inner if k.operation in ("linear", "matmul")]
    assert len(gemms) >= 2 * 15  # at least one recurrent GEMM per step and layer
    assert gemm_flops(gru) == counted(model, x)


@pytest.mark.parametrize(("module", "operation"), [
    (nn.LeakyReLU(0.1), "relu"), (nn.Hardswish(), "relu"), (nn.Hardsigmoid(), "relu"),
    (nn.Tanh(), "sigmoid"), (nn.ELU(), "sigmoid"), (nn.Softplus(), "sigmoid"), (nn.Mish(), "silu"),
    (nn.Upsample(scale_factor=2), "stream_copy"), (nn.PixelShuffle(2), "stream_copy"),
    (nn.GroupNorm(4, 16), "layernorm"), (nn.LogSoftmax(-1), "softmax"),
])
def test_element_wise_and_data_movement_ops_take_the_nearest_timed_operation(module, operation):
    x = torch.randn(2, 16, 8, 8)
    (node,), part = kernels(Wrap(module), x)
    found = node.operation or next(k.operation for k in node.inner)
    assert found == operation
    assert part.uncounted == ()


def test_a_group_norm_normalises_batch_times_groups_rows():
    (node,), _ = kernels(Wrap(nn.GroupNorm(4, 16)), torch.randn(2, 16, 8, 8))
    assert node.params == {"ROWS": 2 * 4, "COLS": 4 * 8 * 8}
    assert node.flops == 8 * 2 * 16 * 8 * 8


def test_a_concatenation_is_a_copy_of_its_output():
    class Cat(nn.Module):
        def forward(self, x):
            return torch.cat([x, x * 2], 1)

    (_, cat), _ = kernels(Cat(), torch.randn(2, 8, 4, 4))
    assert (cat.operation, cat.params) == ("stream_copy", {"n": 2 * 16 * 4 * 4})


def test_a_transposed_convolution_counts_each_input_element_scattered_over_its_kernel():
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
            self.weight = nn.Parameter(torch.randn(4, 6, 2, 2))

        def forward(self, x):
            return F.conv_transpose2d(self.up(x), self.weight, stride=2)

    x = torch.randn(2, 8, 10, 10)
    (module, function), _ = kernels(Up(), x)
    assert module.inner[0].op == "conv_transpose"  # not a conv2d of the wrong geometry
    assert module.flops == 2 * (2 * 8 * 10 * 10) * 4 * 9 + 2 * 4 * 20 * 20  # + bias
    assert function.flops == 2 * (2 * 4 * 20 * 20) * 6 * 4
    assert module.flops + function.flops - 2 * 4 * 20 * 20 == counted(Up().eval(), x)
    # each priced as the direct conv whose input gradient it computes: over its output, its
    # channels swapped, the same kernel, stride and padding, and the same multiply-adds
    assert (module.inner[0].operation, module.inner[0].params) == (
        "conv2d", {"N": 2, "CIN": 4, "COUT": 8, "H": 20, "W": 20, "K": 3, "STRIDE": 2, "PAD": 1, "GROUPS": 1})
    assert (function.operation, function.params) == (
        "conv2d", {"N": 2, "CIN": 6, "COUT": 4, "H": 40, "W": 40, "K": 2, "STRIDE": 2, "PAD": 0, "GROUPS": 1})
    for node in (module.inner[0], function):
        spec = OPERATIONS["conv2d"]
        assert spec.flops(spec.complete(node.params)) == node.flops - (2 * 4 * 20 * 20 if node is not function else 0)


def test_a_transposed_convolution_is_priced_by_the_profile_s_convs_and_adds_no_workload_case():
    from calibration.workload import model_cases

    direct = dict(N=1, CIN=32, COUT=64, H=32, W=32, K=4, STRIDE=2, PAD=1, GROUPS=1)
    cal = fold(ceilings() + [record("conv2d", 0.150, **direct)], metadata(cache_sizes={}))
    module = nn.Sequential(nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1, bias=False)).eval()
    (kernel,) = [k for sg in predict_latency(module, torch.randn(1, 64, 16, 16), cal).subgraphs for k in sg.kernels]
    assert kernel.seconds == pytest.approx(150e-6)  # the direct conv's entry, not the roofline

    class Functional(nn.Module):
        def forward(self, x):
            return F.conv_transpose2d(x, module[0].weight, stride=2, padding=1)

    (kernel,) = [k for sg in predict_latency(Functional().eval(), torch.randn(1, 64, 16, 16), cal).subgraphs
                 for k in sg.kernels]
    assert kernel.seconds == pytest.approx(150e-6)
    assert kernel.source == "as the direct conv whose input gradient it computes, calibrated at this size"
    # --calibrate-model would time a forward conv, not this kernel: the UNet's one transposed
    # conv (128 to 64 channels, 2x2, stride 2, at 32x32) adds no case, its other convs do
    found = model_cases(["calibration.predict.coverage_models:unet"], [1], device="cpu", input_shape=(3, 128, 128))
    keys = {c.key for c in found.operations["conv2d"]}
    assert "conv2d[N=1,CIN=64,COUT=128,H=64,W=64,K=2,STRIDE=2,PAD=0,GROUPS=1]/float32/cpu" not in keys
    assert "conv2d[N=1,CIN=32,COUT=2,H=128,W=128,K=1,STRIDE=1,PAD=0,GROUPS=1]/float32/cpu" in keys


def test_a_model_of_opaque_modules_predicts_more_than_a_call_per_module():
    """The failure this guards against: a transformer layer priced as one 2 us call."""
    torch.manual_seed(0)
    model = Wrap(nn.TransformerEncoderLayer(128, 4, 256, batch_first=True, dropout=0.0)).eval()
    cal = fold(ceilings(), metadata(cache_sizes={}))
    estimate = predict_latency(model, torch.randn(2, 16, 128), cal)
    (enc,) = [k for sg in estimate.subgraphs for k in sg.kernels]
    assert enc.seconds >= 10 * 2e-6  # ten kernels and more, each at least a dispatch
    flops = sum(n.flops for sg in partition(model, torch.randn(2, 16, 128)).subgraphs for n in sg.nodes)
    assert flops > 2 * 32 * 128 * 384  # at least the in-projection


def test_an_inner_kernel_counts_the_flops_its_registry_operation_does():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, dropout=0.0)
    (enc,), _ = kernels(Wrap(layer), torch.randn(2, 10, 64))
    priced = [k for k in enc.inner if k.operation]
    assert len(priced) >= 8
    for k in priced:
        assert k.flops == OPERATIONS[k.operation].flops(k.params), k.name


def test_a_function_no_formula_models_is_costed_as_the_aten_ops_it_runs():
    class Windows(nn.Module):
        def forward(self, q):
            scores = torch.einsum("bnd,bmd->bnm", q, q).softmax(-1)
            return F.normalize(torch.einsum("bnm,bmd->bnd", scores, q), dim=-1)

    q = torch.randn(4, 16, 32)
    nodes, part = kernels(Windows(), q)
    einsums = [n for n in nodes if n.op == "einsum"]
    assert len(einsums) == 2 and all(n.inner for n in einsums)
    assert [k.operation for n in einsums for k in n.inner if k.operation] == ["bmm", "bmm"]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        torch.einsum("bnd,bmd->bnm", q, q)
    assert einsums[0].flops == counter.get_total_flops() == 2 * 4 * 16 * 16 * 32
    (normalize,) = [n for n in nodes if n.op == "normalize"]
    assert len(normalize.inner) >= 2  # the norm, its clamp and the division
    assert "einsum" not in part.uncounted and "normalize" not in part.uncounted
