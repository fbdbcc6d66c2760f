"""Roofline picture of a profile: ceilings, operation points and fusion arrows.

matplotlib is an optional extra (``pip install 'calibration[plot]'``) and is imported only
when a plot is drawn. The figure is rendered with the Agg canvas directly, without pyplot,
so no display and no global backend state are involved.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calibration.profile.schema import HardwareCalibration

INSTALL_HINT = "matplotlib is not installed: pip install 'calibration[plot]'"

FIGSIZE = (12.0, 8.0)  # inches
DPI = 120

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
NOT_ROOFLINE_FAMILIES = ("dispatch", "module")

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
        compute={k: v for k, v in compute.items() if _positive(v)},
        bandwidth={k: v for k, v in sorted(bandwidth.items(), key=lambda kv: _level_order(kv[0])) if _positive(v)},
        user_peak=peak.value if peak else None,
        user_bandwidth=cal.peak_bandwidth_gbps.value if cal.peak_bandwidth_gbps else None,
    )
    no_flops = other_dtype = 0
    for entry in cal.operation_profiles.values():
        if entry.dtype != dtype:
            other_dtype += 1
        elif entry.family in NOT_ROOFLINE_FAMILIES:
            continue
        elif not entry.flops or not _positive(entry.arithmetic_intensity, entry.gflops):
            no_flops += 1
        else:
            profile.points.append(_Point(entry.family, entry.arithmetic_intensity, entry.gflops))
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
    figsize: tuple[float, float] = FIGSIZE,
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
    figsize: tuple[float, float] = FIGSIZE,
    dpi: int = DPI,
) -> Any:
    """The roofline as a matplotlib Figure (on an Agg canvas), to show or save.

    ``labels`` names the two profiles in the legend (default: hardware name and date).
    Raises MatplotlibMissing without matplotlib, and ValueError when neither profile has
    an entry of ``dtype``.
    """
    Figure, FigureCanvasAgg, Line2D = _matplotlib()
    names = labels or (_default_label(calibration), _default_label(other) if other else "")
    profiles = [_extract(calibration, dtype, names[0])]
    if other is not None:
        profiles.append(_extract(other, dtype, names[1]))
    _check_dtype(dtype, [calibration] + ([other] if other else []))

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")

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
    ylim = _limits(ys, 4.0, 2.5, (0.1, 1000.0))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)

    ax.set_xlabel("arithmetic intensity (FLOP/byte)", fontsize=12)
    ax.set_ylabel("attained performance (GFLOP/s)", fontsize=12)
    ax.tick_params(labelsize=11)
    ax.grid(True, which="major", color="#dddddd", linewidth=0.8)
    ax.grid(True, which="minor", color="#f0f0f0", linewidth=0.5)
    ax.set_axisbelow(True)

    if other is None:
        title = f"Roofline ({dtype}): {_title(calibration)}"
        subtitle = _subtitle(calibration)
    else:
        first, second = calibration.metadata.hardware_name, other.metadata.hardware_name
        if first == second:
            first, second = names
        title = f"Roofline ({dtype}): {first} vs {second}"
        subtitle = f"{_title(calibration)}\nvs {_title(other)}"
    # Over the axes, not the figure (suptitle): the legend beside the axes reaches the top.
    ax.set_title(subtitle, fontsize=10, color="#444444")
    ax.annotate(title, xy=(0.5, 1.0), xycoords="axes fraction", xytext=(0, 16 * (subtitle.count("\n") + 2)),
                textcoords="offset points", ha="center", va="bottom", fontsize=14, fontweight="bold")

    handles: list[Any] = []
    hollow = [False, True]
    families = _families(profiles)
    for index, p in enumerate(profiles):
        for family in families:
            pts = [pt for pt in p.points if pt.family == family]
            if not pts:
                continue
            colour, marker = families[family]
            ax.scatter(
                [pt.intensity for pt in pts], [pt.gflops for pt in pts], s=55, marker=marker,
                facecolors="none" if hollow[index] else colour, edgecolors=colour,
                linewidths=1.4 if hollow[index] else 0.6, zorder=5 - index, alpha=0.95,
            )
        for arrow in p.arrows:
            ax.annotate(
                "", xy=arrow.end, xytext=arrow.start, zorder=4 - index,
                arrowprops=dict(
                    arrowstyle="-|>", color=VERDICT_COLOURS.get(arrow.verdict, "#555555"),
                    lw=1.4 if index == 0 else 1.0, alpha=0.8 if index == 0 else 0.45,
                    linestyle="-" if index == 0 else (0, (3, 2)), shrinkA=0, shrinkB=0, mutation_scale=12,
                ),
            )

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
    if handles:
        legend = fig.legend(handles=handles, loc="outside right upper", fontsize=10, frameon=False,
                            handlelength=2.2, labelspacing=0.5)
        headers = {"Profiles", "Operations", "Fusion: unfused → fused"}
        for text in legend.get_texts():
            if text.get_text() in headers:
                text.set_fontweight("bold")
                text.set_x(-28)  # headers start where the handles do

    notes = []
    for p in profiles:
        prefix = f"{p.label}: " if len(profiles) == 2 else ""
        notes += [prefix + n for n in p.notes]
    if len(profiles) == 2:
        notes.append("legend counts: first / second profile; ceiling labels: first (vs second)")
    note = None
    if notes:
        note = ax.text(0.99, 0.01, "\n".join(notes), transform=ax.transAxes, ha="right", va="bottom", fontsize=9,
                color="#333333", zorder=10,
                bbox=dict(boxstyle="round,pad=0.4", facecolor="white", edgecolor="#cccccc", alpha=0.9))

    # Lay out the title and legend once, then freeze it: ceiling labels are rotated to the
    # on-screen slope of their line, which needs the final axes box.
    fig.canvas.draw()
    fig.set_layout_engine("none")
    labeller = _Labeller(ax, _obstacles(ax, profiles, note))
    for index, p in enumerate(profiles):
        partner = profiles[1 - index] if len(profiles) == 2 else None
        _draw_ceilings(ax, p, dtype, primary=index == 0, labeller=labeller, partner=partner)
    return fig


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


def _ceiling_label(kind: str, name: str, value: float, versus: float | None) -> str:
    unit = "GB/s" if "bandwidth" in kind else "GFLOP/s"
    text = {"compute": f"{name} compute", "bandwidth": name}.get(kind, f"{kind} (user)")
    text = f"{text} {_fmt(value)} {unit}"
    return f"{text} (vs {_fmt(versus)})" if versus is not None else text


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
        if not primary:
            return None if (kind, name) in theirs else _ceiling_label(kind, name, value, None)
        return _ceiling_label(kind, name, value, theirs.get((kind, name)))

    # The chosen dtype first: its label gets the best place.
    for (kind, name), value in sorted(_ceilings(p).items(), key=lambda kv: kv[0] != ("compute", dtype)):
        if kind == "compute":
            chosen = name == dtype
            ax.plot([start if chosen else xlo, xhi], [value, value], **(style if chosen else {**style, "lw": 1.0}))
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
        ax.plot([xlo, end], [bw * xlo, bw * end], **(style if kind == "bandwidth" else user_style))
        lo, hi = max(xlo, ylo / bw), min(end, yhi / bw)
        text = label(kind, name, bw)
        if text and lo < hi:
            labeller.diagonal(text, bw, lo, hi, text_style)


class _Labeller:
    """Places ceiling labels where they cover no other label, point or note.

    Each label has candidate positions in order of preference; the first that stays inside
    the axes and clear of everything wins. Where none is clear of the points, the first
    clear of the other labels does; a ceiling is never left unlabelled.
    """

    def __init__(self, ax: Any, obstacles: list[Any]) -> None:
        self.ax = ax
        self.renderer = ax.figure.canvas.get_renderer()
        self.labels: list[Any] = []
        self.obstacles = obstacles

    def _fits(self, extent: Any, avoid: list[Any]) -> bool:
        inside = self.ax.get_window_extent()
        if extent.x0 < inside.x0 or extent.x1 > inside.x1 or extent.y0 < inside.y0 or extent.y1 > inside.y1:
            return False
        return not any(extent.overlaps(other) for other in avoid)

    def place(self, text: str, candidates: list[dict], style: dict) -> None:
        for avoid in (self.labels + self.obstacles, self.labels, None):
            for candidate in candidates:
                artist = self.ax.annotate(text, **candidate, **style)
                extent = artist.get_window_extent(self.renderer)
                if avoid is None or self._fits(extent, avoid):
                    self.labels.append(extent)
                    return
                artist.remove()

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


def _obstacles(ax: Any, profiles: list[_Profile], note: Any) -> list[Any]:
    """Screen boxes of the points, arrow ends and the note, for labels to keep clear of."""
    from matplotlib.transforms import Bbox

    xy = [(pt.intensity, pt.gflops) for p in profiles for pt in p.points]
    xy += [end for p in profiles for a in p.arrows for end in (a.start, a.end)]
    boxes = []
    for x, y in ax.transData.transform(xy) if xy else []:
        boxes.append(Bbox.from_extents(x - 6, y - 6, x + 6, y + 6))
    if note is not None:
        boxes.append(note.get_window_extent(ax.figure.canvas.get_renderer()))
    return boxes
