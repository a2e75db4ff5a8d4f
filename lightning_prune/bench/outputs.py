"""Write a benchmark's files: CSV, JSON, Markdown, PNG plots and profiler tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .plots import write_plots
from .report import render_report
from .results import file_slug, write_csv, write_json

__all__ = ["write_outputs"]


def write_outputs(run: Any, command: str | None = None) -> dict[str, Path]:
    """Write every output of ``run`` to ``run.config.output_dir``; returns ``{kind: path}``."""
    cfg = run.config
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "json": out / "results.json", "report": out / "report.md"}
    write_csv(paths["csv"], run.results, cfg.batch_sizes)
    write_json(paths["json"], run.results, run.config_dict(), run.environment, run.profiles)
    plot_names: list[str] = []
    if cfg.plots:
        for p in write_plots(run.results, out, cfg.batch_sizes, cfg.target):
            paths[p.stem] = p
            plot_names.append(p.name)
    for key, table in run.profiles.items():
        path = out / f"profile_{file_slug(key)}.txt"
        path.write_text(table)
        paths[f"profile:{key}"] = path
    paths["report"].write_text(render_report(run, command, plot_names))
    return paths
