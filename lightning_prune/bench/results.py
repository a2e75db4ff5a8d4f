"""One row per measured model, and the CSV and JSON files they are written to.

The schemas are fixed and versioned (:data:`SCHEMA_VERSION`) so that other tools can read
the files: the CSV has :data:`BASE_FIELDS` followed by :data:`LATENCY_COLUMNS` per batch
size (:func:`csv_fields`); the JSON holds the config, the environment and every row with
full latency statistics, per-layer widths and profiler summaries.

Version 2: latency comes from rounds that time the dense model and the row's model in
turns (``compare_latency``); the speedup is the median of the paired per-round ratios,
with its quartiles (``speedup_p25_bs{N}``, ``speedup_p75_bs{N}``) and the dense timing of
the same rounds (``dense_latency_ms_bs{N}``); each row records the thread count and the
machine's load average around its timings.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BASE_FIELDS", "LATENCY_COLUMNS", "SCHEMA_VERSION", "RunResult", "csv_fields", "file_slug", "write_csv", "write_json"]

SCHEMA_VERSION = 2

#: CSV columns before the per-batch-size latency columns.
BASE_FIELDS = (
    "model", "method", "kind", "target", "ratio", "status", "error",
    "params", "nonzero_params", "size_mb", "macs", "macs_fraction", "params_fraction",
    "accuracy", "accuracy_delta", "prune_seconds",
    "accuracy_samples", "threads", "load_before", "load_after",
)

#: Per batch size ``N``, the columns ``{column}_bs{N}`` in this order.
LATENCY_COLUMNS = ("latency_ms", "latency_iqr_ms", "speedup", "speedup_p25", "speedup_p75", "dense_latency_ms")


def csv_fields(batch_sizes: list[int]) -> list[str]:
    """The CSV header for a run with these batch sizes."""
    latency = [f"{stat}_bs{b}" for b in batch_sizes for stat in LATENCY_COLUMNS]
    return [*BASE_FIELDS, *latency]


@dataclass
class RunResult:
    """Everything measured for one model state: the dense model, or one method at one ratio.

    ``status`` is ``"ok"`` or ``"error"`` (then ``error`` says why and the measurements are
    missing). ``latency`` maps a batch size to :meth:`LatencyStats.as_dict` of this model's
    round medians. For a pruned row, ``dense_latency`` holds the dense model's statistics
    from the same rounds (timed in turns with this one) and ``speedup`` / ``speedup_p25`` /
    ``speedup_p75`` the median and quartiles of the paired per-round ratios dense / this.
    ``timing`` holds, per batch size, ``threads``, ``cpus``, ``rounds`` and the load
    average before and after (``load_before`` / ``load_after``); the row-level
    ``load_before`` / ``load_after`` span all its timings. ``accuracy_samples`` is the size
    of the validation set the accuracy was measured on (its binomial standard error
    follows from it).
    """

    model: str
    method: str
    kind: str
    target: str = ""
    ratio: float | None = None
    status: str = "ok"
    error: str = ""
    params: int | None = None
    nonzero_params: int | None = None
    size_mb: float | None = None
    macs: float | None = None
    macs_fraction: float | None = None
    params_fraction: float | None = None
    accuracy: float | None = None
    accuracy_delta: float | None = None
    prune_seconds: float | None = None
    latency: dict[int, dict[str, float]] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)
    profile_top: list[dict[str, Any]] = field(default_factory=list)
    accuracy_samples: int | None = None
    threads: int | None = None
    load_before: float | None = None
    load_after: float | None = None
    speedup_p25: dict[int, float] = field(default_factory=dict)
    speedup_p75: dict[int, float] = field(default_factory=dict)
    dense_latency: dict[int, dict[str, float]] = field(default_factory=dict)
    timing: dict[int, dict[str, float | int | None]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def csv_row(self, batch_sizes: list[int]) -> dict[str, Any]:
        row: dict[str, Any] = {k: getattr(self, k) for k in BASE_FIELDS}
        for b in batch_sizes:
            stats = self.latency.get(b, {})
            row[f"latency_ms_bs{b}"] = stats.get("median_ms")
            row[f"latency_iqr_ms_bs{b}"] = stats.get("iqr_ms")
            row[f"speedup_bs{b}"] = self.speedup.get(b)
            row[f"speedup_p25_bs{b}"] = self.speedup_p25.get(b)
            row[f"speedup_p75_bs{b}"] = self.speedup_p75.get(b)
            row[f"dense_latency_ms_bs{b}"] = self.dense_latency.get(b, {}).get("median_ms")
        return {k: "" if v is None else v for k, v in row.items()}

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("latency", "speedup", "speedup_p25", "speedup_p75", "dense_latency", "timing"):
            out[key] = {str(b): v for b, v in getattr(self, key).items()}
        return _finite(out)


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def file_slug(text: str) -> str:
    """``text`` as a file-name part: anything but letters, digits and ``._-`` becomes ``_``."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text).strip("_")


def write_csv(path: str | Path, results: list[RunResult], batch_sizes: list[int]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=csv_fields(batch_sizes))
        writer.writeheader()
        for r in results:
            writer.writerow(r.csv_row(batch_sizes))


def write_json(path: str | Path, results: list[RunResult], config: dict[str, Any],
               environment: dict[str, Any], profiles: dict[str, str]) -> None:
    doc = {"schema_version": SCHEMA_VERSION, "config": config, "environment": environment,
           "runs": [r.as_json() for r in results], "profiles": profiles}
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
