"""Sparse training, then a structural prune: the regularizer pushes whole groups toward
zero first, so removing them costs less accuracy."""

from __future__ import annotations

import lightning.pytorch as pl

from .base import MethodContext, PruneTarget, PruningMethod, register_method

__all__ = ["SparseTrainingMethod"]

_IMPORTANCE_OF = {"group_norm": "group_norm", "bn_scale": "bn_scale", "growing_reg": "group_norm"}


class SparseTrainingMethod(PruningMethod):
    """``sparse_epochs`` of regularized training, the prune, then ``finetune_epochs``.

    All of it is one fit with :class:`~lightning_prune.PruningCallback` (its
    ``regularization`` argument and ``prune_epochs=[sparse_epochs]``), so the benchmark
    measures what a user of the callback gets.
    """

    kind = "sparse"

    def __init__(self, regularization: str) -> None:
        self.regularization = regularization

    def apply(self, module: pl.LightningModule, target: PruneTarget, ctx: MethodContext) -> None:
        from lightning_prune import PruningCallback

        data = ctx.require_data(self.name)
        callback = PruningCallback(importance=_IMPORTANCE_OF[self.regularization], regularization=self.regularization,
                                   regularization_strength=ctx.regularization_strength,
                                   prune_epochs=[ctx.sparse_epochs], round_to=ctx.round_to,
                                   ignored_layers=[f"model.{n}" for n in ctx.ignored_layers],
                                   recalibrate_bn=ctx.recalibrate_bn, recalibration_batches=ctx.recalibration_batches,
                                   monitor=None, measure_latency=False, **target.pruner_kwargs())
        # the prune happens at the start of epoch `sparse_epochs`, so train at least one epoch after it
        ctx.trainer(ctx.sparse_epochs + max(ctx.finetune_epochs, 1), [callback]).fit(module, data)


for _reg in ("group_norm", "bn_scale", "growing_reg"):
    register_method(f"sparse_{_reg}", lambda reg=_reg: SparseTrainingMethod(reg))
