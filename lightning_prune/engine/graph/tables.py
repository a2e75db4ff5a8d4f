"""The graph's element tables: every traced channel element, its component, space and position.

A trace numbers each prunable channel of each layer (an *element*) and unites coupled
elements into *components*; a component is what must be removed together. The tables
below are the graph's whole record of that, and the only state a prune changes: removed
elements die, each space keeps the rest in order, and the version counters say which
spaces changed since a group was made.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import layers
from ..indices import SortedIdxs
from ..trace.tracer import Space, TraceResult

__all__ = ["ElementTables", "is_builtin_pruner"]

_PRUNING_PACKAGE = layers.__name__ + "."  # lightning_prune.engine.layers.


def is_builtin_pruner(pruner: Any) -> bool:
    """A pruner of this package (they never mutate their ``idxs``), not a user's."""
    return type(pruner).__module__.startswith(_PRUNING_PACKAGE)


class ElementTables:
    """Element, component and space tables of one traced model, kept in step with its prunes.

    Per element (index = element id): ``comp`` (its component: the smallest element id in
    it), ``alive`` (not pruned yet), ``elem_space`` / ``elem_pos`` (the space it sits in
    and its position there; -1 for elements of no space). Per component: ``comp_sensitive``
    (a prune must be checked by running the model) and ``comp_heads`` (a split into heads
    or blocks couples it). ``frozen`` is the component that is never pruned.
    """

    def __init__(self, spaces: list[Space], comp: torch.Tensor, comp_sensitive: torch.Tensor,
                 comp_heads: torch.Tensor, edges: set[tuple[str, str]], version: int,
                 allocated_in_runs: bool = False) -> None:
        """``allocated_in_runs``: the spaces hold elements ``1 .. n-1``, each space one run
        of consecutive ids, in order (what a trace allocates)."""
        n = comp.numel()
        self._allocated_in_runs = allocated_in_runs
        #: Every prunable run of channels (a layer's outputs or inputs, a parameter's dim).
        self.spaces = spaces
        #: ``space.key`` -> index in :attr:`spaces`.
        self.space_index: dict[tuple, int] = {sp.key: i for i, sp in enumerate(spaces)}
        self.comp = comp
        self.frozen = int(comp[0])
        self.comp_sensitive = comp_sensitive
        self.comp_heads = comp_heads
        self.alive = torch.ones(n, dtype=torch.bool)
        self.elem_space = torch.full((n,), -1, dtype=torch.long)
        self.elem_pos = torch.full((n,), -1, dtype=torch.long)
        #: Element ids run in (space, position) order: layouts need no sort by position.
        self.elems_in_order = False
        #: Layer-name pairs that an op connected; dependency items follow them.
        self.edges = edges
        self.adjacency: dict[str, set[str]] = {}
        for a, b in edges:
            self.adjacency.setdefault(a, set()).add(b)
            self.adjacency.setdefault(b, set()).add(a)
        #: Bumped by every prune; ``space_version[s]`` is the version of space ``s``'s last change.
        self.version = version
        self.space_version = [version] * len(spaces)
        self._by_comp: tuple[torch.Tensor, torch.Tensor] | None = None  # see component_index
        self._unit_table: torch.Tensor | None = None  # see unit_scratch
        self._index_all_spaces()

    @classmethod
    def from_trace(cls, result: TraceResult, version: int) -> ElementTables:
        """The tables of a finished trace (after tied and ignored tensors were applied to it)."""
        table = result.table
        comp = table.components()
        n = table.size
        sensitive = torch.zeros(n, dtype=torch.bool)
        sensitive[comp[table.sensitive_mask()]] = True
        for sp in result.spaces:  # a user's layer pruner is checked by running the model after it
            if sp.module is not None and sp.pruner is not None and not is_builtin_pruner(sp.pruner):
                sensitive[comp[sp.elems]] = True
        heads = torch.zeros(n, dtype=torch.bool)
        heads[comp[table.heads_mask()]] = True
        return cls(result.spaces, comp, sensitive, heads, result.edges, version, allocated_in_runs=True)

    def _index_all_spaces(self) -> None:
        """Record each element's space and position in it, for every space in one vectorized pass."""
        if not self.spaces:
            return
        sizes = torch.as_tensor([sp.elems.numel() for sp in self.spaces], dtype=torch.long)
        if self._index_allocated_runs(sizes):
            return
        elems = torch.cat([sp.elems.reshape(-1) for sp in self.spaces])
        starts = torch.cumsum(sizes, 0) - sizes
        # index_copy_, not t[elems] = ...: advanced-index assignment is slower
        self.elem_space.index_copy_(0, elems, torch.repeat_interleave(torch.arange(len(self.spaces)), sizes))
        self.elem_pos.index_copy_(0, elems, torch.arange(elems.numel()) - torch.repeat_interleave(starts, sizes))
        # ``elems`` lists every placed element in (space, position) order. The tracer numbers
        # elements space by space, so their ids usually increase along it; layouts then need
        # no sort by position. Pruning keeps that (survivors keep their ids and are
        # renumbered in order), so it holds for the graph's life.
        self.elems_in_order = bool((elems[1:] > elems[:-1]).all())

    def _index_allocated_runs(self, sizes: torch.Tensor) -> bool:
        """The index of a fresh trace, whose spaces hold elements ``1 .. n-1`` in runs.

        The tracer allocates each space's elements as one run of new ids, space after
        space (:meth:`.ElementTable.alloc`), so the index is a repeat of space numbers:
        no concatenation of the spaces' ids and no scattered writes. ``False`` (nothing
        written) for tables not made from a trace. The general path gives the same index
        (``tests/test_graph_tables.py``).
        """
        n = self.elem_space.numel()
        if not self._allocated_in_runs or int(sizes.sum()) != n - 1:
            return False
        starts = torch.cumsum(sizes, 0) - sizes + 1
        space = torch.repeat_interleave(torch.arange(len(self.spaces)), sizes)
        self.elem_space[1:] = space
        self.elem_pos[1:] = torch.arange(1, n) - starts.index_select(0, space)
        self.elems_in_order = True
        return True

    # ------------------------------------------------------------------ lookups
    def space_of(self, key: tuple) -> int | None:
        """Index of the space with this key (``("module", name, "out")``...), if traced."""
        return self.space_index.get(key)

    def component_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Elements sorted by component, and their components: made on first use.

        Only single-group lookups (``get_pruning_group``, a stale group) need it; a build
        followed by ``get_all_groups`` never does, so it does not pay for the sort.
        """
        if self._by_comp is None:
            order = torch.argsort(self.comp, stable=True)
            self._by_comp = (order, self.comp.index_select(0, order))
        return self._by_comp

    def members(self, comps: torch.Tensor) -> torch.Tensor:
        """Live elements of the given components, via the component-sorted index."""
        order, comp_sorted = self.component_index()
        lo = torch.searchsorted(comp_sorted, comps)
        hi = torch.searchsorted(comp_sorted, comps, right=True)
        lens = hi - lo
        total = int(lens.sum())
        if total == 0:
            return torch.zeros(0, dtype=torch.long)
        offsets = torch.repeat_interleave(lo - (torch.cumsum(lens, 0) - lens), lens)
        elems = order[torch.arange(total) + offsets]
        return elems[self.alive[elems]]

    def unit_scratch(self) -> torch.Tensor:
        """A per-component table of -1, made on first use; callers restore every entry they set."""
        if self._unit_table is None:
            # written in place by every later lookup: an inference tensor could not be
            with torch.inference_mode(False):
                self._unit_table = torch.full((self.comp.numel(),), -1, dtype=torch.long)
        return self._unit_table

    def unchanged_since(self, version: int, space_ids: list[int]) -> bool:
        """No prune since ``version`` touched any of these spaces."""
        changed = self.space_version
        return all(changed[s] <= version for s in space_ids)

    def unit_total(self, space: int) -> int:
        """Units (prunable components) in the whole space: a root's head count or head dim."""
        comps = torch.unique(self.comp[self.spaces[space].elems])
        return int((comps != self.frozen).sum())

    # ------------------------------------------------------------------ changes
    def drop(self, removed_by_space: dict[int, SortedIdxs]) -> None:
        """Forget the removed channels of each space.

        The removed elements die, each space keeps the rest in order, and the survivors'
        positions are renumbered (their space is unchanged). ``removed_by_space`` holds the
        objects the layer pruners got, which bring the kept positions they already worked
        out. ``index_select`` / ``index_fill_`` / ``index_copy_`` rather than ``t[idx]``
        and boolean masks: 1-D advanced indexing is slower on CPU.
        Concatenating all the group's spaces into one pass was slower still: the work is in
        the elements, not in the per-space calls.
        """
        for s, removed in removed_by_space.items():
            sp = self.spaces[s]
            elems = sp.elems
            self.alive.index_fill_(0, elems.index_select(0, removed.tensor()), False)
            elems = elems.index_select(0, removed.kept(elems.numel()).tensor(elems.device))
            sp.elems = elems
            self.elem_pos.index_copy_(0, elems, torch.arange(elems.numel()))

    def bump(self, space_ids: list[int]) -> None:
        """A prune changed these spaces: a new version, at which they last changed."""
        self.version += 1
        for s in space_ids:
            self.space_version[s] = self.version

