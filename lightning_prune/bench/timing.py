"""The benchmark's latency columns: each model timed in turns with the dense one.

A speedup is the ratio of two timings, and the machine's speed drifts between the dense
row (timed first) and a method row (timed minutes later). Every method row therefore
re-times the dense network in rounds that alternate with the pruned one
(:func:`lightning_prune.engine.utils.compare_latency`, the callback's measurement too), at
every batch size, and takes the speedup from the paired per-round ratios. The dense row
is timed on its own, with the same rounds.

Before its first timing at a batch size, the row's own model gets ``warmup`` untimed calls
and, with ``settle``, windows of calls until two agree (``measure_latency``'s warm-up):
a fresh model's first calls allocate and pick kernels. The dense model has been through
that in its own row; both get ``warmup_seconds`` more before every comparison.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..engine.utils import compare_latency, measure_latency
from .config import BenchConfig
from .results import RunResult

__all__ = ["time_row"]


def _settle(network: nn.Module, batch: torch.Tensor, cfg: BenchConfig) -> int:
    """The first-time warm-up of ``network`` at this batch size; how many calls it made."""
    stats = measure_latency(network, batch, warmup=cfg.warmup, repeats=1, warmup_seconds=0.0, settle=cfg.settle,
                            max_warmup_seconds=cfg.max_warmup_seconds, device=cfg.device, threads=cfg.threads)
    return stats.warmup + stats.repeats


def time_row(row: RunResult, network: nn.Module, input_shape: list[int], cfg: BenchConfig,
             dense: nn.Module | None = None) -> None:
    """Fill ``row``'s latency fields at every ``cfg.batch_sizes`` entry.

    Args:
        row: the row to fill (``latency``, ``timing``, ``threads``, ``load_before`` /
            ``load_after``; with ``dense`` also ``dense_latency`` and the paired
            ``speedup`` / ``speedup_p25`` / ``speedup_p75``).
        network: the row's model, already on ``cfg.device``.
        input_shape: one input, batch dim included; random inputs of that shape are timed.
        dense: the model's dense network (on ``cfg.device``), re-timed in turns with
            ``network``; ``None`` for the dense row itself.
    """
    if dense is network:
        raise ValueError("time_row: `dense` is the row's own network; pass dense=None for the dense row")
    models: dict[str, nn.Module] = {"pruned": network} if dense is None else {"dense": dense, "pruned": network}
    for bs in cfg.batch_sizes:
        batch = torch.randn(bs, *input_shape[1:])
        settled = _settle(network, batch, cfg)
        result = compare_latency(models, batch, rounds=cfg.repeats, min_run_time=cfg.min_run_time,
                                 warmup_seconds=cfg.warmup_seconds, threads=cfg.threads, device=cfg.device)
        stats = result.stats
        row.latency[bs] = stats["pruned"].as_dict()
        info: dict[str, Any] = {"threads": result.threads, "cpus": result.cpus, "rounds": cfg.repeats,
                                "first_warmup_calls": settled, "load_before": result.load_before,
                                "load_after": result.load_after}
        row.timing[bs] = info
        row.threads = result.threads
        if dense is not None:
            row.dense_latency[bs] = stats["dense"].as_dict()
            s = result.speedup("dense", "pruned")
            row.speedup[bs], row.speedup_p25[bs], row.speedup_p75[bs] = s.median, s.p25, s.p75
    timings = list(row.timing.values())
    row.load_before, row.load_after = timings[0]["load_before"], timings[-1]["load_after"]
