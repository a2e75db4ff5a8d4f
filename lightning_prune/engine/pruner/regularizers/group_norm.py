"""DepGraph's group sparsity: a group lasso over every weight a unit's removal removes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...importance import GroupMagnitudeImportance
from ..arguments import check_nonnegative
from ..planning import unit_scores
from .base import SparseTrainingPruner
from .slices import GradientCoefficients

if TYPE_CHECKING:
    from ...graph import Group


class GroupNormPruner(SparseTrainingPruner):
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
        reg = check_nonnegative("reg", reg)
        alpha = check_nonnegative("alpha", alpha)
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
        alpha = self.alpha if alpha is None else check_nonnegative("alpha", alpha)
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
        alpha = self.alpha if alpha is None else check_nonnegative("alpha", alpha)
        bias = self.bias if bias is None else bool(bias)
        if self.reg == 0:
            return
        with torch.no_grad():
            acc = GradientCoefficients()
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
