"""``python -m calibration``: schema, show, run, plot, compare, partition, predict.

Bad input exits 2 with one line ``error: ...`` on stderr naming the value at fault, before
anything is written; warnings are one line ``warning: ...`` each. Output cut short by the
reader (``... | head``) ends the command quietly with its own exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from calibration.measure import options


class CommandError(Exception):
    """Bad input to a command: main() prints ``error: <message>`` and exits 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line (the usage block is in --help)."""

    def error(self, message: str):
        self.exit(2, f"error: {' '.join(message.split())} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- output


class _Out:
    """stdout that a reader may close early (``... | head``): the rest is dropped, quietly."""

    closed = False

    def write(self, text: str) -> None:
        if self.closed:
            return
        try:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            self.closed = True
            # Python would report the pipe again when it flushes stdout at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


OUT = _Out()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # DeprecationWarning too: the predecessor's names
        warnings.showwarning = _show_warning
        yield


def _load(path: str, what: str = ""):
    """The profile at ``path``, or CommandError naming the file and the problem."""
    from calibration.profile.storage import ProfileError, load_calibration

    try:
        return load_calibration(path)
    except ProfileError as exc:
        raise CommandError(f"{what}{exc}") from None


# --------------------------------------------------------------------------- commands


def _cmd_schema(args: argparse.Namespace) -> int:
    from calibration.profile.schema import HardwareCalibration

    OUT.write(json.dumps(HardwareCalibration.model_json_schema(), indent=2))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    OUT.write(_load(args.profile).summary(select=args.filter, sort=args.sort))
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


# Options `run` sets itself; given again after `--` they would silently override its own.
RUN_OPTIONS = ("--calibrate-out", "--rootdir", "--confcutdir", "-c") + tuple(
    form for name in ("quick", "hardware", "peak-gflops", "peak-bandwidth", "operations", "fusion-patterns", "device",
                      "threads", "windows") for form in (f"--{name}", f"--calibrate-{name}"))


def _check_passthrough(extra: Sequence[str], output: Path) -> None:
    for i, arg in enumerate(extra):
        name, _, value = arg.partition("=")
        if "no:calibration" in arg:
            raise CommandError(f"{arg} after -- would turn the calibration plugin off; nothing would be calibrated")
        if name in RUN_OPTIONS:
            raise CommandError(f"{name} after -- would override run's own; give it as an option of run")
        if name == "--benchmark-json":
            value = value or (extra[i + 1] if i + 1 < len(extra) else "")
            if value and os.path.realpath(value) == os.path.realpath(output):
                raise CommandError(f"--benchmark-json {value} is the profile's path; the benchmark report would "
                                   "replace the profile")


# pytest's exit status -> run's: 0 written, 1 some cases failed (the profile holds the
# others), 2 bad input, 3 pytest's internal error, 130 interrupted.
RUN_STATUS = {0: 0, 1: 1, 2: 130, 3: 3, 4: 2, 5: 2}


def _cmd_run(args: argparse.Namespace) -> int:
    import pytest

    from calibration.api import Selection, find_bench_dir, pytest_args
    from calibration.profile.storage import ProfileError, check_output

    try:
        check_output(args.output)
        bench = find_bench_dir(args.bench_dir)
    except (ProfileError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    if args.operations == [] and not args.fusion_patterns:
        raise CommandError("--operations none selects no operation case; add --fusion-patterns to run fusion "
                           "cases only")
    _check_passthrough(args.pytest_args, Path(args.output))
    peaks = ",".join(f"{k}={v}" for k, v in args.peak_gflops.items()) if args.peak_gflops else None
    argv = pytest_args(
        bench=bench, output=args.output, hardware_name=args.hardware, peak_gflops=peaks,
        peak_bandwidth=args.peak_bandwidth, select=Selection(args.operations, args.fusion_patterns or None),
        quick=args.quick, device=args.device, threads=args.threads, windows=args.windows, extra=args.pytest_args,
    )
    before = _mtime(args.output)
    status = int(pytest.main(argv))
    if status == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("error: no benchmark case was selected (see the deselection above)", file=sys.stderr)
    elif status == pytest.ExitCode.OK and _mtime(args.output) in (None, before):
        # every case skipped, or --benchmark-disable after --: the run passed, but calibrated nothing
        print(f"error: no profile was written to {args.output} (the summary above says why)", file=sys.stderr)
        return 1
    return RUN_STATUS.get(status, status)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _cmd_plot(args: argparse.Namespace) -> int:
    from calibration.report.plot import MatplotlibMissing, plot_roofline

    calibration = _load(args.profile)
    other = _load(args.compare) if args.compare else None
    labels = None
    if other is not None:
        labels = tuple(f"{Path(path).name}: {cal.metadata.hardware_name}"
                       for path, cal in ((args.profile, calibration), (args.compare, other)))
    try:
        written = plot_roofline(calibration, args.output, other=other, dtype=args.dtype, labels=labels)
    except MatplotlibMissing as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a path plot cannot write an image to, a dtype the profile lacks
        raise CommandError(" ".join(str(exc).split())) from None
    OUT.write(f"wrote {written}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from calibration.report.compare import NothingInCommon, compare
    from calibration.report.compare_report import RENDERERS, render_text

    base, new = _load(args.base), _load(args.new)
    try:
        comparison = compare(base, new, metric=args.metric, threshold=args.threshold, alpha=args.alpha,
                             base_name=args.base, new_name=args.new, select=args.filter)
    except NothingInCommon as exc:
        raise CommandError(" ".join(str(exc).split())) from None
    if args.format == "text":
        OUT.write(render_text(comparison, sort=args.sort, list_unmatched=args.list_unmatched))
    else:
        OUT.write(RENDERERS[args.format](comparison))
    return 1 if comparison.regressed else 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from calibration.measure.merge import MergeError, merge_profiles
    from calibration.profile.storage import ProfileError, check_output

    try:
        check_output(args.output)
    except (ProfileError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    profiles = [_load(path) for path in args.profiles]
    try:
        merged, summary = merge_profiles(profiles, names=args.profiles)
    except MergeError as exc:
        raise CommandError(str(exc)) from None
    try:
        written = merged.save(args.output)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot write {args.output}: {exc}") from None
    supplied = ", ".join(f"{path}: {n}" for path, n in zip(args.profiles, summary.kept_per_profile, strict=True))
    OUT.write(f"merged {summary.profiles} calibrations of {merged.metadata.hardware_name}: "
              f"{summary.operation_entries} operation cases ({summary.in_every_profile} in every one), each at the "
              f"run with the median time (runs kept per profile: {supplied}); {summary.fusion_entries} fusion "
              f"entries at their median speedup; ceilings derived again from the merged entries\nwrote {written}")
    return 0


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

RUN_EPILOG = """\
exit status: 0 the profile was written, 1 some cases failed (the profile holds the
others), 2 bad input (nothing run, nothing written), 3 pytest's internal error,
130 interrupted (an existing profile is left as it was).
"""


def _model(args: argparse.Namespace):
    """The model and its example inputs, or CommandError in one line."""
    from calibration.predict.models import ModelError, load_model

    try:
        return load_model(args.model, args.batch, args.input_shape, args.input_dtype)
    except ModelError as exc:
        raise CommandError(str(exc)) from None


def _cmd_partition(args: argparse.Namespace) -> int:
    from calibration.predict.models import ModelError
    from calibration.predict.plan import partition
    from calibration.predict.results import render_report

    calibration = _load(args.profile) if args.profile else None
    model, inputs = _model(args)
    try:
        OUT.write(render_report(partition(model, inputs, calibration), top=args.top,
                                markdown=args.format == "markdown"))
    except ModelError as exc:
        raise CommandError(f"--model {args.model}: {exc}") from None
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from calibration.predict.mapper import MissingCeilings, mapper_for
    from calibration.predict.models import ModelError
    from calibration.predict.plan import partition
    from calibration.report import prediction

    calibration = _load(args.profile)
    model, inputs = _model(args)
    try:
        part = partition(model, inputs, calibration)
        mapper = mapper_for(calibration)
        eager = mapper.estimate(part, "eager")
        fused = mapper.estimate(part, "fused")
    except MissingCeilings as exc:
        raise CommandError(f"{args.profile}: {exc}") from None
    except ModelError as exc:
        raise CommandError(f"--model {args.model}: {exc}") from None
    measured = _measure_predicted(args, model, inputs, calibration, part, eager) if args.measure or args.by_op \
        else {}
    shown = dict(model=args.model, batch=args.batch, part=part, eager=eager, fused=fused, calibration=calibration,
                 **measured)
    if args.format == "json":
        OUT.write(json.dumps(prediction.as_json(**shown), indent=1))
    else:
        OUT.write(prediction.render(**shown))
    return 0


def _measure_predicted(args, model, inputs, calibration, part, eager) -> dict:
    """The interleaved measurement rounds, the page faults and, with --by-op, the attribution."""
    from calibration.measure.model_timing import measure_rounds, page_faults_per_forward, reference_kernels
    from calibration.predict.references import own_references

    kernels = reference_kernels(calibration, own_references(part, eager, calibration))
    measurement = measure_rounds(model, inputs, calibration, rounds=args.rounds, kernels=kernels)
    out = {"measurement": measurement, "refusal": measurement.refusal(calibration),
           "faults": page_faults_per_forward(model, inputs)}
    if args.by_op:
        from calibration.measure.node_profile import profile_graph
        from calibration.predict.trace import trace
        from calibration.report.attribution import attribute

        gm, _ = trace(model, inputs)
        copies = frozenset(n.name for sg in part.subgraphs for n in sg.nodes if n.kernel and n.op == "copy")
        graph = profile_graph(gm, inputs, copy_nodes=copies)
        out["attribution"] = attribute(part, eager, graph, batch=args.batch, calibration=calibration,
                                       eager_ms=measurement.model_ms)
    return out


def _add_model_options(command: argparse.ArgumentParser) -> None:
    from calibration.specs.dtypes import INPUT_DTYPE_NAMES

    command.add_argument("--model", required=True, metavar="NAME|MODULE:FACTORY",
                         help="resnet18, mobilenet_v2, bert_layer, mlp, or a factory returning an nn.Module")
    command.add_argument("--batch", type=options.parse_batch, default=1, metavar="N", help="batch size (default: 1)")
    command.add_argument("--input-shape", type=options.parse_shape, action="append", metavar="D,D,...",
                         help="input shape without the batch, for a MODULE:FACTORY model; once per input")
    command.add_argument("--input-dtype", choices=INPUT_DTYPE_NAMES, default="float32",
                         help="dtype of the example inputs (int64 for token ids). Default: %(default)s")


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

    run = sub.add_parser("run", help="calibrate this machine (runs the installed benchmark cases under pytest)",
                         epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--output", "-o", required=True, metavar="PATH", type=lambda t: options.parse_path(t, "--output"),
                     help="profile to write (an existing file must be a profile; a symlink is written through)")
    run.add_argument("--hardware", metavar="NAME", type=options.parse_hardware,
                     help="hardware name (default: detected)")
    run.add_argument("--peak-gflops", type=options.parse_peak_gflops, metavar="GFLOPS",
                     help="theoretical peak: a number (float32) or DTYPE=N,...")
    run.add_argument("--peak-bandwidth", type=options.parse_peak_bandwidth, metavar="GBPS",
                     help="theoretical peak bandwidth in GB/s")
    run.add_argument("--operations", metavar="LIST", type=lambda s: sorted(options.parse_operations(s)),
                     help="families or operations to calibrate, comma-separated, or 'none' (default: all)")
    run.add_argument("--fusion-patterns", metavar="LIST", type=lambda s: sorted(options.parse_fusion_patterns(s)),
                     help="fusion families (linear, conv, attention, elementwise, all) or pattern names; the "
                          "operations run too unless --operations says otherwise (--operations none: fusion only)")
    run.add_argument("--quick", action="store_true",
                     help="one or two sizes per operation and pattern; compiles only the patterns without a "
                          "library kernel")
    run.add_argument("--device", type=options.parse_device, help="cpu or cuda (default: cuda if available)")
    run.add_argument("--threads", type=options.parse_threads, metavar="N", help="torch threads")
    run.add_argument("--windows", type=options.parse_windows, metavar="N",
                     help="windows an operation case is timed in: 1, or 2 (a second at the end of the run, a third "
                          "where the two disagree); default 2, 1 with --quick")
    run.add_argument("--bench-dir", metavar="DIR",
                     help="a folder of benchmark cases to run instead (default: the cases installed with the "
                          "package, calibration/bench)")
    run.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="passed on to pytest")
    run.set_defaults(func=_cmd_run)

    merge = sub.add_parser("merge", help="merge calibrations of one machine run at different times: each case at "
                                         "the median of its runs (three or more profiles)")
    merge.add_argument("profiles", nargs="+", metavar="PROFILE", help="profiles of the same machine and software")
    merge.add_argument("--output", "-o", required=True, metavar="PATH",
                       type=lambda t: options.parse_path(t, "--output"),
                       help="profile to write (may be one of the inputs; an existing file must be a profile)")
    merge.set_defaults(func=_cmd_merge)

    plot = sub.add_parser("plot", help="draw a profile's roofline (needs the 'plot' extra: matplotlib)")
    plot.add_argument("profile", metavar="PROFILE")
    plot.add_argument("--output", "-o", required=True, metavar="PATH",
                      help="image to write; the extension picks the format (png, svg, pdf)")
    plot.add_argument("--compare", metavar="OTHER", help="a second profile, drawn hollow and lighter")
    plot.add_argument("--dtype", default="float32", help="dtype of the points and arrows (default: float32)")
    plot.set_defaults(func=_cmd_plot)

    part = sub.add_parser("partition", help="print a model's fusion partition (subgraphs, FLOPs, traffic)")
    _add_model_options(part)
    part.add_argument("--profile", metavar="PROFILE", help="fuse only where this calibration says it pays")
    part.add_argument("--top", type=lambda text: options.parse_positive_int(text, "--top"), metavar="N",
                      help="list only the N fused subgraphs that save the most traffic (default: all)")
    part.add_argument("--format", choices=("text", "markdown"), default="text",
                      help="text for a terminal, markdown for a pull request or notes. Default: %(default)s.")
    part.set_defaults(func=_cmd_partition)

    predict = sub.add_parser("predict", help="predict a model's latency from a profile (and measure it)")
    _add_model_options(predict)
    predict.add_argument("--profile", required=True, metavar="PROFILE", help="the calibration to predict with")
    predict.add_argument("--measure", action="store_true",
                         help="also time the model eagerly, in interleaved rounds with the profile's reference "
                              "kernels, and print the error raw and drift-corrected")
    predict.add_argument("--by-op", action="store_true",
                         help="with --measure: run the model under torch.profiler and put each kernel's measured "
                              "time beside its prediction, with every measured time no kernel accounts for")
    predict.add_argument("--rounds", type=options.parse_rounds, default=5, metavar="N",
                         help="measurement rounds, each re-timing the reference kernels then the model (default: 5)")
    predict.add_argument("--format", choices=("text", "json"), default="text",
                         help="text: one screen (default); json: every kernel and round as data")
    predict.set_defaults(func=_cmd_predict)

    _add_compare(sub)
    parser.description = ("Calibrate this machine, read, compare, merge and draw its profiles, and partition or "
                          f"predict models with them. Commands: {', '.join(sub.choices)}.")
    return parser


def _version() -> str:
    from calibration.specs.host import package_version

    return package_version("calibration") or "unknown (not installed; run from a checkout)"


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
    with _warnings_as_lines():
        args = build_parser().parse_args(argv)
        try:
            return args.func(args)
        except CommandError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
