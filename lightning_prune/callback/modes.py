"""Temporary module modes for the callback's own work, each restored exactly afterwards."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..engine.history.optim_state import unwrap_optimizer


class eval_mode:  # noqa: N801 - a context manager used like a function
    """Eval mode for the block; every module's own flag restored afterwards."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self) -> None:
        self.saved = [(m, m.training) for m in self.module.modules()]
        self.module.eval()

    def __exit__(self, *exc: Any) -> None:
        for m, mode in self.saved:
            m.training = mode


class only_gradients_of:  # noqa: N801
    """Hide the gradients of parameters that ``optimizer`` does not step, for the block."""

    def __init__(self, optimizer: Any, module: nn.Module) -> None:
        opt = unwrap_optimizer(optimizer)
        own = {id(p) for g in opt.param_groups for p in g["params"]}
        self.hidden = [(p, p.grad) for p in module.parameters() if id(p) not in own and p.grad is not None]

    def __enter__(self) -> None:
        for p, _ in self.hidden:
            p.grad = None

    def __exit__(self, *exc: Any) -> None:
        for p, grad in self.hidden:
            p.grad = grad
