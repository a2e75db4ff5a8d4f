"""``tp.utils``, as in Torch-Pruning: MACs and parameter counting, latency, per-layer widths.

Only the public namespace; the code lives in :mod:`lightning_prune.engine.measure`.
"""

from ..measure import (
    LatencyStats,
    MetaOpCache,
    count_ops_and_params,
    count_params,
    layer_widths,
    measure_latency,
    op_counter,
    summarize_times,
    thread_count,
)

__all__ = ["LatencyStats", "MetaOpCache", "count_ops_and_params", "count_params", "layer_widths",
           "measure_latency", "op_counter", "summarize_times", "thread_count"]
