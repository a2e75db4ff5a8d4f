"""Helpers around pruning: MACs and parameter counting, latency, per-layer widths."""

from . import op_counter
from .latency import LatencyStats, measure_latency, summarize_times, thread_count
from .op_counter import count_ops_and_params, count_params
from .widths import layer_widths

__all__ = ["LatencyStats", "count_ops_and_params", "count_params", "layer_widths", "measure_latency",
           "op_counter", "summarize_times", "thread_count"]
