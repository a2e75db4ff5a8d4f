"""The importance protocol, and the base class of criteria that score one layer at a time.

Protocol
--------
An importance criterion is a callable ``imp(group) -> torch.Tensor``:

* the result is a 1-D float tensor with one score per **root index**, in the order of
  ``group[0].idxs`` (so ``len(scores) == len(group[0].idxs)``);
* higher means more important: a pruner removes the lowest scores first;
* every value is finite (never ``None``, NaN or inf);
* the criterion reads the model and never changes it, and it works under
  ``torch.no_grad()``.

A group holds coupled channels of many layers. Each item's indices carry, through
``idxs.units``, the *unit* of root indices that removes them (see
:class:`~lightning_prune.engine.graph.group.Idxs`). :class:`RootMap` turns per-item
scores into per-root-index scores; :class:`GroupImportance` adds the reduction across
items and the normalization (:mod:`.reduction`), so a new criterion only scores one
item at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..indices import long_tensor
from .reduction import (
    check_normalizer,
    check_reduction,
    check_target_types,
    finalize,
    normalize_scores,
    reduce_scores,
)
from .slices import item_key

__all__ = ["GroupImportance", "Importance", "RootMap"]


class Importance:
    """Base class of importance criteria: ``__call__(group)`` scores a group's channels.

    Contract (a pruner relies on every point):

    * return a 1-D float tensor of length ``len(group[0].idxs)``; entry ``k`` scores root
      index ``group[0].idxs[k]``;
    * higher = more important (pruned last);
    * all values finite;
    * do not modify the model (weights, grads, buffers, modes) and work under
      ``torch.no_grad()``.

    Scores found on other layers of the group map back to root indices through
    ``idxs.units`` / ``idxs.root_idxs``; :class:`RootMap` does this, and
    :class:`GroupImportance` is the convenient base for criteria that score one item
    (layer) at a time. See ``docs/importance.md`` for a worked example.
    """

    #: Whether scores read ``.grad``: a pruner's caller (the Lightning callback) then runs
    #: backward passes on training batches before scoring. A property of the class, so a
    #: criterion declares what it needs instead of being recognised by name.
    needs_gradients: ClassVar[bool] = False

    def __call__(self, group: Any) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(group)")

    def accumulate_grad(self, model: nn.Module) -> None:
        """Called after each backward pass of a gradient pass; criteria that keep running
        statistics (:class:`GroupHessianImportance`) add the current gradients to them."""

    def reduce_statistics(self, model: nn.Module, all_reduce_sum: Callable[[torch.Tensor], None]) -> None:
        """Sum accumulated statistics over processes (DDP) with ``all_reduce_sum(tensor)``,
        which works in place. Every process calls it, in the same order of tensors.
        Criteria without statistics have nothing to do."""

    def zero_grad(self) -> None:
        """Forget accumulated statistics (start a new estimate)."""

    @contextlib.contextmanager
    def scoring_pass(self) -> Iterator[None]:
        """Score many groups of an unchanging model: per-tensor statistics may be reused.

        A weight usually sits in two groups (its outputs in one, its inputs in the next).
        Inside this block a criterion may compute what it needs from that weight once and
        reuse it (:attr:`pass_cache`), so pruners wrap the scoring of all groups in it.
        The caller promises that weights and gradients do not change inside the block;
        nothing is cached outside it.
        """
        outer = self.__dict__.get("_pass_cache")
        self._pass_cache = {} if outer is None else outer
        try:
            yield
        finally:
            self._pass_cache = outer

    @property
    def pass_cache(self) -> dict | None:
        """The cache of the current :meth:`scoring_pass`, or ``None`` outside one."""
        return self.__dict__.get("_pass_cache")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class RootMap:
    """Maps the channels of any group item to positions in ``group[0].idxs``.

    An item's index ``k`` belongs to unit ``idxs.units[k]``, i.e. to the root indices
    ``group.units[idxs.units[k]]`` that can only be removed together. When the item has
    as many indices in a unit as the unit has root indices (the usual case: one-to-one,
    or the same offset in every attention head), the ``j``-th index of the item in that
    unit scores the ``j``-th root index of the unit. Otherwise (a channel read twice
    after ``cat([x, x])``, a bidirectional RNN output) the item's total for the unit is
    shared evenly by the unit's root indices. Either way, the scores of a unit sum to
    the item's total for that unit.

    Items without ``units`` (a plain list) are taken to hold root indices.
    """

    def __init__(self, group: Any) -> None:
        root = list(group[0].idxs) if len(group) else []
        self.size = len(root)
        self._plan_cache: list[tuple[list[int], Any]] = []
        if getattr(group, "identity_units", False):  # the graph sets it only when root == 0..n-1
            # the usual full group: unit k is root index k, at position k
            positions = torch.arange(self.size)
            self._lookup = positions
            self.unit_sizes = torch.ones(self.size, dtype=torch.long)
            self.unit_offsets = positions
            self.unit_positions = positions
            self._identity_units = list(range(self.size))
            return
        values = torch.as_tensor(root, dtype=torch.long)
        # dense lookup table: root index value -> position (root values are channel numbers)
        self._lookup = torch.full((int(values.max()) + 1 if self.size else 0,), -1, dtype=torch.long)
        self._lookup[values] = torch.arange(self.size)
        units = getattr(group, "units", None) or [[i] for i in root]
        sizes = torch.as_tensor([len(u) for u in units], dtype=torch.long)
        self.unit_sizes = sizes
        self.unit_offsets = torch.cumsum(sizes, 0) - sizes
        flat = torch.as_tensor([r for u in units for r in u], dtype=torch.long)
        self.unit_positions = self.positions(flat)
        # the common case: one root index per unit, in root order; an item whose units
        # are 0..size-1 then maps position for position (fast path of scatter)
        self._identity_units = (list(range(self.size)) if len(units) == self.size and bool(
            torch.equal(self.unit_positions, torch.arange(self.size))) else None)

    def _one_to_one_plan(self, units: list[int]) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor] | None:
        """``(which item indices, their root positions, hit mask)`` when an item with these
        ``units`` maps one to one onto root indices; ``None`` when some unit is shared.

        Most items of a group have the same ``units`` (every layer on a residual stream
        lists the stream's channels in the same order), so the mapping is worked out once
        per distinct list and reused.
        """
        for known, plan in self._plan_cache:
            if known == units:
                return plan
        unit = long_tensor(units)
        n_units = self.unit_sizes.numel()
        ok = (unit >= 0) & (unit < n_units)
        idx = torch.arange(unit.numel())
        unit_ok, idx = unit[ok], idx[ok]
        count = torch.bincount(unit_ok, minlength=n_units)
        plan = None
        if bool((count[unit_ok] == self.unit_sizes[unit_ok]).all()):
            order = torch.argsort(unit_ok, stable=True)
            first = torch.cumsum(count, 0) - count
            rank = torch.empty_like(unit_ok)
            rank[order] = torch.arange(unit_ok.numel()) - first[unit_ok[order]]
            pos = self.unit_positions[self.unit_offsets[unit_ok] + rank]
            good = pos >= 0
            take = idx[good]
            touched = torch.zeros(self.size, dtype=torch.bool)
            touched[pos[good]] = True
            plan = (None if take.numel() == len(units) else take, pos[good], touched)
        self._plan_cache.append((list(units), plan))
        del self._plan_cache[:-4]
        return plan

    def positions(self, root_values: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Position of each root index value in ``group[0].idxs`` (``-1`` if absent)."""
        values = torch.as_tensor(root_values, dtype=torch.long).reshape(-1)
        inside = (values >= 0) & (values < self._lookup.numel())
        out = torch.full_like(values, -1)
        out[inside] = self._lookup[values[inside]]
        return out

    def scatter(self, idxs: Sequence[int], local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-root-index scores of one item, and which root indices it touched.

        Args:
            idxs: the item's indices (an :class:`Idxs`, or a list of root indices).
            local: ``[len(idxs)]`` scores of the item's channels.

        Returns:
            ``(scores, hit)``: float64 ``[size]`` and bool ``[size]``.
        """
        local = local.detach().reshape(-1).to("cpu", torch.float64)
        units = getattr(idxs, "units", None)
        if self._identity_units is not None and units == self._identity_units and local.numel() == self.size:
            return local.clone(), torch.ones(self.size, dtype=torch.bool)
        scores = torch.zeros(self.size, dtype=torch.float64)
        n_units = self.unit_sizes.numel()
        if units is not None and len(units) == local.numel():
            plan = self._one_to_one_plan(units)
            if plan is not None:  # every index scores exactly one root index
                take, pos, touched = plan
                scores.index_add_(0, pos, local if take is None else local[take])
                return scores, touched.clone()
        hit = torch.zeros(self.size, dtype=torch.bool)
        if units is None or len(units) != local.numel():
            pos = self.positions(list(idxs))
            ok = pos >= 0
            scores.index_add_(0, pos[ok], local[ok])
            hit[pos[ok]] = True
            return scores, hit
        unit = torch.as_tensor(list(units), dtype=torch.long)
        ok = (unit >= 0) & (unit < n_units)
        unit, local = unit[ok], local[ok]
        if unit.numel() == 0:
            return scores, hit
        count = torch.bincount(unit, minlength=n_units)
        order = torch.argsort(unit, stable=True)
        first = torch.cumsum(count, 0) - count  # where each unit starts in sorted order
        rank = torch.empty_like(unit)
        rank[order] = torch.arange(unit.numel()) - first[unit[order]]
        matched = count[unit] == self.unit_sizes[unit]
        # one-to-one: the j-th item index of a unit scores the unit's j-th root index
        pos = self.unit_positions[self.unit_offsets[unit[matched]] + rank[matched]]
        good = pos >= 0
        scores.index_add_(0, pos[good], local[matched][good])
        hit[pos[good]] = True
        if bool((~matched).any()):
            # otherwise: the unit's total is shared evenly by its root indices
            totals = torch.zeros(n_units, dtype=torch.float64).index_add_(0, unit[~matched], local[~matched])
            shared = torch.unique(unit[~matched])
            sizes = self.unit_sizes[shared]
            starts = torch.repeat_interleave(self.unit_offsets[shared], sizes)
            within = torch.arange(int(sizes.sum())) - torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
            pos = self.unit_positions[starts + within]
            values = torch.repeat_interleave(totals[shared] / sizes, sizes)
            good = pos >= 0
            scores.index_add_(0, pos[good], values[good])
            hit[pos[good]] = True
        return scores, hit



class GroupImportance(Importance):
    """Base for criteria that score each group item, then combine the items.

    Subclasses implement :meth:`item_scores`; ``__call__`` maps each item's scores to
    root indices (:class:`RootMap`), combines the items with ``group_reduction`` and
    rescales with ``normalizer``.

    Args:
        group_reduction: one of :data:`GROUP_REDUCTIONS`: how the scores that several
            layers give one root index combine. ``"mean"`` averages over the items that
            scored that index; ``"first"`` keeps the first item (in group order, i.e.
            the root layer when it has a score).
        normalizer: one of :data:`NORMALIZERS` or ``None``, applied to the combined
            scores of the group (see :func:`normalize_scores`).
        target_types: if given, only items whose layer is an instance of one of these
            classes count (``nn.Parameter`` selects unwrapped parameters).
    """

    def __init__(self, group_reduction: str = "mean", normalizer: str | None = "mean",
                 target_types: Sequence[type] | None = None) -> None:
        self.group_reduction = check_reduction(group_reduction)
        self.normalizer = check_normalizer(normalizer)
        self.target_types = check_target_types(target_types)

    def item_scores(self, dep: Any, idxs: Sequence[int]) -> torch.Tensor | None:
        """Scores of the item's channels (``[len(idxs)]``), or ``None`` to skip the item."""
        raise NotImplementedError(f"{type(self).__name__} must implement item_scores(dep, idxs)")

    def wants(self, dep: Any) -> bool:
        """Whether this item's layer counts, by ``target_types``."""
        return self.target_types is None or isinstance(dep.target.module, self.target_types)

    def __call__(self, group: Any) -> torch.Tensor:
        if len(group) == 0:
            return torch.zeros(0)
        root_map = RootMap(group)
        rows: list[torch.Tensor] = []
        hits: list[torch.Tensor] = []
        seen: set[tuple] = set()
        with torch.no_grad():
            for dep, idxs in group:
                key = item_key(dep)
                if key in seen or not self.wants(dep) or len(idxs) == 0:
                    continue
                local = self.item_scores(dep, idxs)
                if local is None:
                    continue
                seen.add(key)
                scores, hit = root_map.scatter(idxs, local)
                rows.append(scores)
                hits.append(hit)
        if rows:
            combined = reduce_scores(torch.stack(rows), torch.stack(hits), self.group_reduction)
        else:
            combined = torch.zeros(root_map.size, dtype=torch.float64)
        return finalize(normalize_scores(combined, self.normalizer), group)

