"""Per-step training overhead of PruningCallback on epochs that do not prune.

    python benchmarks/callback_overhead.py [--epochs 4]

Times every training step (batch start to batch end) of the same digits run without the
callback, with it (no regularization, prune scheduled after the run), and with group-norm
sparse training; prints medians and the ratios to the plain run.
Targets: <= 1.05x without regularization, <= 1.15x with it.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from lightning_prune import PruningCallback
from lightning_prune.lightning import DigitsDataModule, ImageClassifier
from lightning_prune.models import SmallResNet

warnings.filterwarnings("ignore")


class StepTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch > 0:  # skip warm-up epoch
            self.times.append(time.perf_counter() - self._t)


def median_step(epochs: int, callback: PruningCallback | None) -> float:
    pl.seed_everything(0, verbose=False)
    model = ImageClassifier(SmallResNet(width=32), num_classes=10, input_shape=[1, 1, 8, 8])
    timer = StepTimer()
    callbacks = [timer] + ([callback] if callback else [])
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DigitsDataModule())
    return statistics.median(timer.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    never = [args.epochs + 100]
    plain = median_step(args.epochs, None)
    with_cb = median_step(args.epochs, PruningCallback(pruning_ratio=0.5, prune_epochs=never))
    with_reg = median_step(args.epochs, PruningCallback(pruning_ratio=0.5, prune_epochs=never,
                                                        regularization="group_norm", regularization_strength=1e-4))
    print(f"{'run':<28s} {'median step (ms)':>16s} {'ratio':>7s}")
    for name, t in (("plain", plain), ("callback, no regularization", with_cb), ("callback + group_norm reg", with_reg)):
        print(f"{name:<28s} {1000 * t:16.2f} {t / plain:6.2f}x")


if __name__ == "__main__":
    main()
