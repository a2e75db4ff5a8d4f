"""Re-estimating BatchNorm running statistics after a prune.

Pruning removes channels, and with them part of what every later layer sums over. The
``running_mean``/``running_var`` that BatchNorm layers learned for the unpruned model then
describe activations that no longer exist, and an eval-mode forward normalizes with the
wrong statistics: accuracy drops far more than the prune itself explains. A few
forward passes over training data, with BatchNorm in training mode and nothing else,
re-estimate the statistics for the model as it is now. No weight changes and no
gradient is computed, so this is cheap and safe to do after every prune step.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .harness import move_inputs, restore_modes, save_modes, set_modes

__all__ = ["recalibrate_batchnorm"]

_END = object()


def _feed(model: nn.Module, batch: Any, forward_fn: Callable[[nn.Module, Any], Any] | None) -> None:
    """Run one batch: ``forward_fn`` if given, else the tensor or the first element of a tuple."""
    if forward_fn is not None:
        forward_fn(model, batch)
    elif isinstance(batch, torch.Tensor):
        model(batch)
    elif isinstance(batch, tuple | list):
        if not batch:
            raise ValueError("recalibrate_batchnorm got an empty tuple/list as a batch")
        model(batch[0])
    elif isinstance(batch, Mapping):
        raise ValueError("recalibrate_batchnorm cannot tell which entry of a dict batch is the input; "
                         "pass forward_fn, e.g. forward_fn=lambda model, batch: model(batch['image'])")
    else:
        raise TypeError(f"recalibrate_batchnorm cannot feed a batch of type {type(batch).__name__}; "
                        f"pass forward_fn=lambda model, batch: ...")


def _calibrated_layers(model: nn.Module) -> list[_BatchNorm]:
    """BatchNorm layers that keep running statistics (FrozenBatchNorm2d is no ``_BatchNorm``)."""
    return [m for m in model.modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None]


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], num_batches: int | None = None,
                          forward_fn: Callable[[nn.Module, Any], Any] | None = None,
                          device: torch.device | str | None = None) -> int:
    """Re-estimate the running statistics of every BatchNorm layer of ``model``.

    Each layer's statistics are reset and then accumulated as a cumulative average over
    the batches (``momentum=None``), so every batch counts equally and old statistics leave
    no trace. Only BatchNorm layers run in training mode: dropout and other train-only
    behaviour stay off, so the statistics match what the model sees at inference. Runs
    under ``torch.no_grad()``. Afterwards every module's ``training`` flag and every
    layer's ``momentum`` are exactly as before; weights are never touched.

    Args:
        model: the (pruned) model. Not moved; put it on ``device`` yourself.
        batches: any iterable of batches: tensors, ``(x, y, ...)`` tuples/lists (``x`` is
            fed) or anything ``forward_fn`` understands (dicts need ``forward_fn``).
        num_batches: use at most this many batches (``None``: the whole iterable).
        forward_fn: ``forward_fn(model, batch)`` runs one batch, overriding the default.
        device: if given, tensors in each batch are moved there first.

    Returns:
        The number of batches used; ``0`` (and nothing done) when the model has no
        BatchNorm layer that tracks running statistics.

    Raises:
        ValueError: ``batches`` is empty or ``num_batches < 1``. If a forward fails, the
            old statistics are put back before the error propagates.
    """
    if num_batches is not None and num_batches < 1:
        raise ValueError(f"num_batches must be at least 1 (or None for all), got {num_batches}")
    layers = _calibrated_layers(model)
    if not layers:
        return 0
    iterator = iter(batches)
    if num_batches is not None:
        iterator = itertools.islice(iterator, num_batches)
    first = next(iterator, _END)
    if first is _END:
        raise ValueError("recalibrate_batchnorm needs at least one batch")

    modes = save_modes(model.modules())
    saved = [(bn, bn.momentum, bn.running_mean.clone(), bn.running_var.clone(),
              None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone()) for bn in layers]
    used = 0
    try:
        set_modes(model.modules(), False)
        set_modes(layers, True)
        for bn in layers:
            bn.momentum = None
            bn.reset_running_stats()
        with torch.no_grad():
            for batch in itertools.chain([first], iterator):
                _feed(model, batch if device is None else move_inputs(batch, device), forward_fn)
                used += 1
    except BaseException:
        with torch.no_grad():
            for bn, _, mean, var, count in saved:
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                if count is not None:
                    bn.num_batches_tracked.copy_(count)
        raise
    finally:
        restore_modes(modes)
        for bn, momentum, *_ in saved:
            bn.momentum = momentum
    return used

