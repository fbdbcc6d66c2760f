"""``python -m calibration``: schema, show, run, plot, partition, predict, compare."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from calibration.measure import options


def _cmd_schema(args: argparse.Namespace) -> int:
    from calibration.profile.schema import HardwareCalibration

    print(json.dumps(HardwareCalibration.model_json_schema(), indent=2))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from calibration.profile.storage import ProfileError, load_calibration

    try:
        calibration = load_calibration(args.profile)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    calibration.print_summary(select=args.filter, sort=args.sort)
    return 0


def _parse_filter(text: str):
    from calibration.profile.select import FilterError, parse_filter

    try:
        return parse_filter(text)
    except FilterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


FILTER_HELP = ("keep the entries whose key matches EXPR, as pytest -k does: case-insensitive substrings of "
               "keys such as conv2d[N=1,CIN=64,...]/float32/cpu, combined with and, or, not and parentheses "
               "(e.g. 'conv2d and not module'). Default: every entry.")


def _cmd_run(args: argparse.Namespace) -> int:
    import pytest

    from calibration.api import find_bench_dir, pytest_args

    try:
        bench = find_bench_dir(args.bench_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    argv = pytest_args(
        bench=bench, output=args.output, hardware_name=args.hardware, peak_gflops=None,
        peak_bandwidth=args.peak_bandwidth, operations=args.operations,
        fusion_patterns=args.fusion_patterns, quick=args.quick,
        device=args.device, threads=args.threads, extra=args.pytest_args,
    )
    if args.peak_gflops:
        argv += ["--calibrate-peak-gflops", ",".join(f"{k}={v}" for k, v in args.peak_gflops.items())]
    return int(pytest.main(argv))


def _cmd_plot(args: argparse.Namespace) -> int:
    from calibration.profile.storage import ProfileError, load_calibration
    from calibration.report.plot import MatplotlibMissing, plot_roofline

    try:
        calibration = load_calibration(args.profile)
        other = load_calibration(args.compare) if args.compare else None
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    labels = None
    if other is not None:
        labels = tuple(f"{Path(path).name}: {cal.metadata.hardware_name}"
                       for path, cal in ((args.profile, calibration), (args.compare, other)))
    try:
        written = plot_roofline(calibration, args.output, other=other, dtype=args.dtype, labels=labels)
    except MatplotlibMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # an image format matplotlib does not know, a dtype the profile lacks
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written}")
    return 0


def _load_for_compare(path: str):
    """The profile, or ProfileError; an upgrade warning goes to stderr as one line."""
    import warnings

    from calibration.profile.storage import load_calibration

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = load_calibration(path)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return profile


def _cmd_compare(args: argparse.Namespace) -> int:
    from calibration.profile.storage import ProfileError
    from calibration.report.compare import NothingInCommon, compare
    from calibration.report.compare_report import RENDERERS, render_text

    try:
        base, new = _load_for_compare(args.base), _load_for_compare(args.new)
        comparison = compare(base, new, metric=args.metric, threshold=args.threshold, alpha=args.alpha,
                             base_name=args.base, new_name=args.new, select=args.filter)
    except (ProfileError, NothingInCommon) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "text":
        print(render_text(comparison, sort=args.sort, list_unmatched=args.list_unmatched))
    else:
        print(RENDERERS[args.format](comparison))
    return 1 if comparison.regressed else 0


COMPARE_EPILOG = """\
exit status: 0 nothing regressed, 1 at least one entry regressed, 2 bad input (a profile
that cannot be read, another schema version, nothing in common, a bad option value).
An entry regressed when its metric got worse by more than --threshold AND the change is
significant: a two-sided Mann-Whitney U test on the stored per-round samples gives
p < --alpha. Profiles without samples (upgraded from the predecessor) fall back to
non-overlapping median intervals (median +- 1.57 IQR / sqrt(rounds)); without an IQR an
entry is not testable and never regresses. Entries in only one profile are listed, and
fusion verdicts that flipped are reported; neither fails the comparison.
"""


def _cmd_partition(args: argparse.Namespace) -> int:
    from calibration.predict.models import load_model
    from calibration.predict.plan import partition
    from calibration.predict.results import render_report
    from calibration.profile.storage import ProfileError, load_calibration

    try:
        model, example = load_model(args.model, args.batch, args.input_shape)
        calibration = load_calibration(args.profile) if args.profile else None
    except (ValueError, ImportError, AttributeError, ProfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = render_report(partition(model, example, calibration), top=args.top, markdown=args.format == "markdown")
    print(report, end="")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from calibration.predict.mapper import mapper_for
    from calibration.predict.models import load_model
    from calibration.predict.plan import partition
    from calibration.profile.storage import ProfileError, load_calibration
    from calibration.report import prediction

    try:
        model, example = load_model(args.model, args.batch, args.input_shape)
        calibration = load_calibration(args.profile)
    except (ValueError, ImportError, AttributeError, ProfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    part = partition(model, example, calibration)
    mapper = mapper_for(calibration)
    eager = mapper.estimate(part, "eager")
    fused = mapper.estimate(part, "fused")
    measured = _measure_predicted(args, model, example, calibration, part, eager) if args.measure or args.by_op \
        else {}
    shown = dict(model=args.model, batch=args.batch, part=part, eager=eager, fused=fused, calibration=calibration,
                 **measured)
    if args.format == "json":
        print(json.dumps(prediction.as_json(**shown), indent=1))
    else:
        print(prediction.render(**shown))
    return 0


def _measure_predicted(args, model, example, calibration, part, eager) -> dict:
    """The interleaved measurement rounds, the page faults and, with --by-op, the attribution."""
    from calibration.measure.model_timing import measure_rounds, page_faults_per_call

    measurement = measure_rounds(model, example, calibration, rounds=args.rounds)
    out = {"measurement": measurement, "refusal": measurement.refusal(calibration),
           "faults": page_faults_per_call(model, example)}
    if args.by_op:
        from calibration.measure.node_profile import profile_graph
        from calibration.predict.trace import trace
        from calibration.report.attribution import attribute

        gm, _ = trace(model, (example,))
        copies = frozenset(n.name for sg in part.subgraphs for n in sg.nodes if n.kernel and n.op == "copy")
        graph = profile_graph(gm, (example,), copy_nodes=copies)
        out["attribution"] = attribute(part, eager, graph, batch=args.batch, calibration=calibration,
                                       eager_ms=measurement.model_ms)
    return out


class _Parser(argparse.ArgumentParser):
    """Bad input is one ``error: ...`` line and exit status 2, as for an unreadable profile."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from calibration.specs.host import package_version

    return package_version("calibration") or "unknown (not installed; run from a checkout)"


def build_parser() -> argparse.ArgumentParser:
    from calibration.profile.summary import SORT_HELP, SORTS

    parser = _Parser(prog="python -m calibration")
    parser.add_argument("--version", action="version", version=f"calibration {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    schema = sub.add_parser("schema", help="print the profile's JSON Schema")
    schema.set_defaults(func=_cmd_schema)

    show = sub.add_parser("show", help="print a profile's summary")
    show.add_argument("profile", metavar="PROFILE")
    show.add_argument("-k", "--filter", type=_parse_filter, metavar="EXPR", help=FILTER_HELP)
    show.add_argument("--sort", choices=tuple(SORTS), default="family", metavar="KEY",
                      help=f"order of the operations table: {SORT_HELP}")
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
    run.add_argument("--fusion-patterns", metavar="LIST", type=lambda s: sorted(options.parse_fusion_patterns(s)),
                     help="fusion families (linear, conv, attention, elementwise, all) or pattern names")
    run.add_argument("--quick", action="store_true", help="one or two sizes per operation")
    run.add_argument("--device", type=options.parse_device, help="cpu or cuda (default: cuda if available)")
    run.add_argument("--threads", type=options.parse_threads, metavar="N", help="torch threads")
    run.add_argument("--bench-dir", metavar="DIR", help="the bench/ folder (default: ./bench)")
    run.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="passed on to pytest")
    run.set_defaults(func=_cmd_run)

    plot = sub.add_parser("plot", help="draw a profile's roofline (needs the 'plot' extra: matplotlib)")
    plot.add_argument("profile", metavar="PROFILE")
    plot.add_argument("--output", "-o", required=True, metavar="PATH",
                      help="image to write; the extension picks the format (png, svg, pdf)")
    plot.add_argument("--compare", metavar="OTHER", help="a second profile, drawn hollow and lighter")
    plot.add_argument("--dtype", default="float32", help="dtype of the points and arrows (default: float32)")
    plot.set_defaults(func=_cmd_plot)

    part = sub.add_parser("partition", help="print a model's fusion partition (subgraphs, FLOPs, traffic)")
    part.add_argument("--model", required=True, metavar="NAME|MODULE:FACTORY",
                      help="resnet18, mobilenet_v2, bert_layer, mlp, or a factory returning an nn.Module")
    part.add_argument("--batch", type=options.parse_batch, default=1, metavar="N", help="batch size (default: 1)")
    part.add_argument("--input-shape", type=options.parse_shape, metavar="D,D,...",
                      help="input shape without the batch, for a MODULE:FACTORY model")
    part.add_argument("--profile", metavar="PROFILE", help="fuse only where this calibration says it pays")
    part.add_argument("--top", type=lambda text: options.parse_positive_int(text, "--top"), metavar="N",
                      help="list only the N fused subgraphs that save the most traffic (default: all)")
    part.add_argument("--format", choices=("text", "markdown"), default="text",
                      help="text for a terminal, markdown for a pull request or notes. Default: %(default)s.")
    part.set_defaults(func=_cmd_partition)

    predict = sub.add_parser("predict", help="predict a model's latency from a profile (and measure it)")
    predict.add_argument("--model", required=True, metavar="NAME|MODULE:FACTORY",
                         help="resnet18, mobilenet_v2, bert_layer, mlp, or a factory returning an nn.Module")
    predict.add_argument("--profile", required=True, metavar="PROFILE", help="the calibration to predict with")
    predict.add_argument("--batch", type=options.parse_batch, default=1, metavar="N", help="batch size (default: 1)")
    predict.add_argument("--input-shape", type=options.parse_shape, metavar="D,D,...",
                         help="input shape without the batch, for a MODULE:FACTORY model")
    predict.add_argument("--measure", action="store_true",
                         help="also time the model eagerly, in interleaved rounds with the profile's reference "
                              "kernels, and print the error raw and drift-corrected")
    predict.add_argument("--by-op", action="store_true",
                         help="with --measure: run the model under torch.profiler and put each kernel's measured "
                              "time beside its prediction, with every measured time no kernel accounts for")
    predict.add_argument("--rounds", type=options.parse_rounds, default=3, metavar="N",
                         help="measurement rounds, each re-timing the reference kernels then the model (default: 3)")
    predict.add_argument("--format", choices=("text", "json"), default="text",
                         help="text: one screen (default); json: every kernel and round as data")
    predict.set_defaults(func=_cmd_predict)

    _add_compare(sub)
    parser.description = ("Calibrate this machine, read, compare and draw its profiles, and partition or predict "
                          f"models with them. Commands: {', '.join(sub.choices)}.")
    return parser


def _add_compare(sub) -> None:
    from calibration.report.compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, METRICS
    from calibration.report.compare_report import RENDERERS, SORT_HELP, SORTS

    compare = sub.add_parser(
        "compare", help="compare two profiles; exit 1 when an entry significantly regressed",
        description="Compare NEW against BASE entry by entry (matched by key).", epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("base", metavar="BASE", help="the reference profile")
    compare.add_argument("new", metavar="NEW", help="the profile to check")
    compare.add_argument(
        "--threshold", type=options.parse_threshold, default=DEFAULT_THRESHOLD, metavar="PERCENT",
        help="how much worse counts: a percentage, the %% optional (10%% and 10 both mean ten percent; "
             f"0.5 means half a percent). Default: {100 * DEFAULT_THRESHOLD:g}%%.")
    compare.add_argument(
        "--metric", choices=METRICS, default="latency",
        help="latency: median latency (fused latency of fusion entries); gflops: attained GFLOPS of entries "
             "with FLOPs; speedup: fusion speedup, fusion entries only. Default: %(default)s.")
    compare.add_argument("--format", choices=tuple(RENDERERS), default="text",
                         help="text table, markdown for a PR comment, or json. Default: %(default)s.")
    compare.add_argument("--alpha", type=options.parse_alpha, default=DEFAULT_ALPHA,
                         help="significance level of the U test. Default: %(default)s.")
    compare.add_argument("-k", "--filter", type=_parse_filter, metavar="EXPR", help=FILTER_HELP)
    compare.add_argument("--sort", choices=SORTS, default="status", metavar="KEY",
                         help=f"order of the text table: {SORT_HELP}")
    compare.add_argument("--list-unmatched", action="store_true",
                         help="list the entries only one profile has (default: one line counting them per profile)")
    compare.set_defaults(func=_cmd_compare)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
