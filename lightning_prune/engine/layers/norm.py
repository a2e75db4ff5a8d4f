"""Pruners for normalization layers, whose input channels *are* their output channels.

Covers ``BatchNorm1d/2d/3d``, ``SyncBatchNorm``, ``InstanceNorm1d/2d/3d``, torchvision's
``FrozenBatchNorm2d`` (only if torchvision imports), ``LayerNorm``, ``RMSNorm`` (if this
torch has it) and ``GroupNorm``. Each slices its per-channel parameters and running-stat
buffers (those that exist: ``affine=False`` and ``track_running_stats=False`` leave them
``None``) and updates its width attribute so the layer still runs.

:class:`CoupledPruner` is the shared base, also used by PReLU and Embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import LayerPruner, PruningError, keep_indices, normalize_idxs, slice_tensor
from .conv import CallLabel, uniform_group_offsets, whole_groups

__all__ = [
    "BatchNormPruner",
    "CoupledPruner",
    "FrozenBatchNormPruner",
    "GroupNormPruner",
    "InstanceNormPruner",
    "LayerNormPruner",
    "RMSNormPruner",
    "frozen_batchnorm_type",
]


class CoupledPruner(LayerPruner):
    """Base for layers with one set of channels: pruning inputs prunes outputs, and back.

    Subclasses say which tensors hold channels (:meth:`channel_tensors`), may refuse a
    prune in :meth:`plan` (called before anything changes), and update their width
    attributes in :meth:`resize`.
    """

    NAME = ""
    couples_in_out = True

    def channel_tensors(self, layer: nn.Module) -> list[tuple[torch.Tensor | None, int]]:
        raise NotImplementedError

    def plan(self, layer: nn.Module, remove: list[int], what: object) -> object:
        """Validate a prune of ``remove``; return data for :meth:`resize`. Must not mutate."""
        return None

    def resize(self, layer: nn.Module, size: int, plan: object) -> None:
        raise NotImplementedError

    def get_in_channels(self, layer: nn.Module) -> int | None:
        return self.get_out_channels(layer)

    def _prune(self, layer: nn.Module, idxs: Sequence[int], direction: str) -> nn.Module:
        what = CallLabel(self.NAME, direction, layer)
        size = self.get_out_channels(layer)
        if size is None:
            return layer
        remove = normalize_idxs(idxs, size, what)
        if not remove:
            return layer
        plan = self.plan(layer, remove, what)
        keep = keep_indices(size, remove)
        for tensor, dim in self.channel_tensors(layer):
            slice_tensor(tensor, dim, keep)
        self.resize(layer, len(keep), plan)
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return self._prune(layer, idxs, "out")

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return self._prune(layer, idxs, "in")


class BatchNormPruner(CoupledPruner):
    """``BatchNorm*``/``SyncBatchNorm``: weight, bias, running_mean, running_var along dim 0."""

    TARGET_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    NAME = "batchnorm"

    def channel_tensors(self, layer: nn.Module) -> list[tuple[torch.Tensor | None, int]]:
        names = ("weight", "bias", "running_mean", "running_var")
        return [(getattr(layer, n, None), 0) for n in names]

    def resize(self, layer: nn.Module, size: int, plan: object) -> None:
        layer.num_features = size

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.num_features


class InstanceNormPruner(BatchNormPruner):
    """``InstanceNorm*``: same tensors as BatchNorm (often all ``None``)."""

    TARGET_TYPES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
    NAME = "instancenorm"


class FrozenBatchNormPruner(BatchNormPruner):
    """torchvision's ``FrozenBatchNorm2d``: four buffers and no ``num_features`` attribute."""

    NAME = "frozen_batchnorm"

    def resize(self, layer: nn.Module, size: int, plan: object) -> None:
        if hasattr(layer, "num_features"):
            layer.num_features = size

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(layer.weight.shape[0])


def frozen_batchnorm_type() -> type | None:
    """torchvision's ``FrozenBatchNorm2d``, or ``None`` when torchvision cannot be imported.

    Imported lazily so that the engine works without a usable torchvision.
    """
    try:
        from torchvision.ops.misc import FrozenBatchNorm2d
    except Exception:  # any import failure (not just ImportError) means "not available"
        return None
    return FrozenBatchNorm2d


class LayerNormPruner(CoupledPruner):
    """``LayerNorm``: prunes the first dim of ``normalized_shape``.

    A 1-D ``normalized_shape`` is the input's last dim (the transformer case). A longer one
    (``LayerNorm([C, H, W])`` after a conv) normalizes the input's trailing dims together:
    its channels are the first of them, tensor dim ``-len(normalized_shape)``, and the
    affine ``weight``/``bias`` of shape ``normalized_shape`` are sliced along their dim 0.
    The other normalized dims keep their size (the tracer freezes them).
    """

    TARGET_TYPES = (nn.LayerNorm,)
    NAME = "layernorm"
    out_channel_dim = -1
    in_channel_dim = -1

    def out_channel_dim_of(self, layer: nn.Module) -> int:
        return -max(len(tuple(layer.normalized_shape)), 1)

    def in_channel_dim_of(self, layer: nn.Module) -> int:
        return self.out_channel_dim_of(layer)

    def channel_tensors(self, layer: nn.Module) -> list[tuple[torch.Tensor | None, int]]:
        return [(getattr(layer, "weight", None), 0), (getattr(layer, "bias", None), 0)]

    def resize(self, layer: nn.Module, size: int, plan: object) -> None:
        layer.normalized_shape = (size, *tuple(layer.normalized_shape)[1:])

    def get_out_channels(self, layer: nn.Module) -> int | None:
        shape = tuple(layer.normalized_shape)
        return int(shape[0]) if shape else None


_RMSNorm = getattr(nn, "RMSNorm", None)


class RMSNormPruner(LayerNormPruner):
    """``RMSNorm`` (torch >= 2.4): like LayerNorm, only a weight."""

    TARGET_TYPES = (_RMSNorm,) if _RMSNorm is not None else ()
    NAME = "rmsnorm"


class GroupNormPruner(CoupledPruner):
    """``GroupNorm``: keeps ``num_groups`` or drops whole groups.

    Removing the same offsets from every group keeps the groups equal-sized; removing
    whole groups reduces ``num_groups``. Anything else would leave groups of unequal size,
    which GroupNorm cannot express, so it is refused.
    """

    TARGET_TYPES = (nn.GroupNorm,)
    NAME = "groupnorm"

    def channel_tensors(self, layer: nn.Module) -> list[tuple[torch.Tensor | None, int]]:
        return [(getattr(layer, "weight", None), 0), (getattr(layer, "bias", None), 0)]

    def plan(self, layer: nn.Module, remove: list[int], what: object) -> object:
        groups, channels = layer.num_groups, layer.num_channels
        per = channels // groups
        if per > 1:
            try:
                uniform_group_offsets(remove, channels, groups, what, "channel")
                return groups
            except PruningError:
                pass
        dropped = whole_groups(remove, channels, groups)
        if dropped is not None:
            return groups - len(dropped)
        raise PruningError(
            f"{what}: idxs must either remove the same positions in each of the {groups} groups "
            f"(keeps num_groups) or remove whole groups of {per} channels (reduces num_groups); "
            f"other removals would make the groups unequal"
        )

    def resize(self, layer: nn.Module, size: int, plan: object) -> None:
        layer.num_channels = size
        layer.num_groups = int(plan)

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.num_channels
