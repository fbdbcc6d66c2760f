"""The pytest plugin: options, case parametrization, and folding timings into a profile.

Registered by the root ``conftest.py`` and by the ``pytest11`` entry point. It only
translates between pytest and the pure modules (``fold``, ``storage``, ``report``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from calibration import harness, machine, options
from calibration.fold import Record, fold
from calibration.ops import OPERATIONS, dtype_unsupported_reason
from calibration.schema import Peak, PeakSource
from calibration.storage import ProfileError, check_writable

HELP_OUT = "Write the calibration profile (JSON) to PATH. Default: %(default)r (no profile)."
HELP_QUICK = "Calibrate one or two representative sizes per operation. Default: %(default)r."
HELP_HARDWARE = "Hardware name recorded in the profile. Default: the detected CPU or GPU name."
HELP_PEAK_GFLOPS = (
    "Theoretical peak GFLOPS from a datasheet: a number (float32) or DTYPE=N,... "
    "Recorded as source 'user'. Default: %(default)r (unknown)."
)
HELP_PEAK_BW = "Theoretical peak memory bandwidth in GB/s. Default: %(default)r (unknown)."
HELP_DEVICE = "Device to calibrate: cpu or cuda. Default: cuda when available, else cpu."
HELP_THREADS = "torch.set_num_threads(N) for the run. Default: torch's default."
HELP_OPERATIONS = (
    "Comma-separated operation families or names to calibrate "
    f"({', '.join(sorted({op.family for op in OPERATIONS.values()}))}, or 'all'). Default: all."
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
    records: list[Record] = field(default_factory=list)
    not_written: str | None = None  # why no profile is written, when one was asked for
    written: Path | None = None
    calibration: object | None = None


STATE = pytest.StashKey[CalibrationState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("calibration", "hardware calibration (calibration package)")
    group.addoption("--calibrate-out", metavar="PATH", default=None, help=HELP_OUT)
    group.addoption("--quick", action="store_true", default=False, help=HELP_QUICK)
    group.addoption("--hardware", metavar="NAME", default=None, help=HELP_HARDWARE)
    group.addoption("--peak-gflops", metavar="GFLOPS", type=options.parse_peak_gflops, default=None,
                    help=HELP_PEAK_GFLOPS)
    group.addoption("--peak-bandwidth", metavar="GBPS", type=options.parse_peak_bandwidth, default=None,
                    help=HELP_PEAK_BW)
    group.addoption("--device", metavar="DEVICE", type=options.parse_device, default=None, help=HELP_DEVICE)
    group.addoption("--threads", metavar="N", type=options.parse_threads, default=None, help=HELP_THREADS)
    group.addoption("--operations", metavar="LIST", type=options.parse_operations, default=None,
                    help=HELP_OPERATIONS)


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
    import torch

    device = config.getoption("device")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: CUDA is not available in this torch build or machine")
    threads = config.getoption("threads")
    if threads is not None:
        torch.set_num_threads(threads)

    out = config.getoption("calibrate_out")
    state = CalibrationState(
        out=Path(out) if out else None,
        quick=config.getoption("quick"),
        device=device,
        hardware=config.getoption("hardware"),
        peak_gflops=config.getoption("peak_gflops") or {},
        peak_bandwidth=config.getoption("peak_bandwidth"),
        selection=config.getoption("operations"),
    )
    config.stash[STATE] = state
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
        check_writable(state.out)
    except ProfileError as exc:
        raise pytest.UsageError(f"--calibrate-out: {exc}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "op_case" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("operation")
    if marker is None or not marker.args:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: a test using op_case needs @pytest.mark.operation(NAME)"
        )
    name = marker.args[0]
    if name not in OPERATIONS:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: unknown operation {name!r}; known: {', '.join(sorted(OPERATIONS))}"
        )
    state = metafunc.config.stash[STATE]
    cases = OPERATIONS[name].cases(quick=state.quick, device=state.device)
    metafunc.parametrize("op_case", cases, ids=[case.id for case in cases])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[STATE]
    keep, drop = [], []
    for item in items:
        case = getattr(item, "callspec", None) and item.callspec.params.get("op_case")
        if case is not None and state.selection is not None and case.operation not in state.selection:
            drop.append(item)
            continue
        if case is not None and state.device == "cuda":
            item.add_marker(pytest.mark.benchmark(timer=harness.cuda_synchronized_timer))
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def calibrate(request: pytest.FixtureRequest, benchmark):
    """``calibrate(case)`` times the case with pytest-benchmark and records it for the profile."""
    state = request.config.stash[STATE]
    budget = harness.Budget.for_run(state.quick)

    def run(case):
        reason = dtype_unsupported_reason(case.dtype, case.device)
        if reason:
            pytest.skip(reason)
        record = harness.measure(benchmark, case, budget)
        if record is not None:
            state.records.append(record)
        return record

    return run


def _peaks(state: CalibrationState) -> tuple[dict[str, Peak], Peak | None]:
    gflops = {dtype: Peak(value=v, source=PeakSource.USER) for dtype, v in state.peak_gflops.items()}
    bandwidth = Peak(value=state.peak_bandwidth, source=PeakSource.USER) if state.peak_bandwidth else None
    return gflops, bandwidth


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(STATE, None)
    if state is None or not state.records or os.environ.get("PYTEST_XDIST_WORKER"):
        if state is not None and state.out is not None and state.not_written is None:
            state.not_written = "no calibration case ran (deselected, skipped or failed)."
        return
    metadata = machine.describe(
        device=state.device, hardware_name=state.hardware, quick=state.quick,
        command=list(session.config.invocation_params.args),
    )
    peak_gflops, peak_bandwidth = _peaks(state)
    state.calibration = fold(state.records, metadata, peak_gflops=peak_gflops, peak_bandwidth=peak_bandwidth)
    if state.out is None or state.not_written:
        return
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        state.not_written = f"the run was interrupted; {state.out} was left as it was."
        return
    state.written = state.calibration.save(state.out)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.calibration is not None:
        terminalreporter.write_sep("-", "calibration")
        for line in state.calibration.summary().splitlines():
            terminalreporter.write_line(line)
    if state.written is not None:
        terminalreporter.write_line(f"calibration profile written to {state.written}", green=True)
    elif state.not_written:
        terminalreporter.write_line(f"calibration profile not written: {state.not_written}", yellow=True)
