"""Turning the callback's YAML-friendly arguments into what the engine takes.

YAML cannot hold modules, classes or functions, so the callback takes dotted module names
(or glob patterns) for layers, ``"package.module.Name"`` import paths for classes and
functions, and ``"dotted.param.name"`` for parameters. Python users may pass the objects
themselves. Every name is resolved at setup, with an error that names the argument.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

import lightning_prune.engine as tp


def import_object(path: Any, arg: str) -> Any:
    """``"pkg.mod.Name"`` -> the object; anything that is not a string is returned as is."""
    if not isinstance(path, str):
        return path
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ValueError(f"PruningCallback: {arg}: {path!r} is not an import path such as 'my_pkg.layers.MyLayer'")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"PruningCallback: {arg}: cannot import {path!r} ({err})") from err


def match_modules(modules: dict[str, nn.Module], patterns: list[str], arg: str) -> list[str]:
    """Dotted names matching ``patterns`` (exact names or globs); each pattern must match."""
    out: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"PruningCallback: {arg} takes dotted module names or glob patterns, got {pattern!r}")
        hits = [n for n in modules if n and (n == pattern or fnmatch.fnmatchcase(n, pattern))]
        if not hits:
            close = difflib.get_close_matches(pattern, [n for n in modules if n], n=3)
            raise ValueError(f"PruningCallback: {arg}: no module matches {pattern!r}"
                             + (f"; did you mean {close}?" if close else ""))
        out.extend(h for h in hits if h not in out)
    return out


def customized_pruners(spec: Mapping[Any, Any] | None) -> dict[type, Any] | None:
    """``{layer class or path: pruner instance, class or path}`` -> ``{class: instance}``."""
    if not spec:
        return None
    out: dict[type, Any] = {}
    for layer, pruner in spec.items():
        layer_type = import_object(layer, "customized_pruners")
        if not isinstance(layer_type, type) or not issubclass(layer_type, nn.Module):
            raise ValueError(f"PruningCallback: customized_pruners: key {layer!r} must be an nn.Module class or "
                             f"its import path")
        pruner = import_object(pruner, f"customized_pruners[{layer!r}]")
        if isinstance(pruner, type):
            pruner = pruner()
        if not isinstance(pruner, tp.LayerPruner):
            raise ValueError(f"PruningCallback: customized_pruners[{layer!r}] must be a LayerPruner (subclass, "
                             f"instance or import path), got {type(pruner).__name__}")
        out[layer_type] = pruner
    return out


def unwrapped_parameters(module: nn.Module, spec: Any) -> list[tuple[Any, int | None]] | None:
    """``{"dotted.param": dim}`` or ``[["dotted.param", dim], ...]`` (or parameters) -> ``[(param, dim)]``."""
    if spec is None:
        return None
    pairs = list(spec.items()) if isinstance(spec, Mapping) else [
        tuple(item) if isinstance(item, list | tuple) else (item, None) for item in spec]
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    out = []
    for item in pairs:
        if len(item) != 2:
            raise ValueError(f"PruningCallback: unwrapped_parameters entries are (name, dim) pairs, got {item!r}")
        name, dim = item
        if isinstance(name, str):
            if name not in tensors:
                close = difflib.get_close_matches(name, list(tensors), n=3)
                raise ValueError(f"PruningCallback: unwrapped_parameters: no parameter named {name!r}"
                                 + (f"; did you mean {close}?" if close else ""))
            name = tensors[name]
        out.append((name, None if dim is None else int(dim)))
    return out


def callable_or_none(value: Any, arg: str) -> Callable | None:
    obj = import_object(value, arg)
    if obj is not None and not callable(obj):
        raise ValueError(f"PruningCallback: {arg} must be a callable or its import path, got {type(obj).__name__}")
    return obj


def layers_by_name(module: nn.Module, spec: Mapping[str, Any] | None, arg: str) -> dict[Any, Any]:
    """``{name or glob: value}`` -> ``{module or tuple of modules: value}`` (a glob hitting several
    layers becomes one tuple key: one jointly ranked scope)."""
    modules = dict(module.named_modules())
    out: dict[Any, Any] = {}
    for pattern, value in (spec or {}).items():
        names = match_modules(modules, [pattern], arg)
        out[tuple(modules[n] for n in names) if len(names) > 1 else modules[names[0]]] = value
    return out
