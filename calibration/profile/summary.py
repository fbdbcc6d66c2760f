"""Text rendering of a profile: what ``print_summary`` and the terminal summary show."""

from __future__ import annotations

import textwrap
from typing import Any

from calibration.profile import roofline
from calibration.profile.entries import BUSY_CPUS, FusionCalibration, OperationCalibration
from calibration.profile.select import Predicate
from calibration.specs.host import STREAM_CACHE_MULTIPLE, UNKNOWN_LLC_BYTES
from calibration.specs.keys import format_params

WIDTH = 100


def _num(value: float | None, fmt: str = ".1f", unknown: str = "-") -> str:
    return unknown if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _busy_entries(cal: ProfileSummary) -> int:
    """How many entries were timed while other work kept the machine busy."""
    return sum(e.busy for e in cal.operation_profiles.values()) + \
        sum(e.busy for entries in cal.fusion_profiles.values() for e in entries)


def _busy(cal: ProfileSummary) -> list[str]:
    lines = []
    warning = cal.metadata.busy_warning()
    if warning:
        lines.append(f"  WARNING: {warning}; rerun on an idle machine before trusting these numbers")
    busy = _busy_entries(cal)
    if busy:
        lines.append(f"  WARNING: {busy} entr{'y was' if busy == 1 else 'ies were'} timed while other processes kept "
                     f"over {BUSY_CPUS} CPUs busy: marked 'busy' below")
    return lines


def _peaks(cal: ProfileSummary) -> list[str]:
    lines = ["Theoretical peaks (only as given; never assumed):"]
    if cal.peak_gflops:
        for dtype, peak in cal.peak_gflops.items():
            lines.append(f"  {dtype:<9} {peak.value:10.1f} GFLOPS  ({peak.source.value})")
    else:
        lines.append("  compute:   unknown (pass --peak-gflops to compare against a datasheet)")
    bw = cal.peak_bandwidth_gbps
    lines.append(
        f"  bandwidth: {bw.value:.1f} GB/s ({bw.source.value})" if bw else "  bandwidth: unknown"
    )
    return lines


# A call that costs a few dispatches moves too few bytes to say anything about its cache.
PER_CALL_DISPATCHES = 5


def per_call_bound_levels(cal: ProfileSummary) -> list[str]:
    """Memory levels whose triad rate is set by a call lasting under PER_CALL_DISPATCHES
    dispatch overheads: a per-call cost, not the level's bandwidth."""
    dispatch = cal.measured.dispatch_overhead_us
    if dispatch is None:
        return []
    fastest: dict[str, OperationCalibration] = {}  # the case that sets each level's triad rate
    for e in cal.operation_profiles.values():
        if e.operation == "stream_triad" and e.gbps > getattr(fastest.get(e.memory_level), "gbps", -1.0):
            fastest[e.memory_level] = e
    return sorted(level for level, e in fastest.items() if e.latency.median_ms * 1e3 < PER_CALL_DISPATCHES * dispatch)


def _measured(cal: ProfileSummary) -> list[str]:
    m = cal.measured
    lines = ["Measured ceilings:"]
    if not m.matmul_gflops:
        lines.append("  compute:   not measured in this run (the matmul cases did not run)")
    for dtype, best in m.matmul_gflops.items():
        paths = ", ".join(f"{p} {v:.1f}" for p, v in sorted(m.matmul_gflops_by_path.get(dtype, {}).items()))
        peak = cal.peak_gflops.get(dtype)
        of_peak = f"  = {100 * best / peak.value:.0f}% of peak" if peak else ""
        lines.append(f"  matmul {dtype:<9} {best:8.1f} GFLOPS  [{paths}]{of_peak}")
    if m.stream_gbps:
        kernels = "  ".join(f"{k.removeprefix('stream_')} {m.stream_gbps[k]:.1f}"
                            for k in sorted(m.stream_gbps, key=_stream_order))
        peak = cal.peak_bandwidth_gbps
        best = max(m.stream_gbps.values())
        of_peak = f"  = {100 * best / peak.value:.0f}% of peak" if peak else ""
        lines.append(f"  STREAM, {_stream_size(cal.metadata.cache_sizes)}, GB/s: {kernels}{of_peak}")
    else:
        lines.append("  bandwidth: not measured in this run (the STREAM cases did not run)")
    order = roofline.levels(cal.metadata.cache_sizes)
    for title, table in (("triad sweep by level", m.triad_by_level_gbps),
                         ("bandwidth ceiling by level (best case)", m.bandwidth_by_level_gbps)):
        if table:
            ordered = sorted(table, key=lambda lv: order.index(lv) if lv in order else len(order))
            levels = "  ".join(f"{lv} {table[lv]:.1f}" for lv in ordered)
            lines.append(f"  {title} GB/s: {levels}")
    if roofline.TRANSITION in m.triad_by_level_gbps:
        lines.append(f"  note: {roofline.TRANSITION} is a working set between half the last-level cache and STREAM's "
                     "size: partly cached, it sets no ceiling")
    lines += _dram_note(cal)
    llc = cal.last_level_cache()
    if llc is not None and llc[0] < max(cal.metadata.cache_sizes.values()):  # read off the sweep
        lines.append(f"  last-level cache: {llc[0] / 2**20:.0f} MiB, the {llc[1]}; the cold-weights term "
                     "uses this size")
    if m.dispatch_overhead_us is not None:
        lines.append(f"  dispatch overhead: {m.dispatch_overhead_us:.2f} us per call")
        bound = per_call_bound_levels(cal)
        if bound:
            lines.append(f"  note: {', '.join(bound)} triad calls last under {PER_CALL_DISPATCHES} dispatch overheads: "
                         "those rates are per-call costs from Python, not the cache's bandwidth")
    if m.module_overhead_us:
        calls = "  ".join(f"{module} {us:+.1f}" for module, us in sorted(m.module_overhead_us.items()))
        lines.append(f"  module call over its kernel, us: {calls}")
    if m.after_busy:
        points = "  ".join(f"{p.preceding_ms:.3g} ms {p.extra_us:+.1f}" for p in m.after_busy)
        lines.append(f"  a call after a busy kernel, us over its repeated time, by the kernel's time: {points}")
    data_costs = cal.busy_data_costs()
    if data_costs:
        points = "  ".join(f"{ms:.3g} ms {us:.1f}" for ms, us in data_costs)
        lines.append(f"  ... and for its data, us per MB it moves, by the kernel's time: {points}")
    losses = cal.private_cache_losses()
    if losses:
        points = "  ".join(f"{_mib(between)} {100 * share:.0f}%" for between, share in losses)
        lines.append(f"  share of a working set the cores' own caches lose to other reads, by the bytes read: {points}")
    for nbytes, waits in cal.wait_loss_curves():
        points = "  ".join(f"{ms:g} ms {100 * share:.0f}%" for ms, share in waits)
        lines.append(f"  share of {_mib(nbytes)} the LLC held lost to time alone, by the ms waited: {points}")
    return lines


def _stream_order(kernel: str) -> int:
    order = ("stream_copy", "stream_scale", "stream_add", "stream_triad")
    return order.index(kernel) if kernel in order else len(order)


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:g} MiB"


def _stream_size(cache_sizes: dict[str, int]) -> str:
    if not cache_sizes:
        return f"arrays of {_mib(STREAM_CACHE_MULTIPLE * UNKNOWN_LLC_BYTES)} or more (cache sizes unknown)"
    llc = max(cache_sizes.values())
    return f"arrays of {STREAM_CACHE_MULTIPLE}x the {_mib(llc)} LLC ({_mib(STREAM_CACHE_MULTIPLE * llc)} each)"


# The DRAM ceiling is the best case that lives in DRAM; one well above the STREAM triad
# (which the README promises as the DRAM figure) says which case set it, so the two
# figures never disagree unexplained.
DRAM_AGREEMENT = 0.10


def _dram_note(cal: ProfileSummary) -> list[str]:
    m = cal.measured
    lines = []
    ceiling, triad = m.bandwidth_by_level_gbps.get("DRAM"), m.stream_gbps.get("stream_triad")
    if ceiling is not None and triad is not None and ceiling > (1 + DRAM_AGREEMENT) * triad:
        setter = max((e for e in cal.operation_profiles.values() if e.memory_level == "DRAM" and e.family != "alloc"),
                     key=lambda e: e.gbps, default=None)
        where = f" from {setter.operation}[{format_params(setter.params)}]" if setter else ""
        lines.append(f"  note: the DRAM ceiling {ceiling:.1f} GB/s{where} is {100 * (ceiling / triad - 1):.0f}% above "
                     "the STREAM triad: efficiencies in DRAM divide by it")
    # Copy and scale count 2 words of the 3 they move (the written line is read first), add
    # and triad 3 of 4, so copy reads ~11% below triad on a steady machine; kernels that count
    # alike land within a few percent of each other.
    for pair in (("stream_add", "stream_triad"), ("stream_copy", "stream_scale")):
        rates = [m.stream_gbps[k] for k in pair if k in m.stream_gbps]
        if len(rates) == 2 and max(rates) > (1 + DRAM_AGREEMENT) * min(rates):
            names = " and ".join(k.removeprefix("stream_") for k in pair)
            lines.append(f"  note: STREAM {names}, which move alike on arrays of one size, ran at {rates[0]:.1f} and "
                         f"{rates[1]:.1f} GB/s: DRAM bandwidth moved during the run; rerun before trusting DRAM "
                         "efficiencies")
    return lines


def _name(entry: OperationCalibration) -> str:
    return f"{entry.operation}[{format_params(entry.params)}]"


def _efficiency(entry: OperationCalibration) -> float:
    """How close to its roof an entry runs: the better of its two efficiencies (unknown last)."""
    known = [v for v in (entry.compute_efficiency, entry.bandwidth_efficiency) if v is not None]
    return max(known) if known else float("inf")


# How ``show --sort`` orders the operations table.
SORTS = {
    "family": lambda e: (e.family, e.operation, e.flops, e.bytes),
    "name": lambda e: (_name(e), e.dtype),
    "time": lambda e: -e.latency.median_ms,
    "gflops": lambda e: -e.gflops,
    "gbps": lambda e: -e.gbps,
    "efficiency": _efficiency,
}
SORT_HELP = ("family (default: family, operation, size), name, time (slowest first), gflops and gbps (highest "
             "first), efficiency (the furthest below its roof first)")


def _operations(cal: ProfileSummary, select: Predicate | None, sort: str) -> list[str]:
    every = cal.operation_profiles.values()
    entries = sorted((e for e in every if select is None or select(e.key)), key=SORTS[sort])
    if not entries:
        return ["", f"Operations: none of {len(every)} match the filter"] if select and every else []
    width = max(len("operation"), *(len(_name(e)) for e in entries))
    counted = f"{len(entries)} of {len(every)} match the filter" if select else f"{len(entries)}"
    lines = [
        "",
        f"Operations ({counted}; efficiencies are of the measured ceilings of each entry's memory level):",
        f"  {'operation':<{width}} {'dtype':<8} {'median us':>10} {'IQR':>5} {'GFLOPS':>8} {'GB/s':>7} "
        f"{'FLOP/B':>7} {'comp':>5} {'bw':>5} {'level':<8} bound",
    ]
    for e in entries:
        iqr, median = e.latency.iqr_ms, e.latency.median_ms
        spread = iqr / median if iqr is not None and median else None
        flags = (" noisy" if e.noisy else "") + (" busy" if e.busy else "")
        lines.append(
            f"  {_name(e):<{width}} {e.dtype:<8} {median * 1e3:>10.1f} {_pct(spread):>5} {e.gflops:8.1f} "
            f"{e.gbps:7.1f} {_num(e.arithmetic_intensity, '.2f'):>7} {_pct(e.compute_efficiency):>5} "
            f"{_pct(e.bandwidth_efficiency):>5} {e.memory_level:<8} {e.bottleneck.value}{flags}")
    noisy = sum(entry.noisy for entry in entries)
    if noisy:
        lines.append(f"  {noisy} entr{'y is' if noisy == 1 else 'ies are'} noisy (IQR > 10% of median): "
                     "rerun on a quieter machine before trusting them")
    return lines


def render_summary(cal: ProfileSummary, *, select: Predicate | None = None, sort: str = "family") -> str:
    """The summary; ``select`` keeps the entries whose key it accepts (see
    :func:`calibration.profile.select.parse_filter`), ``sort`` is one of :data:`SORTS`."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    md = cal.metadata
    threads = f"{md.threads} threads" if md.threads else "threads unknown"
    lines = [
        "=" * WIDTH,
        f"Hardware calibration: {md.hardware_name}",
        f"  {md.device_type}: {md.device_name} | {threads} | torch {md.torch_version or 'unknown'} | "
        f"{md.date:%Y-%m-%d %H:%M} UTC{' | quick' if md.quick else ''}",
        *([f"  upgraded from {md.upgraded_from}"] if md.upgraded_from else []),
        *([f"  each case at its median run of {len(md.merged_from)} merged calibrations ("
           + ", ".join(f"{d:%Y-%m-%d %H:%M}" for d in md.merged_from) + " UTC)"] if md.merged_from else []),
        *_busy(cal),
        "=" * WIDTH,
        *_peaks(cal),
        *_measured(cal),
        *_operations(cal, select, sort),
        *_fusion(cal, select),
        *_workload(cal),
    ]
    return "\n".join(lines)


FUSION_NOTE = """\
Fusion, per size: each fused variant is timed round by round against its own unfused twin (the
  same machine state for both); speedup = twin median / fused median, with its 95% bootstrap
  interval; 'alone' is the unfused case timed by itself."""


def _fusion(cal: ProfileSummary, select: Predicate | None = None) -> list[str]:
    if not cal.fusion_profiles:
        return []
    by_family: dict[str, dict[str, list[FusionCalibration]]] = {}  # family -> "pattern[size]" -> variants
    for pattern, entries in cal.fusion_profiles.items():
        for entry in entries:
            if select is not None and not select(entry.key):
                continue
            name = f"{pattern}[{format_params(entry.params)}]" if entry.params else pattern
            by_family.setdefault(entry.family, {}).setdefault(name, []).append(entry)
    if not by_family:
        return ["", "Fusion: no entry matches the filter"]
    lines = [
        "",
        *FUSION_NOTE.splitlines(),
        "  pattern[size]  (the bytes fusing saves; the unfused case timed alone)",
        f"    {'variant':<9} {'twin us':>10} {'fused us':>10} {'speedup':>8} {'95% CI':>11}  verdict",
    ]
    for family in sorted(by_family):
        lines.append(f"  [{family}]")
        for name, variants in by_family[family].items():
            first = variants[0]
            alone = f"; unfused alone {first.unfused_alone_ms * 1e3:.1f} us" if first.unfused_alone_ms else ""
            lines.append(f"  {name}  (saves {100 * first.memory_reduction:.0f}% of the bytes{alone})")
            for e in sorted(variants, key=lambda e: e.variant):
                ci = f"{e.speedup_ci_low:.2f}-{e.speedup_ci_high:.2f}" if e.speedup_ci_low is not None else "-"
                lines.append(
                    f"    {e.variant:<9} {e.unfused.median_ms * 1e3:>10.1f} {e.fused.median_ms * 1e3:>10.1f} "
                    f"{e.speedup:>7.2f}x {ci:>11}  {e.verdict.value:<7}{_fusion_flags(e)}".rstrip())
    lines += _fusion_conclusions(cal)
    return lines


def _fusion_flags(e: FusionCalibration) -> str:
    flags = []
    if e.twin_disturbed and e.unfused_alone_ms:
        flags.append(f"twin {e.unfused.median_ms / e.unfused_alone_ms:.2g}x alone: not a fair baseline")
    if e.busy:
        flags.append("busy")
    return "".join(f"  {flag}" for flag in flags)


def _fusion_conclusions(cal: ProfileSummary) -> list[str]:
    """Per pattern, what the fastest fused variant at each size says (what the partitioner goes
    by), and where torch.compile alone loses while a library kernel pays."""
    best: dict[str, list[str]] = {}  # pattern -> the fastest variant's verdict at each size
    compiled_loses, library_pays = set(), set()
    for pattern, entries in cal.fusion_profiles.items():
        sizes: dict[tuple, list[FusionCalibration]] = {}
        for e in entries:
            sizes.setdefault((e.dtype, e.device, tuple(sorted(e.params.items(), key=str))), []).append(e)
            if e.variant == "compiled" and e.verdict.value == "avoid":
                compiled_loses.add(pattern)
            if e.variant == "library" and e.verdict.value == "fuse":
                library_pays.add(pattern)
        best[pattern] = [max(group, key=lambda e: e.speedup).verdict.value for group in sizes.values()]
    hurts = sorted(p for p, verdicts in best.items() if "avoid" in verdicts)
    pays = sorted(p for p, verdicts in best.items() if set(verdicts) == {"fuse"})
    only_compiled = sorted((compiled_loses & library_pays) - set(hurts))
    lines = []
    for title, patterns in (("fusion pays at every size (fastest variant)", pays),
                            ("fusion hurts (even the fastest variant loses at some size)", hurts),
                            ("torch.compile loses where the library kernel pays", only_compiled)):
        if patterns:
            lines += textwrap.wrap(f"{title}: {', '.join(patterns)}", WIDTH, initial_indent="  ",
                                   subsequent_indent="    ", break_on_hyphens=False)
    return lines


class ProfileSummary:
    """The display methods of a profile (mixed into ``HardwareCalibration``)."""

    def summary(self, *, select: Predicate | None = None, sort: str = "family") -> str:
        return render_summary(self, select=select, sort=sort)

    def print_summary(self, file: Any = None, *, select: Predicate | None = None, sort: str = "family") -> None:
        print(self.summary(select=select, sort=sort), file=file)


def _workload(cal: ProfileSummary) -> list[str]:
    """Which entries were calibrated for a model (--calibrate-model), per model."""
    counts: dict[str, int] = {}
    entries = [*cal.operation_profiles.values(), *(e for es in cal.fusion_profiles.values() for e in es)]
    for entry in entries:
        for label in (entry.origin or "").split(", "):
            if label:
                counts[label] = counts.get(label, 0) + 1
    if not counts:
        return []
    return ["", "Calibrated for models (--calibrate-model): "
            + "; ".join(f"{label}: {n} entr{'y' if n == 1 else 'ies'}" for label, n in sorted(counts.items()))]
