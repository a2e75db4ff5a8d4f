"""What every figure shares: a colour per method, a marker per kind, panel titles."""

from __future__ import annotations

from collections.abc import Sequence

from ..results import RunResult

__all__ = ["KIND_MARKERS", "colour", "dense_row", "dodge", "method_kind", "methods", "models", "panel_batch_sizes",
           "panel_title", "threads_of"]

#: Marker per method kind: circles remove channels, squares prune after sparse training,
#: crosses only mask weights (same shapes, same work); the dense model is a star.
KIND_MARKERS = {"dense": "*", "structural": "o", "sparse": "s", "masking": "X"}


def models(rows: Sequence[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.model for r in rows))


def methods(rows: Sequence[RunResult], model: str) -> list[str]:
    """The methods of ``model`` in the order they ran, dense left out."""
    return list(dict.fromkeys(r.method for r in rows if r.model == model and r.method != "dense"))


def method_kind(rows: Sequence[RunResult], model: str, method: str) -> str:
    return next((r.kind for r in rows if r.model == model and r.method == method and r.kind), "structural")


def colour(rows: Sequence[RunResult], model: str, method: str) -> str:
    """The same colour for a method in every figure; dense is black."""
    return "black" if method == "dense" else f"C{methods(rows, model).index(method) % 10}"


def dense_row(rows: Sequence[RunResult], model: str) -> RunResult | None:
    return next((r for r in rows if r.model == model and r.method == "dense" and r.ok), None)


def panel_batch_sizes(batch_sizes: int | Sequence[int]) -> list[int]:
    """The batch sizes that get a panel: the smallest beside the largest (one panel if equal)."""
    sizes = [batch_sizes] if isinstance(batch_sizes, int) else list(batch_sizes)
    if not sizes or any(not isinstance(b, int) or b < 1 for b in sizes):
        raise ValueError(f"batch_sizes must be positive ints, got {batch_sizes!r}")
    return sorted({min(sizes), max(sizes)})


def threads_of(rows: Sequence[RunResult], model: str, batch_size: int) -> int | None:
    """The thread count the model's rows were timed with at ``batch_size``."""
    for r in rows:
        if r.model == model and r.ok and batch_size in r.timing:
            threads = r.timing[batch_size].get("threads")
            if threads is not None:
                return int(threads)
    return None


def panel_title(model: str, batch_size: int, threads: int | None) -> str:
    """``small_resnet: batch 256, 2 threads``; batch 1 says that overhead dominates there."""
    title = f"{model}: batch {batch_size}" + ("" if threads is None else f", {threads} thread{'s' * (threads != 1)}")
    return title + (" (per-operator overhead dominates)" if batch_size == 1 else "")


def dodge(count: int, span: float) -> list[float]:
    """``count`` x offsets centred on 0 and ``span`` apart, so points at one ratio do not hide each other."""
    if count < 1:
        raise ValueError(f"dodge: count must be >= 1, got {count}")
    return [(k - (count - 1) / 2) * span for k in range(count)]
