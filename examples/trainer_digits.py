"""Prune-during-finetune with a plain Python Trainer (no YAML).

    python examples/trainer_digits.py

Trains a small ResNet on scikit-learn's digits, prunes it progressively to half its MACs
while it keeps training, and loads the pruned checkpoint back into a fresh module.
"""

import lightning.pytorch as pl
import torch

from lightning_prune import PruningCallback, load_pruned_checkpoint
from lightning_prune.lightning import DigitsDataModule, ImageClassifier
from lightning_prune.models import SmallResNet


def build() -> ImageClassifier:
    return ImageClassifier(SmallResNet(width=32), num_classes=10, input_shape=[1, 1, 8, 8])


def main() -> None:
    pl.seed_everything(0)
    model = build()
    pruning = PruningCallback(target_macs=0.5, pruning_steps=3, start_epoch=4, every_n_epochs=2)
    trainer = pl.Trainer(max_epochs=12, callbacks=[pruning], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False)
    trainer.fit(model, DigitsDataModule())
    trainer.save_checkpoint("digits_pruned.ckpt")

    fresh = load_pruned_checkpoint(build(), "digits_pruned.ckpt")  # torch.load(weights_only=True) inside
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    fresh.eval()
    assert torch.allclose(fresh(x), model(x))
    print(f"reloaded: {sum(p.numel() for p in fresh.parameters())} params, same outputs as the trained model")


if __name__ == "__main__":
    main()
