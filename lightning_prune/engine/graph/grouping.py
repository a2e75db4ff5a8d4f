"""Groups made from layouts: the root's units, and the ``(Dependency, idxs)`` items, built lazily.

:func:`make_group` turns a :class:`~.layout.GroupLayout` into a :class:`~.group.Group`. The
items (which layer each index comes from, and in which trigger order) are made only when
the group is first looked at: a pruner step prunes most groups without ever reading them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..indices import long_tensor
from .group import Dependency, Group, GroupItem, Idxs, Node
from .handlers import space_handler
from .layout import GroupLayout, layout
from .tables import ElementTables

if TYPE_CHECKING:
    from .dependency import DependencyGraph

__all__ = ["dependency_items", "group_from", "make_group", "node", "unit_of"]

Origin = dict[int, tuple[list[int], list[int]]]  # space -> (root index, unit) of each position


def group_from(graph: DependencyGraph, tables: ElementTables, root: int, comps: torch.Tensor) -> Group:
    """The group rooted at space ``root`` that removes the components ``comps``."""
    return make_group(graph, tables, root, comps, layout(tables, comps))


def make_group(graph: DependencyGraph, tables: ElementTables, root: int, comps: torch.Tensor,
               group_layout: GroupLayout) -> Group:
    """A group of ``graph`` from the layout of its components (made at the tables' version)."""
    targets, space_ids, counts, elem_comps, _ = group_layout
    # units: the root's positions grouped by component, in order of first appearance
    root_pos = targets.get(root, [])
    if root_pos:  # the root's chunk of elem_comps (layouts are in space order)
        start = sum(counts[:space_ids.index(root)])
        root_comps = elem_comps[start:start + len(root_pos)].tolist()
    else:
        root_comps = []
    one_per_unit = len(set(root_comps)) == len(root_comps)
    if one_per_unit:  # one channel per unit (the usual case)
        units_list, unit_comp_list = [[p] for p in root_pos], root_comps
    else:
        units: dict[int, list[int]] = {}
        for c, p in zip(root_comps, root_pos):
            units.setdefault(c, []).append(p)
        units_list, unit_comp_list = list(units.values()), list(units.keys())
    identity = one_per_unit and bool(root_pos) and root_pos == list(range(len(root_pos)))

    def items() -> list[GroupItem]:  # built when the group is first looked at, not to prune it
        origin: Origin = {}
        if space_ids and units_list:
            unit_idx = unit_of(tables, unit_comp_list, elem_comps)
            if identity:
                # unit k is root position k: each index's root index is its unit
                for s, u in zip(space_ids, torch.split(unit_idx, counts)):
                    units_here = u.tolist()
                    origin[s] = (list(units_here), units_here)
            else:
                first_of = long_tensor([u[0] for u in units_list]).index_select(0, unit_idx)
                for s, f, u in zip(space_ids, torch.split(first_of, counts), torch.split(unit_idx, counts)):
                    origin[s] = (f.tolist(), u.tolist())
        return dependency_items(tables, root, targets, origin)

    return Group(graph, items, group_layout, root=root, root_name=tables.spaces[root].name, units=units_list,
                 unit_components=unit_comp_list, sensitive=bool(tables.comp_sensitive[comps].any()),
                 is_head_group=bool(tables.comp_heads[comps].any()), identity_units=identity,
                 components=comps, version=tables.version)


def unit_of(tables: ElementTables, unit_comps: list[int], elem_comps: torch.Tensor) -> torch.Tensor:
    """Index in ``unit_comps`` of each element's component (a dense lookup table)."""
    table = tables.unit_scratch()
    comps = long_tensor(unit_comps)
    table[comps] = torch.arange(len(unit_comps))
    try:
        found = table.index_select(0, elem_comps)
    finally:
        table[comps] = -1
    if bool((found < 0).any()):
        raise RuntimeError("internal error: a group element belongs to none of the group's units")
    return found


def node(tables: ElementTables, i: int) -> Node:
    sp = tables.spaces[i]
    if sp.role == "param":
        return Node(sp.param, sp.name, sp.dim)
    return Node(sp.module, sp.name)


def dependency_items(tables: ElementTables, root: int, targets: dict[int, list[int]],
                     origin: Origin) -> list[GroupItem]:
    """The items of a group, root first, then in breadth-first trigger order along the traced edges."""
    spaces = tables.spaces
    by_name: dict[str, list[int]] = {}
    for s in targets:
        by_name.setdefault(spaces[s].name, []).append(s)
    items = [_item(tables, root, root, targets, origin)]
    seen = {root}
    adjacency = tables.adjacency
    queue = [root]
    while queue:
        src = queue.pop(0)
        src_name = spaces[src].name
        neighbours = sorted(adjacency.get(src_name, set()) & by_name.keys())
        for s in by_name[src_name] + [s for nb in neighbours for s in by_name[nb]]:
            if s not in seen:
                seen.add(s)
                queue.append(s)
                items.append(_item(tables, src, s, targets, origin))
    for s in targets:
        if s not in seen:
            items.append(_item(tables, root, s, targets, origin))
    return items


def _item(tables: ElementTables, src: int, dst: int, targets: dict[int, list[int]], origin: Origin) -> GroupItem:
    """``src => dst``; ``dst`` may remove nothing (a root whose channels are all gone)."""
    spaces = tables.spaces
    dep = Dependency(space_handler(spaces[src]), space_handler(spaces[dst]), node(tables, src), node(tables, dst))
    return GroupItem(dep, Idxs(targets.get(dst, []), *origin.get(dst, ([], [])), ordered=True))
