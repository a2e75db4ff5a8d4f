"""Conclusions drawn from the rows: Pareto fronts and latency trends, shared by report and plots."""

from __future__ import annotations

from dataclasses import dataclass

from .results import RunResult

__all__ = ["FALL_MARGIN", "LatencyTrend", "latency_trends", "pareto_front", "prunedness"]

#: A latency "falls" when the most pruned run takes at most this fraction of the reference.
FALL_MARGIN = 0.9


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
    """How one method's latency moves from its least to its most pruned run."""

    method: str
    kind: str
    ratios: tuple[float, ...]
    latencies_ms: tuple[float, ...]
    dense_ms: float

    @property
    def falls(self) -> bool:
        """At the most pruned ratio, at least 10% faster than at the least pruned one and than dense.

        The margin keeps run-to-run noise (a few percent on an idle machine) from being read
        as a speedup.
        """
        last = self.latencies_ms[-1]
        return last <= FALL_MARGIN * self.latencies_ms[0] and last <= FALL_MARGIN * self.dense_ms

    @property
    def speedup(self) -> float:
        """Dense latency over the most pruned run's latency."""
        return self.dense_ms / self.latencies_ms[-1]


def latency_trends(rows: list[RunResult], model: str, batch_size: int, target: str) -> list[LatencyTrend]:
    """One trend per method of ``model``, ordered from least to most pruned."""
    dense = next((r for r in rows if r.model == model and r.method == "dense" and r.ok), None)
    if dense is None or batch_size not in dense.latency:
        return []
    methods = list(dict.fromkeys(r.method for r in rows if r.model == model and r.method != "dense"))
    trends = []
    for method in methods:
        runs = [r for r in rows if r.model == model and r.method == method and r.ok and batch_size in r.latency]
        runs.sort(key=lambda r: prunedness(r.ratio, target))
        if len(runs) < 2:
            continue
        trends.append(LatencyTrend(method, runs[0].kind, tuple(r.ratio for r in runs),
                                   tuple(r.latency[batch_size]["median_ms"] for r in runs),
                                   dense.latency[batch_size]["median_ms"]))
    return trends
