"""Progressive prune-during-finetune against one-shot prune + finetune, same total epochs.

    python benchmarks/progressive_vs_oneshot.py [--epochs 40] [--target_macs 0.09] [--distill_target_macs 0.02]
    python benchmarks/progressive_vs_oneshot.py --runs '[progressive-50x, progressive-50x-distill]'

Same SmallResNet on scikit-learn's digits and the same number of epochs for every run:

* dense: no pruning;
* one-shot: train, prune once to ``target_macs``, finetune for the remaining epochs;
* progressive: train, prune in several steps toward ``target_macs`` while training continues;
* progressive-50x: the same toward ``distill_target_macs`` (0.02: 50x fewer MACs);
* progressive-50x-distill: the same, distilling from the frozen dense model
  (``PruningCallback(distillation_weight=..., temperature=...)``).

Prints val accuracy (torchmetrics, last epoch), MACs, params and wall time for each.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Literal

import lightning.pytorch as pl
import torch
from jsonargparse import CLI
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt

from lightning_prune import PruningCallback
from lightning_prune.engine.utils import count_ops_and_params
from lightning_prune.lightning import DigitsDataModule, ImageClassifier
from lightning_prune.models import SmallResNet

warnings.filterwarnings("ignore")

Run = Literal["dense", "one-shot", "progressive", "progressive-50x", "progressive-50x-distill"]
RUNS: tuple[str, ...] = Run.__args__  # type: ignore[attr-defined]


def run(epochs: int, callback: PruningCallback | None, lr: float) -> dict[str, float]:
    """Train one SmallResNet on digits with ``callback``; its last val accuracy, size and wall time."""
    pl.seed_everything(0, verbose=False)
    model = ImageClassifier(SmallResNet(width=32), num_classes=10, input_shape=[1, 1, 8, 8], lr=lr)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[callback] if callback else [], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", devices=1)
    start = time.perf_counter()
    trainer.fit(model, DigitsDataModule())
    seconds = time.perf_counter() - start
    macs, params = count_ops_and_params(model, torch.zeros(1, 1, 8, 8))
    return {"acc": float(trainer.callback_metrics["val_acc"]), "macs": macs, "params": params, "seconds": seconds}


def main(
    epochs: PositiveInt = 40,
    target_macs: OpenUnitInterval = 0.09,
    distill_target_macs: OpenUnitInterval = 0.02,
    start: NonNegativeInt = 8,
    steps: PositiveInt = 8,
    every_n_epochs: PositiveInt = 2,
    distillation_weight: PositiveFloat = 1.0,
    temperature: PositiveFloat = 4.0,
    lr: PositiveFloat = 3e-3,
    threads: PositiveInt = 1,
    runs: list[Run] | None = None,
) -> dict[str, dict[str, float]]:
    """Run the comparison and print its table.

    Args:
        epochs: epochs of every run (the same for all).
        target_macs: fraction of the dense MACs kept by one-shot and progressive.
        distill_target_macs: fraction kept by the two ``progressive-50x`` runs.
        start: epoch of the first prune (of the only one, for one-shot).
        steps: number of progressive prunes.
        every_n_epochs: epochs between progressive prunes.
        distillation_weight: weight of the distillation term of ``progressive-50x-distill``.
        temperature: its softmax temperature.
        lr: AdamW learning rate of every run.
        threads: ``torch.set_num_threads`` for every run.
        runs: which runs, in order (default: all of them).
    """
    last = start + every_n_epochs * (steps - 1)
    if last >= epochs:
        raise ValueError(f"the last progressive prune would be at epoch {last}, but epochs={epochs} runs epochs "
                         f"0..{epochs - 1}: raise epochs, or lower start, steps or every_n_epochs")
    torch.set_num_threads(threads)

    def progressive(target: float, **kw: float) -> PruningCallback:
        return PruningCallback(target_macs=target, pruning_steps=steps, start_epoch=start,
                               every_n_epochs=every_n_epochs, schedule="exponential", measure_latency=False, **kw)

    builders = {
        "dense": lambda: None,
        "one-shot": lambda: PruningCallback(target_macs=target_macs, prune_epochs=[start], measure_latency=False),
        "progressive": lambda: progressive(target_macs),
        "progressive-50x": lambda: progressive(distill_target_macs),
        "progressive-50x-distill": lambda: progressive(distill_target_macs, distillation_weight=distillation_weight,
                                                       temperature=temperature),
    }
    chosen = list(runs) if runs is not None else list(RUNS)
    results = {name: run(epochs, builders[name](), lr) for name in chosen}
    dense_macs = count_ops_and_params(SmallResNet(width=32), torch.zeros(1, 1, 8, 8))[0]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{epochs} epochs each; {threads} thread(s); load average {load}")
    print(f"target_macs {target_macs:.0%} (one-shot, progressive), {distill_target_macs:.0%} (50x runs); "
          f"distillation weight {distillation_weight:g}, temperature {temperature:g}")
    print(f"{'run':<24s} {'val acc':>8s} {'MACs (M)':>9s} {'x fewer':>8s} {'params (K)':>10s} {'time (s)':>9s}")
    for name, r in results.items():
        print(f"{name:<24s} {100 * r['acc']:7.2f}% {r['macs'] / 1e6:9.3f} {dense_macs / r['macs']:7.1f}x "
              f"{r['params'] / 1e3:10.1f} {r['seconds']:9.1f}")
    return results


if __name__ == "__main__":
    CLI(main, as_positional=False, description=__doc__.split("\n\n")[0])
