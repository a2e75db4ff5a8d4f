"""Dense against pruned latency, timed in turns with ``torch.utils.benchmark.Timer``.

A speedup is a ratio of two timings, and on a shared or virtual machine the machine's
speed drifts by tens of percent over a minute: timing the dense model first and the pruned
one a minute later puts that drift into the ratio. :func:`compare_latency` therefore

* times every model in *rounds*, taking turns (the order flips every round), so drift
  hits all models alike; each round is one ``Timer.blocked_autorange`` per model, which
  picks a block size that makes the timer's own overhead negligible;
* reports per model the median and interquartile range of its round medians, and the
  speedup of one model over another from the *paired* per-round ratios (the drift that
  is common to a round cancels in its ratio);
* runs each model in eval mode under ``torch.inference_mode`` on ``threads`` intra-op
  threads (the Timer sets and restores the count), synchronizing the accelerator at
  every clock read (the Timer's default clock does);
* records the machine's load average before and after, so a noisy figure says so.

This is the one measurement behind the callback's before -> after latency rows and the
benchmark's latency columns. :func:`~.latency.measure_latency` remains for timing one
model call by call (its per-call spread, exact repeat counts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..harness import call_model, move_inputs, training_flags
from ..tree import map_tensors, tensor_leaves
from .latency import LatencyStats, summarize_times, thread_count

__all__ = ["LatencyComparison", "Speedup", "compare_latency", "machine_load", "with_batch_size"]


@dataclass(frozen=True)
class Speedup:
    """``baseline time / model time`` over paired rounds: median and quartiles."""

    median: float
    p25: float
    p75: float
    rounds: int

    def __str__(self) -> str:
        return f"{self.median:.2f}x (IQR {self.p25:.2f}-{self.p75:.2f}x over {self.rounds} rounds)"


@dataclass(frozen=True)
class LatencyComparison:
    """Round-by-round timings of several models on the same inputs.

    ``round_ms[name]`` holds one per-call time (ms) per round: the median of that round's
    ``Timer`` blocks. :attr:`stats` summarizes them per model.
    """

    round_ms: dict[str, list[float]]
    batch_size: int | None
    threads: int
    device: str
    load_before: float | None
    load_after: float | None
    cpus: int
    warmup: dict[str, int] = field(default_factory=dict)

    @property
    def stats(self) -> dict[str, LatencyStats]:
        return {name: summarize_times([t / 1000 for t in times], warmup=self.warmup.get(name, 0))
                for name, times in self.round_ms.items()}

    def speedup(self, baseline: str, model: str) -> Speedup:
        """How many times faster ``model`` ran than ``baseline``, from the paired rounds."""
        for name in (baseline, model):
            if name not in self.round_ms:
                raise KeyError(f"speedup: no timings for {name!r}; timed models: {sorted(self.round_ms)}")
        ratios = [b / m for b, m in zip(self.round_ms[baseline], self.round_ms[model], strict=True) if m > 0]
        if not ratios:
            raise ValueError(f"speedup: {model!r} has no positive timings")
        if len(ratios) == 1:
            p25 = p75 = ratios[0]
        else:
            p25, _, p75 = statistics.quantiles(ratios, n=4, method="inclusive")
        return Speedup(statistics.median(ratios), p25, p75, len(ratios))

    def load_note(self) -> str:
        """``"load average 0.4 -> 0.6 on 2 CPUs"``: how busy the machine was."""
        if self.load_before is None or self.load_after is None:
            return f"load average unknown, {self.cpus} CPUs"
        return f"load average {self.load_before:.1f} -> {self.load_after:.1f} on {self.cpus} CPUs"


def machine_load() -> float | None:
    """The 1-minute load average (runnable processes), or ``None`` where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def with_batch_size(inputs: Any, batch_size: int) -> Any:
    """``inputs`` with every tensor's first dim resized to ``batch_size`` by cycling its rows.

    Rows are reused (row ``i`` is row ``i % n``), so real inputs keep realistic values;
    0-dim tensors are left alone.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"with_batch_size: batch_size must be an int >= 1, got {batch_size!r}")

    def resize(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0 or t.shape[0] == batch_size:
            return t
        rows = torch.arange(batch_size, device=t.device) % t.shape[0]
        return t.index_select(0, rows)

    return map_tensors(inputs, resize)


def _first_batch_size(inputs: Any) -> int | None:
    return next((int(t.shape[0]) for t in tensor_leaves(inputs) if t.dim() > 0), None)


def _timer_class() -> type:
    """``torch.utils.benchmark.Timer``, imported with torch's "No CUDA runtime" notice muted.

    Importing the benchmark package loads ``torch.utils.cpp_extension``, which logs a
    warning on machines without a CUDA toolkit; it says nothing about timing.
    """
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        log.setLevel(level)
    return Timer


@contextlib.contextmanager
def _timing_mode(models: Mapping[str, nn.Module]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for model in models.values():
            stack.enter_context(training_flags(model.modules(), False))
        stack.enter_context(torch.inference_mode())
        yield


def compare_latency(
    models: Mapping[str, nn.Module],
    inputs: Any,
    *,
    rounds: int = 7,
    min_run_time: float = 0.05,
    warmup_seconds: float = 0.3,
    threads: int | None = None,
    device: str | torch.device | None = None,
    clock: Callable[[], float] | None = None,
) -> LatencyComparison:
    """Time every model of ``models`` on ``inputs`` in ``rounds`` interleaved rounds.

    Args:
        models: ``{name: model}``; all run on the same ``inputs`` (a tensor, a tuple of
            positional inputs or a dict of keyword inputs).
        rounds: rounds of one ``Timer.blocked_autorange`` per model; the order of the
            models flips every round.
        min_run_time: seconds each model is timed for in each round.
        warmup_seconds: untimed calls per model before the first round (allocations,
            kernel choice, a VM's clock settling).
        threads: intra-op threads for the timing (default: torch's current setting).
        device: where to run (default: the first model's device); models are not moved,
            inputs are.
        clock: the timer (seconds), replaceable in tests; default: the Timer's, which
            synchronizes the accelerator at every read.

    Returns:
        A :class:`LatencyComparison`; ``.speedup("dense", "pruned")`` gives the paired
        speedup with its spread.
    """
    if not models:
        raise ValueError("compare_latency: models is empty; pass {name: model}")
    for name, model in models.items():
        if not isinstance(model, nn.Module):
            raise TypeError(f"compare_latency: models[{name!r}] must be an nn.Module, got {type(model).__name__}")
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"compare_latency: rounds must be an int >= 1, got {rounds!r}")
    if min_run_time <= 0:
        raise ValueError(f"compare_latency: min_run_time must be > 0 seconds, got {min_run_time!r}")
    if warmup_seconds < 0:
        raise ValueError(f"compare_latency: warmup_seconds must be >= 0, got {warmup_seconds!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"compare_latency: threads must be an int >= 1 or None, got {threads!r}")
    if device is None:
        first = next((p for m in models.values() for p in m.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("compare_latency: device='cuda' but CUDA is not available; use device='cpu'")
    inputs = move_inputs(inputs, device)
    threads = threads if threads is not None else torch.get_num_threads()
    timer_cls = _timer_class()
    extra = {} if clock is None else {"timer": clock}
    timers = {name: timer_cls(stmt="call_model(model, inputs)", num_threads=threads, **extra,
                              globals={"call_model": call_model, "model": model, "inputs": inputs})
              for name, model in models.items()}
    load_before = machine_load()
    warmed: dict[str, int] = {}
    round_ms: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    with _timing_mode(models):
        for name in names:
            warmed[name] = _warm_up(models[name], inputs, warmup_seconds, threads, device)
        for k in range(rounds):
            for name in names if k % 2 == 0 else reversed(names):
                measurement = timers[name].blocked_autorange(min_run_time=min_run_time)
                round_ms[name].append(1000.0 * measurement.median)
    return LatencyComparison(round_ms=round_ms, batch_size=_first_batch_size(inputs), threads=threads,
                             device=str(device), load_before=load_before, load_after=machine_load(),
                             cpus=os.cpu_count() or 1, warmup=warmed)


def _warm_up(model: nn.Module, inputs: Any, seconds: float, threads: int, device: torch.device) -> int:
    """Untimed calls for ``seconds`` (at least one); how many ran."""
    calls = 0
    with thread_count(threads):
        end = time.perf_counter() + seconds
        while calls == 0 or time.perf_counter() < end:
            call_model(model, inputs)
            calls += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return calls
