"""Structural pruning by an importance criterion: channels are removed, the model shrinks."""

from __future__ import annotations

import lightning.pytorch as pl
import torch.nn.functional as F

import lightning_prune.engine as tp

from .base import MethodContext, PruneTarget, PruningMethod, register_method

__all__ = ["ImportanceMethod"]

_GRADIENT_CRITERIA = ("taylor", "hessian")


class ImportanceMethod(PruningMethod):
    """Prune once with one importance criterion, then optionally finetune.

    Without finetuning the engine prunes directly (``MetaPruner``), with BatchNorm
    recalibration on training batches. With ``finetune_epochs > 0`` the prune and the
    finetune run through :class:`~lightning_prune.PruningCallback`, exactly as in a user's
    fit. Gradient criteria (Taylor, Hessian) get their gradients from training batches.
    """

    kind = "structural"

    def __init__(self, importance: str) -> None:
        self.importance = importance

    def apply(self, module: pl.LightningModule, target: PruneTarget, ctx: MethodContext) -> None:
        if self.importance in _GRADIENT_CRITERIA:
            ctx.require_data(self.name)
        if ctx.finetune_epochs > 0:
            self._prune_and_finetune(module, target, ctx)
            return
        imp = tp.importance.get_importance(self.importance)
        network = module.model
        was_training = network.training
        network.eval()  # gradients without touching BatchNorm statistics
        try:
            if self.importance in _GRADIENT_CRITERIA:
                network.zero_grad(set_to_none=True)
                for x, y in ctx.train_batches(ctx.importance_batches):
                    F.cross_entropy(network(x), y).backward()
                    if hasattr(imp, "accumulate_grad"):
                        imp.accumulate_grad(network)
            pruner = tp.pruner.MetaPruner(network, ctx.example_input, importance=imp, round_to=ctx.round_to,
                                          ignored_layers=ctx.ignored_layers, **target.pruner_kwargs())
            pruner.step()
        finally:
            network.train(was_training)
            network.zero_grad(set_to_none=True)
        if ctx.recalibrate_bn:
            batches = ctx.train_batches(ctx.recalibration_batches)
            if batches:
                tp.recalibrate_batchnorm(network, batches)

    def _prune_and_finetune(self, module: pl.LightningModule, target: PruneTarget, ctx: MethodContext) -> None:
        from lightning_prune import PruningCallback

        data = ctx.require_data(self.name)
        callback = PruningCallback(importance=self.importance, prune_epochs=[0], round_to=ctx.round_to,
                                   ignored_layers=[f"model.{n}" for n in ctx.ignored_layers],
                                   recalibrate_bn=ctx.recalibrate_bn, recalibration_batches=ctx.recalibration_batches,
                                   importance_batches=ctx.importance_batches, monitor=None, measure_latency=False,
                                   **target.pruner_kwargs())
        ctx.trainer(ctx.finetune_epochs, [callback]).fit(module, data)


for _name in ("magnitude", "l1", "taylor", "hessian", "bn_scale", "lamp", "fpgm", "random"):
    register_method(_name, lambda name=_name: ImportanceMethod(name))
