"""A generic image-classification LightningModule with torchmetrics accuracy."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..callback.checkpoint import PruningCheckpointMixin


class ImageClassifier(PruningCheckpointMixin, pl.LightningModule):
    """Wraps any classifier ``nn.Module``; logs ``val_acc`` (torchmetrics top-1).

    The optimizer comes from ``configure_optimizers`` (Adam, ``lr``) unless LightningCLI's
    ``optimizer:`` / ``lr_scheduler:`` keys are used.

    Hyperparameters are saved, so ``ImageClassifier.load_from_checkpoint(path)`` rebuilds
    it, pruned checkpoints included (:class:`~lightning_prune.PruningCheckpointMixin`). Built
    from LightningCLI, the network's own config is saved too; built in Python with a network
    object, pass it again: ``ImageClassifier.load_from_checkpoint(path, model=SmallResNet(...))``.

    Args:
        model: the network, e.g. ``lightning_prune.models.SmallResNet``.
        num_classes: number of classes (for the accuracy metric).
        input_shape: one example input shape, used as ``example_input_array``.
        lr: learning rate of the default optimizer.
    """

    def __init__(self, model: nn.Module, num_classes: int = 10, input_shape: list[int] | None = None,
                 lr: float = 3e-3) -> None:
        super().__init__()
        with warnings.catch_warnings():  # LightningCLI hands over the network's config; Python, the object
            warnings.filterwarnings("ignore", "Attribute 'model' is an instance of `nn.Module`")
            self.save_hyperparameters()
        if isinstance(self.hparams.get("model"), nn.Module):  # not a config: modules belong in the state dict
            self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.lr = lr
        self.example_input_array = torch.zeros(input_shape or [1, 1, 8, 8])
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc(self(x), y)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc(self(x), y)
        self.log("test_acc", self.test_acc)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=1e-4)
