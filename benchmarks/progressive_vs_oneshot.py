"""Progressive prune-during-finetune against one-shot prune + finetune, same total epochs.

    python benchmarks/progressive_vs_oneshot.py [--epochs 40] [--target-macs 0.09]

Same SmallResNet on scikit-learn's digits and the same number of epochs for every run:
* dense: no pruning;
* one-shot: train, prune once to the MACs target, finetune for the remaining epochs;
* progressive: train, prune in several steps toward the target while training continues.
Prints val accuracy (torchmetrics), MACs and params for each.
"""

from __future__ import annotations

import argparse
import warnings

import lightning.pytorch as pl
import torch

from lightning_prune import PruningCallback
from lightning_prune.lightning import DigitsDataModule, ImageClassifier
from lightning_prune.models import SmallResNet

warnings.filterwarnings("ignore")


def run(epochs: int, callback: PruningCallback | None) -> tuple[float, float, float]:
    pl.seed_everything(0, verbose=False)
    model = ImageClassifier(SmallResNet(width=32), num_classes=10, input_shape=[1, 1, 8, 8])
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[callback] if callback else [], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DigitsDataModule())
    acc = float(trainer.callback_metrics["val_acc"])
    from lightning_prune.engine.utils import count_ops_and_params

    macs, params = count_ops_and_params(model, torch.zeros(1, 1, 8, 8))
    return acc, macs, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--target-macs", type=float, default=0.09)
    parser.add_argument("--start", type=int, default=8, help="epoch of the first prune")
    parser.add_argument("--steps", type=int, default=8, help="progressive prune steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [("dense", run(args.epochs, None))]
    rows.append(("one-shot", run(args.epochs, PruningCallback(target_macs=args.target_macs, prune_epochs=[args.start]))))
    rows.append(("progressive", run(args.epochs, PruningCallback(
        target_macs=args.target_macs, pruning_steps=args.steps, start_epoch=args.start, every_n_epochs=2,
        schedule="exponential"))))
    base_macs = rows[0][1][1]
    print(f"\n{args.epochs} epochs each; MACs target {args.target_macs:.0%} of dense")
    print(f"{'run':<12s} {'val acc':>8s} {'MACs (M)':>9s} {'x fewer':>8s} {'params (K)':>10s}")
    for name, (acc, macs, params) in rows:
        print(f"{name:<12s} {100 * acc:7.2f}% {macs / 1e6:9.3f} {base_macs / macs:7.1f}x {params / 1e3:10.1f}")


if __name__ == "__main__":
    main()
