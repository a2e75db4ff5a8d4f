"""Growing regularization: an L2 penalty per unit that grows on the units the target would prune."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..arguments import check_nonnegative
from .base import SparseTrainingPruner
from .slices import GradientCoefficients


class GrowingRegPruner(SparseTrainingPruner):
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
        reg = check_nonnegative("reg", reg)
        delta_reg = check_nonnegative("delta_reg", delta_reg)
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
            comps = g.unit_components
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
            for plan in self.plan(self.DG, ratio):
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
            acc = GradientCoefficients()
            for gs in slices:
                lam = self._lambdas.get(gs.name)
                if lam is None or not gs.entries:
                    continue
                gs.add_coefficients(acc, lam[2])
            acc.apply()
