"""Prune-during-finetune under DDP: 2 CPU processes (gloo) on scikit-learn's digits.

    python examples/ddp_digits.py [--epochs 6] [--check]

Both ranks must make the same pruning decisions and end with identical architectures and
parameters. With ``--check``, every rank prints a fingerprint of its parameters and the
script fails if they differ.
"""

from __future__ import annotations

import argparse
import hashlib

import lightning.pytorch as pl
import torch

from lightning_prune import PruningCallback
from lightning_prune.lightning import DigitsDataModule, ImageClassifier
from lightning_prune.models import SmallResNet


def fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        if isinstance(p, torch.Tensor):
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--check", action="store_true", help="compare parameters across ranks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(0)
    model = ImageClassifier(SmallResNet(width=16), num_classes=10, input_shape=[1, 1, 8, 8])
    callback = PruningCallback(pruning_ratio=0.5, prune_epochs=[1, 3], recalibration_batches=4)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=2, strategy="ddp",
                         callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DigitsDataModule(batch_size=64))
    fp = fingerprint(model)
    shapes = [tuple(p.shape) for p in model.parameters()]
    gathered = trainer.strategy.all_gather(torch.tensor([int(fp, 16) % (2**62)], dtype=torch.long))
    if trainer.is_global_zero:
        print(f"rank fingerprints: {gathered.flatten().tolist()}; params {sum(p.numel() for p in model.parameters())}; "
              f"first conv width {shapes[0][0]}")
        if args.check and len(set(gathered.flatten().tolist())) != 1:
            raise SystemExit("DDP ranks ended with different parameters")
        if args.check:
            print("DDP check passed: identical architecture and parameters on all ranks")


if __name__ == "__main__":
    main()
