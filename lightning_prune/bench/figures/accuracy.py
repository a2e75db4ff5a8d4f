"""Accuracy against latency: one panel per batch size (batch 1 beside the largest), per model.

Horizontal error bars are the latency's interquartile range over the timing rounds;
vertical ones the accuracy's binomial standard error over the validation samples (when
their number is known). The marker says the method's kind (:data:`.style.KIND_MARKERS`),
so a masked model that sits at the dense latency reads as "masks", not as a bad prune.
Ratio labels are placed by :func:`.labels.place_labels`; the Pareto front is dashed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..analysis import pareto_front, prunedness
from ..results import RunResult
from . import style
from .labels import place_labels

__all__ = ["accuracy_error", "accuracy_latency_figure"]

LABEL_FONTSIZE = 7


def accuracy_error(row: RunResult) -> float:
    """Binomial standard error of the row's accuracy, in percent (0 when the sample count is unknown)."""
    if row.accuracy is None or not row.accuracy_samples:
        return 0.0
    p = row.accuracy
    return 100 * math.sqrt(max(p * (1 - p), 0.0) / row.accuracy_samples)


def _points(rows: Sequence[RunResult], model: str, method: str, bs: int, target: str) -> list[RunResult]:
    pts = [r for r in rows if r.model == model and r.method == method and r.ok and r.accuracy is not None
           and bs in r.latency]
    return sorted(pts, key=lambda r: prunedness(r.ratio, target) if r.ratio is not None else -math.inf)


def _panel(ax: Any, rows: Sequence[RunResult], model: str, bs: int, target: str) -> None:
    mine = [r for r in rows if r.model == model and r.ok]
    labelled: list[tuple[RunResult, str]] = []
    bars: list[tuple[float, float, float, float]] = []  # error bars, in data coordinates, for the labels to avoid
    for k, method in enumerate(["dense", *style.methods(rows, model)]):
        pts = _points(rows, model, method, bs, target)
        if not pts:
            continue
        kind = "dense" if method == "dense" else style.method_kind(rows, model, method)
        x = [r.latency[bs]["median_ms"] for r in pts]
        y = [100 * r.accuracy for r in pts]
        xerr = [[r.latency[bs]["median_ms"] - r.latency[bs]["p25_ms"] for r in pts],
                [r.latency[bs]["p75_ms"] - r.latency[bs]["median_ms"] for r in pts]]
        colour = style.colour(rows, model, method)
        yerr = [accuracy_error(r) for r in pts]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor=colour, elinewidth=0.8, capsize=2, alpha=0.7)
        bars += [(xi - lo, yi, xi + hi, yi) for xi, yi, lo, hi in zip(x, y, *xerr, strict=True)]
        bars += [(xi, yi - e, xi, yi + e) for xi, yi, e in zip(x, y, yerr, strict=True) if e > 0]
        if len(pts) > 1:
            ax.plot(x, y, color=colour, linewidth=0.8, alpha=0.35)
        # later methods get smaller markers: points that coincide show as concentric rings
        size = 170 if kind == "dense" else max(110 - 40 * (k - 1), 22)
        ax.scatter(x, y, marker=style.KIND_MARKERS.get(kind, "o"), s=size, color=colour,
                   edgecolors="white", linewidths=0.5, zorder=3, label=method if kind == "dense" else f"{method} ({kind})")
        labelled += [(r, colour) for r in pts if r.ratio is not None]
    front = pareto_front(mine, bs)
    if front:
        ax.step([r.latency[bs]["median_ms"] for r in front], [100 * r.accuracy for r in front], where="post",
                color="black", linestyle="--", linewidth=1, alpha=0.6, label="Pareto front", zorder=2)
    if not any(r.accuracy is not None for r in mine):
        ax.text(0.5, 0.5, "accuracy not measured", ha="center", transform=ax.transAxes)
    ax.margins(x=0.12, y=0.15)
    ax.autoscale_view()
    _annotate_ratios(ax, labelled, bs, bars)


def _annotate_ratios(ax: Any, labelled: list[tuple[RunResult, str]], bs: int,
                     bars: list[tuple[float, float, float, float]]) -> None:
    """Ratio labels that do not collide: placed in axes fraction, leader lines when moved away."""
    if not labelled:
        return
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    fig = ax.figure
    pos = ax.get_position()
    width_pt, height_pt = pos.width * fig.get_figwidth() * 72, pos.height * fig.get_figheight() * 72
    to_axes = ax.transScale + ax.transLimits
    texts = [f"{r.ratio:g}" for r, _ in labelled]
    anchors = [tuple(to_axes.transform((r.latency[bs]["median_ms"], 100 * r.accuracy))) for r, _ in labelled]
    sizes = [((0.62 * LABEL_FONTSIZE * len(t) + 3) / width_pt, 1.3 * LABEL_FONTSIZE / height_pt) for t in texts]
    thick = 2 / min(width_pt, height_pt)
    obstacles = []
    for x0, y0, x1, y1 in bars:
        (a0, b0), (a1, b1) = to_axes.transform((x0, y0)), to_axes.transform((x1, y1))
        obstacles.append((min(a0, a1) - thick, min(b0, b1) - thick, max(a0, a1) + thick, max(b0, b1) + thick))
    centres = place_labels(anchors, sizes, obstacles=obstacles, marker=9 / min(width_pt, height_pt))
    for (r, colour), text, (ax_x, ax_y), (cx, cy), (w, h) in zip(labelled, texts, anchors, centres, sizes,
                                                                  strict=True):
        far = math.hypot(cx - ax_x, cy - ax_y) > 1.5 * (w + h)
        ax.annotate(text, (r.latency[bs]["median_ms"], 100 * r.accuracy), xytext=(cx, cy), textcoords="axes fraction",
                    ha="center", va="center", fontsize=LABEL_FONTSIZE, color=colour,
                    arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.5, "alpha": 0.6} if far else None)


def accuracy_latency_figure(plt: Any, rows: Sequence[RunResult], batch_sizes: int | Sequence[int],
                            target: str) -> Any:
    """Models as rows, :func:`.style.panel_batch_sizes` as columns; returns the unsaved figure."""
    models, sizes = style.models(rows), style.panel_batch_sizes(batch_sizes)
    fig, axes = plt.subplots(len(models), len(sizes), figsize=(6.2 * len(sizes), 4.8 * len(models)), squeeze=False)
    for ax_row, model in zip(axes, models, strict=True):
        for ax, bs in zip(ax_row, sizes, strict=True):
            _panel(ax, rows, model, bs, target)
            ax.set_title(style.panel_title(model, bs, style.threads_of(rows, model, bs)), fontsize=10)
            ax.set(xlabel="latency (ms): median, bars = IQR of the timing rounds",
                   ylabel="top-1 accuracy (%), bars = binomial s.e.")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best", title="labels: ratio", title_fontsize=7)
    return fig
