"""The predecessor's Python entry point, running the same pytest suite as the command line.

``calibrate_hardware()`` checks every argument before pytest starts (a bad one raises
ValueError naming it; an output path that cannot take a profile raises ProfileError), runs
the benchmark cases installed with the package, and returns the profile it wrote.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from calibration.measure import options
from calibration.profile.schema import HardwareCalibration
from calibration.specs.patterns import current_name

# The benchmark cases, installed with the package (a checkout's bench/ re-exports them).
PACKAGED_BENCH = Path(__file__).resolve().parent / "bench"


class CalibrationRunError(RuntimeError):
    """The benchmark session failed or wrote no profile."""


def find_bench_dir(bench_dir: str | Path | None = None) -> Path:
    """The folder of benchmark cases: ``bench_dir`` when given, else the cases installed with
    the package. Raises ValueError for a folder that is missing or holds no benchmark file."""
    if bench_dir is None:
        return PACKAGED_BENCH
    path = Path(bench_dir)
    if not path.is_dir():
        raise ValueError(f"Invalid bench folder '{bench_dir}': not a directory")
    if not any(path.glob("test_*.py")) and not any(path.glob("*_test.py")):
        raise ValueError(f"Invalid bench folder '{bench_dir}': it holds no benchmark file (test_*.py)")
    return path


@dataclass(frozen=True)
class Selection:
    """Which cases run: operation and fusion names, None for 'as the plugin defaults'."""

    operations: list[str] | None
    fusion_patterns: list[str] | None

    def args(self) -> list[str]:
        """The plugin's options. Fusion patterns run on top of the base operations, as in the
        predecessor, unless the operations are given (``[]`` or ``none``: fusion cases only)."""
        args = []
        operations = self.operations
        if self.fusion_patterns and operations is None:
            operations = ["all"]
        if operations:
            args += ["--calibrate-operations", ",".join(operations)]
        if self.fusion_patterns:
            args += ["--calibrate-fusion-patterns", ",".join(self.fusion_patterns)]
        return args


def selection(operations: Iterable[str] | str | None, fusion_patterns: Iterable[str] | str | None) -> Selection:
    """Check and resolve the names (a string may hold several, comma-separated)."""
    ops = _names(operations, "operations", options.parse_operations)
    fusion = _names(fusion_patterns, "fusion_patterns", options.parse_fusion_patterns)
    if ops == [] and not fusion:
        raise ValueError("nothing to calibrate: operations=[] (or 'none') selects no operation and no "
                         "fusion_patterns were given")
    return Selection(ops, fusion or None)


def _names(value: Iterable[str] | str | None, what: str, parse: Callable[[str], frozenset[str]]) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if any(not isinstance(item, str) for item in items):
        raise ValueError(f"Invalid {what} {value!r}; allowed: names (strings)")
    text = ",".join(items)
    if not text.strip(", "):
        return []
    try:
        return sorted(parse(text))
    except argparse.ArgumentTypeError as exc:
        raise ValueError(str(exc)) from None


def _positive(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"Invalid {what} {value!r}; allowed: a positive finite number")
    return float(value)


def peak_gflops_text(value: float | Mapping[str, float]) -> str:
    """``--peak-gflops``' text for a number (float32) or a mapping of dtype to GFLOPS."""
    if isinstance(value, Mapping):
        return ",".join(f"{dtype}={_positive(v, f'theoretical_peak_gflops[{dtype!r}]')}" for dtype, v in value.items())
    return f"float32={_positive(value, 'theoretical_peak_gflops')}"


def _parsed(parse: Callable[[str], object], text: str) -> object:
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(str(exc)) from None


def pytest_args(
    *,
    bench: Path,
    output: str | Path,
    hardware_name: str | None = None,
    peak_gflops: str | None = None,
    peak_bandwidth: float | None = None,
    select: Selection = Selection(None, None),
    quick: bool = False,
    device: str | None = None,
    threads: int | None = None,
    windows: int | None = None,
    extra: Iterable[str] = (),
) -> list[str]:
    """The pytest command line that runs ``bench`` and writes the profile to ``output``.

    No configuration file is read and nothing above ``bench`` is a conftest: the run must
    not pick up the options of whatever project the installed package sits in (its addopts,
    its testpaths), nor write a cache beside the installed cases.
    """
    args = [str(bench), "-p", "calibration.plugin", "-p", "no:cacheprovider", "-c", os.devnull,
            "--rootdir", str(bench), "--confcutdir", str(bench), "--calibrate-out", str(output), "-q",
            # the caller imported calibration before pytest started: nothing of it needs rewriting
            "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    # the prefixed option names: with no conftest read, the short aliases do not exist
    if quick:
        args.append("--calibrate-quick")
    if hardware_name is not None:
        args += ["--calibrate-hardware", hardware_name]
    if peak_gflops is not None:
        args += ["--calibrate-peak-gflops", peak_gflops]
    if peak_bandwidth is not None:
        args += ["--calibrate-peak-bandwidth", str(peak_bandwidth)]
    args += select.args()
    if device:
        args += ["--calibrate-device", device]
    if threads is not None:
        args += ["--calibrate-threads", str(threads)]
    if windows is not None:
        args += ["--calibrate-windows", str(windows)]
    return args + list(extra)


def calibrate_hardware(
    hardware_name: str | None = None,
    theoretical_peak_gflops: float | Mapping[str, float] | None = None,
    theoretical_bandwidth_gbps: float | None = None,
    output_path: str | Path | None = None,
    operations: Iterable[str] | str | None = None,
    fusion_patterns: Iterable[str] | str | None = None,
    quick: bool = False,
    *,
    device: str | None = None,
    threads: int | None = None,
    windows: int | None = None,
    bench_dir: str | Path | None = None,
) -> HardwareCalibration:
    """Run the benchmark suite in this process and return the profile it wrote.

    Same arguments as the predecessor's ``calibrate_hardware``; the work is done by
    ``pytest --calibrate-out=...`` over the cases installed with the package (or
    ``bench_dir``), exactly as on the command line. ``windows`` (1 or 2) is how many windows
    an operation case is timed in, as ``--calibrate-windows`` (default: 2, 1 with ``quick``).
    ``fusion_patterns`` run on top of the base operations, as in the predecessor;
    ``operations=[]`` runs the fusion cases alone.
    The predecessor's pattern names (``FullAttention_SDPA``...) resolve with a
    DeprecationWarning. Raises ValueError or ProfileError (a ValueError) for a bad argument
    before any benchmark runs, CalibrationRunError when the run fails.
    """
    import pytest

    from calibration.profile.storage import check_output, load_calibration

    if hardware_name is not None:
        if not isinstance(hardware_name, str):
            raise ValueError(f"Invalid hardware_name {hardware_name!r}; allowed: a string")
        hardware_name = _parsed(options.parse_hardware, hardware_name)
    peak = None if theoretical_peak_gflops is None else peak_gflops_text(theoretical_peak_gflops)
    if peak is not None:
        _parsed(options.parse_peak_gflops, peak)
    bandwidth = (None if theoretical_bandwidth_gbps is None
                 else _positive(theoretical_bandwidth_gbps, "theoretical_bandwidth_gbps"))
    if fusion_patterns is not None and not isinstance(fusion_patterns, str):
        names = []
        for name in fusion_patterns:  # a plain loop, so the warning points at our caller
            names.append(current_name(name, stacklevel=2) if isinstance(name, str) else name)
        fusion_patterns = names
    select = selection(operations, fusion_patterns)
    if device is not None:
        _parsed(options.parse_device, str(device))
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int):
            raise ValueError(f"Invalid threads {threads!r}; allowed: a positive integer")
        _parsed(options.parse_threads, str(threads))
    if windows is not None:
        if isinstance(windows, bool) or not isinstance(windows, int):
            raise ValueError(f"Invalid windows {windows!r}; allowed: 1 or 2")
        _parsed(options.parse_windows, str(windows))
    bench = find_bench_dir(bench_dir)
    if output_path is not None:
        if isinstance(output_path, str) and not output_path:
            raise ValueError("Invalid output_path ''; give a file path such as 'profiles/box.json'")
        check_output(output_path)
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(output_path) if output_path is not None else Path(scratch) / "profile.json"
        args = pytest_args(
            bench=bench, output=output, hardware_name=hardware_name, peak_gflops=peak, peak_bandwidth=bandwidth,
            select=select, quick=quick, device=device, threads=threads, windows=windows,
        )
        before = output.stat().st_mtime_ns if output.exists() else None
        code = pytest.main(args)
        if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            raise CalibrationRunError(f"pytest {' '.join(args)} exited with {code!r}")
        if not output.exists() or output.stat().st_mtime_ns == before:
            raise CalibrationRunError(f"pytest {' '.join(args)} wrote no profile to {output}")
        # With failed cases (reported by pytest above) the profile holds the cases that passed.
        return load_calibration(output)
