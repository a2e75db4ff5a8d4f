"""Walking the tensors inside nested inputs and outputs (tuples, lists, dicts, dataclass-like pytrees).

Every part of the engine that looks at example inputs or model outputs (the tracer, the
dry run, the op counter, error messages) uses these, so that all of them agree on what
counts as "the tensors of" a value. Containers torch's pytree knows (tuple, list, dict,
namedtuple, OrderedDict, and types libraries register, such as Hugging Face's
``ModelOutput``) are walked by pytree; any other ``Mapping`` is walked by its values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils import _pytree as pytree


def is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def tensor_leaves(value: Any) -> list[torch.Tensor]:
    """Every tensor in ``value``, in pytree order."""
    if isinstance(value, torch.Tensor):  # the usual layer output: skip the pytree walk
        return [value]
    out: list[torch.Tensor] = []
    for leaf in pytree.tree_leaves(value):
        if isinstance(leaf, torch.Tensor):
            out.append(leaf)
        elif isinstance(leaf, Mapping):
            out.extend(tensor_leaves(list(leaf.values())))
    return out


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with ``fn`` applied to every tensor; containers keep their types (other mappings become dicts)."""

    def leaf(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return fn(x)
        if isinstance(x, Mapping):
            return {k: map_tensors(v, fn) for k, v in x.items()}
        return x

    return pytree.tree_map(leaf, value)


def describe_tensors(value: Any, limit: int = 4) -> str:
    """``"(1, 3, 224, 224) float32, ..."``: the first tensors of ``value``, for error messages."""
    leaves = tensor_leaves(value)
    if not leaves:
        return f"{type(value).__name__} with no tensors"
    shown = ", ".join(f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}" for t in leaves[:limit])
    return shown + (f" and {len(leaves) - limit} more" if len(leaves) > limit else "")
