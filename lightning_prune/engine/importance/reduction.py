"""Combining and checking scores: the pieces every group criterion shares.

:func:`reduce_scores` combines the scores that several layers of a group give one root
index (``group_reduction``), :func:`normalize_scores` rescales a group's scores so that
groups compare (``normalizer``), and :func:`finalize` turns them into the float32, finite
result the :class:`~lightning_prune.engine.importance.base.Importance` protocol promises.
The ``check_*`` functions validate criterion arguments with errors that name the choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "GROUP_REDUCTIONS",
    "NORMALIZERS",
    "check_normalizer",
    "check_p",
    "check_reduction",
    "check_target_types",
    "finalize",
    "normalize_scores",
    "reduce_scores",
]

#: Ways to combine the scores that several items give one root index.
GROUP_REDUCTIONS: tuple[str, ...] = ("mean", "sum", "max", "prod", "first")
#: Ways to rescale a group's scores (``None`` is the same as ``"none"``).
NORMALIZERS: tuple[str, ...] = ("mean", "sum", "max", "gaussian", "lamp", "none")


def _choice(value: Any, choices: Sequence[str], argument: str) -> str:
    if value is None and "none" in choices:
        return "none"
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    shown = ", ".join(repr(c) for c in choices) + (", None" if "none" in choices else "")
    raise ValueError(f"{argument} must be one of {shown}; got {value!r}")


def check_reduction(value: Any) -> str:
    """Validate ``group_reduction``; ``ValueError`` names the valid choices."""
    return _choice(value, GROUP_REDUCTIONS, "group_reduction")


def check_normalizer(value: Any) -> str:
    """Validate ``normalizer``; ``ValueError`` names the valid choices."""
    return _choice(value, NORMALIZERS, "normalizer")


def check_p(p: Any) -> float:
    """``p`` of a norm must be a finite positive number."""
    if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p) or p <= 0:
        raise ValueError(f"p must be a finite number > 0 (e.g. 1 for L1, 2 for L2); got {p!r}")
    return float(p)


def check_target_types(target_types: Any) -> tuple[type, ...] | None:
    if target_types is None:
        return None
    types = (target_types,) if isinstance(target_types, type) else tuple(target_types)
    bad = [t for t in types if not isinstance(t, type)]
    if bad:
        raise ValueError(f"target_types must be layer classes (e.g. nn.Conv2d); got {bad[0]!r}")
    return types


def reduce_scores(scores: torch.Tensor, hit: torch.Tensor, how: str) -> torch.Tensor:
    """Combine ``[items, n]`` scores into ``[n]``, using only entries where ``hit``.

    ``mean`` averages over the items that scored a root index; root indices that no
    item scored get 0.
    """
    how = check_reduction(how)
    n = scores.shape[1] if scores.dim() == 2 else 0
    if scores.numel() == 0:
        return torch.zeros(n, dtype=torch.float64)
    touched = hit.any(0)
    zero = torch.zeros((), dtype=scores.dtype)
    if how == "sum":
        return torch.where(hit, scores, zero).sum(0)
    if how == "mean":
        return torch.where(hit, scores, zero).sum(0) / hit.sum(0).clamp(min=1)
    if how == "max":
        out = scores.masked_fill(~hit, -math.inf).amax(0)
    elif how == "prod":
        out = scores.masked_fill(~hit, 1.0).prod(0)
    else:  # first: the first item (in group order) that scored the root index
        first = hit.to(torch.int8).argmax(0, keepdim=True)
        out = scores.gather(0, first)[0]
    return torch.where(touched, out, zero)


def _lamp(x: torch.Tensor) -> torch.Tensor:
    """``x_i / sum(x_j for x_j >= x_i)``; ties share the same denominator."""
    ordered, _ = torch.sort(x)
    suffix = torch.flip(torch.cumsum(torch.flip(ordered, [0]), 0), [0])
    denominator = suffix[torch.searchsorted(ordered, x)]
    return torch.where(denominator > 0, x / denominator.clamp(min=torch.finfo(x.dtype).tiny), torch.zeros_like(x))


def normalize_scores(x: torch.Tensor, how: str | None) -> torch.Tensor:
    """Rescale one group's scores so that groups of different sizes compare.

    Dividing normalizers (``mean``, ``sum``, ``max``) leave the scores unchanged when the
    denominator is not positive (e.g. all zeros); ``gaussian`` uses the population std
    and returns ``x - mean`` when the std is 0; ``lamp`` is LAMP (Lee et al., 2021).
    """
    how = check_normalizer(how)
    if how == "none" or x.numel() == 0:
        return x
    if how == "lamp":
        return _lamp(x)
    if how == "gaussian":
        centered = x - x.mean()
        std = x.std(correction=0)
        return centered / std if std > 0 else centered
    denominator = {"mean": x.mean, "sum": x.sum, "max": x.max}[how]()
    return x / denominator if denominator > 0 else x


def finalize(scores: torch.Tensor, group: Any = None) -> torch.Tensor:
    """float32 scores; NaN raises (the weights or grads hold NaN), overflow is clamped."""
    if bool(torch.isnan(scores).any()):
        root = group[0].dep.target.name if group is not None and len(group) else "?"
        raise RuntimeError(
            f"importance of the group rooted at {root} is NaN: its weights or gradients hold NaN or inf; "
            f"check the model for a diverged training run before pruning"
        )
    big = torch.finfo(torch.float32).max
    return scores.clamp(-big, big).to(torch.float32)
