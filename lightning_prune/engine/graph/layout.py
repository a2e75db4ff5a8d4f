"""Where each group's channels sit, and how groups are made from the graph's elements.

A group is identified by its root layer and the coupled *components* it removes. This
mixin of :class:`~.dependency.DependencyGraph` turns components into groups: the
positions to remove in every layer (a *layout*), the units of root channels, and the
``(Dependency, idxs)`` items, built lazily. Layouts of many groups are made in one
vectorized pass; sub-groups are filtered from their parent's layout while its layers are
unchanged; a group held across another prune is re-derived from its components.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import PruningError
from ..indices import long_tensor
from ..layers.functions import prune_parameter_out_channels
from .group import Dependency, Group, GroupItem, Idxs, Node

__all__ = ["GroupLayouts", "ParameterHandler"]


class ParameterHandler:
    """``dep.handler`` for an unwrapped parameter: slices it along ``dim``."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.__name__ = "prune_parameter_out_channels"

    def __call__(self, param: torch.Tensor, idxs: Sequence[int]) -> torch.Tensor:
        return prune_parameter_out_channels(param, idxs, dim=self.dim)


class GroupLayouts:
    """Group construction for :class:`~.dependency.DependencyGraph` (a mixin: it reads the
    graph's element tables ``_comp``, ``_alive``, ``_elem_space``, ``_elem_pos`` and
    ``spaces``)."""

    def _component_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Elements sorted by component, and their components: made on first use.

        Only single-group lookups (``get_pruning_group``, a stale group) need it; a build
        followed by ``get_all_groups`` never does, and the sort cost a tenth of a build.
        """
        if self._by_comp is None:
            order = torch.argsort(self._comp, stable=True)
            self._by_comp = (order, self._comp.index_select(0, order))
        return self._by_comp

    def _members(self, comps: torch.Tensor) -> torch.Tensor:
        """Live elements of the given components, via the component-sorted index."""
        order, comp_sorted = self._component_index()
        lo = torch.searchsorted(comp_sorted, comps)
        hi = torch.searchsorted(comp_sorted, comps, right=True)
        lens = hi - lo
        total = int(lens.sum())
        if total == 0:
            return torch.zeros(0, dtype=torch.long)
        offsets = torch.repeat_interleave(lo - (torch.cumsum(lens, 0) - lens), lens)
        elems = order[torch.arange(total) + offsets]
        return elems[self._alive[elems]]

    def _group_from(self, root: int, comps: torch.Tensor) -> Group:
        return self._make_group(root, comps, self._layout(comps))

    def _layout(self, comps: torch.Tensor) -> tuple:
        """Where the live elements of ``comps`` sit: ``(targets, space_ids, counts, elem_comps, pos)``.

        ``targets`` maps each space to the sorted positions to remove; ``elem_comps`` and
        ``pos`` are the component and position of every element, in (space, position)
        order.
        """
        elems = self._members(comps)
        targets: dict[int, list[int]] = {}
        space_ids: list[int] = []
        counts: list[int] = []
        elem_comps = pos = torch.zeros(0, dtype=torch.long)
        if elems.numel():
            spaces = self._elem_space[elems]
            keep = spaces >= 0
            elems, spaces = elems[keep], spaces[keep]
            pos = self._elem_pos[elems]
            order = torch.argsort(spaces * (int(pos.max()) + 1) + pos)
            elems, spaces, pos = elems[order], spaces[order], pos[order]
            elem_comps = self._comp[elems]
            uniq, count_t = torch.unique_consecutive(spaces, return_counts=True)
            space_ids, counts = uniq.tolist(), count_t.tolist()
            for s, chunk in zip(space_ids, torch.split(pos, counts)):
                targets[s] = chunk.tolist()
        return targets, space_ids, counts, elem_comps, pos

    def _layouts(self, requests: list[torch.Tensor]) -> list[tuple]:
        """:meth:`_layout` for several *disjoint* sets of components in one vectorized pass.

        ``get_all_groups`` asks for every group at once; one sort of all their elements
        replaces a member search and a sort per group (a third of a ResNet-50 pass).
        """
        empty = torch.zeros(0, dtype=torch.long)
        owner = torch.full((self._comp.numel(),), -1, dtype=torch.long)
        for k, comps in enumerate(requests):
            owner[comps] = k
        elem_owner = owner.index_select(0, self._comp)
        elems = ((elem_owner >= 0) & self._alive & (self._elem_space >= 0)).nonzero().reshape(-1)
        layouts: list[tuple] = [({}, [], [], empty, empty) for _ in requests]
        if not elems.numel():
            return layouts
        n_spaces = len(self.spaces)
        sel_owner = elem_owner.index_select(0, elems)
        pair = sel_owner * n_spaces + self._elem_space.index_select(0, elems)
        pos = self._elem_pos.index_select(0, elems)
        if self._elems_in_order:
            # ids already run in (space, position) order, so a stable sort by owner is
            # enough; on a narrow dtype torch radix-sorts it: 0.25 against 2.1 ms for the
            # composite key on resnet50's 78k elements
            order = torch.argsort(sel_owner.to(_narrowest_int(len(requests))), stable=True)
        else:
            order = torch.argsort(pair * (int(pos.max()) + 1) + pos)
        elems, pair, pos = elems.index_select(0, order), pair.index_select(0, order), pos.index_select(0, order)
        elem_comps = self._comp.index_select(0, elems)
        uniq, count_t = torch.unique_consecutive(pair, return_counts=True)
        pos_list = pos.tolist()
        span: dict[int, list[int]] = {}
        offset = 0
        for key, c in zip(uniq.tolist(), count_t.tolist()):
            k, space = divmod(key, n_spaces)
            targets, space_ids, counts, _, _ = layouts[k]
            targets[space] = pos_list[offset:offset + c]
            space_ids.append(space)
            counts.append(c)
            span.setdefault(k, [offset, offset])[1] = offset + c
            offset += c
        for k, (start, end) in span.items():
            layouts[k] = (*layouts[k][:3], elem_comps[start:end], pos[start:end])
        return layouts

    def _sub_layout(self, layout: tuple, comps: torch.Tensor) -> tuple:
        """:meth:`_layout` of ``comps``, a subset of the components ``layout`` was made for,
        by filtering it (valid while none of its spaces changed)."""
        _, space_ids, counts, elem_comps, pos = layout
        chosen = torch.zeros(self._comp.numel(), dtype=torch.bool)
        chosen[comps] = True
        mask = chosen.index_select(0, elem_comps)  # torch.isin sorts: 5x slower here
        segment = torch.repeat_interleave(torch.arange(len(space_ids)), torch.as_tensor(counts, dtype=torch.long))
        chosen_at = mask.nonzero().view(-1)  # index_select beats boolean-mask indexing on CPU
        new_counts = torch.bincount(segment.index_select(0, chosen_at), minlength=len(space_ids)).tolist()
        sub_pos = pos.index_select(0, chosen_at)
        pos_list = sub_pos.tolist()
        targets: dict[int, list[int]] = {}
        sub_spaces, sub_counts = [], []
        offset = 0
        for space, c in zip(space_ids, new_counts):
            if c:
                targets[space] = pos_list[offset:offset + c]
                sub_spaces.append(space)
                sub_counts.append(c)
                offset += c
        return targets, sub_spaces, sub_counts, elem_comps.index_select(0, chosen_at), sub_pos

    def _unchanged_since(self, version: int, space_ids: list[int]) -> bool:
        """No prune since ``version`` touched any of these spaces."""
        changed = self._space_version
        return all(changed[s] <= version for s in space_ids)

    def _make_group(self, root: int, comps: torch.Tensor, layout: tuple) -> Group:
        targets, space_ids, counts, elem_comps, _ = layout
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
            origin: dict[int, tuple[list[int], list[int]]] = {}
            if space_ids and units_list:
                unit_of = self._unit_of(unit_comp_list, elem_comps)
                if identity:
                    # unit k is root position k: each index's root index is its unit
                    for s, u in zip(space_ids, torch.split(unit_of, counts)):
                        units_here = u.tolist()
                        origin[s] = (list(units_here), units_here)
                else:
                    first_of = long_tensor([u[0] for u in units_list]).index_select(0, unit_of)
                    for s, f, u in zip(space_ids, torch.split(first_of, counts), torch.split(unit_of, counts)):
                        origin[s] = (f.tolist(), u.tolist())
            return self._dependency_items(root, targets, origin)

        sensitive = bool(self._comp_sensitive[comps].any())
        return Group(self, items, [(s, p) for s, p in targets.items()], root=root, units=units_list,
                     unit_comps=unit_comp_list, sensitive=sensitive,
                     is_head_group=bool(self._comp_heads[comps].any()), identity_units=identity,
                     comps=comps, version=self.version, layout=layout)

    def _unit_of(self, unit_comps: list[int], elem_comps: torch.Tensor) -> torch.Tensor:
        """Index in ``unit_comps`` of each element's component (a dense lookup table)."""
        if self._unit_table is None:
            self._unit_table = torch.full((self._comp.numel(),), -1, dtype=torch.long)
        table = self._unit_table
        comps = long_tensor(unit_comps)
        table[comps] = torch.arange(len(unit_comps))
        try:
            unit_of = table.index_select(0, elem_comps)
        finally:
            table[comps] = -1
        if bool((unit_of < 0).any()):
            raise RuntimeError("internal error: a group element belongs to none of the group's units")
        return unit_of

    def _current(self, group: Group) -> Group:
        """``group``, its positions re-derived (in place) if a prune happened since it was made.

        A group stores positions; pruning another group that shares a layer (the consumer
        of a concat, say) shifts them. Components do not shift, so the group is rebuilt
        from its components: a group held across prunes still removes the same channels.
        """
        if group._version == self.version or group._comps is None:
            return group
        if self._unchanged_since(group._version, [s for s, _ in group._targets]):
            group._version = self.version  # the prunes since then did not touch it
            return group
        fresh = self._group_from(group._root, group._comps)
        if not fresh._targets:
            raise PruningError(f"the channels of the group rooted at {group.root_name} were already pruned")
        group._take(fresh)
        return group

    def group_for_units(self, group: Group, units: Sequence[int]) -> Group:
        """The sub-group of ``group`` that removes the given units (indices into ``group.units``).

        Units are tracked by component, so this stays right even after other groups were
        pruned since ``group`` was made and its root positions shifted.
        """
        comps = long_tensor([group._unit_comps[u] for u in units])
        layout = group._layout_data
        if layout is not None and group._comps is not None and self._unchanged_since(group._version, layout[1]):
            return self._make_group(group._root, comps, self._sub_layout(layout, comps))
        return self._group_from(group._root, comps)

    def _node(self, i: int) -> Node:
        sp = self.spaces[i]
        if sp.role == "param":
            return Node(sp.param, sp.name, sp.dim)
        return Node(sp.module, sp.name)

    def _handler(self, i: int) -> Any:
        sp = self.spaces[i]
        if sp.role == "param":
            return ParameterHandler(sp.dim)
        return sp.pruner.prune_in_channels if sp.role == "in" else sp.pruner.prune_out_channels

    def _dependency_items(self, root: int, targets: dict[int, list[int]],
                          origin: dict[int, tuple[list[int], list[int]]]) -> list[GroupItem]:
        by_name: dict[str, list[int]] = {}
        for s in targets:
            by_name.setdefault(self.spaces[s].name, []).append(s)
        items = [self._item(root, root, targets, origin)]
        seen = {root}
        adjacency = self._adjacency
        queue = [root]
        while queue:
            src = queue.pop(0)
            src_name = self.spaces[src].name
            neighbours = sorted(adjacency.get(src_name, set()) & by_name.keys())
            for s in by_name[src_name] + [s for nb in neighbours for s in by_name[nb]]:
                if s not in seen:
                    seen.add(s)
                    queue.append(s)
                    items.append(self._item(src, s, targets, origin))
        for s in targets:
            if s not in seen:
                items.append(self._item(root, s, targets, origin))
        return items

    def _item(self, src: int, dst: int, targets: dict[int, list[int]],
              origin: dict[int, tuple[list[int], list[int]]]) -> GroupItem:
        """``src => dst``; ``dst`` may remove nothing (a root whose channels are all gone)."""
        dep = Dependency(self._handler(src), self._handler(dst), self._node(src), self._node(dst))
        return GroupItem(dep, Idxs(targets.get(dst, []), *origin.get(dst, ([], [])), ordered=True))


def _narrowest_int(count: int) -> torch.dtype:
    """The narrowest integer dtype that holds ``0 .. count - 1`` (radix sorts run per byte)."""
    if count <= 1 << 8:
        return torch.uint8
    if count <= 1 << 15:
        return torch.int16
    return torch.int32 if count <= 1 << 31 else torch.long
