"""Network slimming: an L1 (or group-lasso) penalty on BatchNorm scales."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...importance import BNScaleImportance
from ..arguments import check_nonnegative
from .base import SparseTrainingPruner
from .slices import GradientCoefficients

_BN = nn.modules.batchnorm._BatchNorm


def is_affine_bn(module: Any) -> bool:
    """Whether ``module`` is a BatchNorm with a learnable scale (``affine=True``)."""
    return isinstance(module, _BN) and module.affine and isinstance(module.weight, torch.Tensor)


class BNScalePruner(SparseTrainingPruner):
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
        reg = check_nonnegative("reg", reg)
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
        reg = self.reg if reg is None else check_nonnegative("reg", reg)
        with torch.no_grad():
            if self.group_lasso:
                self._group_lasso(reg)
                return
            ignored = {id(x) for x in self.ignored_layers}
            for m in self.model.modules():
                if not is_affine_bn(m) or id(m) in ignored or id(m.weight) in ignored:
                    continue
                grad = m.weight.grad
                if grad is None:
                    continue  # not being trained
                grad.add_(torch.sign(m.weight.detach()).to(grad.dtype), alpha=reg)

    def _group_lasso(self, reg: float) -> None:
        ignored = {id(x) for x in self.ignored_layers}

        def wanted(m: Any) -> bool:
            return is_affine_bn(m) and id(m) not in ignored and id(m.weight) not in ignored

        acc = GradientCoefficients()
        for gs in self._group_slices("bn", bias=False, layer_filter=wanted):
            if not gs.entries:
                continue
            norms = gs.unit_norms()
            gs.add_coefficients(acc, reg / (norms + self.eps))
        acc.apply()
