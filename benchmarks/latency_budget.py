"""Latency budgets against uniform channel pruning to the same MACs.

    python benchmarks/latency_budget.py [--models '[resnet50]'] [--targets '[0.5]']
        [--batch_size 16] [--threads 2] [--image_size 224] [--quick true]

For each torchvision model (random init) and each target, prune a fresh copy with
``MetaPruner(target_latency=target)`` and print the realized latency ratio (median of
dense/pruned timed in alternation, ± interquartile range), its MACs ratio, and whether it
landed within 5% of the target (or the floor it reached). Beside it, a fresh copy pruned
by a uniform channel ratio to the *same MACs* (``target_macs``), timed in the same
interleaved rounds, shows what measuring latency buys over counting MACs.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from collections.abc import Sequence

import jsonargparse
import torch
import torchvision

import lightning_prune.engine as tp
from lightning_prune.bench.allocator import steady_allocator
from lightning_prune.engine.pruner import DefaultLatencyTimer

MODELS = ("resnet50", "mobilenet_v3_large", "vit_b_16")
TARGETS = (0.75, 0.5, 0.3)


def build(name: str, image_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {"image_size": image_size} if name.startswith("vit_") else {}  # a ViT's position table is sized
    return getattr(torchvision.models, name)(**extra).eval()


def macs_of(model: torch.nn.Module, x: torch.Tensor) -> float:
    return float(tp.utils.count_ops_and_params(model, x)[0])


def interleaved(models: Sequence[torch.nn.Module], x: torch.Tensor, timer: DefaultLatencyTimer,
                rounds: int) -> list[tuple[float, float]]:
    """``(median, IQR)`` of each model's time over the first's, timed in alternation ``rounds`` times."""
    ratios: list[list[float]] = [[] for _ in models[1:]]
    for _ in range(rounds):
        times = [timer.model(m, x).median_ms for m in models]
        for i, t in enumerate(times[1:]):
            ratios[i].append(t / times[0])
    out = []
    for r in ratios:
        q1, _, q3 = statistics.quantiles(r, n=4, method="inclusive") if len(r) > 1 else (r[0],) * 3
        out.append((statistics.median(r), q3 - q1))
    return out


def run(name: str, target: float, batch_size: int, threads: int, image_size: int, repeats: int,
        rounds: int) -> dict:
    example = torch.randn(1, 3, image_size, image_size)
    batch = example.repeat(batch_size, 1, 1, 1)
    timer = DefaultLatencyTimer(torch.device("cpu"), threads, repeats=repeats)
    dense = build(name, image_size)
    dense_macs = macs_of(dense, example)

    aware = build(name, image_size)
    began = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruner = tp.pruner.MetaPruner(aware, example, target_latency=target, latency_batch_size=batch_size,
                                      latency_timer=timer)
        pruner.step()
    solve_s = time.perf_counter() - began
    report = pruner.latency_report
    aware_macs = macs_of(aware, example) / dense_macs

    uniform = build(name, image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp.pruner.MetaPruner(uniform, example, target_macs=aware_macs).step()
    uniform_macs = macs_of(uniform, example) / dense_macs
    (aware_ratio, aware_iqr), (uniform_ratio, uniform_iqr) = interleaved([dense, aware, uniform], batch, timer,
                                                                       rounds)
    notes = [str(w.message).split(";")[0] for w in caught if "target_latency" in str(w.message)]
    return dict(model=name, target=target, realized=report.realized, spread=report.spread,
                within=report.within_tolerance, floor=report.floor, macs=aware_macs, retimed=aware_ratio,
                retimed_iqr=aware_iqr, uniform_macs=uniform_macs, uniform=uniform_ratio, uniform_iqr=uniform_iqr,
                dense_ms=report.dense_ms, trials=report.trials, snapped=report.snapped_groups, solve_s=solve_s,
                notes=notes)


def row(r: dict) -> str:
    verdict = "yes" if r["within"] else (f"no: floor {r['floor']:.3f}" if r["floor"] is not None else "no")
    return (f"| {r['model']} | {r['target']:.2f} | {r['realized']:.3f} ± {r['spread']:.3f} | {verdict} | "
            f"{r['macs']:.3f} | {r['retimed']:.3f} ± {r['retimed_iqr']:.3f} | {r['uniform_macs']:.3f} | "
            f"{r['uniform']:.3f} ± {r['uniform_iqr']:.3f} | {r['dense_ms']:.0f} | {r['trials']} | {r['snapped']} | "
            f"{r['solve_s']:.0f} |")


HEADER = ("| model | target | realized ± IQR | within 5% | MACs | re-timed ± IQR | uniform MACs | "
          "uniform latency ± IQR | dense ms | trials | snapped groups | solve s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(models: list[str] | None = None, targets: list[float] | None = None, batch_size: int = 16,
         threads: int | None = None, image_size: int = 224, quick: bool = False) -> list[dict]:
    """Run the benchmark and print a Markdown table.

    Args:
        models: torchvision model names (default resnet50, mobilenet_v3_large, vit_b_16).
        targets: fractions of the dense latency (default 0.75, 0.5, 0.3).
        batch_size: rows of the timed input; large enough that arithmetic dominates.
        threads: intra-op threads while timing (default: torch's count).
        image_size: input height and width.
        quick: fewer timed runs (3 a measurement, 2 interleaved rounds) and only the first target.
    """
    models = list(models or MODELS)
    targets = list(targets or TARGETS)
    if not all(0 < t < 1 for t in targets):
        raise ValueError(f"targets must be fractions in (0, 1), got {targets}")
    if batch_size < 1 or image_size < 16 or (threads is not None and threads < 1):
        raise ValueError("batch_size and threads must be >= 1 and image_size >= 16")
    threads = threads or torch.get_num_threads()
    if quick:
        targets = targets[:1]
    repeats, rounds = (3, 2) if quick else (5, 3)
    allocator = steady_allocator()  # else the first, larger model pays for fresh pages (docs/benchmark.md)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"CPU, batch {batch_size}, {threads} threads, {image_size}x{image_size}, torch {torch.__version__}; "
          f"allocator {allocator}; load average at start {load}")
    print(HEADER, flush=True)
    results = []
    for name in models:
        for target in targets:
            r = run(name, target, batch_size, threads, image_size, repeats, rounds)
            results.append(r)
            print(row(r), flush=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at end {load}")
    for r in results:
        for note in r["notes"]:
            print(f"- {r['model']} @ {r['target']}: {note}")
    return results


if __name__ == "__main__":
    jsonargparse.CLI(main, as_positional=False)
