"""Channel elements, their unions, and connected components.

Every prunable channel of every layer (and every dim of an unwrapped parameter) is an
*element* with an integer id. While tracing, each tensor dim carries a *label*: a 1-D
``LongTensor`` that says which element each position along the dim belongs to (``None``
when the dim carries no prunable channel, e.g. batch, spatial or token dims).

When an op couples two dims (a residual add, a conv reading a BatchNorm output, the two
operands of a matmul contraction), their labels are *unified* position by position. The
unions are only collected as edge lists during tracing; :func:`connected_components`
resolves them at the end in a handful of vectorized passes, so tracing stays linear in
the number of ops.

Element ``0`` is the special FROZEN element: anything unified with it can never be
pruned (model outputs, model inputs, constants of fixed size, ops we do not understand).
"""

from __future__ import annotations

import torch

FROZEN = 0

Label = torch.Tensor  # 1-D int64 tensor of element ids


class ElementTable:
    """Allocates element ids and records unions and flags between them."""

    def __init__(self) -> None:
        self.size = 1  # element 0 is FROZEN
        self._ids = torch.arange(1 << 16, dtype=torch.long)
        self._edges_a: list[torch.Tensor] = []
        self._edges_b: list[torch.Tensor] = []
        self._sensitive: list[torch.Tensor] = []
        self._heads: list[torch.Tensor] = []

    def alloc(self, n: int) -> Label:
        """``n`` new element ids, as a view of one shared ``arange`` (labels are never
        written in place), so that a layer costs no new allocation."""
        start = self.size
        self.size += int(n)
        if self.size > self._ids.numel():
            self._ids = torch.arange(max(2 * self._ids.numel(), self.size), dtype=torch.long)
        return self._ids[start:self.size]

    def unify(self, a: Label | None, b: Label | None) -> None:
        """Couple ``a[i]`` with ``b[i]`` for every position ``i``.

        A ``None`` side means the dim carries no prunable channel but has a fixed size,
        so the other side is frozen.
        """
        if a is None and b is None:
            return
        if a is None:
            self.freeze(b)
            return
        if b is None:
            self.freeze(a)
            return
        if a is b:
            return
        if a.numel() != b.numel():
            # Shapes disagree (should not happen for well-formed ops): be conservative.
            self.freeze(a)
            self.freeze(b)
            return
        self._edges_a.append(a if a.dim() == 1 else a.reshape(-1))  # labels are 1-D but for grids
        self._edges_b.append(b if b.dim() == 1 else b.reshape(-1))

    def unify_broadcast(self, labels: Label, target: Label) -> None:
        """Couple every entry of ``labels`` with the entry of ``target`` it broadcasts to."""
        self.unify(labels.reshape(-1), target.expand_as(labels).reshape(-1))

    def couple(self, labels: list[Label | None]) -> Label | None:
        """Unify dims that meet in one output dim; the shared label, or ``None``.

        If any of them is unlabeled (a fixed size), all of them are frozen instead.
        """
        if not labels:
            return None
        for lab in labels:
            if lab is None:
                for each in labels:
                    self.freeze(each)
                return None
        for lab in labels[1:]:
            self.unify(labels[0], lab)
        return labels[0]

    def freeze(self, a: Label | None) -> None:
        if a is None or a.numel() == 0:
            return
        if a.dim() != 1:
            a = a.reshape(-1)
        self._edges_a.append(a)
        self._edges_b.append(torch.zeros_like(a))

    def mark_sensitive(self, a: Label | None) -> None:
        """Flag elements whose dim size was written as an explicit int in a reshape.

        Pruning such channels may break the reshape unless a width attribute is updated,
        so groups holding them are re-checked with a dry run before they are pruned.
        """
        if a is not None and a.numel():
            self._sensitive.append(a.reshape(-1))

    def mark_heads(self, a: Label | None) -> None:
        """Flag elements coupled as whole blocks (attention heads) in ``blocks`` mode."""
        if a is not None and a.numel():
            self._heads.append(a.reshape(-1))

    def heads_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.size, dtype=torch.bool)
        if self._heads:
            mask[torch.cat(self._heads)] = True
        return mask

    def components(self) -> torch.Tensor:
        """Component id (the smallest element id in it) for every element."""
        if self._edges_a:
            a = torch.cat(self._edges_a)
            b = torch.cat(self._edges_b)
        else:
            a = b = torch.zeros(0, dtype=torch.long)
        return connected_components(self.size, a, b)

    def sensitive_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.size, dtype=torch.bool)
        if self._sensitive:
            mask[torch.cat(self._sensitive)] = True
        return mask


def connected_components(n: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Label each of ``n`` nodes with the smallest node id in its component.

    Hook-and-compress (Shiloach-Vishkin style): every round hooks the larger root of each
    edge under the smaller one with a scatter-min, then compresses paths by pointer
    jumping. Rounds are few (logarithmic in practice) and each is a vectorized pass, so a
    graph with millions of unions resolves in milliseconds.

    Edges whose ends already share a root are not filtered out: ``parent[x] <= x`` always
    holds, so hooking a root under itself changes nothing, and a boolean-mask selection
    that dropped them would cost more than the wasted hooks.
    """
    # index_select, not parent[a]: 1-D advanced indexing is much slower on CPU
    parent = torch.arange(n, dtype=torch.long)
    if a.numel() == 0:
        return parent
    pa, pb = a, b  # every node is its own root before the first round
    while True:
        if torch.equal(pa, pb):
            return parent
        parent.scatter_reduce_(0, torch.maximum(pa, pb), torch.minimum(pa, pb), reduce="amin")
        while True:
            grand = parent.index_select(0, parent)
            if torch.equal(grand, parent):
                break
            parent = grand
        pa = parent.index_select(0, a)
        pb = parent.index_select(0, b)
