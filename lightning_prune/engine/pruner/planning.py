"""Deciding which units of which groups to remove.

A *plan* is computed from importance scores before anything is pruned, so that global
ranking sees every group as it is, and so that a budget search can try several ratios
on a copy of the model with the same decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class GroupPlan:
    """Removal decision for one group, in terms of its units (stable across prunes)."""

    group: Any
    root_name: str
    scope: Any
    target_ratio: float
    initial_units: int
    unit_scores: torch.Tensor
    remove: list[int] = field(default_factory=list)

    @property
    def units(self) -> list[list[int]]:
        return self.group.units

    @property
    def unit_size(self) -> int:
        return len(self.group.units[0]) if self.group.units else 1


def unit_scores(group: Any, scores: torch.Tensor) -> torch.Tensor:
    """Per-unit scores from per-root-index scores (units may span several root indices)."""
    root = list(group[0].idxs)
    scores = torch.as_tensor(scores, dtype=torch.float32).flatten()
    if scores.numel() == len(group.units):
        return scores
    if scores.numel() != len(root):
        raise ValueError(
            f"importance returned {scores.numel()} scores for a group with {len(root)} root channels "
            f"({len(group.units)} units); return one score per root index (see docs/importance.md)"
        )
    pos = {r: i for i, r in enumerate(root)}
    return torch.stack([scores[[pos[r] for r in unit]].sum() for unit in group.units])


def keep_count(initial: int, ratio: float, max_ratio: float, unit_size: int, round_to: int | None) -> int:
    """Units to keep so that ``ratio`` of the initial units is gone, honouring the caps."""
    ratio = min(ratio, max_ratio)
    keep = max(1, int(round(initial * (1 - ratio))))
    if round_to:
        channels = keep * unit_size
        rounded = max(round_to, int(round(channels / round_to)) * round_to)
        keep = max(1, min(initial, math.ceil(rounded / unit_size)))
    return keep


def plan_local(plans: list[GroupPlan], max_ratio: float, round_to: int | None) -> None:
    """Each group loses its own ratio of units, weakest first."""
    for p in plans:
        current = len(p.units)
        keep = keep_count(p.initial_units, p.target_ratio, max_ratio, p.unit_size, round_to)
        n = current - keep
        if n > 0:
            p.remove = torch.argsort(p.unit_scores, stable=True)[:n].tolist()


def plan_global(plans: list[GroupPlan], max_ratio: float, round_to: int | None) -> None:
    """Groups in one scope share a ranking: the weakest units anywhere in the scope go first.

    Scores are normalized per group by their mean before ranking, so that layers of very
    different scale compete fairly; each group keeps at least ``1 - max_ratio`` of its units.
    """
    scopes: dict[Any, list[GroupPlan]] = {}
    for p in plans:
        scopes.setdefault(p.scope, []).append(p)
    for members in scopes.values():
        total_initial = sum(p.initial_units for p in members)
        total_keep = sum(max(1, round(p.initial_units * (1 - p.target_ratio))) for p in members)
        to_remove = sum(len(p.units) for p in members) - total_keep
        if to_remove <= 0 or total_initial == 0:
            continue
        entries = []
        for gi, p in enumerate(members):
            s = p.unit_scores
            s = s / (s.abs().mean() + 1e-12)
            floor = max(1, int(math.ceil(p.initial_units * (1 - max_ratio))))
            removable = max(0, len(p.units) - floor)
            order = torch.argsort(s, stable=True)[:removable]
            entries.extend((float(s[u]), gi, int(u)) for u in order)
        entries.sort(key=lambda e: e[0])
        chosen: dict[int, list[int]] = {}
        for _, gi, u in entries[:to_remove]:
            chosen.setdefault(gi, []).append(u)
        for gi, p in enumerate(members):
            remove = chosen.get(gi, [])
            if round_to and remove:
                keep = len(p.units) - len(remove)
                rounded = keep_count(len(p.units), 1 - keep / len(p.units), max_ratio, p.unit_size, round_to)
                order = torch.argsort(p.unit_scores, stable=True).tolist()
                remove = order[:max(0, len(p.units) - rounded)]
            p.remove = remove


def ratio_for(root_name: str, default: float, table: list[tuple[set[str], Any, float]]) -> float:
    """The ratio of the first entry of a resolved ratio dict that names this group's root."""
    for members, _, ratio in table:
        if root_name in members:
            return ratio
    return default


def scope_of(group: Any, ratio_table: list[tuple[set[str], Any, float]], global_pruning: bool,
             isomorphic: bool) -> Any:
    """The scope whose groups are ranked jointly with ``group``; ``None`` ranks it alone."""
    root = group.root_name
    for i, (members, key, _) in enumerate(ratio_table):
        # A tuple key is always one jointly ranked scope; a single key becomes its own
        # scope under global pruning, so its ratio still holds.
        if root in members and (isinstance(key, tuple) or global_pruning):
            return ("scope", i)
    if isomorphic:
        sig = tuple(sorted((type(d.target.module).__name__, d.handler.__name__) for d, _ in group))
        return ("isomorphic", sig, len(group.units[0]))
    if global_pruning:
        return "global"
    return None
