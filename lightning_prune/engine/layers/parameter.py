"""Pruner for an unwrapped ``nn.Parameter`` (e.g. a learnable position embedding or a
class token) that carries channels along one dim.

The parameter itself plays the role of the layer: ``prune_out_channels(param, idxs)``
slices it in place (same object, see :func:`~.base.slice_tensor`) and returns it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import LayerPruner, PruningError, keep_indices, normalize_idxs, slice_tensor
from .conv import CallLabel

__all__ = ["ParameterPruner"]


class ParameterPruner(LayerPruner):
    """Slices a parameter along ``dim`` (output) or ``in_dim`` (input, default ``dim``).

    With the default ``in_dim`` the input and output channels are the same dim, so the
    parameter couples like a norm layer. Each call may override the dim.
    """

    TARGET_TYPES = (torch.nn.Parameter,)
    NAME = "parameter"

    def __init__(self, dim: int = 0, in_dim: int | None = None) -> None:
        self.dim = dim
        self.in_dim = dim if in_dim is None else in_dim
        self.out_channel_dim = self.dim
        self.in_channel_dim = self.in_dim
        self.couples_in_out = self.in_dim == self.dim

    def _prune(self, param: torch.Tensor, idxs: Sequence[int], dim: int, direction: str) -> torch.Tensor:
        what = CallLabel(self.NAME, direction, param, f"(dim={dim})")
        if not isinstance(param, torch.Tensor):
            raise PruningError(f"{what}: expected an nn.Parameter or tensor, got {type(param).__name__}")
        if not -param.dim() <= dim < param.dim():
            raise PruningError(
                f"{what}: dim {dim} is out of range for a {param.dim()}-D tensor; pass a valid dim"
            )
        size = param.shape[dim]
        remove = normalize_idxs(idxs, size, what)
        slice_tensor(param, dim, keep_indices(size, remove))
        return param

    def prune_out_channels(
        self, param: torch.Tensor, idxs: Sequence[int], dim: int | None = None
    ) -> torch.Tensor:
        return self._prune(param, idxs, self.dim if dim is None else dim, "out")

    def prune_in_channels(
        self, param: torch.Tensor, idxs: Sequence[int], dim: int | None = None
    ) -> torch.Tensor:
        return self._prune(param, idxs, self.in_dim if dim is None else dim, "in")

    def get_out_channels(self, param: torch.Tensor) -> int | None:
        return _size_along(param, self.dim)

    def get_in_channels(self, param: torch.Tensor) -> int | None:
        return _size_along(param, self.in_dim)


def _size_along(param: torch.Tensor, dim: int) -> int | None:
    """``param.shape[dim]``, or ``None`` when the parameter has no such dim."""
    if -param.dim() <= dim < param.dim():
        return int(param.shape[dim])
    return None
