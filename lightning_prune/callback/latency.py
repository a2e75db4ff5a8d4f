"""The summary's latency rows: dense and pruned timed in turns, at every configured batch size.

Batch 1 on a small model measures per-operator overhead, not arithmetic, so a pruned model
can look no faster there; at a large batch the arithmetic dominates and the MACs saved show.
The callback therefore times every batch size of ``latency_batch_sizes`` (the example
input's rows cycled to that size) with :func:`lightning_prune.engine.utils.compare_latency`,
the benchmark's measurement. When the callback kept a frozen copy of the dense model, the
dense and the pruned model are timed in turns at fit end, so the machine's drift cancels
in the speedup; otherwise the dense timing from just before the first prune is used, and
the row says so.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

import lightning_prune.engine as tp

#: Rounds and seconds per round for each model and batch size: about 1 s per batch size and model.
ROUNDS = 7
MIN_RUN_TIME = 0.1
WARMUP_SECONDS = 0.5


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` for timing or teaching: eval mode, no gradients, no ``.grad``.

    ``copy.deepcopy`` of a LightningModule leaves its trainer out (``__getstate__``).
    """
    dense = copy.deepcopy(module).eval()
    for p in dense.parameters():
        p.grad = None
        p.requires_grad_(False)
    return dense


def time_models(models: dict[str, nn.Module], example: Any, batch_sizes: list[int],
                threads: int | None) -> dict[str, dict[str, float]]:
    """Per model, ``latency_ms_bs{b}`` / ``latency_iqr_ms_bs{b}`` for every batch size (primitives).

    With two models (``dense`` and ``pruned``), ``pruned`` also gets the paired speedup
    ``speedup_bs{b}`` with its quartiles. Every model gets the thread count and the load.
    """
    out: dict[str, dict[str, float]] = {name: {} for name in models}
    for b in batch_sizes:
        result = tp.utils.compare_latency(models, tp.utils.with_batch_size(example, b), rounds=ROUNDS,
                                          min_run_time=MIN_RUN_TIME, warmup_seconds=WARMUP_SECONDS, threads=threads)
        for name, stats in result.stats.items():
            out[name].update({f"latency_ms_bs{b}": stats.median_ms, f"latency_iqr_ms_bs{b}": stats.iqr_ms,
                              "latency_threads": float(result.threads), "load_cpus": float(result.cpus)})
            if result.load_before is not None and result.load_after is not None:
                out[name].update(load_before=result.load_before, load_after=result.load_after)
        if "dense" in models and "pruned" in models:
            s = result.speedup("dense", "pruned")
            out["pruned"].update({f"speedup_bs{b}": s.median, f"speedup_p25_bs{b}": s.p25,
                                  f"speedup_p75_bs{b}": s.p75, "latency_interleaved": 1.0})
    return out


def latency_batch_sizes(row: dict[str, float]) -> list[int]:
    """The batch sizes a measured row holds, in the order they were timed."""
    return [int(k.removeprefix("latency_ms_bs")) for k in row if k.startswith("latency_ms_bs")]


def latency_label(batch_size: int, threads: int) -> str:
    label = f"latency (ms, batch {batch_size}, {threads} threads)"
    if batch_size == 1:
        label += ": per-operator overhead, not arithmetic"
    return label


def latency_note(before: dict[str, float], after: dict[str, float], b: int) -> str:
    """``speedup 3.41x (IQR 3.30-3.52x), dense re-timed in turns; load 0.3 -> 0.4 on 2 CPUs``."""
    if f"speedup_bs{b}" in after:
        note = (f"speedup {after[f'speedup_bs{b}']:.2f}x (IQR {after[f'speedup_p25_bs{b}']:.2f}-"
                f"{after[f'speedup_p75_bs{b}']:.2f}x), dense re-timed in turns")
    else:
        dense, pruned = before[f"latency_ms_bs{b}"], after[f"latency_ms_bs{b}"]
        note = (f"speedup {dense / pruned:.2f}x, dense timed before the first prune (IQR "
                f"{before[f'latency_iqr_ms_bs{b}']:.3f} -> {after[f'latency_iqr_ms_bs{b}']:.3f} ms)")
    if "load_before" in after:
        note += f"; load average {after['load_before']:.1f} -> {after['load_after']:.1f} on {int(after['load_cpus'])} CPUs"
    return note


def latency_measurement(callback: Any) -> dict[str, Any]:
    """``{latency_batch_size, latency_threads}`` for the latency budget (``target_latency``):
    the first of the callback's ``latency_batch_sizes`` and its ``latency_threads``, or the
    pruner's defaults (the example input's batch, torch's thread count)."""
    sizes = getattr(callback, "latency_batch_sizes", None)
    threads = getattr(callback, "latency_threads", None)
    return {"latency_batch_size": int(sizes[0]) if sizes else None,
            "latency_threads": int(threads) if threads is not None else None}
