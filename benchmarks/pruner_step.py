"""Pruner benchmark: MetaPruner construction and step() against Torch-Pruning, in one run.

    python benchmarks/pruner_step.py [--repeats 3] [--threads 2] [--models resnet50 densenet121 vit_b_16]

For each torchvision model (random init), every run prunes a fresh ``copy.deepcopy``
made outside the timed region: construction of ``MetaPruner`` (graph build) and one
``step()`` at ``pruning_ratio=0.5`` with L2 group magnitude are timed separately. The
table shows medians over ``--repeats`` runs (after one untimed warm-up run per model and
library; the two libraries' runs take turns, so both see the same machine), ours, Torch-Pruning's and ours/theirs for construction, step and total, plus
the parameters left so that both visibly did the same work.

The classifier is left alone: our graph protects model outputs by itself, and
Torch-Pruning gets ``ignored_layers=[final Linear]``. For ``vit_b_16`` both run with
their defaults: Torch-Pruning's ``num_heads`` (its README passes it for timm's qkv
Linear) is left out, because with ``num_heads`` set for torchvision's
``nn.MultiheadAttention`` it keeps the residual width and leaves 67% of the parameters,
against 25.5% for ours, so the two would not do the same work. With the defaults both
leave 25.5%. (Torch-Pruning's pruned ViT then needs ``model.hidden_dim`` set by hand
before it runs; that is outside the timed region and irrelevant here.)

Target: ours at most 0.5x Torch-Pruning's time. Torch-Pruning is used here only as a
baseline; lightning_prune never imports it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torchvision.models as tvm
from graph_build import interleaved, torch_pruning_or_none  # sibling script, same directory
from torch import nn

import lightning_prune.engine as lp

MODELS = ("resnet50", "densenet121", "vit_b_16")
RATIO = 0.5


def final_linear(model: nn.Module) -> nn.Module:
    """The last ``nn.Linear`` in module order: the classifier of these models."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def ours(model: nn.Module, x: torch.Tensor) -> tuple[Callable[[], object], Callable[[object], object]]:
    def build():
        return lp.pruner.MetaPruner(model, x, importance=lp.importance.GroupMagnitudeImportance(p=2),
                                    pruning_ratio=RATIO)

    return build, lambda pruner: pruner.step()


def theirs(tpp, model: nn.Module, x: torch.Tensor) -> tuple[Callable[[], object], Callable[[object], object]]:
    def build():
        return tpp.pruner.MetaPruner(model, x, importance=tpp.importance.GroupMagnitudeImportance(p=2),
                                     pruning_ratio=RATIO, ignored_layers=[final_linear(model)])

    return build, lambda pruner: pruner.step()


def pruning_run(make: Callable, base: nn.Module, x: torch.Tensor, last: dict) -> Callable[[], tuple[float, float]]:
    """A run that prunes a fresh ``copy.deepcopy(base)`` and returns (construction ms, step ms).

    ``make(model, x)`` returns ``(build, step)``: ``build()`` makes the pruner,
    ``step(pruner)`` prunes. The copy is made outside the timed region; the pruned model
    is left in ``last["model"]``.
    """

    def run() -> tuple[float, float]:
        model = copy.deepcopy(base)
        build, step = make(model, x)
        t0 = time.perf_counter()
        pruner = build()
        t1 = time.perf_counter()
        step(pruner)
        t2 = time.perf_counter()
        last["model"] = model
        return 1000 * (t1 - t0), 1000 * (t2 - t1)

    return run


def medians(times: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description="MetaPruner construction + step() benchmark")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Torch-Pruning's notes on unwrapped parameters, skipped groups
    tpp = torch_pruning_or_none()
    print(f"ratio {RATIO}, L2 magnitude, median of {args.repeats} runs, {args.threads} threads; times in ms")
    hdr = f"{'model':12s} {'':6s} {'construct':>10s} {'step':>9s} {'total':>9s} {'params left':>12s}"
    print(hdr)
    for name in args.models:
        torch.manual_seed(0)
        base = tvm.get_model(name).eval()
        x = torch.randn(1, 3, 224, 224)
        dense = sum(p.numel() for p in base.parameters())
        mine, other = {}, {}
        runs = [pruning_run(ours, base, x, mine)]
        if tpp is not None:
            runs.append(pruning_run(lambda m, x: theirs(tpp, m, x), base, x, other))
        times = interleaved(runs, args.repeats)  # the libraries take turns; see graph_build.interleaved
        ob, os_ = medians(times[0])
        print(f"{name:12s} {'ours':6s} {ob:10.0f} {os_:9.0f} {ob + os_:9.0f} {n_params(mine['model']) / dense:11.1%}")
        if tpp is None:
            print(f"{'':12s} {'TP':6s} {'(torch_pruning not installed)':>30s}")
            continue
        tb, ts = medians(times[1])
        print(f"{'':12s} {'TP':6s} {tb:10.0f} {ts:9.0f} {tb + ts:9.0f} {n_params(other['model']) / dense:11.1%}")
        print(f"{'':12s} {'ratio':6s} {ob / tb:9.2f}x {os_ / ts:8.2f}x {(ob + os_) / (tb + ts):8.2f}x")


if __name__ == "__main__":
    main()
