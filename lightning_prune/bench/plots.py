"""PNG plots of a benchmark: accuracy against latency, speedup and MACs against the ratio,
and the fraction of each layer's width kept.

The figures themselves live in :mod:`lightning_prune.bench.figures` (one module each);
this module imports matplotlib (with a clear message when it is missing) and saves them.
Latency panels come in pairs: the smallest batch size beside the largest, each titled
with its batch size and thread count, because batch 1 measures per-operator overhead and
a large batch the arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .results import RunResult

__all__ = ["PLOT_FILES", "write_plots"]

#: The files :func:`write_plots` writes, in the output directory.
PLOT_FILES = ("accuracy_vs_latency.png", "speedup_macs_vs_ratio.png", "layer_widths.png")


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("bench plots need matplotlib: pip install matplotlib (part of the dev and bench "
                          "extras), or set plots: false") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(rows: list[RunResult], out_dir: str | Path, batch_sizes: int | Sequence[int],
                target: str) -> list[Path]:
    """Write :data:`PLOT_FILES` for ``rows``; latency panels at the smallest and largest of ``batch_sizes``."""
    from .figures.accuracy import accuracy_latency_figure
    from .figures.speedup import speedup_figure
    from .figures.widths import widths_figure

    plt = _pyplot()
    out_dir = Path(out_dir)
    builders = (lambda: accuracy_latency_figure(plt, rows, batch_sizes, target),
                lambda: speedup_figure(plt, rows, batch_sizes, target), lambda: widths_figure(plt, rows, target))
    return [_save(plt, build(), out_dir / name) for build, name in zip(builders, PLOT_FILES, strict=True)]


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)  # figures are not freed otherwise: a long sweep would keep them all
    return path
