"""Measuring a model: MACs and parameters, forward latency, per-layer widths.

The public names are re-exported by :mod:`lightning_prune.engine.utils`, Torch-Pruning's
``tp.utils``; this package is where they live.
"""

from . import op_counter
from .latency import LatencyStats, measure_latency, summarize_times, thread_count
from .meta_cache import MetaOpCache
from .op_counter import count_ops_and_params, count_params
from .widths import layer_widths

__all__ = ["LatencyStats", "MetaOpCache", "count_ops_and_params", "count_params", "layer_widths",
           "measure_latency", "op_counter", "summarize_times", "thread_count"]
