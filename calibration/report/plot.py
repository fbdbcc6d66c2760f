"""Roofline picture of a profile: ceilings, operation points (outliers named) and, on a panel
of their own, fusion arrows.

matplotlib is an optional extra (``pip install 'calibration[plot]'``) and is imported only
when a plot is drawn. The figure is rendered with the Agg canvas directly, without pyplot,
so no display and no global backend state are involved.
"""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calibration.profile.summary import per_call_bound_levels
from calibration.specs.keys import format_params

if TYPE_CHECKING:
    from calibration.profile.schema import HardwareCalibration

INSTALL_HINT = "matplotlib is not installed: pip install 'calibration[plot]'"

FIGSIZE = (12.0, 8.0)  # inches, one panel
FIGSIZE_WITH_FUSION = (18.0, 8.0)  # operations and fusion side by side
DPI = 120
# Points under this fraction of the roof at their intensity are labelled, the worst first.
OUTLIER_OF_ROOF = 0.15
OUTLIERS_LABELLED = 6
NOTE_WIDTH = 42  # characters per line of a note under the legend
PER_CALL_STYLE = (0, (1.5, 2.5))  # a dotted roof: the level's rate is a per-call cost

# Families in the order the legend lists them: colour and marker of each.
FAMILY_STYLE: dict[str, tuple[str, str]] = {
    "matmul": ("#1f77b4", "s"),
    "linear": ("#17becf", "D"),
    "bmm": ("#9467bd", "P"),
    "conv": ("#393b79", "^"),
    "softmax": ("#e377c2", "v"),
    "norm": ("#8c564b", "h"),
    "pool": ("#bcbd22", "X"),
    "elementwise": ("#ff7f0e", "o"),
    "memory": ("#7b4173", "*"),
}
_SPARE_STYLES = [("#637939", "p"), ("#e7ba52", "<"), ("#5254a3", ">"), ("#843c39", "8")]
# The one-element add and the tiny module probes measure per-call overhead: at ~1e-3 GFLOP/s
# they would stretch the y axis by three decades and say nothing about the roofs, so the note
# reports the dispatch cost instead.
NOT_ROOFLINE_FAMILIES = ("dispatch", "module", "sequence")

VERDICT_COLOURS = {"fuse": "#2ca02c", "neutral": "#8c8c8c", "avoid": "#d62728"}

PRIMARY_CEILING = "#222222"
OTHER_CEILING = "#9a9a9a"


class MatplotlibMissing(ImportError):
    """matplotlib, the optional plotting dependency, cannot be imported."""


def _matplotlib() -> tuple[Any, Any, Any]:
    try:
        # Import the package itself first: a submodule already in sys.modules would
        # otherwise import even where the package is unavailable.
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError as exc:
        raise MatplotlibMissing(INSTALL_HINT) from exc
    return Figure, FigureCanvasAgg, Line2D


# ---------------------------------------------------------------------- what to draw


@dataclass
class _Point:
    family: str
    intensity: float
    gflops: float
    name: str = ""
    of_roof: float | None = None  # attained / the roof at its intensity (its level's bandwidth, the compute ceiling)
    busy: bool = False  # timed while other processes kept the machine busy


@dataclass
class _Arrow:
    verdict: str
    start: tuple[float, float]
    end: tuple[float, float]


@dataclass
class _Profile:
    """One profile reduced to what the picture shows, with what it had to leave out."""

    label: str
    compute: dict[str, float]  # dtype -> GFLOP/s ceiling
    bandwidth: dict[str, float]  # memory level -> GB/s ceiling
    user_peak: float | None
    user_bandwidth: float | None
    per_call: list[str] = field(default_factory=list)  # levels whose rate is a per-call cost, not bandwidth
    points: list[_Point] = field(default_factory=list)
    arrows: list[_Arrow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _positive(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) and v > 0 for v in values)


def _level_order(level: str) -> tuple[int, str]:
    return (0, level) if level.startswith("L") else (1, level)


def _extract(cal: HardwareCalibration, dtype: str, label: str) -> _Profile:
    measured = cal.measured
    # Profiles written before compute ceilings were recorded still have the matmul best.
    compute = dict(measured.compute_ceiling_gflops or measured.matmul_gflops)
    bandwidth = dict(measured.bandwidth_by_level_gbps)
    peak = cal.peak_gflops.get(dtype)
    profile = _Profile(
        label=label,
        # One dtype per plot: another dtype's ceiling is no roof for these points.
        compute={k: v for k, v in compute.items() if _positive(v) and k == dtype},
        bandwidth={k: v for k, v in sorted(bandwidth.items(), key=lambda kv: _level_order(kv[0])) if _positive(v)},
        user_peak=peak.value if peak else None,
        user_bandwidth=cal.peak_bandwidth_gbps.value if cal.peak_bandwidth_gbps else None,
        per_call=per_call_bound_levels(cal),
    )
    others = sorted(k for k, v in compute.items() if k != dtype and _positive(v))
    if others:
        profile.notes.append(f"compute ceilings of {', '.join(others)} not drawn (--dtype {others[0]})")
    no_flops = other_dtype = 0
    for entry in cal.operation_profiles.values():
        if entry.dtype != dtype:
            other_dtype += 1
        elif entry.family in NOT_ROOFLINE_FAMILIES:
            continue
        elif not entry.flops or not _positive(entry.arithmetic_intensity, entry.gflops):
            no_flops += 1
        else:
            profile.points.append(_Point(entry.family, entry.arithmetic_intensity, entry.gflops,
                                         f"{entry.operation}[{format_params(entry.params)}]", _of_roof(entry),
                                         entry.busy))
    skipped_fusion = 0
    for entries in cal.fusion_profiles.values():
        for f in entries:
            if f.dtype != dtype:
                other_dtype += 1
            elif _positive(f.unfused_arithmetic_intensity, f.fused_arithmetic_intensity, f.unfused_gflops,
                           f.fused_gflops):
                profile.arrows.append(_Arrow(
                    f.verdict.value,
                    (f.unfused_arithmetic_intensity, f.unfused_gflops),
                    (f.fused_arithmetic_intensity, f.fused_gflops),
                ))
            else:
                skipped_fusion += 1
    if no_flops:
        profile.notes.append(f"{no_flops} entr{'y' if no_flops == 1 else 'ies'} with no FLOPs (pure copies) not shown")
    if skipped_fusion:
        profile.notes.append(f"{skipped_fusion} fusion entr{'y' if skipped_fusion == 1 else 'ies'} "
                             "with no FLOPs not shown")
    if other_dtype:
        profile.notes.append(f"{other_dtype} entr{'y' if other_dtype == 1 else 'ies'} of other dtypes not shown")
    dispatch = measured.dispatch_overhead_us
    if dispatch is not None:
        profile.notes.append(f"dispatch overhead {dispatch:.1f} µs/call (not a roofline point)")
    if not profile.compute and not profile.bandwidth:
        profile.notes.append("no measured ceilings (no matmul, STREAM or triad cases ran)")
    elif not profile.compute:
        profile.notes.append("no measured compute ceiling (no matmul case ran)")
    elif not profile.bandwidth:
        profile.notes.append("no measured bandwidth ceiling (no STREAM or triad case ran)")
    return profile


def _of_roof(entry: Any) -> float | None:
    """Attained GFLOP/s over the roof at the entry's intensity, from the ceilings it was scored by."""
    roofs = [c for c in (entry.compute_ceiling_gflops,) if c]
    if entry.bandwidth_ceiling_gbps and entry.arithmetic_intensity:
        roofs.append(entry.bandwidth_ceiling_gbps * entry.arithmetic_intensity)
    return entry.gflops / min(roofs) if roofs else None


def _title(cal: HardwareCalibration) -> str:
    m = cal.metadata
    device = f"{m.device_name} ({m.device_type})"
    what = device if m.device_name == m.hardware_name else f"{m.hardware_name} — {device}"
    return f"{what} — {m.date:%Y-%m-%d %H:%M} UTC"


def _default_label(cal: HardwareCalibration) -> str:
    return f"{cal.metadata.hardware_name} ({cal.metadata.date:%Y-%m-%d %H:%M})"


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _limits(values: Iterable[float], low_pad: float, high_pad: float, default: tuple[float, float]):
    values = [v for v in values if _positive(v)]
    if not values:
        return default
    low, high = min(values) / low_pad, max(values) * high_pad
    # At least two decades, so that a single point still sits in a readable frame.
    if high / low < 100:
        centre = math.sqrt(low * high)
        low, high = centre / 10, centre * 10
    return low, high


# ---------------------------------------------------------------------- drawing


def plot_roofline(
    calibration: HardwareCalibration,
    output_path: str | Path,
    *,
    other: HardwareCalibration | None = None,
    dtype: str = "float32",
    labels: tuple[str, str] | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> Path:
    """Draw the roofline of ``calibration`` (and ``other``, hollow and lighter) to a file.

    The format follows the file extension (png, svg, pdf...); a png is figsize x dpi
    pixels. See :func:`draw_roofline` for the rest.
    """
    output_path = Path(output_path)
    _check_image_path(output_path)
    fig = draw_roofline(calibration, other=other, dtype=dtype, labels=labels, figsize=figsize, dpi=dpi)
    fig.savefig(output_path, dpi=dpi)
    return output_path


def image_formats() -> tuple[str, ...]:
    """The file extensions matplotlib's Agg canvas writes (png, svg, pdf...)."""
    _, FigureCanvasAgg, _ = _matplotlib()
    return tuple(FigureCanvasAgg.get_supported_filetypes())


def _check_image_path(path: Path) -> None:
    """The format follows the extension, so the image lands exactly at ``path`` (matplotlib
    would append .png to a name without one, and report nothing)."""
    formats = image_formats()
    if path.is_dir():
        raise ValueError(f"Invalid image path '{path}': it is a directory; give a file such as {path / 'roofline.png'}")
    extension = path.suffix.lower().removeprefix(".")
    if extension not in formats:
        got = f"extension {extension!r}" if extension else "no extension"
        raise ValueError(f"Invalid image path '{path}': {got}; allowed: {', '.join(formats)}")


def draw_roofline(
    calibration: HardwareCalibration,
    *,
    other: HardwareCalibration | None = None,
    dtype: str = "float32",
    labels: tuple[str, str] | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> Any:
    """The roofline as a matplotlib Figure (on an Agg canvas), to show or save.

    Operations are points on the left panel, the points furthest below their roof labelled;
    fusion entries are arrows (unfused -> fused) on a panel of their own beside it, with the
    same axes and roofs, so that neither hides the other. ``figsize`` defaults to
    FIGSIZE_WITH_FUSION when there are arrows, else FIGSIZE. ``labels`` names the two
    profiles in the legend (default: hardware name and date). Raises MatplotlibMissing
    without matplotlib, and ValueError when neither profile has an entry of ``dtype``.
    """
    Figure, FigureCanvasAgg, Line2D = _matplotlib()
    names = labels or (_default_label(calibration), _default_label(other) if other else "")
    profiles = [_extract(calibration, dtype, names[0])]
    if other is not None:
        profiles.append(_extract(other, dtype, names[1]))
    _check_dtype(dtype, [calibration] + ([other] if other else []))
    arrows = any(p.arrows for p in profiles)

    fig = Figure(figsize=figsize or (FIGSIZE_WITH_FUSION if arrows else FIGSIZE), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(1, 2, sharex=True, sharey=True)) if arrows else [fig.add_subplot()]
    xlim, ylim = _frame(profiles, dtype)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_xlabel("arithmetic intensity (FLOP/byte)", fontsize=12)
        ax.tick_params(labelsize=11)
        ax.grid(True, which="major", color="#dddddd", linewidth=0.8)
        ax.grid(True, which="minor", color="#f0f0f0", linewidth=0.5)
        ax.set_axisbelow(True)
    axes[0].set_ylabel("attained performance (GFLOP/s)", fontsize=12)
    if arrows:
        axes[0].set_title("Operations", fontsize=12)
        axes[1].set_title("Fusion: unfused → fused, per variant and size", fontsize=12)

    if other is None:
        title = f"Roofline ({dtype}): {_title(calibration)}"
        subtitle = _subtitle(calibration)
    else:
        first, second = calibration.metadata.hardware_name, other.metadata.hardware_name
        if first == second:
            first, second = names
        title = f"Roofline ({dtype}): {first} vs {second}"
        subtitle = f"{_title(calibration)}  vs  {_title(other)}"
    heading = fig.suptitle(f"{title}\n{subtitle}", fontsize=13)

    families = _families(profiles)
    for index, p in enumerate(profiles):
        hollow = index == 1
        for family in families:
            pts = [pt for pt in p.points if pt.family == family]
            if not pts:
                continue
            colour, marker = families[family]
            axes[0].scatter(
                [pt.intensity for pt in pts], [pt.gflops for pt in pts], s=55, marker=marker,
                facecolors="none" if hollow else colour, edgecolors=colour,
                linewidths=1.4 if hollow else 0.6, zorder=5 - index, alpha=0.95,
            )
        for arrow in p.arrows:
            axes[-1].annotate(
                "", xy=arrow.end, xytext=arrow.start, zorder=4 - index,
                arrowprops=dict(
                    arrowstyle="-|>", color=VERDICT_COLOURS.get(arrow.verdict, "#555555"),
                    lw=1.4 if index == 0 else 1.0, alpha=0.8 if index == 0 else 0.45,
                    linestyle="-" if index == 0 else (0, (3, 2)), shrinkA=0, shrinkB=0, mutation_scale=12,
                ),
            )

    _legend(fig, profiles, families, Line2D, _notes(profiles))

    # Lay out the title and legend once, then freeze it: ceiling labels are rotated to the
    # on-screen slope of their line, which needs the final axes box.
    fig.canvas.draw()
    fig.set_layout_engine("none")
    # Over the panels, not the figure: the legend beside them reaches the top.
    left, right = axes[0].get_position().x0, axes[-1].get_position().x1
    heading.set_x((left + right) / 2)
    for panel, ax in enumerate(axes):
        labeller = _Labeller(ax, _obstacles(ax, profiles, arrows=panel == len(axes) - 1, points=panel == 0))
        for index, p in enumerate(profiles):
            partner = profiles[1 - index] if len(profiles) == 2 else None
            _draw_ceilings(ax, p, dtype, primary=index == 0, labeller=labeller, partner=partner)
        if panel == 0:
            _label_outliers(profiles[0], labeller)
    return fig


def _frame(profiles: list[_Profile], dtype: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits that hold every point, arrow and ridge point of both profiles."""
    xs, ys = [], []
    for p in profiles:
        xs += [pt.intensity for pt in p.points] + [c for a in p.arrows for c in (a.start[0], a.end[0])]
        ys += [pt.gflops for pt in p.points] + [c for a in p.arrows for c in (a.start[1], a.end[1])]
        roof = _roof(p, dtype)
        ys += list(p.compute.values()) + ([p.user_peak] if p.user_peak else [])
        if roof:
            xs += [roof / bw for bw in p.bandwidth.values()]
    xlim = _limits(xs, 4.0, 4.0, (0.01, 1000.0))
    if not any(pt for p in profiles for pt in p.points + p.arrows):
        ys += [bw * x for p in profiles for bw in p.bandwidth.values() for x in xlim]
    return xlim, _limits(ys, 4.0, 2.5, (0.1, 1000.0))


def _notes(profiles: list[_Profile]) -> list[str]:
    """What the picture leaves out, once: a note both profiles have is not said twice."""
    if len(profiles) == 1:
        return profiles[0].notes
    shared = [n for n in profiles[0].notes if n in profiles[1].notes]
    notes = shared + [f"{p.label}: {n}" for p in profiles for n in p.notes if n not in shared]
    return notes + ["legend counts: first / second profile; ceiling labels: first (vs second)"]


def _legend(fig: Any, profiles: list[_Profile], families: dict[str, tuple[str, str]], Line2D: Any,
            notes: list[str]) -> None:
    """The legend and, under it, the notes: beside the axes, where they cover no point."""
    handles: list[Any] = []

    def header(text: str) -> None:
        handles.append(Line2D([], [], linestyle="none", label=text))

    if len(profiles) == 2:
        header("Profiles")
        handles.append(Line2D([], [], color=PRIMARY_CEILING, marker="o", markerfacecolor=PRIMARY_CEILING,
                              label=f"{profiles[0].label}\n(filled, dark ceilings)"))
        handles.append(Line2D([], [], color=OTHER_CEILING, marker="o", markerfacecolor="none",
                              markeredgecolor="#555555", linestyle="--",
                              label=f"{profiles[1].label}\n(hollow, light ceilings)"))
    counts = [Counter(pt.family for pt in p.points) for p in profiles]
    if families:
        header("Operations")
    for family, (colour, marker) in families.items():
        n = " / ".join(str(c[family]) for c in counts)
        handles.append(Line2D([], [], linestyle="none", marker=marker, markersize=8, color=colour,
                              label=f"{family} ({n})"))
    verdicts = [Counter(a.verdict for a in p.arrows) for p in profiles]
    present = [v for v in VERDICT_COLOURS if any(c[v] for c in verdicts)]
    if present:
        header("Fusion: unfused → fused")
    for verdict in present:
        n = " / ".join(str(c[verdict]) for c in verdicts)
        handles.append(Line2D([], [], color=VERDICT_COLOURS[verdict], lw=2, marker=">", markersize=7,
                              label=f"{verdict} ({n})"))
    if any(p.per_call for p in profiles):
        header("Ceilings")
        handles.append(Line2D([], [], color=PRIMARY_CEILING, lw=1.4, linestyle=PER_CALL_STYLE,
                              label="per-call bound: the triad call\nlasts a few dispatches"))
    if notes:
        header("Notes")
        handles += [Line2D([], [], linestyle="none", label=textwrap.fill(n, NOTE_WIDTH, subsequent_indent="  "))
                    for n in notes]
    if handles:
        legend = fig.legend(handles=handles, loc="outside right upper", fontsize=10, frameon=False,
                            handlelength=2.2, labelspacing=0.5)
        headers = {"Profiles", "Operations", "Fusion: unfused → fused", "Ceilings", "Notes"}
        wrapped = {textwrap.fill(n, NOTE_WIDTH, subsequent_indent="  ") for n in notes}
        for text in legend.get_texts():
            if text.get_text() in headers:
                text.set_fontweight("bold")
            if text.get_text() in headers or text.get_text() in wrapped:
                text.set_x(-28)  # headers and notes start where the handles do
            if text.get_text() in wrapped:
                text.set_fontsize(9)
                text.set_color("#333333")


def _short(name: str, width: int = 34) -> str:
    """An entry's name broken at commas into lines of about ``width`` characters."""
    lines, line = [], ""
    for part in name.replace(",", ", ").split(" "):
        if line and len(line) + len(part) > width:
            lines.append(line.rstrip())
            line = ""
        line += part + " "
    return "\n".join(lines + [line.rstrip()]).replace(", ", ",")


def _label_outliers(p: _Profile, labeller: _Labeller) -> None:
    """Name the points furthest below their roof (under OUTLIER_OF_ROOF of it), the worst
    first, so that a 4 GFLOP/s convolution among 200 GFLOP/s ones can be identified."""
    below = sorted((pt for pt in p.points if pt.of_roof is not None and pt.of_roof < OUTLIER_OF_ROOF),
                   key=lambda pt: pt.of_roof)
    for pt in below[:OUTLIERS_LABELLED]:
        busy = ", timed while busy" if pt.busy else ""
        labeller.point(f"{_short(pt.name)}\n{pt.gflops:.3g} GFLOP/s, {100 * pt.of_roof:.2g}% of roof{busy}",
                       (pt.intensity, pt.gflops))


def _check_dtype(dtype: str, cals: list[HardwareCalibration]) -> None:
    present: set[str] = set()
    for cal in cals:
        present |= {e.dtype for e in cal.operation_profiles.values()}
        present |= {f.dtype for entries in cal.fusion_profiles.values() for f in entries}
        present |= set(cal.measured.compute_ceiling_gflops)
    if present and dtype not in present:
        raise ValueError(f"no {dtype} entries to plot; the profile has {', '.join(sorted(present))}")


def _subtitle(cal: HardwareCalibration) -> str:
    m = cal.metadata
    parts = []
    if m.cpu_capability:
        parts.append(m.cpu_capability)
    if m.threads:
        parts.append(f"{m.threads} threads")
    if m.torch_version:
        parts.append(f"torch {m.torch_version}")
    if m.quick is not None:
        parts.append("quick run" if m.quick else "full run")
    return ", ".join(parts)


def _families(profiles: list[_Profile]) -> dict[str, tuple[str, str]]:
    seen = {pt.family for p in profiles for pt in p.points}
    styles = {f: s for f, s in FAMILY_STYLE.items() if f in seen}
    for i, family in enumerate(sorted(seen - set(FAMILY_STYLE))):
        styles[family] = _SPARE_STYLES[i % len(_SPARE_STYLES)]
    return styles


def _roof(p: _Profile, dtype: str) -> float | None:
    """The compute ceiling the bandwidth diagonals are clipped at."""
    if dtype in p.compute:
        return p.compute[dtype]
    if p.compute:
        return max(p.compute.values())
    return p.user_peak


def _ceilings(p: _Profile) -> dict[tuple[str, str], float]:
    """Every ceiling of a profile by (kind, name): compute per dtype, user peaks, bandwidth per level."""
    found = {("compute", k): v for k, v in p.compute.items()}
    found.update({("bandwidth", k): v for k, v in p.bandwidth.items()})
    if p.user_peak:
        found[("peak", "")] = p.user_peak
    if p.user_bandwidth:
        found[("peak bandwidth", "")] = p.user_bandwidth
    return found


def _ceiling_label(kind: str, name: str, value: float, versus: float | None, per_call: bool = False) -> str:
    unit = "GB/s" if "bandwidth" in kind else "GFLOP/s"
    text = {"compute": f"{name} compute", "bandwidth": name}.get(kind, f"{kind} (user)")
    text = f"{text} {_fmt(value)} {unit}"
    text = f"{text} (vs {_fmt(versus)})" if versus is not None else text
    return f"{text}, per-call bound" if per_call else text


def _draw_ceilings(ax: Any, p: _Profile, dtype: str, *, primary: bool, labeller: _Labeller,
                   partner: _Profile | None = None) -> None:
    """Draw ``p``'s roofs. With two profiles, a ceiling both have is labelled once, on the
    first profile's line, with the second's value: "L3 132 GB/s (vs 102)"."""
    colour = PRIMARY_CEILING if primary else OTHER_CEILING
    style = dict(color=colour, lw=2.0 if primary else 1.6, zorder=2, alpha=1.0 if primary else 0.9,
                 linestyle="-" if primary else "--")
    user_style = {**style, "linestyle": (0, (6, 3)), "lw": 1.4}
    from matplotlib.patheffects import withStroke

    # A white halo keeps a label readable where it has to cross points or arrows.
    text_style = dict(color="#111111" if primary else "#777777", fontsize=10,
                      fontstyle="normal" if primary else "italic", zorder=6,
                      path_effects=[withStroke(linewidth=3, foreground="white")])
    (xlo, xhi), (ylo, yhi) = ax.get_xlim(), ax.get_ylim()
    roof = _roof(p, dtype)
    ridges = [roof / bw for bw in p.bandwidth.values()] if roof else []
    start = max(min(ridges), xlo) if ridges else xlo
    theirs = _ceilings(partner) if partner else {}

    def label(kind: str, name: str, value: float) -> str | None:
        per_call = kind == "bandwidth" and name in p.per_call
        if not primary:
            return None if (kind, name) in theirs else _ceiling_label(kind, name, value, None, per_call)
        return _ceiling_label(kind, name, value, theirs.get((kind, name)), per_call)

    for (kind, name), value in _ceilings(p).items():
        if kind == "compute":  # only the plot's dtype (see _extract)
            ax.plot([start, xhi], [value, value], **style)
        elif kind == "peak":
            ax.plot([xlo, xhi], [value, value], **user_style)
        else:
            continue
        text = label(kind, name, value)
        if text:
            labeller.flat(text, value, text_style)

    diagonals = [(kind, name, value) for (kind, name), value in _ceilings(p).items() if "bandwidth" in kind]
    # Highest first: its label goes nearest the top, where the others cannot be.
    for kind, name, bw in sorted(diagonals, key=lambda d: -d[2]):
        end = min(roof / bw, xhi) if roof else xhi
        line = style if kind == "bandwidth" else user_style
        if kind == "bandwidth" and name in p.per_call:
            line = {**style, "linestyle": PER_CALL_STYLE, "lw": 1.4}
        ax.plot([xlo, end], [bw * xlo, bw * end], **line)
        lo, hi = max(xlo, ylo / bw), min(end, yhi / bw)
        text = label(kind, name, bw)
        if text and lo < hi:
            labeller.diagonal(text, bw, lo, hi, text_style)


class _Labeller:
    """Places ceiling and point labels where they cover no other label or point.

    Each label has candidate positions in order of preference; the first that stays inside
    the axes and clear of everything wins. Where none is clear of the points, the first
    clear of the other labels does, then the first inside the axes: a ceiling is never left
    unlabelled, and never cut off where it can be helped.
    """

    def __init__(self, ax: Any, obstacles: list[Any]) -> None:
        self.ax = ax
        self.renderer = ax.figure.canvas.get_renderer()
        self.labels: list[Any] = []
        self.obstacles = obstacles

    def _fits(self, boxes: list[Any], avoid: list[Any] | None) -> bool:
        """All of ``boxes`` inside the axes and clear of ``avoid``; None accepts anything."""
        if avoid is None:
            return True
        inside = self.ax.get_window_extent()
        for box in boxes:
            if box.x0 < inside.x0 or box.x1 > inside.x1 or box.y0 < inside.y0 or box.y1 > inside.y1:
                return False
        return not any(box.overlaps(other) for box in boxes for other in avoid)

    def _footprint(self, artist: Any) -> list[Any]:
        """Screen boxes covering a label's text. A rotated label's bounding box is a large
        square that would block every spot around it; a row of boxes along its baseline is
        what it really covers."""
        from matplotlib.text import Text
        from matplotlib.transforms import Bbox

        artist.update_positions(self.renderer)  # where the annotation's text goes, as drawing it would
        angle = artist.get_rotation()
        if angle % 180 == 0:
            return [Text.get_window_extent(artist, self.renderer)]  # the text alone, not a leader line
        artist.set_rotation(0)
        flat = Text.get_window_extent(artist, self.renderer)  # about the same anchor (rotation_mode anchor)
        artist.set_rotation(angle)
        step, (cos, sin) = flat.height, (math.cos(math.radians(angle)), math.sin(math.radians(angle)))
        half = step * (abs(cos) + abs(sin)) / 2  # the upright box around one rotated h x h cell
        boxes = []
        for i in range(max(1, math.ceil(flat.width / step))):
            along = (i + 0.5) * step
            x = flat.x0 + along * cos - step / 2 * sin
            y = flat.y0 + along * sin + step / 2 * cos
            boxes.append(Bbox.from_extents(x - half, y - half, x + half, y + half))
        return boxes

    def place(self, text: str, candidates: list[dict], style: dict) -> bool:
        """Place the label at the first acceptable candidate: clear of labels and obstacles,
        else of labels, else inside the axes, else anywhere. False where it overlaps."""
        for avoid in (self.labels + self.obstacles, self.labels, [], None):
            for candidate in candidates:
                artist = self.ax.annotate(text, **candidate, **style)
                boxes = self._footprint(artist)
                if self._fits(boxes, avoid):
                    self.labels += boxes
                    return bool(avoid)
                artist.remove()
        return False

    def point(self, text: str, xy: tuple[float, float]) -> bool:
        """A label for one point, with a leader line to it: the nearest spot clear of
        everything, in eight directions at growing distances; left out (False) rather than
        put over other labels or points."""
        from matplotlib.patheffects import withStroke

        style = dict(fontsize=8, color="#222222", zorder=7, path_effects=[withStroke(linewidth=3, foreground="white")],
                     arrowprops=dict(arrowstyle="-", color="#666666", lw=0.7, shrinkA=0, shrinkB=4))
        # Other points get a wide berth: a label beside someone else's point reads as theirs.
        x, y = self.ax.transData.transform(xy)
        others = [box.padded(14) for box in self.obstacles if not box.contains(x, y)]
        for radius in (14, 28, 45, 65, 90, 120):
            for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)):
                artist = self.ax.annotate(
                    text, xy=xy, xytext=(dx * radius, dy * radius), textcoords="offset points",
                    ha="left" if dx > 0 else "right" if dx < 0 else "center",
                    va="bottom" if dy > 0 else "top" if dy < 0 else "center", **style)
                boxes = self._footprint(artist)
                if self._fits(boxes, self.labels + others):
                    self.labels += boxes
                    return True
                artist.remove()
        return False

    def flat(self, text: str, value: float, style: dict) -> None:
        """A horizontal ceiling: right end above the line, then below, then further left."""
        where = self.ax.get_yaxis_transform()  # x in axes fraction, y in data
        candidates = [
            dict(xy=(x, value), xycoords=where, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va)
            for x, dx, ha in ((1.0, -6, "right"), (0.55, 0, "center"), (0.02, 6, "left"))
            for dy, va in ((2, "bottom"), (-3, "top"))
        ]
        self.place(text, candidates, style)

    def diagonal(self, text: str, bw: float, lo: float, hi: float, style: dict) -> None:
        """A bandwidth ceiling: along the line, just above it, rotated to its slope on screen."""
        to_screen = self.ax.transData.transform
        (x0, y0), (x1, y1) = to_screen((lo, bw * lo)), to_screen((hi, bw * hi))
        angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
        span = math.log(hi / lo)
        candidates = []
        for fraction in (0.05, 0.2, 0.35, 0.5, 0.65, 0.12, 0.28, 0.42, 0.58, 0.0):
            x = lo * math.exp(span * fraction)
            candidates.append(dict(xy=(x, bw * x), xytext=(0, 3), textcoords="offset points", ha="left",
                                   va="bottom", rotation=angle, rotation_mode="anchor"))
        self.place(text, candidates, style)


def _obstacles(ax: Any, profiles: list[_Profile], *, points: bool = True, arrows: bool = True) -> list[Any]:
    """Screen boxes of the points and arrow ends that ``ax`` shows, for labels to keep clear of."""
    from matplotlib.transforms import Bbox

    xy = [(pt.intensity, pt.gflops) for p in profiles for pt in p.points] if points else []
    xy += [end for p in profiles for a in p.arrows for end in (a.start, a.end)] if arrows else []
    boxes = []
    for x, y in ax.transData.transform(xy) if xy else []:
        boxes.append(Bbox.from_extents(x - 6, y - 6, x + 6, y + 6))
    return boxes
