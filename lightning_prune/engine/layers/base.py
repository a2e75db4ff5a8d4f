"""The layer-pruner protocol and the one primitive that every pruner uses.

A *layer pruner* knows how to remove output and input channels from one layer type.
Built-in pruners cover torch's layers; a custom layer gets its own pruner, registered
with ``customized_pruners={LayerClass: MyPruner()}``. The protocol is four methods:

* ``prune_out_channels(layer, idxs)`` / ``prune_in_channels(layer, idxs)`` remove the
  channels at ``idxs`` (indices to **remove**, as in Torch-Pruning) and return the layer;
* ``get_out_channels(layer)`` / ``get_in_channels(layer)`` return the current widths.

Two optional class attributes tell the dependency graph how the layer's tensors carry
channels: ``out_channel_dim`` / ``in_channel_dim`` (the channel dim of the layer's output
and first input, default ``1``; ``-1`` for channels-last layers such as ``Linear``), and
``couples_in_out`` (``True`` when input and output channels are the same channels, as in
BatchNorm, LayerNorm or a depthwise conv).

All slicing goes through :func:`slice_tensor`, which keeps every ``nn.Parameter`` the same
Python object (only ``.data`` and ``.grad`` are replaced, so optimizers and user references
stay valid) and reports the slice to the active :mod:`~lightning_prune.engine.history.records`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import PruningError
from ..history.records import active_recorders
from ..indices import KeptIdxs, SortedIdxs, complement, long_tensor
from .session import active_session


def layer_label(layer: nn.Module) -> str:
    return f"{type(layer).__name__}"


def normalize_idxs(idxs: Sequence[int] | torch.Tensor, size: int, what: object) -> list[int]:
    """Validate and sort indices to remove from a dim of ``size`` elements.

    Raises :class:`PruningError` for out-of-range, non-integer or all-removing indices.
    Duplicates are merged (removing a channel twice means removing it once). A
    :class:`~lightning_prune.engine.indices.SortedIdxs` is already sorted and unique: it
    is only range-checked, and returned as is so its kept indices are shared.
    """
    if type(idxs) is SortedIdxs:
        _check_range(idxs, size, what)
        return idxs
    if isinstance(idxs, torch.Tensor):
        if idxs.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16):
            raise PruningError(f"{what}: idxs must be integers, got a {idxs.dtype} tensor")
        idxs = idxs.flatten().tolist()
    if set(map(type, idxs)) - {int}:  # plain ints, the common case, need no conversion
        idxs = [_as_index(i, what) for i in idxs]
    out = sorted(set(idxs))
    _check_range(out, size, what)
    return out


def _check_range(remove: list[int], size: int, what: object) -> None:
    """``remove`` (sorted, unique) lies in ``[0, size)`` and leaves at least one channel."""
    if remove and (remove[0] < 0 or remove[-1] >= size):
        bad = remove[0] if remove[0] < 0 else remove[-1]
        raise PruningError(f"{what}: index {bad} is out of range for {size} channels; pass indices in [0, {size})")
    if len(remove) >= size and size > 0:
        raise PruningError(
            f"{what}: removing all {size} channels would leave zero; remove fewer channels "
            f"or exclude this layer with ignored_layers"
        )


def _as_index(i: object, what: object) -> int:
    """An index as a plain int: numpy integers are fine, bools and anything else are not."""
    if isinstance(i, int) and not isinstance(i, bool):
        return int(i)
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None and isinstance(i, np.integer):
        return int(i)
    raise PruningError(f"{what}: idxs must be integers, got {i!r} ({type(i).__name__})")


def keep_indices(size: int, remove: Sequence[int]) -> list[int]:
    """``range(size)`` without ``remove`` (valid indices), in order."""
    if type(remove) is SortedIdxs:
        return remove.kept(size)
    return complement(size, remove)


def slice_tensor(tensor: torch.Tensor | None, dim: int, keep: Sequence[int]) -> None:
    """Keep only ``keep`` along ``dim`` of ``tensor``, **in place of its data**.

    The tensor object (an ``nn.Parameter`` or a buffer) stays the same object: its
    ``.data`` is replaced, and so is its ``.grad`` if it has one. The slice is reported to
    every active recorder.
    """
    if tensor is None:
        return
    dim = dim % tensor.dim()
    if type(keep) is KeptIdxs:  # shared by the tensors of one prune: one index tensor for all
        index = keep.tensor(tensor.device)
        keep = list(keep)  # records hold plain lists
    else:
        keep = keep.tolist() if isinstance(keep, torch.Tensor) else list(keep)
        if keep and not (type(keep[0]) is int and type(keep[-1]) is int):
            keep = [int(i) for i in keep]  # numpy ints and the like (lists are homogeneous): records hold plain ints
        index = None
    if len(keep) == tensor.shape[dim] and keep == list(range(tensor.shape[dim])):
        return
    session = active_session()
    if session is not None and not session.should_slice(tensor, dim, len(keep)):
        return  # a tied tensor, already cut by another layer of this prune
    if index is None:
        index = long_tensor(keep, tensor.device)
    with torch.no_grad():
        new = torch.index_select(tensor.data, dim, index).contiguous()
        tensor.data = new
        grad = tensor.grad
        if grad is not None and grad.dim() == tensor.dim():
            tensor.grad = torch.index_select(grad, dim, index).contiguous()
    for rec in active_recorders():
        rec.notify(tensor, dim, keep)


@runtime_checkable
class LayerPrunerProtocol(Protocol):
    """What the dependency graph needs of a layer pruner; :class:`LayerPruner` implements it.

    A custom pruner may implement just these four methods without subclassing; the
    optional hooks of :class:`LayerPruner` (channel dims, coupling) then take their defaults.
    """

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module: ...

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module: ...

    def get_out_channels(self, layer: nn.Module) -> int | None: ...

    def get_in_channels(self, layer: nn.Module) -> int | None: ...


class LayerPruner:
    """Base class of the layer-pruner protocol (see the module docstring)."""

    #: Layer types this pruner handles (used by the default registry).
    TARGET_TYPES: tuple[type, ...] = ()
    out_channel_dim: int = 1
    in_channel_dim: int = 1
    couples_in_out: bool = False

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} cannot prune output channels")

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} cannot prune input channels")

    def get_out_channels(self, layer: nn.Module) -> int | None:
        raise NotImplementedError

    def get_in_channels(self, layer: nn.Module) -> int | None:
        raise NotImplementedError

    # --- hooks used by the dependency graph; the defaults fit most layers -------------
    def out_channel_dim_of(self, layer: nn.Module) -> int:
        return self.out_channel_dim

    def in_channel_dim_of(self, layer: nn.Module) -> int:
        return self.in_channel_dim

    def couples(self, layer: nn.Module) -> bool:
        """Whether input channel ``i`` *is* output channel ``i`` for this layer."""
        return self.couples_in_out

    # Aliases so a pruner can be used like Torch-Pruning's ``dep.handler``.
    def __call__(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return self.prune_out_channels(layer, idxs)
