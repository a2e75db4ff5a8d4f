"""Gradient criteria: how much the loss would change if a channel were removed.

* :class:`GroupTaylorImportance`: first-order Taylor expansion of the loss around the
  current weights (Molchanov et al., 2019): removing ``w`` changes the loss by about
  ``|w * dL/dw|``.
* :class:`GroupHessianImportance`: second order, Optimal Brain Damage (LeCun et al.,
  1990): at a minimum the gradient vanishes and the change is about ``0.5 * H_ii * w^2``,
  with the Hessian diagonal ``H_ii`` estimated by the mean squared per-sample gradient
  (the empirical Fisher).

Both read gradients that the user computed; they never run the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .magnitude import SliceImportance
from .slices import ChannelSlice

__all__ = ["GroupHessianImportance", "GroupTaylorImportance", "HessianImportance", "TaylorImportance"]


def _root_name(group: Any) -> str:
    return group[0].dep.target.name if len(group) else "?"


class _GradientImportance(SliceImportance):
    """Shared logic: every slice needs a gradient-like statistic of the same shape."""

    needs_gradients = True

    def statistic(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """The gradient information for ``tensor`` (same shape), or ``None`` if there is none."""
        raise NotImplementedError

    def missing_message(self, group: Any, stale: list[str]) -> str:
        raise NotImplementedError

    def _check(self, group: Any) -> None:
        """Raise unless some weight of the group has gradient information.

        A weight that requires grad but has none while others in the group do was not
        reached by the loss: its gradient is exactly zero, and it scores 0. Buffers and
        frozen weights (``requires_grad=False``) have no gradient by design and are
        skipped. A group where *no* weight has a gradient means backward was not run.
        """
        trainable = False
        for dep, idxs in group:
            if not self.wants(dep) or len(idxs) == 0:
                continue
            for piece in self.channel_slices(dep, idxs) or []:
                if not piece.tensor.requires_grad:
                    continue
                trainable = True
                if self.statistic(piece.tensor) is not None:
                    return
        if trainable:
            raise RuntimeError(self.missing_message(group, self._stale_names(group)))

    def _stale_names(self, group: Any) -> list[str]:
        return []

    def __call__(self, group: Any) -> torch.Tensor:
        self._check(group)
        return super().__call__(group)

    def slice_scores(self, piece: ChannelSlice) -> torch.Tensor | None:
        tensor = piece.tensor
        if not tensor.requires_grad:
            return None  # a buffer or a frozen weight: no gradient by design
        stat = self.statistic(tensor)
        if stat is None:  # not reached by the loss: its gradient is zero
            return torch.zeros(piece.rows.shape[0])
        return self.saliency(piece.gather(), piece.gather(stat))

    def saliency(self, weights: torch.Tensor, stat: torch.Tensor) -> torch.Tensor:
        """``[n]`` scores from ``[n, m]`` weights and the matching statistic."""
        raise NotImplementedError


class GroupTaylorImportance(_GradientImportance):
    """First-order Taylor importance: ``sum |w * grad|`` over each channel's weights.

    Needs ``.grad`` on the weights: run ``loss.backward()`` (over one or more batches)
    before scoring. ``multivariable=True`` scores the joint removal of the channel's
    weights, ``|sum(w * grad)|``, instead of the sum of single-weight estimates.

    Args:
        group_reduction, normalizer: see :class:`~.base.GroupImportance`.
        multivariable: ``|sum(w * grad)|`` per channel instead of ``sum |w * grad|``.
        bias: also score bias terms.
        target_types: only layers of these classes count.
    """

    def __init__(self, group_reduction: str = "mean", normalizer: str | None = "mean",
                 multivariable: bool = False, bias: bool = False,
                 target_types: Sequence[type] | None = None) -> None:
        super().__init__(group_reduction, normalizer, bias, target_types)
        self.multivariable = bool(multivariable)

    def statistic(self, tensor: torch.Tensor) -> torch.Tensor | None:
        grad = tensor.grad
        if grad is None:
            return None
        if grad.shape != tensor.shape:
            raise RuntimeError(
                f"GroupTaylorImportance: a gradient has shape {tuple(grad.shape)} but its weight has shape "
                f"{tuple(tensor.shape)}; the model was changed after backward, run loss.backward() again"
            )
        return grad

    def missing_message(self, group: Any, stale: list[str]) -> str:
        return (f"GroupTaylorImportance needs gradients: run loss.backward() before pruner.step() "
                f"(no weight of the group rooted at {_root_name(group)} has a .grad)")

    def saliency(self, weights: torch.Tensor, stat: torch.Tensor) -> torch.Tensor:
        product = weights * stat
        return product.sum(1) if self.multivariable else product.abs().sum(1)

    def item_scores(self, dep: Any, idxs: Sequence[int]) -> torch.Tensor | None:
        total = super().item_scores(dep, idxs)
        return total.abs() if total is not None and self.multivariable else total


class TaylorImportance(GroupTaylorImportance):
    """Torch-Pruning's name for :class:`GroupTaylorImportance` (same arguments)."""


class GroupHessianImportance(_GradientImportance):
    """OBD saliency ``sum 0.5 * H_ii * w^2`` over each channel's weights.

    ``H_ii`` is the mean of the squared gradients collected by :meth:`accumulate_grad`
    (call it after each per-sample or per-batch ``loss.backward()``). With nothing
    accumulated for a weight, its current ``.grad ** 2`` is used. Statistics are keyed by
    parameter identity; a parameter pruned after accumulation has a new shape, its
    statistics are stale and ignored (call :meth:`zero_grad` and accumulate again, or
    score every group before pruning any).

    Typical use::

        imp = GroupHessianImportance()
        imp.zero_grad()
        for x, y in calibration_samples:
            model.zero_grad()
            loss_fn(model(x), y).backward()
            imp.accumulate_grad(model)
        scores = imp(group)

    Args:
        group_reduction, normalizer, bias, target_types: as for the other criteria.
    """

    def __init__(self, group_reduction: str = "mean", normalizer: str | None = "mean", bias: bool = False,
                 target_types: Sequence[type] | None = None) -> None:
        super().__init__(group_reduction, normalizer, bias, target_types)
        # id(param) -> (param, sum of grad**2, number of samples)
        self._squared: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def accumulate_grad(self, model: nn.Module) -> None:
        """Add ``grad ** 2`` of every parameter of ``model`` that has a gradient."""
        with torch.no_grad():
            for param in model.parameters():
                if param.grad is None:
                    continue
                square = param.grad.detach().float().pow(2)
                entry = self._squared.get(id(param))
                if entry is None or entry[0] is not param or entry[1].shape != square.shape:
                    self._squared[id(param)] = (param, square.clone(), 1)
                else:
                    self._squared[id(param)] = (param, entry[1].add_(square), entry[2] + 1)

    def zero_grad(self) -> None:
        """Forget everything accumulated (start a new estimate)."""
        self._squared.clear()

    def reduce_statistics(self, model: nn.Module, all_reduce_sum: Any) -> None:
        """Sum the squared gradients and sample counts of every process (DDP), so that
        every rank scores with the statistics of all the data. Parameters are visited in
        ``model.parameters()`` order; one without statistics on a rank contributes zeros."""
        params = list(model.parameters())
        counts = torch.tensor([float(self._entry(p)[2]) if self._entry(p) else 0.0 for p in params],
                              dtype=torch.float64)
        all_reduce_sum(counts)
        for p, count in zip(params, counts.tolist()):
            if count == 0:
                continue
            entry = self._entry(p)
            total = entry[1] if entry else torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            all_reduce_sum(total)
            self._squared[id(p)] = (p, total, int(count))

    def _entry(self, param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        entry = self._squared.get(id(param))
        return entry if entry is not None and entry[0] is param and entry[1].shape == param.shape else None

    @property
    def num_samples(self) -> int:
        """Most samples accumulated for any parameter (0 when nothing is accumulated)."""
        return max((entry[2] for entry in self._squared.values()), default=0)

    def _accumulated(self, tensor: torch.Tensor) -> torch.Tensor | None:
        entry = self._squared.get(id(tensor))
        if entry is None or entry[0] is not tensor or entry[1].shape != tensor.shape:
            return None
        return entry[1] / entry[2]

    def statistic(self, tensor: torch.Tensor) -> torch.Tensor | None:
        accumulated = self._accumulated(tensor)
        if accumulated is not None:
            return accumulated
        grad = tensor.grad
        if grad is not None and grad.shape == tensor.shape:
            return grad.detach().float().pow(2)
        return None

    def _stale_names(self, group: Any) -> list[str]:
        stale = []
        for dep, _ in group:
            module = dep.target.module
            params = [module] if isinstance(module, torch.Tensor) else list(module.parameters())
            for p in params:
                entry = self._squared.get(id(p))
                if entry is not None and entry[0] is p and entry[1].shape != p.shape:
                    stale.append(dep.target.name)
                    break
        return stale

    def missing_message(self, group: Any, stale: list[str]) -> str:
        msg = (f"GroupHessianImportance needs gradients: call imp.accumulate_grad(model) after each "
               f"loss.backward() (or run loss.backward() before pruner.step()); no weight of the group rooted "
               f"at {_root_name(group)} has accumulated squared gradients or a .grad")
        if stale:
            msg += (f". The statistics of {', '.join(sorted(set(stale)))} were accumulated before a prune changed "
                    f"their shape: call imp.zero_grad() and accumulate again")
        return msg

    def saliency(self, weights: torch.Tensor, stat: torch.Tensor) -> torch.Tensor:
        return (0.5 * stat * weights.pow(2)).sum(1)


class HessianImportance(GroupHessianImportance):
    """Torch-Pruning's name for :class:`GroupHessianImportance` (same arguments)."""
