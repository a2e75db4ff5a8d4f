"""Where a benchmark ran: versions, CPUs, threads, and how busy the machine was."""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from typing import Any

import lightning.pytorch as pl
import torch

from .config import BenchConfig

__all__ = ["OtherLoad", "environment"]


def environment(cfg: BenchConfig) -> dict[str, Any]:
    import torchvision

    env = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": pl.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": torch.multiprocessing.cpu_count(),
        "threads": cfg.threads if cfg.threads is not None else torch.get_num_threads(),
        "device": cfg.device,
    }
    if cfg.device.startswith("cuda") and torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(torch.device(cfg.device))
    return env


class OtherLoad:
    """Share of the machine's CPU time used by *other* processes during the run (Linux).

    Latencies measured while something else keeps the cores busy are noisy (with several
    intra-op threads, one preempted thread stalls the whole op), so the report says so.
    Busy time comes from ``/proc/stat``; this process's own CPU time is subtracted.
    """

    def __init__(self) -> None:
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = [float(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)) / ticks  # minus idle, iowait
        own = sum(os.times()[:4])
        return busy, own, time.monotonic()

    def fraction(self) -> float | None:
        end = self._snapshot()
        if self.start is None or end is None or end[2] <= self.start[2]:
            return None
        others = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return round(max(0.0, others) / ((end[2] - self.start[2]) * (os.cpu_count() or 1)), 3)
