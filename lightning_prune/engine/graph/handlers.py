"""The function that prunes one space: ``dep.handler`` of a group item, and what a prune calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..layers.functions import prune_parameter_out_channels
from ..trace.tracer import Space

__all__ = ["ParameterHandler", "space_handler"]


class ParameterHandler:
    """``dep.handler`` for an unwrapped parameter: slices it along ``dim``."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.__name__ = "prune_parameter_out_channels"

    def __call__(self, param: torch.Tensor, idxs: Sequence[int]) -> torch.Tensor:
        return prune_parameter_out_channels(param, idxs, dim=self.dim)


def space_handler(sp: Space) -> Any:
    """The pruning function of a space: its layer pruner's in or out method, or a parameter slicer."""
    if sp.role == "param":
        return ParameterHandler(sp.dim)
    return sp.pruner.prune_in_channels if sp.role == "in" else sp.pruner.prune_out_channels
