"""Ratio schedules for iterative pruning.

A scheduler maps ``(target_ratio, steps)`` to the cumulative ratio after each step; the
list has ``steps + 1`` entries starting at 0 and ending at ``target_ratio``. Any callable
with that signature can be passed as ``iterative_pruning_ratio_scheduler``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Scheduler = Callable[[float, int], list[float]]


def linear_scheduler(pruning_ratio: float, steps: int) -> list[float]:
    """Equal increments: ``[0, r/n, 2r/n, ..., r]``."""
    return [pruning_ratio * i / steps for i in range(steps + 1)]


def cosine_scheduler(pruning_ratio: float, steps: int) -> list[float]:
    """Fast at first, gentle at the end (half a cosine)."""
    return [pruning_ratio * (1 - math.cos(math.pi * i / steps)) / 2 if i < steps else pruning_ratio
            for i in range(steps + 1)]


def exponential_scheduler(pruning_ratio: float, steps: int) -> list[float]:
    """Remove the same *fraction of what remains* at every step (keeps ``(1-r)^(i/n)``)."""
    keep = 1 - pruning_ratio
    return [1 - keep ** (i / steps) for i in range(steps + 1)]


SCHEDULERS: dict[str, Scheduler] = {
    "linear": linear_scheduler,
    "cosine": cosine_scheduler,
    "exponential": exponential_scheduler,
}


def get_scheduler(name_or_fn: str | Scheduler) -> Scheduler:
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn in SCHEDULERS:
        return SCHEDULERS[name_or_fn]
    raise ValueError(f"unknown scheduler {name_or_fn!r}; choose one of {sorted(SCHEDULERS)} or pass a callable")


def check_schedule(schedule: list[float], steps: int, target: float) -> list[float]:
    """Validate a scheduler's output so a bad custom scheduler fails early and clearly."""
    if len(schedule) != steps + 1:
        raise ValueError(f"the ratio scheduler returned {len(schedule)} values; expected steps + 1 = {steps + 1}")
    if any(b < a - 1e-9 for a, b in zip(schedule, schedule[1:])):
        raise ValueError(f"the ratio scheduler must be non-decreasing, got {schedule}")
    if abs(schedule[-1] - target) > 1e-6:
        raise ValueError(f"the ratio scheduler must end at the target ratio {target}, got {schedule[-1]}")
    return [float(v) for v in schedule]
