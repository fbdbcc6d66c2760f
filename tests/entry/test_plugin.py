"""The pytest plugin end to end: pytest runs in a subprocess on a one-case bench file.

Each run imports torch in a fresh interpreter (the plugin sets torch's thread count and
device state, which must not leak into this process), so there are few runs and each
times only the 1-element ``dispatch`` add with ``--calibrate-quick``. No assertion reads a timing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from factories import DISPATCH_KEY as KEY
from factories import PLUGIN_ARGS, metadata, record
from factories import run_bench as run

from calibration import SCHEMA_VERSION, ProfileError, load_calibration
from calibration.measure import options
from calibration.measure.fold import fold
from calibration.specs.operations import FAMILIES

# --------------------------------------------------------------------------- writing


@pytest.mark.times_kernels
def test_calibrate_out_writes_a_loadable_profile(bench):
    result = run(bench, "--calibrate-out=p.json")

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    # the run ends on the summary: no pytest-benchmark table, the profile's path, pytest's count
    assert "Name (time in" not in result.stdout.str()
    result.stdout.fnmatch_lines([
        "*- calibration -*",
        "(pytest-benchmark's per-case tables are hidden: --calibrate-tables shows them)",
        "Hardware calibration: *",
        "calibration profile written to p.json",
        "*1 passed*",
    ], consecutive=False)
    tail = [line for line in result.stdout.lines if line.strip()][-2:]
    assert tail[0] == "calibration profile written to p.json" and "1 passed" in tail[1]
    profile = load_calibration(bench.path / "p.json")
    assert list(profile.operation_profiles) == [KEY]
    entry = profile.operation_profiles[KEY]
    assert entry.latency.rounds >= 1
    assert (entry.flops, entry.bytes) == (1, 12)  # one add; two float32 reads, one write
    assert profile.metadata.device_type == "cpu"
    assert profile.metadata.quick is True
    # sampled around the timed case from /proc/stat (Linux): how busy other work kept the machine
    assert entry.other_cpus is not None and entry.busy == (entry.other_cpus > 0.5)
    assert profile.metadata.busy_cpus_during is not None
    # timed on a steady C heap (glibc here): the profile says so
    assert profile.metadata.allocator["heap while timing"].startswith("steady: mmap and trimming off")


@pytest.mark.times_kernels
def test_a_second_window_times_each_operation_case_again_at_the_end_of_the_run(bench):
    # the smallest triad (4 KiB a vector): milliseconds of work
    bench.makepyfile(test_bench="""
        from calibration.specs.operations import Case

        def test_triad(calibrate):
            calibrate(Case("stream_triad", (("n", 1024),), "float32", "cpu"))
    """)
    quick = run(bench, "--calibrate-out=one.json")
    twice = run(bench, "--calibrate-out=two.json", "--calibrate-windows=2")

    assert quick.ret == twice.ret == pytest.ExitCode.OK
    key = "stream_triad[n=1024]/float32/cpu"
    # --quick times a case in one window unless asked for more
    assert load_calibration(bench.path / "one.json").operation_profiles[key].latency.windows_ms == []
    assert "later windows" not in quick.stdout.str()
    entry = load_calibration(bench.path / "two.json").operation_profiles[key]
    windows = entry.latency.windows_ms
    # the run's window first, then one later; a third only where those two disagree
    assert len(windows) in (2, 3)
    assert (len(windows) == 3) == (max(windows[:2]) > 1.2 * min(windows[:2]))
    # the middle of three, or of the windows the host's vCPUs ran fast in (measure.canary)
    kept = entry.latency.median_ms
    if len(windows) == 2:
        assert kept == pytest.approx(windows[0], rel=1e-3)
    else:
        assert any(kept == pytest.approx(w, rel=1e-3) for w in windows)
    twice.stdout.fnmatch_lines(["later windows: 1 operation cases timed again at the end of the run*"])
    # each operation case bracketed by the host-state canary, quick or not: its fastest reading kept
    assert all(load_calibration(bench.path / name).metadata.canary_ms > 0 for name in ("one.json", "two.json"))


def test_help_lists_every_calibration_option(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "--help")

    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "hardware calibration (calibration package):",
        "*--calibrate-out=PATH*",
        "*--calibrate-quick*",
        "*--calibrate-hardware=NAME*",
        "*--calibrate-peak-gflops=GFLOPS*",
        "*--calibrate-peak-bandwidth=GBPS*",
        "*--calibrate-device=DEVICE*",
        "*--calibrate-threads=N*",
        "*--calibrate-operations=LIST*",
        "*--calibrate-fusion-patterns=LIST*",
        "*--calibrate-compare=BASE*",
        "*--calibrate-compare-fail=*",
        "*--calibrate-tables*",
    ])


def test_short_option_forms_exist_only_where_a_conftest_asks_for_them(pytester, monkeypatch):
    # Installed, the plugin loads into every pytest run: a bare --quick or --device there
    # would clash with another plugin's. This checkout's conftest.py adds them for bench/.
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    bare = pytester.runpytest_subprocess(*PLUGIN_ARGS, "--help")
    assert "--calibrate-quick" in bare.stdout.str()
    assert not any(line.lstrip().startswith(("--quick", "--device", "--threads")) for line in bare.stdout.lines)
    assert pytester.runpytest_subprocess(*PLUGIN_ARGS, "--quick").ret == pytest.ExitCode.USAGE_ERROR

    pytester.makeconftest("""
        from calibration.plugin import add_short_options

        def pytest_addoption(parser):
            add_short_options(parser)
    """)
    pytester.makepyfile(test_options="""
        def test_options(request):
            assert request.config.getoption("calibrate_quick") is True
            assert request.config.getoption("calibrate_threads") == 1
    """)
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "--quick", "--threads", "1")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "--help")
    result.stdout.fnmatch_lines(["*--quick*same as --calibrate-quick*", "*--threads=N*same as --calibrate-threads*"])


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing/p.json", "ERROR: --calibrate-out: missing/p.json: directory missing does not exist"),
        ("outdir", "ERROR: --calibrate-out: outdir is a directory; give a file path such as outdir/profile.json"),
    ],
    ids=["parent-missing", "is-a-directory"],
)
def test_unwritable_calibrate_out_fails_before_any_benchmark(bench, target, message):
    (bench.path / "outdir").mkdir()

    result = run(bench, f"--calibrate-out={target}")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert not (bench.path / "ran.marker").exists()
    assert not (bench.path / "missing").exists()
    assert list((bench.path / "outdir").iterdir()) == []  # no probe file left behind


def test_benchmark_disable_writes_no_profile_and_says_why(bench):
    result = run(bench, "--benchmark-disable", "--calibrate-out=p.json")

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["calibration profile not written: --benchmark-disable runs each case once*"])
    assert (bench.path / "ran.marker").exists()  # the case still ran, untimed
    assert not (bench.path / "p.json").exists()


@pytest.mark.times_kernels
def test_xdist_worker_writes_no_profile(bench, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")

    result = run(bench, "--calibrate-out=p.json")

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    assert not (bench.path / "p.json").exists()
    result.stdout.no_fnmatch_line("*calibration profile*")  # a worker leaves the telling to the controller


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("parse", "text", "named"),
    [
        (options.parse_peak_gflops, "-5", "'-5'"),
        (options.parse_peak_gflops, "abc", "'abc'"),
        (options.parse_peak_gflops, "0", "'0'"),
        (options.parse_peak_gflops, "nan", "'nan'"),
        (options.parse_peak_gflops, "inf", "'inf'"),
        (options.parse_peak_gflops, "fp99=3", "'fp99=3'"),
        (options.parse_peak_gflops, "float32=510,fp99=3", "'fp99=3'"),
        (options.parse_peak_gflops, "float32=-1", "'-1'"),
        (options.parse_peak_gflops, "float32=", "''"),
        (options.parse_peak_bandwidth, "0", "'0'"),
        (options.parse_peak_bandwidth, "-1", "'-1'"),
        (options.parse_peak_bandwidth, "abc", "'abc'"),
        (options.parse_peak_bandwidth, "inf", "'inf'"),
    ],
)
def test_bad_peak_values_are_rejected_naming_the_value(parse, text, named):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse(text)
    assert named in str(info.value)


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (options.parse_peak_gflops, "510", {"float32": 510.0}),
        (options.parse_peak_gflops, "float32=510, bfloat16=1020", {"float32": 510.0, "bfloat16": 1020.0}),
        (options.parse_peak_bandwidth, "68.5", 68.5),
    ],
)
def test_good_peak_values_parse(parse, text, expected):
    assert parse(text) == expected


def test_bad_peak_is_a_usage_error_on_the_command_line(bench):
    # "-5" as its own argument: argparse must take it as the value, not as an option.
    result = run(bench, "--calibrate-peak-gflops", "-5", "--calibrate-out=p.json")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --calibrate-peak-gflops: *(GFLOPS) must be a positive number, got '-5'"])
    assert not (bench.path / "ran.marker").exists()


# --------------------------------------------------------------------------- interrupted


@pytest.mark.times_kernels
def test_interrupted_run_leaves_the_existing_profile_alone(bench):
    bench.makepyfile(test_zstop="""
        def test_stop():
            raise KeyboardInterrupt
    """)
    out = bench.path / "p.json"
    fold([record("dispatch", 1.0, n=1)], metadata(hardware_name="precious")).save(out)
    precious = out.read_text()

    result = run(bench, "test_bench.py", "test_zstop.py", "--calibrate-out=p.json")

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*dispatch[[]n=1[]]*float32*",  # the case was calibrated and folded...
        "calibration profile not written: the run was interrupted; p.json was left as it was.",
    ])
    assert out.read_text() == precious  # ...but not saved over the old profile
    assert sorted(p.name for p in bench.path.glob(".p.json.*")) == []  # no temporary or probe file


# --------------------------------------------------------------------------- pytest-benchmark


@pytest.mark.times_kernels
def test_pytest_benchmark_json_is_written_beside_the_profile(bench):
    result = run(bench, "--benchmark-json=bench.json", "--calibrate-out=p.json", "--calibrate-tables")

    assert result.ret == pytest.ExitCode.OK
    # --calibrate-tables brings pytest-benchmark's table back, before the summary
    out = result.stdout.str()
    assert "per-case tables are hidden" not in out
    assert out.index("Name (time in") < out.index("Hardware calibration:")
    assert KEY in load_calibration(bench.path / "p.json").operation_profiles
    benchmarks = json.loads((bench.path / "bench.json").read_text())["benchmarks"]
    assert [b["name"] for b in benchmarks] == ["test_dispatch[n=1/float32/cpu]"]
    assert benchmarks[0]["extra_info"]["calibration_key"] == KEY
    assert benchmarks[0]["group"] == "dispatch"


# --------------------------------------------------------------------------- selection


@pytest.mark.times_kernels
def test_operations_deselects_other_families(bench):
    result = run(bench, "--calibrate-operations", "matmul", "--calibrate-out=p.json")

    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.assert_outcomes(deselected=1)
    result.stdout.fnmatch_lines(["calibration profile not written: no calibration case ran*"])
    assert not (bench.path / "ran.marker").exists()
    assert not (bench.path / "p.json").exists()


def test_unknown_operation_is_a_usage_error_listing_the_families(bench):
    result = run(bench, "--calibrate-operations", "nosuch")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    families = ", ".join(sorted(FAMILIES))
    assert "dispatch" in families and "matmul" in families
    result.stderr.fnmatch_lines(
        [f"*argument --calibrate-operations: unknown operation or family 'nosuch'; families: {families};*"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_device_cuda_without_cuda_is_a_usage_error(bench):
    result = run(bench, "--calibrate-device", "cuda")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --calibrate-device cuda: CUDA is not available*"])
    assert not (bench.path / "ran.marker").exists()


def test_op_case_without_operation_marker_is_a_clear_error(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(test_unmarked="""
        def test_unmarked(op_case, calibrate):
            calibrate(op_case)
    """)

    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "--calibrate-quick")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*test_unmarked.py::test_unmarked: a test using op_case needs @pytest.mark.operation(NAME)*"
    ])
    assert result.ret != pytest.ExitCode.OK


# --------------------------------------------------------------------------- reading back


@pytest.fixture(scope="module")
def profile_text(tmp_path_factory) -> str:
    """A saved one-entry profile (synthetic timing, real save path)."""
    path = tmp_path_factory.mktemp("profile") / "p.json"
    fold([record("dispatch", 0.002, n=1)], metadata()).save(path)
    load_calibration(path)  # the unmodified file is valid
    return path.read_text()


def test_truncated_profile_names_the_file(profile_text, tmp_path):
    path = tmp_path / "cut.json"
    end = len(profile_text.rstrip())
    for cut in range(1, end):
        path.write_text(profile_text[:cut])
        with pytest.raises(ProfileError) as info:
            load_calibration(path)
        message = str(info.value)
        assert message.startswith(f"{path}: not valid JSON at line "), (cut, message)
        assert message.endswith("(the file looks truncated)"), (cut, message)


@pytest.mark.parametrize(
    "text", ['{"schema_version": 1,}', '{"schema_version": tx}', '{"schema_version": 1.}', '{"a": 1}t']
)
def test_malformed_but_complete_json_is_not_called_truncated(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ProfileError, match="not valid JSON") as info:
        load_calibration(path)
    assert str(path) in str(info.value)
    assert "truncated" not in str(info.value)


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, str(SCHEMA_VERSION)])
def test_wrong_schema_version_names_the_file_and_the_field(profile_text, tmp_path, version):
    data = json.loads(profile_text)
    data["schema_version"] = version
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))

    with pytest.raises(ProfileError) as info:
        load_calibration(path)
    assert str(info.value).startswith(f"{path}: field 'schema_version' is {version!r}; ")


@pytest.mark.parametrize(
    ("where", "value", "field"),
    [
        (("operation_profiles", KEY, "latency", "rounds"), "many", f"operation_profiles.{KEY}.latency.rounds"),
        (("operation_profiles", KEY, "flops"), "one", f"operation_profiles.{KEY}.flops"),
        (("metadata", "quick"), "maybe", "metadata.quick"),
        (("metadata", "threads"), [2], "metadata.threads"),
        (("measured", "dispatch_overhead_us"), {"us": 2}, "measured.dispatch_overhead_us"),
    ],
)
def test_field_of_the_wrong_type_names_the_file_and_the_field(profile_text, tmp_path, where, value, field):
    data = json.loads(profile_text)
    parent = data
    for part in where[:-1]:
        parent = parent[part]
    assert where[-1] in parent
    parent[where[-1]] = value
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))

    with pytest.raises(ProfileError) as info:
        load_calibration(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid profile: ") and "\n" not in message, message
    assert f"field '{field}': " in message, message


# --------------------------------------------------------------------------- fusion

BROKEN_FUSION_BENCH = """
    import dataclasses

    import pytest

    from calibration.measure import patterns


    REAL = patterns.BUILDERS["Add_ReLU"]


    def _broken_build(params, dtype, device):
        instance = REAL(params, dtype, device)
        real = instance.library
        return dataclasses.replace(instance, library=lambda: real() + 1.0)


    patterns.BUILDERS["Add_ReLU"] = _broken_build


    @pytest.mark.fusion("elementwise")
    def test_elementwise_fusion(fusion_case, calibrate):
        calibrate(fusion_case)
"""


@pytest.mark.times_kernels
def test_a_fused_variant_that_disagrees_fails_and_is_never_recorded(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(test_fusion_bench=BROKEN_FUSION_BENCH)
    result = pytester.runpytest_subprocess(
        *PLUGIN_ARGS, "--calibrate-quick", "--calibrate-fusion-patterns", "Add_ReLU", "--calibrate-out=p.json",
    )

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # deselected: the other elementwise patterns' six quick cases (two each)
    result.assert_outcomes(passed=1, failed=1, deselected=6)
    result.stdout.fnmatch_lines(["*fused output differs from the unfused output*"])
    profile = load_calibration(pytester.path / "p.json")
    assert profile.fusion_profiles == {}  # the only fused variant failed: no speedup recorded


@pytest.mark.times_kernels
def test_fusion_patterns_select_families_and_twins_run_in_shuffled_order(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    bench_dir = __import__("pathlib").Path(__file__).resolve().parents[2] / "bench"
    result = pytester.runpytest_subprocess(
        *PLUGIN_ARGS, str(bench_dir), "--calibrate-fusion-patterns", "conv,elementwise", "--collect-only", "-q",
    )
    assert result.ret == pytest.ExitCode.OK
    ids = [line for line in result.stdout.lines if "::" in line]
    assert ids and all("test_conv_fusion" in i or "test_elementwise_fusion" in i for i in ids)
    # twins are adjacent, and not every group starts with the unfused variant
    groups: dict[str, list[str]] = {}
    for line in ids:
        shape, variant = line.rsplit("/", 1)
        groups.setdefault(shape, []).append(variant.rstrip("]"))
    assert all(len(v) == len(set(v)) >= 2 for v in groups.values())
    firsts = {variants[0] for variants in groups.values()}
    assert firsts - {"unfused"}, "every pattern times its unfused variant first"
    positions = [ids.index(line) for line in ids]
    assert positions == sorted(positions)
    # operations are not selected when only --fusion-patterns is given
    assert not any("test_conv2d" in i for i in ids)


def test_allocator_probes_run_first_whatever_their_file_is_called(bench):
    """The allocator probes must meet a heap no other case has used; file names do not decide that."""
    alloc = Path(__file__).resolve().parents[2] / "bench" / "test_alloc.py"
    bench.makepyfile(test_zz_alloc=alloc.read_text())  # the real probes, in a file sorting after test_bench.py
    result = bench.runpytest_subprocess(*PLUGIN_ARGS, "--calibrate-quick", "--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line]
    assert [i.split("::")[1].split("[")[0] for i in ids] == ["test_fill_fresh"] * 2 + ["test_fill"] * 2 + [
        "test_dispatch"]
    assert "n=8912896" in ids[0] and "n=7864320" in ids[1]  # 34 MiB before 30 MiB: largest first


def test_the_bench_directory_runs_every_case_the_package_installs():
    """``pytest bench/`` collects the shims in bench/, each assigning the installed module's
    cases: one left out is a case no calibration from the repository times (gelu_tanh was)."""
    import importlib
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    installed = sorted(p.stem for p in (root / "calibration" / "bench").glob("test_*.py"))
    assert installed == sorted(p.stem for p in (root / "bench").glob("test_*.py"))
    for stem in installed:
        cases = importlib.import_module(f"calibration.bench.{stem}")
        shim = (root / "bench" / f"{stem}.py").read_text()
        wanted = [name for name in vars(cases) if name.startswith("test_") and callable(getattr(cases, name))]
        missing = [name for name in wanted if f"{name} = cases.{name}" not in shim]
        assert not missing, f"bench/{stem}.py does not run {', '.join(missing)}"


def test_a_case_test_whose_grid_is_empty_in_this_run_is_deselected(pytester):
    # a quick run times STREAM's triad alone at DRAM size: the copy has no quick case
    pytester.makepyfile(test_memory="""
        import pytest

        @pytest.mark.operation("stream_copy")
        def test_stream_copy(op_case, calibrate):
            calibrate(op_case)
    """)
    result = run(pytester, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["*1 deselected*"])
    assert "INTERNALERROR" not in result.stdout.str() and "skipped" not in result.stdout.str()
