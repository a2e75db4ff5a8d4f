"""All-or-nothing prunes at the callback's level.

A prune in a fit touches the module (shapes, width attributes, BatchNorm statistics),
the optimizers' state, the pruner's schedule position and history, and the DDP wrapper.
:class:`PruneTransaction` remembers all of it by reference (a prune replaces tensors'
``.data`` and optimizer state entries rather than writing into them; buffers, which
recalibration updates in place, are copied), so that any failure puts everything back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..engine.history.optim_state import unwrap_optimizer


class PruneTransaction:
    """Snapshot of everything a prune may change; :meth:`rollback` restores it."""

    def __init__(self, module: nn.Module, optimizers: list[Any], pruner: Any) -> None:
        self.module = module
        self.pruner = pruner
        self._params = [(p, p.data, p.grad) for p in module.parameters()]
        self._buffers = [(m, name, b, b.detach().clone()) for m in module.modules()
                         for name, b in m._buffers.items() if b is not None]
        self._attributes = [(m, dict(m.__dict__)) for m in module.modules()]
        real = [unwrap_optimizer(opt) for opt in optimizers]
        self._optimizers = [(opt, {p: dict(s) for p, s in opt.state.items()}, dict(opt.__dict__)) for opt in real]
        self._pruner_state = (pruner.current_step, pruner.pruning_history())

    def rollback(self) -> None:
        with torch.no_grad():
            for p, data, grad in self._params:
                p.data = data
                p.grad = grad
            for m, name, b, saved in self._buffers:
                b.data = saved
                m._buffers[name] = b
        for m, attrs in self._attributes:
            m.__dict__.clear()
            m.__dict__.update(attrs)
        for opt, state, attrs in self._optimizers:
            opt.state.clear()
            opt.state.update(state)
            opt.__dict__.update(attrs)
        step, history = self._pruner_state
        self.pruner.follow_history(history, current_step=step)

