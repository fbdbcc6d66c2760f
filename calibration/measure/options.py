"""Parsers for command-line values, shared by the pytest options and ``python -m calibration``.

Each raises ``argparse.ArgumentTypeError`` naming the bad value and what is allowed, which
pytest and argparse both turn into a usage error.
"""

from __future__ import annotations

import argparse
import math
import os

from calibration.specs.dtypes import DTYPE_NAMES
from calibration.specs.operations import resolve_selection

DEVICES = ("cpu", "cuda")


def parse_positive_float(text: str, what: str = "value") -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{what} must be a positive number, got {text!r}")
    return value


def parse_peak_bandwidth(text: str) -> float:
    return parse_positive_float(text, "--peak-bandwidth (GB/s)")


def parse_peak_gflops(text: str) -> dict[str, float]:
    """``510`` (float32) or ``float32=510,bfloat16=1020``."""
    if "=" not in text:
        return {"float32": parse_positive_float(text, "--peak-gflops (GFLOPS)")}
    peaks: dict[str, float] = {}
    for item in text.split(","):
        dtype, sep, value = item.partition("=")
        dtype = dtype.strip()
        if not sep or dtype not in DTYPE_NAMES:
            raise argparse.ArgumentTypeError(
                f"--peak-gflops entry {item!r} must be DTYPE=GFLOPS with DTYPE one of {', '.join(DTYPE_NAMES)}"
            )
        if dtype in peaks:
            raise argparse.ArgumentTypeError(f"--peak-gflops {text!r} gives {dtype} twice; give each dtype once")
        peaks[dtype] = parse_positive_float(value, f"--peak-gflops {dtype} (GFLOPS)")
    return peaks


# A hardware name heads summaries and comparisons on one line.
MAX_NAME = 200


def parse_hardware(text: str) -> str:
    if not text.strip() or len(text) > MAX_NAME or any(not c.isprintable() for c in text):
        raise argparse.ArgumentTypeError(
            f"Invalid --hardware {text!r}; allowed: a name of 1 to {MAX_NAME} printable characters")
    return text


def parse_path(text: str, option: str) -> str:
    """A file path: not empty (an empty one would silently mean 'no file')."""
    if not text:
        raise argparse.ArgumentTypeError(f"Invalid {option} ''; give a file path")
    return text


def parse_calibrate_out(text: str) -> str:
    return parse_path(text, "--calibrate-out")


def parse_calibrate_compare(text: str) -> str:
    return parse_path(text, "--calibrate-compare")


def parse_positive_int(text: str, option: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{option} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{option} must be a positive integer, got {text!r}")
    return value


# Oversubscribing the cores a few times over can be an experiment; a thread count in the
# thousands only makes OpenMP start that many threads.
THREADS_PER_CPU = 4


def max_threads() -> int:
    return THREADS_PER_CPU * (os.cpu_count() or 1)


def parse_threads(text: str) -> int:
    threads = parse_positive_int(text, "--threads")
    if threads > max_threads():
        raise argparse.ArgumentTypeError(
            f"Invalid --threads {text!r}; allowed: 1 to {max_threads()} ({THREADS_PER_CPU} per CPU of this machine)")
    return threads


def parse_batch(text: str) -> int:
    return parse_positive_int(text, "--batch")


def parse_rounds(text: str) -> int:
    return parse_positive_int(text, "--rounds")


WINDOWS = ("1", "2")


def default_windows(*, quick: bool, workload: bool) -> int:
    """Windows a case is timed in unless --windows says: 2, but 1 for a quick grid alone. A
    workload calibration (--calibrate-model) keeps 2 with --quick: its entries are the ones
    its model's predictions stand on exactly, and one window is one state of a shared host
    (a quick workload profile's matmul and linears came out at x1.25-1.67 their time, re-timed
    so in every round of two accuracy runs, which refused two of its eight cases)."""
    return 1 if quick and not workload else 2


def parse_windows(text: str) -> int:
    """How many windows a case is timed in: 1, or 2 (a third where those two disagree)."""
    if text.strip() not in WINDOWS:
        raise argparse.ArgumentTypeError(
            f"Invalid --windows {text!r}; allowed: 1 (one window a case) or 2 (a second window at the end of the "
            "run, a third where the two disagree)")
    return int(text)


def parse_device(text: str) -> str:
    if text not in DEVICES:
        raise argparse.ArgumentTypeError(f"--device must be one of {', '.join(DEVICES)}, got {text!r}")
    return text


# ``--operations none``: no operation case (with --fusion-patterns: fusion cases only).
NONE = "none"


def _parse_names(text: str, option: str, resolve, *, none: bool = False) -> frozenset[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{option} needs at least one family or name")
    if none and NONE in names:
        if len(names) > 1:
            raise argparse.ArgumentTypeError(f"Invalid {option} {text!r}: '{NONE}' selects nothing and cannot be "
                                             "combined with other names")
        return frozenset()
    try:
        return frozenset(resolve(names))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_operations(text: str) -> frozenset[str]:
    """Operation families or names, 'all', or 'none' (an empty selection)."""
    return _parse_names(text, "--operations", resolve_selection, none=True)


def parse_fusion_patterns(text: str) -> frozenset[str]:
    from calibration.specs.patterns import resolve_families

    return _parse_names(text, "--fusion-patterns", resolve_families)


def parse_threshold(text: str, option: str = "--threshold") -> float:
    """A percentage, the '%' optional: ``10%`` and ``10`` are both ten percent (0.1 is a
    tenth of a percent). Returned as a fraction (0.1)."""
    number = text.strip().removesuffix("%").strip()
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"{option} must be a percentage of zero or more such as 10% or 10 (both ten percent), got {text!r}"
        )
    return value / 100


def parse_compare_fail(text: str) -> float:
    return parse_threshold(text, "--calibrate-compare-fail")


def parse_alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"--alpha must be a probability between 0 and 1, exclusive, got {text!r}")
    return value


def parse_batches(text: str) -> tuple[int, ...]:
    """A comma-separated list of positive batch sizes, e.g. ``1,8``."""
    parts = [part.strip() for part in text.split(",")]
    return tuple(dict.fromkeys(parse_positive_int(part, "--calibrate-model-batch") for part in parts))


def parse_shape(text: str, option: str = "--input-shape") -> tuple[int, ...]:
    """An input shape without the batch: comma-separated positive integers."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{option} must be comma-separated integers, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{option} must be positive integers, got {text!r}")
    return shape


def parse_model_shape(text: str) -> tuple[int, ...]:
    return parse_shape(text, "--calibrate-model-input-shape")
