"""Dependency graph: which channels of which layers must be pruned together.

One home for each piece of state:

- :mod:`.dependency`: :class:`DependencyGraph`, the public API; it builds and holds the rest.
- :mod:`.tables`: :class:`~.tables.ElementTables`, the traced elements, their components,
  spaces and positions, and the version counters that a prune advances.
- :mod:`.names`: :class:`~.names.ModelIndex` (the model's modules, tensors and layer
  pruners by name) and the ``ignored_layers`` / ``unwrapped_parameters`` arguments.
- :mod:`.lookup`: a layer and a pruning function to a space; indices checked.
- :mod:`.layout`: :class:`~.layout.GroupLayout`, where a group's channels sit.
- :mod:`.grouping`: groups made from layouts (units, lazily built items); :mod:`.handlers`:
  the function that prunes one space.
- :mod:`.group`: :class:`Group` and its items.
- :mod:`.apply`: the atomic prune (and the soft prune); :mod:`.snapshot` undoes it.
"""

from ..errors import TraceError
from .dependency import DependencyGraph, resolve_ignored
from .group import Dependency, Group, GroupItem, Idxs, Node

__all__ = ["DependencyGraph", "Dependency", "Group", "GroupItem", "Idxs", "Node", "TraceError", "resolve_ignored"]
