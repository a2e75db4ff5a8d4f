"""``tp.utils``, as in Torch-Pruning: MACs and parameter counting, latency, per-layer widths.

Only the public namespace; the code lives in :mod:`lightning_prune.engine.measure`.
"""

from ..measure import (
    LatencyComparison,
    LatencyStats,
    MetaOpCache,
    Speedup,
    compare_latency,
    count_ops_and_params,
    count_params,
    layer_widths,
    machine_load,
    measure_latency,
    op_counter,
    summarize_times,
    thread_count,
    with_batch_size,
)

__all__ = ["LatencyComparison", "LatencyStats", "MetaOpCache", "Speedup", "compare_latency", "count_ops_and_params",
           "count_params", "layer_widths", "machine_load", "measure_latency", "op_counter", "summarize_times",
           "thread_count", "with_batch_size"]
