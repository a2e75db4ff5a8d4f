"""What the fit achieved: size, speed and quality of the dense and the pruned model.

The dense baseline is measured just before the first prune and kept in the callback's
state, so that a resumed fit still reports before -> after. The monitored metric is
tracked through the fit: its last and best values while dense, and after the final prune.
Latency uses the benchmark's measurement (:func:`~lightning_prune.engine.utils.measure_latency`
with the same warm-up settings), median and interquartile range, labelled with the batch
size and thread count it ran with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

import lightning_prune.engine as tp

#: The benchmark's measurement (lightning_prune.bench.config.BenchConfig's warm-up, settle
#: check and repeats), with the settle-until-stable warm-up capped at 2 s: on a loaded
#: machine it would otherwise run up to 10 s per call and make the fit itself slower.
LATENCY_SETTINGS = {"warmup": 10, "warmup_seconds": 0.5, "settle": 0.05, "max_warmup_seconds": 2.0, "repeats": 50}


def measure(module: nn.Module, example: Any, latency: bool = True) -> dict[str, float]:
    """Params, MACs and (optionally) latency of ``module`` on ``example`` (primitives, for the state dict)."""
    macs, params = tp.utils.count_ops_and_params(module, example)
    out = {"params": float(params), "macs": float(macs)}
    if latency:
        stats = tp.utils.measure_latency(module, example, **LATENCY_SETTINGS)
        out.update(latency_ms=stats.median_ms, latency_iqr_ms=stats.iqr_ms, latency_batch=float(_batch_size(example)),
                   latency_threads=float(torch.get_num_threads()))
    return out


def _batch_size(example: Any) -> int:
    tensors = [example] if isinstance(example, torch.Tensor) else list(
        example.values() if isinstance(example, dict) else example)
    first = next((t for t in tensors if isinstance(t, torch.Tensor) and t.dim() > 0), None)
    return int(first.shape[0]) if first is not None else 1


@dataclass
class MetricTracker:
    """Last and best value of the monitored metric, while dense and after the final prune."""

    mode: Literal["max", "min"] = "max"
    values: dict[str, float] = field(default_factory=dict)  # "dense_last", "dense_best", "pruned_last"...

    def update(self, phase: str, value: float) -> None:
        self.values[f"{phase}_last"] = value
        best = self.values.get(f"{phase}_best")
        if best is None or (value > best if self.mode == "max" else value < best):
            self.values[f"{phase}_best"] = value


@dataclass(frozen=True)
class Row:
    key: str  # logger name: pruning/summary/<key>/before and /after
    label: str
    before: float
    after: float
    note: str = ""


def summary_rows(before: dict[str, float], after: dict[str, float], metrics: dict[str, float],
                 monitor: str | None) -> list[Row]:
    """The rows of the before -> after table."""
    rows: list[Row] = []
    if "params" in before and "params" in after:
        rows.append(Row("params", "params (M)", before["params"] / 1e6, after["params"] / 1e6))
        rows.append(Row("macs", "MACs (M)", before["macs"] / 1e6, after["macs"] / 1e6))
    if "latency_ms" in before and "latency_ms" in after:
        label = f"latency (ms, batch {int(after['latency_batch'])}, {int(after['latency_threads'])} threads)"
        note = f"IQR {before['latency_iqr_ms']:.3f} -> {after['latency_iqr_ms']:.3f} ms"
        rows.append(Row("latency_ms", label, before["latency_ms"], after["latency_ms"], note))
    if monitor:
        for which in ("last", "best"):
            b, a = metrics.get(f"dense_{which}"), metrics.get(f"pruned_{which}")
            if b is not None and a is not None:
                rows.append(Row(f"{monitor}_{which}", f"{monitor} ({which})", b, a))
    return rows


def format_summary(rows: list[Row]) -> str:
    width = max((len(r.label) for r in rows), default=10)
    lines = ["[lightning-prune] before -> after"]
    for r in rows:
        ratio = r.after / r.before if r.before and not math.isnan(r.before) else float("nan")
        lines.append(f"  {r.label:<{width}s} {r.before:10.4f} -> {r.after:10.4f}  ({ratio:.2%})"
                     + (f"  {r.note}" if r.note else ""))
    return "\n".join(lines)


def summary_metrics(rows: list[Row]) -> dict[str, float]:
    """The table as flat logger metrics."""
    out = {}
    for r in rows:
        out[f"pruning/summary/{r.key}/before"] = float(r.before)
        out[f"pruning/summary/{r.key}/after"] = float(r.after)
    return out
