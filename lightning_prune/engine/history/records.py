"""Records of what a prune removed, in primitive types only.

Every slice that a pruning function applies to a parameter or buffer is reported
here. A record maps a *qualified tensor name* (``"layer1.0.conv1.weight"``) to the
ordered list of ``(dim, kept_indices)`` slices applied to it. Because records are
plain ``dict``/``list``/``int``/``str``, they survive ``torch.load(weights_only=True)``
and can be stored in a Lightning checkpoint. The Lightning callback uses them to
slice optimizer state and to replay a pruning history on a fresh model.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, TypedDict

import torch

# One slice: (dim, kept indices in the tensor *before* this slice).
SliceRecord = tuple[int, list[int]]
PruningRecord = dict[str, list[SliceRecord]]


class PruneRecord(TypedDict):
    """What one prune (a group, or a whole pruner step) did: the record format.

    A ``TypedDict``, so that a record *is* a plain ``dict`` of primitives at run time:
    it goes into a Lightning checkpoint or ``torch.save`` and loads back with
    ``weights_only=True`` without any conversion.
    """

    #: qualified tensor name -> the slices applied to it, in order
    tensors: PruningRecord
    #: ``"module.attr"`` -> its new primitive value (``out_channels``, ``num_heads``...)
    attributes: dict[str, Any]


#: ``nn.Module``'s own bookkeeping (``training``, ``_parameters``, hooks...), which is not
#: model state worth recording or restoring.
MODULE_INTERNALS = frozenset(torch.nn.Module().__dict__.keys())
_PRIMITIVE = (int, float, bool, str, type(None))
_PLAIN_TYPES = frozenset(_PRIMITIVE)


def is_primitive(value: Any) -> bool:
    """The attribute values a record holds: numbers, strings, ``None`` and flat tuples/lists of them.

    The graph's snapshot (what a prune changed) and the pruned state dict (what to
    restore) use this one rule, so that records and state dicts agree.
    """
    if type(value) in _PLAIN_TYPES or isinstance(value, _PRIMITIVE):  # exact types first: no isinstance walk
        return True
    return isinstance(value, tuple | list) and all(isinstance(v, _PRIMITIVE) for v in value)

_state = threading.local()


class PruningRecorder:
    """Collects slices applied to tensors while it is active.

    Args:
        names: maps ``id(tensor)`` to the tensor's qualified name. Tensors that are
            not in the map are recorded under ``"<unnamed:ID>"`` so nothing is lost.
    """

    def __init__(self, names: dict[int, str] | None = None) -> None:
        self.names = dict(names or {})
        self.record: PruningRecord = {}

    def notify(self, tensor: torch.Tensor, dim: int, keep: list[int]) -> None:
        name = self.names.get(id(tensor), f"<unnamed:{id(tensor)}>")
        # ``slice_tensor`` hands over a fresh list of plain ints: store it without a copy
        self.record.setdefault(name, []).append((int(dim), keep))


def active_recorders() -> list[PruningRecorder]:
    return getattr(_state, "stack", [])


@contextlib.contextmanager
def recording(names: dict[int, str] | None = None) -> Iterator[PruningRecorder]:
    """Record every tensor slice made inside the ``with`` block."""
    rec = PruningRecorder(names)
    stack = list(active_recorders())
    stack.append(rec)
    _state.stack = stack
    try:
        yield rec
    finally:
        _state.stack = stack[:-1]


def tensor_names(model: torch.nn.Module, modules: dict[str, torch.nn.Module] | None = None) -> dict[int, str]:
    """``id(tensor) -> qualified name`` for all parameters and buffers of ``model``.

    ``modules`` (``dict(model.named_modules(remove_duplicate=False))``, when the caller
    already has it) saves walking the model again.
    """
    if modules is None:
        modules = dict(model.named_modules(remove_duplicate=False))
    names: dict[int, str] = {}
    for slot in ("_parameters", "_buffers"):  # parameters first: a tensor is named as a parameter
        for prefix, mod in modules.items():
            for key, t in getattr(mod, slot).items():
                if t is not None:
                    names.setdefault(id(t), f"{prefix}.{key}" if prefix else key)
    return names


def merge_records(records: list[PruningRecord]) -> PruningRecord:
    """Concatenate several records in order (later slices apply after earlier ones)."""
    out: PruningRecord = {}
    for rec in records:
        for name, slices in rec.items():
            out.setdefault(name, []).extend((int(d), list(k)) for d, k in slices)
    return out


def compose_keep(slices: list[SliceRecord], dim: int, original_size: int) -> list[int]:
    """Indices into the *original* tensor along ``dim`` that survive all ``slices``."""
    kept = list(range(original_size))
    for d, keep in slices:
        if d == dim:
            kept = [kept[i] for i in keep]
    return kept
