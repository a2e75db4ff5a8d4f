"""Per-layer widths as grouped bars: the fraction of each layer's channels a method kept.

One group per layer, one bar per method at its most pruned ratio. Methods that keep every
width (masking zeroes weights, the shapes stay) are named in the title instead of drawn
as a wall of 1.0 bars. Bars are horizontal so that layer names stay readable; beyond
:data:`MAX_LAYERS` layers, layers no method changed go first, then every k-th is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..analysis import prunedness
from ..results import RunResult
from . import style

__all__ = ["MAX_LAYERS", "WidthGroups", "width_groups", "widths_figure"]

MAX_LAYERS = 60


@dataclass(frozen=True)
class WidthGroups:
    """What the bars of one model show.

    ``series`` holds ``(method, ratio, fractions)``, one fraction per entry of ``layers``;
    ``dense_widths`` the dense width of each layer (shown beside its name); ``unchanged`` the methods that kept every width; ``total_layers`` the layers before
    any were left out.
    """

    model: str
    layers: tuple[str, ...]
    dense_widths: tuple[int, ...]
    series: tuple[tuple[str, float, tuple[float, ...]], ...]
    unchanged: tuple[str, ...]
    total_layers: int


def width_groups(rows: Sequence[RunResult], model: str, target: str, max_layers: int = MAX_LAYERS) -> WidthGroups | None:
    """The bars of ``model``'s panel, or ``None`` without a dense row to compare against."""
    if max_layers < 1:
        raise ValueError(f"width_groups: max_layers must be >= 1, got {max_layers}")
    dense = style.dense_row(rows, model)
    if dense is None or not dense.widths:
        return None
    layers = [name for name, w in dense.widths.items() if w > 0]
    series, unchanged = [], []
    for method in style.methods(rows, model):
        runs = [r for r in rows if r.model == model and r.method == method and r.ok and r.ratio is not None]
        if not runs:
            continue
        most = max(runs, key=lambda r: prunedness(r.ratio, target))
        fractions = tuple(most.widths.get(n, dense.widths[n]) / dense.widths[n] for n in layers)
        if all(f == 1.0 for f in fractions):
            unchanged.append(method)
        else:
            series.append((method, most.ratio, fractions))
    keep = list(range(len(layers)))
    if len(keep) > max_layers:
        changed = [i for i in keep if any(f[i] != 1.0 for _, _, f in series)]
        keep = changed if changed else keep
    if len(keep) > max_layers:
        stride = -(-len(keep) // max_layers)
        keep = keep[::stride]
    return WidthGroups(model, tuple(layers[i] for i in keep), tuple(dense.widths[layers[i]] for i in keep),
                       tuple((m, r, tuple(f[i] for i in keep)) for m, r, f in series), tuple(unchanged), len(layers))


def _panel(ax: Any, rows: Sequence[RunResult], groups: WidthGroups) -> None:
    n_layers, n_series = len(groups.layers), max(len(groups.series), 1)
    height = 0.8 / n_series
    for k, (method, ratio, fractions) in enumerate(groups.series):
        y = [i - 0.4 + height * (k + 0.5) for i in range(n_layers)]
        ax.barh(y, fractions, height=height, color=style.colour(rows, groups.model, method),
                label=f"{method} @ {ratio:g}")
    ax.axvline(1.0, color="black", linestyle=":", linewidth=1, label="dense")
    ax.set_yticks(range(n_layers), [f"{name} ({w})" for name, w in zip(groups.layers, groups.dense_widths, strict=True)],
                  fontsize=7)
    ax.invert_yaxis()  # first layer on top, as in the model
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("fraction of the dense channels / features kept (dense width in brackets)")
    title = f"{groups.model}: width kept per layer, each method at its most pruned ratio"
    if len(groups.layers) < groups.total_layers:
        title += f"\n({len(groups.layers)} of {groups.total_layers} layers shown)"
    if groups.unchanged:
        title += f"\n{', '.join(groups.unchanged)}: every layer keeps its width (masks zero weights), not drawn"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if groups.series:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.text(0.5, 0.5, "no method changed a width", ha="center", transform=ax.transAxes)


def widths_figure(plt: Any, rows: Sequence[RunResult], target: str) -> Any:
    """One panel per model (stacked); returns the unsaved figure."""
    models = style.models(rows)
    groups = [width_groups(rows, m, target) for m in models]
    heights = [1.6 + 0.14 * max(len(g.layers) if g else 1, 4) * max(len(g.series) if g else 1, 2) ** 0.5
               for g in groups]
    fig, axes = plt.subplots(len(models), 1, figsize=(10, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, model, g in zip(axes[:, 0], models, groups, strict=True):
        if g is None:
            ax.text(0.5, 0.5, f"{model}: dense model failed, no widths to compare", ha="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
            continue
        _panel(ax, rows, g)
    return fig
