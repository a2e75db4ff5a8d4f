"""The base of pruners that regularize during sparse training.

:class:`~.bn_scale.BNScalePruner`, :class:`~.group_norm.GroupNormPruner` and
:class:`~.growing_reg.GrowingRegPruner` add a sparsity penalty to the gradients, so
training pushes the channels that will be pruned towards zero first. The training loop
calls

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

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..meta import MetaPruner
from .slices import GroupSlices, group_slices

if TYPE_CHECKING:
    from ...graph import Group


class SparseTrainingPruner(MetaPruner):
    """A :class:`MetaPruner` that also regularizes: the bookkeeping every regularizer shares.

    It keeps the weight slices of the groups (:class:`~.slices.GroupSlices`) and reads
    them again lazily: after ``step()``, after :meth:`follow_history`, at every
    :meth:`update_regularizer`, and whenever a tensor it sliced changed shape.

    A subclass calls ``self._init_sparse()`` at the end of its ``__init__``, implements
    ``regularize(model=None, ...)`` on ``self._group_slices(key, ...)`` (or on the model
    directly) after ``self._check_model(model)``, and may override ``_on_refresh()`` to
    recompute its own per-group state from ``self._groups_now`` (``[(root name, group)]``
    of the current graph) whenever the groups are read again.
    """

    def _init_sparse(self) -> None:
        self._slices: dict[Any, list[GroupSlices]] = {}
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
        self._groups_now = [(g.root_name, g) for g in self.groups(self.DG)]
        self._slices = {}
        self._shapes = {}
        self._stale = False
        self._on_refresh()

    def _on_refresh(self) -> None:
        """Hook: the groups were read again (``self._groups_now``)."""

    def _group_slices(self, key: Any, bias: bool = False, layer_filter: Any = None) -> list[GroupSlices]:
        """The slices of every group, built once per ``key`` until the groups are read again."""
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
