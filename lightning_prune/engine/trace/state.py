"""Per-trace bookkeeping: the labels and producers of every tensor seen so far."""

from __future__ import annotations

import torch

from .labels import ElementTable, Label

Labels = tuple[Label | None, ...]


#: A tensor remembers at most this many producers (the most recently called ones). A
#: residual stream otherwise carries every earlier block as a producer, and each layer
#: reading it would add an edge to each of them: quadratic in depth (800 blocks: 320k
#: edges). The near producers keep every member of a group connected for ordering its
#: items; no group content depends on these edges.
MAX_PRODUCERS = 32


class TraceState:
    """Maps live tensors to their per-dim labels and to the graph nodes that produced them.

    Tensors are keyed by ``id`` and kept alive by the table itself, so ids are never reused
    during a trace. On the meta device this costs no memory.
    """

    def __init__(self, table: ElementTable) -> None:
        self.table = table
        self._labels: dict[int, tuple[torch.Tensor, Labels]] = {}
        self._prods: dict[int, frozenset[str]] = {}
        self._call_rank: dict[str, int] = {}  # module name -> order of its (last) call
        self._calls = 0
        # Called for tensors seen for the first time (parameters used functionally).
        self.source_labels = None
        self.unknown_ops: dict[str, int] = {}
        #: How a labeled dim split into blocks is coupled: "offsets" (the same offsets in
        #: every block, e.g. head dims) or "blocks" (whole blocks, e.g. attention heads).
        self.split_mode = "offsets"

    def labels(self, t: torch.Tensor) -> Labels:
        entry = self._labels.get(id(t))
        if entry is not None and entry[0] is t:
            return entry[1]
        if self.source_labels is not None:
            found = self.source_labels(t)
            if found is not None:
                labels, prods = found
                self.set(t, labels, prods)
                return labels
        return (None,) * t.dim()

    def prods(self, t: torch.Tensor) -> frozenset[str]:
        if id(t) not in self._labels:
            self.labels(t)
        return self._prods.get(id(t), frozenset())

    def set(self, t: torch.Tensor, labels: Labels, prods: frozenset[str] = frozenset()) -> None:
        labels = tuple(labels)
        if len(labels) != t.dim():
            labels = (None,) * t.dim()
        self._labels[id(t)] = (t, labels)
        if len(prods) > MAX_PRODUCERS:
            rank = self._call_rank
            prods = frozenset(sorted(prods, key=lambda p: rank.get(p, -1))[-MAX_PRODUCERS:])
        self._prods[id(t)] = prods

    def note_call(self, name: str) -> None:
        """Record that module ``name`` produced an output just now (for :data:`MAX_PRODUCERS`)."""
        self._calls += 1
        self._call_rank[name] = self._calls

    def note_unknown(self, name: str) -> None:
        self.unknown_ops[name] = self.unknown_ops.get(name, 0) + 1

    # -- helpers shared by rules ----------------------------------------------------
    def freeze_all(self, t: torch.Tensor) -> None:
        for lab in self.labels(t):
            self.table.freeze(lab)

    def union_prods(self, tensors: list[torch.Tensor]) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for t in tensors:
            p = self.prods(t)
            if p:
                out = out | p
        return out
