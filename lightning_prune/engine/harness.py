"""Running a model forward on stand-in tensors, and leaving it exactly as it was.

The tracer, its dry runs and the op counter all run the user's model once on tensors
that are not the model's own: meta tensors (shapes only, no arithmetic, no memory), or,
for models that need real values, the real parameters with copies of the buffers a
forward may update. This module is the one implementation of how that is done:

* :class:`StandIns` writes a stand-in for every parameter and buffer straight into each
  module's ``_parameters`` / ``_buffers`` slots (what ``torch.func.functional_call``
  does, in one walk over the modules), gives a tensor shared by several modules (tied
  weights) one stand-in, shows modules that cache their weights (``nn.RNNBase``'s
  ``_flat_weights``) the stand-ins, and puts everything back;
* :class:`AttributeSnapshot` undoes the attributes a forward (re)binds on its modules;
* :func:`save_modes` / :func:`set_modes` / :func:`restore_modes` handle every
  submodule's ``training`` flag without calling ``train()``, which user code may override
  with side effects;
* :func:`stand_in_forward` does all three around a block, in the order that keeps the
  restore cheap;
* :func:`call_model` / :func:`run_forward` feed inputs to a model by the engine's one
  convention.

As in Torch-Pruning, inputs that are a dict (any mapping) are passed as keyword
arguments, a tuple or a list as positional arguments, anything else (usually one tensor)
as the only argument. A model that takes a list as one argument (torchvision's detection
models) gets it wrapped in a tuple: ``([image],)``.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from .tree import map_tensors

__all__ = [
    "AttributeSnapshot", "ForwardFn", "StandIns", "call_model", "move_inputs", "restore_modes", "run_forward",
    "same_values", "save_modes", "set_modes", "stand_in", "stand_in_forward", "stand_in_inputs", "training_flags",
]

ForwardFn = Callable[[nn.Module, Any], Any]

#: Where a forward on stand-ins runs: "meta" (shapes only) or "real" (real values, under no_grad).
DEVICES = ("meta", "real")

_MISSING = object()


# --------------------------------------------------------------------------- calling


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)``, ``model(*inputs)`` or ``model(inputs)``, by the convention above."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def run_forward(model: nn.Module, inputs: Any, forward_fn: ForwardFn | None = None) -> Any:
    """``forward_fn(model, inputs)`` when given, else :func:`call_model`."""
    return forward_fn(model, inputs) if forward_fn is not None else call_model(model, inputs)


def move_inputs(inputs: Any, device: torch.device | str) -> Any:
    """``inputs`` (a tensor, or tuples, lists, dicts and namedtuples of them) on ``device``."""
    return map_tensors(inputs, lambda t: t.to(device))


# --------------------------------------------------------------------------- stand-ins


_META = torch.device("meta")  # an object, not the string: torch parses that at every call


def stand_in(t: torch.Tensor, device: str, clone: bool) -> torch.Tensor:
    """A meta tensor of ``t``'s shape, dtype and strides; or, for "real", ``t`` detached (and copied if ``clone``).

    Copies are for what a forward may write to (buffers such as BatchNorm statistics,
    inputs); parameters are only read, so their detached views cost nothing.
    """
    if device == "meta":
        return torch.empty_like(t, device=_META)
    return t.detach().clone() if clone else t.detach()


def stand_in_inputs(inputs: Any, device: str) -> Any:
    """``inputs`` with every tensor replaced: meta tensors, or copies the forward may write to."""
    return map_tensors(inputs, lambda t: stand_in(t, device, clone=True))


class StandIns:
    """Every parameter and buffer of ``modules`` swapped for a stand-in while applied.

    ``modules`` maps qualified names to modules (``named_modules()``, with or without
    duplicates). A tensor shared by several modules gets one stand-in, named after its
    first owner, as ``named_parameters()`` names it (parameters before buffers: a tensor
    that is both is named as a parameter). :attr:`names` maps ``id(stand-in)`` to
    ``(qualified name, original)``, :attr:`original_names` ``id(original)`` to the name.
    """

    __slots__ = ("swaps", "names", "original_names", "_cached", "_saved_cached")

    def __init__(self, modules: Mapping[str, nn.Module], device: str) -> None:
        if device not in DEVICES:
            raise ValueError(f"stand-ins run on one of {DEVICES}, got {device!r}")
        swaps: list[tuple[dict, str, torch.Tensor, torch.Tensor]] = []
        names: dict[int, tuple[str, torch.Tensor]] = {}
        made: dict[int, torch.Tensor] = {}
        originals: dict[int, str] = {}
        meta = device == "meta"  # stand_in() inlined: this loop runs for every tensor of every build
        for is_buffer in (False, True):
            for prefix, mod in modules.items():
                slots = mod._buffers if is_buffer else mod._parameters
                for key, t in slots.items():
                    if t is None:
                        continue
                    new = made.get(id(t))
                    if new is None:
                        new = made[id(t)] = (torch.empty_like(t, device=_META) if meta else
                                             stand_in(t, device, clone=is_buffer))
                        name = f"{prefix}.{key}" if prefix else key
                        names[id(new)] = (name, t)
                        originals[id(t)] = name
                    swaps.append((slots, key, t, new))
        self.swaps = swaps
        self.names = names
        self.original_names = originals
        cached = [mod for mod in modules.values() if isinstance(mod, nn.RNNBase)]
        self._cached = list({id(m): m for m in cached}.values())
        self._saved_cached: list[tuple[nn.Module, Any, Any]] = []

    def apply(self) -> None:
        for slots, key, _, new in self.swaps:
            slots[key] = new
        for mod in self._cached:
            self._saved_cached.append(_show_flat_weights(mod))

    def restore(self) -> None:
        for slots, key, old, _ in self.swaps:
            slots[key] = old
        for mod, *saved in self._saved_cached:
            attrs = mod.__dict__
            for key, value in zip(("_flat_weights", "_flat_weight_refs"), saved, strict=True):
                if value is _MISSING:
                    attrs.pop(key, None)
                else:
                    attrs[key] = value
        self._saved_cached = []


def _show_flat_weights(mod: nn.Module) -> tuple[nn.Module, Any, Any]:
    """Point an RNN's cached weight list at the (already swapped) stand-ins; what it held before.

    ``nn.RNNBase`` runs on ``_flat_weights``, a list it keeps beside ``_parameters``.
    A fresh list (the original is left untouched) with matching weak references, so the
    forward does not rebuild it (rebuilding also calls ``flatten_parameters``, which on
    CUDA would re-pack the stand-ins).
    """
    attrs = mod.__dict__
    saved = (mod, attrs.get("_flat_weights", _MISSING), attrs.get("_flat_weight_refs", _MISSING))
    # getattr, as torch itself reads them: a parametrized weight is a property, not a slot
    flat = [getattr(mod, name, None) for name in mod._flat_weights_names]
    attrs["_flat_weights"] = flat
    if saved[2] is not _MISSING:
        attrs["_flat_weight_refs"] = [weakref.ref(w) if w is not None else None for w in flat]
    return saved


# --------------------------------------------------------------------------- attributes


class AttributeSnapshot:
    """Every module's attributes as they are now, to undo what a forward (re)binds.

    Forwards cache things on ``self``: old-style ``weight_norm`` sets ``weight``,
    torchvision's anchor generator moves ``cell_anchors`` to the input's device, a
    forward on stand-ins leaves stand-ins behind. The restore is shallow: an attribute
    rebound or added is put back or dropped, an in-place edit of a list is not.
    Internals (``_parameters``, ``_modules``...) stay the same dict objects throughout;
    their contents are put back by whoever changed them.
    """

    __slots__ = ("saved",)

    def __init__(self, modules: Iterable[nn.Module], unique: bool = False) -> None:
        """``unique``: ``modules`` holds each module once already (saves a pass on the hot path)."""
        if not unique:
            modules = {id(m): m for m in modules}.values()
        self.saved = [(m, m.__dict__.copy()) for m in modules]

    def restore(self) -> None:
        for mod, attrs in self.saved:
            current = mod.__dict__
            if same_values(current, attrs):
                continue  # the usual case: the forward wrote nothing
            for k in [k for k in current if k not in attrs]:
                del current[k]
            for k, v in attrs.items():
                if current.get(k, _MISSING) is not v:
                    current[k] = v


def same_values(a: dict, b: dict) -> bool:
    """``a`` and ``b`` hold the same keys with the same values: nothing to restore.

    ``a == b`` in C, which takes identical values as equal without calling their
    ``__eq__``: five times faster than comparing identities with ``operator.is_``, and
    this runs for every module of every build. A value rebound to a different object
    that compares equal (an int, a string, an equal tuple) is left as the forward set
    it; a comparison that raises (tensors of several elements, meta tensors against
    real ones) takes the slow path, which restores by identity.
    """
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - any value's __eq__ may raise; restore key by key
        return False


# --------------------------------------------------------------------------- train/eval


def save_modes(modules: Iterable[nn.Module]) -> list[tuple[nn.Module, bool]]:
    """Every module's own ``training`` flag, so mixed modes (a frozen BatchNorm) come back as they were."""
    return [(m, m.training) for m in modules]


def set_modes(modules: Iterable[nn.Module], training: bool) -> None:
    """Set ``training`` on each module as ``Module.train()`` does, without calling it.

    ``train()`` may be overridden with side effects (freezing layers, logging), and the
    attribute is written to ``__dict__`` directly, past ``Module.__setattr__``.
    """
    for m in modules:
        m.__dict__["training"] = training


def restore_modes(saved: list[tuple[nn.Module, bool]]) -> None:
    for m, training in saved:
        m.__dict__["training"] = training


@contextlib.contextmanager
def training_flags(modules: Iterable[nn.Module], training: bool | None) -> Iterator[None]:
    """Run the block with every module in ``training`` mode (``None``: as they are); restore each flag."""
    modules = list(modules)
    saved = save_modes(modules)
    try:
        if training is not None:
            set_modes(modules, training)
        yield
    finally:
        restore_modes(saved)


# --------------------------------------------------------------------------- together


@contextlib.contextmanager
def stand_in_forward(modules: Mapping[str, nn.Module], device: str,
                     training: bool | None = None) -> Iterator[StandIns]:
    """The block runs with ``modules`` on stand-ins, in ``training`` mode if given; all undone after.

    Modes are set before the attribute snapshot (``training`` lives in ``__dict__``), so
    an unchanged module passes the restore's quick check. The stand-ins are swapped in
    last and out first. Inputs are the caller's: see :func:`stand_in_inputs`.
    """
    unique = list({id(m): m for m in modules.values()}.values())
    modes = save_modes(unique)
    try:
        if training is not None:
            set_modes(unique, training)
        stand_ins = StandIns(modules, device)
        snapshot = AttributeSnapshot(unique, unique=True)
        try:
            stand_ins.apply()
            yield stand_ins
        finally:
            stand_ins.restore()
            snapshot.restore()
    finally:
        restore_modes(modes)
