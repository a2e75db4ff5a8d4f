"""Pruners with a default criterion, and pruners that regularize during sparse training.

:class:`MagnitudePruner` and :class:`RandomPruner` are :class:`MetaPruner` with another
default importance. :class:`BNScalePruner`, :class:`GroupNormPruner` and
:class:`GrowingRegPruner` also add a sparsity penalty to the gradients, so training
pushes the channels that will be pruned towards zero first. The training loop calls

.. code-block:: python

    pruner.update_regularizer()       # once per epoch
    ...
    loss.backward()
    pruner.regularize(model)          # after backward, before optimizer.step()
    optimizer.step()

Every regularizer writes its penalty gradient **in place** into the real ``.grad`` of each
parameter (``grad.add_`` / ``grad.addcmul_``), never into an advanced-indexing copy, so
BatchNorm weights receive it too. Tensors whose ``.grad`` is ``None`` are not being
trained (frozen, or not reached by the loss) and are skipped. Parameter objects are never
replaced. After ``step()`` prunes the model, the regularizer re-reads the groups before
its next use.
``docs/sparse_training.md`` gives the formulas and when to use which.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..graph import Group
from ..importance import BNScaleImportance, GroupMagnitudeImportance, RandomImportance
from ..importance.slices import ChannelSlice, channel_slices, item_key
from .meta import MetaPruner
from .planning import unit_scores

__all__ = ["BNScalePruner", "GroupNormPruner", "GrowingRegPruner", "MagnitudePruner", "RandomPruner"]

_BN = nn.modules.batchnorm._BatchNorm


def _check_nonnegative(name: str, value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _is_affine_bn(module: Any) -> bool:
    return isinstance(module, _BN) and module.affine and isinstance(module.weight, torch.Tensor)


# ---------------------------------------------------------------------- group slices
class _Entry:
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


class _GroupSlices:
    """The weight slices of one group (each layer once), each channel tagged with its unit."""

    def __init__(self, group: Group, name: str, entries: list[_Entry]) -> None:
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

    def add_coefficients(self, acc: _Coefficients, unit_coef: torch.Tensor) -> None:
        """Add ``unit_coef[u]`` to the coefficient of every weight owned by unit ``u``."""
        for e in self.entries:
            acc.add(e, unit_coef.to(e.units.device, torch.float32)[e.units])


class _Coefficients:
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

    def add(self, entry: _Entry, chan_coef: torch.Tensor) -> None:
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


def group_slices(group: Group, name: str, bias: bool = False, layer_filter: Any = None) -> _GroupSlices:
    """Every weight slice of the group's layers (each layer once), tagged with units."""
    unit_of = {int(r): u for u, unit in enumerate(group.units) for r in unit}
    entries: list[_Entry] = []
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
                entries.append(_Entry(piece, units))
            elif bool(ok.any()):
                entries.append(_Entry(_subset(piece, ok), units[ok]))
    return _GroupSlices(group, name, entries)


# ---------------------------------------------------------------------- simple variants
class MagnitudePruner(MetaPruner):
    """:class:`MetaPruner` ranking channels by L2 group magnitude (the default criterion).

    Args:
        importance: another criterion, if given; default ``GroupMagnitudeImportance(p=2)``.
        **kwargs: every argument of :class:`MetaPruner`.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, importance: Any = None, **kwargs: Any) -> None:
        if importance is None:
            importance = GroupMagnitudeImportance(p=2)
        super().__init__(model, example_inputs, importance=importance, **kwargs)


class RandomPruner(MetaPruner):
    """:class:`MetaPruner` removing random channels: the baseline (``RandomImportance()``)."""

    def __init__(self, model: nn.Module, example_inputs: Any, importance: Any = None, **kwargs: Any) -> None:
        if importance is None:
            importance = RandomImportance()
        super().__init__(model, example_inputs, importance=importance, **kwargs)


# ---------------------------------------------------------------------- regularizers
class _SparsePruner(MetaPruner):
    """Shared bookkeeping: group slices refreshed lazily and after every prune."""

    def _init_sparse(self) -> None:
        self._slices: dict[Any, list[_GroupSlices]] = {}
        self._shapes: dict[int, tuple[torch.Tensor, tuple[int, ...]]] = {}
        self._stale = True

    def _mark_stale(self) -> None:
        self._stale = True

    def _fresh(self) -> bool:
        if self._stale:
            return False
        return all(tuple(t.shape) == shape for t, shape in self._shapes.values())

    def _refresh(self) -> None:
        """Re-read the groups (after a prune, the channels and shapes have changed)."""
        self._groups_now = [(self._root_name(g), g) for g in self._groups(self.DG)]
        self._slices = {}
        self._shapes = {}
        self._stale = False
        self._on_refresh()

    def _on_refresh(self) -> None:
        pass

    def _group_slices(self, key: Any, bias: bool = False, layer_filter: Any = None) -> list[_GroupSlices]:
        if not self._fresh():
            self._refresh()
        if key not in self._slices:
            built = [group_slices(g, name, bias, layer_filter) for name, g in self._groups_now]
            for gs in built:
                for e in gs.entries:
                    self._shapes[id(e.piece.tensor)] = (e.piece.tensor, tuple(e.piece.tensor.shape))
            self._slices[key] = built
        return self._slices[key]

    def _check_model(self, model: nn.Module | None) -> None:
        if model is None or model is self.model:
            return
        if not isinstance(model, nn.Module) or not any(m is self.model for m in model.modules()):
            raise ValueError("regularize(model): `model` must be the pruner's model (or a wrapper of it, such "
                             "as DistributedDataParallel); the pruner's own model is regularized")

    def update_regularizer(self) -> None:
        """Re-read the groups; call at the start of every epoch."""
        self._refresh()

    def step(self, interactive: bool = False) -> dict | Iterator[Group]:
        result = super().step(interactive)
        self._mark_stale()
        if interactive:
            return self._stale_after(result)
        return result

    def _stale_after(self, groups: Iterator[Group]) -> Iterator[Group]:
        try:
            yield from groups
        finally:
            self._mark_stale()

    def follow_history(self, history: list[dict], current_step: int | None = None) -> None:
        super().follow_history(history, current_step)
        self._mark_stale()


class BNScalePruner(_SparsePruner):
    """Network slimming (Liu et al., ICCV 2017): L1 on BatchNorm scales, pruned by ``|gamma|``.

    ``regularize()`` adds ``reg * sign(gamma)`` (the L1 subgradient) to the gradient of
    every affine BatchNorm weight of the model outside ``ignored_layers``. With
    ``group_lasso=True`` it adds instead, per group and unit, the group-lasso gradient
    ``reg * gamma / ||gamma_unit||_2``, where the norm runs over every BatchNorm scale of
    that unit in the group (coupled BatchNorms are driven to zero together).

    Args:
        importance: default ``BNScaleImportance()``.
        reg: penalty strength (>= 0).
        group_lasso: use the group-lasso penalty instead of plain L1.
        **kwargs: every argument of :class:`MetaPruner`.
    """

    eps = 1e-12

    def __init__(self, model: nn.Module, example_inputs: Any, importance: Any = None, reg: float = 1e-5,
                 group_lasso: bool = False, **kwargs: Any) -> None:
        reg = _check_nonnegative("reg", reg)
        if importance is None:
            importance = BNScaleImportance()
        super().__init__(model, example_inputs, importance=importance, **kwargs)
        self.reg = reg
        self.group_lasso = bool(group_lasso)
        self._init_sparse()

    def regularize(self, model: nn.Module | None = None, reg: float | None = None) -> None:
        """Add the sparsity gradient to the BatchNorm scales (after backward, before the optimizer step).

        Args:
            model: accepted for Torch-Pruning compatibility; must be the pruner's model
                or a wrapper of it.
            reg: overrides ``self.reg`` for this call.
        """
        self._check_model(model)
        reg = self.reg if reg is None else _check_nonnegative("reg", reg)
        with torch.no_grad():
            if self.group_lasso:
                self._group_lasso(reg)
                return
            ignored = {id(x) for x in self.ignored_layers}
            for m in self.model.modules():
                if not _is_affine_bn(m) or id(m) in ignored or id(m.weight) in ignored:
                    continue
                grad = m.weight.grad
                if grad is None:
                    continue  # not being trained
                grad.add_(torch.sign(m.weight.detach()).to(grad.dtype), alpha=reg)

    def _group_lasso(self, reg: float) -> None:
        ignored = {id(x) for x in self.ignored_layers}

        def wanted(m: Any) -> bool:
            return _is_affine_bn(m) and id(m) not in ignored and id(m.weight) not in ignored

        acc = _Coefficients()
        for gs in self._group_slices("bn", bias=False, layer_filter=wanted):
            if not gs.entries:
                continue
            norms = gs.unit_norms()
            gs.add_coefficients(acc, reg / (norms + self.eps))
        acc.apply()


class GroupNormPruner(_SparsePruner):
    """DepGraph's group sparsity (Fang et al., CVPR 2023): group lasso over coupled weights.

    For every group and every unit ``u``, ``norm_u`` is the L2 norm of all weights that
    removing ``u`` removes, in every layer of the group (biases too with ``bias=True``).
    ``regularize()`` adds the gradient of ``reg * sum_u gamma_u * norm_u``:
    ``w.grad += reg * gamma_u * w / (norm_u + eps)``, with
    ``gamma_u = alpha ** ((imp_max - imp_u) / (imp_max - imp_min + 1e-12))`` from the
    group's importance, so weak units are pushed harder (up to ``alpha`` times).
    ``alpha=0`` turns the scaling off (``gamma_u = 1``, like ``alpha=1``); ``gamma`` is a
    constant of the penalty, not differentiated.

    Args:
        importance: default ``GroupMagnitudeImportance(p=2)``.
        reg: penalty strength (>= 0).
        alpha: strength ratio between the weakest and the strongest unit (>= 0).
        bias: include bias terms in the groups' weights.
        **kwargs: every argument of :class:`MetaPruner`.
    """

    eps = 1e-8

    def __init__(self, model: nn.Module, example_inputs: Any, importance: Any = None, reg: float = 1e-4,
                 alpha: float = 4, bias: bool = False, **kwargs: Any) -> None:
        reg = _check_nonnegative("reg", reg)
        alpha = _check_nonnegative("alpha", alpha)
        if importance is None:
            importance = GroupMagnitudeImportance(p=2)
        super().__init__(model, example_inputs, importance=importance, **kwargs)
        self.reg = reg
        self.alpha = alpha
        self.bias = bool(bias)
        self._init_sparse()

    def _on_refresh(self) -> None:
        self._unit_importance: dict[str, torch.Tensor] = {}

    @staticmethod
    def _gamma(imp: torch.Tensor, alpha: float) -> torch.Tensor:
        imp = imp.double()
        span = imp.max() - imp.min()
        return torch.pow(alpha, (imp.max() - imp) / (span + 1e-12)).float()

    def unit_gamma(self, group: Group, alpha: float | None = None) -> torch.Tensor:
        """``[len(group.units)]`` per-unit strength ``gamma_u`` from the group's importance now.

        1 for the most important unit, ``alpha`` for the least important one.
        """
        alpha = self.alpha if alpha is None else _check_nonnegative("alpha", alpha)
        n = len(group.units)
        if alpha in (0, 1) or n <= 1:
            return torch.ones(n, dtype=torch.float32)
        return self._gamma(unit_scores(group, self.estimate_importance(group)), alpha)

    def regularize(self, model: nn.Module | None = None, alpha: float | None = None,
                   bias: bool | None = None) -> None:
        """Add the group-lasso gradient (after backward, before the optimizer step).

        The importance behind ``gamma`` is read at the first call after each
        ``update_regularizer()`` (or prune) and kept until the next one, so a gradient-based
        criterion (Taylor) sees the gradients of that first batch.

        Args:
            model: accepted for Torch-Pruning compatibility; must be the pruner's model
                or a wrapper of it.
            alpha, bias: override ``self.alpha`` / ``self.bias`` for this call.
        """
        self._check_model(model)
        alpha = self.alpha if alpha is None else _check_nonnegative("alpha", alpha)
        bias = self.bias if bias is None else bool(bias)
        if self.reg == 0:
            return
        with torch.no_grad():
            acc = _Coefficients()
            for gs in self._group_slices(("weights", bias), bias=bias):
                if not gs.entries:
                    continue
                norms = gs.unit_norms()
                if alpha in (0, 1) or gs.n_units <= 1:
                    gamma = torch.ones(gs.n_units)
                else:
                    if gs.name not in self._unit_importance:
                        self._unit_importance[gs.name] = unit_scores(gs.group, self.estimate_importance(gs.group))
                    gamma = self._gamma(self._unit_importance[gs.name], alpha)
                gs.add_coefficients(acc, self.reg * gamma.to(norms.device) / (norms + self.eps))
            acc.apply()


class GrowingRegPruner(_SparsePruner):
    """Growing regularization (Wang et al., ICLR 2021, "Neural Pruning via Growing Regularization").

    Every unit of every group has its own L2 penalty ``lambda_u``, starting at ``reg``.
    Each ``update_regularizer()`` (once per epoch) re-ranks the units by importance and
    raises ``lambda_u`` by ``delta_reg`` for the units that the final target would prune
    now: the plan ``step()`` makes for ``pruning_ratio``, or under ``target_macs`` /
    ``target_params`` for the channel ratio the budget implies (never a default ratio).
    ``regularize()`` adds ``lambda_u * w`` (the gradient of ``lambda_u / 2 * ||w_u||^2``)
    to every weight of unit ``u`` in every layer of the group, BatchNorm scales included.

    Penalties are kept per unit across refreshes. After a prune, the surviving units of
    a group keep theirs when the graph was not rebuilt (channel pruning); otherwise a
    group whose number of units changed starts again at ``reg``.

    Args:
        importance: default ``GroupMagnitudeImportance(p=2)``.
        reg: initial penalty (>= 0).
        delta_reg: growth per ``update_regularizer()`` call (>= 0).
        **kwargs: every argument of :class:`MetaPruner`.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, importance: Any = None, reg: float = 1e-5,
                 delta_reg: float = 1e-5, **kwargs: Any) -> None:
        reg = _check_nonnegative("reg", reg)
        delta_reg = _check_nonnegative("delta_reg", delta_reg)
        super().__init__(model, example_inputs, importance=importance, **kwargs)
        self.reg = reg
        self.delta_reg = delta_reg
        # root name -> (graph, unit components, per-unit lambda)
        self._lambdas: dict[str, tuple[Any, list | None, torch.Tensor]] = {}
        self._init_sparse()

    def _on_refresh(self) -> None:
        old, self._lambdas = self._lambdas, {}
        for name, g in self._groups_now:
            n = len(g.units)
            comps = getattr(g, "_unit_comps", None)
            lam = torch.full((n,), self.reg, dtype=torch.float32)
            if name in old:
                graph, old_comps, old_lam = old[name]
                if graph is self.DG and comps is not None and old_comps is not None:
                    where = {c: k for k, c in enumerate(old_comps)}
                    for k, c in enumerate(comps):
                        if c in where:
                            lam[k] = old_lam[where[c]]
                elif old_lam.numel() == n:
                    lam = old_lam.clone()
            self._lambdas[name] = (self.DG, list(comps) if comps is not None else None, lam)

    def group_lambdas(self) -> dict[str, torch.Tensor]:
        """Current per-unit penalties, by group root name (copies)."""
        if not self._fresh():
            self._refresh()
        return {name: lam.clone() for name, (_, _, lam) in self._lambdas.items()}

    def update_regularizer(self) -> None:
        """Grow the penalty of the units that the pruner's target would remove now.

        Call it once at the start of every epoch of sparse training (before the epoch's
        first ``regularize()``), and not per batch: each call raises ``lambda_u`` by
        ``delta_reg``, so the number of calls sets how strong the penalty gets. It re-reads
        the groups and the importance, then plans the final target as ``step()`` would
        (:meth:`~MetaPruner.final_channel_ratio`: ``pruning_ratio``, or under
        ``target_macs`` / ``target_params`` the ratio the budget solver finds, with
        ``pruning_ratio_dict``, ``round_to``, ``max_pruning_ratio`` and global or
        isomorphic ranking applied) and grows ``lambda_u`` of exactly the units that plan
        removes. Once the target is reached, nothing grows.
        """
        self._refresh()
        ratio = self.final_channel_ratio()
        with torch.no_grad():
            for plan in self._plans(self.DG, ratio):
                entry = self._lambdas.get(plan.root_name)
                if plan.remove and entry is not None:
                    entry[2][torch.as_tensor(plan.remove, dtype=torch.long)] += self.delta_reg

    def regularize(self, model: nn.Module | None = None) -> None:
        """Add ``lambda_u * w`` to the gradients (after backward, before the optimizer step).

        Args:
            model: accepted for Torch-Pruning compatibility; must be the pruner's model
                or a wrapper of it.
        """
        self._check_model(model)
        with torch.no_grad():
            slices = self._group_slices("weights", bias=False)
            acc = _Coefficients()
            for gs in slices:
                lam = self._lambdas.get(gs.name)
                if lam is None or not gs.entries:
                    continue
                gs.add_coefficients(acc, lam[2])
            acc.apply()
