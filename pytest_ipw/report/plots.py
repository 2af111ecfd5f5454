"""The report's figures, drawn with matplotlib (Agg, no display) and returned as PNG bytes.

matplotlib is imported inside the functions only, so importing pytest-ipw never pays for it. Every figure
carries an energy-provenance caption at its foot, and every energy mark shows its own provenance:
measured points and bars are filled, estimated ones hollow or hatched and labelled "est.", so an estimate
can never pass for a measurement.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import textwrap
from typing import Any, Mapping, Sequence

from pytest_ipw.analysis.study import ParetoPoint, RoutingAnalysis, TrendPoint
from pytest_ipw.analysis.metrics import Summary

DPI = 100
MEASURED_COLOR = "#1f77b4"
ESTIMATED_COLOR = "#d62728"
MIXED_COLOR = "#9467bd"


def _figure(width: float = 7.5, height: float = 4.0) -> Any:
    from pytest_ipw.core.extras import require

    Figure = require("matplotlib.figure", "the report's figures (--ipw-report, pytest-ipw report)").Figure
    return Figure(figsize=(width, height), dpi=DPI)


def _png(figure: Any, caption: str) -> bytes:
    """Add the provenance caption at the foot and render to PNG (Agg)."""
    wrapped = "\n".join(textwrap.wrap(caption, 120)) or "energy: no records"
    lines = wrapped.count("\n") + 1
    figure.tight_layout(rect=(0, 0.035 * lines + 0.02, 1, 1))
    figure.text(0.01, 0.01, wrapped, fontsize=7, color="#333333", ha="left", va="bottom")
    buffer = io.BytesIO()
    # the caption also goes into the PNG's metadata, so a figure file names its energy provenance by itself
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Description": caption, "Software": "pytest-ipw"})
    return buffer.getvalue()


def provenance_color(provenance: str) -> str:
    return {"measured": MEASURED_COLOR, "estimated": ESTIMATED_COLOR}.get(provenance, MIXED_COLOR)


def provenance_tag(provenance: str) -> str:
    """Suffix for labels: nothing for a measurement, a visible tag otherwise."""
    return "" if provenance == "measured" else f" ({provenance.upper()})"


def _provenance_legend(axes: Any, provenances: set[str], kind: str = "marker") -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = []
    for provenance in sorted(provenances):
        color = provenance_color(provenance)
        label = f"energy {provenance}"
        if kind == "bar":
            handles.append(Patch(facecolor=color if provenance == "measured" else "white", edgecolor=color,
                                 hatch=None if provenance == "measured" else "//", label=label))
        else:
            handles.append(Line2D([], [], marker="o", linestyle="", markersize=8, color=color,
                                  markerfacecolor=color if provenance == "measured" else "none", label=label))
    if handles:
        axes.legend(handles=handles, fontsize=7, loc="best")


def coverage_heatmap(domains: Sequence[str], columns: Sequence[str], values: Sequence[Sequence[float | None]],
                     caption: str) -> bytes:
    """Rows = domains, columns = systems (accuracy) then the set's coverage; None = not attempted."""
    import numpy as np

    figure = _figure(max(5.0, 1.1 * len(columns) + 2.5), max(2.5, 0.42 * len(domains) + 1.8))
    axes = figure.add_subplot()
    data = np.array([[math.nan if v is None else v for v in row] for row in values], dtype=float)
    image = axes.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    axes.set_xticks(range(len(columns)), [textwrap.shorten(c, 28) for c in columns], rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(len(domains)), list(domains), fontsize=8)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            text = "-" if value is None else f"{value:.2f}"
            shade = "white" if value is None or value < 0.6 else "black"
            axes.text(j, i, text, ha="center", va="center", fontsize=7, color=shade)
    if len(columns) > 1:
        axes.axvline(len(columns) - 1.5, color="white", linewidth=2)
    figure.colorbar(image, ax=axes, fraction=0.04, label="share correct")
    axes.set_title("Accuracy per domain and coverage (last column: answered by at least one)", fontsize=9)
    return _png(figure, caption)


def pareto_plot(points: Sequence[ParetoPoint], caption: str) -> bytes:
    figure = _figure()
    axes = figure.add_subplot()
    for p in points:
        color = provenance_color(p.provenance)
        axes.scatter([p.mean_joules], [p.accuracy], s=60 if p.on_frontier else 35, color=color,
                     facecolors=color if p.provenance == "measured" else "none", linewidths=1.5, zorder=3)
        axes.annotate(textwrap.shorten(p.system, 30) + (" est." if p.provenance != "measured" else ""),
                      (p.mean_joules, p.accuracy), textcoords="offset points", xytext=(5, 4), fontsize=7)
    frontier = [p for p in points if p.on_frontier]
    if len(frontier) > 1:
        axes.step([p.mean_joules for p in frontier], [p.accuracy for p in frontier], where="post", color="#555555",
                  linestyle="--", linewidth=1, label="Pareto frontier", zorder=2)
    positive = [p.mean_joules for p in points if p.mean_joules > 0]
    if positive and max(positive) / min(positive) > 20:
        axes.set_xscale("log")
    axes.set_xlabel("energy per query (J)")
    axes.set_ylabel("accuracy")
    axes.set_ylim(-0.02, 1.05)
    axes.grid(alpha=0.3)
    axes.set_title("Accuracy vs energy per query (model × accelerator); dashed: Pareto frontier", fontsize=9)
    _provenance_legend(axes, {p.provenance for p in points})
    return _png(figure, caption)


def ipw_bars(summaries: Sequence[Summary], caption: str) -> bytes:
    figure = _figure(max(5.0, 0.9 * len(summaries) + 3), 4.0)
    axes = figure.add_subplot()
    names = [s.system for s in summaries]
    values = [s.ipw or 0.0 for s in summaries]
    for i, s in enumerate(summaries):
        color = provenance_color(s.provenance)
        measured = s.provenance == "measured"
        axes.bar(i, values[i], color=color if measured else "white", edgecolor=color, hatch=None if measured else "//",
                 linewidth=1.5)
        label = "n/a" if s.ipw is None else f"{s.ipw:.3g}" + ("" if measured else f"\n{s.provenance[:3]}.")
        axes.text(i, values[i], label, ha="center", va="bottom", fontsize=7)
    axes.set_xticks(range(len(names)), [textwrap.shorten(n, 28) for n in names], rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("IPW = accuracy / mean power (1/W)")
    axes.set_ylim(0, max(values + [1e-9]) * 1.25)
    axes.set_title("Intelligence per watt by model × accelerator", fontsize=9)
    _provenance_legend(axes, {s.provenance for s in summaries}, kind="bar")
    return _png(figure, caption)


def power_trace(series: Mapping[str, tuple[Sequence[float], Sequence[float], str]], caption: str,
                sampled: bool = False) -> bytes:
    """Power against time per system: ``series[system] = (times_s, watts, provenance)``.

    Without a sampled trace (``sampled=False``) each step is one query's mean power over its measurement
    window, placed at the cumulative window time: the axes say so.
    """
    figure = _figure(7.5, 3.6)
    axes = figure.add_subplot()
    for name, (times, watts, provenance) in series.items():
        style = "-" if provenance == "measured" else "--"
        if sampled:
            axes.plot(times, watts, linestyle=style, linewidth=1, label=name + provenance_tag(provenance))
        else:
            axes.step(times, watts, where="post", linestyle=style, linewidth=1, label=name + provenance_tag(provenance))
    axes.set_xlabel("time (s)" if sampled else "cumulative measured time (s), queries in run order")
    axes.set_ylabel("power (W)" if sampled else "per-query mean power (W)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.set_title("Power over the run" + ("" if sampled else ": mean power of each query's window (not a sampled trace)"),
                   fontsize=9)
    if series:
        axes.legend(fontsize=7, loc="best")
    return _png(figure, caption)


def routing_plot(analysis: RoutingAnalysis, caption: str) -> bytes:
    figure = _figure(7.5, 3.8)
    axes = figure.add_subplot()
    results = analysis.results
    for i, r in enumerate(results):
        color = provenance_color(r.provenance)
        measured = r.provenance == "measured"
        axes.barh(i, r.mean_joules, color=color if measured else "white", edgecolor=color,
                  hatch=None if measured else "//", linewidth=1.5)
        saving = analysis.energy_saving(r)
        note = f"  acc {r.accuracy:.2f}"
        if i > 0 and saving is not None:
            note += f", {saving:.0%} less energy" if saving >= 0 else f", {-saving:.0%} more energy"
        if not measured:
            note += f" ({r.provenance})"
        axes.text(r.mean_joules, i, note, va="center", fontsize=7)
    axes.set_yticks(range(len(results)), [textwrap.shorten(r.strategy, 36) for r in results], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("energy per query (J)")
    axes.set_xlim(0, max([r.mean_joules for r in results] + [1e-9]) * 1.6)
    axes.set_title(f"Routing vs always {textwrap.shorten(analysis.baseline, 40)}", fontsize=9)
    _provenance_legend(axes, {r.provenance for r in results}, kind="bar")
    return _png(figure, caption)


def history_plot(labels: Sequence[str], series: Mapping[str, Sequence[tuple[str, float | None, str]]], metric: str,
                 caption: str) -> bytes:
    """A metric across saved runs: ``series[system] = [(run label, value, provenance), ...]``."""
    figure = _figure(7.5, 3.8)
    axes = figure.add_subplot()
    position = {label: i for i, label in enumerate(labels)}
    provenances: set[str] = set()
    for name, points in series.items():
        kept = [(position[label], value, provenance) for label, value, provenance in points
                if value is not None and label in position]
        if not kept:
            continue
        line = axes.plot([x for x, _, _ in kept], [v for _, v, _ in kept], linewidth=1, label=name)[0]
        for x, value, provenance in kept:
            provenances.add(provenance)
            axes.scatter([x], [value], color=line.get_color(),
                         facecolors=line.get_color() if provenance == "measured" else "none", zorder=3)
    axes.set_xticks(range(len(labels)), list(labels), rotation=40, ha="right", fontsize=7)
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.set_title(f"{metric} across saved runs (hollow markers: estimated energy)", fontsize=9)
    if series:
        axes.legend(fontsize=7, loc="best")
    return _png(figure, caption)


def release_plot(points: Sequence[TrendPoint], coverage: Sequence[tuple[dt.date, str, Any]], caption: str) -> bytes:
    """IPW by model release date per accelerator (left) and coverage of the models released so far (right)."""
    figure = _figure(9.0, 3.8)
    left, right = figure.subplots(1, 2)
    by_accelerator: dict[str, list[TrendPoint]] = {}
    for p in points:
        by_accelerator.setdefault(p.accelerator, []).append(p)
    for accelerator, items in by_accelerator.items():
        kept = [p for p in items if p.ipw is not None]
        if not kept:
            continue
        style = "-" if all(p.provenance == "measured" for p in kept) else "--"
        line = left.plot([p.release_date for p in kept], [p.ipw for p in kept], linewidth=1, linestyle=style,
                         label=accelerator + ("" if style == "-" else " (not all measured)"))[0]
        for p in kept:
            left.scatter([p.release_date], [p.ipw], color=line.get_color(),
                         facecolors=line.get_color() if p.provenance == "measured" else "none", zorder=3)
            left.annotate(textwrap.shorten(p.model, 20) + (" est." if p.provenance != "measured" else ""),
                          (p.release_date, p.ipw), textcoords="offset points", xytext=(3, 3), fontsize=6)
    left.set_ylabel("IPW (1/W)")
    left.set_title("IPW by model release date (hollow: estimated)", fontsize=9)
    left.grid(alpha=0.3)
    if by_accelerator:
        left.legend(fontsize=7, title="accelerator", title_fontsize=7)
    if coverage:
        right.step([d for d, _, _ in coverage], [c.share for _, _, c in coverage], where="post", marker="o")
        for d, model, cell in coverage:
            right.annotate(textwrap.shorten(model, 20), (d, cell.share), textcoords="offset points", xytext=(3, -9), fontsize=6)
    right.set_ylim(0, 1.05)
    right.set_ylabel("coverage")
    right.set_title("Coverage by local models released up to each date", fontsize=9)
    right.grid(alpha=0.3)
    for axes in (left, right):
        axes.tick_params(axis="x", labelsize=7, rotation=30)
    return _png(figure, caption)
