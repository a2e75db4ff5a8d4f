"""Measuring a model: MACs and parameters, forward latency, per-layer widths.

The public names are re-exported by :mod:`lightning_prune.engine.utils`, Torch-Pruning's
``tp.utils``; this package is where they live.
"""

from . import op_counter
from .latency import LatencyStats, measure_latency, summarize_times, thread_count
from .latency_compare import LatencyComparison, Speedup, compare_latency, machine_load, with_batch_size
from .meta_cache import MetaOpCache
from .op_counter import count_ops_and_params, count_params
from .widths import layer_widths

__all__ = ["LatencyComparison", "LatencyStats", "MetaOpCache", "Speedup", "compare_latency", "count_ops_and_params",
           "count_params", "layer_widths", "machine_load", "measure_latency", "op_counter", "summarize_times",
           "thread_count", "with_batch_size"]
