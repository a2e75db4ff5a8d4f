"""The weights of each group, tagged with the unit that owns them, for gradient penalties.

A sparse-training penalty is a function of each unit's weights across every layer of
its group. :func:`group_slices` lists those weights once per layer
(:class:`GroupSlices`, made of :class:`UnitSlice`); :meth:`GroupSlices.unit_norms`
reads the per-unit norms, and :class:`GradientCoefficients` collects ``C`` of
``grad += C * w`` from every group and writes it into the real ``.grad`` tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ...importance.slices import ChannelSlice, channel_slices, item_key

if TYPE_CHECKING:
    from ...graph import Group

__all__ = ["GradientCoefficients", "GroupSlices", "UnitSlice", "group_slices"]


class UnitSlice:
    """One weight slice of a group, ready for fast reads and gradient writes.

    ``units[k]``: the position in ``group.units`` of the unit that owns channel ``k``.
    When the slice is ``along(dim)`` without exclusions (the usual case: a conv or linear
    filter, an input column, a norm scale), ``dim`` is set and channel ``k`` owns the
    indices ``rows[k]`` along that dim: reads are reductions and writes are broadcasts.
    Otherwise ``positions`` / ``channels`` list the flat position of every weight of the
    slice and the channel that owns it.
    """

    __slots__ = ("piece", "units", "dim", "rows", "positions", "channels")

    def __init__(self, piece: ChannelSlice, units: torch.Tensor) -> None:
        t = piece.tensor
        self.piece = piece
        self.units = units.to(t.device)
        self.rows = piece.rows.to(t.device)
        self.dim: int | None = None
        self.positions: torch.Tensor | None = None
        self.channels: torch.Tensor | None = None
        # Where does the view put each weight? Apply it to the flat positions, once.
        probe = torch.arange(t.numel()).view(t.shape)
        matrix = piece.view(probe)
        if piece.exclude is None:
            for d in range(t.dim()):
                if matrix.shape[0] == t.shape[d] and torch.equal(
                        matrix, probe.movedim(d, 0).reshape(t.shape[d], -1)):
                    self.dim = d
                    return
        n = piece.rows.shape[0]
        sel = matrix.index_select(0, piece.rows.reshape(-1)).reshape(n, -1)
        chan = torch.arange(n).view(-1, 1).expand_as(sel)
        if piece.exclude is not None:
            keep = torch.ones_like(sel, dtype=torch.bool)
            keep.scatter_(1, piece.exclude, False)
            sel, chan = sel[keep], chan[keep]
        self.positions = sel.reshape(-1).to(t.device)
        self.channels = chan.reshape(-1).to(t.device)

    def channel_sumsq(self) -> torch.Tensor:
        """``[n]`` float32 sum of squares of each channel's weights."""
        t = self.piece.tensor.detach()
        if self.dim is not None:
            others = [d for d in range(t.dim()) if d != self.dim]
            per_index = torch.linalg.vector_norm(t, 2, dim=others, dtype=torch.float32).pow(2) if others \
                else t.float().pow(2)
            return per_index[self.rows].sum(1)
        values = t.reshape(-1)[self.positions].float().pow(2)
        return torch.zeros(self.rows.shape[0], device=t.device).index_add_(0, self.channels, values)


class GroupSlices:
    """The weight slices of one group (each layer once), each channel tagged with its unit."""

    def __init__(self, group: Group, name: str, entries: list[UnitSlice]) -> None:
        self.group = group
        self.name = name
        self.entries = entries
        self.n_units = len(group.units)

    def unit_norms(self) -> torch.Tensor:
        """``[n_units]`` float32 L2 norm of every unit's weights (all layers of the group)."""
        sums: torch.Tensor | None = None
        for e in self.entries:
            chan = e.channel_sumsq()
            if sums is None:
                sums = torch.zeros(self.n_units, dtype=torch.float32, device=chan.device)
            sums.index_add_(0, e.units.to(sums.device), chan.to(sums.device))
        if sums is None:
            return torch.zeros(self.n_units, dtype=torch.float32)
        return sums.sqrt()

    def add_coefficients(self, acc: GradientCoefficients, unit_coef: torch.Tensor) -> None:
        """Add ``unit_coef[u]`` to the coefficient of every weight owned by unit ``u``."""
        for e in self.entries:
            acc.add(e, unit_coef.to(e.units.device, torch.float32)[e.units])


class GradientCoefficients:
    """Per-tensor elementwise coefficients ``C``; :meth:`apply` does ``grad += C * w`` in place.

    Several slices (of one group or of several groups) may own the same weight, e.g. a conv
    weight belongs to its output channel's group and to its input channel's group; their
    coefficients add up, as the gradients of the penalty terms do. Coefficients of
    ``along(dim)`` slices are kept as one vector per dim and broadcast.
    """

    def __init__(self) -> None:
        self._tensors: dict[int, torch.Tensor] = {}
        self._by_dim: dict[tuple[int, int], torch.Tensor] = {}
        self._dense: dict[int, torch.Tensor] = {}

    def add(self, entry: UnitSlice, chan_coef: torch.Tensor) -> None:
        t = entry.piece.tensor
        if t.grad is None or entry.rows.shape[0] == 0:
            return  # not being trained
        self._tensors[id(t)] = t
        if entry.dim is not None:
            key = (id(t), entry.dim)
            if key not in self._by_dim:
                self._by_dim[key] = torch.zeros(t.shape[entry.dim], dtype=torch.float32, device=t.device)
            per_row = chan_coef.view(-1, 1).expand_as(entry.rows)
            self._by_dim[key].index_add_(0, entry.rows.reshape(-1), per_row.reshape(-1))
            return
        if id(t) not in self._dense:
            self._dense[id(t)] = torch.zeros(t.numel(), dtype=torch.float32, device=t.device)
        self._dense[id(t)].index_add_(0, entry.positions, chan_coef[entry.channels])

    def apply(self) -> None:
        """``grad += C * w`` on the real ``.grad`` tensors, in place."""
        for key, t in self._tensors.items():
            grad = t.grad
            if grad is None:
                continue
            if grad.shape != t.shape:
                raise RuntimeError(
                    f"a gradient of shape {tuple(grad.shape)} belongs to a weight of shape {tuple(t.shape)}; "
                    f"run a new forward/backward pass after pruning before regularize()"
                )
            # Sum the per-dim vectors by broadcasting: a conv weight's coefficient is
            # [out, in, 1, 1], never the size of the weight (unless a dense part exists).
            coef: torch.Tensor | None = self._dense[key].view(t.shape) if key in self._dense else None
            for d in range(t.dim()):
                vec = self._by_dim.get((key, d))
                if vec is not None:
                    shape = [1] * t.dim()
                    shape[d] = -1
                    coef = vec.view(shape) if coef is None else coef + vec.view(shape)
            if coef is not None:
                grad.addcmul_(coef.to(grad.dtype), t.detach())


def _item_units(group: Group, idxs: Any, unit_of: dict[int, int]) -> torch.Tensor:
    units = getattr(idxs, "units", None)
    if units is not None and len(units) == len(idxs):
        return torch.as_tensor(list(units), dtype=torch.long)
    return torch.as_tensor([unit_of.get(int(i), -1) for i in idxs], dtype=torch.long)


def _subset(piece: ChannelSlice, mask: torch.Tensor) -> ChannelSlice:
    exclude = piece.exclude[mask] if piece.exclude is not None else None
    return ChannelSlice(piece.tensor, piece.view, piece.rows[mask], exclude)


def group_slices(group: Group, name: str, bias: bool = False, layer_filter: Any = None) -> GroupSlices:
    """Every weight slice of the group's layers (each layer once), tagged with units."""
    unit_of = {int(r): u for u, unit in enumerate(group.units) for r in unit}
    entries: list[UnitSlice] = []
    seen: set[tuple] = set()
    for dep, idxs in group:
        key = item_key(dep)
        if key in seen or len(idxs) == 0:
            continue
        if layer_filter is not None and not layer_filter(dep.target.module):
            continue
        pieces = channel_slices(dep, idxs, bias=bias)
        if pieces is None:
            continue  # unknown layer: no weights to regularize
        seen.add(key)
        units = _item_units(group, idxs, unit_of)
        ok = (units >= 0) & (units < len(group.units))
        for piece in pieces:
            if not isinstance(piece.tensor, torch.Tensor) or not piece.tensor.is_floating_point():
                continue
            if bool(ok.all()):
                entries.append(UnitSlice(piece, units))
            elif bool(ok.any()):
                entries.append(UnitSlice(_subset(piece, ok), units[ok]))
    return GroupSlices(group, name, entries)

