"""Magnitude criteria: a channel matters as much as the size of its weights.

The group score of a channel combines, over every coupled layer, the ``p``-th power of
the ``p``-norm of the weights that removing the channel removes (see
:mod:`~lightning_prune.engine.importance.slices` for which weights those are).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .base import GroupImportance
from .reduction import check_p
from .slices import ChannelSlice, channel_slices

#: Elements per block when summing a weight's powers (512 KB of float32: a block's powers stay in cache).
BLOCK = 1 << 17

__all__ = ["GroupMagnitudeImportance", "GroupNormImportance", "MagnitudeImportance", "SliceImportance"]


class SliceImportance(GroupImportance):
    """A group criterion whose item score is a sum over the item's weight slices.

    Subclasses implement :meth:`slice_scores`. To support a custom layer, override
    :meth:`channel_slices` and return :class:`ChannelSlice` objects for it (defer to
    ``super()`` for every other layer).

    Args:
        bias: also score bias terms.
        group_reduction, normalizer, target_types: see :class:`GroupImportance`.
    """

    def __init__(self, group_reduction: str = "mean", normalizer: str | None = "mean", bias: bool = False,
                 target_types: Sequence[type] | None = None) -> None:
        super().__init__(group_reduction, normalizer, target_types)
        self.bias = bool(bias)

    def channel_slices(self, dep: Any, idxs: Sequence[int]) -> list[ChannelSlice] | None:
        """The weights of each channel of the item (``None``: unknown layer, skipped)."""
        return channel_slices(dep, idxs, bias=self.bias)

    def slice_scores(self, piece: ChannelSlice) -> torch.Tensor | None:
        """``[n]`` scores of one slice's channels, or ``None`` if the slice has no data."""
        raise NotImplementedError

    def item_scores(self, dep: Any, idxs: Sequence[int]) -> torch.Tensor | None:
        pieces = self.channel_slices(dep, idxs)
        if not pieces:
            return None
        total: torch.Tensor | None = None
        for piece in pieces:
            s = self.slice_scores(piece)
            if s is None:
                continue
            s = s.to("cpu", torch.float64)
            total = s if total is None else total + s
        return total


class GroupMagnitudeImportance(SliceImportance):
    """Group magnitude: ``sum |w|^p`` over each channel's weights in every coupled layer.

    The classic L1/L2-norm filter criterion (Li et al., 2017), extended to the whole
    group (DepGraph, Fang et al., 2023): a channel whose removal deletes large weights
    anywhere in the group is kept. Per-layer scores are combined with
    ``group_reduction`` and rescaled with ``normalizer``.

    Args:
        p: the norm (1 for L1, 2 for L2); the score is the norm raised to ``p``.
        group_reduction: ``"mean"``, ``"sum"``, ``"max"``, ``"prod"`` or ``"first"``.
        normalizer: ``"mean"``, ``"sum"``, ``"max"``, ``"gaussian"``, ``"lamp"`` or ``None``.
        bias: also count bias terms.
        target_types: only layers of these classes count (default: every known layer).
    """

    def __init__(self, p: float = 2, group_reduction: str = "mean", normalizer: str | None = "mean",
                 bias: bool = False, target_types: Sequence[type] | None = None) -> None:
        super().__init__(group_reduction, normalizer, bias, target_types)
        self.p = check_p(p)

    def slice_scores(self, piece: ChannelSlice) -> torch.Tensor:
        shared = self._shared_sums(piece)
        if shared is not None and piece.exclude is None:
            return shared.clone()
        values = piece.gather(apply_exclude=False)
        if shared is not None:
            scores = shared
        elif values.is_contiguous():
            scores = torch.linalg.vector_norm(values, ord=self.p, dim=1).double().pow(self.p)
        else:
            # A view along an inner dim (input channels) is strided: vector_norm's row
            # reduction is then much slower than elementwise powers and a sum.
            scores = self._powered(values).sum(1).double()
        if piece.exclude is not None and values.shape[0]:
            # subtract the few excluded entries (distinct per row) instead of zeroing a
            # copy of the whole matrix
            dropped = values.gather(1, piece.exclude.to(values.device))
            scores = (scores - self._powered(dropped).sum(1).double()).clamp_min(0.0)
        return scores

    def _shared_sums(self, piece: ChannelSlice) -> torch.Tensor | None:
        """Inside a scoring pass: ``sum |w|^p`` over every row of dim 0 or dim 1 of a weight.

        Both come from one pass over the weight, cached for the pass: the weight's
        outputs are scored in one group and its inputs in another, and the input side
        alone (a strided reduction) cost twice the output side.
        """
        cache, dim, tensor = self.pass_cache, piece.dim, piece.tensor
        if cache is None or dim not in (0, 1) or tensor.dim() < 2:
            return None
        key = ("magnitude_sums", id(tensor), self.p)
        hit = cache.get(key)
        if hit is None or hit[0] is not tensor or hit[1] != tensor.shape:
            hit = (tensor, tensor.shape, self._dim_sums(tensor))
            cache[key] = hit
        sums = hit[2][dim]
        if piece.covers_all():
            return sums
        # channel k owns rows rows[k]: its sum is the sum of theirs (q/k/v rows of attention)
        rows = piece.rows.to(sums.device)
        return sums[rows.reshape(-1)].reshape(rows.shape).sum(1)

    def _dim_sums(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``sum |w|^p`` per index of dim 0 and per index of dim 1, in float64.

        The weight is read as a 2-D ``[dim 0, everything else]`` matrix, in blocks of
        rows of about :data:`BLOCK` elements, so each block's powers are still in cache
        when both its row sums and its column sums read them. Column sums over the
        flattened ``dim 1 x kernel`` features are folded to dim 1 at the end: reducing a
        3-D block over dims ``(0, 2)`` directly is slower, and powers of a whole large
        weight are a fresh temporary whose page faults make scoring times vary.
        """
        x = tensor.detach().reshape(tensor.shape[0], -1)
        step = max(1, BLOCK // max(1, x.shape[1]))
        rows: list[torch.Tensor] = []
        cols = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        for start in range(0, x.shape[0], step):
            powered = self._powered(x[start:start + step].float())
            rows.append(powered.sum(1))
            cols += powered.sum(0)
        per_input = x.shape[1] // tensor.shape[1] if tensor.shape[1] else 1
        if per_input > 1:
            cols = cols.view(tensor.shape[1], per_input).sum(1)
        row_sums = rows[0] if len(rows) == 1 else torch.cat(rows) if rows else x.new_zeros(0)
        return row_sums.double(), cols

    def _powered(self, values: torch.Tensor) -> torch.Tensor:
        return values * values if self.p == 2 else values.abs().pow(self.p)


class MagnitudeImportance(GroupMagnitudeImportance):
    """Torch-Pruning's name for :class:`GroupMagnitudeImportance` (same arguments)."""


class GroupNormImportance(GroupMagnitudeImportance):
    """Torch-Pruning's older name for :class:`GroupMagnitudeImportance` (same arguments)."""
