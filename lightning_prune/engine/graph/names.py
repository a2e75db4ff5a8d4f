"""Names in a traced model: its modules, tensors and layer pruners, and the user's ways of naming them.

:class:`ModelIndex` is what a graph knows about the model's modules; :func:`resolve_ignored`
and :func:`normalize_unwrapped` turn the ``ignored_layers`` / ``unwrapped_parameters``
arguments into modules and parameter ids, refusing anything that names nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["ModelIndex", "normalize_unwrapped", "resolve_ignored"]


@dataclass(frozen=True)
class ModelIndex:
    """The model a graph was built for, and its names (all made once, at the build)."""

    model: nn.Module
    #: qualified name -> module (duplicates kept: a shared module is listed under each name)
    modules: dict[str, nn.Module]
    #: id(module) -> its first qualified name
    module_names: dict[int, str]
    #: id(parameter or buffer) -> qualified name
    tensor_names: dict[int, str]
    #: id(module) -> the layer pruner that handles it
    pruners: dict[int, Any]


def resolve_ignored(model: nn.Module, items: Iterable[Any] | None) -> list[Any]:
    """Modules (with their submodules) and parameters named by ``ignored_layers``.

    Accepts modules, parameters and dotted module names. Anything else is an error, so a
    typo never silently prunes a layer the user meant to keep.
    """
    if items is None:
        return []
    if isinstance(items, nn.Module | str | torch.Tensor):
        items = [items]
    named = dict(model.named_modules())
    params = {id(p) for p in model.parameters()}
    owned = {id(m) for m in named.values()}
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            if item not in named:
                close = [n for n in named if n.endswith(item) or item in n][:3]
                hint = f" Did you mean {close}?" if close else ""
                raise ValueError(f"ignored_layers: no module named {item!r} in the model.{hint}")
            out.extend(named[item].modules())
        elif isinstance(item, nn.Module):
            if id(item) not in owned:
                raise ValueError(f"ignored_layers: {type(item).__name__} is not a submodule of the model")
            out.extend(item.modules())
        elif isinstance(item, torch.Tensor):
            if id(item) not in params:
                raise ValueError("ignored_layers: a tensor that is not a parameter of the model was given")
            out.append(item)
        elif isinstance(item, type):
            raise TypeError(
                f"ignored_layers: got the class {item.__name__}; pass module instances or names, e.g. "
                f"[m for m in model.modules() if isinstance(m, {item.__name__})]"
            )
        else:
            raise TypeError(f"ignored_layers: expected modules, parameters or dotted names, got {type(item).__name__}")
    return out


def normalize_unwrapped(model: nn.Module, spec: Any) -> dict[int, int | None] | None:
    """``id(param) -> dim`` (``None``: every dim) from a list of parameters, ``(param, dim)``
    pairs or a ``{param: dim}`` dict; ``None`` when ``spec`` is."""
    if spec is None:
        return None
    params = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
    pairs: list[tuple[Any, int | None]] = []
    if isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        for item in spec:
            if isinstance(item, tuple | list) and len(item) == 2:
                pairs.append((item[0], item[1]))
            else:
                pairs.append((item, None))
    out: dict[int, int | None] = {}
    for p, dim in pairs:
        if not isinstance(p, torch.Tensor) or id(p) not in params:
            raise ValueError("unwrapped_parameters: every entry must be a parameter of the model "
                             "(optionally with a dim: (param, dim) or {param: dim})")
        if dim is not None and not isinstance(dim, int):
            raise TypeError(f"unwrapped_parameters: dim must be an int, got {type(dim).__name__}")
        out[id(p)] = dim
    return out
