"""``lightning_prune.engine``: standalone structural pruning for PyTorch.

Imports torch (and torchvision only where a torchvision layer type needs it), never
Lightning. Public names follow Torch-Pruning's API, so its README examples run with::

    import lightning_prune.engine as tp
"""

from . import importance, pruner, pruning, utils
from .calibration import recalibrate_batchnorm
from .graph import Dependency, DependencyGraph, Group, GroupItem, Node, TraceError
from .history import records
from .history.optim_state import shape_after_slices, slice_optimizer_state, slice_optimizers
from .history.serialization import apply_history, apply_record, load_state_dict, state_dict
from .pruning import *  # noqa: F401,F403 - the low-level prune_* functions
from .pruning import LayerPruner, PruningError, get_layer_pruner
from .pruning import __all__ as _pruning_all

__all__ = [
    "DependencyGraph", "Dependency", "Group", "GroupItem", "Node", "TraceError",
    "LayerPruner", "PruningError", "get_layer_pruner", "pruning", "records", "utils", "importance", "pruner",
    "recalibrate_batchnorm", "state_dict", "load_state_dict", "apply_record", "apply_history",
    "slice_optimizer_state", "slice_optimizers", "shape_after_slices",
    *_pruning_all,
]
