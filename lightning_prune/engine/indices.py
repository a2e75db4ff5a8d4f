"""Index lists to tensors, fast.

The engine keeps channel indices as Python lists (they go into records, which must be
primitive types) and turns them into ``LongTensor`` indices for slicing and scoring.
``torch.as_tensor(list)`` converts element by element; packing the ints into an
``array`` first and viewing its buffer is several times cheaper, which adds up over the
hundreds of conversions of one pruner step.
"""

from __future__ import annotations

import array
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

__all__ = ["KeptIdxs", "SortedIdxs", "complement", "long_tensor"]


def long_tensor(values: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """``values`` (plain Python ints) as a 1-D ``torch.long`` tensor on ``device``."""
    if len(values) == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    try:
        packed = array.array("q", values)
    except TypeError:  # not plain ints (numpy integers and the like): the slow, general path
        return torch.as_tensor(list(values), dtype=torch.long, device=device)
    # frombuffer shares the array's memory and keeps it alive; clone-free on CPU
    out = torch.frombuffer(packed, dtype=torch.long)
    return out if device is None or torch.device(device).type == "cpu" else out.to(device)


def complement(size: int, remove: Sequence[int]) -> list[int]:
    """``range(size)`` without ``remove`` (valid indices), in order.

    A byte mask and ``itertools.compress``: the fastest of set difference, list
    comprehensions and a torch mask for the sizes layers have.
    """
    mask = bytearray(b"\x01") * size
    for i in remove:
        mask[i] = 0
    return list(itertools.compress(range(size), mask))


class _Memoized(list):
    """A list that caches values derived from it (it must not be mutated after that)."""

    __slots__ = ("_memo",)

    def __init__(self, values: Iterable[int] = ()) -> None:
        super().__init__(values)
        self._memo: dict = {}

    def _cached(self, key: object, make: Callable[[], Any]) -> Any:
        out = self._memo.get(key)
        if out is None:
            out = self._memo[key] = make()
        return out


class SortedIdxs(_Memoized):
    """Indices to remove that are already sorted and unique, as the dependency graph makes them.

    One group prunes the same positions from many tensors: a conv's weight and bias, the
    four tensors of the BatchNorm after it, the next conv's input. With a plain list, every
    layer pruner would sort and deduplicate it, work out the kept indices and turn them
    into a tensor again; this list does that once per size and hands out the same
    :class:`KeptIdxs`. It is only given to the built-in
    layer pruners, which never mutate their ``idxs``; custom pruners get plain lists.
    """

    __slots__ = ()

    def tensor(self) -> torch.Tensor:
        """These indices as a CPU ``LongTensor``, made once."""
        return self._cached("tensor", lambda: long_tensor(self))

    def kept(self, size: int) -> KeptIdxs:
        """``range(size)`` without these indices, computed once per ``size``."""
        return self._cached(size, lambda: KeptIdxs(complement(size, self)))


class KeptIdxs(_Memoized):
    """Kept indices (sorted, unique, plain ints) that remember their ``LongTensor`` per device."""

    __slots__ = ()

    def tensor(self, device: torch.device) -> torch.Tensor:
        return self._cached(device, lambda: long_tensor(self, device))
