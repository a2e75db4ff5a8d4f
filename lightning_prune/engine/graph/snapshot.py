"""Undo information for an atomic prune, and width attributes kept in sync.

A prune only ever *replaces* ``.data``/``.grad`` of existing tensors and rewrites plain
attributes, so remembering the old tensor objects and attribute values is enough to put
the model back exactly as it was. Nothing is copied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..history.records import MODULE_INTERNALS, is_primitive

# Attribute names that containers use to remember a width they later feed to reshape().
# Checked only on ancestors of a pruned layer that have no layer pruner of their own.
WIDTH_ATTRIBUTES = (
    "hidden_dim", "embed_dim", "hidden_size", "d_model", "mlp_dim", "num_features", "width",
    "inner_dim", "hidden_features", "embed_dims", "dim", "all_head_size", "intermediate_size",
)


HEAD_COUNT_ATTRIBUTES = ("num_heads", "heads", "n_heads", "num_attention_heads", "n_head", "num_head")
HEAD_DIM_ATTRIBUTES = ("head_dim", "dim_head", "attention_head_size", "head_size", "d_head")


class ModelSnapshot:
    """Remembers tensors and attributes that a prune may touch, to restore them on failure."""

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module], touched: list[nn.Module],
                 tensors: list[torch.Tensor], names: dict[int, str] | None = None) -> None:
        if names is None:  # id(module) -> qualified name; the graph passes the one it keeps
            names = {id(m): n for n, m in modules.items()}
        # The pruned layers and their submodules. Containers above them change only through
        # sync_ancestor_widths, which reports each write to note() (a journal), so they need
        # no snapshot of their own (walking every container was most of a snapshot's work).
        scope: dict[int, tuple[str, nn.Module]] = {}
        for mod in touched:
            for sub in mod.modules():
                scope[id(sub)] = (names.get(id(sub), ""), sub)
        self._modules = list(scope.values())
        self._journal: list[tuple[str, nn.Module, str, Any]] = []
        self._tensors: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        seen: set[int] = set()
        for _, mod in self._modules:
            for t in list(mod._parameters.values()) + list(mod._buffers.values()):
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    self._tensors.append((t, t.data, t.grad))
        for t in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                self._tensors.append((t, t.data, t.grad))
        # a shallow copy of each __dict__ (one C-level copy); plain values are picked out
        # only where needed: on restore, and for the few entries a prune replaced
        self._attrs = [(name, mod, mod.__dict__.copy()) for name, mod in self._modules]
        self._slots = [(mod, dict(mod._parameters), dict(mod._buffers)) for _, mod in self._modules]

    @staticmethod
    def _plain(state: dict[str, Any]) -> dict[str, Any]:
        """The plain (primitive-valued) attributes of a module ``__dict__``."""
        return {k: v for k, v in state.items() if k not in MODULE_INTERNALS and is_primitive(v)}

    def note(self, name: str, module: nn.Module, attr: str, old: Any) -> None:
        """Record that ``module.attr`` (outside the snapshot) held ``old`` before a write."""
        self._journal.append((name, module, attr, old))

    @property
    def guessed_attributes(self) -> bool:
        """Whether attributes outside the pruned layers were rewritten because their value matched."""
        return bool(self._journal)

    def undo_guessed_attributes(self) -> None:
        """Put back the attributes :func:`sync_ancestor_widths` rewrote, and forget them.

        Those writes are guesses by name and value: a ``width`` that equals a pruned
        layer's width may be the size of something else (the split size of a layer that
        was not pruned). When the model breaks with them, it may run without them.
        """
        for _, mod, attr, old in reversed(self._journal):
            mod.__dict__[attr] = old
        self._journal.clear()

    def restore(self) -> None:
        for _, mod, attr, old in reversed(self._journal):
            mod.__dict__[attr] = old
        with torch.no_grad():
            for t, data, grad in self._tensors:
                t.data = data
                t.grad = grad
        for _, mod, before in self._attrs:
            mod.__dict__.update(self._plain(before))
        for mod, params, buffers in self._slots:
            mod._parameters.clear()
            mod._parameters.update(params)
            mod._buffers.clear()
            mod._buffers.update(buffers)

    def attribute_changes(self) -> dict[str, Any]:
        """``{"module.attr": new_value}`` for every plain attribute the prune changed."""
        changes: dict[str, Any] = {}
        for name, mod, before in self._attrs:
            for k, v in mod.__dict__.items():
                old = before.get(k, _MISSING)  # _MISSING is not primitive: a new attribute counts
                if old is v or k in MODULE_INTERNALS or not is_primitive(v):
                    continue
                if not is_primitive(old) or old != v:
                    changes[f"{name}.{k}" if name else k] = v
        for name, mod, attr, _ in self._journal:
            changes[f"{name}.{attr}" if name else attr] = mod.__dict__.get(attr)
        return changes


_MISSING = object()


def sync_ancestor_widths(modules: dict[str, nn.Module], pruners: dict[int, Any], name: str,
                         old: int, new: int, attributes: tuple[str, ...] = WIDTH_ATTRIBUTES,
                         journal: Callable[[str, nn.Module, str, Any], None] | None = None) -> None:
    """Update width attributes (``hidden_dim``...) of containers above a pruned layer.

    torchvision's ViT, for example, reshapes with ``self.hidden_dim``; a stale value would
    break the forward pass.
    """
    if old == new:
        return
    wanted = frozenset(attributes)
    parts = name.split(".") if name else []
    for k in range(len(parts)):
        anc_name = ".".join(parts[:k])
        anc = modules.get(anc_name)
        if anc is None or id(anc) in pruners:
            continue
        state = anc.__dict__
        for attr in wanted.intersection(state):  # usually none: containers rarely hold widths
            value = state[attr]
            if isinstance(value, int) and not isinstance(value, bool) and value == old:
                if journal is not None:
                    journal(anc_name, anc, attr, value)
                state[attr] = new

