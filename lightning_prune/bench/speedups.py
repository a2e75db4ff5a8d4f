"""A measured speedup with its spread, and the rule that decides what it may be called.

On a shared machine two timings of the same model differ by several percent, and a
masked model (same shapes, same kernels) can come out "1.05x faster" by chance. So a
speedup is only called *faster* or *slower* when its interquartile range lies entirely on
one side of 1.0 and its median is at least :data:`NEGLIGIBLE` away from 1.0; otherwise it
is *no measurable difference*. The spread is, in order of preference:

* the quartiles of the paired per-round ratios (the benchmark times dense and pruned in
  turns, so the machine's drift cancels round by round), or
* for rows without them (older result files), the range the two models' own quartiles
  allow: ``dense p25 / pruned p75`` to ``dense p75 / pruned p25``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .results import RunResult

__all__ = ["NEGLIGIBLE", "SpeedupSpread", "Verdict", "row_speedup", "verdict"]

#: Medians within this relative distance of 1.0 count as no difference even with a tight
#: IQR: the order of the runs and the allocator move a timing by about that much.
NEGLIGIBLE = 0.03

Verdict = Literal["faster", "slower", "no measurable difference"]


def verdict(median: float, p25: float, p75: float) -> Verdict:
    """``faster`` / ``slower`` only when the whole IQR is beyond 1.0 and the median is not negligible."""
    if not p25 <= median <= p75:
        raise ValueError(f"verdict: need p25 <= median <= p75, got {p25}, {median}, {p75}")
    if p25 <= 1.0 <= p75 or abs(median - 1.0) < NEGLIGIBLE:
        return "no measurable difference"
    return "faster" if p25 > 1.0 else "slower"


@dataclass(frozen=True)
class SpeedupSpread:
    """``dense time / model time`` at one batch size: median, quartiles and how they were obtained.

    ``paired`` is true when the quartiles come from rounds that timed dense and the model
    in turns (``rounds`` of them).
    """

    batch_size: int
    median: float
    p25: float
    p75: float
    paired: bool
    rounds: int | None = None

    @property
    def verdict(self) -> Verdict:
        return verdict(self.median, self.p25, self.p75)

    @property
    def measurable(self) -> bool:
        return self.verdict != "no measurable difference"

    def spread_text(self) -> str:
        """``3.41x (IQR 3.30-3.52x over 30 paired rounds)``."""
        how = f"over {self.rounds} paired rounds" if self.paired and self.rounds else (
            "paired rounds" if self.paired else "from the two models' quartiles")
        return f"{self.median:.2f}x (IQR {self.p25:.2f}-{self.p75:.2f}x {how})"

    def describe(self) -> str:
        """``faster: 3.41x (IQR ...) at batch 256`` or ``no measurable difference: 1.01x (...)``."""
        return f"{self.verdict}: {self.spread_text()} at batch {self.batch_size}"


def row_speedup(row: RunResult, batch_size: int, dense: RunResult | None = None) -> SpeedupSpread | None:
    """The speedup of ``row`` over dense at ``batch_size``, or ``None`` where it was not measured.

    Paired quartiles are used when the row has them; otherwise ``dense`` (the model's dense
    row) supplies the other model's quartiles.
    """
    if not row.ok or batch_size not in row.latency:
        return None
    median = row.speedup.get(batch_size)
    p25, p75 = row.speedup_p25.get(batch_size), row.speedup_p75.get(batch_size)
    if median is not None and p25 is not None and p75 is not None:
        rounds = row.timing.get(batch_size, {}).get("rounds")
        return SpeedupSpread(batch_size, median, min(p25, median), max(p75, median), paired=True,
                             rounds=None if rounds is None else int(rounds))
    ref = dense.latency.get(batch_size) if dense is not None and dense.ok else None
    mine = row.latency[batch_size]
    if not ref or min(mine["median_ms"], mine["p25_ms"]) <= 0:
        return None
    median = ref["median_ms"] / mine["median_ms"]
    low, high = ref["p25_ms"] / mine["p75_ms"], ref["p75_ms"] / mine["p25_ms"]
    return SpeedupSpread(batch_size, median, min(low, median), max(high, median), paired=False)
