"""Folding synthetic timings into a profile, and looking entries up again."""

import math
from dataclasses import replace

import pytest
from factories import metadata, record

from calibration.measure.fold import Record, fold
from calibration.profile.roofline import Bottleneck
from calibration.profile.schema import Peak, PeakSource
from calibration.profile.summary import render_summary


def matmul(n: int, ms: float, path: str = "aten", dtype: str = "float32"):
    return record("matmul", ms, dtype=dtype, M=n, K=n, N=n, path=path)


@pytest.fixture
def profile():
    records = [
        # 2*1024^3 FLOP: 10.7374 ms -> 200 GFLOPS; the oneDNN path half as fast
        matmul(1024, 2 * 1024**3 / 200e9 * 1e3),
        matmul(1024, 2 * 1024**3 / 100e9 * 1e3, path="mkldnn"),
        # 2*256^3 FLOP at 50 GFLOPS
        matmul(256, 2 * 256**3 / 50e9 * 1e3),
        # triad, 3 words * 4 B * n: DRAM-sized at 40 GB/s, L2-sized at 120 GB/s
        record("stream_triad", 3 * 4 * (1 << 25) / 40e9 * 1e3, n=1 << 25),
        record("stream_triad", 3 * 4 * (1 << 14) / 120e9 * 1e3, n=1 << 14),
        record("stream_copy", 2 * 4 * (1 << 25) / 30e9 * 1e3, n=1 << 25),
        record("dispatch", 0.002, n=1),
        # add of 2^24 floats (192 MiB moved, DRAM) at 20 GB/s
        record("add", 3 * 4 * (1 << 24) / 20e9 * 1e3, iqr_ms=5.0, n=1 << 24),
    ]
    return fold(records, metadata(), peak_gflops={"float32": Peak(value=400.0, source=PeakSource.USER)})


def test_measured_summary(profile):
    m = profile.measured
    assert m.matmul_gflops["float32"] == pytest.approx(200.0)
    assert m.matmul_gflops_by_path["float32"] == pytest.approx({"aten": 200.0, "mkldnn": 100.0})
    assert m.stream_gbps == pytest.approx({"stream_triad": 40.0, "stream_copy": 30.0})
    assert m.triad_by_level_gbps == pytest.approx({"DRAM": 40.0, "L2": 120.0})
    # the ceilings: best of any case per dtype / per level
    assert m.compute_ceiling_gflops == pytest.approx({"float32": 200.0})
    assert m.bandwidth_by_level_gbps["DRAM"] == pytest.approx(40.0)
    assert m.bandwidth_by_level_gbps["L2"] == pytest.approx(120.0)
    assert m.dispatch_overhead_us == pytest.approx(2.0)


def test_efficiencies_divide_by_measured_ceilings_not_the_datasheet(profile):
    small = profile.get_operation("matmul", M=256, K=256, N=256)
    assert small.gflops == pytest.approx(50.0)
    assert small.compute_ceiling_gflops == pytest.approx(200.0)
    assert small.compute_efficiency == pytest.approx(0.25)
    mkldnn = profile.get_operation("matmul", M=1024, K=1024, N=1024, path="mkldnn")
    assert mkldnn.compute_efficiency == pytest.approx(0.5)


def test_bandwidth_efficiency_and_bottleneck(profile):
    add = profile.get_operation("add", n=1 << 24)
    assert add.memory_level == "DRAM"
    assert add.gbps == pytest.approx(20.0)
    assert add.bandwidth_ceiling_gbps == pytest.approx(40.0)
    assert add.bandwidth_efficiency == pytest.approx(0.5)
    assert add.bottleneck == Bottleneck.MEMORY
    assert add.noisy  # IQR 5 ms of ~10 ms
    big = profile.get_operation("matmul", M=1024, K=1024, N=1024)
    # AI = 2*1024^3 / (3*1024^2*4) = 170.7 FLOP/B > ridge 200/40 = 5
    assert big.arithmetic_intensity == pytest.approx(2 * 1024 / 12)
    assert big.bottleneck == Bottleneck.COMPUTE
    copy = profile.get_operation("stream_copy", n=1 << 25)
    assert copy.compute_efficiency is None and copy.arithmetic_intensity == 0.0


def test_get_efficiency_exact_and_interpolated(profile):
    assert profile.get_efficiency("matmul", M=1024, K=1024, N=1024) == pytest.approx(1.0)
    # 512^3 lies halfway between 256^3 and 1024^3 in log FLOPs: (0.25 + 1.0) / 2
    assert profile.get_efficiency("matmul", M=512, K=512, N=512) == pytest.approx(0.625)
    # clamped at both ends
    assert profile.get_efficiency("matmul", M=64, K=64, N=64) == pytest.approx(0.25)
    assert profile.get_efficiency("matmul", M=8192, K=8192, N=8192) == pytest.approx(1.0)
    # another path only sees its own entries
    assert profile.get_efficiency("matmul", M=64, K=64, N=64, path="mkldnn") == pytest.approx(0.5)


def test_get_efficiency_picks_the_bounding_metric(profile):
    assert profile.get_efficiency("add", n=1 << 24) == pytest.approx(0.5)  # bandwidth
    compute = profile.get_efficiency("add", n=1 << 24, metric="compute")
    assert compute == pytest.approx((1 << 24) / (3 * 4 * (1 << 24) / 20e9) / 1e9 / 200.0)


def test_lookup_errors_name_what_is_missing(profile):
    with pytest.raises(KeyError, match="unknown operation 'matmull'"):
        profile.get_efficiency("matmull", M=1)
    with pytest.raises(KeyError, match="no conv2d entries"):
        profile.get_efficiency("conv2d", N=1, CIN=3, COUT=8, H=8, W=8, K=3, STRIDE=1, PAD=1, GROUPS=1)
    with pytest.raises(KeyError, match="needs parameters N"):
        profile.get_efficiency("matmul", M=4, K=4)
    assert profile.get_operation("matmul", M=3, K=3, N=3) is None
    assert profile.get_operation("matmul", M=1024, K=1024, N=1024, dtype="bfloat16") is None


def test_without_matmul_the_user_peak_is_the_fallback_ceiling():
    cal = fold(
        [record("linear", 2 * 128 * 768 * 3072 / 100e9 * 1e3, B=128, IN=768, OUT=3072)],
        metadata(),
        peak_gflops={"float32": Peak(value=400.0, source=PeakSource.USER)},
    )
    entry = next(iter(cal.operation_profiles.values()))
    assert entry.compute_ceiling_gflops == 400.0
    assert entry.compute_efficiency == pytest.approx(entry.gflops / 400.0)
    assert entry.bandwidth_ceiling_gbps is None and entry.bandwidth_efficiency is None


def test_without_any_ceiling_efficiency_is_unknown_not_invented():
    cal = fold([record("relu", 1.0, n=1 << 20)], metadata())
    entry = next(iter(cal.operation_profiles.values()))
    assert entry.compute_efficiency is None and entry.bandwidth_efficiency is None
    assert entry.bottleneck == Bottleneck.UNKNOWN
    assert not math.isnan(entry.gbps)


def test_a_case_faster_than_the_reference_raises_the_ceiling_not_efficiency_above_one():
    # relu streams 2 words/element at 60 GB/s from DRAM, faster than triad's 40 GB/s
    n = 1 << 24
    cal = fold(
        [
            record("stream_triad", 3 * 4 * (1 << 25) / 40e9 * 1e3, n=1 << 25),
            record("relu", 2 * 4 * n / 60e9 * 1e3, n=n),
            record("add", 3 * 4 * n / 30e9 * 1e3, n=n),
        ],
        metadata(),
    )
    assert cal.measured.bandwidth_by_level_gbps["DRAM"] == pytest.approx(60.0)
    assert cal.measured.stream_gbps["stream_triad"] == pytest.approx(40.0)
    efficiencies = [e.bandwidth_efficiency for e in cal.operation_profiles.values()]
    assert max(efficiencies) == pytest.approx(1.0)
    assert cal.get_operation("add", n=n).bandwidth_efficiency == pytest.approx(0.5)


def test_summary_warns_when_the_machine_was_busy():
    busy = fold([record("relu", 1.0, n=1 << 20)], metadata(busy_cpus_before=1.4, usable_cpus=2))
    idle = fold([record("relu", 1.0, n=1 << 20)], metadata(busy_cpus_before=0.1, usable_cpus=2))
    assert "WARNING: other processes kept 1.4 of 2 CPUs busy when the run started" in busy.summary()
    assert "busy" not in idle.summary()


def test_busy_cpus_reads_the_cpu_counters():
    from calibration.specs import host

    busy = host.busy_cpus(0.05)
    assert busy is None or 0.0 <= busy <= (__import__("os").cpu_count() or 1)


def test_other_cpus_is_busy_time_less_this_process_own():
    from calibration.specs.host import CpuTimes

    # 2 CPUs for 1 s at 100 ticks/s: 200 ticks; 190 busy of which this process ran 90
    elapsed = CpuTimes(busy=1190, total=1200, own=590) - CpuTimes(busy=1000, total=1000, own=500)
    assert elapsed == CpuTimes(busy=190, total=200, own=90)
    assert elapsed.other_cpus(cpus=2) == 1.0
    assert (elapsed + elapsed).other_cpus(cpus=2) == 1.0
    assert CpuTimes(busy=50, total=200, own=80).other_cpus(cpus=2) == 0.0  # own ticks sampled later than busy
    assert CpuTimes(busy=0, total=0, own=0).other_cpus(cpus=2) is None


def test_entries_timed_while_the_machine_was_busy_are_marked_and_counted():
    quiet = replace(record("relu", 1.0, n=1 << 20), other_cpus=0.1)
    loaded = replace(record("add", 1.0, n=1 << 20), other_cpus=1.0)
    cal = fold([quiet, loaded], metadata(busy_cpus_before=0.0, busy_cpus_during=0.45, usable_cpus=2))
    relu, add = cal.get_operation("relu", n=1 << 20), cal.get_operation("add", n=1 << 20)
    assert (relu.other_cpus, relu.busy) == (0.1, False)
    assert (add.other_cpus, add.busy) == (1.0, True)
    text = cal.summary()
    assert "WARNING: 1 entry was timed while other processes kept over 0.5 CPUs busy: marked 'busy' below" in text
    assert [line for line in text.splitlines() if line.rstrip().endswith(" busy")] == [
        line for line in text.splitlines() if line.startswith("  add[n=1048576]")]
    during = fold([quiet], metadata(busy_cpus_before=0.0, busy_cpus_during=1.2, usable_cpus=2))
    assert "WARNING: other processes kept 1.2 of 2 CPUs busy on average while the cases were timed" in during.summary()


def test_compute_efficiency_interpolates_only_between_compute_bound_sizes():
    # a skinny 1x4096x4096 matmul is bandwidth-bound: its 6% of the compute ceiling must not
    # stand for how a small compute-bound matmul uses the ALU
    skinny_flops = 2 * 4096 * 4096
    cal = fold(
        [
            record("matmul", 2 * 1024**3 / 200e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
            record("matmul", 2 * 512**3 / 100e9 * 1e3, M=512, K=512, N=512, path="aten"),
            record("matmul", skinny_flops / 12e9 * 1e3, M=1, K=4096, N=4096, path="aten"),
            record("stream_triad", 3 * 4 * (1 << 25) / 40e9 * 1e3, n=1 << 25),
        ],
        metadata(),
    )
    assert cal.get_operation("matmul", M=1, K=4096, N=4096).bottleneck.value == "memory"
    # 256^3 is below every compute-bound size: clamped to the 512^3 efficiency (0.5), not 0.06
    assert cal.get_efficiency("matmul", metric="compute", M=256, K=256, N=256) == pytest.approx(0.5)


def _linear_ms(b: int, fin: int, fout: int, gflops: float) -> float:
    return (2 * b * fin * fout + b * fout) / (gflops * 1e9) * 1e3


def gemm_profile():
    """Linear rates that follow the row count: 8 rows at 40 GFLOPS whatever the weights, 64 at 160."""
    return fold([
        record("matmul", 2 * 1024**3 / 200e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
        # 400 GB/s: these small GEMMs are compute-bound, as MKL's are on real caches
        record("stream_triad", 3 * 4 * (1 << 25) / 400e9 * 1e3, n=1 << 25),
        record("linear", _linear_ms(1, 1024, 1024, 20), B=1, IN=1024, OUT=1024),
        record("linear", _linear_ms(8, 256, 256, 40), B=8, IN=256, OUT=256),
        record("linear", _linear_ms(8, 1024, 1024, 40), B=8, IN=1024, OUT=1024),
        record("linear", _linear_ms(64, 1024, 1024, 160), B=64, IN=1024, OUT=1024),
    ], metadata())


def test_gemm_efficiency_follows_the_row_count_not_the_size():
    cal = gemm_profile()
    # 8 rows of 4096x4096 weights: 64x the FLOPs of the 8-row 1024^2 entry, still the 8-row rate
    assert cal.get_efficiency("linear", metric="compute", B=8, IN=4096, OUT=4096) == pytest.approx(0.2)
    # 16 rows: halfway (in log rows) between 8 rows (0.2) and 64 rows (0.8)
    assert cal.get_efficiency("linear", metric="compute", B=16, IN=1024, OUT=1024) == pytest.approx(
        0.2 + (0.8 - 0.2) / 3)
    # one row is a matrix-vector product: only the B=1 entry speaks for it (20 GFLOPS = 0.1)
    assert cal.get_efficiency("linear", metric="compute", B=1, IN=512, OUT=512) == pytest.approx(0.1)


def test_allocator_probes_feed_no_ceiling_and_get_no_efficiency():
    mib = (1 << 20) // 4
    cal = fold([
        record("stream_triad", 3 * 4 * (1 << 25) / 20e9 * 1e3, n=1 << 25),
        record("fill", 0.1, n=64 * mib),  # 64 MiB written at 670 GB/s: far above the triad
    ], metadata())
    assert cal.measured.bandwidth_by_level_gbps == {"DRAM": pytest.approx(20.0)}
    entry = cal.get_operation("fill", n=64 * mib)
    assert entry.bandwidth_efficiency is None and entry.bandwidth_ceiling_gbps is None


def test_module_overhead_is_the_difference_of_the_fastest_rounds():
    def probe(form, median_ms, min_ms):
        r = record("module_call", median_ms, module="Conv2d", form=form)
        return Record(r.case, r.latency.model_copy(update={"min_ms": min_ms}))

    # medians 9 us apart (a disturbed kernel form), fastest rounds 5 us apart
    cal = fold([probe("module", 0.021, 0.018), probe("kernel", 0.012, 0.013), record("dispatch", 0.002, n=1),
                record("module_call", 0.0035, module="ReLU", form="module")], metadata())
    assert cal.measured.module_overhead_us == {"Conv2d": pytest.approx(5.0)}  # ReLU has no kernel form
    assert cal.measured.module_call_overhead_us == pytest.approx(3.5)
    assert "module call over its kernel, us: Conv2d +5.0" in render_summary(cal)


def triad(n: int, gbps: float):
    return record("stream_triad", 3 * 4 * n / (gbps * 1e9) * 1e3, n=n)


@pytest.fixture
def sweep():
    """The full triad sweep of the issue's Zen 5 profile (32 MiB L3): the 48 MiB point ran at
    156.9 GB/s, just over the L3 but far above the STREAM triad's 64.4 at 4x the LLC."""
    return fold([
        triad(1 << 10, 7.7), triad(1 << 14, 110.0), triad(1 << 20, 170.0),
        triad(1 << 22, 156.9),  # 48 MiB working set
        triad(1 << 24, 61.0),  # 192 MiB: DRAM, but arrays of 2x the LLC, not STREAM's 4x
        triad(1 << 25, 64.4),  # STREAM: 128 MiB arrays
        record("stream_copy", 2 * 4 * (1 << 25) / 55e9 * 1e3, n=1 << 25),
        record("stream_copy", 2 * 4 * (1 << 22) / 140e9 * 1e3, n=1 << 22),  # not STREAM-sized
        record("relu", 2 * 4 * (1 << 22) / 150e9 * 1e3, n=1 << 22),  # 32 MiB: transition too
    ], metadata())


def test_stream_figures_come_from_arrays_four_times_the_llc(sweep):
    assert sweep.measured.stream_gbps == pytest.approx({"stream_triad": 64.4, "stream_copy": 55.0})


def test_the_transition_zone_sets_no_ceiling(sweep):
    m = sweep.measured
    assert m.bandwidth_by_level_gbps == pytest.approx({"L1": 7.7, "L2": 110.0, "L3": 170.0, "DRAM": 64.4})
    assert m.triad_by_level_gbps == pytest.approx(
        {"L1": 7.7, "L2": 110.0, "L3": 170.0, "LLC-DRAM": 156.9, "DRAM": 64.4})
    assert sweep.dram_bandwidth() == pytest.approx(64.4)
    point = sweep.get_operation("stream_triad", n=1 << 22)
    assert point.memory_level == "LLC-DRAM"
    # scored against the ceilings interpolated between 16 MiB (L3) and 128 MiB (DRAM)
    assert 64.4 < point.bandwidth_ceiling_gbps < 170.0


def test_every_bandwidth_the_summary_shows_agrees_with_the_stream_entries(sweep):
    text = render_summary(sweep)
    assert "STREAM, arrays of 4x the 32 MiB LLC (128 MiB each), GB/s: copy 55.0  triad 64.4" in text
    assert "bandwidth ceiling by level (best case) GB/s: L1 7.7  L2 110.0  L3 170.0  DRAM 64.4" in text
    assert "triad sweep by level GB/s: L1 7.7  L2 110.0  L3 170.0  LLC-DRAM 156.9  DRAM 64.4" in text
    assert "156.9" not in text.split("triad sweep by level")[0]



def test_a_dram_ceiling_well_above_the_stream_triad_names_the_case_that_set_it():
    n = 1 << 24
    cal = fold([triad(1 << 25, 40.0), record("relu", 2 * 4 * n / 60e9 * 1e3, n=n)], metadata())
    assert "note: the DRAM ceiling 60.0 GB/s from relu[n=16777216] is 50% above the STREAM triad" in render_summary(cal)
    close = fold([triad(1 << 25, 40.0), record("relu", 2 * 4 * n / 43e9 * 1e3, n=n)], metadata())
    assert "DRAM ceiling" not in render_summary(close)
    assert "moved during the run" not in render_summary(cal)  # one STREAM kernel: nothing to disagree


def test_stream_kernels_that_disagree_say_dram_bandwidth_moved():
    # seen here in one quiet quick run: add 51.2 GB/s, triad 34.9, at the same 128 MiB arrays
    add = record("stream_add", 3 * 4 * (1 << 25) / 51.2e9 * 1e3, n=1 << 25)
    text = render_summary(fold([triad(1 << 25, 34.9), add], metadata()))
    assert "note: the DRAM ceiling 51.2 GB/s from stream_add[n=33554432] is 47% above the STREAM triad" in text
    assert ("note: STREAM add and triad, which move alike on arrays of one size, ran at 51.2 and 34.9 GB/s: "
            "DRAM bandwidth moved during the run") in text
    # the full run's: copy 39.7, triad 44.1, add 45.9 GB/s; copy counts 2 of the 3 words it moves
    steady = [record("stream_copy", 2 * 4 * (1 << 25) / 39.7e9 * 1e3, n=1 << 25), triad(1 << 25, 44.1),
              record("stream_add", 3 * 4 * (1 << 25) / 45.9e9 * 1e3, n=1 << 25),
              record("relu", 2 * 4 * (1 << 24) / 50e9 * 1e3, n=1 << 24)]  # a DRAM ceiling 13% above the triad
    text = render_summary(fold(steady, metadata()))
    assert "note: the DRAM ceiling 50.0 GB/s from relu[n=16777216]" in text and "moved during the run" not in text
    # triad the fast one: the ceiling is the triad, yet add and triad still disagree
    slow_add = record("stream_add", 3 * 4 * (1 << 25) / 34.9e9 * 1e3, n=1 << 25)
    text = render_summary(fold([triad(1 << 25, 51.2), slow_add], metadata()))
    assert "DRAM ceiling" not in text and "ran at 34.9 and 51.2 GB/s: DRAM bandwidth moved" in text


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_case_the_suite_can_run_folds_into_a_profile_that_loads(tmp_path, device):
    """The schema checks entries against the registry (parameters, families, keys): every
    case of the full grid, operations and fusion variants, must pass that check."""
    from factories import latency

    from calibration import load_calibration
    from calibration.measure.fold import FusionRecord
    from calibration.specs.operations import OPERATIONS
    from calibration.specs.patterns import PATTERNS

    dtypes = ("float32", "bfloat16") if device == "cpu" else ("float32", "float16")
    records = [Record(case, latency(1.0))
               for op in OPERATIONS.values() for case in op.cases(quick=False, device=device)]
    # no raw samples: no bootstrap interval to compute for each of several hundred entries
    fusion = [FusionRecord(case, latency(1.0 if case.variant == "unfused" else 0.5).model_copy(
        update={"samples_ms": []}))
              for pattern in PATTERNS.values() for case in pattern.cases(quick=False, device=device, dtypes=dtypes)]
    cal = fold(records, metadata(device_type=device), fusion_records=fusion)
    assert len(cal.operation_profiles) == len(records)
    assert sum(len(entries) for entries in cal.fusion_profiles.values()) == sum(
        case.variant != "unfused" for case in (r.case for r in fusion))
    assert load_calibration(cal.save(tmp_path / "full.json")) == cal


def after_busy(n: int, probe: str, after_ms: float, warm_ms: float, preceding_ms: float) -> Record:
    r = record("after_busy", after_ms, N=n, probe=probe)
    return replace(r, warm_ms=warm_ms, preceding_ms=preceding_ms)


ALL_PROBES = ("view", "relu_inplace", "add", "batch_norm")


def test_after_busy_points_average_the_probes_extra_by_the_preceding_kernel_s_time():
    records = [after_busy(512, p, 0.010 + 0.004 * i, 0.002 + 0.004 * i, 2.0 + 0.1 * i)  # +8 us each
               for i, p in enumerate(ALL_PROBES)]
    records += [after_busy(128, p, 0.0031, 0.0021, 0.05) for p in ALL_PROBES]  # +1 us each
    cal = fold(ceilings_for_after_busy() + records, metadata())
    points = cal.measured.after_busy
    assert [p.preceding_ms for p in points] == pytest.approx([0.05, 2.15])  # ascending; median of the probes
    assert [p.extra_us for p in points] == pytest.approx([1.0, 8.0])
    # a probe after a busy kernel is no ceiling, however fast it looks
    assert cal.measured.bandwidth_by_level_gbps == {"DRAM": pytest.approx(20.0)}
    assert cal.get_operation("after_busy", N=512, probe="add").preceding_ms == pytest.approx(2.2)
    assert "a call after a busy kernel, us over its repeated time, by the kernel's time: 0.05 ms +1.0  2.15 ms +8.0" \
        in render_summary(cal)


def test_a_busy_size_missing_a_probe_gives_no_point_and_noise_may_give_a_negative_one():
    records = [after_busy(512, p, 0.010, 0.002, 2.0) for p in ALL_PROBES[:3]]  # no batch_norm probe
    records += [after_busy(128, p, 0.0020, 0.0021, 0.05) for p in ALL_PROBES]
    points = fold(ceilings_for_after_busy() + records, metadata()).measured.after_busy
    assert [(p.preceding_ms, round(p.extra_us, 6)) for p in points] == [(0.05, -0.1)]


def ceilings_for_after_busy():
    return [triad(1 << 25, 20.0)]


def test_a_level_s_ceiling_comes_from_working_sets_the_caches_below_cannot_hold():
    mib = 2**20
    rates = {262144: 168.0, 524288: 120.0, 1 << 20: 57.0}  # triad n: GB/s (3, 6 and 12 MiB working sets)
    triads = [record("stream_triad", 12 * n / (gbps * 1e9) * 1e3, n=n) for n, gbps in rates.items()]
    caches = {"L1": 48 << 10, "L2": 2 * mib, "L3": 480 * mib}
    two = fold(triads, metadata(cache_sizes=caches, threads=2))
    # two threads' 2 MiB L2s hold the 3 and 6 MiB triads: the 12 MiB one is the L3's rate
    assert two.measured.triad_by_level_gbps["L3"] == pytest.approx(57.0)
    assert two.measured.bandwidth_by_level_gbps["L3"] == pytest.approx(57.0)
    # every entry still says the level its working set is in
    assert {e.memory_level for e in two.operation_profiles.values()} == {"L3"}
    one = fold(triads, metadata(cache_sizes=caches, threads=1))  # one L2: 6 MiB is clear of it
    assert one.measured.bandwidth_by_level_gbps["L3"] == pytest.approx(120.0)
