"""Run the engine's bookkeeping on one intra-op thread.

Graph building, group lookup and slicing are thousands of *tiny* tensor ops. With more
than one intra-op thread, each of them pays a thread hand-off that costs more than the
op; on a busy machine, 6-18x more (measured: searchsorted on 80k elements, 7 us with one
thread, 43 us with two under load). Switching costs ~14 us, so entry points switch to one
thread and restore the caller's setting on the way out.

Entry points that create many Python objects (graph building, a pruner step) also pause
the cyclic garbage collector (:func:`gc_paused`): a full collection walks every object of
the model and the graph, and one landing mid-step cost 130 ms against a 60 ms median.

Large tensor work inside those entry points (weight norms for importance, index_select
of big weights) is the opposite case: it scales with threads. :func:`for_large` gives
such an op the caller's thread count back while it runs.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


#: Tensors with at least this many elements are "large": worth the thread switch.
LARGE_NUMEL = 1 << 18

# The caller's thread count while inside single_threaded() (innermost last).
_caller_threads: list[int] = []


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    n = torch.get_num_threads()
    if n <= 1:
        yield
        return
    torch.set_num_threads(1)
    _caller_threads.append(n)
    try:
        yield
    finally:
        _caller_threads.pop()
        torch.set_num_threads(n)


class for_large:  # noqa: N801 - used like the context-manager functions above
    """Inside :func:`single_threaded`, run a tensor op on ``numel`` elements with the
    caller's threads if it is large (at least :data:`LARGE_NUMEL`); otherwise do nothing.

    A class rather than a generator context manager: it wraps every slice of every
    weight, and for small tensors it must cost next to nothing.
    """

    __slots__ = ("_switch",)

    def __init__(self, numel: int) -> None:
        self._switch = bool(_caller_threads) and numel >= LARGE_NUMEL and torch.get_num_threads() == 1

    def __enter__(self) -> None:
        if self._switch:
            torch.set_num_threads(_caller_threads[-1])

    def __exit__(self, *exc: object) -> None:
        if self._switch:
            torch.set_num_threads(1)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (reference counting still frees)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def one_thread(fn: F) -> F:
    """Decorator form of :func:`single_threaded` (not for generators)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with single_threaded():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
