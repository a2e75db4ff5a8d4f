"""Importance criteria: score a group's channels so a pruner can drop the least useful.

Every criterion follows the protocol of :class:`Importance`: ``imp(group)`` returns one
finite float score per root index of the group, in the order of ``group[0].idxs``,
higher = more important, without touching the model. ``docs/importance.md`` describes
each criterion and how to write a new one.

:func:`get_importance` builds a criterion from the names used in YAML/CLI configs.
"""

from __future__ import annotations

from typing import Any

from .base import GroupImportance, Importance, RootMap
from .magnitude import GroupMagnitudeImportance, GroupNormImportance, MagnitudeImportance, SliceImportance
from .others import BNScaleImportance, FPGMImportance, LAMPImportance, RandomImportance
from .reduction import GROUP_REDUCTIONS, NORMALIZERS, normalize_scores, reduce_scores
from .slices import ChannelSlice, along, channel_slices, grouped
from .taylor import GroupHessianImportance, GroupTaylorImportance, HessianImportance, TaylorImportance

#: Config name -> criterion class. ``"l1"`` is magnitude with ``p=1``.
IMPORTANCES: dict[str, type[Importance]] = {
    "magnitude": GroupMagnitudeImportance,
    "l2": GroupMagnitudeImportance,
    "l1": GroupMagnitudeImportance,
    "group_norm": GroupMagnitudeImportance,
    "taylor": GroupTaylorImportance,
    "hessian": GroupHessianImportance,
    "bn_scale": BNScaleImportance,
    "lamp": LAMPImportance,
    "fpgm": FPGMImportance,
    "random": RandomImportance,
}

_DEFAULTS: dict[str, dict[str, Any]] = {"l1": {"p": 1}, "l2": {"p": 2}}


def get_importance(name_or_obj: str | Importance | type[Importance], **kwargs: Any) -> Importance:
    """A criterion from a config name (``"magnitude"``, ``"l1"``, ``"taylor"``...).

    Args:
        name_or_obj: a name of :data:`IMPORTANCES` (case-insensitive, ``-`` or ``_``),
            an :class:`Importance` instance (returned as is), or a criterion class.
        **kwargs: constructor arguments, e.g. ``p=1`` or ``normalizer="lamp"``.

    Raises:
        ValueError: unknown name, or arguments that contradict the name (``"l1"`` with
            ``p=2``), or arguments given with an instance.
    """
    if isinstance(name_or_obj, Importance):
        if kwargs:
            raise ValueError(
                f"get_importance: arguments {sorted(kwargs)} cannot be applied to an existing "
                f"{type(name_or_obj).__name__} instance; pass a name or a class instead"
            )
        return name_or_obj
    if isinstance(name_or_obj, type) and issubclass(name_or_obj, Importance):
        return name_or_obj(**kwargs)
    key = name_or_obj.strip().lower().replace("-", "_") if isinstance(name_or_obj, str) else None
    if key not in IMPORTANCES:
        raise ValueError(
            f"unknown importance {name_or_obj!r}; valid names: {', '.join(sorted(IMPORTANCES))} "
            f"(or pass an Importance instance)"
        )
    for arg, value in _DEFAULTS.get(key, {}).items():
        if arg in kwargs and kwargs[arg] != value:
            raise ValueError(f"importance {key!r} means {arg}={value}; got {arg}={kwargs[arg]!r}")
        kwargs[arg] = value
    return IMPORTANCES[key](**kwargs)


__all__ = [
    "GROUP_REDUCTIONS",
    "IMPORTANCES",
    "NORMALIZERS",
    "BNScaleImportance",
    "ChannelSlice",
    "FPGMImportance",
    "GroupHessianImportance",
    "GroupImportance",
    "GroupMagnitudeImportance",
    "GroupNormImportance",
    "GroupTaylorImportance",
    "HessianImportance",
    "Importance",
    "LAMPImportance",
    "MagnitudeImportance",
    "RandomImportance",
    "RootMap",
    "SliceImportance",
    "TaylorImportance",
    "along",
    "channel_slices",
    "get_importance",
    "grouped",
    "normalize_scores",
    "reduce_scores",
]
