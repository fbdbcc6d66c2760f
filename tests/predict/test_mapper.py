"""The mapper's maths on synthetic profiles, against hand-computed latencies."""

import math

import pytest
import torch
from factories import latency, metadata, record
from torch import nn

from calibration.measure.fold import FusionRecord, fold
from calibration.predict import allocator
from calibration.predict.mapper import CPUMapper, evicted_bytes, predict_latency
from calibration.predict.plan import partition
from calibration.predict.results import NodeCost
from calibration.specs.operations import OPERATIONS
from calibration.specs.patterns import FusionCase

CEILING_GFLOPS = 100.0
DRAM_GBPS = 20.0


def ceilings():
    """A matmul at 100 GFLOPS (compute ceiling) and a DRAM triad at 20 GB/s."""
    n = 1 << 25
    return [
        record("matmul", 2 * 1024**3 / (CEILING_GFLOPS * 1e9) * 1e3, M=1024, K=1024, N=1024, path="aten"),
        record("stream_triad", 3 * 4 * n / (DRAM_GBPS * 1e9) * 1e3, n=n),
        record("dispatch", 0.002, n=1),  # 2 us per call
    ]


def linear_relu(fin=64, fout=32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(fin, fout), nn.ReLU()).eval()


def test_calibrated_kernels_take_their_measured_time():
    cal = fold(ceilings() + [record("linear", 0.010, B=4, IN=64, OUT=32), record("relu", 0.002, n=128)],
               metadata(cache_sizes={}))
    estimate = predict_latency(linear_relu(), torch.randn(4, 64), cal)
    kernels = [k for sg in estimate.subgraphs for k in sg.kernels]
    assert [(k.operation, k.source) for k in kernels] == [
        ("linear", "calibrated at this size"), ("relu", "calibrated at this size")]
    # no dispatch on top: the microbenchmarks' per-call time already holds it
    assert estimate.total_ms == pytest.approx(0.010 + 0.002, rel=1e-9)
    assert estimate.notes == ()


def test_sizes_between_calibrated_ones_interpolate_the_efficiency():
    small, large = dict(B=4, IN=64, OUT=32), dict(B=16, IN=64, OUT=32)

    def flops(b):
        return 2 * b * 64 * 32 + b * 32

    def nbytes(b):
        return (b * 64 + 32 * 64 + 32 + b * 32) * 4

    # compute efficiency 0.1 at B=4 and 0.4 at B=16 (of the 100 GFLOPS ceiling)
    cal = fold(ceilings() + [record("linear", flops(4) / (10e9) * 1e3, **small),
                             record("linear", flops(16) / (40e9) * 1e3, **large),
                             record("relu", 0.001, n=256)], metadata(cache_sizes={}))
    estimate = predict_latency(linear_relu(), torch.randn(8, 64), cal)
    linear = estimate.subgraphs[0].kernels[0]
    assert linear.source == "interpolated between calibrated sizes"
    # both efficiencies are interpolated in log FLOPs; the kernel takes the slower roof
    t = (math.log(flops(8)) - math.log(flops(4))) / (math.log(flops(16)) - math.log(flops(4)))
    compute_eff = 0.1 + t * (0.4 - 0.1)
    lin = [e for e in cal.operation_profiles.values() if e.operation == "linear"]
    bw_small, bw_large = sorted((e.flops, e.bandwidth_efficiency) for e in lin)
    bandwidth_eff = bw_small[1] + t * (bw_large[1] - bw_small[1])
    compute_time = flops(8) / (compute_eff * CEILING_GFLOPS * 1e9)
    memory_time = nbytes(8) / (bandwidth_eff * lin[0].bandwidth_ceiling_gbps * 1e9)
    assert linear.seconds == pytest.approx(max(compute_time, memory_time), rel=1e-6)
    assert linear.bottleneck.value == ("compute" if compute_time >= memory_time else "memory")


def test_a_memory_bound_size_between_cache_levels_takes_the_rate_its_neighbours_reached():
    # GEMVs in L2 and in L3 both at 30 GB/s: 50% of L2's 60 GB/s and 25% of L3's 120 GB/s.
    # One between them (in L3) runs at 30 GB/s, not at its neighbours' efficiencies
    # interpolated (~37%) times the L3 ceiling (~45 GB/s).
    linear = OPERATIONS["linear"]

    def gemv(n):
        params = dict(B=1, IN=n, OUT=n)
        return record("linear", linear.bytes_moved(params, 4) / 30e9 * 1e3, **params)

    triads = [record("stream_triad", 3 * 4 * n / (gbps * 1e9) * 1e3, n=n)
              for n, gbps in ((1 << 14, 60.0), (1 << 19, 120.0))]
    cal = fold(ceilings() + triads + [gemv(128), gemv(1024)], metadata())
    entries = sorted((e for e in cal.operation_profiles.values() if e.operation == "linear"), key=lambda e: e.bytes)
    assert [e.memory_level for e in entries] == ["L2", "L3"]
    assert [round(e.bandwidth_efficiency, 3) for e in entries] == [0.5, 0.25]
    query = dict(B=1, IN=512, OUT=512)
    nbytes = linear.bytes_moved(query, 4)
    assert cal.bandwidth_ceiling(nbytes) == pytest.approx(120.0)
    assert cal.get_efficiency("linear", metric="bandwidth", **query) == pytest.approx(0.25)
    torch.manual_seed(0)
    kernel = predict_latency(nn.Linear(512, 512).eval(), torch.randn(1, 512), cal).subgraphs[0].kernels[0]
    assert kernel.source == "interpolated between calibrated sizes"
    assert kernel.seconds == pytest.approx(nbytes / 30e9, rel=1e-6)


def _gemv_profile(sweep, gemvs):
    """A profile with a triad sweep (n: GB/s) and 1-row linears (IN=OUT=n: GB/s)."""
    linear = OPERATIONS["linear"]
    triads = [record("stream_triad", 12 * n / (gbps * 1e9) * 1e3, n=n) for n, gbps in sweep.items()]
    rows = [record("linear", linear.bytes_moved(dict(B=1, IN=n, OUT=n), 4) / (gbps * 1e9) * 1e3, B=1, IN=n, OUT=n)
            for n, gbps in gemvs.items()]
    return fold(ceilings() + triads + rows, metadata())


def _gemv_rate(cal, n):
    nbytes = OPERATIONS["linear"].bytes_moved(dict(B=1, IN=n, OUT=n), 4)
    return cal.get_efficiency("linear", metric="bandwidth", B=1, IN=n, OUT=n) * cal.bandwidth_ceiling(nbytes), nbytes


def test_between_two_entries_a_memory_bound_rate_follows_the_triad_sweep_s_shape():
    # the sweep peaks between the entries (the L2s hold 1.6 MB), as it did on a 2 MiB-L2 Xeon
    sweep = {1 << 14: 95.0, 1 << 17: 160.0, 1 << 20: 60.0}  # 192 KiB, 1.5 MiB, 12 MiB working sets
    cal = _gemv_profile(sweep, {256: 40.0, 1024: 90.0})
    rate, nbytes = _gemv_rate(cal, 512)
    entries = {n: OPERATIONS["linear"].bytes_moved(dict(B=1, IN=n, OUT=n), 4) for n in (256, 1024)}
    relative = {n: gbps / cal.triad_gbps(entries[n]) for n, gbps in ((256, 40.0), (1024, 90.0))}
    flops = {n: OPERATIONS["linear"].flops(dict(B=1, IN=n, OUT=n)) for n in (256, 512, 1024)}
    t = math.log(flops[512] / flops[256]) / math.log(flops[1024] / flops[256])  # FLOPs place a GEMV
    shaped = (relative[256] + t * (relative[1024] - relative[256])) * cal.triad_gbps(nbytes)
    assert rate == pytest.approx(min(shaped, 90.0), rel=1e-6)
    assert rate > 40.0 + t * (90.0 - 40.0)  # above the rate interpolated in size alone
    # never above the fastest the variant ran, however the triad rises
    steep = _gemv_profile({1 << 14: 20.0, 1 << 17: 400.0, 1 << 20: 60.0}, {256: 40.0, 1024: 90.0})
    assert _gemv_rate(steep, 512)[0] == pytest.approx(90.0)
    # with no sweep (a conv-only run), the rates are interpolated in size
    bare = _gemv_profile({}, {256: 40.0, 1024: 90.0})
    assert _gemv_rate(bare, 512)[0] == pytest.approx(40.0 + t * (90.0 - 40.0), rel=1e-6)


def _linear_kernel(mapper, rows, width=1024):
    torch.manual_seed(0)
    part = partition(nn.Sequential(nn.Linear(width, width)).eval(), torch.randn(rows, width))
    (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    return mapper.kernel(node)


def test_fewer_rows_than_any_calibrated_gemm_take_a_gemv_a_row_or_the_fewest_rows_whichever_is_less():
    # a GEMV at 0.1 ms, 8 rows at 0.5 ms, 64 rows at 1.6 ms, all over 1024x1024 weights
    cal = fold(ceilings() + [record("linear", ms, B=rows, IN=1024, OUT=1024)
                             for rows, ms in ((1, 0.1), (8, 0.5), (64, 1.6))], metadata(cache_sizes={}))
    mapper = CPUMapper(cal)
    for rows, expected_ms, how in ((2, 0.2, "2 x its one-row time"), (4, 0.4, "4 x its one-row time"),
                                   (6, 0.5, "its 8-row time"), (7, 0.5, "its 8-row time")):
        kernel = _linear_kernel(mapper, rows)
        assert kernel.seconds == pytest.approx(expected_ms / 1e3, rel=1e-9), rows
        assert how in kernel.source and "fewer than any calibrated GEMM" in kernel.source
    # calibrated row counts and those between two of them are not few rows
    assert _linear_kernel(mapper, 1).source == _linear_kernel(mapper, 8).source == "calibrated at this size"
    assert _linear_kernel(mapper, 16).source == "interpolated between calibrated sizes"


def test_a_few_row_gemm_s_one_row_time_is_interpolated_at_its_own_weights():
    # GEMVs over 256x256 and 4096x4096 weights, 8 rows over 2048x2048: a 2-row 1024x1024 GEMM
    # takes twice the GEMV the profile gives for 1024x1024, whatever that is
    linear = OPERATIONS["linear"]
    entries = [record("linear", linear.bytes_moved(dict(B=1, IN=w, OUT=w), 4) / 30e9 * 1e3, B=1, IN=w, OUT=w)
               for w in (256, 4096)] + [record("linear", 50.0, B=8, IN=2048, OUT=2048)]
    mapper = CPUMapper(fold(ceilings() + entries, metadata(cache_sizes={})))
    gemv = _linear_kernel(mapper, 1)
    assert gemv.source == "interpolated between calibrated sizes"
    two = _linear_kernel(mapper, 2)
    assert two.seconds == pytest.approx(2 * gemv.seconds, rel=1e-9)
    assert "2 x its one-row time" in two.source


def test_without_a_one_row_time_few_rows_keep_the_fewest_rows_rate():
    cal = fold(ceilings() + [record("linear", 0.5, B=8, IN=1024, OUT=1024),
                             record("linear", 1.6, B=64, IN=1024, OUT=1024)], metadata(cache_sizes={}))
    kernel = _linear_kernel(CPUMapper(cal), 2)
    assert "fewer than any" not in kernel.source
    assert kernel.seconds < 0.5e-3 / 2  # the 8-row rate at a quarter of the FLOPs


def test_few_row_matmuls_take_a_gemv_a_row_too():
    spec = OPERATIONS["matmul"]
    cal = fold(ceilings() + [record("matmul", 3.0, M=1, K=4096, N=4096, path="aten"),
                             record("matmul", 9.0, M=8, K=4096, N=4096, path="aten")], metadata(cache_sizes={}))
    mapper = CPUMapper(cal)
    for rows, expected_ms in ((2, 6.0), (4, 9.0)):
        p = dict(M=rows, K=4096, N=4096, path="aten")
        node = NodeCost(name="mm", kind="call_function", target="mm", op="matmul", shape=(rows, 4096),
                        dtype="float32", kernel=True, flops=spec.flops(p), bytes=spec.bytes_moved(p, 4),
                        operation="matmul", params=p)
        assert mapper.kernel(node).seconds == pytest.approx(expected_ms / 1e3, rel=1e-9)


def test_uncalibrated_operations_use_the_roofline_plus_dispatch_and_say_so():
    cal = fold(ceilings() + [record("linear", 0.010, B=4, IN=64, OUT=32)], metadata(cache_sizes={}))
    estimate = predict_latency(linear_relu(), torch.randn(4, 64), cal)
    relu = estimate.subgraphs[-1].kernels[-1]
    assert relu.operation == "relu" and relu.source == "roofline at the profile's ceilings"
    # 128 floats read + written = 1024 bytes at the 20 GB/s ceiling, plus 2 us of dispatch
    assert relu.seconds == pytest.approx(1024 / 20e9 + 2e-6, rel=1e-6)
    assert any("not calibrated" in note for note in estimate.notes)


def test_without_a_profile_the_mapper_needs_peaks_and_says_it_used_them():
    with pytest.raises(ValueError, match="needs a calibration profile, or both peak_gflops"):
        CPUMapper(None)
    estimate = predict_latency(linear_relu(), torch.randn(4, 64), None, peak_gflops=50.0, peak_bandwidth_gbps=10.0)
    linear = estimate.subgraphs[0].kernels[0]
    assert linear.source == "peaks"
    flops, nbytes = 2 * 4 * 64 * 32 + 4 * 32, (4 * 64 + 32 * 64 + 32 + 4 * 32) * 4
    assert linear.seconds == pytest.approx(max(flops / 50e9, nbytes / 10e9))
    assert any("no calibration" in note for note in estimate.notes)


def test_fused_mode_divides_a_fused_pattern_by_its_measured_speedup():
    shape = (("B", 4), ("IN", 64), ("OUT", 32))
    unfused = FusionRecord(FusionCase("Linear_Bias_ReLU", shape, "float32", "cpu", "unfused"), latency(0.02))
    fused = FusionRecord(FusionCase("Linear_Bias_ReLU", shape, "float32", "cpu", "library"), latency(0.01))
    cal = fold(ceilings() + [record("linear", 0.010, B=4, IN=64, OUT=32), record("relu", 0.002, n=128)],
               metadata(cache_sizes={}), fusion_records=[unfused, fused])
    part = partition(linear_relu(), torch.randn(4, 64), cal)
    mapper = CPUMapper(cal)
    eager, fused_estimate = mapper.estimate(part, "eager"), mapper.estimate(part, "fused")
    (subgraph,) = [sg for sg in fused_estimate.subgraphs if sg.pattern == "Linear_Bias_ReLU"]
    assert subgraph.speedup == pytest.approx(2.0)
    assert fused_estimate.total_ms == pytest.approx(eager.total_ms / 2.0)
    with pytest.raises(ValueError, match="Invalid mode .magic.; allowed: eager, fused"):
        mapper.estimate(part, "magic")


def test_a_kernel_below_every_calibrated_size_keeps_the_cost_of_a_call():
    cal = fold(ceilings() + [record("relu", 0.010, n=65536), record("relu", 0.100, n=1 << 20)],
               metadata(cache_sizes={}))
    estimate = predict_latency(nn.Sequential(nn.ReLU()).eval(), torch.randn(1024), cal)
    (kernel,) = [k for sg in estimate.subgraphs for k in sg.kernels]
    assert kernel.source == "below the smallest calibrated size"
    # 2 us of dispatch plus the other 8 us of the n=65536 call scaled to 1024 elements; a flat
    # efficiency would have said 10 us * 1024 / 65536 = 0.16 us
    assert kernel.seconds == pytest.approx(2e-6 + 8e-6 * 1024 / 65536)
    between = predict_latency(nn.Sequential(nn.ReLU()).eval(), torch.randn(1 << 18), cal)
    assert between.subgraphs[0].kernels[0].source == "interpolated between calibrated sizes"


def module_probe(module, module_ms, kernel_ms):
    return [record("module_call", module_ms, module=module, form="module"),
            record("module_call", kernel_ms, module=module, form="kernel")]


def test_module_calls_add_what_their_class_costs_over_its_kernel():
    records = ceilings() + module_probe("Linear", 0.009, 0.003) + module_probe("ReLU", 0.005, 0.0015) + [
        record("linear", 0.010, B=4, IN=64, OUT=32), record("relu", 0.002, n=128)]
    cal = fold(records, metadata(cache_sizes={}))
    assert cal.measured.module_overhead_us == pytest.approx({"Linear": 6.0, "ReLU": 3.5})
    estimate = predict_latency(linear_relu(), torch.randn(4, 64), cal)
    # and the nn.Sequential holding them, which the graph flattens: a bare module call (5 - 2 us)
    assert estimate.module_calls_ms == pytest.approx(0.003)
    assert estimate.total_ms == pytest.approx(0.010 + 0.006 + 0.002 + 0.0035 + 0.003, rel=1e-9)


def test_a_module_class_without_a_probe_pays_a_bare_module_call():
    # no Linear probe: Linear pays the ReLU module call less a bare op call, 5 - 2 us
    records = ceilings() + module_probe("ReLU", 0.005, 0.0015) + [
        record("linear", 0.010, B=4, IN=64, OUT=32), record("relu", 0.002, n=128)]
    estimate = predict_latency(linear_relu(), torch.randn(4, 64), fold(records, metadata(cache_sizes={})))
    assert estimate.total_ms == pytest.approx(0.010 + 0.003 + 0.002 + 0.0035 + 0.003, rel=1e-9)


class _Block(nn.Module):
    """A residual block of a Sequential: the trace inlines both, the eager forward calls both."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 16), nn.ReLU())

    def forward(self, x):
        return x + self.body(x)


def test_the_modules_the_graph_flattens_cost_a_bare_module_call_each():
    torch.manual_seed(0)
    model = nn.Sequential(_Block(), _Block()).eval()
    x = torch.randn(2, 16)
    part = partition(model, x)
    # the outer Sequential, two blocks and their two inner Sequentials; the Linears and ReLUs
    # are graph nodes and pay their own class's cost
    assert part.flattened_module_calls == 5
    records = ceilings() + module_probe("ReLU", 0.005, 0.0015) + [
        record("linear", 0.010, B=2, IN=16, OUT=16), record("relu", 0.002, n=32), record("add", 0.002, n=32)]
    estimate = CPUMapper(fold(records, metadata(cache_sizes={}))).estimate(part)
    assert estimate.module_calls_ms == pytest.approx(5 * 0.003)
    assert estimate.time_by_class()["small"] >= estimate.module_calls_ms
    assert sum(estimate.time_by_class().values()) == pytest.approx(estimate.total_ms)
    assert "calling the modules the graph flattened" in estimate.table()


def test_a_module_faster_than_its_benchmarked_kernel_call_never_drops_below_a_bare_call():
    # LayerNorm's module path is 2 us faster than the aten .out call the benchmark times
    records = ceilings() + module_probe("LayerNorm", 0.008, 0.010) + [record("layernorm", 0.003, ROWS=1, COLS=16)]
    cal = fold(records, metadata(cache_sizes={}))
    assert cal.measured.module_overhead_us == pytest.approx({"LayerNorm": -2.0})
    norm = nn.Sequential(nn.LayerNorm(16)).eval()
    assert predict_latency(norm, torch.randn(1, 16), cal).total_ms == pytest.approx(0.002)  # not 0.001
    records[-1] = record("layernorm", 0.0125, ROWS=1, COLS=16)
    estimate = predict_latency(nn.Sequential(nn.LayerNorm(16)).eval(), torch.randn(1, 16),
                               fold(records, metadata(cache_sizes={})))
    assert estimate.total_ms == pytest.approx(0.0105)


def allocation_profile(with_pairs: bool = True):
    """A fresh 64 MiB block costs 16 ms more than a reused one: 16 ms / 16384 pages."""
    mib = (1 << 20) // 4  # float32 elements in a MiB
    pairs = [record("fill", 3.0, n=64 * mib), record("fill_fresh", 19.0, n=64 * mib)] if with_pairs else []
    return fold(ceilings() + [record("fill", 0.05, n=mib), record("fill_fresh", 0.05, n=mib)] + pairs,
                metadata(cache_sizes={}))


@pytest.fixture
def glibc_defaults(monkeypatch):
    for name in allocator.GLIBC_SETTINGS + ("LD_PRELOAD",):
        monkeypatch.delenv(name, raising=False)


PRICE_MS = 16.0 / (64 * 256)  # per 4 KiB page


def test_a_block_above_32_mib_faults_in_every_forward_and_is_priced_apart(glibc_defaults):
    x = torch.randn(48 * (1 << 20) // 4)  # relu's 48 MiB output: glibc maps it fresh on every call
    estimate = predict_latency(nn.ReLU().eval(), x, allocation_profile())
    term = estimate.allocator
    assert term.allocator == "glibc (defaults)"
    pages = term.fault_bytes // allocator.PAGE
    assert 48 * 256 <= pages <= 48 * 256 + 2  # the block's pages (and its header's)
    assert term.ms == pytest.approx(pages * PRICE_MS) and term.ms_low <= term.ms <= term.ms_high
    assert term.fault_bytes_low <= term.fault_bytes <= term.fault_bytes_high
    assert estimate.total_ms == pytest.approx(estimate.steady_ms + term.ms)
    (kernel,) = estimate.subgraphs[0].kernels
    assert kernel.seconds * 1e3 == pytest.approx(estimate.steady_ms)  # the kernel itself pays no faults


def test_an_in_place_kernel_allocates_and_faults_nothing(glibc_defaults):
    x = torch.randn(48 * (1 << 20) // 4)
    estimate = predict_latency(nn.ReLU(inplace=True).eval(), x, allocation_profile())
    assert estimate.allocator.fault_bytes == 0 and estimate.allocator.ms == 0.0
    assert estimate.total_ms == estimate.steady_ms


def test_a_profile_without_a_fault_price_leaves_the_term_out_and_says_so(glibc_defaults):
    estimate = predict_latency(nn.ReLU().eval(), torch.randn(48 * (1 << 20) // 4), allocation_profile(False))
    assert estimate.allocator.fault_bytes > 0 and estimate.allocator.ms is None
    assert estimate.total_ms == estimate.steady_ms
    assert any("prices no page fault" in note for note in estimate.notes)


def test_two_large_outputs_fault_in_both_blocks_every_forward(glibc_defaults):
    # 40 MiB each, above 32 MiB: whatever the heap holds, glibc maps both fresh on every call
    estimate = predict_latency(nn.Sequential(nn.ReLU(), nn.ReLU()).eval(), torch.randn(10 << 20),
                               allocation_profile())
    assert 2 * 40 * 256 <= estimate.allocator.fault_bytes // allocator.PAGE <= 2 * 40 * 256 + 4


def test_the_allocator_is_named_from_the_environment_and_loaded_libraries():
    assert allocator.detect({}, loaded=[]) == "glibc (defaults)"
    assert allocator.detect({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, loaded=[]) == "jemalloc"
    assert allocator.detect({}, loaded=["/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"]) == "tcmalloc"
    tuned = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "8000000000"}
    assert allocator.detect(tuned, loaded=[]) == \
        "glibc (MALLOC_MMAP_THRESHOLD_=4000000000, MALLOC_TRIM_THRESHOLD_=8000000000)"


def test_the_replay_runs_under_the_given_environment():
    block = [(1, 64 << 20), (1, 0)]  # above 32 MiB: glibc maps it fresh whatever the threshold says
    replayed = allocator.replay_faults(block, env={"PATH": ""})
    assert replayed.own_heap is None  # another environment: a fresh process only
    assert 64 * 256 <= replayed.pages == replayed.fresh_heap <= 64 * 256 + 1
    # a fixed 128 KiB threshold (setting it turns glibc's dynamic raise off): mapped fresh every call
    small = [(1, 1 << 20), (1, 0)]
    assert 256 <= allocator.replay_faults(small, env={"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}).pages <= 258
    assert allocator.replay_faults([]) == allocator.FaultReplay(0, 0, 0, 0, 0)


def test_the_replay_runs_from_this_process_s_heap_and_a_fresh_one(glibc_defaults):
    events = [(1, 1 << 20), (2, 1 << 20), (1, 0), (2, 0)]
    replayed = allocator.replay_faults(events)
    assert replayed.own_heap is not None and replayed.fresh_heap is not None
    assert replayed.pages == replayed.own_heap
    assert replayed.low <= min(replayed.own_heap, replayed.fresh_heap) <= max(replayed.own_heap, replayed.fresh_heap) \
        == replayed.high
    assert replayed.high <= 2 * 256 + 2  # at most every page of both blocks (and their headers)


def test_under_glibc_the_range_reaches_down_to_the_blocks_always_mapped_fresh():
    events = [(1, 40 << 20), (2, 1 << 20), (2, 0), (1, 0)]
    assert allocator.always_fresh_pages(events) == 40 * 256
    assert allocator.always_fresh_pages([(1, 32 << 20), (1, 0)]) == 0  # at the threshold: may go to the heap
    glibc = allocator.replay_faults(events, env={"PATH": ""})
    assert glibc.low <= 40 * 256 <= glibc.high
    preloaded = allocator.replay_faults(events, env={"PATH": "", "LD_PRELOAD": "libjemalloc-not-here.so"})
    assert preloaded is None or preloaded.low == min(p for p in (preloaded.own_heap, preloaded.fresh_heap)
                                                     if p is not None)


def test_an_operand_copied_before_a_gemm_is_priced_as_a_stream_copy():
    class Permuted(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 32)

        def forward(self, x):
            return self.fc(x.permute(0, 2, 1))

    x = torch.randn(8, 64, 128)  # 256 KiB copied before the GEMM
    cal = fold(ceilings() + [record("stream_copy", 0.1, n=64 * 1024)], metadata(cache_sizes={}))
    (fc,) = [k for sg in predict_latency(Permuted().eval(), x, cal).subgraphs for k in sg.kernels]
    assert fc.copy_seconds == pytest.approx(0.1e-3 * (8 * 64 * 128) / (64 * 1024), rel=0.01)  # same efficiency
    plain = [k for sg in predict_latency(nn.Sequential(nn.Linear(64, 32)).eval(), torch.randn(8, 128, 64),
                                         cal).subgraphs for k in sg.kernels]
    assert plain[0].copy_seconds == 0.0


def test_one_mapper_replays_a_partition_s_allocations_once(glibc_defaults, monkeypatch):
    calls = []
    real = allocator.replay_faults
    monkeypatch.setattr(allocator, "replay_faults", lambda events, **kw: calls.append(events) or real(events, **kw))
    part = partition(nn.ReLU().eval(), torch.randn(48 * (1 << 20) // 4))
    mapper = CPUMapper(allocation_profile())
    eager, fused = mapper.estimate(part, "eager"), mapper.estimate(part, "fused")
    assert len(calls) == 1 and eager.allocator == fused.allocator and eager.allocator.fault_bytes > 0


def test_the_prediction_splits_over_the_drift_classes():
    # a 1 ms GEMM (compute- or memory-bound by the test ceilings) and a 5 us relu (small)
    cal = fold(ceilings() + [record("linear", 1.0, B=4, IN=64, OUT=32), record("relu", 0.005, n=128)],
               metadata(cache_sizes={}))
    estimate = predict_latency(linear_relu(), torch.randn(4, 64), cal)
    split = estimate.time_by_class()
    assert set(split) == {"compute", "memory", "small"}
    assert split["small"] == pytest.approx(0.005)
    assert split["compute"] + split["memory"] == pytest.approx(1.0)
    assert sum(split.values()) == pytest.approx(estimate.total_ms)


def _cold_profile(llc: int, *, cold_ms=(1.5, 1.2)):
    """Warm conv2d at two sizes and their cold twins at ``cold_ms``, an LLC of ``llc`` bytes."""
    small = dict(N=1, CIN=64, COUT=64, H=8, W=8, K=3, STRIDE=1, PAD=1, GROUPS=1)  # same channels, fewer bytes
    large = dict(N=1, CIN=64, COUT=64, H=32, W=32, K=3, STRIDE=1, PAD=1, GROUPS=1)
    records = [record("conv2d", 1.0, **small), record("conv2d", 1.0, **large),
               record("conv2d_cold", cold_ms[0], **small), record("conv2d_cold", cold_ms[1], **large)]
    return fold(ceilings() + records, metadata(cache_sizes={"L1": min(512, llc), "L3": llc})), small, large


def _conv_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False)).eval()


def _conv_relus():
    """A conv and three ReLUs: the forward touches ~0.7 MB besides the conv."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.ReLU(), nn.ReLU(), nn.ReLU()).eval()


def test_a_kernel_pays_for_the_share_of_its_weights_the_forward_evicts():
    x = torch.randn(1, 64, 32, 32)
    model = _conv_relus()
    part = partition(model, x)
    # the conv's weights and the most activation memory live at once
    assert part.parameter_bytes == 64 * 64 * 9 * 4
    assert part.footprint_bytes() >= part.parameter_bytes + 2 * 64 * 32 * 32 * 4
    cal, _, _ = _cold_profile(64 << 10)  # a 64 KiB LLC: the forward's 0.5 MiB of activations evict it all
    (conv, *_) = [k for sg in predict_latency(model, x, cal).subgraphs for k in sg.kernels]
    assert conv.cold_factor == pytest.approx(1.2, rel=1e-3) and conv.seconds == pytest.approx(1.2e-3, rel=1e-3)
    assert "evicts" in conv.source
    # under a 64 MiB LLC the same forward evicts under 1% of the weights (random replacement)
    cal, _, _ = _cold_profile(64 << 20)
    (conv, *_) = [k for sg in predict_latency(model, x, cal).subgraphs for k in sg.kernels]
    reuse = part.footprint_bytes() - 64 * 64 * 9 * 4
    assert conv.cold_factor == pytest.approx(1 + 0.2 * (1 - math.exp(-reuse / (64 << 20))))
    assert conv.cold_factor < 1.002


def test_the_cold_term_takes_the_llc_the_triad_sweep_saw_not_the_one_the_os_reports():
    mib = 2**20
    cal, _, large = _cold_profile(480 * mib)
    h = 0.5  # the 192 MiB triad's share served by a 140 MiB cache under random replacement
    for _ in range(200):
        h = math.exp(-(1 - h) * 192 / 140)
    sweep = {1 << 20: 57.0, 1 << 24: 1 / (h / 57.0 + (1 - h) / 31.0), 1 << 26: 30.5, 1 << 29: 31.0}  # n: GB/s
    triads = [record("stream_triad", 12 * n / (gbps * 1e9) * 1e3, n=n) for n, gbps in sweep.items()]
    records = ceilings() + triads + [record("conv2d", 1.0, **large), record("conv2d_cold", 1.2, **large)]
    seen = fold(records, metadata(cache_sizes={"L2": 2 * mib, "L3": 480 * mib}))
    capacity, source = seen.last_level_cache()
    assert capacity == pytest.approx(140 * mib, rel=1e-3)
    assert "192 MiB" in source and "480 MiB" in source
    part = partition(_conv_model(), torch.randn(1, 64, 32, 32))
    (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    reuse = 100 * mib
    assert CPUMapper(seen)._cold_factor(node, reuse_bytes=reuse, warm_seconds=1e-3) == pytest.approx(
        1 + 0.2 * (1 - math.exp(-reuse / capacity)), rel=1e-6)
    # no sweep: the size the OS reports
    assert cal.last_level_cache() == (480 * mib, "L3 as the OS reports it")
    assert CPUMapper(cal)._cold_factor(node, reuse_bytes=reuse, warm_seconds=1e-3) == pytest.approx(
        1 + 0.2 * (1 - math.exp(-reuse / (480 * mib))), rel=1e-6)


def test_the_cold_cost_per_evicted_byte_is_interpolated_in_log_bytes_and_never_below_zero():
    cal, small, large = _cold_profile(1024)
    mapper = CPUMapper(cal)
    part = partition(_conv_model(), torch.randn(1, 64, 32, 32))
    (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    assert mapper._cold_factor(node, reuse_bytes=10**9) == pytest.approx(1.2)  # exactly the large twin
    # half an LLC of other traffic evicts 1 - exp(-1/2) of the weights
    assert mapper._cold_factor(node, reuse_bytes=512) == pytest.approx(1 + 0.2 * (1 - math.exp(-0.5)))
    assert mapper._cold_factor(node, reuse_bytes=None) == 1.0  # a kernel alone
    assert mapper._cold_factor(node, reuse_bytes=0) == 1.0
    # weights and output, what the twins evict: 8x8 adds 0.5 ms over its bytes, 32x32 0.2 ms
    weights = 64 * 64 * 9 * 4

    def evicted(hw):
        return weights + 64 * hw * hw * 4

    assert evicted_bytes("conv2d", large, "float32") == evicted(32)
    between = partition(_conv_model(), torch.randn(1, 64, 16, 16))
    (node,) = [n for sg in between.subgraphs for n in sg.nodes if n.kernel]
    t = math.log(evicted(16) / evicted(8)) / math.log(evicted(32) / evicted(8))
    per_byte = 0.5 / evicted(8) + t * (0.2 / evicted(32) - 0.5 / evicted(8))
    # the added time is over this kernel's warm time, whatever the twins' warm times were
    assert mapper._cold_factor(node, reuse_bytes=10**9, warm_seconds=2e-3) == pytest.approx(
        1 + per_byte * evicted(16) / 2.0, rel=1e-6)
    faster, _, _ = _cold_profile(1024, cold_ms=(0.9, 0.8))  # cold measured faster: noise, not a speedup
    assert CPUMapper(faster)._cold_factor(node, reuse_bytes=10**9) == 1.0


def test_the_cold_ratio_takes_the_warm_call_of_the_same_rounds_over_the_warm_entry():
    from calibration.measure.fold import Record
    from calibration.specs.operations import Case

    params = dict(N=1, CIN=64, COUT=64, H=32, W=32, K=3, STRIDE=1, PAD=1, GROUPS=1)
    cold = Record(Case("conv2d_cold", tuple(params.items()), "float32", "cpu"), latency(2.0), warm_ms=1.0)
    # the warm entry was timed minutes earlier, while the machine ran 1.6x slower
    cal = fold(ceilings() + [record("conv2d", 1.6, **params), cold], metadata(cache_sizes={"L3": 1024}))
    assert cal.operation_profiles[cold.case.key].warm_ms == 1.0
    part = partition(_conv_model(), torch.randn(1, 64, 32, 32))
    (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    assert CPUMapper(cal)._cold_factor(node, reuse_bytes=10**9) == pytest.approx(2.0)


def test_a_warm_call_of_the_cold_rounds_far_slower_than_the_warm_entry_was_not_warm():
    from calibration.measure.fold import Record
    from calibration.specs.operations import Case

    params = dict(B=1, IN=1024, OUT=1024)
    # the call after a cold GEMV ran at DRAM speed too: 2.5x the benchmarked warm time
    cold = Record(Case("linear_cold", tuple(params.items()), "float32", "cpu"), latency(0.225), warm_ms=0.19)
    cal = fold(ceilings() + [record("linear", 0.075, **params), cold], metadata(cache_sizes={"L3": 1024}))
    part = partition(nn.Sequential(nn.Linear(1024, 1024)).eval(), torch.randn(1, 1024))
    (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    assert CPUMapper(cal)._cold_factor(node, reuse_bytes=10**9) == pytest.approx(0.225 / 0.075)


def test_a_twin_timed_third_after_the_cold_call_is_warm_however_far_it_ran_over_the_warm_entry():
    from calibration.measure.fold import Record
    from calibration.specs.operations import COLD_CONTEXT, Case

    params = dict(N=8, CIN=256, COUT=256, H=14, W=14, K=3, STRIDE=1, PAD=1, GROUPS=1)
    # cold 15.3 ms, its twin 15.1, the warm entry 9.4 timed minutes before: the host ran slow, not cold
    stats = latency(15.3).model_copy(update={"source": COLD_CONTEXT})
    third = Record(Case("conv2d_cold", tuple(params.items()), "float32", "cpu"), stats, warm_ms=15.1)
    cal = fold(ceilings() + [record("conv2d", 9.4, **params), third], metadata(cache_sizes={"L3": 1024}))
    part = partition(nn.Sequential(nn.Conv2d(256, 256, 3, padding=1, bias=False)).eval(), torch.randn(8, 256, 14, 14))
    (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    assert CPUMapper(cal)._cold_factor(node, reuse_bytes=10**9) == pytest.approx(15.3 / 15.1)
    # the same numbers from a profile whose twins were second calls: the entry is the base
    second = Record(third.case, latency(15.3), warm_ms=15.1)
    old = fold(ceilings() + [record("conv2d", 9.4, **params), second], metadata(cache_sizes={"L3": 1024}))
    assert CPUMapper(old)._cold_factor(node, reuse_bytes=10**9) == pytest.approx(15.3 / 9.4)


def test_a_memory_bound_twin_timed_third_far_over_the_warm_entry_streamed_its_data_again():
    from calibration.measure.fold import Record
    from calibration.predict.mapper import NOT_WARM
    from calibration.profile.roofline import Bottleneck
    from calibration.specs.operations import COLD_CONTEXT, Case

    params = dict(B=1, IN=1536, OUT=2048)
    # a 12 MiB GEMV: cold 0.82 ms, its third call 0.70, the warm entry 0.25 (a shared LLC kept
    # none of it between the calls); its time is where its weights sit, so the entry is the base
    stats = latency(0.82).model_copy(update={"source": COLD_CONTEXT})
    third = Record(Case("linear_cold", tuple(params.items()), "float32", "cpu"), stats, warm_ms=0.70)
    cal = fold(ceilings() + [record("linear", 0.25, **params), third], metadata(cache_sizes={"L3": 1024}))
    assert cal.get_operation("linear", **params).bottleneck == Bottleneck.MEMORY
    part = partition(nn.Sequential(nn.Linear(1536, 2048)).eval(), torch.randn(1, 1536))
    (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    assert CPUMapper(cal)._cold_factor(node, reuse_bytes=10**9) == pytest.approx(0.82 / 0.25)
    # within NOT_WARM of the entry the third call is the base, as for any kernel
    near = Record(third.case, stats, warm_ms=0.25 * NOT_WARM * 0.99)
    cal = fold(ceilings() + [record("linear", 0.25, **params), near], metadata(cache_sizes={"L3": 1024}))
    assert CPUMapper(cal)._cold_factor(node, reuse_bytes=10**9) == pytest.approx(0.82 / (0.25 * NOT_WARM * 0.99))


def test_a_gemv_with_all_its_weights_evicted_runs_no_faster_than_its_twins_streamed_theirs():
    from calibration.measure.fold import Record
    from calibration.specs.operations import COLD_CONTEXT, Case

    # 12 and 24 MiB GEMVs: warm 0.40 and 1.40 ms, cold 0.69 and 1.56 (third calls near the entries)
    twins = {(1536, 2048): (0.40, 0.69, 0.42), (2048, 3072): (1.40, 1.56, 1.45)}
    records = ceilings()
    for (fin, fout), (warm, cold, third) in twins.items():
        params = dict(B=1, IN=fin, OUT=fout)
        stats = latency(cold).model_copy(update={"source": COLD_CONTEXT})
        records += [record("linear", warm, **params),
                    Record(Case("linear_cold", tuple(params.items()), "float32", "cpu"), stats, warm_ms=third)]
    cal = fold(records, metadata(cache_sizes={"L3": 1024}))
    mapper = CPUMapper(cal)
    part = partition(nn.Sequential(nn.Linear(1024, 4096)).eval(), torch.randn(1, 1024))  # 16 MiB
    (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    evicted = evicted_bytes("linear", node.params, "float32")
    ev = {shape: evicted_bytes("linear", dict(B=1, IN=shape[0], OUT=shape[1]), "float32") for shape in twins}
    (a, b) = twins
    # each twin's cold call as at its entry's moment (cold / its third call, times the entry:
    # the two were timed minutes apart), per byte, linear in log bytes between them
    at_entry = {shape: warm * cold / third / ev[shape] for shape, (warm, cold, third) in twins.items()}
    at = math.log(evicted / ev[a]) / math.log(ev[b] / ev[a])
    cold_ms = evicted * (at_entry[a] + at * (at_entry[b] - at_entry[a]))
    assert at_entry[a] * ev[a] < cold_ms < at_entry[b] * ev[b]
    # a warm time the fit put below the twins' (0.55 ms): all evicted, it takes their cold rate
    fast = mapper._cold_factor(node, reuse_bytes=10**9, warm_seconds=0.55e-3, streams=True)
    assert fast * 0.55 == pytest.approx(cold_ms, rel=1e-6)
    added = mapper._cold_factor(node, reuse_bytes=10**9, warm_seconds=0.55e-3)  # not known to stream
    assert added * 0.55 < cold_ms
    # a warm time over the twins' rate keeps what the twins' cold calls added per byte
    slow = mapper._cold_factor(node, reuse_bytes=10**9, warm_seconds=2.0e-3, streams=True)
    assert slow == pytest.approx(mapper._cold_factor(node, reuse_bytes=10**9, warm_seconds=2.0e-3)) and slow > 1.0
    # through kernel(): the estimate's bottleneck says it streams
    estimate = mapper.kernel(node, reuse_bytes=10**9)
    assert estimate.bottleneck.value == "memory"
    assert estimate.cold_factor == pytest.approx(mapper._cold_factor(
        node, reuse_bytes=10**9, warm_seconds=mapper._kernel(node).seconds, streams=True))


def test_a_one_row_linear_pays_for_what_the_triad_sweep_says_the_llc_loses_at_its_working_set():
    mib = 2**20

    def rate(h):  # a triad rate with share h served by the LLC's 56 GB/s, the rest by DRAM's 30
        return 1 / (h / 56.0 + (1 - h) / 30.0)

    # working-set bytes: GB/s, the last a STREAM-sized triad (arrays four times the reported LLC)
    sweep = {48 * mib: 56.0, 96 * mib: rate(0.9), 192 * mib: rate(0.4), 768 * mib: 30.0, 12 * 480 * mib: 30.0}
    triads = [record("stream_triad", ws / (gbps * 1e9) * 1e3, n=ws // 12) for ws, gbps in sweep.items()]
    matmul, _, dispatch = ceilings()
    records = [matmul, dispatch] + triads
    for rows in (1, 8):
        params = dict(B=rows, IN=4096, OUT=4096)
        records += [record("linear", 1.0, **params), record("linear_cold", 2.0, **params)]
    cal = fold(records, metadata(cache_sizes={"L2": 2 * mib, "L3": 480 * mib}))
    assert cal.llc_losses()[:3] == [(48 * mib, 0.0), (96 * mib, pytest.approx(0.1)), (192 * mib, pytest.approx(0.6))]
    capacity = cal.last_level_cache()[0]
    assert capacity < 480 * mib
    mapper = CPUMapper(cal)
    weights = 4096 * 4096 * 4

    def node(rows):
        part = partition(nn.Sequential(nn.Linear(4096, 4096)).eval(), torch.randn(rows, 4096))
        (n,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
        return n

    gemv, gemm = node(1), node(8)
    # 96 MiB touched a forward (its 64 MiB of weights and 32 more): a tenth of what a cold call adds
    assert mapper._cold_factor(gemv, reuse_bytes=96 * mib - weights, warm_seconds=1e-3) == pytest.approx(1.1, rel=1e-3)
    # a forward the LLC keeps whole (at or under the sweep's best point) finds nothing cold
    assert mapper._cold_factor(gemv, reuse_bytes=48 * mib - weights, warm_seconds=1e-3) == 1.0
    # eight rows are not one pass over the weights: random replacement over the sweep's capacity
    reuse = 96 * mib - weights
    assert mapper._cold_factor(gemm, reuse_bytes=reuse, warm_seconds=1e-3) == pytest.approx(
        1 + (1 - math.exp(-reuse / capacity)), rel=1e-3)


def _gemv_evicted(width, rows=1):
    return (width * width + width + rows * width) * 4  # weights, bias, output


def test_a_gemv_past_the_llc_adds_little_cold_and_one_between_adds_part_of_the_smaller_s_cost():
    llc = 32 << 20
    twins = []
    for width, cold_ms in ((256, 6.0), (1024, 2.5), (4096, 1.05)):  # 0.25 and 4 MiB of weights, then 64 MiB
        twins += [record("linear", 1.0, B=1, IN=width, OUT=width),
                  record("linear_cold", cold_ms, B=1, IN=width, OUT=width)]
    mapper = CPUMapper(fold(ceilings() + twins, metadata(cache_sizes={"L3": llc})))
    share = 1 - math.exp(-1e12 / llc)
    per_byte = {w: added / _gemv_evicted(w) for w, added in ((1024, 1.5), (4096, 0.05))}
    t = math.log(_gemv_evicted(2048) / _gemv_evicted(1024)) / math.log(_gemv_evicted(4096) / _gemv_evicted(1024))
    between = per_byte[1024] + t * (per_byte[4096] - per_byte[1024])
    for width, warm_ms, added_ms in ((2048, 3.0, between * _gemv_evicted(2048)),
                                     (8192, 16.0, per_byte[4096] * _gemv_evicted(8192))):  # held flat past them
        part = partition(nn.Sequential(nn.Linear(width, width)).eval(), torch.randn(1, width))
        (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
        factor = mapper._cold_factor(node, reuse_bytes=10**12, warm_seconds=warm_ms / 1e3)
        assert factor == pytest.approx(1 + added_ms * share / warm_ms, rel=1e-6)


def test_a_gemm_s_cold_cost_follows_its_rows():
    twins = []
    for rows, cold_ms in ((8, 2.0), (256, 1.0)):
        twins += [record("linear", 1.0, B=rows, IN=1024, OUT=1024), record("linear_cold", cold_ms, B=rows, IN=1024,
                                                                          OUT=1024)]
    cal = fold(ceilings() + twins, metadata(cache_sizes={"L3": 1024}))
    mapper = CPUMapper(cal)
    per_byte_8 = 1.0 / _gemv_evicted(1024, rows=8)  # 8 rows add 1 ms, 256 rows nothing
    for rows, expected_ms in ((8, 1.0), (4, per_byte_8 * _gemv_evicted(1024, rows=4)), (2048, 0.0),
                              # 45 rows: about halfway in log rows
                              (45, (1 - math.log(45 / 8) / math.log(256 / 8)) * per_byte_8 * _gemv_evicted(1024, 45))):
        part = partition(nn.Sequential(nn.Linear(1024, 1024)).eval(), torch.randn(rows, 1024))
        (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
        assert mapper._cold_factor(node, reuse_bytes=10**9, warm_seconds=1e-3) == pytest.approx(1 + expected_ms)


def test_a_gemv_s_cold_ratio_follows_its_bytes_since_every_gemv_has_one_row():
    twins = []
    for width, cold_ms in ((256, 6.0), (4096, 1.0)):
        twins += [record("linear", 1.0, B=1, IN=width, OUT=width),
                  record("linear_cold", cold_ms, B=1, IN=width, OUT=width)]
    cal = fold(ceilings() + twins, metadata(cache_sizes={"L3": 1024}))
    mapper = CPUMapper(cal)
    for width, expected in ((256, 6.0), (8192, 1.0)):  # small weights pay the cold fetch, huge ones stream anyway
        part = partition(nn.Sequential(nn.Linear(width, width)).eval(), torch.randn(1, width))
        (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
        assert mapper._cold_factor(node, reuse_bytes=10**9) == pytest.approx(expected)


def test_a_cold_ratio_at_one_scale_follows_bytes_before_the_scales_are_interpolated():
    # at 8 rows a small GEMM pays 3x cold and a large one 1.2x; at 256 rows neither pays
    twins = []
    for rows, width, cold_ms in ((8, 256, 3.0), (8, 2048, 1.2), (256, 256, 1.0), (256, 2048, 1.0)):
        twins += [record("linear", 1.0, B=rows, IN=width, OUT=width),
                  record("linear_cold", cold_ms, B=rows, IN=width, OUT=width)]
    mapper = CPUMapper(fold(ceilings() + twins, metadata(cache_sizes={"L3": 1024})))
    part = partition(nn.Sequential(nn.Linear(2048, 2048)).eval(), torch.randn(8, 2048))
    (node,) = [n for sg in part.subgraphs for n in sg.nodes if n.kernel]
    assert mapper._cold_factor(node, reuse_bytes=10**9) == pytest.approx(1.2, rel=0.02)  # not the rows' mean


def test_a_profile_without_cold_twins_times_every_kernel_warm_and_says_so():
    cal = fold(ceilings() + [record("conv2d", 1.0, N=1, CIN=64, COUT=64, H=32, W=32, K=3, STRIDE=1, PAD=1,
                                    GROUPS=1)], metadata(cache_sizes={"L3": 1024}))
    estimate = predict_latency(_conv_relus(), torch.randn(1, 64, 32, 32), cal)
    (conv, *_) = [k for sg in estimate.subgraphs for k in sg.kernels]
    assert conv.cold_factor == 1.0
    assert any("no cold conv2d cases" in note for note in estimate.notes)


def _conv(n, cin, cout, hw, k=3, s=1):
    return dict(N=n, CIN=cin, COUT=cout, H=hw, W=hw, K=k, STRIDE=s, PAD=k // 2, GROUPS=1)


def test_a_conv_shape_the_grid_lacks_is_fitted_to_its_variant_s_calibrated_shapes():
    grid = [_conv(1, 16, 16, 32), _conv(1, 32, 32, 16), _conv(1, 64, 64, 8), _conv(2, 16, 32, 16),
            _conv(1, 32, 64, 32, s=2), _conv(4, 8, 8, 16)]

    def made(p):  # 4 us a call plus 1 ns per kFLOP: what the fit should find again
        flops = 2 * p["N"] * p["COUT"] * (p["H"] // p["STRIDE"]) ** 2 * p["CIN"] * 9
        return 0.004 + flops * 1e-9

    cal = fold(ceilings() + [record("conv2d", made(p), **p) for p in grid], metadata(cache_sizes={}))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1, bias=False)).eval()
    (conv,) = [k for sg in predict_latency(model, torch.randn(1, 24, 24, 24), cal).subgraphs for k in sg.kernels]
    assert conv.source.startswith("fitted to 6 calibrated shapes of its variant")
    assert conv.seconds == pytest.approx(made(_conv(1, 24, 24, 24)) / 1e3, rel=0.02)
    # a calibrated shape takes its own time
    exact = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False)).eval()
    (conv,) = [k for sg in predict_latency(exact, torch.randn(1, 16, 32, 32), cal).subgraphs for k in sg.kernels]
    assert conv.source == "calibrated at this size" and conv.seconds == pytest.approx(made(grid[0]) / 1e3)


@pytest.mark.parametrize("isa, block", [("AVX512", 16), ("AVX2", 8)])
def test_a_conv_narrower_than_one_vector_block_is_priced_as_the_block_it_runs_as(isa, block):
    """oneDNN pads a conv's output channels to its vector block (16 on AVX-512, 8 on AVX2)."""
    grid = [_conv(1, 16, 16, 32), _conv(1, 32, 32, 16), _conv(1, 64, 64, 8), _conv(2, 16, 32, 16),
            _conv(1, 32, 64, 32, s=2), _conv(4, 8, 8, 16)]

    def made(p):
        flops = 2 * p["N"] * p["COUT"] * (p["H"] // p["STRIDE"]) ** 2 * p["CIN"] * 9
        return 0.004 + flops * 1e-9

    cal = fold(ceilings() + [record("conv2d", made(p), **p) for p in grid],
               metadata(cache_sizes={}, cpu_capability=isa))

    def priced(cin, cout, groups=1, hw=24):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False, groups=groups)).eval()
        (conv,) = [k for sg in predict_latency(model, torch.randn(1, cin, hw, hw), cal).subgraphs for k in sg.kernels]
        return conv

    whole = priced(16, block)
    for cout in (1, 3, block - 1):
        narrow = priced(16, cout)
        assert narrow.seconds == pytest.approx(whole.seconds)
        assert narrow.source.startswith(f"{cout} output channels, padded to the {block} the library computes at "
                                        f"once on {isa}: fitted to 6 calibrated shapes")
    assert priced(16, block + 8).seconds > whole.seconds  # wider than a block: its own shape
    # a grouped conv is not padded so (a depthwise conv blocks over its groups)
    assert "padded" not in priced(16, 4, groups=4).source
    # the profile's own time at the narrow shape wins
    exact = fold(ceilings() + [record("conv2d", made(p), **p) for p in grid]
                 + [record("conv2d", 0.050, N=1, CIN=16, COUT=3, H=24, W=24, K=3, STRIDE=1, PAD=1, GROUPS=1)],
                 metadata(cache_sizes={}, cpu_capability=isa))
    model = nn.Sequential(nn.Conv2d(16, 3, 3, padding=1, bias=False)).eval()
    (conv,) = [k for sg in predict_latency(model, torch.randn(1, 16, 24, 24), exact).subgraphs for k in sg.kernels]
    assert conv.source == "calibrated at this size" and conv.seconds == pytest.approx(50e-6)
    # an ISA whose block is not known prices the conv by its own shape
    other = cal.model_copy(update={"metadata": cal.metadata.model_copy(update={"cpu_capability": "SVE256"})})
    (conv,) = [k for sg in predict_latency(model, torch.randn(1, 16, 24, 24), other).subgraphs for k in sg.kernels]
    assert "padded" not in conv.source and conv.seconds < whole.seconds


def test_a_pool_is_priced_by_its_window_not_its_bytes():
    # a 2x2 and a 3x3 max pool moving similar bytes: ATen's NCHW kernel pays per window element
    def pool(n, c, hw, k, s, pad):
        return dict(N=n, C=c, H=hw, W=hw, K=k, STRIDE=s, PAD=pad)

    grid = [pool(1, 32, 128, 3, 2, 1), pool(8, 32, 128, 3, 2, 1), pool(1, 128, 32, 2, 2, 0),
            pool(8, 64, 48, 2, 2, 0), pool(1, 192, 28, 3, 1, 1)]

    def made(p):  # ms: 3 us a call, 0.1 ns a byte in or out, 0.75 ns a window element
        _, nbytes, window = OPERATIONS["maxpool"].cost_terms(p, 4)
        return 0.003 + nbytes * 1e-10 * 1e3 + window * 0.75e-9 * 1e3

    cal = fold(ceilings() + [record("maxpool", made(p), **p) for p in grid], metadata(cache_sizes={}))
    model = nn.Sequential(nn.MaxPool2d(2, 2)).eval()
    (k,) = [k for sg in predict_latency(model, torch.randn(8, 64, 112, 112), cal).subgraphs for k in sg.kernels]
    assert k.source.startswith("fitted to 5 calibrated shapes of its variant")
    assert k.seconds == pytest.approx(made(pool(8, 64, 112, 2, 2, 0)) / 1e3, rel=0.03)
    # with fewer shapes than terms + 1 (the quick grid) the bytes interpolation stays
    few = fold(ceilings() + [record("maxpool", made(p), **p) for p in grid[:3]], metadata(cache_sizes={}))
    (k,) = [k for sg in predict_latency(model, torch.randn(8, 64, 112, 112), few).subgraphs for k in sg.kernels]
    assert not k.source.startswith("fitted")


def _after_busy_records(points):
    """after_busy probes giving these points: {preceding ms: extra us}."""
    from dataclasses import replace

    records = []
    for i, (preceding_ms, extra_us) in enumerate(points.items()):
        for probe in ("view", "relu_inplace", "add", "batch_norm"):
            r = record("after_busy", 0.005 + extra_us / 1e3, N=64 * (i + 1), probe=probe)
            records.append(replace(r, warm_ms=0.005, preceding_ms=preceding_ms))
    return records


def _after_busy_profile(points):
    """The ceilings, a linear and a relu, and after_busy points: {preceding ms: extra us}."""
    return fold(ceilings() + [record("linear", 0.010, B=4, IN=64, OUT=32), record("relu", 0.002, n=128),
                              *_after_busy_records(points)], metadata(cache_sizes={}))


def test_after_busy_extra_is_interpolated_in_the_log_of_the_preceding_time():
    mapper = CPUMapper(_after_busy_profile({0.1: 2.0, 1.0: 10.0, 10.0: 100.0}))
    us = [mapper._after_busy_seconds(ms / 1e3) * 1e6 for ms in (0.0, 0.05, 0.1, math.sqrt(0.1), 1.0, 5.0, 10.0, 50.0)]
    assert us == pytest.approx([0.0, 1.0, 2.0, 6.0, 10.0, 10.0 + 90.0 * math.log(5) / math.log(10), 100.0, 100.0])
    # a point below zero (noise) never makes a call faster than benchmarked
    assert CPUMapper(_after_busy_profile({0.1: -3.0, 1.0: 10.0}))._after_busy_seconds(0.1e-3) == 0.0


def test_each_kernel_pays_for_the_one_before_it_and_the_first_for_the_last():
    cal = _after_busy_profile({0.001: 1.0, 0.01: 4.0})
    estimate = predict_latency(linear_relu(), torch.randn(4, 64), cal)
    linear, relu = (k for sg in estimate.subgraphs for k in sg.kernels)
    mapper = CPUMapper(cal)
    # the linear follows the relu (the forward before), the relu follows the linear
    assert linear.after_busy_seconds == pytest.approx(mapper._after_busy_seconds(0.002e-3))
    assert relu.after_busy_seconds == pytest.approx(mapper._after_busy_seconds(0.010e-3))
    assert relu.after_busy_seconds > linear.after_busy_seconds > 0
    assert relu.seconds == pytest.approx(0.002e-3 + relu.after_busy_seconds)
    assert "us after a 0.01 ms call" in relu.source
    assert estimate.after_busy_ms == pytest.approx((linear.after_busy_seconds + relu.after_busy_seconds) * 1e3)
    assert estimate.total_ms == pytest.approx(0.012 + estimate.after_busy_ms, rel=1e-9)
    assert "for calls right after longer kernels" in estimate.table()


def test_a_profile_without_after_busy_points_adds_nothing():
    cal = fold(ceilings() + [record("linear", 0.010, B=4, IN=64, OUT=32), record("relu", 0.002, n=128)],
               metadata(cache_sizes={}))
    estimate = predict_latency(linear_relu(), torch.randn(4, 64), cal)
    assert estimate.after_busy_ms == 0.0
    assert all(k.after_busy_seconds == 0.0 for sg in estimate.subgraphs for k in sg.kernels)
    assert "longer kernels" not in estimate.table()


def test_in_fused_mode_a_fused_group_is_one_call_and_pays_once():
    shape = (("B", 4), ("IN", 64), ("OUT", 32))
    unfused = FusionRecord(FusionCase("Linear_Bias_ReLU", shape, "float32", "cpu", "unfused"), latency(0.02))
    fused = FusionRecord(FusionCase("Linear_Bias_ReLU", shape, "float32", "cpu", "library"), latency(0.01))
    cal = fold(ceilings() + [record("linear", 0.010, B=4, IN=64, OUT=32), record("relu", 0.002, n=128),
                             *_after_busy_records({0.001: 1.0, 0.01: 4.0})],
               metadata(cache_sizes={}), fusion_records=[unfused, fused])
    part = partition(linear_relu(), torch.randn(4, 64), cal)
    mapper = CPUMapper(cal)
    eager, fused_estimate = mapper.estimate(part, "eager"), mapper.estimate(part, "fused")
    (group,) = [sg for sg in fused_estimate.subgraphs if sg.pattern == "Linear_Bias_ReLU"]
    assert group.speedup == pytest.approx(2.0) and len(fused_estimate.subgraphs) == 1
    # one call of (0.010 + 0.002) / 2 ms, following itself: it pays once, at that time
    once = mapper._after_busy_seconds(0.006e-3) * 1e3
    assert fused_estimate.after_busy_ms == pytest.approx(once)
    assert fused_estimate.total_ms == pytest.approx(0.006 + once, rel=1e-9)
    # eager: two calls, each after the other
    assert eager.after_busy_ms == pytest.approx((mapper._after_busy_seconds(0.002e-3)
                                                 + mapper._after_busy_seconds(0.010e-3)) * 1e3)


def test_after_busy_keeps_the_probe_that_touches_no_data():
    """The probes that move data pay for it evicted from the L2s too, which the LLC-operand
    term prices per byte; after a busy kernel a call pays the view's extra alone."""
    from dataclasses import replace

    records = []
    for preceding_ms, view_us, data_us in ((0.1, 1.0, 5.0), (2.0, 12.0, 50.0)):
        for probe in ("view", "relu_inplace", "add", "batch_norm"):
            extra = view_us if probe == "view" else data_us
            r = record("after_busy", 0.005 + extra / 1e3, N=int(64 * (1 + preceding_ms)), probe=probe)
            records.append(replace(r, warm_ms=0.005, preceding_ms=preceding_ms))
    cal = fold(ceilings() + records, metadata(cache_sizes={}))
    # the profile's own points average every probe
    assert [p.extra_us for p in cal.measured.after_busy] == pytest.approx([4.0, 40.5])
    mapper = CPUMapper(cal)
    points = mapper._after_busy_points()
    assert [p.preceding_ms for p in points] == pytest.approx([0.1, 2.0])
    assert [p.extra_us for p in points] == pytest.approx([1.0, 12.0])
    assert mapper._after_busy_seconds(2e-3) == pytest.approx(12e-6)
    # a profile without the view's entries (its points only) keeps its averaged points
    without = cal.model_copy(update={"operation_profiles": {k: e for k, e in cal.operation_profiles.items()
                                                            if e.params.get("probe") != "view"}})
    assert [p.extra_us for p in CPUMapper(without)._after_busy_points()] == pytest.approx([4.0, 40.5])


def test_a_kernel_priced_from_an_entry_timed_while_the_machine_was_busy_says_so():
    import dataclasses

    params = dict(B=4, IN=64, OUT=32)
    quiet = fold(ceilings() + [record("linear", 0.010, **params)], metadata(cache_sizes={}))
    busy = fold(ceilings() + [dataclasses.replace(record("linear", 0.360, **params), other_cpus=0.9)],
                metadata(cache_sizes={}))
    assert busy.get_operation("linear", dtype="float32", device="cpu", **params).busy
    estimate = predict_latency(nn.Sequential(nn.Linear(64, 32)).eval(), torch.randn(4, 64), busy)
    assert any("timed while other processes kept the CPUs busy" in note for note in estimate.notes)
    assert not any("busy" in note for note in predict_latency(
        nn.Sequential(nn.Linear(64, 32)).eval(), torch.randn(4, 64), quiet).notes)
