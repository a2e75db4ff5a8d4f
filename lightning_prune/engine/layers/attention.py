"""Pruner for ``nn.MultiheadAttention``: prunes the embedding dim ``E``.

``E`` is at once the feature dim of the query input and of the output (so input and
output channels are coupled) and the width of the q/k/v projections. Channel ``i`` is
removed from the input columns of the projections, from rows ``i``, ``E+i``, ``2E+i`` of
the packed ``in_proj_weight`` (q, k and v), from ``bias_k``/``bias_v`` and from both dims
of ``out_proj``.

Heads split the projected ``E`` into ``num_heads`` contiguous chunks, so the new ``E``
must stay divisible by ``num_heads``. Removing the same offsets in every head keeps each
kept channel in its head; other removals are allowed but move channels between heads.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .base import LayerPruner, PruningError, keep_indices, normalize_idxs, slice_tensor
from .conv import CallLabel

__all__ = ["MultiheadAttentionPruner"]


class MultiheadAttentionPruner(LayerPruner):
    TARGET_TYPES = (nn.MultiheadAttention,)
    NAME = "multihead_attention"
    out_channel_dim = -1
    in_channel_dim = -1
    couples_in_out = True

    def _prune(self, layer: nn.Module, idxs: Sequence[int], direction: str) -> nn.Module:
        what = CallLabel(self.NAME, direction, layer)
        embed = layer.embed_dim
        remove = normalize_idxs(idxs, embed, what)
        if not remove:
            return layer
        heads = layer.num_heads
        new_embed = embed - len(remove)
        head_dim = embed // heads
        removed_heads = _whole_heads(remove, head_dim)
        if removed_heads is not None and len(removed_heads) < heads:
            heads = heads - len(removed_heads)  # whole heads go: head_dim stays, num_heads drops
        if new_embed % heads:
            raise PruningError(
                f"{what}: removing {len(remove)} of {embed} channels leaves {new_embed}, not divisible by "
                f"num_heads={heads}; remove a multiple of {heads} channels (best: the same offsets in each "
                f"head of {layer.head_dim} channels)"
            )
        if not layer._qkv_same_embed_dim and (layer.kdim != embed or layer.vdim != embed):
            raise PruningError(
                f"{what}: kdim={layer.kdim} / vdim={layer.vdim} differ from embed_dim={embed}, so the key/value "
                f"inputs do not carry the embedding channels; pruning this layer is not supported, exclude "
                f"it with ignored_layers"
            )
        keep = keep_indices(embed, remove)
        rows = keep + [embed + i for i in keep] + [2 * embed + i for i in keep]
        if layer._qkv_same_embed_dim:
            slice_tensor(layer.in_proj_weight, 0, rows)
            slice_tensor(layer.in_proj_weight, 1, keep)
        else:
            for weight in (layer.q_proj_weight, layer.k_proj_weight, layer.v_proj_weight):
                slice_tensor(weight, 0, keep)
                slice_tensor(weight, 1, keep)
        slice_tensor(layer.in_proj_bias, 0, rows)
        slice_tensor(layer.bias_k, -1, keep)
        slice_tensor(layer.bias_v, -1, keep)
        out_proj = layer.out_proj
        slice_tensor(out_proj.weight, 0, keep)
        slice_tensor(out_proj.weight, 1, keep)
        slice_tensor(out_proj.bias, 0, keep)
        out_proj.in_features = out_proj.out_features = new_embed
        layer.embed_dim = layer.kdim = layer.vdim = new_embed
        layer.num_heads = heads
        layer.head_dim = new_embed // heads
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return self._prune(layer, idxs, "out")

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return self._prune(layer, idxs, "in")

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.embed_dim

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.embed_dim


def _whole_heads(remove: list[int], head_dim: int) -> list[int] | None:
    """The heads removed, if ``remove`` is exactly a set of whole heads; else ``None``."""
    if head_dim <= 1 or len(remove) % head_dim:
        return None
    heads = sorted({i // head_dim for i in remove})
    if len(heads) * head_dim != len(remove):
        return None
    return heads
