"""``python -m calibration``: schema, show, run."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from calibration import options


def _cmd_schema(args: argparse.Namespace) -> int:
    from calibration.schema import HardwareCalibration

    print(json.dumps(HardwareCalibration.model_json_schema(), indent=2))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from calibration.storage import ProfileError, load_calibration

    try:
        calibration = load_calibration(args.profile)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    calibration.print_summary()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import pytest

    from calibration.api import find_bench_dir, pytest_args

    if args.fusion_patterns:
        print("error: --fusion-patterns: fusion calibration is not available in this version", file=sys.stderr)
        return 2
    try:
        bench = find_bench_dir(args.bench_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    argv = pytest_args(
        bench=bench, output=args.output, hardware_name=args.hardware, peak_gflops=None,
        peak_bandwidth=args.peak_bandwidth, operations=args.operations, quick=args.quick,
        device=args.device, threads=args.threads, extra=args.pytest_args,
    )
    if args.peak_gflops:
        argv += ["--peak-gflops", ",".join(f"{k}={v}" for k, v in args.peak_gflops.items())]
    return int(pytest.main(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m calibration", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    schema = sub.add_parser("schema", help="print the profile's JSON Schema")
    schema.set_defaults(func=_cmd_schema)

    show = sub.add_parser("show", help="print a profile's summary")
    show.add_argument("profile", metavar="PROFILE")
    show.set_defaults(func=_cmd_show)

    run = sub.add_parser("run", help="calibrate this machine (runs pytest bench/ --calibrate-out)")
    run.add_argument("--output", "-o", required=True, metavar="PATH", help="profile to write")
    run.add_argument("--hardware", metavar="NAME", help="hardware name (default: detected)")
    run.add_argument("--peak-gflops", type=options.parse_peak_gflops, metavar="GFLOPS",
                     help="theoretical peak: a number (float32) or DTYPE=N,...")
    run.add_argument("--peak-bandwidth", type=options.parse_peak_bandwidth, metavar="GBPS",
                     help="theoretical peak bandwidth in GB/s")
    run.add_argument("--operations", metavar="LIST", type=lambda s: sorted(options.parse_operations(s)),
                     help="families or operations to calibrate, comma-separated (default: all)")
    run.add_argument("--fusion-patterns", metavar="LIST", help="fusion pattern families (not yet available)")
    run.add_argument("--quick", action="store_true", help="one or two sizes per operation")
    run.add_argument("--device", type=options.parse_device, help="cpu or cuda (default: cuda if available)")
    run.add_argument("--threads", type=options.parse_threads, metavar="N", help="torch threads")
    run.add_argument("--bench-dir", metavar="DIR", help="the bench/ folder (default: ./bench)")
    run.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="passed on to pytest")
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
