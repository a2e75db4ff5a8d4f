"""The pruning history a module carries, so that any checkpoint of a pruned run loads.

A physically pruned checkpoint cannot be loaded into a module of another architecture
("size mismatch"), and Lightning copies weights into the module before any callback
state is restored. So the history travels inside the module's own ``state_dict`` under
:data:`HISTORY_KEY`, and a load-state-dict pre-hook reshapes the module to exactly that
history before the weights are copied in:

* a history that extends what the module already has is replayed from where it stands;
* any other history (a checkpoint written before the last prune, or after a different
  prune) rewinds the module to the architecture it had when the history was attached,
  then replays the checkpoint's records from there;
* a history that cannot be applied even from there raises a ``ValueError`` that says
  what to do, and leaves the module as it was.

The history holds primitives only, so checkpoints load with ``torch.load(weights_only=True)``.
:class:`ModuleHistory` is the one owner of "what has been applied to this module"; the
callback and the loaders only ask it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn

from ..engine.history.serialization import apply_history, architecture, restore_architecture

HISTORY_KEY = "_lightning_prune.history"
_ATTRIBUTE = "_lightning_prune_history"


class ModuleHistory:
    """Records applied to one module instance, and the hooks that save and replay them.

    Get it with :meth:`of` (attaches on first use). ``records`` is what has been applied
    since :attr:`base` (the architecture at attach time) was taken; loaders attach before
    they replay, so ``base`` is the unpruned architecture whenever a history was loaded.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.records: list[dict] = []
        self.base = architecture(module)
        self.listeners: list[Callable[[list[dict]], None]] = []
        self._handles = [
            module._register_state_dict_hook(self._save),
            module.register_load_state_dict_pre_hook(self._load),
        ]

    @classmethod
    def of(cls, module: nn.Module) -> ModuleHistory:
        """The module's history object, attached (with its hooks) on first use."""
        found = module.__dict__.get(_ATTRIBUTE)
        if isinstance(found, cls) and found.module is module:
            return found
        history = cls(module)
        module.__dict__[_ATTRIBUTE] = history
        return history

    def __deepcopy__(self, memo: dict[int, Any]) -> ModuleHistory:
        """Copied with its module (``copy.deepcopy(model)``): records, base and hooks follow the
        copy; the listeners (a callback following *this* module) do not."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = [] if key == "listeners" else copy.deepcopy(value, memo)
        return new

    def extend(self, records: list[dict]) -> None:
        """Note records that were applied to the module by a prune."""
        self.records.extend(dict(r) for r in records)

    def truncate(self, length: int) -> None:
        """Forget records after ``length`` (a prune that was rolled back)."""
        del self.records[length:]

    # ------------------------------------------------------------------ hooks
    def _save(self, module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        if prefix == "":  # written even when empty: "dense" is a history too (rewinds a pruned module)
            state_dict[HISTORY_KEY] = [dict(r) for r in self.records]

    def _load(self, module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
        if prefix != "":
            return
        history = state_dict.pop(HISTORY_KEY, None)
        if history is not None:  # a plain state dict (no history key) leaves the architecture alone
            self.apply([dict(r) for r in history])

    # ------------------------------------------------------------------ reshaping
    def apply(self, history: list[dict]) -> None:
        """Reshape the module to exactly ``history``; listeners hear of any change."""
        if history == self.records:
            return
        n = len(self.records)
        if history[:n] == self.records:
            self._replay(history[n:], rewind=False)
        else:
            self._replay(history, rewind=True)
        self.records = history
        for listener in list(self.listeners):
            listener(list(history))

    def _replay(self, records: list[dict], rewind: bool) -> None:
        undo = None
        try:
            if rewind:  # back to the architecture at attach time; only widths prunes changed
                touched = {p for r in self.records for p in (r.get("attributes") or {})}
                undo = restore_architecture(self.module, self.base, attributes=touched)
            apply_history(self.module, records)
        except ValueError as err:
            if undo is not None:
                undo()
            name = type(self.module).__name__
            raise ValueError(
                f"this checkpoint's pruning history ({len(records)} records) cannot be applied to this {name} "
                f"({err}). Load it into a freshly built, unpruned {name} with the same hyperparameters: "
                f"{name}.load_from_checkpoint(path) (with lightning_prune.PruningCheckpointMixin among its "
                f"bases) or lightning_prune.load_pruned_checkpoint({name}(...), path). The module is unchanged."
            ) from err
