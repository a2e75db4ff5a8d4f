"""Loading pruned checkpoints with Lightning's own API, or into a bare network.

Lightning's ``MyModule.load_from_checkpoint(path)`` and ``trainer.validate/test(model,
ckpt_path=...)`` build (or take) the module, call its ``on_load_checkpoint`` and only then
copy the weights in. :class:`PruningCheckpointMixin` uses that hook to attach the module's
:class:`~lightning_prune.callback.history.ModuleHistory`, whose load pre-hook reshapes the
module to the checkpoint's own pruning history. No callback instance is needed.

:func:`load_pruned_checkpoint` does the same for any ``nn.Module``, including the bare
network inside a LightningModule (``SmallResNet()`` for a checkpoint of
``ImageClassifier(SmallResNet())``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .history import HISTORY_KEY, ModuleHistory


class PruningCheckpointMixin:
    """Mix into a LightningModule so Lightning's own loading paths accept pruned checkpoints.

    .. code-block:: python

        class MyModule(PruningCheckpointMixin, pl.LightningModule): ...

        model = MyModule.load_from_checkpoint(path)      # any checkpoint of a pruned run
        trainer.test(MyModule(), ckpt_path=path)          # also with a fresh module

    Put it before ``LightningModule`` in the bases. If you override ``on_load_checkpoint``,
    call ``super().on_load_checkpoint(checkpoint)``.
    """

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        ModuleHistory.of(self)  # type: ignore[arg-type]
        parent = getattr(super(), "on_load_checkpoint", None)
        if callable(parent):
            parent(checkpoint)


def load_pruned_checkpoint(module: nn.Module, checkpoint: str | Mapping, strict: bool = True,
                           map_location: Any = "cpu") -> nn.Module:
    """Load a checkpoint or ``.pt`` export of a pruned run into ``module``.

    ``module`` is a freshly built, unpruned instance: the LightningModule of the run (with
    the same hyperparameters), or the bare network it wraps. For the latter, the prefix
    under which the network sits in the checkpoint (``"model."``) is found and stripped.
    Uses ``torch.load(weights_only=True)``. Returns ``module``.
    """
    if not isinstance(checkpoint, Mapping):
        checkpoint = torch.load(checkpoint, map_location=map_location, weights_only=True)
    state = dict(checkpoint.get("state_dict", checkpoint))
    history = state.pop(HISTORY_KEY, None)
    if history is None:
        history = checkpoint.get("history")
    if history is None:
        raise ValueError("this checkpoint holds no pruning history: it was not written by a pruned run; load it "
                         "with module.load_state_dict(checkpoint['state_dict']) instead")
    prefix = _network_prefix(module, state)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        history = [_strip_record(r, prefix) for r in history]
    ModuleHistory.of(module)  # its load pre-hook reshapes the module to the history
    state[HISTORY_KEY] = [dict(r) for r in history]
    module.load_state_dict(state, strict=strict)
    return module


def _network_prefix(module: nn.Module, state: Mapping[str, Any]) -> str:
    """``""`` if ``state`` is ``module``'s own; else the prefix whose stripped keys are."""
    own = set(module.state_dict())
    if own <= set(state) or not own:
        return ""
    sample = next(iter(own))
    for key in state:
        if key.endswith("." + sample):
            prefix = key[: -len(sample)]
            if {k[len(prefix):] for k in state if k.startswith(prefix)} >= own:
                return prefix
    return ""


def _strip_record(record: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    tensors = record.get("tensors", {})
    outside = [name for name in tensors if not name.startswith(prefix)]
    if outside:
        raise ValueError(f"the pruning history also changed {outside[:3]}, which lie outside {prefix!r}: it cannot "
                         f"be loaded into the bare network alone; load it into the whole module instead")
    return {
        "tensors": {name[len(prefix):]: items for name, items in tensors.items()},
        "attributes": {path[len(prefix):]: value for path, value in (record.get("attributes") or {}).items()
                       if path.startswith(prefix)},
    }
