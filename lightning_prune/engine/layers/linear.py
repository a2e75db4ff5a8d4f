"""Pruner for ``nn.Linear`` (and subclasses such as ``NonDynamicallyQuantizableLinear``).

The weight is ``[out_features, in_features]``; features are the last dim of the
layer's input and output, hence ``out_channel_dim = in_channel_dim = -1``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .base import LayerPruner, keep_indices, normalize_idxs, slice_tensor
from .conv import CallLabel

__all__ = ["LinearPruner"]


class LinearPruner(LayerPruner):
    TARGET_TYPES = (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)
    NAME = "linear"
    out_channel_dim = -1
    in_channel_dim = -1

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        what = CallLabel(self.NAME, "out", layer)
        remove = normalize_idxs(idxs, layer.out_features, what)
        keep = keep_indices(layer.out_features, remove)
        slice_tensor(layer.weight, 0, keep)
        slice_tensor(layer.bias, 0, keep)
        layer.out_features = len(keep)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        what = CallLabel(self.NAME, "in", layer)
        remove = normalize_idxs(idxs, layer.in_features, what)
        keep = keep_indices(layer.in_features, remove)
        slice_tensor(layer.weight, 1, keep)
        layer.in_features = len(keep)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.out_features

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.in_features
