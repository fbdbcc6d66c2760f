"""The predecessor's Python entry point, running the same pytest suite as the command line."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from calibration.profile.schema import HardwareCalibration


class CalibrationRunError(RuntimeError):
    """The benchmark session failed or wrote no profile."""


def find_bench_dir(bench_dir: str | Path | None = None) -> Path:
    """The ``bench/`` folder: as given, else ``./bench``, else the one beside this package."""
    candidates = ([Path(bench_dir)] if bench_dir
                  else [Path.cwd() / "bench", Path(__file__).resolve().parent.parent / "bench"])
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "no bench/ folder found (looked in: " + ", ".join(str(c) for c in candidates) + "); "
        "run from a checkout of calibration or pass bench_dir"
    )


def pytest_args(
    *,
    bench: Path,
    output: Path,
    hardware_name: str | None = None,
    peak_gflops: float | None = None,
    peak_bandwidth: float | None = None,
    operations: Sequence[str] | None = None,
    fusion_patterns: Sequence[str] | None = None,
    quick: bool = False,
    device: str | None = None,
    threads: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    args = [str(bench), "-p", "calibration.plugin", "--calibrate-out", str(output), "-q"]
    # the prefixed forms: a bench_dir outside this checkout has no conftest giving the short ones
    if quick:
        args.append("--calibrate-quick")
    if hardware_name:
        args += ["--calibrate-hardware", hardware_name]
    if peak_gflops is not None:
        args += ["--calibrate-peak-gflops", str(peak_gflops)]
    if peak_bandwidth is not None:
        args += ["--calibrate-peak-bandwidth", str(peak_bandwidth)]
    if operations:
        args += ["--calibrate-operations", ",".join(operations)]
    if fusion_patterns:
        args += ["--calibrate-fusion-patterns", ",".join(fusion_patterns)]
    if device:
        args += ["--calibrate-device", device]
    if threads is not None:
        args += ["--calibrate-threads", str(threads)]
    return args + list(extra)


def calibrate_hardware(
    hardware_name: str | None = None,
    theoretical_peak_gflops: float | None = None,
    theoretical_bandwidth_gbps: float | None = None,
    output_path: str | Path | None = None,
    operations: Sequence[str] | None = None,
    fusion_patterns: Sequence[str] | None = None,
    quick: bool = False,
    *,
    device: str | None = None,
    threads: int | None = None,
    bench_dir: str | Path | None = None,
) -> HardwareCalibration:
    """Run the benchmark suite in this process and return the profile it wrote.

    Same arguments as the predecessor's ``calibrate_hardware``; the work is done by
    ``pytest bench/ --calibrate-out=...`` exactly as on the command line.
    """
    import pytest

    from calibration.profile.storage import load_calibration

    bench = find_bench_dir(bench_dir)
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(output_path) if output_path else Path(scratch) / "profile.json"
        args = pytest_args(
            bench=bench, output=output, hardware_name=hardware_name, peak_gflops=theoretical_peak_gflops,
            peak_bandwidth=theoretical_bandwidth_gbps, operations=operations,
            fusion_patterns=fusion_patterns, quick=quick,
            device=device, threads=threads,
        )
        before = output.stat().st_mtime_ns if output.exists() else None
        code = pytest.main(args)
        if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            raise CalibrationRunError(f"pytest {' '.join(args)} exited with {code!r}")
        if not output.exists() or output.stat().st_mtime_ns == before:
            raise CalibrationRunError(f"pytest {' '.join(args)} wrote no profile to {output}")
        # With failed cases (reported by pytest above) the profile holds the cases that passed.
        return load_calibration(output)
