"""FLOP and byte models against hand counts and torch's FlopCounterMode."""

import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from calibration.measure.kernels import (
    DTYPES,
    PROBE_MODULES,
    AfterBusyKernel,
    RereadKernel,
    build,
    dtype_unsupported_reason,
)
from calibration.predict.plan import partition
from calibration.specs import host
from calibration.specs.operations import (
    ELEMENTWISE_FLOPS,
    FAMILIES,
    MODULE_PROBES,
    OPERATIONS,
    Case,
    resolve_selection,
)


def case(operation: str, dtype: str = "float32", **params) -> Case:
    return Case(operation, tuple(params.items()), dtype, "cpu")


def counted_flops(kernel) -> int:
    with FlopCounterMode(display=False) as counter:
        kernel()
    return counter.get_total_flops()


# ------------------------------------------------------------------ hand counts


def test_matmul_square_hand_count():
    c = case("matmul", M=1024, K=1024, N=1024, path="aten")
    assert c.flops == 2 * 1024**3 == 2_147_483_648
    assert c.bytes == 3 * 1024 * 1024 * 4 == 12_582_912


def test_matmul_skinny_hand_count():
    c = case("matmul", M=64, K=4096, N=1024, path="aten")
    assert c.flops == 2 * 64 * 4096 * 1024 == 536_870_912
    assert c.bytes == (64 * 4096 + 4096 * 1024 + 64 * 1024) * 4 == 18_087_936


def test_bfloat16_halves_the_bytes_not_the_flops():
    f32 = case("matmul", M=256, K=256, N=256, path="aten")
    bf16 = case("matmul", "bfloat16", M=256, K=256, N=256, path="aten")
    assert bf16.flops == f32.flops
    assert bf16.bytes * 2 == f32.bytes


def test_linear_counts_the_bias_add():
    c = case("linear", B=128, IN=768, OUT=3072)
    assert c.flops == 2 * 128 * 768 * 3072 + 128 * 3072 == 604_372_992
    assert c.bytes == (128 * 768 + 3072 * 768 + 3072 + 128 * 3072) * 4 == 11_415_552


def test_conv_resnet_stem_hand_count():
    # 7x7/2 stem on 224x224: 112x112 outputs, 3*7*7 = 147 MACs each per output channel.
    c = case("conv2d", N=1, CIN=3, COUT=64, H=224, W=224, K=7, STRIDE=2, PAD=3, GROUPS=1)
    assert c.flops == 2 * 64 * 112 * 112 * 147 == 236_027_904
    assert c.bytes == (3 * 224 * 224 + 64 * 3 * 49 + 64 * 112 * 112) * 4


def test_depthwise_conv_hand_count():
    c = case("conv2d", N=1, CIN=144, COUT=144, H=56, W=56, K=3, STRIDE=2, PAD=1, GROUPS=144)
    assert c.flops == 2 * 144 * 28 * 28 * 9 == 2_032_128
    assert c.bytes == (144 * 56 * 56 + 144 * 9 + 144 * 28 * 28) * 4


def test_stream_bytes_follow_the_stream_convention():
    n = 1 << 20
    assert case("stream_copy", n=n).bytes == 2 * 4 * n
    assert case("stream_scale", n=n).bytes == 2 * 4 * n
    assert case("stream_add", n=n).bytes == 3 * 4 * n
    assert case("stream_triad", n=n).bytes == 3 * 4 * n
    assert case("stream_copy", n=n).flops == 0
    assert case("stream_triad", n=n).flops == 2 * n


def test_elementwise_counts():
    n = 1000
    assert case("add", n=n).bytes == 3 * 4 * n
    assert case("relu", n=n).bytes == 2 * 4 * n
    assert case("gelu", n=n).flops == ELEMENTWISE_FLOPS["gelu"] * n
    assert case("dispatch", n=1).flops == 1
    assert case("dispatch", n=1).bytes == 12
    # tanh form: cube 2, scale and add 2, scale 1, tanh 1, add 1, times x 1, times a half 1
    assert case("gelu_tanh", n=n).flops == 9 * n and case("gelu_tanh", n=n).bytes == 2 * 4 * n


def test_the_tanh_gelu_kernel_is_torch_s_tanh_approximation():
    from calibration.measure import kernels

    run = kernels.build(Case("gelu_tanh", (("n", 4096),), "float32", "cpu"))
    out = run()
    x = run.__closure__  # the builder's operands: (args, kernel, out)
    (args,) = [c.cell_contents for c in x if isinstance(c.cell_contents, list)]
    torch.testing.assert_close(out, torch.nn.functional.gelu(args[0], approximate="tanh"))
    assert not torch.allclose(out, torch.nn.functional.gelu(args[0]), rtol=0, atol=1e-7)  # not the erf form


@pytest.mark.parametrize("operation", ["masked_fill", "where"])
def test_a_masked_select_moves_its_mask_s_bytes_and_runs_torch_s_op(operation):
    n = 4096
    assert case(operation, n=n).bytes == (4 + 1 + 4) * n and case(operation, n=n).flops == n
    assert case(operation, dtype="bfloat16", n=n).bytes == (2 + 1 + 2) * n
    from calibration.measure import kernels

    run = kernels.build(Case(operation, (("n", n),), "float32", "cpu"))
    out = run()
    operands = [c.cell_contents for c in run.__closure__ if isinstance(c.cell_contents, torch.Tensor)]
    # the builder's input: the float array of n that is not the output
    (x,) = [t for t in operands if t.dtype == torch.float32 and t.numel() == n and t is not out]
    mask = kernels.causal_mask(n, torch.device("cpu"))
    lowest = torch.finfo(torch.float32).min
    expected = x.masked_fill(mask, lowest) if operation == "masked_fill" else torch.where(mask, x, lowest)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_the_masked_ops_are_timed_with_a_causal_mask():
    from calibration.measure.kernels import causal_mask

    rows = causal_mask(256 * 256, torch.device("cpu")).view(256, 256)
    assert torch.equal(rows, torch.ones(256, 256, dtype=torch.bool).triu(1))  # the future of each row
    # rows of at most 256, repeated: a 4096-element mask is 64-wide rows' causal mask
    small = causal_mask(4096, torch.device("cpu")).view(64, 64)
    assert torch.equal(small, torch.ones(64, 64, dtype=torch.bool).triu(1))
    assert torch.equal(causal_mask(512 * 256, torch.device("cpu")).view(2, 256, 256)[1], rows)


def test_norm_and_softmax_counts():
    assert case("softmax", ROWS=10, COLS=20).bytes == 2 * 200 * 4
    assert case("layernorm", ROWS=10, COLS=20).bytes == (2 * 200 + 2 * 20) * 4
    assert case("batchnorm", N=1, C=8, H=4, W=4).bytes == (2 * 128 + 4 * 8) * 4
    assert case("batchnorm", N=1, C=8, H=4, W=4).flops == 2 * 128


def test_pool_counts():
    # ResNet max pool 3x3/2 pad 1 on 112x112 -> 56x56; the eager kernel writes int64 indices.
    mp = case("maxpool", N=1, C=64, H=112, W=112, K=3, STRIDE=2, PAD=1)
    outputs = 64 * 56 * 56
    assert mp.flops == outputs * 8
    assert mp.bytes == 64 * 112 * 112 * 4 + outputs * (4 + 8)
    ap = case("avgpool", N=1, C=512, H=7, W=7, K=7, STRIDE=7, PAD=0)
    assert ap.flops == 512 * 49
    assert ap.bytes == (512 * 49 + 512) * 4
    gp = case("global_avgpool", N=2, C=512, H=7, W=7)  # ResNet's head: one 49-element mean per channel
    assert gp.flops == 2 * 512 * 49
    assert gp.bytes == (2 * 512 * 49 + 2 * 512) * 4


# ------------------------------------------------------------------ FlopCounterMode

GEMM_LIKE = [
    case("matmul", M=64, K=96, N=32, path="aten"),
    case("bmm", BATCH=3, M=16, K=8, N=24),
    case("conv2d", N=1, CIN=8, COUT=16, H=20, W=20, K=3, STRIDE=1, PAD=1, GROUPS=1),
    case("conv2d", N=2, CIN=8, COUT=16, H=20, W=20, K=3, STRIDE=2, PAD=1, GROUPS=1),
    case("conv2d", N=1, CIN=8, COUT=8, H=14, W=14, K=3, STRIDE=1, PAD=1, GROUPS=8),
    case("conv2d", N=1, CIN=8, COUT=4, H=14, W=14, K=1, STRIDE=1, PAD=0, GROUPS=1),
]


@pytest.mark.parametrize("c", GEMM_LIKE, ids=lambda c: c.key)
def test_gemm_and_conv_flops_match_flop_counter(c):
    assert c.flops == counted_flops(build(c))


def test_linear_flops_are_flop_counter_plus_bias():
    c = case("linear", B=4, IN=32, OUT=16)
    assert c.flops == counted_flops(build(c)) + 4 * 16


@pytest.mark.parametrize("path", ["mkldnn", "mkldnn_packed"])
def test_onednn_matmul_paths_compute_the_same_product(path):
    # the builder asserts the product against torch.mm before returning the kernel
    kernel = build(case("matmul", M=32, K=64, N=48, path=path))
    assert kernel() is not None


# ------------------------------------------------------------------ every registered case


QUICK_TRIAD_ONLY = ("stream_copy", "stream_scale", "stream_add")


def test_a_quick_run_times_stream_s_triad_alone_at_dram_size():
    # each STREAM array is 4x the LLC: copy, scale and add there were 12-16 s of a quick run
    assert [c.param_dict["n"] for c in OPERATIONS["stream_triad"].cases(quick=True, device="cpu")][-1] == \
        host.stream_elements()
    for name in QUICK_TRIAD_ONLY:
        assert OPERATIONS[name].cases(quick=True, device="cpu") == []
        full = OPERATIONS[name].cases(quick=False, device="cpu")
        assert [c.param_dict["n"] for c in full] == [host.stream_elements()]


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_operation_builds_runs_and_counts(name):
    op = OPERATIONS[name]
    for quick in (True, False):
        cases = op.cases(quick=quick, device="cpu")
        if quick and name in QUICK_TRIAD_ONLY:
            assert cases == []  # a quick run's DRAM ceiling is the triad's
            continue
        assert cases, f"{name} has no {'quick' if quick else 'full'} cases"
        for c in cases:
            # a view probe (after_busy) moves no data: its bytes are truly zero
            assert c.flops >= 0 and (c.bytes > 0 or c.param_dict.get("probe") == "view")
            assert c.key.startswith(f"{name}[") and c.key.endswith("/cpu")
    smallest = min(op.cases(quick=name not in QUICK_TRIAD_ONLY, device="cpu"), key=lambda c: c.bytes)
    if dtype_unsupported_reason(smallest.dtype, "cpu") is None and smallest.bytes < 64 << 20:
        build(smallest)()


@pytest.mark.parametrize("name", sorted(MODULE_PROBES))
def test_each_module_probe_times_the_kernel_its_module_runs(name):
    """The partitioner sees the probe's module as the registry kernel the probe's twin times."""
    probe = MODULE_PROBES[name]
    module = PROBE_MODULES[name]()
    assert type(module).__name__ == name
    (node,) = [n for sg in partition(torch.nn.Sequential(module).eval(), torch.randn(probe.input_shape)).subgraphs
               for n in sg.nodes if n.kernel]
    assert (node.kind, node.module, node.operation, node.params) == ("call_module", name, probe.operation,
                                                                      probe.params)
    x = torch.randn(probe.input_shape)
    with torch.no_grad():
        assert build(case("module_call", module=name, form="module"))().shape == module.eval()(x).shape
    assert case("module_call", module=name, form="kernel").flops == OPERATIONS[probe.operation].flops(probe.params)


def test_module_call_names_the_probes_it_has():
    with pytest.raises(ValueError, match="no module-call probe for 'Conv3d'; probed: Conv2d"):
        build(case("module_call", module="Conv3d", form="module"))
    with pytest.raises(ValueError, match=r"form must be one of \('module', 'kernel'\), got 'eager'"):
        build(case("module_call", module="Conv2d", form="eager"))


def test_quick_is_a_small_subset():
    for op in OPERATIONS.values():
        if op.name in ("after_evict", "after_wait"):
            # one tiny call per op kind, not a shape grid: a mapper keys a forward's calls by
            # kind, so a quick run times them all (15 cases in 1.6 s here); the waits, 7 cases
            # in 3 s, are one curve a forward's time is read off
            assert op.shapes(True) == op.shapes(False)
            continue
        # the triad sweep: a point per cache level, one at the LLC's own rate, and DRAM;
        # after_busy: two probes after each of three matmuls
        most = {"stream_triad": 5, "after_busy": 6}.get(op.name, 4)
        assert len(op.shapes(True)) <= most
        assert len(op.shapes(True)) <= len(op.shapes(False))


def test_the_conv_grid_has_narrow_3x3_convs_on_cifar_scale_maps():
    # without them a 32-channel 3x3 on a 32x32 map was fitted from 112x112 and 7x7 neighbours
    # and predicted 25% fast; a 64-channel one on 7x7 had a leave-one-out error of -63%
    small = {(p["CIN"], p["H"]) for p in OPERATIONS["conv2d"].shapes(False)
             if p["K"] == 3 and p["GROUPS"] == 1 and p["STRIDE"] == 1 and p["N"] == 1 and 8 <= p["H"] <= 32}
    assert {(16, 32), (32, 16), (64, 8)} <= small


def test_full_set_spans_sizes():
    assert len(OPERATIONS["matmul"].shapes(False)) >= 8
    assert len(OPERATIONS["conv2d"].shapes(False)) >= 5


def test_keys_are_unique():
    keys = [c.key for op in OPERATIONS.values() for c in op.cases(quick=False, device="cpu")]
    assert len(keys) == len(set(keys))


def test_stream_arrays_are_four_times_the_last_level_cache(monkeypatch):
    monkeypatch.setattr(host, "cache_sizes", lambda: {"L1": 32 << 10, "L2": 512 << 10, "L3": 32 << 20})
    n = host.stream_elements()
    assert n * 4 >= 4 * (32 << 20)
    monkeypatch.setattr(host, "usable_cpus", lambda: 2)
    # per level the largest triad in half of it, and the smallest clear of two 512 KiB L2s (3 MiB)
    assert host.triad_sweep_elements(quick=True) == (1024, 16384, 1 << 18, 1 << 20, n)
    full = host.triad_sweep_elements(quick=False)
    assert full[0] == 1024 and full[-1] == n and len(full) >= 6


def test_a_quick_sweep_has_a_point_at_the_llc_s_rate_below_half_of_it(monkeypatch):
    # the 480 MiB-L3 Xeon: half the L3 is 192 MiB of triad, past what its share holds
    monkeypatch.setattr(host, "cache_sizes", lambda: {"L1": 48 << 10, "L2": 2 << 20, "L3": 480 << 20})
    monkeypatch.setattr(host, "usable_cpus", lambda: 2)
    quick = host.triad_sweep_elements(quick=True)
    assert (1 << 20) in quick and (1 << 24) in quick  # 12 MiB, clear of two 2 MiB L2s; 192 MiB
    assert 12 * (1 << 19) < 2 * 2 * (2 << 20) <= 12 * (1 << 20)  # the smallest power of two clear of them


def test_dtype_support_reasons():
    assert dtype_unsupported_reason("float32", "cpu") is None
    assert "CUDA" in dtype_unsupported_reason("tf32", "cpu")
    assert "unknown dtype" in dtype_unsupported_reason("float8", "cpu")
    assert set(DTYPES) >= {"float32", "bfloat16", "float16", "tf32"}


def test_selection_by_family_and_name():
    assert resolve_selection(["memory"]) == set(FAMILIES["memory"])
    assert resolve_selection(["matmul", "relu"]) == {"matmul", "relu"}
    assert resolve_selection(["all"]) == set(OPERATIONS)
    with pytest.raises(ValueError, match="unknown operation or family 'convv'.*families:"):
        resolve_selection(["convv"])


def test_fill_reuses_its_output_and_fill_fresh_allocates_one_each_call():
    n = 1024
    fill, fresh = case("fill", n=n), case("fill_fresh", n=n)
    assert fill.bytes == fresh.bytes == n * 4 and fill.flops == fresh.flops == 0
    reuse = build(fill)
    assert reuse().data_ptr() == reuse().data_ptr()
    alloc = build(fresh)
    first = alloc()
    assert alloc().data_ptr() != first.data_ptr()  # the first is still alive: a new block
    assert resolve_selection(["alloc"]) == {"fill", "fill_fresh"}
    # the sweep brackets glibc's 32 MiB mmap threshold, in quick runs too
    quick = sorted(p["n"] * 4 for p in OPERATIONS["fill_fresh"].shapes(True))
    assert quick[0] < 32 << 20 < quick[-1]


def test_a_cold_twin_counts_and_runs_what_its_warm_twin_does():
    from calibration.measure.kernels import ColdKernel
    from calibration.specs.operations import COLD_TWINS, NOT_COLD

    for warm_name, cold_name in COLD_TWINS.items():
        warm, cold = OPERATIONS[warm_name], OPERATIONS[cold_name]
        # every warm shape but those of the variants whose few KB a flush costs nothing per byte
        kept = tuple(p for p in warm.shapes(False) if not NOT_COLD.intersection(warm.variant(p)))
        assert cold.family == "cold" and cold.shapes(False) == kept and len(kept) > len(warm.shapes(False)) // 2
        for params in warm.shapes(True):
            assert cold.flops(params) == warm.flops(params)
            assert cold.bytes_moved(params, 4) == warm.bytes_moved(params, 4)
        assert all(c.device == "cpu" for c in cold.cases(quick=True, device="cpu"))
        assert cold.cases(quick=True, device="cuda") == []  # the eviction is a CPU cache's
    params = {"N": 1, "CIN": 8, "COUT": 16, "H": 10, "W": 10, "K": 3, "STRIDE": 1, "PAD": 1, "GROUPS": 1}
    kernel = build(Case("conv2d_cold", tuple(params.items()), "float32", "cpu"))
    assert isinstance(kernel, ColdKernel) and kernel.activation.shape == (1, 8, 10, 10)
    assert kernel.flush.numel() * 4 >= 2 * (host.last_level_cache() or 32 << 20)  # twice the LLC rewritten
    before = kernel.flush.clone()
    kernel.prepare()
    assert torch.equal(kernel.flush, before + 1)  # every element written
    assert kernel().shape == (1, 16, 10, 10)


def test_a_cold_twin_s_warm_call_is_its_third_in_a_row_and_only_that_one_is_timed():
    kernel = build(Case("linear_cold", (("B", 2), ("IN", 16), ("OUT", 8)), "float32", "cpu"))
    calls, run = [], kernel.run

    def counted():
        calls.append(time.perf_counter())
        return run()

    kernel.run = counted
    began = time.perf_counter()
    seconds = kernel.time_warm()
    assert len(calls) == 3 and 0 < seconds <= time.perf_counter() - calls[2]
    assert seconds < time.perf_counter() - began


def test_cold_cases_in_a_row_share_one_flush_buffer_given_back_after_them():
    from calibration.measure import kernels

    linear = build(Case("linear_cold", (("B", 2), ("IN", 16), ("OUT", 8)), "float32", "cpu"))
    conv = build(Case("conv2d_cold", (("N", 1), ("CIN", 4), ("COUT", 4), ("H", 8), ("W", 8), ("K", 3), ("STRIDE", 1),
                                      ("PAD", 1), ("GROUPS", 1)), "float32", "cpu"))
    assert conv.flush is linear.flush and kernels._flush_buffers
    build(Case("relu", (("n", 64),), "float32", "cpu"))
    assert not kernels._flush_buffers  # the next family's case releases it


def test_a_cold_case_runs_one_call_per_round_after_evicting():
    from calibration.measure import harness

    class Recorder:
        enabled = True
        group = None
        extra_info: dict = {}

        def pedantic(self, target, setup, rounds, iterations, warmup_rounds):
            self.args = (setup, rounds, iterations)
            for _ in range(rounds + warmup_rounds):
                setup()
                target()
            self.stats = type("S", (), {"stats": type("T", (), dict(
                median=1e-3, iqr=1e-4, min=9e-4, mean=1e-3, stddev=1e-4, rounds=rounds, data=[1e-3] * rounds))()})()

    prepared = []
    params = {"B": 2, "IN": 16, "OUT": 8}
    kernel = build(Case("linear_cold", tuple(params.items()), "float32", "cpu"))
    kernel.prepare = lambda: prepared.append(1)
    bench = Recorder()
    budget = harness.Budget(seconds=10.0, min_rounds=7)
    latency, warm_ms = harness.time_prepared(bench, kernel, budget=budget)
    setup, rounds, iterations = bench.args
    assert iterations == 1 and rounds == budget.prepared_rounds and len(prepared) == rounds + 1
    # a quick run's cold cases take fewer rounds (each rewrites twice the LLC first)
    assert harness.Budget.for_run(quick=True).prepared_rounds < harness.Budget.for_run(quick=False).prepared_rounds
    from calibration.specs.operations import COLD_CONTEXT

    # the entry says its warm twin was the third call: a mapper takes that twin as warm
    assert latency.median_ms == pytest.approx(1.0) and latency.source == COLD_CONTEXT
    assert 0 < warm_ms < 100  # the same tiny linear, timed hot in each round's setup


@pytest.mark.parametrize("probe", ["view", "relu_inplace", "add", "batch_norm"])
def test_an_after_busy_case_runs_its_probe_after_a_timed_matmul(probe):
    kernel = build(case("after_busy", N=64, probe=probe))
    assert isinstance(kernel, AfterBusyKernel)
    assert kernel.preceding_ms() is None  # nothing ran before a call yet
    kernel.prepare()
    kernel.prepare()
    assert len(kernel.busy_seconds) == 2 and kernel.preceding_ms() > 0
    assert kernel.time_warm() > 0
    out = kernel()
    assert out.shape in {(1, 64 * 56 * 56), (1, 64, 56, 56)}
    assert kernel.context.startswith("after a busy kernel")


def test_an_after_busy_case_names_a_probe_it_has_not():
    with pytest.raises(ValueError, match=r"probe 'gelu'; probes: view, relu_inplace, add, batch_norm"):
        build(case("after_busy", N=64, probe="gelu"))
    with pytest.raises(ValueError, match="probe 'gelu'"):
        _ = case("after_busy", N=64, probe="gelu").bytes


def test_the_stream_kernels_of_one_size_share_their_arrays_and_give_them_up_after():
    from calibration.measure import kernels

    copy = kernels.build(Case("stream_copy", (("n", 4096),), "float32", "cpu"))
    triad = kernels.build(Case("stream_triad", (("n", 4096),), "float32", "cpu"))
    (a, b, c), = kernels._stream_arrays.values()
    copy()
    assert torch.equal(a, b)  # a = b
    triad()
    assert torch.allclose(a, b + 3.0 * c)  # a = b + s * c, on the same arrays
    kernels.build(Case("stream_triad", (("n", 8192),), "float32", "cpu"))
    assert list(kernels._stream_arrays) == [(8192, "float32", "cpu")]  # one size held at a time
    kernels.build(Case("relu", (("n", 1024),), "float32", "cpu"))
    assert kernels._stream_arrays == {}  # past the STREAM cases


def test_a_full_sweep_has_every_power_of_two_the_llc_s_capacity_is_read_off(monkeypatch):
    # the 480 MiB-L3 Xeon: powers of four put one point (192 MiB) between its L3's rate and DRAM's
    monkeypatch.setattr(host, "cache_sizes", lambda: {"L1": 48 << 10, "L2": 2 << 20, "L3": 480 << 20})
    monkeypatch.setattr(host, "usable_cpus", lambda: 2)
    full = host.triad_sweep_elements(quick=False)
    working_sets_mib = [12 * n >> 20 for n in full if 12 * n >= 8 << 20 and 12 * n <= 960 << 20]
    assert working_sets_mib == [12, 24, 48, 96, 192, 384, 768]
    assert full[0] == 1024 and full == tuple(sorted(set(full)))


def test_reread_points_are_multiples_of_the_private_caches_around_a_gemv_of_a_quarter_of_them(monkeypatch):
    # the 2-vCPU Xeon: 2 MiB of L2 a core, 4 MiB over the two
    monkeypatch.setattr(host, "cache_sizes", lambda: {"L1": 48 << 10, "L2": 2 << 20, "L3": 480 << 20})
    monkeypatch.setattr(host, "usable_cpus", lambda: 2)
    private = 4 << 20
    assert host.private_cache_bytes(host.cache_sizes(), 2) == private
    full = OPERATIONS["reread"].cases(quick=False, device="cpu")
    assert [c.param_dict["between"] for c in full] == [private // 8, private // 4, private // 2, private,
                                                       2 * private, 4 * private]
    assert {(c.param_dict["IN"], c.param_dict["OUT"]) for c in full} == {(512, 512)}  # 1 MiB of weights
    quick = [c.param_dict["between"] for c in OPERATIONS["reread"].cases(quick=True, device="cpu")]
    assert set(quick) <= {c.param_dict["between"] for c in full} and max(quick) == 4 * private
    assert OPERATIONS["reread"].cases(quick=False, device="cuda") == []
    # 8 cores of 1 MiB: 2 MiB of weights
    monkeypatch.setattr(host, "cache_sizes", lambda: {"L1": 32 << 10, "L2": 1 << 20, "L3": 32 << 20})
    monkeypatch.setattr(host, "usable_cpus", lambda: 8)
    assert {(c.param_dict["OUT"], c.param_dict["between"]) for c in OPERATIONS["reread"].cases(quick=True, device="cpu")
            } == {(1024, m << 20) for m in (4, 8, 16, 32)}
    assert host.private_cache_bytes({"L3": 32 << 20}, 2) is None


def test_a_reread_case_reads_its_bytes_before_each_timed_gemv():
    kernel = build(case("reread", IN=64, OUT=64, between=1 << 16))
    assert isinstance(kernel, RereadKernel)
    assert kernel.other.numel() * 4 == 1 << 16
    kernel.prepare()
    assert kernel().shape == (1, 64) and kernel.time_warm() > 0
    assert kernel.context.startswith("re-read")
    with pytest.raises(ValueError, match="'between' is the bytes read between calls, >= 0; got -1"):
        build(case("reread", IN=64, OUT=64, between=-1))


def test_a_quick_run_times_the_view_probe_after_a_short_matmul_a_long_one_and_one_between():
    # with the long one alone a mapper scaled its point down to zero below it, where a call
    # after a few-us kernel still pays about a microsecond; without the one between, it drew
    # a line across the step the full grid shows between N=256 and N=384
    quick = OPERATIONS["after_busy"].shapes(True)
    assert {p["N"] for p in quick if p["probe"] == "view"} == {64, 256, 768}
    assert {p["N"] for p in quick if p["probe"] == "batch_norm"} == {64, 256, 768}
    assert {p["N"] for p in OPERATIONS["after_busy"].shapes(False)} >= {64, 256, 768}
