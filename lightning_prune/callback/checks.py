"""Setup-time checks of the Trainer a prune will run under: fail before the first step."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from .schedule import PruningSchedule

#: Strategies that shard parameters and restore them after setup: shapes cannot change under them.
SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


def check_trainer(trainer: pl.Trainer, pl_module: pl.LightningModule, schedule: PruningSchedule,
                  importance: Any, custom_loss: bool) -> None:
    """Strategy, schedule against ``max_epochs``, and gradient passes under manual optimization."""
    strategy = type(trainer.strategy).__name__
    if strategy in SHARDED_STRATEGIES:
        raise ValueError(f"PruningCallback: {strategy} shards parameters and restores them after setup, so the "
                         f"callback cannot reshape them; use strategy='ddp' (or a single device)")
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs >= 0:
        late = [e for e in schedule.epochs if e >= max_epochs]
        if late:
            raise ValueError(f"PruningCallback: prune epochs {late} are never reached: Trainer(max_epochs="
                             f"{max_epochs}) runs epochs 0..{max_epochs - 1}. Raise max_epochs or move the "
                             f"schedule (start_epoch, every_n_epochs, pruning_steps or prune_epochs)")
    if getattr(importance, "needs_gradients", False) and not pl_module.automatic_optimization and not custom_loss:
        raise ValueError(
            f"PruningCallback: {type(importance).__name__} needs gradients, and {type(pl_module).__name__} uses "
            f"manual optimization, whose training_step steps the optimizers itself, so the callback cannot call it "
            f"for a loss. Subclass PruningCallback and override importance_loss(pl_module, batch, batch_idx), or "
            f"use a criterion that needs no gradients (magnitude, lamp, fpgm, bn_scale)")
    check_weight_averaging(trainer, pl_module)


def check_weight_averaging(trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
    """Refuse averaged copies of the model (SWA, EMA): taken with the dense shapes, a prune cannot reshape
    them, and their next update after a prune would stop the fit with a size mismatch."""
    from lightning.pytorch import callbacks
    from torch.optim.swa_utils import AveragedModel

    kinds = tuple(c for c in (callbacks.StochasticWeightAveraging, getattr(callbacks, "WeightAveraging", None)) if c)
    averaging = [type(c).__name__ for c in trainer.callbacks if isinstance(c, kinds)]
    if averaging:
        raise ValueError(
            f"PruningCallback: {', '.join(averaging)} keeps an averaged copy of the model, taken at setup with the "
            f"dense shapes; a prune cannot reshape it, and its next update would fail with a size mismatch. Prune "
            f"first, then average in a second fit of the pruned module: trainer.fit(module) with {averaging[0]} "
            f"and without PruningCallback")
    inside = [name for name, m in pl_module.named_modules() if isinstance(m, AveragedModel)]
    if inside:
        raise ValueError(
            f"PruningCallback: {type(pl_module).__name__} holds a torch.optim.swa_utils.AveragedModel at "
            f"{', '.join(repr(n) for n in inside)}: its copy of the weights keeps the dense shapes, and its next "
            f"update_parameters after a prune would fail with a size mismatch. Create the averaged model after "
            f"pruning (in a second fit of the pruned module), or keep it out of the module being pruned")
