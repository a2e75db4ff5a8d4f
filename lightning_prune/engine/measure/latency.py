"""Latency of a model's forward pass, measured so that the figures can be trusted.

A single timing of a forward pass is mostly noise: the first calls allocate memory and
pick kernels, CUDA launches are asynchronous, and the thread pool size changes the
result by integer factors. ``measure_latency`` therefore

* runs untimed forwards first: at least ``warmup`` of them and, if ``warmup_seconds`` is
  set, for at least that long (on a VM the first second or two of a busy loop run slower,
  whatever the number of calls, as clocks and caches settle; see docs/engine.md),
* synchronizes CUDA before starting and before stopping the clock of every run
  (otherwise only the launch is timed),
* fixes the intra-op thread count for the measurement and restores it afterwards,
* times ``repeats`` runs one by one and reports robust statistics: the median, and the
  interquartile range as the spread (a few slow outliers from a busy machine move the
  mean and the standard deviation, not these).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..harness import call_model, move_inputs, training_flags

__all__ = ["LatencyStats", "measure_latency", "summarize_times", "thread_count"]


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of ``repeats`` timed forward passes, all in milliseconds."""

    median_ms: float
    mean_ms: float
    std_ms: float
    p25_ms: float
    p75_ms: float
    min_ms: float
    max_ms: float
    warmup: int
    repeats: int

    @property
    def iqr_ms(self) -> float:
        """Interquartile range: the spread of the middle half of the runs."""
        return self.p75_ms - self.p25_ms

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "iqr_ms": self.iqr_ms}


def summarize_times(seconds: list[float], warmup: int = 0) -> LatencyStats:
    """Turn per-run durations (seconds) into :class:`LatencyStats` (milliseconds).

    Quartiles use the inclusive method, so for runs 1..5 ms they are 2 and 4 ms.
    """
    if not seconds:
        raise ValueError("summarize_times: need at least one timed run (repeats >= 1)")
    ms = [1000.0 * s for s in seconds]
    if len(ms) == 1:
        p25 = p75 = ms[0]
    else:
        p25, _, p75 = statistics.quantiles(ms, n=4, method="inclusive")
    return LatencyStats(
        median_ms=statistics.median(ms),
        mean_ms=statistics.fmean(ms),
        std_ms=statistics.stdev(ms) if len(ms) > 1 else 0.0,
        p25_ms=p25,
        p75_ms=p75,
        min_ms=min(ms),
        max_ms=max(ms),
        warmup=warmup,
        repeats=len(ms),
    )


@contextlib.contextmanager
def thread_count(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``; ``None`` leaves it alone.

    The setting is process-wide while the block runs: every other thread of the process
    sees it, and a thread that starts inside the block keeps it for its life. Nothing in
    ``lightning_prune`` enters this on your behalf (only ``measure_latency(threads=...)``
    and the benchmark's ``threads`` option, when you ask for them). It is the opt-in for a
    busy machine, where the graph's bookkeeping on one thread is faster::

        with tp.utils.thread_count(1):
            pruner = tp.pruner.MetaPruner(model, example_inputs, pruning_ratio=0.5)
            pruner.step()
    """
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1 (or None to keep torch's setting), got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure_latency(
    model: nn.Module,
    inputs: Any,
    *,
    warmup: int = 10,
    repeats: int = 50,
    warmup_seconds: float = 0.0,
    settle: float | None = None,
    max_warmup_seconds: float = 10.0,
    device: str | torch.device | None = None,
    threads: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> LatencyStats:
    """Time ``repeats`` forward passes of ``model`` on ``inputs`` after untimed warm-up ones.

    Warm-up runs at least ``warmup`` forwards and keeps going until ``warmup_seconds`` have
    passed. With ``settle`` (a relative tolerance such as 0.05) it then times windows of
    ``max(3, warmup)`` runs and stops once two consecutive window medians agree within
    ``settle``, or after ``max_warmup_seconds``: the first seconds of heavy work in a
    process can run slower for reasons no fixed count covers (see docs/engine.md).
    :attr:`LatencyStats.warmup` is the number of warm-up runs actually made.

    The model runs in eval mode under ``torch.inference_mode``, and every submodule is put
    back in the mode it was in (flags are set directly, ``train()`` is not called).
    ``inputs`` follow the engine's convention (:func:`lightning_prune.engine.harness.call_model`:
    a dict of keyword inputs, a tuple or list of positional ones, or one tensor); they are
    moved to ``device`` (default: the model's device). ``clock`` is the timer (seconds),
    replaceable in tests.
    """
    if warmup < 0:
        raise ValueError(f"measure_latency: warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"measure_latency: repeats must be >= 1, got {repeats}")
    if warmup_seconds < 0:
        raise ValueError(f"measure_latency: warmup_seconds must be >= 0, got {warmup_seconds}")
    if settle is not None and not 0 < settle < 1:
        raise ValueError(f"measure_latency: settle must be in (0, 1) (a relative tolerance) or None, got {settle}")
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("measure_latency: device='cuda' but CUDA is not available; use device='cpu'")
    model.to(device)
    inputs = move_inputs(inputs, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with training_flags(model.modules(), False), thread_count(threads), torch.inference_mode():
        def timed() -> float:
            sync()
            start = clock()
            call_model(model, inputs)
            sync()
            return clock() - start

        began = time.perf_counter()
        warmed = 0
        while warmed < warmup or time.perf_counter() < began + warmup_seconds:
            call_model(model, inputs)
            sync()
            warmed += 1
        if settle is not None:
            window, previous = max(3, warmup), None
            while time.perf_counter() < began + max_warmup_seconds:
                current = statistics.median(timed() for _ in range(window))
                warmed += window
                if previous is not None and abs(current - previous) <= settle * previous:
                    break
                previous = current
        times = [timed() for _ in range(repeats)]
    return summarize_times(times, warmup=warmed)
