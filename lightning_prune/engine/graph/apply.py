"""Pruning a group: every layer sliced at once, or nothing changed at all.

:func:`prune_group` checks the group, snapshots what it may touch, calls each layer's
pruner, keeps width attributes in step, runs the model when the group is size-sensitive,
and on any failure puts the model back exactly as it was. Only then are the graph's
tables told which elements are gone. :func:`soft_prune_group` zeroes the same slices
instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import PruningError
from ..history.records import PruneRecord, recording
from ..indices import SortedIdxs
from ..layers.session import slice_session
from ..trace.tracer import Space
from .handlers import space_handler
from .snapshot import HEAD_COUNT_ATTRIBUTES, HEAD_DIM_ATTRIBUTES, ModelSnapshot, sync_ancestor_widths
from .tables import ElementTables, is_builtin_pruner

if TYPE_CHECKING:
    from .dependency import DependencyGraph
    from .group import Group

__all__ = ["group_problem", "prune_group", "soft_prune_group"]


def group_problem(tables: ElementTables, group: Group) -> str | None:
    """Why ``group`` (current positions) cannot be pruned, or ``None`` if it can."""
    for s, pos in group.targets.items():
        sp = tables.spaces[s]
        if len(pos) >= sp.elems.numel():
            return f"pruning would remove all {sp.elems.numel()} channels of {sp.name}"
        live = _live_size(sp)
        if live is not None and live != sp.elems.numel():
            return (f"{sp.name} has {live} channels but the graph expects {sp.elems.numel()}: the model "
                    f"was changed outside this graph; rebuild it with build_dependency")
    return None


def _live_size(sp: Space) -> int | None:
    if sp.role == "param":
        return sp.param.shape[sp.dim]
    try:
        if sp.role == "in":
            return sp.pruner.get_in_channels(sp.module)
        return sp.pruner.get_out_channels(sp.module)
    except NotImplementedError:
        return None


def _checked_snapshot(graph: DependencyGraph, group: Group) -> ModelSnapshot:
    """Refuse a group that cannot be pruned; otherwise what is needed to undo its prune."""
    tables, names = graph.tables, graph.names
    problem = group_problem(tables, group)
    if problem is not None:
        raise PruningError(f"cannot prune group rooted at {group.root_name}: {problem}")
    spaces = tables.spaces
    modules = [spaces[s].module for s in group.targets if spaces[s].module is not None]
    tensors = [spaces[s].param for s in group.targets if spaces[s].param is not None]
    return ModelSnapshot(names.model, names.modules, modules, tensors, names.module_names)


def prune_group(graph: DependencyGraph, group: Group) -> PruneRecord:
    """Remove ``group``'s channels from the model and the graph; the record of what went."""
    graph.require_built()
    if group.applied:
        raise PruningError(
            f"the group rooted at {group.root_name} was already pruned; pruning it again would remove "
            f"other channels. Get a fresh group from get_pruning_group or get_all_groups"
        )
    # Inside a user's inference_mode block, sliced parameters would become inference
    # tensors that can never train again.
    with torch.inference_mode(False):
        return _prune_now(graph, graph.refresh_group(group))


def _prune_now(graph: DependencyGraph, group: Group) -> PruneRecord:
    tables, names = graph.tables, graph.names
    snapshot = _checked_snapshot(graph, group)
    old_sizes = {s: tables.spaces[s].elems.numel() for s in group.targets}
    space_idxs = _space_idxs(group)
    calls = _calls(tables, group, space_idxs)
    try:
        with recording(names.tensor_names) as rec, slice_session() as session:
            for k, (fn, target, idxs) in enumerate(calls):
                session.call = k
                fn(target, idxs)
            for s, pos in group.targets.items():
                sp = tables.spaces[s]
                if sp.module is not None:
                    sync_ancestor_widths(names.modules, names.pruners, sp.name,
                                         old_sizes[s], old_sizes[s] - len(pos), journal=snapshot.note)
            _sync_block_counts(graph, group, snapshot.note)
        guessed = snapshot.guessed_attributes
        if group.sensitive or graph.check_every_prune or guessed:
            err = graph.dry_run()
            if err is not None and guessed:
                snapshot.undo_guessed_attributes()  # the guess may be what broke it
                err = graph.dry_run()
            if err is not None:
                raise PruningError(f"the pruned model no longer runs forward: {err}")
    except PruningError as err:  # a refusal: the group cannot be pruned as asked
        snapshot.restore()
        raise PruningError(f"cannot prune group rooted at {group.root_name}: {err}. The model is unchanged.") \
            from err
    except BaseException as err:  # a bug in a layer pruner: undo, then fail loudly with the original error
        snapshot.restore()
        if hasattr(err, "add_note"):
            err.add_note(f"(raised while pruning the group rooted at {group.root_name}; the model was restored. "
                         f"A layer pruner that cannot prune should raise lightning_prune.engine.PruningError)")
        raise
    tables.drop(space_idxs)
    if graph.undo_log is not None:
        graph.undo_log.append(snapshot)
    record = {"tensors": rec.record, "attributes": snapshot.attribute_changes()}
    group.mark_applied()  # it now describes what was removed, and is never re-derived
    graph.pruning_history.append(record)
    tables.bump(list(group.targets))
    return record


def _sync_block_counts(graph: DependencyGraph, group: Group, journal: Any = None) -> None:
    """Keep ``num_heads`` / ``head_dim``-style attributes of attention modules in sync.

    When units span several channels (same offset in every head, or whole heads), the
    number of units *is* the head dim (offsets mode) or the head count (blocks mode).
    """
    if not group.units or len(group.units[0]) < 2:
        return
    tables, names = graph.tables, graph.names
    total = tables.unit_total(group.root_space)
    removed = set(group[0].idxs)
    gone = sum(1 for u in group.units if u[0] in removed)
    attributes = HEAD_COUNT_ATTRIBUTES if graph.split_mode == "blocks" else HEAD_DIM_ATTRIBUTES
    for s in group.targets:
        sp = tables.spaces[s]
        if sp.module is not None:
            sync_ancestor_widths(names.modules, names.pruners, sp.name, total, total - gone, attributes, journal)


def soft_prune_group(graph: DependencyGraph, group: Group) -> PruneRecord:
    """Record what :func:`prune_group` would remove, undo it, and zero those slices instead."""
    if group.applied:
        raise PruningError(f"the group rooted at {group.root_name} was already pruned; get a fresh group")
    with torch.inference_mode(False):
        return _soft_prune_now(graph, graph.refresh_group(group))


def _soft_prune_now(graph: DependencyGraph, group: Group) -> PruneRecord:
    tables, names = graph.tables, graph.names
    snapshot = _checked_snapshot(graph, group)
    try:
        with recording(names.tensor_names) as rec, slice_session() as session:
            for k, (fn, target, idxs) in enumerate(_calls(tables, group, _space_idxs(group))):
                session.call = k
                fn(target, idxs)
    finally:
        snapshot.restore()
    by_name = dict(names.model.named_parameters())  # statistics buffers are left alone
    zeroed: dict[str, list] = {}
    with torch.no_grad():
        for name, slices in rec.record.items():
            t = by_name.get(name)
            if t is None or name.endswith("num_batches_tracked"):
                continue
            kept_dims: dict[int, list[int]] = {}
            for dim, keep in slices:
                prev = kept_dims.get(dim, list(range(t.shape[dim])))
                kept_dims[dim] = [prev[i] for i in keep]
            for dim, keep in kept_dims.items():
                removed = sorted(set(range(t.shape[dim])) - set(keep))
                if removed:
                    t.index_fill_(dim, torch.as_tensor(removed, dtype=torch.long, device=t.device), 0)
                    zeroed.setdefault(name, []).append((dim, removed))
    return {"tensors": zeroed, "attributes": {}}


def _space_idxs(group: Group) -> dict[int, SortedIdxs]:
    """A :class:`SortedIdxs` of each target space's positions, one object per distinct list.

    Target positions are sorted and unique (layouts list them in order), and the layers
    of one group usually lose the same positions: sharing the object lets the layer
    pruners and :meth:`ElementTables.drop` work out the kept positions once.
    """
    shared: dict[tuple[int, ...], SortedIdxs] = {}
    out = {}
    for s, pos in group.targets.items():
        key = tuple(pos)
        idxs = shared.get(key)
        if idxs is None:
            idxs = shared[key] = SortedIdxs(pos)
        out[s] = idxs
    return out


def _calls(tables: ElementTables, group: Group, idxs: dict[int, SortedIdxs]) -> list[tuple[Any, Any, list[int]]]:
    """``(handler, target, idxs)`` for every layer the group prunes, in order.

    Built-in pruners get the shared :class:`SortedIdxs` of :func:`_space_idxs`; custom
    pruners get a plain list of their own.
    """
    calls = []
    targets = group.targets
    for s, pos in targets.items():
        sp = tables.spaces[s]
        if sp.role == "in":
            out_space = tables.space_of(("module", sp.name, "out"))
            if out_space is not None and out_space in targets and _prunes_both(sp.module):
                continue  # e.g. depthwise conv: pruning outputs already removed these inputs
        shared = sp.role == "param" or is_builtin_pruner(sp.pruner)
        calls.append((space_handler(sp), sp.param if sp.role == "param" else sp.module,
                      idxs[s] if shared else list(pos)))
    return calls


def _prunes_both(module: nn.Module) -> bool:
    return (isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
            and module.groups == module.in_channels)
