"""torch.profiler tables: which operators a forward pass spends its time in.

MACs say how much arithmetic a model does; the profiler says where the time goes. A
masked model has the same convolution calls with the same shapes as the dense one, a
structurally pruned one has smaller ones; for a tiny model, per-operator overhead can
dominate both, which is why MACs and latency differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ..engine.harness import call_model, move_inputs
from ..engine.utils import thread_count

__all__ = ["OperatorProfile", "profile_operators"]


@dataclass
class OperatorProfile:
    """The top operators of ``runs`` forward passes, by self time."""

    table: str
    top: list[dict[str, Any]] = field(default_factory=list)
    trace_path: str | None = None


def profile_operators(model: nn.Module, inputs: Any, *, device: str | torch.device = "cpu",
                      threads: int | None = None, row_limit: int = 12, runs: int = 5, warmup: int = 3,
                      trace_path: str | None = None) -> OperatorProfile:
    """Profile ``runs`` forwards (after ``warmup``) and return the top ``row_limit`` operators.

    Sorted by self CPU time on CPU, by self device time on CUDA. ``trace_path`` also writes
    a chrome trace.
    """
    device = torch.device(device)
    model.to(device)
    inputs = move_inputs(inputs, device)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    was_training = model.training
    model.eval()
    try:
        with thread_count(threads), torch.inference_mode():
            for _ in range(warmup):
                call_model(model, inputs)
            with profile(activities=activities) as prof:
                for _ in range(runs):
                    call_model(model, inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize()
    finally:
        model.train(was_training)
    averages = prof.key_averages()
    table = averages.table(sort_by=sort_by, row_limit=row_limit)
    ranked = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:row_limit]
    top = [{"name": e.key, "calls": int(e.count), "self_cpu_ms": e.self_cpu_time_total / 1000.0 / runs,
            "cpu_total_ms": e.cpu_time_total / 1000.0 / runs} for e in ranked]
    if trace_path:
        prof.export_chrome_trace(trace_path)
    return OperatorProfile(table=table, top=top, trace_path=trace_path)
