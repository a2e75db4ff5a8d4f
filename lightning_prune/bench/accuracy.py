"""Top-1 accuracy with torchmetrics, and the dense training that makes it meaningful."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

__all__ = ["top1_accuracy", "validation_size"]


def top1_accuracy(model: nn.Module, datamodule: pl.LightningDataModule, num_classes: int,
                  device: str | torch.device = "cpu") -> float:
    """Micro-averaged top-1 (torchmetrics ``MulticlassAccuracy``) over the validation set."""
    metric = MulticlassAccuracy(num_classes=num_classes, average="micro").to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in datamodule.val_dataloader():
                x, y = batch[0], batch[1]
                metric.update(model(x.to(device)), y.to(device))
    finally:
        model.train(was_training)
    return float(metric.compute())


def validation_size(datamodule: pl.LightningDataModule) -> int | None:
    """Samples in the validation set (``None`` if its dataset has no length).

    The accuracy of ``n`` samples has a binomial standard error ``sqrt(p (1 - p) / n)``:
    the plots draw it as the accuracy's error bar.
    """
    dataset = getattr(datamodule.val_dataloader(), "dataset", None)
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None
