"""Pruner for ``nn.Embedding``: prunes ``embedding_dim`` (the features of its output).

An embedding's input is indices, so its only channels are the embedding features;
"in" and "out" channels are both ``embedding_dim`` so that it couples like a norm layer.
"""

from __future__ import annotations

import torch
from torch import nn

from .norm import CoupledPruner

__all__ = ["EmbeddingPruner"]


class EmbeddingPruner(CoupledPruner):
    TARGET_TYPES = (nn.Embedding,)
    NAME = "embedding"
    out_channel_dim = -1
    in_channel_dim = -1

    def channel_tensors(self, layer: nn.Module) -> list[tuple[torch.Tensor | None, int]]:
        return [(layer.weight, 1)]

    def resize(self, layer: nn.Module, size: int, plan: object) -> None:
        layer.embedding_dim = size

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.embedding_dim
