"""Importance criteria on real data: a small residual CNN trained on scikit-learn's digits.

    python benchmarks/importance_digits.py [--seed 0] [--random-seeds 3] [--threads 1] [--no-torch-pruning]

Trains :class:`lightning_prune.models.SmallResNet` on the digits (about 20 s), prunes a
copy at ratios 0.3 and 0.5 with the magnitude, Taylor and random criteria, and prints
the validation accuracy before any finetuning, without and with BatchNorm
recalibration on 1,024 training images, next to params and MACs. Random is the mean
over ``--random-seeds`` seeds.

When ``torch_pruning`` is installed, the same trained model is pruned with
Torch-Pruning's MetaPruner and its magnitude/Taylor/random importances (same gradients,
same recalibration), side by side. Torch-Pruning is only a baseline here;
lightning_prune never imports it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from graph_build import torch_pruning_or_none  # sibling script, same directory
from torch import nn

import lightning_prune.engine as lp
from lightning_prune.bench.digits_importance import (
    DigitsData,
    accumulate_taylor_gradients,
    calibration_batches,
    compare,
    count_params,
    evaluate,
    prune_copy,
    train_small_resnet,
)

RATIOS = (0.3, 0.5)
METHODS = ("magnitude", "taylor", "random")


def tp_prune_copy(tpp, model: nn.Module, method: str, ratio: float, data: DigitsData, recalibrate: bool,
                  seed: int) -> nn.Module:
    """Torch-Pruning's MetaPruner on a deepcopy, with the same inputs as ours."""
    pruned = copy.deepcopy(model).eval()
    importance = {
        "magnitude": lambda: tpp.importance.GroupMagnitudeImportance(p=2),
        "taylor": lambda: tpp.importance.GroupTaylorImportance(),
        "random": lambda: tpp.importance.RandomImportance(),
    }[method]()
    if method == "taylor":
        accumulate_taylor_gradients(pruned, data)
    torch.manual_seed(seed)  # TP's RandomImportance draws from the global RNG
    pruner = tpp.pruner.MetaPruner(pruned, data.x_train[:1], importance=importance, pruning_ratio=ratio,
                                   ignored_layers=[pruned.fc])
    pruner.step()
    pruned.zero_grad(set_to_none=True)
    if recalibrate:
        lp.recalibrate_batchnorm(pruned, calibration_batches(data))
    return pruned.eval()


def tp_rows(tpp, model: nn.Module, data: DigitsData, random_seeds: int) -> dict[tuple[str, float, bool], float]:
    out = {}
    for ratio in RATIOS:
        for method in METHODS:
            seeds = range(random_seeds) if method == "random" else range(1)
            for recal in (False, True):
                accs = [evaluate(tp_prune_copy(tpp, model, method, ratio, data, recal, s), data.x_val, data.y_val)
                        for s in seeds]
                out[(method, ratio, recal)] = statistics.fmean(accs)
    return out


def macs_params(model: nn.Module, data: DigitsData) -> tuple[int, int]:
    macs, params = lp.utils.count_ops_and_params(model, data.x_train[:1])
    return int(macs), int(params)


def print_table(title: str, acc: Callable[[str, float, bool], float], methods: Sequence[str]) -> None:
    print(f"\n{title}")
    head = " ".join(f"{f'r={r} {tag}':>14s}" for r in RATIOS for tag in ("no recal", "recal"))
    print(f"{'method':12s} {head}")
    for method in methods:
        cells = " ".join(f"{100 * acc(method, r, recal):13.1f}%" for r in RATIOS for recal in (False, True))
        print(f"{method:12s} {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description="importance criteria on scikit-learn's digits")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--random-seeds", type=int, default=3, help="seeds averaged for the random criterion")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads for anything outside the library's single-threaded sections")
    parser.add_argument("--no-torch-pruning", action="store_true", help="skip the Torch-Pruning baseline")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model, data = train_small_resnet(seed=args.seed)
    train_s = time.perf_counter() - t0
    dense = evaluate(model, data.x_val, data.y_val)
    macs, params = macs_params(model, data)
    print(f"SmallResNet on digits: train {len(data.x_train)}, val {len(data.x_val)} images; trained in "
          f"{train_s:.1f} s; dense val accuracy {100 * dense:.1f}%, {params:,} params, {macs:,} MACs")

    rows = compare(model, data, ratios=RATIOS, methods=METHODS, random_seeds=args.random_seeds)
    ours = {(r.method, r.ratio, r.recalibrated): r.accuracy for r in rows}
    print_table(f"lightning_prune: val accuracy before finetuning (random: mean of {args.random_seeds} seeds)",
                lambda m, r, c: ours[(m, r, c)], METHODS)
    for ratio in RATIOS:
        pm, pp = macs_params(prune_copy(model, "magnitude", ratio, data, recalibrate=False), data)
        print(f"  ratio {ratio}: {pp:,} params ({100 * pp / params:.0f}%), {pm:,} MACs ({100 * pm / macs:.0f}%)")

    tpp = None if args.no_torch_pruning else torch_pruning_or_none()
    if tpp is None:
        print("\nTorch-Pruning: not installed (or --no-torch-pruning); baseline skipped")
        return
    theirs = tp_rows(tpp, model, data, args.random_seeds)
    print_table(f"Torch-Pruning {tpp.__version__} on the same trained model (same gradients and recalibration)",
                lambda m, r, c: theirs[(m, r, c)], METHODS)
    for ratio in RATIOS:
        pruned = tp_prune_copy(tpp, model, "magnitude", ratio, data, recalibrate=False, seed=0)
        print(f"  ratio {ratio}: {count_params(pruned):,} params")


if __name__ == "__main__":
    main()
