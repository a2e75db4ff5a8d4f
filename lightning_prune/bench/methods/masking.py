"""The unstructured-masking baseline: ``torch.nn.utils.prune`` zeroes weights, shapes stay.

It is here to show what masks do not give: the tensors keep their shapes, so dense
kernels do the same work and latency does not fall, whatever the sparsity.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch.nn.utils.prune as torch_prune
from torch import nn

from .base import MethodContext, PruneTarget, PruningMethod, output_layers, register_method

__all__ = ["MaskingMethod"]


class MaskingMethod(PruningMethod):
    """Global L1 unstructured masking of conv and linear weights.

    The sparsity is the fraction of weights a structural prune removes for the same target
    (:meth:`PruneTarget.weight_sparsity`). Output layers and ``ignored_layers`` are left
    alone, as the structural methods do. With ``finetune_epochs > 0`` the masked model is
    finetuned with the masks in place; the masks are then made permanent
    (``prune.remove``), leaving plain dense tensors full of zeros.
    """

    kind = "masking"

    def apply(self, module: pl.LightningModule, target: PruneTarget, ctx: MethodContext) -> None:
        network = module.model
        skip = set(ctx.ignored_layers) | set(output_layers(network, ctx.example_input))
        params = [(m, "weight") for name, m in network.named_modules()
                  if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear) and name not in skip]
        if not params:
            raise ValueError("masking: the model has no Conv/Linear weights outside the ignored/output layers")
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured,
                                        amount=target.weight_sparsity())
        try:
            if ctx.finetune_epochs > 0:
                ctx.trainer(ctx.finetune_epochs, []).fit(module, ctx.require_data(self.name))
        finally:
            for m, attr in params:
                torch_prune.remove(m, attr)


register_method("masking", MaskingMethod)
