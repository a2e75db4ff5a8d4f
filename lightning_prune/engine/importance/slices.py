"""Which weights belong to which channel: the tensor slices behind each group item.

Weight-based criteria (magnitude, Taylor, Hessian, FPGM) all ask the same question of a
group item: *for each of its channels, which weights does removing that channel
remove?* This module answers it once, for every layer type the engine prunes, so each
criterion is only a formula over those weights.

The answer is a list of :class:`ChannelSlice`. A slice names one tensor, a way to view it
as a 2-D matrix, and for each channel of the item the rows of that matrix that belong to
the channel. The same view applies to the weight, its ``.grad`` and any per-parameter
statistic of the same shape, which is how Taylor and Hessian reuse it.

Rule: a channel's slices in a layer are the weights that pruning that channel removes
from that layer (bias terms only when asked). Two exceptions keep the sums honest:

* grouped convs: input channel ``i`` is read only by the filters of its own group, so
  its weights are ``weight[g*out_per_group:(g+1)*out_per_group, i % in_per_group]``,
  not the whole shared column (which also holds other groups' weights);
* depthwise convs: an input channel *is* the output channel, so the in-item is skipped
  and the out-item scores the filter once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..indices import long_tensor
from ..layers import is_depthwise_conv

__all__ = ["ChannelSlice", "along", "channel_slices", "grouped", "item_key", "is_out_item", "norm_layer_types"]

View = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ChannelSlice:
    """Rows ``rows[k]`` of ``view(tensor)`` are the weights of channel ``k`` of an item.

    Attributes:
        tensor: the parameter or buffer that holds the weights.
        view: maps ``tensor`` (or anything of its shape: its grad, a statistic) to a 2-D
            matrix ``[rows, features]``.
        rows: ``LongTensor[n, r]``; each channel owns ``r`` rows (3 for the packed q/k/v
            of attention, one per gate for an LSTM, usually 1). Read-only: it may be the
            shared :func:`full_rows` tensor.
        exclude: optional ``LongTensor[n, q]`` of positions in channel ``k``'s gathered
            ``r * features`` values to leave out. A layer whose channel owns both a row
            and a column of one matrix (attention, recurrent weights) lists the crossing
            entries once, in the row slice, and excludes them from the column slice.
    """

    tensor: torch.Tensor
    view: View
    rows: torch.Tensor
    exclude: torch.Tensor | None = None

    def gather(self, like: torch.Tensor | None = None, apply_exclude: bool = True) -> torch.Tensor:
        """``[n, r * features]`` float32 values of ``like`` (default: the tensor itself).

        Detached, and it may share memory with the weight: never modify it in place. With
        ``apply_exclude=False`` the excluded entries keep their values (a criterion that
        can subtract their contribution saves a full copy of the matrix).
        """
        source = self.tensor if like is None else like
        matrix = self.view(source.detach())
        rows = self.rows.to(matrix.device)
        n = rows.shape[0]
        flat = rows.reshape(-1)
        in_order = flat.numel() == matrix.shape[0] and (
            _is_full_rows(rows) or bool((flat == torch.arange(flat.numel(), device=flat.device)).all()))
        if in_order:
            values = matrix.reshape(n, -1).float()  # every row, in order: no copy (may be strided)
        else:
            values = matrix.index_select(0, flat).reshape(n, -1).float()
        if apply_exclude and self.exclude is not None and n:
            values = values.scatter(1, self.exclude.to(values.device), 0.0)
        return values

    @property
    def dim(self) -> int | None:
        """The tensor dim whose entries are the rows, for an :func:`along` view (else ``None``)."""
        return getattr(self.view, "dim", None)

    def covers_all(self) -> bool:
        """One row per channel, every row of the view in order (no gather needed)."""
        rows, dim = self.rows, self.dim
        if dim is None or rows.dim() != 2 or rows.shape[1] != 1 or rows.shape[0] != self.tensor.shape[dim]:
            return False
        if _is_full_rows(rows):
            return True
        return bool((rows.reshape(-1) == torch.arange(rows.shape[0], device=rows.device)).all())

    def matrix(self, like: torch.Tensor | None = None) -> torch.Tensor:
        """The whole 2-D view (all channels of the layer), float32."""
        source = self.tensor if like is None else like
        return self.view(source.detach()).float()


def along(dim: int) -> View:
    """View with dim ``dim`` as rows and everything else flattened into features."""

    def view(t: torch.Tensor) -> torch.Tensor:
        return t.movedim(dim, 0).reshape(t.shape[dim], -1)

    view.dim = dim  # read by ChannelSlice.dim
    return view


def grouped(groups: int) -> View:
    """View of a ``[G*a, b, *k]`` weight whose rows are the channels ``g*b + j`` of dim 1.

    For a conv weight ``[out, in/G, *k]`` row ``i`` holds the weights that read input
    channel ``i`` (only the filters of its own group); for a transposed conv weight
    ``[in, out/G, *k]`` row ``j`` holds the weights that write output channel ``j``.
    """

    def view(t: torch.Tensor) -> torch.Tensor:
        a, b = t.shape[0] // groups, t.shape[1]
        return t.reshape(groups, a, b, -1).transpose(1, 2).reshape(groups * b, -1)

    return view


_FULL_ROWS: dict[int, torch.Tensor] = {}


def full_rows(n: int) -> torch.Tensor:
    """``[n, 1]`` rows ``0..n-1``, one shared tensor per ``n`` (read it, never write it).

    An item that lists every channel of its layer in order (most items of a full group)
    gets this tensor, so scoring it needs neither the conversion of its index list nor
    a comparison with ``arange`` to see that it covers the whole weight.
    """
    rows = _FULL_ROWS.get(n)
    if rows is None:
        rows = _FULL_ROWS[n] = torch.arange(n).reshape(n, 1)
    return rows


def _is_full_rows(rows: torch.Tensor) -> bool:
    return rows.dim() == 2 and rows is _FULL_ROWS.get(rows.shape[0])


def _rows(idxs: Sequence[int], offsets: Sequence[int] = (0,)) -> torch.Tensor:
    """``[n, len(offsets)]`` rows ``offset + i`` for every ``i`` in ``idxs``."""
    n = len(idxs)
    if getattr(idxs, "ordered", False) and n and idxs[0] == 0 and idxs[-1] == n - 1:
        base = full_rows(n)  # strictly increasing from 0 to n-1: exactly 0..n-1
    else:
        base = long_tensor(idxs).reshape(-1, 1)
    if len(offsets) == 1 and offsets[0] == 0:
        return base
    return base + long_tensor(list(offsets)).reshape(1, -1)


def _frozen_bn_type() -> type | None:
    # A FrozenBatchNorm2d instance implies torchvision is loaded; never import it here.
    misc = sys.modules.get("torchvision.ops.misc")
    return getattr(misc, "FrozenBatchNorm2d", None)


def norm_layer_types(batchnorm_only: bool = False) -> tuple[type, ...]:
    """Norm layers whose per-channel ``weight`` is a scale (gamma)."""
    types: list[type] = [nn.modules.batchnorm._BatchNorm]
    frozen = _frozen_bn_type()
    if frozen is not None:
        types.append(frozen)
    if not batchnorm_only:
        types += [nn.modules.instancenorm._InstanceNorm, nn.LayerNorm, nn.GroupNorm]
        if hasattr(nn, "RMSNorm"):
            types.append(nn.RMSNorm)
    return tuple(types)


def _handler_name(dep: Any) -> str:
    return getattr(dep.handler, "__name__", "")


def is_out_item(dep: Any) -> bool:
    """Whether the item removes output channels (unwrapped parameters count as outputs)."""
    return "_in_channels" not in _handler_name(dep)


def _is_param_item(dep: Any) -> bool:
    return isinstance(dep.target.module, torch.Tensor) and not isinstance(dep.target.module, nn.Module)


def _coupled(module: Any) -> bool:
    """Layers whose input channel ``i`` is their output channel ``i`` (score once)."""
    return isinstance(module, norm_layer_types() + (nn.PReLU, nn.Embedding, nn.MultiheadAttention))


def item_key(dep: Any) -> tuple:
    """Identity of the weights an item scores; a second item with the same key is skipped.

    A coupled layer (a norm, attention, an embedding) can appear as both an in- and an
    out-item of one group; both name the same weights, which must count once.
    """
    module = dep.target.module
    if _is_param_item(dep):
        return (id(module), dep.target.pruning_dim)
    if _coupled(module):
        return (id(module),)
    return (id(module), is_out_item(dep))


def channel_slices(dep: Any, idxs: Sequence[int], bias: bool = False) -> list[ChannelSlice] | None:
    """The weights of each channel ``idxs[k]`` of the item, or ``None`` for unknown layers.

    Args:
        dep: the item's :class:`~lightning_prune.engine.Dependency`.
        idxs: the item's channel indices in the target layer.
        bias: also return bias terms (and other additive per-channel tensors).

    Returns:
        Slices whose ``rows`` have ``len(idxs)`` rows each. An empty list means the item
        is known but has no weights here (e.g. a norm with ``affine=False``); ``None``
        means the layer type is unknown and the criterion should skip the item.
    """
    module = dep.target.module
    out = is_out_item(dep)
    rows = _rows(idxs)
    if _is_param_item(dep):
        dim = dep.target.pruning_dim if dep.target.pruning_dim is not None else 0
        return [ChannelSlice(module, along(dim), rows)]
    if isinstance(module, nn.modules.conv._ConvNd):
        return _conv(module, out, rows, bias)
    if isinstance(module, nn.Linear):
        found = [ChannelSlice(module.weight, along(0 if out else 1), rows)]
        if out and bias and module.bias is not None:
            found.append(ChannelSlice(module.bias, along(0), rows))
        return found
    if isinstance(module, nn.MultiheadAttention):
        return _attention(module, idxs, bias)
    if isinstance(module, nn.modules.rnn.RNNBase):
        return _rnn(module, out, idxs, bias)
    if isinstance(module, nn.Embedding):
        return [ChannelSlice(module.weight, along(1), rows)]
    if isinstance(module, nn.PReLU):
        if module.weight.numel() <= 1:
            return []
        return [ChannelSlice(module.weight, along(0), rows)]
    if isinstance(module, norm_layer_types()):
        found = []
        for name in ("weight", "bias") if bias else ("weight",):
            t = getattr(module, name, None)
            if isinstance(t, torch.Tensor) and t.dim() == 1:
                found.append(ChannelSlice(t, along(0), rows))
        return found
    return None


def _conv(module: nn.modules.conv._ConvNd, out: bool, rows: torch.Tensor, bias: bool) -> list[ChannelSlice]:
    groups = module.groups
    depthwise = is_depthwise_conv(module)
    if not out and depthwise:
        return []  # the out-item scores these filters
    if module.transposed:
        # weight [in, out/groups, *k]: inputs are rows, outputs are (per group) columns.
        view = along(0) if not out else (along(1) if groups == 1 else grouped(groups))
    else:
        # weight [out, in/groups, *k]: outputs are rows, inputs are (per group) columns.
        view = along(0) if out else (along(1) if groups == 1 else grouped(groups))
    found = [ChannelSlice(module.weight, view, rows)]
    if out and bias and module.bias is not None:
        found.append(ChannelSlice(module.bias, along(0), rows))
    return found


def _attention(module: nn.MultiheadAttention, idxs: Sequence[int], bias: bool) -> list[ChannelSlice]:
    """Embedding channel ``i``: q/k/v rows ``i, E+i, 2E+i``, input column ``i``, out_proj row/column ``i``."""
    e = module.embed_dim
    one = _rows(idxs)
    qkv = _rows(idxs, (0, e, 2 * e))
    found: list[ChannelSlice] = []
    if module._qkv_same_embed_dim:
        found += [ChannelSlice(module.in_proj_weight, along(0), qkv),
                  ChannelSlice(module.in_proj_weight, along(1), one, exclude=qkv)]
    else:
        # kdim / vdim differ from embed_dim: the key and value projections' columns read the
        # key and value inputs, other channels than the embedding's; only their rows are its
        found += [ChannelSlice(module.q_proj_weight, along(0), one),
                  ChannelSlice(module.q_proj_weight, along(1), one, exclude=one)]
        found += [ChannelSlice(w, along(0), one) for w in (module.k_proj_weight, module.v_proj_weight)]
    w = module.out_proj.weight
    found += [ChannelSlice(w, along(0), one), ChannelSlice(w, along(1), one, exclude=one)]
    if bias:
        if module.in_proj_bias is not None:
            found.append(ChannelSlice(module.in_proj_bias, along(0), qkv))
        if module.out_proj.bias is not None:
            found.append(ChannelSlice(module.out_proj.bias, along(0), one))
        for t in (module.bias_k, module.bias_v):
            if t is not None:
                found.append(ChannelSlice(t, along(t.dim() - 1), one))
    return found


_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _rnn(module: nn.modules.rnn.RNNBase, out: bool, idxs: Sequence[int], bias: bool) -> list[ChannelSlice] | None:
    """Hidden unit ``i``: its rows in every gate of every layer and direction, and the
    columns that read it (``weight_hh`` column ``i``, the next layer's input columns)."""
    if getattr(module, "proj_size", 0) > 0 or module.mode not in _GATES:
        return None
    suffixes = ["", "_reverse"] if module.bidirectional else [""]
    if not out:
        return [ChannelSlice(getattr(module, f"weight_ih_l0{s}"), along(1), _rows(idxs)) for s in suffixes]
    h = module.hidden_size
    gates = _GATES[module.mode]
    gate_rows = _rows(idxs, [g * h for g in range(gates)])
    one = _rows(idxs)
    next_cols = _rows(idxs, (0, h)) if module.bidirectional else one
    # Column slices hold gates*h values per column; skip the entries already in gate_rows.
    col_exclude = gate_rows
    next_exclude = torch.cat([gate_rows + c * gates * h for c in range(next_cols.shape[1])], 1)
    found: list[ChannelSlice] = []
    for layer in range(module.num_layers):
        for s in suffixes:
            w_ih = getattr(module, f"weight_ih_l{layer}{s}")
            w_hh = getattr(module, f"weight_hh_l{layer}{s}")
            found += [ChannelSlice(w_ih, along(0), gate_rows), ChannelSlice(w_hh, along(0), gate_rows),
                      ChannelSlice(w_hh, along(1), one, exclude=col_exclude)]
            if layer > 0:
                found.append(ChannelSlice(w_ih, along(1), next_cols, exclude=next_exclude))
            if bias:
                for name in (f"bias_ih_l{layer}{s}", f"bias_hh_l{layer}{s}"):
                    b = getattr(module, name, None)
                    if b is not None:
                        found.append(ChannelSlice(b, along(0), gate_rows))
    return found
