"""Other criteria: BatchNorm scales, LAMP, FPGM (geometric median) and random scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .base import GroupImportance, Importance
from .magnitude import GroupMagnitudeImportance
from .reduction import check_p, finalize
from .slices import channel_slices, is_out_item, norm_layer_types

__all__ = ["BNScaleImportance", "FPGMImportance", "LAMPImportance", "RandomImportance"]


class BNScaleImportance(GroupMagnitudeImportance):
    """Network slimming (Liu et al., 2017): a channel matters as much as its BN ``|gamma|``.

    Scores ``|weight|`` of the BatchNorm-like layers of the group (``BatchNorm1d/2d/3d``,
    ``SyncBatchNorm``, torchvision's ``FrozenBatchNorm2d``). Training with an L1 penalty
    on these scales drives unneeded channels to zero, and this criterion reads them.

    A group without such a layer scores **all zeros**: there is no evidence for its
    channels either way. With global ranking such groups would be pruned first, so
    exclude them (``ignored_layers``) or use a magnitude criterion for models without
    BatchNorm. Pass ``target_types`` to read other norm scales too (e.g.
    ``[nn.LayerNorm, nn.GroupNorm]``).

    Args:
        group_reduction, normalizer: see :class:`~.base.GroupImportance`.
        target_types: the layers whose ``weight`` is read (default: BatchNorm-like).
    """

    def __init__(self, group_reduction: str = "mean", normalizer: str | None = "mean",
                 target_types: Sequence[type] | None = None) -> None:
        super().__init__(p=1, group_reduction=group_reduction, normalizer=normalizer, bias=False,
                         target_types=target_types)
        self._default_types = target_types is None

    def wants(self, dep: Any) -> bool:
        if self._default_types:  # resolved per call: FrozenBatchNorm2d exists once torchvision loads
            return isinstance(dep.target.module, norm_layer_types(batchnorm_only=True))
        return super().wants(dep)


class LAMPImportance(GroupMagnitudeImportance):
    """Layer-Adaptive Magnitude-based Pruning (Lee et al., 2021).

    Group magnitude, then each score is divided by the sum of all scores of the group
    that are at least as large. The largest channel scores 1, the order within the group
    is kept, and scores become comparable across groups of different sizes, which is
    what global pruning needs.

    Args:
        p, group_reduction, bias, target_types: as for :class:`GroupMagnitudeImportance`.
    """

    def __init__(self, p: float = 2, group_reduction: str = "mean", bias: bool = False,
                 target_types: Sequence[type] | None = None) -> None:
        super().__init__(p=p, group_reduction=group_reduction, normalizer="lamp", bias=bias,
                         target_types=target_types)


_FILTER_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


class FPGMImportance(GroupImportance):
    """Filter Pruning via Geometric Median (He et al., 2019).

    A filter close to the geometric median of its layer's filters can be represented by
    the others, so it is redundant. The score of an output channel of a conv or linear
    layer is the sum of its ``p``-norm distances to all other filters of the same layer
    (higher = more distinct = more important). Only out-channel items of Conv,
    ConvTranspose and Linear layers count; the per-layer scores are then reduced and
    normalized like the other group criteria.

    Args:
        p: the distance norm (2: Euclidean).
        group_reduction, normalizer: see :class:`~.base.GroupImportance`.
    """

    def __init__(self, p: float = 2, group_reduction: str = "mean", normalizer: str | None = "mean") -> None:
        super().__init__(group_reduction, normalizer)
        self.p = check_p(p)

    def wants(self, dep: Any) -> bool:
        return isinstance(dep.target.module, _FILTER_LAYERS) and is_out_item(dep)

    def item_scores(self, dep: Any, idxs: Sequence[int]) -> torch.Tensor | None:
        pieces = channel_slices(dep, idxs)
        if not pieces:
            return None
        piece = pieces[0]  # the weight; bias is never part of a filter here
        filters = piece.matrix()
        mine = filters.index_select(0, piece.rows[:, 0].to(filters.device))
        return torch.cdist(mine, filters, p=self.p).sum(1)


class RandomImportance(Importance):
    """Uniform random scores in ``[0, 1)``: the baseline every criterion must beat.

    Args:
        seed: seed of the private generator, so results repeat; ``None`` seeds from
            torch's global generator (repeatable under ``torch.manual_seed``).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._generator = torch.Generator()
        if seed is None:
            self._generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        else:
            self._generator.manual_seed(int(seed))

    def __call__(self, group: Any) -> torch.Tensor:
        n = len(group[0].idxs) if len(group) else 0
        return finalize(torch.rand(n, generator=self._generator, dtype=torch.float64), group)
