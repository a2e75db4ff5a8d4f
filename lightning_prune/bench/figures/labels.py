"""Ratio labels beside scatter points that neither overlap each other nor hide a point.

Points of different methods at the same ratio often land on top of each other (two
importance criteria that keep the same channels measure the same latency). Labels are
therefore placed greedily in axes-fraction coordinates: each tries positions on rings of
growing radius around its point (the eight sides, the upper right first), and takes the
first whose box touches no placed label, no marker, no obstacle (error bars) and no edge
of the axes; failing that, the least
overlapping one. A label moved off its first ring gets a leader line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["Box", "overlap", "place_labels"]

Box = tuple[float, float, float, float]  # x0, y0, x1, y1

_TOUCH = 1e-9  # intersections thinner than this are rounding, not overlap

#: Directions tried on each ring, in order of preference: (x, y) sides of the point.
_SIDES = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))


def overlap(a: Box, b: Box) -> float:
    """Area shared by two boxes; boxes that only touch (up to float rounding) share none."""
    dx, dy = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    return dx * dy if dx > _TOUCH and dy > _TOUCH else 0.0


def _outside(box: Box) -> float:
    """How far a box sticks out of the unit square (0 inside)."""
    return max(0.0, -box[0]) + max(0.0, -box[1]) + max(0.0, box[2] - 1) + max(0.0, box[3] - 1)


def place_labels(anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]], *,
                 obstacles: Sequence[Box] = (), marker: float = 0.02, gap: float = 0.01,
                 rings: int = 8) -> list[tuple[float, float]]:
    """Centres for one label per anchor, all in axes fraction (0-1).

    Args:
        anchors: the points, in axes fraction.
        sizes: ``(width, height)`` of each label, in axes fraction.
        obstacles: other boxes a label should not cover (error bars, lines), in axes fraction.
        marker: width and height of the box a point's marker covers.
        gap: distance between a point and its label on the first ring; each further ring
            adds one label height.
        rings: rings tried before the least overlapping position is taken.
    """
    if len(anchors) != len(sizes):
        raise ValueError(f"place_labels: {len(anchors)} anchors but {len(sizes)} sizes")
    if rings < 1:
        raise ValueError(f"place_labels: rings must be >= 1, got {rings}")
    markers = [(x - marker / 2, y - marker / 2, x + marker / 2, y + marker / 2) for x, y in anchors]
    markers += list(obstacles)
    placed: list[Box] = []
    centres: list[tuple[float, float]] = []
    for (x, y), (w, h) in zip(anchors, sizes, strict=True):
        best: tuple[float, float] | None = None
        best_cost = math.inf
        for ring in range(rings):
            radius = marker / 2 + gap + ring * h
            for dx, dy in _SIDES:
                cx, cy = x + dx * (radius + w / 2), y + dy * (radius + h / 2)
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                cost = (sum(overlap(box, p) for p in placed) + sum(overlap(box, m) for m in markers)
                        + 10 * _outside(box) * (w + h))
                if cost < best_cost - 1e-12:
                    best, best_cost = (cx, cy), cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        assert best is not None  # rings >= 1: at least one position was scored
        centres.append(best)
        placed.append((best[0] - w / 2, best[1] - h / 2, best[0] + w / 2, best[1] + h / 2))
    return centres
