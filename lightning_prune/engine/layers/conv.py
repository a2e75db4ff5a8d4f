"""Pruners for ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``, plain, grouped and depthwise.

Weight layouts differ: a conv stores ``[out, in/groups, *k]``, a transposed conv stores
``[in, out/groups, *k]``. The dim that holds *full* channel indices is sliced with the
indices themselves; the dim that holds *per-group offsets* is sliced with offsets, which
is only possible when every group loses the same offsets (otherwise the groups would end
up with different widths and ``groups`` would no longer divide the channel count).

This module also hosts the small helpers shared by the other pruner modules
(:func:`describe_layer`, :func:`uniform_group_offsets`, :func:`whole_groups`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import LayerPruner, PruningError, keep_indices, normalize_idxs, slice_tensor

__all__ = [
    "ConvPruner",
    "ConvTransposePruner",
    "DepthwiseConvPruner",
    "describe_layer",
    "is_depthwise_conv",
    "uniform_group_offsets",
    "whole_groups",
]


_WIDTH_ATTRS = ("embed_dim", "num_heads", "kdim", "vdim", "batch_first")


class CallLabel:
    """``"prune_conv_out_channels on Conv2d(...)"`` for error messages, built only when shown.

    Every pruning call names itself for its errors; describing the layer (its
    ``extra_repr``) eagerly cost more than the slicing of a small layer.
    """

    __slots__ = ("_fn", "_direction", "_layer", "_suffix")

    def __init__(self, fn: str, direction: str, layer: object, suffix: str = "") -> None:
        self._fn, self._direction, self._layer, self._suffix = fn, direction, layer, suffix

    def __str__(self) -> str:
        return f"prune_{self._fn}_{self._direction}_channels{self._suffix} on {describe_layer(self._layer)}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    __repr__ = __str__


def describe_layer(layer: object) -> str:
    """A one-line description such as ``Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1))``.

    Error messages name the layer this way so the user can find it in ``print(model)``.
    """
    name = type(layer).__name__
    if isinstance(layer, nn.Module):
        extra = layer.extra_repr().replace("\n", ", ")
        if not extra:  # e.g. MultiheadAttention prints its sizes nowhere
            extra = ", ".join(
                f"{attr}={getattr(layer, attr)}" for attr in _WIDTH_ATTRS if hasattr(layer, attr)
            )
        return f"{name}({extra})"
    if isinstance(layer, torch.Tensor):
        return f"{name}(shape={tuple(layer.shape)})"
    return name


def uniform_group_offsets(remove: Sequence[int], size: int, groups: int, what: object, kind: str) -> list[int]:
    """The within-group offsets removed by ``remove``, which must be the same in every group.

    Channel ``c`` of ``size`` channels split into ``groups`` equal groups is offset
    ``c % (size // groups)`` of group ``c // (size // groups)``.
    """
    per = size // groups
    offsets: list[set[int]] = [set() for _ in range(groups)]
    for c in remove:
        offsets[c // per].add(c % per)
    first = offsets[0]
    for g, offs in enumerate(offsets):
        if offs != first:
            raise PruningError(
                f"{what}: {kind} idxs must remove the same positions in each of the {groups} groups "
                f"(group 0 loses offsets {sorted(first)}, group {g} loses {sorted(offs)}); remove the "
                f"same offsets in every group of {per} channels, or exclude this layer with ignored_layers"
            )
    return sorted(first)


def whole_groups(remove: Sequence[int], size: int, groups: int) -> list[int] | None:
    """The groups that ``remove`` covers entirely, or ``None`` if it splits any group."""
    per = size // groups
    removed = set(remove)
    hit = sorted({c // per for c in removed})
    for g in hit:
        if any(g * per + b not in removed for b in range(per)):
            return None
    return hit


def is_depthwise_conv(layer: nn.Module) -> bool:
    """A depthwise conv has one group per input channel (``groups == in_channels > 1``)."""
    return layer.groups > 1 and layer.groups == layer.in_channels


class ConvPruner(LayerPruner):
    """Prunes ``nn.Conv1d/2d/3d`` (and, via ``layer.transposed``, transposed convs).

    Depthwise convs are dispatched to the depthwise logic of :class:`DepthwiseConvPruner`
    so that the generic functions are always safe to call.
    """

    TARGET_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    NAME = "conv"
    out_channel_dim = 1
    in_channel_dim = 1

    def _what(self, layer: nn.Module, direction: str) -> CallLabel:
        return CallLabel(self.NAME, direction, layer)

    # ------------------------------------------------------------------ protocol
    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        what = self._what(layer, "out")
        if is_depthwise_conv(layer):
            return _prune_depthwise_by_outputs(layer, idxs, what)
        remove = normalize_idxs(idxs, layer.out_channels, what)
        if not remove:
            return layer
        groups = layer.groups
        offsets = remove
        if groups > 1:
            offsets = uniform_group_offsets(remove, layer.out_channels, groups, what, "out-channel")
        keep = keep_indices(layer.out_channels, remove)
        if layer.transposed:
            slice_tensor(layer.weight, 1, keep_indices(layer.out_channels // groups, offsets))
        else:
            slice_tensor(layer.weight, 0, keep)
        slice_tensor(layer.bias, 0, keep)
        layer.out_channels = len(keep)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        what = self._what(layer, "in")
        if is_depthwise_conv(layer):
            return _prune_depthwise_by_inputs(layer, idxs, what)
        remove = normalize_idxs(idxs, layer.in_channels, what)
        if not remove:
            return layer
        groups = layer.groups
        offsets = remove
        if groups > 1:
            offsets = uniform_group_offsets(remove, layer.in_channels, groups, what, "in-channel")
        keep = keep_indices(layer.in_channels, remove)
        if layer.transposed:
            slice_tensor(layer.weight, 0, keep)
        else:
            slice_tensor(layer.weight, 1, keep_indices(layer.in_channels // groups, offsets))
        layer.in_channels = len(keep)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.in_channels

    def couples(self, layer: nn.Module) -> bool:
        # Only a multiplier-1 depthwise conv maps input channel i to output channel i.
        return is_depthwise_conv(layer) and layer.out_channels == layer.in_channels


class ConvTransposePruner(ConvPruner):
    """Prunes ``nn.ConvTranspose1d/2d/3d``; the weight is ``[in, out/groups, *k]``."""

    TARGET_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    NAME = "conv_transpose"


class DepthwiseConvPruner(ConvPruner):
    """Prunes depthwise convs (``groups == in_channels``), keeping ``groups == in_channels``.

    With a channel multiplier ``m = out_channels // in_channels``, output ``k*m + j``
    belongs to input ``k``; removing an input removes its ``m`` outputs, so output idxs
    must cover whole groups when ``m > 1``.
    """

    TARGET_TYPES = ()
    NAME = "depthwise_conv"

    def _check(self, layer: nn.Module, what: object) -> None:
        if not is_depthwise_conv(layer):
            raise PruningError(
                f"{what}: not a depthwise conv (groups={layer.groups}, in_channels={layer.in_channels}); "
                f"use prune_conv_out_channels / prune_conv_in_channels instead"
            )

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        what = self._what(layer, "out")
        self._check(layer, what)
        return _prune_depthwise_by_outputs(layer, idxs, what)

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        what = self._what(layer, "in")
        self._check(layer, what)
        return _prune_depthwise_by_inputs(layer, idxs, what)

    def couples(self, layer: nn.Module) -> bool:
        return layer.out_channels == layer.in_channels


def _prune_depthwise_by_outputs(layer: nn.Module, idxs: Sequence[int], what: object) -> nn.Module:
    remove = normalize_idxs(idxs, layer.out_channels, what)
    mult = layer.out_channels // layer.in_channels
    if mult == 1:
        return _prune_depthwise_inputs(layer, remove)
    groups = whole_groups(remove, layer.out_channels, layer.in_channels)
    if groups is None:
        raise PruningError(
            f"{what}: this depthwise conv has {mult} outputs per input channel, so out-channel idxs "
            f"must remove all {mult} outputs of an input channel together (outputs k*{mult}..k*{mult}+"
            f"{mult - 1} for input k); remove whole groups or prune the input channels instead"
        )
    return _prune_depthwise_inputs(layer, groups)


def _prune_depthwise_by_inputs(layer: nn.Module, idxs: Sequence[int], what: object) -> nn.Module:
    remove = normalize_idxs(idxs, layer.in_channels, what)
    return _prune_depthwise_inputs(layer, remove)


def _prune_depthwise_inputs(layer: nn.Module, remove_inputs: list[int]) -> nn.Module:
    """Remove input channels (validated) and their outputs from a depthwise conv."""
    if not remove_inputs:
        return layer
    mult = layer.out_channels // layer.in_channels
    keep_in = keep_indices(layer.in_channels, remove_inputs)
    keep_out = [k * mult + j for k in keep_in for j in range(mult)]
    # conv weight [in*m, 1, *k] is indexed by output; transposed weight [in, m, *k] by input.
    slice_tensor(layer.weight, 0, keep_in if layer.transposed else keep_out)
    slice_tensor(layer.bias, 0, keep_out)
    layer.in_channels = len(keep_in)
    layer.out_channels = len(keep_out)
    layer.groups = len(keep_in)
    return layer
