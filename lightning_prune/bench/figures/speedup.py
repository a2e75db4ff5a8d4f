"""Speedup and MACs against the ratio: one speedup panel per batch size, then the MACs kept.

A speedup point is the median of the paired per-round ratios dense / pruned, its bar the
quartiles; a hollow marker means *no measurable difference* (:func:`..speedups.verdict`),
so a masked model's 1.02x does not read as a gain. Methods at the same ratio are dodged
sideways so their bars stay apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..analysis import prunedness
from ..results import RunResult
from ..speedups import row_speedup
from . import style

__all__ = ["XLABELS", "speedup_figure"]

XLABELS = {"ratio": "channel pruning ratio", "macs": "MACs kept (target)", "params": "params kept (target)"}


def _runs(rows: Sequence[RunResult], model: str, method: str, target: str) -> list[RunResult]:
    pts = [r for r in rows if r.model == model and r.method == method and r.ok and r.ratio is not None]
    return sorted(pts, key=lambda r: prunedness(r.ratio, target))


def _speedup_panel(ax: Any, rows: Sequence[RunResult], model: str, bs: int, target: str) -> None:
    dense = style.dense_row(rows, model)
    names = style.methods(rows, model)
    ratios = sorted({r.ratio for r in rows if r.model == model and r.ratio is not None})
    step = min((b - a for a, b in zip(ratios, ratios[1:], strict=False)), default=0.2)
    offsets = style.dodge(len(names), 0.2 * step / max(len(names), 1)) if names else []
    for method, offset in zip(names, offsets, strict=True):
        colour, kind = style.colour(rows, model, method), style.method_kind(rows, model, method)
        spreads = [(r, row_speedup(r, bs, dense)) for r in _runs(rows, model, method, target)]
        spreads = [(r, s) for r, s in spreads if s is not None]
        if not spreads:
            continue
        x = [r.ratio + offset for r, _ in spreads]
        y = [s.median for _, s in spreads]
        ax.errorbar(x, y, yerr=[[s.median - s.p25 for _, s in spreads], [s.p75 - s.median for _, s in spreads]],
                    fmt="none", ecolor=colour, capsize=3, elinewidth=1)
        ax.plot(x, y, color=colour, linewidth=1, alpha=0.5)
        marker = style.KIND_MARKERS.get(kind, "o")
        filled = [(xi, yi) for xi, yi, (_, s) in zip(x, y, spreads, strict=True) if s.measurable]
        hollow = [(xi, yi) for xi, yi, (_, s) in zip(x, y, spreads, strict=True) if not s.measurable]
        label = f"{method} ({kind})"
        if filled:
            ax.scatter(*zip(*filled, strict=True), marker=marker, s=45, color=colour, zorder=3, label=label)
        if hollow:
            ax.scatter(*zip(*hollow, strict=True), marker=marker, s=45, facecolors="white", edgecolors=colour,
                       linewidths=1.2, zorder=3, label=None if filled else label)
    ax.axhline(1.0, color="gray", linestyle=":", linewidth=1, label="dense (1x)")
    ax.set_ylim(bottom=0)
    if ratios:
        ax.set_xticks(ratios, [f"{r:g}" for r in ratios])


def _macs_panel(ax: Any, rows: Sequence[RunResult], model: str, target: str) -> None:
    for method in style.methods(rows, model):
        runs = [r for r in _runs(rows, model, method, target) if r.macs_fraction is not None]
        if runs:
            ax.plot([r.ratio for r in runs], [100 * r.macs_fraction for r in runs],
                    marker=style.KIND_MARKERS.get(style.method_kind(rows, model, method), "o"),
                    color=style.colour(rows, model, method), label=method)
    ax.axhline(100, color="gray", linestyle=":", linewidth=1, label="dense")
    ratios = sorted({r.ratio for r in rows if r.model == model and r.ratio is not None})
    if ratios:
        ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
    ax.set(title=f"{model}: MACs per sample", ylabel="MACs kept (% of dense)")
    ax.set_ylim(0, 110)


def speedup_figure(plt: Any, rows: Sequence[RunResult], batch_sizes: int | Sequence[int], target: str) -> Any:
    """Per model: speedup at each :func:`.style.panel_batch_sizes` entry, then MACs kept; unsaved."""
    if target not in XLABELS:
        raise ValueError(f"speedup_figure: target must be one of {sorted(XLABELS)}, got {target!r}")
    models, sizes = style.models(rows), style.panel_batch_sizes(batch_sizes)
    fig, axes = plt.subplots(len(models), len(sizes) + 1, figsize=(5.2 * (len(sizes) + 1), 4.2 * len(models)),
                             squeeze=False)
    for ax_row, model in zip(axes, models, strict=True):
        for ax, bs in zip(ax_row[:-1], sizes, strict=True):
            _speedup_panel(ax, rows, model, bs, target)
            ax.set_title(style.panel_title(model, bs, style.threads_of(rows, model, bs)), fontsize=10)
            ax.set(ylabel="speedup over dense (paired median, IQR bars)")
        _macs_panel(ax_row[-1], rows, model, target)
        for ax in ax_row:
            ax.set_xlabel(XLABELS[target])
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, title="hollow: no measurable difference" if ax is not ax_row[-1] else None,
                          title_fontsize=7)
    return fig
