"""Conclusions drawn from the rows: Pareto fronts and latency trends, shared by report and plots."""

from __future__ import annotations

from dataclasses import dataclass

from .results import RunResult
from .speedups import SpeedupSpread, row_speedup

__all__ = ["LatencyTrend", "latency_trends", "pareto_front", "prunedness"]


def prunedness(ratio: float, target: str) -> float:
    """Sort key: larger means more pruned (a larger channel ratio, or a smaller kept fraction)."""
    return ratio if target == "ratio" else -ratio


def pareto_front(rows: list[RunResult], batch_size: int) -> list[RunResult]:
    """Rows no other row beats on both accuracy (higher) and latency (lower), fastest first.

    Rows without accuracy or without a latency at ``batch_size`` are left out.
    """
    points = [r for r in rows if r.ok and r.accuracy is not None and batch_size in r.latency]
    points.sort(key=lambda r: (r.latency[batch_size]["median_ms"], -r.accuracy))
    front, best = [], float("-inf")
    for r in points:
        if r.accuracy > best:
            front.append(r)
            best = r.accuracy
    return front


@dataclass(frozen=True)
class LatencyTrend:
    """How one method's latency moves from its least to its most pruned run, at one batch size.

    ``speedups[i]`` is run ``i``'s speedup over dense with its spread (``None`` where it
    could not be computed).
    """

    method: str
    kind: str
    batch_size: int
    ratios: tuple[float, ...]
    latencies_ms: tuple[float, ...]
    dense_ms: float
    speedups: tuple[SpeedupSpread | None, ...]

    @property
    def most_pruned(self) -> SpeedupSpread | None:
        return self.speedups[-1]

    @property
    def falls(self) -> bool:
        """The most pruned run is measurably faster than dense (:func:`.speedups.verdict`).

        A median below dense is not enough: the IQR of the speedup must lie above 1.0, so
        that run-to-run noise is never read as a speedup.
        """
        return self.most_pruned is not None and self.most_pruned.verdict == "faster"

    @property
    def speedup(self) -> float:
        """The most pruned run's speedup over dense (paired median where measured so)."""
        return self.most_pruned.median if self.most_pruned is not None else self.dense_ms / self.latencies_ms[-1]


def latency_trends(rows: list[RunResult], model: str, batch_size: int, target: str) -> list[LatencyTrend]:
    """One trend per method of ``model`` with a run at ``batch_size``, ordered from least to most pruned."""
    dense = next((r for r in rows if r.model == model and r.method == "dense" and r.ok), None)
    if dense is None or batch_size not in dense.latency:
        return []
    methods = list(dict.fromkeys(r.method for r in rows if r.model == model and r.method != "dense"))
    trends = []
    for method in methods:
        runs = [r for r in rows if r.model == model and r.method == method and r.ok and batch_size in r.latency]
        runs.sort(key=lambda r: prunedness(r.ratio, target))
        if not runs:
            continue
        trends.append(LatencyTrend(method, runs[0].kind, batch_size, tuple(r.ratio for r in runs),
                                   tuple(r.latency[batch_size]["median_ms"] for r in runs),
                                   dense.latency[batch_size]["median_ms"],
                                   tuple(row_speedup(r, batch_size, dense) for r in runs)))
    return trends
