"""From the user's references to the graph's: a layer (or parameter) and a pruning function to a
space, ``ignored_layers`` to components, and root indices checked against a layer's width.

Each refusal is a :class:`~lightning_prune.engine.errors.PruningError` that says what to
pass instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import PruningError
from .names import ModelIndex, resolve_ignored
from .tables import ElementTables

__all__ = ["blocked_components", "is_out_channel_pruning_fn", "module_name", "space_for", "validate_idxs"]


def is_out_channel_pruning_fn(fn: Any) -> bool:
    name = getattr(fn, "__name__", "")
    return "in_channels" not in name


def module_name(names: ModelIndex | None, module: nn.Module) -> str:
    """The qualified name of ``module`` in the graph's model."""
    name = names.module_names.get(id(module)) if names is not None else None
    if name is None:
        raise PruningError(
            f"{type(module).__name__} is not a submodule of the model this graph was built for; "
            f"pass a module from the same model instance"
        )
    return name


def space_for(tables: ElementTables, names: ModelIndex, target: Any, pruning_fn: Any) -> int:
    """The space that ``pruning_fn`` prunes on ``target`` (a layer, or an unwrapped parameter)."""
    spaces = tables.spaces
    if isinstance(target, torch.Tensor) and not isinstance(target, nn.Module):
        name = names.tensor_names.get(id(target))
        dims = [i for i, sp in enumerate(spaces) if sp.role == "param" and sp.name == name]
        if not dims:
            raise PruningError(f"parameter {name or '(unknown)'} has no prunable dim in this graph")
        want = getattr(pruning_fn, "dim", None)
        for i in dims:
            if want is None or spaces[i].dim == want:
                return i
        return dims[0]
    name = module_name(names, target)
    _check_pruning_fn(names, target, name, pruning_fn)
    role = "out" if is_out_channel_pruning_fn(pruning_fn) else "in"
    for key in (("module", name, role), ("module", name, "out")):
        i = tables.space_of(key)
        if i is not None:
            return i
    raise PruningError(
        f"{name} ({type(target).__name__}) has no traced {role} channels: it was not reached "
        f"by the forward pass or it has no layer pruner. Check example_inputs, or register a "
        f"pruner with customized_pruners={{{type(target).__name__}: pruner}}"
    )


def _check_pruning_fn(names: ModelIndex, module: nn.Module, name: str, pruning_fn: Any) -> None:
    """Refuse a ``pruning_fn`` written for another layer type (``prune_linear_*`` on a conv).

    The function only picks ``out`` or ``in`` channels here; the layer's own pruner does
    the work. A function of another family is almost always a copy-paste slip, and
    silently using the layer's pruner would hide it.
    """
    owner = getattr(pruning_fn, "__self__", None)
    registered = names.pruners.get(id(module))
    if owner is None or registered is None or owner is registered:
        return
    if isinstance(registered, type(owner)) or isinstance(owner, type(registered)):
        return
    targets = getattr(owner, "TARGET_TYPES", ())
    if targets and isinstance(module, targets):
        return
    fn_name = getattr(pruning_fn, "__name__", repr(pruning_fn))
    raise PruningError(
        f"get_pruning_group: pruning_fn {type(owner).__name__}.{fn_name} does not prune {name} "
        f"({type(module).__name__}), whose pruner is {type(registered).__name__}. Pass "
        f"{type(registered).__name__}'s prune_out_channels / prune_in_channels (for built-in layers, "
        f"the tp.prune_<layer>_out_channels function of its type)"
    )


def blocked_components(tables: ElementTables, names: ModelIndex, ignored_layers: Iterable[Any] | None) -> torch.Tensor:
    """Components of the outputs of ignored layers (and of ignored parameters): never pruned."""
    comps = []
    for mod in resolve_ignored(names.model, ignored_layers):
        if isinstance(mod, nn.Module):
            i = _output_space(tables, names.module_names.get(id(mod)))
            if i is not None:
                comps.append(tables.comp[tables.spaces[i].elems])
        else:
            name = names.tensor_names.get(id(mod))
            for sp in tables.spaces:
                if sp.role == "param" and sp.name == name:
                    comps.append(tables.comp[sp.elems])
    return torch.unique(torch.cat(comps)) if comps else torch.zeros(0, dtype=torch.long)


def _output_space(tables: ElementTables, name: str | None) -> int | None:
    """The output space of layer ``name``, or of the layer it is pruned as part of.

    ``nn.MultiheadAttention.out_proj`` has no space of its own: the attention layer is
    traced and pruned as one unit, whose output *is* ``out_proj``'s output.
    """
    if name is None:
        return None
    parts = name.split(".")
    while parts:
        i = tables.space_of(("module", ".".join(parts), "out"))
        if i is not None:
            return i
        parts.pop()
    return None


def validate_idxs(idxs: Sequence[int], size: int, name: str) -> list[int]:
    """``idxs`` as sorted unique ints in ``[0, size)``; anything else is refused."""
    if isinstance(idxs, torch.Tensor):
        idxs = idxs.flatten().tolist()
    out = []
    for i in idxs:
        if isinstance(i, bool) or not isinstance(i, int):
            try:
                i = int(i)
            except (TypeError, ValueError):
                raise PruningError(f"{name}: idxs must be integers, got {i!r}") from None
        if i < 0 or i >= size:
            raise PruningError(f"{name}: index {i} is out of range for {size} channels; pass indices in [0, {size})")
        out.append(i)
    return sorted(set(out))
