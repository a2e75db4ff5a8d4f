"""The pruning benchmark (``lightning-prune bench``) and the torchvision prunability sweep.

``run_benchmark(BenchConfig(...))`` measures models x methods x ratios; ``write_outputs``
writes CSV, JSON, Markdown and PNG files. See ``docs/benchmark.md``.
"""

from .config import BenchConfig, ModelSpec
from .methods import MethodContext, PruneTarget, PruningMethod, register_method
from .outputs import write_outputs
from .runner import BenchRun, run_benchmark

__all__ = ["BenchConfig", "BenchRun", "MethodContext", "ModelSpec", "PruneTarget", "PruningMethod",
           "register_method", "run_benchmark", "write_outputs"]
