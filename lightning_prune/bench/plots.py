"""PNG plots of a benchmark: accuracy vs latency (Pareto front marked), latency and MACs vs
ratio, and per-layer widths before and after."""

from __future__ import annotations

from pathlib import Path

from .analysis import pareto_front, prunedness
from .results import RunResult

__all__ = ["PLOT_FILES", "write_plots"]

#: The files :func:`write_plots` writes, in the output directory.
PLOT_FILES = ("accuracy_vs_latency.png", "latency_macs_vs_ratio.png", "layer_widths.png")


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("bench plots need matplotlib: pip install matplotlib (part of the dev and bench "
                          "extras), or set plots: false") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(rows: list[RunResult], out_dir: str | Path, batch_size: int, target: str) -> list[Path]:
    """Write :data:`PLOT_FILES` for ``rows``; latency is read at ``batch_size``."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    models = list(dict.fromkeys(r.model for r in rows))
    paths = [_accuracy_vs_latency(plt, rows, models, batch_size, out_dir / PLOT_FILES[0]),
             _latency_macs_vs_ratio(plt, rows, models, batch_size, target, out_dir / PLOT_FILES[1]),
             _layer_widths(plt, rows, models, target, out_dir / PLOT_FILES[2])]
    return paths


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)  # figures are not freed otherwise: a long sweep would keep them all
    return path


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _methods(rows: list[RunResult], model: str) -> list[str]:
    return list(dict.fromkeys(r.method for r in rows if r.model == model and r.method != "dense"))


def _colour(rows: list[RunResult], model: str, method: str) -> str:
    """The same colour for a method in every plot; dense is black."""
    return "black" if method == "dense" else f"C{_methods(rows, model).index(method) % 10}"


def _dense(rows: list[RunResult], model: str) -> RunResult | None:
    return next((r for r in rows if r.model == model and r.method == "dense" and r.ok), None)


def _accuracy_vs_latency(plt, rows, models, bs, path):
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        mine = [r for r in rows if r.model == model and r.ok]
        for method in ["dense", *_methods(rows, model)]:
            pts = [r for r in mine if r.method == method and r.accuracy is not None and bs in r.latency]
            if not pts:
                continue
            ax.scatter([r.latency[bs]["median_ms"] for r in pts], [100 * r.accuracy for r in pts],
                       marker="*" if method == "dense" else "o", s=160 if method == "dense" else 40, label=method,
                       color=_colour(rows, model, method))
            for r in pts:
                if r.ratio is not None:
                    ax.annotate(f"{r.ratio:g}", (r.latency[bs]["median_ms"], 100 * r.accuracy), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
        front = pareto_front(mine, bs)
        if front:
            ax.step([r.latency[bs]["median_ms"] for r in front], [100 * r.accuracy for r in front], where="post",
                    color="black", linestyle="--", linewidth=1, label="Pareto front")
        if not any(r.accuracy is not None for r in mine):
            ax.text(0.5, 0.5, "accuracy not measured", ha="center", transform=ax.transAxes)
        ax.set(title=model, xlabel=f"latency at batch {bs} (ms, median)", ylabel="top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        _legend(ax)
    return _save(plt, fig, path)


def _latency_macs_vs_ratio(plt, rows, models, bs, target, path):
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 4 * len(models)), squeeze=False)
    xlabel = {"ratio": "channel pruning ratio", "macs": "MACs kept (target)", "params": "params kept (target)"}[target]
    for (ax_lat, ax_macs), model in zip(axes, models, strict=True):
        dense = _dense(rows, model)
        for method in _methods(rows, model):
            pts = sorted((r for r in rows if r.model == model and r.method == method and r.ok), key=lambda r: r.ratio)
            if not pts:
                continue
            lat = [r for r in pts if bs in r.latency]
            ax_lat.errorbar([r.ratio for r in lat], [r.latency[bs]["median_ms"] for r in lat],
                            yerr=[[r.latency[bs]["median_ms"] - r.latency[bs]["p25_ms"] for r in lat],
                                  [r.latency[bs]["p75_ms"] - r.latency[bs]["median_ms"] for r in lat]],
                            marker="o", capsize=3, label=method, color=_colour(rows, model, method))
            ax_macs.plot([r.ratio for r in pts], [r.macs / 1e6 for r in pts], marker="o", label=method,
                         color=_colour(rows, model, method))
        if dense is not None:
            if bs in dense.latency:
                ax_lat.axhline(dense.latency[bs]["median_ms"], color="gray", linestyle=":", label="dense")
            ax_macs.axhline(dense.macs / 1e6, color="gray", linestyle=":", label="dense")
        ax_lat.set(title=f"{model}: latency (median, IQR bars), batch {bs}", xlabel=xlabel, ylabel="ms")
        ax_macs.set(title=f"{model}: MACs per sample", xlabel=xlabel, ylabel="M MACs")
        for ax in (ax_lat, ax_macs):
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            _legend(ax)
    return _save(plt, fig, path)


def _layer_widths(plt, rows, models, target, path):
    fig, axes = plt.subplots(len(models), 1, figsize=(12, 4.5 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models, strict=True):
        dense = _dense(rows, model)
        if dense is None:
            ax.text(0.5, 0.5, "dense model failed", ha="center", transform=ax.transAxes)
            continue
        names = list(dense.widths)
        ax.plot(range(len(names)), [dense.widths[n] for n in names], drawstyle="steps-mid", color="black",
                linewidth=2, label="dense")
        for k, method in enumerate(_methods(rows, model)):
            pts = [r for r in rows if r.model == model and r.method == method and r.ok]
            if not pts:
                continue
            most = max(pts, key=lambda r: prunedness(r.ratio, target))
            # methods often agree on widths: vary the dash so overlapping lines stay visible
            ax.plot(range(len(names)), [most.widths.get(n, 0) for n in names], drawstyle="steps-mid",
                    label=f"{method} @ {most.ratio:g}", color=_colour(rows, model, method),
                    linestyle=("--", ":", "-.", (0, (5, 1)))[k % 4], linewidth=1.6)
        ax.set(title=f"{model}: output width per layer, dense and each method's most pruned run",
               ylabel="channels / features")
        step = max(1, len(names) // 40)
        ax.set_xticks(range(0, len(names), step), names[::step], rotation=90, fontsize=6)
        ax.grid(alpha=0.3)
        _legend(ax)
    return _save(plt, fig, path)
