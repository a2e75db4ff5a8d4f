"""A pruner step is all or nothing.

Each group prune the graph accepts leaves its undo in a log shared by every graph the
step uses. If anything raises, or the model no longer runs forward once every group is
pruned, the log is replayed newest first and the pruner's graph is rebuilt, so the model
is exactly as before the step. A step that breaks the model only as a whole (each group
passed its own checks) is redone checking every group, so that only the groups that
break the model are kept whole, each named in ``pruner.skipped``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import PruningError
from ..history.records import PruneRecord, merge_records

if TYPE_CHECKING:
    from ..graph import DependencyGraph, Group
    from .meta import MetaPruner

#: Rebuilds the pruner's graph from its model and gives it this pruning history.
Rebuild = Callable[[list[dict]], None]


class BrokenStep(Exception):
    """A step pruned groups that each passed their checks, and the model no longer runs."""


def prune_step(pruner: MetaPruner, step_groups: Callable[[], Iterator[Group]], rebuild: Rebuild) -> list[dict]:
    """Prune the groups ``step_groups()`` yields, all or nothing; the records of each prune.

    ``pruner.DG`` is the graph at the start and, after the groups, the graph whose dry run
    decides; the groups may replace it on the way (a head step rebuilds it). Refused
    groups are appended to ``pruner.skipped``.
    """
    try:
        return prune_groups(pruner, step_groups(), False, rebuild)
    except BrokenStep:
        # Some group left a model that no longer runs, which its own checks did not
        # catch. The step was undone; redo it checking every group, so that only the
        # groups that break the model are kept whole (and named in pruner.skipped).
        pruner.skipped = []
        return prune_groups(pruner, step_groups(), True, rebuild)


def prune_groups(pruner: MetaPruner, groups: Iterator[Group], check_each: bool, rebuild: Rebuild) -> list[dict]:
    """One all-or-nothing attempt; raises :class:`BrokenStep` when the dry run fails.

    With ``check_each`` every group prune runs its own dry run (and a group that breaks
    the model is refused), so the step as a whole is not checked again.
    """
    undo: list = []
    graph_at_start = pruner.DG
    history_at_start = len(graph_at_start.pruning_history)
    records: list[dict] = []
    graphs: list[DependencyGraph] = []
    try:
        for group in groups:
            graph = group.graph
            if graph not in graphs:
                graphs.append(graph)
                graph.undo_log, graph.check_every_prune = undo, check_each
            try:
                records.append(group.prune())
            except PruningError as err:
                pruner.skipped.append(str(err).splitlines()[0])
        problem = pruner.DG.dry_run() if records and not check_each else None
    except BaseException:
        undo_groups(pruner, undo, graph_at_start, history_at_start, rebuild)
        raise
    finally:
        for graph in graphs:
            graph.undo_log, graph.check_every_prune = None, False
    if problem is not None:
        undo_groups(pruner, undo, graph_at_start, history_at_start, rebuild)
        raise BrokenStep(problem)
    return records


def undo_groups(pruner: MetaPruner, undo: list, graph_at_start: DependencyGraph, history_at_start: int,
                rebuild: Rebuild) -> None:
    """Replay the undo log newest first; rebuild the graph if anything changed."""
    for snapshot in reversed(undo):
        snapshot.restore()
    if undo or pruner.DG is not graph_at_start:
        rebuild(graph_at_start.pruning_history[:history_at_start])


def merge_step_records(records: list[PruneRecord]) -> PruneRecord:
    """One record for a whole step, from the records of its group prunes."""
    tensors = merge_records([r.get("tensors", {}) for r in records])
    attributes: dict[str, Any] = {}
    for r in records:
        attributes.update(r.get("attributes", {}))
    return {"tensors": tensors, "attributes": attributes}
