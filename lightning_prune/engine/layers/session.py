"""One cut per tensor and dim within one group prune, so that a tied weight is cut once.

A weight shared by two layers (an ``nn.Embedding`` and the output ``nn.Linear`` of a
language model) is one tensor. When the dependency graph couples the two layers'
channels, both layer pruners slice it along the same dim in one group prune; the second
slice would remove a second, different set of channels. The graph opens a
:func:`slice_session` around a group prune and numbers each layer-pruner call; the first
call to slice a ``(tensor, dim)`` owns it and later calls of the same prune skip it.
Outside a session (a low-level ``prune_*`` called by hand) every slice happens.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from ..errors import PruningError

_state = threading.local()


class SliceSession:
    """Which layer-pruner call of the current group prune first sliced each ``(tensor, dim)``."""

    def __init__(self) -> None:
        self.call = 0
        self._owner: dict[tuple[int, int], int] = {}

    def should_slice(self, tensor: torch.Tensor, dim: int, size_after: int) -> bool:
        """``False`` when an earlier call of this prune already cut ``tensor`` along ``dim``."""
        owner = self._owner.setdefault((id(tensor), dim), self.call)
        if owner == self.call:
            return True
        if tensor.shape[dim] != size_after:
            raise PruningError(
                f"a tensor shared by several layers (shape {list(tensor.shape)}) was cut along dim {dim} "
                f"by one layer, and another layer now asks for {size_after} along that dim: the layers "
                f"that share it disagree on its channels"
            )
        return False


def active_session() -> SliceSession | None:
    return getattr(_state, "session", None)


@contextlib.contextmanager
def slice_session() -> Iterator[SliceSession]:
    """Scope of one group prune; nested sessions are independent."""
    outer = active_session()
    session = SliceSession()
    _state.session = session
    try:
        yield session
    finally:
        _state.session = outer
