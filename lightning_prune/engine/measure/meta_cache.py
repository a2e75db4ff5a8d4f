"""Replaying meta-device op results, the op counter's shortcut.

Counting runs the model on the ``meta`` device, where an op's result depends on nothing
but its arguments' metadata. Many meta kernels are Python reference implementations, so
replaying the output metadata of an earlier call with the same arguments is much cheaper
than running the kernel again.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["MetaOpCache"]


class _Uncacheable(Exception):
    """An op call whose result cannot be replayed from its arguments' metadata."""


def _signature(value: Any) -> Any:
    """Hashable description of an op argument: metadata for tensors, typed values otherwise."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "meta":
            raise _Uncacheable
        return (value.dtype, tuple(value.shape), value.stride(), value.storage_offset())
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_signature(v) for v in value))
    if isinstance(value, dict):
        return (dict, tuple((k, _signature(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError as error:
        raise _Uncacheable from error
    # The type keeps 2 and 2.0 apart: they give different result dtypes.
    return (type(value), value)


def _output_spec(out: Any, args: tuple, kwargs: dict) -> Any:
    """How to rebuild ``out``: fresh empty tensors, or the argument an in-place op returned."""
    if out is None:
        return ("none",)
    if isinstance(out, (list, tuple)):
        return (type(out), tuple(_output_spec(o, args, kwargs) for o in out))
    if not isinstance(out, torch.Tensor):
        raise _Uncacheable
    for index, arg in enumerate(args):
        if arg is out:
            return ("arg", index)
    for key, arg in kwargs.items():
        if arg is out:
            return ("kwarg", key)
    if out.device.type != "meta" or out.storage_offset() != 0:
        raise _Uncacheable
    return ("new", tuple(out.shape), out.stride(), out.dtype)


def _rebuild(spec: Any, args: tuple, kwargs: dict) -> Any:
    kind = spec[0]
    if kind == "new":
        return torch.empty_strided(spec[1], spec[2], dtype=spec[3], device="meta")
    if kind == "arg":
        return args[spec[1]]
    if kind == "kwarg":
        return kwargs[spec[1]]
    if kind == "none":
        return None
    return kind(_rebuild(s, args, kwargs) for s in spec[1])


def _returns_views(func: Any) -> bool:
    """Views share metadata with their base; replaying them as fresh tensors would break that."""
    schema = getattr(func, "_schema", None)
    if schema is None:
        return True
    return any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)


class MetaOpCache:
    """Replays meta-device op results from a previous call with the same argument metadata.

    Many meta kernels (batch norm, layer norm, hardtanh, GELU, addmm, ...) are Python
    reference implementations that cost far more than replaying their output metadata,
    and a network repeats the same few shapes. Only ops that return fresh tensors or an
    in-place argument whose metadata they do not change are cached; results on meta
    depend on nothing but argument metadata.

    Whoever counts owns the cache: ``count_ops_and_params`` makes one per call unless it
    is given one, so nothing is kept between calls that did not ask for it. Pass the same
    cache to several counts of models with the same shapes (a solver trying ratios) to
    share the replays; it holds no tensors, only shapes, strides and dtypes, and empties
    itself when it reaches ``max_entries``.
    """

    def __init__(self, max_entries: int = 8192) -> None:
        self._entries: dict[Any, Any] = {}
        self._max_entries = max_entries

    def run(self, func: Any, args: tuple, kwargs: dict) -> Any:
        try:
            key = None
            if not _returns_views(func):
                # Factory ops without a dtype read the global default dtype.
                key = (func, torch.get_default_dtype(), _signature(args), _signature(kwargs))
        except _Uncacheable:
            key = None
        spec = self._entries.get(key) if key is not None else None
        if spec is not None:
            return _rebuild(spec, args, kwargs)
        before = key and _signature((args, kwargs))
        out = func(*args, **kwargs)
        # Ops that change an argument's metadata (unsqueeze_, resize_, out=) cannot be replayed.
        if key is not None and _signature((args, kwargs)) == before:
            self._store(key, out, args, kwargs)
        return out

    def _store(self, key: Any, out: Any, args: tuple, kwargs: dict) -> None:
        try:
            spec = _output_spec(out, args, kwargs)
        except _Uncacheable:
            return
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = spec

    def __len__(self) -> int:
        return len(self._entries)

