"""Where a group's channels sit: the positions to remove in every space (a *layout*).

A group is identified by its root layer and the coupled *components* it removes. A
:class:`GroupLayout` lists the live elements of those components by space: layouts of
many groups are made in one vectorized pass (:func:`layouts`), and a sub-group's layout is
filtered from its parent's while the parent's spaces are unchanged (:func:`sub_layout`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .tables import ElementTables

__all__ = ["GroupLayout", "empty_layout", "layout", "layouts", "narrowest_int", "sub_layout"]


class GroupLayout(NamedTuple):
    """The live elements of a set of components, in (space, position) order."""

    #: space index -> sorted positions to remove there (spaces in ascending order)
    targets: dict[int, list[int]]
    #: the spaces of ``targets``, and how many elements each holds
    space_ids: list[int]
    counts: list[int]
    #: component and position of every element, spaces concatenated in ``space_ids`` order
    elem_comps: torch.Tensor
    pos: torch.Tensor


def empty_layout() -> GroupLayout:
    empty = torch.zeros(0, dtype=torch.long)
    return GroupLayout({}, [], [], empty, empty)


def layout(tables: ElementTables, comps: torch.Tensor) -> GroupLayout:
    """Where the live elements of ``comps`` sit."""
    elems = tables.members(comps)
    if not elems.numel():
        return empty_layout()
    targets: dict[int, list[int]] = {}
    spaces = tables.elem_space[elems]
    keep = spaces >= 0
    elems, spaces = elems[keep], spaces[keep]
    pos = tables.elem_pos[elems]
    order = torch.argsort(spaces * (int(pos.max()) + 1) + pos)
    elems, spaces, pos = elems[order], spaces[order], pos[order]
    elem_comps = tables.comp[elems]
    uniq, count_t = torch.unique_consecutive(spaces, return_counts=True)
    space_ids, counts = uniq.tolist(), count_t.tolist()
    for s, chunk in zip(space_ids, torch.split(pos, counts)):
        targets[s] = chunk.tolist()
    return GroupLayout(targets, space_ids, counts, elem_comps, pos)


def layouts(tables: ElementTables, requests: list[torch.Tensor]) -> list[GroupLayout]:
    """:func:`layout` for several *disjoint* sets of components in one vectorized pass.

    ``get_all_groups`` asks for every group at once; one sort of all their elements
    replaces a member search and a sort per group (see docs/engine.md, "Speed notes").
    """
    comp = tables.comp
    owner = torch.full((comp.numel(),), -1, dtype=torch.long)
    for k, comps in enumerate(requests):
        owner[comps] = k
    elem_owner = owner.index_select(0, comp)
    elem_space = tables.elem_space
    elems = ((elem_owner >= 0) & tables.alive & (elem_space >= 0)).nonzero().reshape(-1)
    if not elems.numel():
        return [empty_layout() for _ in requests]
    n_spaces = len(tables.spaces)
    sel_owner = elem_owner.index_select(0, elems)
    pair = sel_owner * n_spaces + elem_space.index_select(0, elems)
    pos = tables.elem_pos.index_select(0, elems)
    if tables.elems_in_order:
        # ids already run in (space, position) order, so a stable sort by owner is
        # enough, and on a narrow dtype torch radix-sorts it instead of comparing keys
        order = torch.argsort(sel_owner.to(narrowest_int(len(requests))), stable=True)
    else:
        order = torch.argsort(pair * (int(pos.max()) + 1) + pos)
    elems, pair, pos = elems.index_select(0, order), pair.index_select(0, order), pos.index_select(0, order)
    elem_comps = comp.index_select(0, elems)
    uniq, count_t = torch.unique_consecutive(pair, return_counts=True)
    pos_list = pos.tolist()
    # per request: (targets, space_ids, counts, [start, end) of its elements)
    parts: list[tuple[dict[int, list[int]], list[int], list[int], list[int]] | None] = [None] * len(requests)
    offset = 0
    for key, c in zip(uniq.tolist(), count_t.tolist()):
        k, space = divmod(key, n_spaces)
        part = parts[k]
        if part is None:
            part = parts[k] = ({}, [], [], [offset, offset])
        part[0][space] = pos_list[offset:offset + c]
        part[1].append(space)
        part[2].append(c)
        offset += c
        part[3][1] = offset
    out = []
    for part in parts:
        if part is None:
            out.append(empty_layout())
        else:
            targets, space_ids, counts, (start, end) = part
            out.append(GroupLayout(targets, space_ids, counts, elem_comps[start:end], pos[start:end]))
    return out


def sub_layout(tables: ElementTables, parent: GroupLayout, comps: torch.Tensor) -> GroupLayout:
    """:func:`layout` of ``comps``, a subset of the components ``parent`` was made for,
    by filtering it (valid while none of its spaces changed)."""
    space_ids, counts = parent.space_ids, parent.counts
    chosen = torch.zeros(tables.comp.numel(), dtype=torch.bool)
    chosen[comps] = True
    mask = chosen.index_select(0, parent.elem_comps)  # a lookup table: torch.isin would sort
    segment = torch.repeat_interleave(torch.arange(len(space_ids)), torch.as_tensor(counts, dtype=torch.long))
    chosen_at = mask.nonzero().view(-1)  # index_select beats boolean-mask indexing on CPU
    new_counts = torch.bincount(segment.index_select(0, chosen_at), minlength=len(space_ids)).tolist()
    sub_pos = parent.pos.index_select(0, chosen_at)
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
    return GroupLayout(targets, sub_spaces, sub_counts, parent.elem_comps.index_select(0, chosen_at), sub_pos)


def narrowest_int(count: int) -> torch.dtype:
    """The narrowest integer dtype that holds ``0 .. count - 1`` (radix sorts run per byte)."""
    if count <= 1 << 8:
        return torch.uint8
    if count <= 1 << 15:
        return torch.int16
    return torch.int32 if count <= 1 << 31 else torch.long
