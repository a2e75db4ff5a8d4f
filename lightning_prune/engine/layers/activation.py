"""Pruner for ``nn.PReLU``: one slope per channel (dim 1), or a single shared slope."""

from __future__ import annotations

import torch
from torch import nn

from .norm import CoupledPruner

__all__ = ["PReLUPruner"]


class PReLUPruner(CoupledPruner):
    """Slices the slope vector; a shared slope (``num_parameters == 1``) has no channels.

    For the shared case ``get_out_channels`` returns ``None`` and pruning is a no-op,
    because the one slope applies to whatever channels remain.
    """

    TARGET_TYPES = (nn.PReLU,)
    NAME = "prelu"
    out_channel_dim = 1
    in_channel_dim = 1

    def channel_tensors(self, layer: nn.Module) -> list[tuple[torch.Tensor | None, int]]:
        return [(layer.weight, 0)]

    def resize(self, layer: nn.Module, size: int, plan: object) -> None:
        layer.num_parameters = size

    def get_out_channels(self, layer: nn.Module) -> int | None:
        if layer.num_parameters == 1:
            return None
        return layer.num_parameters
