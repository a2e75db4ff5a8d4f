"""Prune-during-finetune under DDP: 2 CPU processes (gloo) on scikit-learn's digits.

    python examples/ddp_digits.py [--epochs 4] [--importance magnitude taylor ...|all] [--check]

Each rank trains on its own shard of the data (Lightning's DistributedSampler), so a
data-dependent importance sees different batches on each rank; the callback averages
gradients and accumulated statistics across ranks before deciding. Both ranks must make
the same pruning decisions and end with identical architectures and parameters. With
``--check`` every rank prints a fingerprint of its parameters and the script fails if they
differ. ``--unseeded-random`` instead uses an unseeded random criterion, which must be
refused on every rank with the model unchanged.
"""

from __future__ import annotations

import argparse
import hashlib

import lightning.pytorch as pl
import torch

import lightning_prune.engine as tp
from lightning_prune import PruningCallback
from lightning_prune.lightning import DigitsDataModule, ImageClassifier
from lightning_prune.models import SmallResNet

IMPORTANCES = ["magnitude", "l1", "taylor", "hessian", "bn_scale", "lamp", "fpgm", "random"]


def fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        if isinstance(p, torch.Tensor):
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def criterion(name: str) -> object:
    # a seeded random criterion draws the same scores on every rank; the others get the data
    return tp.importance.RandomImportance(seed=0) if name == "random" else name


def run(name: str, epochs: int, check: bool) -> None:
    pl.seed_everything(0)
    model = ImageClassifier(SmallResNet(width=16), num_classes=10, input_shape=[1, 1, 8, 8])
    callback = PruningCallback(importance=criterion(name), pruning_ratio=0.5, prune_epochs=[1, 2],
                               recalibration_batches=4, importance_batches=4, measure_latency=False)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=2, strategy="ddp",
                         callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DigitsDataModule(batch_size=64))
    fp = fingerprint(model)
    gathered = trainer.strategy.all_gather(torch.tensor([int(fp, 16) % (2**62)], dtype=torch.long))
    if trainer.is_global_zero:
        print(f"[{name}] rank fingerprints: {gathered.flatten().tolist()}; params "
              f"{sum(p.numel() for p in model.parameters())}; prunes {callback.pruner.current_step}")
        if check and len(set(gathered.flatten().tolist())) != 1:
            raise SystemExit(f"[{name}] DDP ranks ended with different parameters")
        if check:
            print(f"[{name}] DDP check passed: identical architecture and parameters on all ranks")


def run_unseeded_random() -> None:
    pl.seed_everything(0)
    torch.manual_seed(1000 + int(__import__("os").environ.get("LOCAL_RANK", "0")))  # ranks draw differently
    model = ImageClassifier(SmallResNet(width=16), num_classes=10, input_shape=[1, 1, 8, 8])
    dense = fingerprint(model)
    callback = PruningCallback(importance="random", pruning_ratio=0.5, prune_epochs=[0], measure_latency=False,
                               recalibration_batches=2)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp", callbacks=[callback],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    try:
        trainer.fit(model, DigitsDataModule(batch_size=64))
    except RuntimeError as err:
        unchanged = fingerprint(model) == dense
        print(f"rank {trainer.global_rank}: refused ({'different pruning decisions' in str(err)}), "
              f"model unchanged: {unchanged}")
        if "different pruning decisions" in str(err) and unchanged:
            print(f"rank {trainer.global_rank}: disagreement check passed")
        return
    raise SystemExit("an unseeded random criterion was not refused")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--importance", nargs="+", default=["magnitude"], help=f"any of {IMPORTANCES}, or all")
    parser.add_argument("--check", action="store_true", help="compare parameters across ranks")
    parser.add_argument("--unseeded-random", action="store_true", help="check that disagreement is refused")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        if args.unseeded_random:
            run_unseeded_random()
            return
        for name in IMPORTANCES if args.importance == ["all"] else args.importance:
            run(name, args.epochs, args.check)
    finally:
        # Lightning leaves the process group up after fit; left to interpreter exit, gloo's
        # threads were once destroyed while still joinable ("terminate called without an
        # active exception", exit code -6) after every rank had passed its checks
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
