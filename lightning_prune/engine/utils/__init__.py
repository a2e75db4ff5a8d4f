"""Helpers around pruning: MACs and parameter counting."""

from . import op_counter
from .op_counter import count_ops_and_params, count_params

__all__ = ["count_ops_and_params", "count_params", "op_counter"]
