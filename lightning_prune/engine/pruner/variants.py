"""Pruners with another default criterion.

:class:`MagnitudePruner` and :class:`RandomPruner` are :class:`MetaPruner` with another
default importance. The pruners that also regularize during sparse training
(:class:`BNScalePruner`, :class:`GroupNormPruner`, :class:`GrowingRegPruner`) live in
:mod:`.regularizers` and are re-exported here.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..importance import GroupMagnitudeImportance, RandomImportance
from .meta import MetaPruner
from .regularizers import BNScalePruner, GroupNormPruner, GrowingRegPruner

__all__ = ["BNScalePruner", "GroupNormPruner", "GrowingRegPruner", "MagnitudePruner", "RandomPruner"]


class MagnitudePruner(MetaPruner):
    """:class:`MetaPruner` ranking channels by L2 group magnitude (the default criterion).

    Args:
        importance: another criterion, if given; default ``GroupMagnitudeImportance(p=2)``.
        **kwargs: every argument of :class:`MetaPruner`.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, importance: Any = None, **kwargs: Any) -> None:
        if importance is None:
            importance = GroupMagnitudeImportance(p=2)
        super().__init__(model, example_inputs, importance=importance, **kwargs)


class RandomPruner(MetaPruner):
    """:class:`MetaPruner` removing random channels: the baseline (``RandomImportance()``)."""

    def __init__(self, model: nn.Module, example_inputs: Any, importance: Any = None, **kwargs: Any) -> None:
        if importance is None:
            importance = RandomImportance()
        super().__init__(model, example_inputs, importance=importance, **kwargs)
