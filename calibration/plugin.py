"""The pytest plugin: options, case parametrization, and folding timings into a profile.

Registered by the root ``conftest.py`` and by the ``pytest11`` entry point. It only
translates between pytest and the pure modules (``fold``, ``storage``, ``report``).
"""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from calibration.measure import canary, harness, heap, machine, options, windows
from calibration.measure.fold import FusionRecord, Record, fold, unpaired
from calibration.measure.kernels import dtype_unsupported_reason
from calibration.profile.schema import Peak, PeakSource
from calibration.profile.storage import ProfileError, check_output, load_calibration
from calibration.specs import host
from calibration.specs import patterns as fusion
from calibration.specs.dtypes import INPUT_DTYPE_NAMES
from calibration.specs.operations import OPERATIONS, Case

HELP_OUT = (
    "Write the calibration profile (JSON) to PATH, atomically; an existing file there must be a profile, "
    "and a symlink is written through to its target. Default: %(default)r (no profile)."
)
HELP_QUICK = ("Calibrate one or two representative sizes per operation and pattern, compiling only the patterns "
              "the library has no fused kernel for. Default: %(default)r.")
HELP_HARDWARE = "Hardware name recorded in the profile. Default: the detected CPU or GPU name."
HELP_PEAK_GFLOPS = (
    "Theoretical peak GFLOPS from a datasheet: a number (float32) or DTYPE=N,... "
    "Recorded as source 'user'. Default: %(default)r (unknown)."
)
HELP_PEAK_BW = "Theoretical peak memory bandwidth in GB/s. Default: %(default)r (unknown)."
HELP_DEVICE = "Device to calibrate: cpu or cuda. Default: cuda when available, else cpu."
HELP_THREADS = "torch.set_num_threads(N) for the run. Default: torch's default."
HELP_FUSION = (
    "Comma-separated fusion families (linear, conv, attention, elementwise, all) or pattern names. "
    "Given alone it runs only fusion cases; --calibrate-operations alone runs only operation cases. Default: all."
)
HELP_COMPARE = (
    "Compare this run's profile with the profile BASE when the run ends (as 'python -m calibration "
    "compare' does: median latency, Mann-Whitney U test at p < 0.002) and print the differences; "
    "works without --calibrate-out. Default: %(default)r."
)
HELP_COMPARE_FAIL = (
    "With --calibrate-compare, fail the run when an entry is significantly slower than in BASE by more "
    "than THRESHOLD, a percentage (10%% or 10). Without it regressions beyond 10%% are reported only. "
    "Default: %(default)r."
)
HELP_MODEL = (
    "Also calibrate every distinct kernel and fusion group of this model at its own shapes: a registered "
    "model (resnet18, mobilenet_v2, bert_layer, mlp) or MODULE:FACTORY returning an nn.Module. Repeat for "
    "several. Predictions of that model then hit exact entries. Default: none."
)
HELP_MODEL_BATCH = "Batch sizes for --calibrate-model, comma-separated. Default: 1."
HELP_MODEL_SHAPE = ("Input shape without the batch for a --calibrate-model MODULE:FACTORY, e.g. 3,224,224; "
                    "once for all such models, or once for each in their order.")
HELP_MODEL_DTYPE = ("dtype of a --calibrate-model MODULE:FACTORY's example input (int64: token ids), once for all "
                    "or once for each. Default: float32.")
HELP_WINDOWS = (
    "1: time each case in one window (one whose window ran while the host's vCPUs were slow, by a small parallel "
    "conv timed around it, gets later windows at the end of the run). 2: time each operation case (not cold, "
    "alloc, dispatch, module or sequence ones) again for 0.1 s at the end of the run and, where the two medians "
    "differ by more than x1.2, a third time a pass later, keeping the middle window: one window is one state of a "
    "shared host. Default: 2, 1 with --quick (2 with --quick and --calibrate-model)."
)
HELP_TABLES = (
    "Also print pytest-benchmark's per-case tables (250 columns, about one line per case), which a run with "
    "calibration cases hides so that it ends on the calibration summary. Default: %(default)r."
)
TABLES_HIDDEN = "(pytest-benchmark's per-case tables are hidden: --calibrate-tables shows them)"
HELP_OPERATIONS = (
    "Comma-separated operation families or names to calibrate "
    f"({', '.join(sorted({op.family for op in OPERATIONS.values()}))}, or 'all'; 'none' with "
    "--fusion-patterns runs fusion cases only). Default: all."
)


@dataclass
class CalibrationState:
    out: Path | None
    quick: bool
    device: str
    hardware: str | None
    peak_gflops: dict[str, float]
    peak_bandwidth: float | None
    selection: frozenset[str] | None
    fusion_selection: frozenset[str] | None
    records: list[Record] = field(default_factory=list)
    fusion_records: list[FusionRecord] = field(default_factory=list)
    not_written: str | None = None  # why no profile is written, when one was asked for
    written: Path | None = None
    load_before: float | None = field(default_factory=host.load_average)
    busy_before: float | None = None
    timed: host.CpuTimes | None = None  # CPU time over every timed case, summed
    unpaired: list[str] = field(default_factory=list)
    calibration: object | None = None
    compare_base: object | None = None  # the loaded BASE profile of --calibrate-compare
    compare_path: str | None = None
    compare_fail: float | None = None
    comparison: object | None = None
    compare_problem: str | None = None  # why no comparison was made
    workload: object | None = None  # the --calibrate-model cases (calibration.workload.WorkloadCases)
    tables_hidden: bool = False  # pytest-benchmark's per-case tables quieted for the summary to end the run
    heap: str | None = None  # the C heap cases were timed on (measure.heap), once the first case ran
    windows: int = 2  # windows an operation case is timed in (measure.windows)
    rechecked: object | None = None  # the later windows' outcome (measure.windows.Outcome)

    def other_cpus_since(self, before: host.CpuTimes | None) -> float | None:
        """CPUs other work kept busy since ``before`` (a case's start); adds the interval to
        the run's total, so that the profile says how busy the machine was while it timed."""
        after = host.cpu_times()
        if before is None or after is None:
            return None
        elapsed = after - before
        self.timed = elapsed if self.timed is None else self.timed + elapsed
        return elapsed.other_cpus()


STATE = pytest.StashKey[CalibrationState]()
FUSION_DTYPES = {"cpu": ("float32",), "cuda": ("float32", "float16")}


GROUP = ("calibration", "hardware calibration (calibration package)")
# Options named after what they set, each with one --calibrate- prefix: the plugin loads into
# every pytest run of the environment it is installed in (its pytest11 entry point), where a
# bare --quick, --device or --threads would clash with another plugin's or a project's own.
OPTIONS: dict[str, dict] = {
    "quick": dict(action="store_true", default=False, help=HELP_QUICK),
    "hardware": dict(metavar="NAME", type=options.parse_hardware, default=None, help=HELP_HARDWARE),
    "peak-gflops": dict(metavar="GFLOPS", type=options.parse_peak_gflops, default=None, help=HELP_PEAK_GFLOPS),
    "peak-bandwidth": dict(metavar="GBPS", type=options.parse_peak_bandwidth, default=None, help=HELP_PEAK_BW),
    "device": dict(metavar="DEVICE", type=options.parse_device, default=None, help=HELP_DEVICE),
    "windows": dict(metavar="N", type=options.parse_windows, default=None, help=HELP_WINDOWS),
    "threads": dict(metavar="N", type=options.parse_threads, default=None, help=HELP_THREADS),
    "operations": dict(metavar="LIST", type=options.parse_operations, default=None, help=HELP_OPERATIONS),
    "fusion-patterns": dict(metavar="LIST", type=options.parse_fusion_patterns, default=None, help=HELP_FUSION),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(*GROUP)
    group.addoption("--calibrate-out", metavar="PATH", type=options.parse_calibrate_out, default=None,
                    help=HELP_OUT)
    for name, kwargs in OPTIONS.items():
        group.addoption(f"--calibrate-{name}", **kwargs)
    group.addoption("--calibrate-model", metavar="MODEL", action="append", default=None, help=HELP_MODEL)
    group.addoption("--calibrate-model-batch", metavar="LIST", type=options.parse_batches, default=(1,),
                    help=HELP_MODEL_BATCH)
    group.addoption("--calibrate-model-input-shape", metavar="D,D,...", type=options.parse_model_shape,
                    action="append", default=None, help=HELP_MODEL_SHAPE)
    group.addoption("--calibrate-model-input-dtype", choices=INPUT_DTYPE_NAMES, action="append", default=None,
                    help=HELP_MODEL_DTYPE)
    group.addoption("--calibrate-compare", metavar="BASE", type=options.parse_calibrate_compare, default=None,
                    help=HELP_COMPARE)
    group.addoption("--calibrate-compare-fail", metavar="THRESHOLD", type=options.parse_compare_fail,
                    default=None, help=HELP_COMPARE_FAIL)
    group.addoption("--calibrate-tables", action="store_true", default=False, help=HELP_TABLES)


def add_short_options(parser: pytest.Parser) -> None:
    """``--quick``, ``--device``... as aliases of the ``--calibrate-`` options, for a project
    whose own ``conftest.py`` asks for them (this checkout's does, for ``pytest bench/``)."""
    group = parser.getgroup(*GROUP)
    for name, kwargs in OPTIONS.items():
        dest = "calibrate_" + name.replace("-", "_")
        group.addoption(f"--{name}", **{**kwargs, "dest": dest, "help": f"same as --calibrate-{name}"})


def _xdist_active(config: pytest.Config) -> bool:
    return bool(
        os.environ.get("PYTEST_XDIST_WORKER")
        or getattr(config.option, "numprocesses", None)
        or getattr(config.option, "dist", "no") != "no"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "operation(name): parametrize the test's op_case over the registry's cases for name"
    )
    config.addinivalue_line(
        "markers", "fusion(family): parametrize the test's fusion_case over that family's patterns and variants"
    )
    import torch

    device = config.getoption("calibrate_device")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--calibrate-device cuda: CUDA is not available in this torch build or machine")
    threads = config.getoption("calibrate_threads")
    if threads is not None:
        torch.set_num_threads(threads)

    out = config.getoption("calibrate_out")
    fusion_only = config.getoption("calibrate_operations") == frozenset()
    if fusion_only and config.getoption("calibrate_fusion_patterns") is None:
        raise pytest.UsageError("--calibrate-operations none selects no operation case; add "
                                "--calibrate-fusion-patterns to run fusion cases only")
    state = CalibrationState(
        out=Path(out) if out is not None else None,
        quick=config.getoption("calibrate_quick"),
        device=device,
        hardware=config.getoption("calibrate_hardware"),
        peak_gflops=config.getoption("calibrate_peak_gflops") or {},
        peak_bandwidth=config.getoption("calibrate_peak_bandwidth"),
        selection=config.getoption("calibrate_operations"),
        fusion_selection=config.getoption("calibrate_fusion_patterns"),
        windows=config.getoption("calibrate_windows") or options.default_windows(
            quick=config.getoption("calibrate_quick"), workload=bool(config.getoption("calibrate_model"))),
    )
    config.stash[STATE] = state
    _load_compare_base(config, state)
    _load_workload(config, state)
    if state.out is None:
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):
        state.out = None  # workers never write; the controller explains why
        return
    if _xdist_active(config):
        state.not_written = (
            "pytest-xdist is active: parallel workers share the cores and skew every timing "
            "(and pytest-benchmark disables itself). Run without -n/--dist to calibrate."
        )
        return
    if config.getoption("benchmark_disable", False) and not config.getoption("benchmark_enable", False):
        state.not_written = "--benchmark-disable runs each case once without timing: nothing to calibrate from."
        return
    try:
        check_output(out)  # as given: "dir/" names a directory, Path("dir/") would not
    except ProfileError as exc:
        raise pytest.UsageError(f"--calibrate-out: {exc}") from None
    _check_benchmark_json(config, state.out)


def _check_benchmark_json(config: pytest.Config, out: Path) -> None:
    """pytest-benchmark writes its report at the end too: at the profile's path it would replace it."""
    report = config.getoption("benchmark_json", None)
    if report is None:
        return
    if os.path.realpath(report) == os.path.realpath(out):
        raise pytest.UsageError(f"--benchmark-json {report} is the --calibrate-out path: the benchmark report "
                                "would replace the profile; give them different paths")


def _load_workload(config: pytest.Config, state: CalibrationState) -> None:
    """Partition the --calibrate-model models now: a model that cannot load stops the run first."""
    specs = config.getoption("calibrate_model")
    if not specs:
        return
    from calibration.workload import WorkloadCases, model_cases

    # the i-th shape and dtype go with the i-th MODULE:FACTORY model; one of each goes with all
    factories = sum(":" in spec for spec in specs)
    given = {}
    for option, default in (("input_shape", None), ("input_dtype", "float32")):
        values = config.getoption(f"calibrate_model_{option}") or [default]
        if len(values) not in (1, factories):
            raise pytest.UsageError(
                f"--calibrate-model-{option.replace('_', '-')} given {len(values)} times for {factories} "
                "MODULE:FACTORY models; give it once for all of them, or once for each, in their order")
        given[option] = iter(values * factories if len(values) == 1 else values)
    state.workload = WorkloadCases()
    try:
        for spec in specs:
            own = {option: next(values) for option, values in given.items()} if ":" in spec else {}
            model_cases([spec], config.getoption("calibrate_model_batch"), device=state.device, **own,
                        dtypes=FUSION_DTYPES[state.device][:1], found=state.workload)
    except (ValueError, ImportError, AttributeError, RuntimeError) as exc:
        raise pytest.UsageError(f"--calibrate-model: {exc}") from None


def _load_compare_base(config: pytest.Config, state: CalibrationState) -> None:
    """Read BASE now, so that a bad one stops the run before any case is timed."""
    path, fail = config.getoption("calibrate_compare"), config.getoption("calibrate_compare_fail")
    if fail is not None and path is None:
        raise pytest.UsageError("--calibrate-compare-fail needs --calibrate-compare=BASE.json to compare with")
    if path is None:
        return
    try:
        state.compare_base = load_calibration(path)
    except ProfileError as exc:
        raise pytest.UsageError(f"--calibrate-compare: {exc}") from None
    state.compare_path, state.compare_fail = path, fail


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "op_case" in metafunc.fixturenames:
        _parametrize_operation(metafunc)
    if "fusion_case" in metafunc.fixturenames:
        _parametrize_fusion(metafunc)


def _marker_arg(metafunc: pytest.Metafunc, marker: str, fixture: str, known) -> str:
    mark = metafunc.definition.get_closest_marker(marker)
    if mark is None or not mark.args:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: a test using {fixture} needs @pytest.mark.{marker}(NAME)"
        )
    name = mark.args[0]
    if name not in known:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: unknown {marker} {name!r}; known: {', '.join(sorted(known))}"
        )
    return name


def _parametrize_operation(metafunc: pytest.Metafunc) -> None:
    name = _marker_arg(metafunc, "operation", "op_case", OPERATIONS)
    state = metafunc.config.stash[STATE]
    cases = OPERATIONS[name].cases(quick=_quick_grid(state, OPERATIONS[name].family), device=state.device)
    cases += _workload_cases(state, state.workload.operations.get(name, []) if state.workload else [], cases)
    metafunc.parametrize("op_case", cases, ids=[case.id for case in cases])


def _quick_grid(state: CalibrationState, family: str) -> bool:
    """Whether a family runs its quick grid: in a --quick run, all but the sequence family's
    probes when --calibrate-model adds a model's kernels. Its kernels then hit exact entries and
    what is left of its error is what they pay in sequence, which those probes price, and their
    full grid takes 2 s more. On the 2-vCPU Xeon VM the quick grid's three matmul sizes read a
    share of 0.43 of the private caches taken by a 1.7 MB matmul where the full grid read 0.67;
    with the full grid's after_busy and reread points in three saved workload profiles, their
    six runs of the reference models rescored to medians of 4.2-7.3% (4.7-8.1% before)."""
    return state.quick and not (state.workload is not None and family == "sequence")


def _parametrize_fusion(metafunc: pytest.Metafunc) -> None:
    family = _marker_arg(metafunc, "fusion", "fusion_case", fusion.FAMILIES)
    state = metafunc.config.stash[STATE]
    dtypes = FUSION_DTYPES[state.device]
    cases = [
        case
        for pattern in fusion.PATTERNS.values()
        if pattern.family == family
        for case in pattern.cases(quick=state.quick, device=state.device, dtypes=dtypes)
    ]
    cases += _workload_cases(state, state.workload.fusion.get(family, []) if state.workload else [], cases)
    metafunc.parametrize("fusion_case", cases, ids=[case.id for case in cases])


def _workload_cases(state: CalibrationState, extra: list, grid: list) -> list:
    """The --calibrate-model cases the grid does not already have."""
    have = {case.key for case in grid}
    return [case for case in extra if case.key not in have]


def _case_of(item: pytest.Item) -> Case | fusion.FusionCase | None:
    """The case an item times; None for other tests and for the placeholder pytest collects
    (skipped) where a grid has no case for it (a quick run's STREAM copy, scale and add)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    case = params.get("op_case") or params.get("fusion_case")
    return case if isinstance(case, Case | fusion.FusionCase) else None


def _placeholder(item: pytest.Item, case: Case | fusion.FusionCase | None) -> bool:
    """Whether ``item`` (whose case is ``case``) is pytest's skipped placeholder for a case
    test whose grid is empty in this run: deselected, not reported as a skip."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return case is None and ("op_case" in params or "fusion_case" in params)


def _selected(state: CalibrationState, case) -> bool:
    if isinstance(case, fusion.FusionCase):
        if state.fusion_selection is None:
            return state.selection is None
        return case.pattern in state.fusion_selection
    if state.selection is None:
        return state.fusion_selection is None
    return case.operation in state.selection


def _shuffle_twins(items: list[pytest.Item]) -> list[pytest.Item]:
    """Put each pattern's variants in a random order (seeded by its key, so runs are
    repeatable) so that no variant is always timed first, right after a cold start."""
    out: list[pytest.Item] = []
    i = 0
    while i < len(items):
        case = _case_of(items[i])
        if not isinstance(case, fusion.FusionCase):
            out.append(items[i])
            i += 1
            continue
        j = i
        while j < len(items) and isinstance(_case_of(items[j]), fusion.FusionCase) \
                and _case_of(items[j]).shape_key == case.shape_key:
            j += 1
        group = items[i:j]
        random.Random(case.shape_key).shuffle(group)
        out.extend(group)
        i = j
    return out


# Families timed before every other case, whichever file they are in. The allocator probes
# must see a heap that no other case has left large free blocks in: a 34 MiB request that
# a freed 48 MiB block can serve faults nothing in, which is not what a model's call sees.
RUN_FIRST_FAMILIES = ("alloc",)


def _run_order(item: pytest.Item) -> int:
    case = _case_of(item)
    return 0 if isinstance(case, Case) and case.spec.family in RUN_FIRST_FAMILIES else 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[STATE]
    keep, drop = [], []
    for item in items:
        case = _case_of(item)
        if _placeholder(item, case) or (case is not None and not _selected(state, case)):
            drop.append(item)
            continue
        if case is not None and state.device == "cuda":
            item.add_marker(pytest.mark.benchmark(timer=harness.cuda_synchronized_timer))
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    keep.sort(key=_run_order)  # stable: within a rank, collection order (largest alloc size first)
    items[:] = _shuffle_twins(keep)
    if any(_case_of(item) is not None for item in items):
        state.busy_before = host.busy_cpus()
        state.tables_hidden = _hide_benchmark_tables(config)


def _hide_benchmark_tables(config: pytest.Config) -> bool:
    """Quiet pytest-benchmark's per-case tables unless asked for, so that a calibration ends
    on its summary (a quick conv run printed 80 lines of 250-column tables after it).

    pytest-benchmark reads --benchmark-quiet once, when its session is made, and has no
    hook for it: its session's ``quiet`` is set here, as --benchmark-quiet would have.
    """
    session = getattr(config, "_benchmarksession", None)
    if session is None or config.getoption("calibrate_tables") or config.getoption("benchmark_verbose", False):
        return False
    session.quiet = True
    return True


@pytest.fixture
def calibrate(request: pytest.FixtureRequest, benchmark):
    """``calibrate(case)`` times an operation or fusion case and records it for the profile."""
    state = request.config.stash[STATE]
    budget = harness.Budget.for_run(state.quick)

    def run(case):
        reason = dtype_unsupported_reason(case.dtype, case.device)
        if reason:
            pytest.skip(reason)
        if state.heap is None:
            state.heap = ("steady: mmap and trimming off (the alloc family maps blocks above 32 MiB fresh)"
                          if heap.set_steady() else "as the process found it (no glibc mallopt here)")
        if isinstance(case, fusion.FusionCase):
            return _calibrate_fusion(state, benchmark, case, budget)
        before = host.cpu_times()
        # a case timed again at the end of the run is bracketed by the host's state canary, so
        # that a later window taken in another state of the vCPUs does not outvote it
        # (and its fastest reading in the profile tells an accuracy run which state it was taken in)
        bracket = case.device == "cpu" and case.spec.family not in windows.SKIPPED_FAMILIES
        reading = canary.canary_ms() if bracket else None
        # the alloc family prices a fresh page: glibc maps its blocks fresh
        with heap.mapping_fresh() if case.spec.family == "alloc" else nullcontext():
            record = harness.measure(benchmark, case, budget)
        if record is not None:
            record = replace(record, other_cpus=state.other_cpus_since(before),
                             canary_ms=max(reading, canary.canary_ms()) if reading is not None else None)
            state.records.append(record)
        return record

    return run


def _calibrate_fusion(state: CalibrationState, benchmark, case, budget: harness.Budget):
    import torch

    from calibration.measure.fusion_runner import CompilerUnavailable, prepare

    with torch.no_grad():
        try:
            prepared = prepare(case)  # raises AssertionError when fused != unfused
        except CompilerUnavailable as exc:
            pytest.skip(str(exc))
        benchmark.group = case.shape_key
        benchmark.extra_info.update(
            calibration_key=case.key, variant=case.variant, flops=case.flops, bytes=case.bytes,
            compile_seconds=prepared.compile_seconds,
        )
        # sampled after compiling: inductor's compile workers are other processes
        before = host.cpu_times()
        if prepared.baseline is None:
            latency = harness.time_kernel(benchmark, prepared.kernel, device=case.device, budget=budget)
            baseline = None
        else:
            timed = harness.time_interleaved(
                benchmark, prepared.kernel, prepared.baseline, device=case.device, budget=budget)
            latency, baseline = timed if timed is not None else (None, None)
    if latency is None:
        return None
    record = FusionRecord(case, latency, prepared.compile_seconds, baseline, state.other_cpus_since(before))
    state.fusion_records.append(record)
    return record


def _peaks(state: CalibrationState) -> tuple[dict[str, Peak], Peak | None]:
    gflops = {dtype: Peak(value=v, source=PeakSource.USER) for dtype, v in state.peak_gflops.items()}
    bandwidth = Peak(value=state.peak_bandwidth, source=PeakSource.USER) if state.peak_bandwidth else None
    return gflops, bandwidth


def _recheck(state: CalibrationState) -> None:
    """Time each operation case in a later window (measure.windows) before the profile is
    folded; in a run of one window a case, only those whose window the host-state canary read
    slow (measure.canary)."""
    state.rechecked = windows.recheck(state.records, only_slow=state.windows == 1)
    state.records = state.rechecked.records


def _fastest_canary(state: CalibrationState) -> float | None:
    later = state.rechecked.fastest_canary_ms if state.rechecked is not None else None
    return canary.fastest_reading([*(r.canary_ms for r in state.records), later])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(STATE, None)
    if (state is not None and state.records and exitstatus != pytest.ExitCode.INTERRUPTED
            and not os.environ.get("PYTEST_XDIST_WORKER")):
        _recheck(state)
    if state is not None and state.heap is not None:
        heap.set_mapping()  # a caller that predicts in this process next replays a mapping heap
    if state is None or not (state.records or state.fusion_records) or os.environ.get("PYTEST_XDIST_WORKER"):
        if state is not None and state.out is not None and state.not_written is None:
            state.not_written = "no calibration case ran (deselected, skipped or failed)."
        if state is not None:
            _compare(session, state)
        return
    metadata = machine.describe(
        device=state.device, hardware_name=state.hardware, quick=state.quick,
        command=list(session.config.invocation_params.args), load_before=state.load_before,
        busy_before=state.busy_before, busy_during=state.timed.other_cpus() if state.timed else None,
        heap=state.heap, canary_ms=_fastest_canary(state),
    )
    peak_gflops, peak_bandwidth = _peaks(state)
    origins = {key: ", ".join(labels) for key, labels in state.workload.origin.items()} if state.workload else {}
    state.calibration = fold(state.records, metadata, fusion_records=state.fusion_records, origins=origins,
                             peak_gflops=peak_gflops, peak_bandwidth=peak_bandwidth)
    state.unpaired = unpaired(state.fusion_records)
    _compare(session, state)
    if state.out is None or state.not_written:
        return
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        state.not_written = f"the run was interrupted; {state.out} was left as it was."
        return
    try:
        state.written = state.calibration.save(state.out)
    except ProfileError as exc:  # the disk filled, the directory went away: the old file stands
        state.not_written = str(exc)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _compare(session: pytest.Session, state: CalibrationState) -> None:
    """Compare the folded profile with BASE; a significant regression fails the session
    when --calibrate-compare-fail is given (a run that already failed keeps its status)."""
    from calibration.report.compare import DEFAULT_THRESHOLD, NothingInCommon, compare

    if state.compare_base is None or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    try:
        if state.calibration is None:
            raise NothingInCommon(state.not_written or "no calibration case ran (deselected, skipped or failed)")
        state.comparison = compare(
            state.compare_base, state.calibration,
            threshold=DEFAULT_THRESHOLD if state.compare_fail is None else state.compare_fail,
            base_name=state.compare_path, new_name=str(state.out) if state.out else "this run",
        )
    except NothingInCommon as exc:
        state.compare_problem = str(exc)
        failed = state.compare_fail is not None  # a gate that compared nothing must not pass
    else:
        failed = state.compare_fail is not None and state.comparison.regressed
    if failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _write_comparison(terminalreporter, state: CalibrationState) -> None:
    from calibration.report.compare_report import render_text

    if state.compare_base is None:
        return
    terminalreporter.write_sep("-", "calibration compare")
    if state.comparison is None:
        why = state.compare_problem
        terminalreporter.write_line(f"nothing compared with {state.compare_path}: {why}", red=True)
        return
    verbose = terminalreporter.config.getoption("verbose") > 0
    for line in render_text(state.comparison, show_unchanged=verbose).splitlines():
        terminalreporter.write_line(line)
    if state.comparison.regressed:
        failing = state.compare_fail is not None
        outcome = "fails the run" if failing else "reported only (no --calibrate-compare-fail)"
        terminalreporter.write_line(f"calibration regressed against {state.compare_path}: {outcome}", red=True)


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables: the run ends on the summary
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.calibration is not None:
        terminalreporter.write_sep("-", "calibration")
        if state.tables_hidden:
            terminalreporter.write_line(TABLES_HIDDEN)
        for line in state.calibration.summary().splitlines():
            terminalreporter.write_line(line)
    if state.rechecked is not None and state.rechecked.checked:
        r = state.rechecked
        slow = (f"; {r.slow_windows} of the disputed cases' windows ran while the host's vCPUs were slow (a small "
                f"parallel conv at over x{canary.SLOW} its fastest): those slower than a fast window did not vote"
                if r.slow_windows else "")
        terminalreporter.write_line(
            f"later windows: {r.checked} operation cases "
            + ("whose window ran while the host's vCPUs were slow " if state.windows == 1 else "")
            + f"timed again at the end of the run ({r.seconds:.0f} s); "
            f"{r.disputed} differed from their first window by more than x{windows.DISAGREE} and got a third, "
            f"{r.replaced} now keep a later window (their entries' latency.windows_ms has every window's median)"
            + slow)
    for key in state.unpaired:
        terminalreporter.write_line(f"no speedup for {key}: its unfused twin did not run (deselected?)", yellow=True)
    if state.written is not None:
        terminalreporter.write_line(f"calibration profile written to {state.written}", green=True)
    elif state.not_written:
        terminalreporter.write_line(f"calibration profile not written: {state.not_written}", yellow=True)
    _write_comparison(terminalreporter, state)
