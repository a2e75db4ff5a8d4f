"""Groups: the coupled channels that must be removed together.

A :class:`Group` is a list of ``(Dependency, idxs)`` items, as in Torch-Pruning: item 0 is
the pruning root, and ``dep.target.module`` / ``dep.handler`` say which layer each item
prunes and with which function. ``print(group)`` shows the "A => B" trigger chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from .apply import prune_group, soft_prune_group
from .layout import GroupLayout

if TYPE_CHECKING:
    from ..history.records import PruneRecord
    from .dependency import DependencyGraph


class Node:
    """A prunable thing in the graph: a layer, or an unwrapped parameter."""

    def __init__(self, module: Any, name: str, pruning_dim: int | None = None) -> None:
        self.module = module
        self.name = name
        self.pruning_dim = pruning_dim

    def __repr__(self) -> str:
        if isinstance(self.module, nn.Module):
            return f"{self.name} ({self.module})"
        shape = tuple(self.module.shape) if isinstance(self.module, torch.Tensor) else "?"
        return f"{self.name} (Parameter{shape}, dim={self.pruning_dim})"


class Dependency:
    """``trigger`` on ``source`` forces ``handler`` on ``target``."""

    def __init__(self, trigger: Any, handler: Any, source: Node, target: Node) -> None:
        self.trigger = trigger
        self.handler = handler
        self.source = source
        self.target = target

    def __call__(self, idxs: Sequence[int]) -> Any:
        return self.handler(self.target.module, list(idxs))

    def is_triggered_by(self, pruning_fn: Any) -> bool:
        return pruning_fn == self.trigger

    def __repr__(self) -> str:
        return (f"{_fn_name(self.trigger)} on {self.source!r} => "
                f"{_fn_name(self.handler)} on {self.target!r}")


class Idxs(list):
    """Indices of one group item (a plain ``list``), plus where each one comes from.

    ``root_idxs[k]`` is the root index whose removal removes ``self[k]`` (the first one,
    when a unit spans several root indices); ``units[k]`` is the position in
    ``group.units`` of that unit. Importance criteria use them to add up scores of
    coupled channels across layers.
    """

    root_idxs: list[int]
    units: list[int]
    #: The values are strictly increasing. The graph's items always are (it lists the
    #: channels of a layer in order); criteria use it to recognise "every channel".
    ordered: bool

    def __init__(self, values: list[int], root_idxs: list[int] | None = None, units: list[int] | None = None,
                 ordered: bool = False):
        super().__init__(values)
        self.root_idxs = list(root_idxs) if root_idxs is not None else list(values)
        self.units = list(units) if units is not None else list(range(len(values)))
        self.ordered = ordered


class GroupItem(NamedTuple):
    dep: Dependency
    idxs: Idxs


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


class Group:
    """Coupled channels across layers; ``prune()`` removes them all at once.

    Made by the graph (``get_pruning_group``, ``get_all_groups``, ``group_for_units``).
    Besides the Torch-Pruning API, a group exposes what the graph needs to keep it right
    across other prunes: :attr:`root_space`, :attr:`layout` (and :attr:`targets`),
    :attr:`components`, :attr:`unit_components` and :attr:`version`.
    """

    def __init__(self, graph: DependencyGraph, items: list[GroupItem] | Callable[[], list[GroupItem]],
                 layout: GroupLayout, root: int, units: list[list[int]], unit_components: list[int],
                 sensitive: bool = False, is_head_group: bool = False, identity_units: bool = False,
                 components: torch.Tensor | None = None, version: int = 0, root_name: str = "") -> None:
        self._graph = graph
        # A callable builds the items on first use: a pruner step prunes most groups
        # without ever looking at their items (pruning only needs the targets).
        self._items_or_factory = items
        #: Where the group's channels sit in the graph's spaces, valid at :attr:`version`.
        self.layout = layout
        #: Index of the root's space in ``graph.tables.spaces``.
        self.root_space = root
        #: Name of the root layer (or parameter), without building the items.
        self.root_name = root_name
        #: Component id of each unit: stable across prunes, unlike positions.
        self.unit_components = unit_components
        self.sensitive = sensitive
        #: Units span whole blocks coupled by a split (attention heads, or head dims).
        self.is_head_group = is_head_group
        #: Root channel indices that can only be removed together (one list per unit).
        #: Usually one channel per unit; more when a layer ties channels, e.g. the same
        #: offset in every attention head or every group of a grouped conv.
        self.units = units
        #: Each unit is one root channel and unit ``k`` is channel ``k`` (a full group of a
        #: plain layer): importance criteria can then skip the unit bookkeeping.
        self.identity_units = identity_units
        #: Components of the group's channels (``None`` once pruned: it then describes what
        #: was removed and is never re-derived) and the graph version its positions are
        #: valid at: positions go stale when another group is pruned, components don't.
        self.components = components
        self.version = version
        #: Set once :meth:`prune` succeeded: the group's positions now name other channels.
        self.applied = False

    @property
    def targets(self) -> dict[int, list[int]]:
        """Space index -> sorted positions the group removes there (see :attr:`layout`)."""
        return self.layout.targets

    @property
    def _items(self) -> list[GroupItem]:
        if callable(self._items_or_factory):
            if self.components is not None and self.version != self._graph.version:
                self._graph.refresh_group(self)  # looked at for the first time after another prune
            self._items_or_factory = self._items_or_factory()
        return self._items_or_factory

    def adopt(self, fresh: Group) -> None:
        """Take the positions of ``fresh``, the same channels derived again after other prunes."""
        self._items_or_factory, self.layout = fresh._items_or_factory, fresh.layout
        self.units, self.unit_components, self.version = fresh.units, fresh.unit_components, fresh.version
        self.identity_units = fresh.identity_units

    def mark_applied(self) -> None:
        """Record that the group was pruned: it keeps describing what it removed."""
        self.components = None
        self.applied = True

    @property
    def graph(self) -> DependencyGraph:
        """The dependency graph this group belongs to (and whose ``prune`` it calls)."""
        return self._graph

    @property
    def root_idxs(self) -> list[int]:
        return list(self._items[0].idxs) if self._items else []

    # -- sequence protocol -------------------------------------------------------------
    def __iter__(self) -> Iterator[GroupItem]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, k: int) -> GroupItem:
        return self._items[k]

    @property
    def items(self) -> list[GroupItem]:
        return list(self._items)

    # -- actions -----------------------------------------------------------------------
    def prune(self, idxs: Sequence[int] | None = None) -> PruneRecord:
        """Remove the group's channels from every coupled layer, atomically.

        Args:
            idxs: if given, prune these root indices instead (the group is re-derived).

        Returns:
            The record of what was removed (see :mod:`lightning_prune.engine.history.records`).
        """
        if idxs is not None:
            root = self._items[0].dep
            return self._graph.get_pruning_group(root.target.module, root.handler, idxs).prune()
        return prune_group(self._graph, self)

    def soft_prune(self) -> PruneRecord:
        """Zero the group's channels instead of removing them (try before you commit).

        Returns the record of the zeroed slices (same format as :meth:`prune`).
        """
        return soft_prune_group(self._graph, self)

    def details(self) -> str:
        lines = ["-" * 32, " " * 10 + "Pruning Group", "-" * 32]
        for i, (dep, idxs) in enumerate(self._items):
            shown = idxs if len(idxs) <= 32 else idxs[:32] + ["..."]
            line = f"[{i}] {dep!r}, idxs ({len(idxs)}) ={shown}"
            if i == 0:
                line += " (Pruning Root)"
            lines.append(line)
        lines.append("-" * 32)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.details()

    __repr__ = __str__
