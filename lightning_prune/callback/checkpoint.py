"""Pruned checkpoints that load anywhere.

Lightning restores model weights *before* callback state, and a physically pruned
checkpoint cannot be loaded into an unpruned module ("size mismatch"). So the pruning
history travels inside the module's own ``state_dict`` under one extra key, and a
load-state-dict pre-hook replays it (reshaping the module) before the weights are
copied in. The history holds primitives only, so everything loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..engine.serialization import apply_history

HISTORY_KEY = "_lightning_prune.history"


class HistoryHooks:
    """Adds the pruning history to ``state_dict()`` and replays it on ``load_state_dict``."""

    def __init__(self, module: nn.Module, history: Callable[[], list[dict]]) -> None:
        self.module = module
        self.history = history
        self.applied = 0  # records already applied to this module instance
        self._handles = [
            module._register_state_dict_hook(self._save),
            module.register_load_state_dict_pre_hook(self._load),
        ]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _save(self, module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        if prefix == "":
            state_dict[HISTORY_KEY] = [dict(r) for r in self.history()]

    def _load(self, module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
        history = state_dict.pop(prefix + HISTORY_KEY, None)
        if history is None:
            return
        pending = list(history)[self.applied:]
        if pending:
            apply_history(self.module, pending)
            self.applied += len(pending)
            self.on_replayed(list(history))

    def on_replayed(self, history: list[dict]) -> None:
        """Called after records were replayed; ``history`` is the whole history now applied."""


def load_pruned_checkpoint(module: nn.Module, checkpoint: str | dict, strict: bool = True,
                           map_location: Any = "cpu") -> nn.Module:
    """Load a checkpoint written with :class:`~lightning_prune.PruningCallback` into ``module``.

    ``module`` is a fresh, unpruned instance of the same model (for a LightningModule,
    built with the same hyperparameters). Its architecture is pruned by replaying the
    history stored in the checkpoint, then the weights are loaded. Uses
    ``torch.load(weights_only=True)``.
    """
    if not isinstance(checkpoint, dict):
        checkpoint = torch.load(checkpoint, map_location=map_location, weights_only=True)
    state = dict(checkpoint.get("state_dict", checkpoint))
    history = state.pop(HISTORY_KEY, None)
    if history is None:
        raise ValueError("this checkpoint holds no pruning history: it was not written with PruningCallback; "
                         "load it with model.load_state_dict instead")
    apply_history(module, history)
    module.load_state_dict(state, strict=strict)
    return module
