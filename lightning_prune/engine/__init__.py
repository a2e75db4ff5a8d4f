"""``lightning_prune.engine``: standalone structural pruning for PyTorch.

Imports torch (and torchvision only where a torchvision layer type needs it), never
Lightning. Public names follow Torch-Pruning's API, so its README examples run with::

    import lightning_prune.engine as tp
"""

from . import pruning, records, utils
from .graph import Dependency, DependencyGraph, Group, GroupItem, Node, TraceError
from .pruning import *  # noqa: F401,F403 - the low-level prune_* functions
from .pruning import LayerPruner, PruningError, get_layer_pruner
from .pruning import __all__ as _pruning_all

__all__ = [
    "DependencyGraph", "Dependency", "Group", "GroupItem", "Node", "TraceError",
    "LayerPruner", "PruningError", "get_layer_pruner", "pruning", "records", "utils",
    *_pruning_all,
]
