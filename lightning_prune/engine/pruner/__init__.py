"""High-level pruners: rank channels by importance and prune to a ratio or a budget."""

from .budget import meta_clone
from .latency_budget import DefaultLatencyTimer, LatencyReport, LatencyTimer
from .meta import MetaPruner
from .regularizers import BNScalePruner, GroupNormPruner, GrowingRegPruner, SparseTrainingPruner
from .scheduler import SCHEDULERS, cosine_scheduler, exponential_scheduler, get_scheduler, linear_scheduler
from .variants import MagnitudePruner, RandomPruner

BasePruner = MetaPruner

__all__ = [
    "MetaPruner", "BasePruner", "linear_scheduler", "cosine_scheduler", "exponential_scheduler",
    "get_scheduler", "SCHEDULERS", "meta_clone",
    "MagnitudePruner", "RandomPruner", "BNScalePruner", "GroupNormPruner", "GrowingRegPruner",
    "SparseTrainingPruner", "LatencyReport", "LatencyTimer", "DefaultLatencyTimer",
]
