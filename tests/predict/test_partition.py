"""The partitioner: per-node FLOPs and bytes against hand counts and FlopCounterMode, the
fusion groups of small residual, inverted-residual, attention and MLP blocks, and the
calibration deciding which groups stay fused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from factories import full_profile, latency, metadata
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from calibration.measure.fold import FusionRecord, fold
from calibration.predict import models
from calibration.predict.flops import sdpa_flop_formula
from calibration.predict.mapper import predict_latency
from calibration.predict.plan import fusion_benefit, partition, should_fuse
from calibration.predict.results import Partition, render_report
from calibration.specs.patterns import PATTERNS, FusionCase

F32 = 4


def counted_flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops()


def by_name(p: Partition) -> dict:
    return {n.name: n for s in p.subgraphs for n in s.nodes}


def kernel_groups(p: Partition) -> list[tuple[str | None, list[str]]]:
    return [(s.pattern, [n.name for n in s.nodes if n.kernel]) for s in p.subgraphs]


# ------------------------------------------------------------------ small test modules


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return bn


class ConvStack(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.bn = _bn(8)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.drop(self.flat(self.avg(self.pool(self.relu(self.bn(self.conv(x))))))))


def basic_block(cin: int = 8, cout: int = 8, stride: int = 1) -> nn.Module:
    """torchvision's ResNet basic block; a strided or widening one gets the 1x1 conv + BN shortcut."""
    downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout))
                  if stride != 1 or cin != cout else None)
    return models.BasicBlock(cin, cout, stride, downsample)


class InvertedResidual(nn.Module):
    def __init__(self, c: int = 8, expand: int = 6):
        super().__init__()
        hidden = c * expand
        self.conv = nn.Sequential(
            nn.Conv2d(c, hidden, 1, bias=False), _bn(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False), _bn(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c, 1, bias=False), _bn(c),
        )

    def forward(self, x):
        return x + self.conv(x)


class AttentionBlock(nn.Module):
    def __init__(self, embed: int = 32, heads: int = 4):
        super().__init__()
        self.qkv = nn.Linear(embed, 3 * embed)
        self.proj = nn.Linear(embed, embed)
        self.norm = nn.LayerNorm(embed)
        self.heads = heads

    def forward(self, x):
        b, length, embed = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, embed // self.heads).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (q.size(-1) ** -0.5)
        context = torch.matmul(F.softmax(scores, dim=-1), v)
        context = context.transpose(1, 2).reshape(b, length, embed)  # a copy: the transpose is not viewable
        return self.norm(x + self.proj(context))


class SDPABlock(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


class MLP(nn.Module):
    def __init__(self, fin: int = 16, hidden: int = 64, activation: str = "relu"):
        super().__init__()
        self.fc1 = nn.Linear(fin, hidden)
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.fc2 = nn.Linear(hidden, fin)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class SharedInput(nn.Module):
    """x is read by two convs (two kernels) and twice by one add (one kernel)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 1, bias=False)
        self.b = nn.Conv2d(4, 4, 1, bias=False)

    def forward(self, x):
        return self.a(x) + self.b(x) + (x + x)


class ShapeBranch(nn.Module):
    """Python control flow on a shape: fx cannot trace it, torch.export specializes it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        if x.shape[0] > 1:
            return torch.relu(self.fc(x))
        return x


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


# ------------------------------------------------------------------ per-node counts


def test_conv_stack_nodes_match_hand_counts():
    x = torch.randn(2, 3, 16, 16)
    p = partition(ConvStack().eval(), x)
    nodes = by_name(p)
    y = 2 * 8 * 16 * 16  # conv output elements
    pooled = 2 * 8 * 8 * 8
    assert nodes["conv"].flops == 2 * y * 3 * 9 + y  # GEMM-equivalent + bias
    assert nodes["conv"].bytes == (x.numel() + 8 * 3 * 9 + 8 + y) * F32
    assert nodes["bn"].flops == 2 * y and nodes["bn"].bytes == (2 * y + 4 * 8) * F32
    assert nodes["relu"].flops == y and nodes["relu"].bytes == 2 * y * F32
    assert nodes["pool"].flops == 8 * pooled  # K*K - 1 comparisons
    assert nodes["pool"].bytes == (y + pooled) * F32 + 8 * pooled  # + int64 indices
    assert nodes["avg"].flops == pooled and nodes["avg"].bytes == (pooled + 16) * F32
    assert nodes["fc"].flops == 2 * 2 * 8 * 4 + 2 * 4
    assert nodes["fc"].bytes == (16 + 32 + 4 + 8) * F32
    for free in ("flat", "drop"):  # a view and eval-mode dropout launch nothing
        assert not nodes[free].kernel and nodes[free].flops == nodes[free].bytes == 0
    assert nodes["conv"].shape == (2, 8, 16, 16) and nodes["conv"].dtype == "float32"
    # oneDNN reads a 3-channel input as it is and writes a blocked copy of the output first
    assert nodes["conv"].scratch_bytes == (y * F32,) and nodes["bn"].scratch_bytes == ()
    assert nodes["conv"].allocated_bytes == y * F32 and nodes["relu"].allocated_bytes == y * F32
    assert p.unfused.subgraphs == 6  # conv, bn, relu, pool, avg, fc
    assert kernel_groups(p)[0] == ("Conv2d_BN_ReLU_MaxPool", ["conv", "bn", "relu", "pool"])
    assert p.uncounted == ()


def test_a_convolution_of_8_or_more_channels_also_copies_its_input_to_blocks():
    x = torch.randn(1, 8, 10, 10)
    first = next(n for sg in partition(InvertedResidual().eval(), x).subgraphs for n in sg.nodes if n.op == "conv2d")
    assert first.scratch_bytes == (8 * 100 * F32, 48 * 100 * F32)  # blocked input, blocked output


@pytest.mark.parametrize("model, inputs, biases", [
    (ConvStack(), (torch.randn(2, 3, 16, 16),), 2 * 8 * 16 * 16 + 2 * 4),
    (InvertedResidual(), (torch.randn(1, 8, 10, 10),), 0),
    (MLP(), (torch.randn(5, 16),), 5 * 64 + 5 * 16),
    (AttentionBlock(), (torch.randn(2, 6, 32),), 2 * 6 * 96 + 2 * 6 * 32),
], ids=["conv", "depthwise", "mlp", "attention"])
def test_gemm_flops_equal_flop_counter_plus_bias(model, inputs, biases):
    model.eval()
    p = partition(model, inputs)
    gemm = sum(n.flops for s in p.subgraphs for n in s.nodes if n.op in ("conv2d", "linear", "matmul"))
    assert gemm == counted_flops(model, *inputs) + biases


def test_attention_block_counts_every_node_kind():
    x = torch.randn(2, 6, 32)
    p = partition(AttentionBlock().eval(), x)
    nodes = by_name(p)
    scores = 2 * 4 * 6 * 6
    assert nodes["mul"].flops == scores and nodes["softmax"].flops == 5 * scores
    assert nodes["matmul"].flops == 2 * scores * 8
    assert nodes["reshape"].op == "copy" and nodes["reshape"].bytes == 2 * x.numel() * F32
    assert nodes["add"].flops == x.numel()
    assert nodes["norm"].flops == 8 * x.numel() and nodes["norm"].bytes == (2 * x.numel() + 64) * F32
    for view in ("view", "permute", "transpose", "getitem_3", "size"):
        assert not nodes[view].kernel and nodes[view].bytes == 0
    assert kernel_groups(p) == [
        (None, ["qkv"]), ("Attention", ["matmul", "mul", "softmax", "matmul_1"]), (None, ["reshape"]),
        (None, ["proj"]), ("Add_LayerNorm", ["add", "norm"]),
    ]
    attention = p.subgraphs[1]
    head = 2 * 4 * 6 * 8
    assert attention.shape == {"B": 2, "H": 4, "L": 6, "D": 8}
    # the fused form reads Q, K, V and writes the context; the unfused one also moves the scores
    assert attention.external_bytes == PATTERNS["Attention"].bytes_fused(attention.shape, F32) == 4 * head * F32
    assert attention.internal_bytes == PATTERNS["Attention"].bytes_unfused(attention.shape, F32) - 4 * head * F32
    assert attention.flops == PATTERNS["Attention"].flops(attention.shape)


def test_contiguous_is_free_on_a_contiguous_tensor_and_a_copy_otherwise():
    class Copies(nn.Module):
        def forward(self, x):
            return x.contiguous().transpose(0, 1).contiguous()

    x = torch.randn(4, 5)
    nodes = by_name(partition(Copies().eval(), x))
    assert not nodes["contiguous"].kernel
    assert nodes["contiguous_1"].op == "copy" and nodes["contiguous_1"].bytes == 2 * x.numel() * F32


def test_sdpa_flops_equal_flop_counter_with_the_registered_formula():
    q, k, v = (torch.randn(2, 4, 16, 8) for _ in range(3))
    model = SDPABlock().eval()
    assert counted_flops(model, q, k, v) == 0  # torch alone does not count the CPU kernel
    with sdpa_flop_formula():
        counted = counted_flops(model, q, k, v)
    assert counted_flops(model, q, k, v) == 0  # and the registry is as it was after the block
    scores = 2 * 4 * 16 * 16
    assert counted == 2 * 2 * scores * 8  # the formula was registered inside the block
    (node,) = (n for s in partition(model, (q, k, v)).subgraphs for n in s.nodes if n.kernel)
    assert node.op == "scaled_dot_product_attention"
    assert node.flops == counted + scores * (1 + 5)  # + scale and softmax per score
    assert node.flops == PATTERNS["Attention"].flops({"B": 2, "H": 4, "L": 16, "D": 8})


def test_a_shared_input_is_counted_once_per_kernel_that_reads_it():
    x = torch.randn(1, 4, 6, 6)
    n = x.numel()
    p = partition(SharedInput().eval(), x)
    nodes = by_name(p)
    assert nodes["a"].bytes == nodes["b"].bytes == (2 * n + 16) * F32  # each conv reads x
    assert nodes["add_1"].bytes == 2 * n * F32  # x + x: x read once by its one kernel
    assert p.unfused.bytes == sum(node.bytes for node in nodes.values())


def test_a_fused_kernel_reads_its_shared_input_once():
    x = torch.randn(1000)
    p = partition(Swish().eval(), x)
    (sub,) = p.subgraphs
    assert sub.pattern == "Sigmoid_Mul" and sub.shape == {"n": 1000}
    assert sub.external_bytes == PATTERNS["Sigmoid_Mul"].bytes_fused({"n": 1000}, F32) == 2 * 1000 * F32
    assert p.unfused.bytes == PATTERNS["Sigmoid_Mul"].bytes_unfused({"n": 1000}, F32)
    assert sub.flops == PATTERNS["Sigmoid_Mul"].flops({"n": 1000})


# ------------------------------------------------------------------ fusion groups


@pytest.mark.parametrize("model, inputs", [
    (ConvStack(), (torch.randn(2, 3, 16, 16),)),
    (basic_block(8, 16, 2), (torch.randn(1, 8, 12, 12),)),
    (InvertedResidual(), (torch.randn(1, 8, 10, 10),)),
    (AttentionBlock(), (torch.randn(2, 6, 32),)),
    (MLP(), (torch.randn(5, 16),)),
    (SharedInput(), (torch.randn(1, 4, 6, 6),)),
], ids=["conv", "resnet-downsample", "inverted-residual", "attention", "mlp", "shared"])
def test_flops_are_the_same_before_and_after_fusion(model, inputs):
    p = partition(model.eval(), inputs)
    assert p.unfused.flops == p.fused.flops == p.total_flops > 0
    assert sum(s.flops for s in p.subgraphs) == p.total_flops
    assert p.fused.bytes <= p.unfused.bytes
    assert sum(s.external_bytes + s.internal_bytes for s in p.subgraphs) == p.unfused.bytes
    assert sum(s.kernels for s in p.subgraphs) == p.unfused.subgraphs
    assert all(s.pattern is None or s.pattern in PATTERNS for s in p.subgraphs)


def test_resnet_basic_block_histogram():
    x = torch.randn(1, 8, 12, 12)
    p = partition(basic_block().eval(), x)
    assert p.histogram == {"Conv2d_BN_ReLU": 1, "Conv2d_BN_Add_ReLU": 1}
    assert kernel_groups(p) == [("Conv2d_BN_ReLU", ["conv1", "bn1", "relu"]),
                                ("Conv2d_BN_Add_ReLU", ["conv2", "bn2", "add", "relu_1"])]
    join = p.subgraphs[1]
    assert join.shape == {"N": 1, "CIN": 8, "COUT": 8, "H": 12, "W": 12, "K": 3, "STRIDE": 1}
    assert join.flops == PATTERNS["Conv2d_BN_Add_ReLU"].flops(join.shape)
    y = x.numel()
    # x, the weights, BN's four vectors, the residual (x again, another read) and the output
    assert join.external_bytes == (y + 8 * 8 * 9 + 4 * 8 + y + y) * F32


def test_resnet_block_with_downsample():
    p = partition(basic_block(8, 16, 2).eval(), torch.randn(1, 8, 12, 12))
    assert p.histogram == {"Conv2d_BN_ReLU": 1, "Conv2d_BN_Add_ReLU": 1, "Conv2d_BN": 1}


def test_inverted_residual_histogram():
    p = partition(InvertedResidual().eval(), torch.randn(1, 8, 10, 10))
    assert p.histogram == {"Conv2d_BN_ReLU6": 1, "DWConv2d_BN_ReLU6": 1, "Conv2d_BN": 1, "Unfused": 1}
    assert [s.pattern for s in p.subgraphs] == ["Conv2d_BN_ReLU6", "DWConv2d_BN_ReLU6", "Conv2d_BN", None]
    assert p.subgraphs[1].shape == {"N": 1, "CIN": 48, "COUT": 48, "H": 10, "W": 10, "K": 3, "STRIDE": 1,
                                    "GROUPS": 48}
    assert p.subgraphs[3].nodes[-1].op == "add"  # the residual join stays its own kernel


def test_linear_gelu_groups_and_the_projection_back_stays_apart():
    x = torch.randn(5, 16)
    p = partition(MLP(activation="gelu").eval(), x)
    assert kernel_groups(p) == [("Linear_Bias_GELU", ["fc1", "act"]), (None, ["fc2"])]
    sub = p.subgraphs[0]
    assert sub.shape == {"B": 5, "IN": 16, "OUT": 64}
    assert sub.flops == PATTERNS["Linear_Bias_GELU"].flops(sub.shape)
    assert sub.external_bytes == PATTERNS["Linear_Bias_GELU"].bytes_fused(sub.shape, F32)


def test_linear_relu_linear_back_to_the_input_width_is_the_mlp_pattern():
    x = torch.randn(5, 16)
    p = partition(MLP(activation="relu").eval(), x)
    assert kernel_groups(p) == [("MLP", ["fc1", "act", "fc2"])]
    sub = p.subgraphs[0]
    assert sub.shape == {"B": 5, "IN": 16, "HID": 64}
    assert sub.flops == PATTERNS["MLP"].flops(sub.shape)
    assert sub.external_bytes == PATTERNS["MLP"].bytes_fused(sub.shape, F32)
    # a second Linear to another width is not the registry's MLP: Linear_Bias_ReLU, then the Linear
    other = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    assert [s.pattern for s in partition(other, x).subgraphs] == ["Linear_Bias_ReLU", None]


def test_masked_attention_is_one_attention_group_with_the_mask_add_inside():
    model = models.bert_layer().eval()
    x, mask = models.example_input("bert_layer"), torch.zeros(1, 1, 1, 128)
    groups = dict((pattern, kernels) for pattern, kernels in kernel_groups(partition(model, (x, mask))) if pattern)
    assert groups["Attention"] == ["matmul", "truediv", "_add_mask", "softmax", "matmul_1"]
    node = by_name(partition(model, (x, mask)))["_add_mask"]  # an fx.wrap leaf, costed as the add it runs
    assert (node.op, node.flops, node.bytes) == ("add", 12 * 128 * 128, (2 * 12 * 128 * 128 + 128) * F32)


def test_export_fallback_where_fx_cannot_trace():
    p = partition(ShapeBranch().eval(), torch.randn(3, 8))
    assert p.traced_with == "export"
    assert p.histogram == {"Linear_Bias_ReLU": 1}
    assert p.total_flops == 2 * 3 * 8 * 8 + 3 * 8 + 3 * 8


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="model.eval"):
        partition(MLP(), torch.randn(2, 16))


# ------------------------------------------------------------------ calibration decides


def conv_calibration(speedup: float):
    params = {"N": 1, "CIN": 64, "COUT": 64, "H": 56, "W": 56, "K": 3, "STRIDE": 1}
    case = FusionCase("Conv2d_BN_ReLU", tuple(params.items()), "float32", "cpu", "unfused")
    fused = FusionCase("Conv2d_BN_ReLU", tuple(params.items()), "float32", "cpu", "library")
    return fold([], metadata(), fusion_records=[
        FusionRecord(case, latency(1.0)), FusionRecord(fused, latency(1.0 / speedup)),
    ])


def test_an_avoid_verdict_leaves_the_pattern_unfused():
    calibration = conv_calibration(0.7)
    (entry,) = calibration.fusion_profiles["Conv2d_BN_ReLU"]
    assert entry.verdict.value == "avoid"
    p = partition(basic_block().eval(), torch.randn(1, 8, 12, 12), calibration)
    assert p.histogram == {"Unfused": 3, "Conv2d_BN_Add_ReLU": 1}
    split = p.subgraphs[:3]
    assert [s.candidate for s in split] == ["Conv2d_BN_ReLU"] * 3 and not any(s.fused for s in split)
    assert all("calibrated avoid" in s.decision for s in split)
    assert all(s.internal_bytes == 0 for s in split)
    assert split[0].speedup == pytest.approx(0.7)
    # the join was never calibrated: fused, saying so
    assert p.subgraphs[3].fused and p.subgraphs[3].decision == "pattern not calibrated: fused by default"
    assert p.fused.flops == p.unfused.flops
    assert "Left unfused by the calibration" in p.report()


def test_a_fuse_verdict_keeps_the_group():
    p = partition(basic_block().eval(), torch.randn(1, 8, 12, 12), conv_calibration(1.5))
    assert p.histogram == {"Conv2d_BN_ReLU": 1, "Conv2d_BN_Add_ReLU": 1}
    assert p.subgraphs[0].decision.startswith("calibrated fuse") and p.subgraphs[0].speedup == pytest.approx(1.5)


def test_should_fuse_and_fusion_benefit():
    shape = {"N": 1, "CIN": 8, "COUT": 8, "H": 12, "W": 12, "K": 3, "STRIDE": 1}
    assert should_fuse(None, "Conv2d_BN_ReLU", shape) == (True, "no calibration given: fused by default")
    avoid = conv_calibration(0.7)
    fuse, reason = should_fuse(avoid, "Conv2d_BN_ReLU", shape)  # nearest calibrated size
    assert not fuse and "0.70x" in reason and "CIN=64" in reason
    assert should_fuse(avoid, "Add_ReLU", {"n": 100}) == (True, "pattern not calibrated: fused by default")
    assert fusion_benefit(avoid, "Conv2d_BN_ReLU", shape) == pytest.approx(0.7)
    assert fusion_benefit(avoid, "Add_ReLU", {"n": 100}) == 1.0
    assert fusion_benefit(None, "Add_ReLU", {"n": 100}) == 1.0


def test_bottleneck_needs_ceilings():
    calibration = conv_calibration(1.5).model_copy(update={"measured": conv_calibration(1.5).measured.model_copy(
        update={"compute_ceiling_gflops": {"float32": 100.0}, "bandwidth_by_level_gbps": {"DRAM": 10.0}})})
    p = partition(SharedInput().eval(), torch.randn(1, 4, 6, 6), calibration)
    assert all(s.bottleneck is not None and s.bottleneck.value == "memory" for s in p.subgraphs)
    assert all(s.bottleneck is None for s in partition(SharedInput().eval(), torch.randn(1, 4, 6, 6)).subgraphs)


# ------------------------------------------------------------------ report


def test_report_layout_and_agreeing_flops():
    p = partition(basic_block(8, 16, 2).eval(), torch.randn(1, 8, 12, 12))
    text = p.report()
    for heading in ("Before fusion (one subgraph per kernel):", "After fusion (aggregated subgraphs):",
                    "Improvements:", "Fusion patterns (", "Fused subgraphs (", "Validation:"):
        assert any(line.startswith(heading) for line in text.splitlines())
    assert "**" not in text and "###" not in text and "```" not in text  # a terminal's report
    assert f"    {p.unfused.subgraphs} subgraphs (kernels)" in text
    assert f"FLOPs: {p.total_flops} before fusion == {p.total_flops} after" in text
    assert "Conv2d_BN_Add_ReLU:" in text and "of intermediates the separate kernels write and read back" in text
    assert "stays in cache" not in text
    markdown = render_report(p, markdown=True)
    for heading in ("**Before fusion (one subgraph per kernel):**", "**Fused subgraphs (", "```"):
        assert heading in markdown
    assert markdown.startswith("### ")


def test_report_lists_every_fused_subgraph_and_names_the_single_kernels():
    model, x = models.MODELS["resnet18"]().eval(), models.example_input("resnet18")
    p = partition(model, x)
    text = p.report()
    fused = [s for s in p.subgraphs if s.fused]
    assert len(fused) == 20 and all(f"(subgraph {s.index}):" in text for s in fused)  # not the top 5 only
    assert "Single kernels (2):" in text
    assert "subgraph 20: avgpool (adaptive_avg_pool2d): no registered pattern starts here" in text
    assert "subgraph 21: fc (linear): no registered pattern starts here" in text
    top = render_report(p, top=3)
    assert "Fused subgraphs (20, the 3 that save the most; by traffic saved):" in top
    assert "... 17 more (without --top: all)" in top


def test_what_the_calibration_left_unfused_says_which_speedup_at_which_size():
    p = partition(basic_block().eval(), torch.randn(1, 8, 12, 12), conv_calibration(0.7))
    text = p.report()
    heading = text.index("Left unfused by the calibration")
    line = next(line for line in text[heading:].splitlines() if "Conv2d_BN_ReLU:" in line)
    assert "calibrated avoid" in line and "0.70x at N=1, CIN=64" in line and line.endswith("(3 kernels)")


def test_partition_command_prints_text_and_takes_top_and_format(capsys):
    from calibration.cli import main

    assert main(["partition", "--model", "mlp", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Sequential: fusion partition (traced with fx)\n") and "**" not in out
    assert "Fused subgraphs (2, the 1 that save the most; by traffic saved):" in out
    assert main(["partition", "--model", "mlp", "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("### Sequential")
    with pytest.raises(SystemExit) as exc:
        main(["partition", "--model", "mlp", "--top", "0"])
    assert exc.value.code == 2 and "--top must be a positive integer, got '0'" in capsys.readouterr().err


# ------------------------------------------------------------------ the reference models

GEMMS = ("conv2d", "linear", "matmul")


@pytest.mark.parametrize("name, histogram, kernels, biases", [
    ("resnet18", {"Conv2d_BN_ReLU": 8, "Conv2d_BN_Add_ReLU": 8, "Conv2d_BN": 3, "Unfused": 2,
                  "Conv2d_BN_ReLU_MaxPool": 1}, 68, 1000),
    ("mobilenet_v2", {"Conv2d_BN_ReLU6": 18, "DWConv2d_BN_ReLU6": 17, "Conv2d_BN": 17, "Unfused": 12}, 151, 1000),
    ("bert_layer", {"Unfused": 6, "Add_LayerNorm": 2, "Attention": 1, "Linear_Bias_GELU": 1}, 16,
     128 * (4 * 768 + 3072 + 768)),
    ("mlp", {"Linear_Bias_ReLU": 2, "Unfused": 1}, 5, 512 + 256 + 10),  # 784-512-256-10: no MLP pattern
])
def test_reference_models(name, histogram, kernels, biases):
    model = models.MODELS[name]().eval()
    x = models.example_input(name)
    p = partition(model, x)
    assert p.histogram == histogram
    assert p.unfused.subgraphs == kernels and p.fused.subgraphs == sum(histogram.values())
    assert p.unfused.flops == p.fused.flops == p.total_flops
    assert p.uncounted == ()
    gemm = sum(n.flops for s in p.subgraphs for n in s.nodes if n.op in GEMMS)
    assert gemm == counted_flops(model, x) + biases
    assert p.fused.bytes < p.unfused.bytes


class PermutedLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x):
        return self.fc(x.permute(0, 2, 1))


def test_a_gemm_that_copies_its_operand_counts_the_copy():
    """A Linear on a permuted activation copies it (aten.clone) before its GEMM: the partition
    counts those bytes; on a contiguous operand it counts none."""
    x = torch.randn(2, 16, 12)
    fc = by_name(partition(PermutedLinear().eval(), x))["fc"]
    assert fc.copy_bytes == x.numel() * F32
    assert by_name(partition(nn.Sequential(nn.Linear(16, 8)).eval(), torch.randn(2, 12, 16)))["_0"].copy_bytes == 0

    class Copies(nn.Module):  # a contiguous() that had to copy is a copy kernel, not a hidden copy
        def forward(self, x):
            return x.transpose(0, 1).contiguous()

    nodes = by_name(partition(Copies().eval(), torch.randn(4, 5)))
    assert nodes["contiguous"].op == "copy" and nodes["contiguous"].copy_bytes == 0


class Relaid(nn.Module):
    """A ConvNeXt-like block's layouts: a norm over permuted channels, a residual add of a
    permuted tensor; then a chunk's slices, a broadcast and contiguous operands, which read
    their operands in order."""

    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(24)

    def forward(self, x, y):
        normed = self.ln(x.permute(0, 2, 3, 1))
        mixed = y + normed.permute(0, 3, 1, 2)
        first, second = mixed.chunk(2, 1)
        gated = first * torch.sigmoid(second)
        biased = gated + torch.ones(12, 1, 1)
        return (biased, torch.softmax(y, -1), torch.softmax(second, -1), torch.softmax(x.permute(0, 2, 3, 1), -1),
                self.ln(x.permute(0, 2, 3, 1).contiguous()))


def test_an_operand_in_another_layout_than_the_kernel_runs_in_counts_a_copy():
    x, y = torch.randn(2, 24, 6, 5), torch.randn(2, 24, 6, 5)
    nodes = by_name(partition(Relaid().eval(), (x, y)))
    whole = x.numel() * F32
    # a norm or softmax makes a non-contiguous input contiguous; an add reads the permuted operand out of order
    assert nodes["ln"].copy_bytes == whole and nodes["add"].copy_bytes == whole
    assert nodes["softmax_2"].copy_bytes == whole and nodes["softmax_1"].copy_bytes == whole // 2  # a slice too
    # an elementwise op on a chunk's slices, a softmax over a contiguous tensor, a broadcast, a contiguous input: none
    assert [nodes[name].copy_bytes for name in ("softmax", "mul", "add_1", "ln_1")] == [0, 0, 0, 0]
    # and the mapper prices each copy as the STREAM copy of its bytes
    estimate = predict_latency(Relaid().eval(), (x, y), full_profile())
    priced = {k.name: k for sg in estimate.subgraphs for k in sg.kernels}
    assert priced["ln"].copy_seconds > 0 and priced["add"].copy_seconds > 0
    assert priced["ln_1"].copy_seconds == 0 and priced["mul"].copy_seconds == 0
    assert priced["ln"].seconds == pytest.approx(priced["ln_1"].seconds + priced["ln"].copy_seconds, rel=0.2)


def test_a_shape_or_dtype_the_registry_does_not_calibrate_is_fused_by_default_and_says_why():
    """The profile's queries refuse a grouped conv for Conv2d_BN_ReLU and a float64 dtype;
    a partition keeps going and names the reason in the decision."""
    cal = full_profile()
    grouped = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(8), nn.ReLU()).eval()
    (conv,) = partition(grouped, torch.randn(1, 8, 16, 16), cal).subgraphs
    assert conv.fused and "Invalid parameter 'GROUPS' for Conv2d_BN_ReLU" in conv.decision
    double = nn.Sequential(nn.Linear(16, 16), nn.ReLU()).double().eval()
    (linear,) = partition(double, torch.randn(2, 16, dtype=torch.float64), cal).subgraphs
    assert linear.fused and "Invalid dtype 'float64'" in linear.decision and linear.speedup == 1.0


@pytest.mark.parametrize(("model", "operation", "per_element"), [
    (nn.Sequential(nn.GELU(approximate="tanh")).eval(), "gelu_tanh", 9),
    (nn.Sequential(nn.GELU()).eval(), "gelu", 5),
])
def test_a_tanh_gelu_is_its_own_kernel(model, operation, per_element):
    x = torch.randn(4, 256)
    (node,) = [n for sg in partition(model, x).subgraphs for n in sg.nodes if n.kernel]
    assert (node.operation, node.params, node.flops) == (operation, {"n": 1024}, per_element * 1024)


def test_an_attention_mask_s_select_is_its_own_kernel_not_an_add():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("future", torch.ones(1, 1, 64, 64, dtype=torch.bool).triu(1))

        def forward(self, scores):
            return scores.masked_fill(self.future, -1e4) + torch.where(self.future, scores, -1e4)

    ops = [(n.operation, n.params) for sg in partition(Masked().eval(), torch.randn(2, 4, 64, 64)).subgraphs
           for n in sg.nodes if n.kernel]
    assert ops == [("masked_fill", {"n": 2 * 4 * 64 * 64}), ("where", {"n": 2 * 4 * 64 * 64}),
                   ("add", {"n": 2 * 4 * 64 * 64})]


def test_a_functional_tanh_gelu_is_the_tanh_kernel():
    class Act(nn.Module):
        def forward(self, x):
            return F.gelu(x, approximate="tanh") + F.gelu(x)

    ops = sorted(n.operation for sg in partition(Act().eval(), torch.randn(8, 64)).subgraphs for n in sg.nodes
                 if n.kernel and n.operation and n.operation.startswith("gelu"))
    assert ops == ["gelu", "gelu_tanh"]
