"""Rendering a Comparison: an aligned text table, markdown for a PR comment, or JSON."""

from __future__ import annotations

from collections import Counter

from calibration.report.compare import (
    Comparison,
    EntryComparison,
    Method,
    Metric,
    Status,
)

TITLES = {"latency": "median latency", "gflops": "GFLOPS", "speedup": "fusion speedup"}
# One unit per column: the unit goes in the header, the values are plain numbers.
UNITS = {"latency": "us", "gflops": "GFLOPS", "speedup": "x"}


def format_value(value: float, metric: Metric) -> str:
    """A value in its column's unit (UNITS): latency (stored in ms) in us."""
    if metric == "speedup":
        return f"{value:.2f}"
    if metric == "gflops":
        return f"{value:.1f}"
    return f"{value * 1e3:.1f}"


# How the entries of a report are ordered (--sort).
SORTS = ("status", "change", "name")
SORT_HELP = ("status: regressions worst first, then improvements best first, then the unchanged in profile order "
             "(default); change: by how much worse, the worst first; name: by key")


def _change(entry: EntryComparison) -> str:
    return f"{100 * (entry.ratio - 1):+.1f}%"


def _p(entry: EntryComparison) -> str:
    if entry.method is Method.RANK:
        return f"{entry.p_value:.2g}"
    return "notches" if entry.method is Method.NOTCHES else "-"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def _describe(entry: EntryComparison, threshold: float) -> str:
    """The status column: what happened and, for the unchanged, why it is not flagged."""
    if entry.status is Status.REGRESSION:
        return "REGRESSION"
    if entry.status is Status.IMPROVEMENT:
        return "improvement"
    if entry.method is Method.NONE:
        return "not testable"
    parts = []
    if abs(entry.worse_by) > threshold:
        parts.append(("worse" if entry.worse_by > 0 else "better") + ", not significant")
    if entry.method is Method.RANK and entry.note:  # too few samples to ever be significant
        parts.append(entry.note)
    return "; ".join(parts)


def _status(entry: EntryComparison, threshold: float) -> str:
    busy = f"timed while busy ({entry.busy})" if entry.busy else ""
    return "; ".join(part for part in (_describe(entry, threshold), busy) if part)


def grouped(comparison: Comparison) -> tuple[list[EntryComparison], ...]:
    """Regressions worst first, improvements best first, the unchanged in profile order."""
    return (
        sorted(comparison.with_status(Status.REGRESSION), key=lambda e: -e.worse_by),
        sorted(comparison.with_status(Status.IMPROVEMENT), key=lambda e: e.worse_by),
        comparison.with_status(Status.UNCHANGED),
    )


def ordered(comparison: Comparison, sort: str, *, show_unchanged: bool = True) -> list[EntryComparison]:
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    regressions, improvements, unchanged = grouped(comparison)
    rows = regressions + improvements + (unchanged if show_unchanged else [])
    if sort == "change":
        return sorted(rows, key=lambda e: -e.worse_by)
    return sorted(rows, key=lambda e: e.key) if sort == "name" else rows


def _unmatched(comparison: Comparison, *, listed: bool) -> list[str]:
    """Per side, one line counting the entries only it has (by operation or pattern), or with
    ``listed`` the keys themselves: a full profile against a quick one has hundreds."""
    lines = []
    for name, keys in ((comparison.base_name, comparison.only_in_base), (comparison.new_name, comparison.only_in_new)):
        if not keys:
            continue
        if listed:
            lines.append(f"only in {name} ({len(keys)}, not compared):")
            lines += [f"  {key}" for key in keys]
            continue
        kinds = Counter(key.split("[", 1)[0] for key in keys)
        most = ", ".join(f"{kind} {count}" for kind, count in kinds.most_common(4))
        more = f", {len(kinds) - 4} more kinds" if len(kinds) > 4 else ""
        lines.append(f"only in {name}: {len(keys)} entr{'y' if len(keys) == 1 else 'ies'}, not compared "
                     f"({most}{more}; --list-unmatched lists them)")
    return lines


def _unchanged_line(comparison: Comparison) -> str:
    unchanged = comparison.with_status(Status.UNCHANGED)
    beyond = sum(1 for e in unchanged if e.method is not Method.NONE and abs(e.worse_by) > comparison.threshold)
    untestable = sum(1 for e in unchanged if e.method is Method.NONE)
    details = [f"within {_pct(comparison.threshold)} or not significant at p < {comparison.alpha:g}"]
    if beyond:
        details.append(f"{beyond} beyond {_pct(comparison.threshold)} but not significant")
    if untestable:
        details.append(f"{untestable} not testable (no samples or spread recorded)")
    line = f"{len(unchanged)} of {len(comparison.entries)} entries unchanged"
    line += f" ({'; '.join(details)})." if unchanged else "."
    if comparison.not_applicable:
        skipped = len(comparison.not_applicable)
        line += f" {skipped} shared entries have no {TITLES[comparison.metric]} and were skipped."
    return line


def _heading(comparison: Comparison) -> str:
    return (
        f"{TITLES[comparison.metric]}, threshold {_pct(comparison.threshold)}, "
        f"significant: Mann-Whitney U p < {comparison.alpha:g}"
    )


# --------------------------------------------------------------------------- text


def render_text(comparison: Comparison, *, show_unchanged: bool = True, sort: str = "status",
                list_unmatched: bool = False) -> str:
    c = comparison
    lines = [f"calibration compare: {c.base_name} -> {c.new_name}", _heading(c)]
    if c.metadata_differences:
        lines.append("metadata differs (timings from different set-ups are not comparable):")
        width = max(len(d.field) for d in c.metadata_differences)
        lines += [f"  {d.field:<{width}}  {d.base} -> {d.new}" for d in c.metadata_differences]
    lines += [f"measured on a busy machine, timings inflated: {profile}" for profile in c.busy]
    rows = ordered(c, sort, show_unchanged=show_unchanged)
    if rows:
        unit = UNITS[c.metric]
        table = [("entry", f"base {unit}", f"new {unit}", "change", "p", "status")] + [
            (e.key, format_value(e.base, c.metric), format_value(e.new, c.metric), _change(e), _p(e),
             _status(e, c.threshold))
            for e in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(5)]
        lines.append("")
        for row in table:
            cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:5], widths[1:], strict=True)]
            lines.append("  ".join(cells + [row[5]]).rstrip())
    lines.append("")
    if c.verdict_flips:
        lines.append(f"fusion verdicts flipped ({len(c.verdict_flips)}):")
        lines += [f"  {f.key}: {f.base.value} -> {f.new.value}" for f in c.verdict_flips]
    lines += _unmatched(c, listed=list_unmatched)
    counts = c.counts
    lines.append(
        f"{counts['regression']} regressed, {counts['improvement']} improved; " + _unchanged_line(c)
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- markdown


def _md(text: object) -> str:
    return str(text).replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def _md_entries(comparison: Comparison, entries: list[EntryComparison]) -> list[str]:
    rows = [
        [f"`{_md(e.key)}`", format_value(e.base, comparison.metric), format_value(e.new, comparison.metric),
         _change(e), _p(e), f"timed while busy ({e.busy})" if e.busy else ""]
        for e in entries
    ]
    unit = UNITS[comparison.metric]
    return _md_table(["entry", f"base {unit}", f"new {unit}", "change", "p", "note"], rows, "lrrrrl")


def render_markdown(comparison: Comparison) -> str:
    """For a pull-request comment: metadata differences, regressions, improvements, then one
    line for everything unchanged; verdict flips and unmatched entries below."""
    c = comparison
    lines = ["## Calibration compare", "", f"`{_md(c.base_name)}` → `{_md(c.new_name)}`: {_heading(c)}", ""]
    if c.metadata_differences:
        lines += ["> [!WARNING]", "> Measured on different set-ups: the timings are not comparable.", ""]
        rows = [[d.field, f"`{_md(d.base)}`", f"`{_md(d.new)}`"] for d in c.metadata_differences]
        lines += _md_table(["metadata", "base", "new"], rows, "lll")
    if c.busy:
        lines += ["> [!WARNING]", *(f"> Measured on a busy machine, timings inflated: `{_md(p)}`" for p in c.busy), ""]
    regressions, improvements, _ = grouped(c)
    for title, group in (("Regressions", regressions), ("Improvements", improvements)):
        lines.append(f"### {title} ({len(group)})")
        lines.append("")
        lines += _md_entries(c, group) if group else ["None.", ""]
    lines += [_unchanged_line(c), ""]
    if c.verdict_flips:
        lines += [f"### Fusion verdicts flipped ({len(c.verdict_flips)})", ""]
        lines += _md_table(["entry", "base", "new"],
                           [[f"`{_md(f.key)}`", f.base.value, f.new.value] for f in c.verdict_flips], "lll")
    for name, keys in ((c.base_name, c.only_in_base), (c.new_name, c.only_in_new)):
        if keys:
            lines += [f"<details><summary>Only in {_md(name)} ({len(keys)}, not compared)</summary>", ""]
            lines += [f"- `{_md(key)}`" for key in keys] + ["", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- json


def render_json(comparison: Comparison) -> str:
    """Every compared entry with ratio, p_value, significant, regression and status."""
    return comparison.model_dump_json(indent=1)


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}
