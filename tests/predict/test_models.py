"""The reference models: torchvision/HF structure and names, known MAC and parameter totals, fx tracing."""


import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from calibration.predict.models import (
    MODELS,
    bert_layer,
    example_input,
    mlp,
    mobilenet_v2,
    resnet18,
)

OUTPUT_FEATURES = {"resnet18": 1000, "mobilenet_v2": 1000, "bert_layer": 768, "mlp": 10}


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    return {name: build() for name, build in MODELS.items()}


def counted_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward as FlopCounterMode counts them (it reports 2 FLOPs per MAC)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


# Hand derivations, from the published architectures rather than from our modules.


def resnet18_macs() -> int:
    """conv MACs = H_out * W_out * C_out * C_in * k * k; stride-2 stages halve the side."""
    macs = 112 * 112 * 64 * 3 * 7 * 7  # conv1 7x7/2 -> 112x112 (maxpool -> 56x56)
    macs += 4 * 56 * 56 * 64 * 64 * 9  # layer1: four 3x3 convs at 56x56
    for side, width in ((28, 128), (14, 256), (7, 512)):  # layer2..4
        macs += side * side * width * (width // 2) * 9  # block 0 conv1, 3x3/2
        macs += 3 * side * side * width * width * 9  # the other three 3x3 convs
        macs += side * side * width * (width // 2)  # downsample 1x1/2
    return macs + 512 * 1000  # fc


def mobilenet_v2_macs() -> int:
    """Stem, then per InvertedResidual: 1x1 expand (t > 1), 3x3 depthwise, 1x1 project; last 1x1, fc."""
    side, channels = 112, 32
    macs = side * side * channels * 3 * 9  # stem 3x3/2
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
    for t, c, n, s in settings:  # expansion, channels, repeats, first stride
        for i in range(n):
            hidden = channels * t
            if t != 1:
                macs += side * side * channels * hidden
            side //= s if i == 0 else 1
            macs += side * side * hidden * 9 + side * side * hidden * c
            channels = c
    assert side == 7
    return macs + 7 * 7 * 320 * 1280 + 1280 * 1000


def bert_layer_macs(seq: int = 128, hidden: int = 768, heads: int = 12, intermediate: int = 3072) -> int:
    linears = 4 * seq * hidden * hidden + 2 * seq * hidden * intermediate  # q, k, v, attention out; FFN up, down
    attention = 2 * heads * seq * seq * (hidden // heads)  # Q K^T and probs V
    return linears + attention


EXPECTED_MACS = {
    "resnet18": 1_814_073_344,
    "mobilenet_v2": 300_774_272,
    "bert_layer": 931_135_488,
    "mlp": 784 * 512 + 512 * 256 + 256 * 10,
}

EXPECTED_PARAMS = {
    "resnet18": 11_689_512,
    "mobilenet_v2": 3_504_872,
    "bert_layer": 7_087_872,
    "mlp": (784 * 512 + 512) + (512 * 256 + 256) + (256 * 10 + 10),
}


def test_hand_derivations_match_the_known_totals():
    assert resnet18_macs() == EXPECTED_MACS["resnet18"]
    assert mobilenet_v2_macs() == EXPECTED_MACS["mobilenet_v2"]
    assert bert_layer_macs() == EXPECTED_MACS["bert_layer"] == 301_989_888 + 603_979_776 + 25_165_824
    assert EXPECTED_MACS["mlp"] == 535_040
    # The headline figures. ResNet-18's conv+fc count is 1.814 G, which rounds to 1.81 (torchvision's
    # table says 1.81 "GFLOPS", meaning MACs); the "1.82 GMac" seen elsewhere also counts BN, ReLU and
    # pooling elements (conv1's BN alone is 0.8 M), which FlopCounterMode does not.
    assert round(EXPECTED_MACS["resnet18"] / 1e9, 2) == 1.81
    assert round(EXPECTED_MACS["mobilenet_v2"] / 1e9, 2) == 0.30
    hidden, inter = 768, 3072
    bert_params = 4 * (hidden * hidden + hidden) + (hidden * inter + inter) + (inter * hidden + hidden) + 2 * 2 * hidden
    assert bert_params == EXPECTED_PARAMS["bert_layer"]
    assert EXPECTED_PARAMS["mlp"] == 535_818


@pytest.mark.parametrize("name", list(MODELS))
def test_flop_counter_agrees_with_the_hand_count(built, name):
    assert counted_macs(built[name], example_input(name)) == EXPECTED_MACS[name]


@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_count(built, name):
    assert sum(p.numel() for p in built[name].parameters()) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", list(MODELS))
def test_eval_mode_and_output_shape(built, name):
    model = built[name]
    assert not any(m.training for m in model.modules())
    x = example_input(name, batch=2)
    with torch.no_grad():
        y = model(x)
    expected = (2, 128, 768) if name == "bert_layer" else (2, OUTPUT_FEATURES[name])
    assert tuple(y.shape) == expected
    assert torch.isfinite(y).all()


def test_example_inputs():
    assert example_input("resnet18").shape == (1, 3, 224, 224)
    assert example_input("mobilenet_v2", batch=4).shape == (4, 3, 224, 224)
    assert example_input("bert_layer", batch=2).shape == (2, 128, 768)
    assert example_input("mlp").shape == (1, 784)
    assert example_input("mlp").dtype == torch.float32
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        example_input("vgg")


@pytest.mark.parametrize("name", list(MODELS))
def test_fx_symbolic_trace_runs_like_the_module(built, name):
    model = built[name]
    traced = torch.fx.symbolic_trace(model)
    x = example_input(name, batch=2)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))


def test_fx_sees_the_attention_ops(built):
    targets = [n.target for n in torch.fx.symbolic_trace(built["bert_layer"]).graph.nodes]
    assert targets.count(torch.matmul) == 2
    assert F.softmax in targets
    assert "attention.self.query" in targets and "output.LayerNorm" in targets


def test_bert_attention_mask(built):
    """An additive mask hiding keys 64.. makes the first 64 positions what the 64-token prefix alone gives."""
    model = built["bert_layer"]
    x = example_input("bert_layer")
    mask = torch.zeros(1, 1, 1, 128)
    mask[..., 64:] = torch.finfo(torch.float32).min
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        masked = model(x, mask)
        assert torch.equal(traced(x, mask), masked)
        torch.testing.assert_close(masked[:, :64], model(x[:, :64]))
        assert not torch.allclose(masked, model(x))


def test_bert_layer_matches_an_independent_formula(built):
    """The layer recomputed from its weights with F.scaled_dot_product_attention and functional ops."""
    model = built["bert_layer"]
    sd = model.state_dict()
    x = example_input("bert_layer", batch=2)

    def heads(t):
        return t.unflatten(-1, (12, 64)).transpose(1, 2)

    def lin(name, t):
        return F.linear(t, sd[name + ".weight"], sd[name + ".bias"])

    def norm(name, t):
        return F.layer_norm(t, (768,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-12)

    q, k, v = (heads(lin(f"attention.self.{p}", x)) for p in ("query", "key", "value"))
    context = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
    attn = norm("attention.output.LayerNorm", lin("attention.output.dense", context) + x)
    ffn = lin("output.dense", F.gelu(lin("intermediate.dense", attn)))
    expected = norm("output.LayerNorm", ffn + attn)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


TORCHVISION_KEYS = {
    "resnet18": [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer1.1.bn2.num_batches_tracked",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "layer4.1.conv2.weight",
        "fc.weight",
        "fc.bias",
    ],
    "mobilenet_v2": [
        "features.0.0.weight",
        "features.0.1.running_mean",
        "features.1.conv.0.0.weight",  # t=1 block: dw Conv2dNormActivation first
        "features.1.conv.1.weight",  # then the pw-linear conv
        "features.1.conv.2.running_var",  # and its BN
        "features.2.conv.0.0.weight",  # t=6 blocks: pw expand, dw, pw-linear, BN
        "features.2.conv.3.bias",
        "features.17.conv.2.weight",
        "features.18.0.weight",
        "features.18.1.bias",
        "classifier.1.weight",
    ],
    "bert_layer": [
        "attention.self.query.weight",
        "attention.self.value.bias",
        "attention.output.dense.weight",
        "attention.output.LayerNorm.weight",
        "intermediate.dense.weight",
        "output.dense.bias",
        "output.LayerNorm.bias",
    ],
}


@pytest.mark.parametrize("name", list(TORCHVISION_KEYS))
def test_state_dict_names(built, name):
    keys = built[name].state_dict().keys()
    assert set(TORCHVISION_KEYS[name]) <= set(keys)


def test_resnet18_structure(built):
    model = built["resnet18"]
    assert model.layer1[0].downsample is None
    for stage in (model.layer2, model.layer3, model.layer4):
        assert stage[0].downsample[0].stride == (2, 2) and stage[1].downsample is None
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)


def test_mobilenet_v2_structure(built):
    features = built["mobilenet_v2"].features
    assert len(features) == 19
    blocks = list(features)[1:18]
    assert [len(b.conv) for b in blocks] == [3] + [4] * 16
    # residual where stride 1 and width unchanged: the 2nd.. blocks of each repeated stage
    assert [i for i, b in enumerate(blocks, 1) if b.use_res_connect] == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    assert all(isinstance(m, nn.ReLU6) for m in features.modules() if isinstance(m, (nn.ReLU, nn.ReLU6)))
    dw = features[2].conv[1][0]
    assert dw.groups == dw.in_channels == 96 and dw.stride == (2, 2)
    assert isinstance(built["mobilenet_v2"].classifier[0], nn.Dropout)


def test_num_classes_and_mlp_widths():
    assert resnet18(num_classes=10).fc.out_features == 10
    assert mobilenet_v2(num_classes=7).classifier[1].out_features == 7
    model = mlp(in_features=32, hidden=(16, 8, 4), num_classes=3)
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [16, 8, 4, 3]
    assert sum(isinstance(m, nn.ReLU) for m in model) == 3
    assert bert_layer(hidden=64, heads=4, intermediate=128)(torch.randn(1, 5, 64)).shape == (1, 5, 64)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_weights_load_strictly_and_agree(name):
    tv_models = pytest.importorskip("torchvision.models")
    torch.manual_seed(1)
    reference = getattr(tv_models, name)().eval()
    ours = MODELS[name]()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = example_input(name, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def test_huggingface_bert_layer_weights_load_strictly_and_agree():
    bert = pytest.importorskip("transformers.models.bert.modeling_bert")
    torch.manual_seed(1)
    reference = bert.BertLayer(bert.BertConfig()).eval()
    ours = bert_layer()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = example_input("bert_layer", batch=2)
    with torch.no_grad():
        expected = reference(x)
    expected = expected[0] if isinstance(expected, tuple) else expected
    with torch.no_grad():
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4)
