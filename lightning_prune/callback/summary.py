"""What the fit achieved: size, speed and quality of the dense and the pruned model.

The dense baseline is measured just before the first prune and kept in the callback's
state, so that a resumed fit still reports before -> after. The monitored metric is
tracked through the fit: its last and best values while dense, and after the final prune.
Latency uses the benchmark's measurement (:func:`~lightning_prune.engine.utils.compare_latency`,
see :mod:`.latency`), at every configured batch size, labelled with the batch size and
thread count it ran with and the machine's load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

import lightning_prune.engine as tp
from lightning_prune.engine.tree import tensor_leaves

from .latency import latency_batch_sizes, latency_label, latency_note, time_models


def measure(module: nn.Module, example: Any, latency: bool = True, batch_sizes: list[int] | None = None,
            threads: int | None = None) -> dict[str, float]:
    """Params, MACs and (optionally) latency of ``module`` alone (primitives, for the state dict).

    Latency is timed at every batch size of ``batch_sizes`` (default: the example's).
    """
    macs, params = tp.utils.count_ops_and_params(module, example)
    out = {"params": float(params), "macs": float(macs)}
    if latency:
        out.update(time_models({"dense": module}, example, batch_sizes or [example_batch_size(example)], threads)["dense"])
    return out


def example_batch_size(example: Any) -> int:
    """Rows of the example input's first batched tensor (1 if none)."""
    first = next((t for t in tensor_leaves(example) if t.dim() > 0), None)
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
    for b in latency_batch_sizes(after):
        key = f"latency_ms_bs{b}"
        if key in before:
            rows.append(Row(key, latency_label(b, int(after["latency_threads"])), before[key], after[key],
                            latency_note(before, after, b)))
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
