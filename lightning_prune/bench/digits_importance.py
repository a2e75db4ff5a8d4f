"""Importance criteria on real data: a small CNN trained on scikit-learn's digits, pruned.

Random weights make every criterion look alike, so this module trains
:class:`~lightning_prune.models.SmallResNet` on the digits and measures the top-1
accuracy right after a one-shot prune (no finetuning), with and without re-estimating
the BatchNorm statistics. A useful criterion should beat random scores by a clear margin;
BN recalibration should recover much of what a large prune loses.

Used by ``benchmarks/importance_digits.py`` and ``tests/test_digits_importance.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import load_digits_split
from ..engine import recalibrate_batchnorm
from ..engine.importance import get_importance
from ..engine.pruner import MetaPruner
from ..models import SmallResNet

__all__ = [
    "BATCH_SIZE", "CALIBRATION_IMAGES", "DigitsData", "ResultRow", "accumulate_taylor_gradients",
    "calibration_batches", "compare", "count_params", "evaluate", "load_data", "prune_copy", "train_small_resnet",
]

#: Training images used for Taylor gradients and for BN recalibration.
CALIBRATION_IMAGES = 1024
#: Batch size for training, gradients and recalibration.
BATCH_SIZE = 64


@dataclass(frozen=True)
class DigitsData:
    """Standardized digits (see :func:`lightning_prune.data.load_digits_split`)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@dataclass(frozen=True)
class ResultRow:
    """Accuracy of one criterion at one ratio; ``random`` is averaged over ``seeds`` seeds."""

    method: str
    ratio: float
    recalibrated: bool
    accuracy: float
    params: int
    seeds: int = 1
    accuracy_std: float = 0.0


def load_data(seed: int = 0) -> DigitsData:
    """The digits split used throughout (80/20 stratified, ``seed`` fixes the split)."""
    return DigitsData(*load_digits_split(val_fraction=0.2, seed=seed))


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int,
             generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(x), generator=generator) if generator is not None else torch.arange(len(x))
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


def train_small_resnet(seed: int = 0, epochs: int = 15, width: int = 32, lr: float = 1e-2,
                       weight_decay: float = 0.05, data: DigitsData | None = None) -> tuple[nn.Module, DigitsData]:
    """Train a :class:`SmallResNet` on the digits; deterministic for a given ``seed``.

    AdamW with a one-cycle learning rate, batch 64. The defaults reach 99-100% validation
    accuracy in 15-25 s on one busy CPU core. The peak learning rate matters for what
    this module measures: with 3e-3 the channels barely move from their initialisation
    (every BN scale stays near 1), so no criterion can tell them apart; with 1e-2 they
    differ, and after a 0.5 prune (with BN recalibration) magnitude led random by 10-19
    points over seeds 0-5 on one machine, by -3 to +19 over seeds 0-2 on another: the
    lead depends on the seed and the machine (``benchmarks/importance_digits.py``).

    Runs with the caller's intra-op thread count (this module never changes it). Batches
    of 64 8x8 images are so small that a thread hand-off costs more than the work: on a
    busy machine two threads were measured 50x slower per step than one (1.4 s against
    24 ms), so a caller that owns its process may want ``torch.set_num_threads(1)``
    (``benchmarks/importance_digits.py`` does). Bit-identical results need the same
    thread count, too.

    Returns:
        ``(model, data)``, the model in eval mode.
    """
    data = load_data() if data is None else data
    model = SmallResNet(num_classes=10, width=width, blocks=(2, 2), in_channels=1, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(data.x_train) // BATCH_SIZE)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for _ in range(epochs):
        for xb, yb in _batches(data.x_train, data.y_train, BATCH_SIZE, gen):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            sched.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), data


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in eval mode (the model's mode is restored afterwards)."""
    from torchmetrics.classification import MulticlassAccuracy

    metric = MulticlassAccuracy(num_classes=10, average="micro")
    was_training = model.training
    model.eval()
    try:
        for xb, yb in _batches(x, y, batch_size):
            metric.update(model(xb), yb)
    finally:
        model.train(was_training)
    return float(metric.compute())


def accumulate_taylor_gradients(model: nn.Module, data: DigitsData) -> None:
    """Cross-entropy gradients over the calibration images, for the Taylor criterion.

    Eval mode, so the gradient is that of the loss the deployed model has (BN uses its
    running statistics); the loss is averaged over the whole calibration set.
    """
    x, y = data.x_train[:CALIBRATION_IMAGES], data.y_train[:CALIBRATION_IMAGES]
    model.eval()
    model.zero_grad(set_to_none=True)
    for xb, yb in _batches(x, y, BATCH_SIZE):
        (F.cross_entropy(model(xb), yb, reduction="sum") / len(x)).backward()


def prune_copy(model: nn.Module, method: str, ratio: float, data: DigitsData, recalibrate: bool,
               seed: int = 0) -> nn.Module:
    """A pruned copy of ``model``; ``model`` itself is left untouched.

    Args:
        model: the trained model.
        method: an importance name (``"magnitude"``, ``"taylor"``, ``"random"``...).
        ratio: fraction of each group's channels to remove.
        data: the digits; training images feed Taylor gradients and recalibration.
        recalibrate: re-estimate BatchNorm statistics on the calibration images after
            the prune.
        seed: seed of the random criterion (ignored by the others).

    The classifier needs no ``ignored_layers``: the engine protects model outputs.
    """
    pruned = copy.deepcopy(model).eval()
    kwargs = {"seed": seed} if method == "random" else {}
    importance = get_importance(method, **kwargs)
    if method == "taylor":
        accumulate_taylor_gradients(pruned, data)
    pruner = MetaPruner(pruned, data.x_train[:1], importance=importance, pruning_ratio=ratio)
    pruner.step()
    pruned.zero_grad(set_to_none=True)
    if recalibrate:
        recalibrate_batchnorm(pruned, calibration_batches(data))
    return pruned.eval()


def calibration_batches(data: DigitsData) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first :data:`CALIBRATION_IMAGES` training images in batches of :data:`BATCH_SIZE`."""
    n = CALIBRATION_IMAGES
    return _batches(data.x_train[:n], data.y_train[:n], BATCH_SIZE)


def count_params(model: nn.Module) -> int:
    """Number of parameter elements."""
    return sum(p.numel() for p in model.parameters())


def compare(model: nn.Module | None = None, data: DigitsData | None = None,
            ratios: Sequence[float] = (0.3, 0.5), methods: Sequence[str] = ("magnitude", "taylor", "random"),
            random_seeds: int = 3) -> list[ResultRow]:
    """Accuracy of every method at every ratio, without and with BN recalibration.

    ``random`` is the mean over seeds ``0..random_seeds-1`` (its spread is in
    ``accuracy_std``). Trains a model with :func:`train_small_resnet` when none is given.
    """
    if model is None:
        model, data = train_small_resnet()
    data = load_data() if data is None else data
    rows = []
    for ratio in ratios:
        for method in methods:
            seeds = range(random_seeds) if method == "random" else range(1)
            for recal in (False, True):
                accs, params = [], 0
                for seed in seeds:
                    pruned = prune_copy(model, method, ratio, data, recalibrate=recal, seed=seed)
                    accs.append(evaluate(pruned, data.x_val, data.y_val))
                    params = count_params(pruned)
                t = torch.tensor(accs, dtype=torch.float64)
                rows.append(ResultRow(method, ratio, recal, float(t.mean()), params, len(accs),
                                      float(t.std(unbiased=False))))
    return rows
