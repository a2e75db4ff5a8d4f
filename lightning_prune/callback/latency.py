"""Where the callback's latency budget (``target_latency``) is measured.

One small function, so that the callback's latency options have one place to land:
the batch size is the first of ``latency_batch_sizes`` and the thread count
``latency_threads`` when the callback has those options; otherwise the pruner's defaults
apply (the example input's batch and torch's thread count).
"""

from __future__ import annotations

from typing import Any

__all__ = ["latency_measurement"]


def latency_measurement(callback: Any) -> dict[str, Any]:
    """``{latency_batch_size, latency_threads}`` for the pruner, from the callback's options."""
    sizes = getattr(callback, "latency_batch_sizes", None)
    threads = getattr(callback, "latency_threads", None)
    return {"latency_batch_size": int(sizes[0]) if sizes else None,
            "latency_threads": int(threads) if threads is not None else None}
