"""How the engine feeds example inputs to a model: one convention everywhere.

As in Torch-Pruning: a dict (any mapping) is passed as keyword arguments, a tuple or a
list as positional arguments, anything else (usually one tensor) as the only argument. A
model that takes a list as one argument (torchvision's detection models) gets it wrapped
in a tuple: ``([image],)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["call_model", "move_inputs"]


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)``, ``model(*inputs)`` or ``model(inputs)``, by the convention above."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def move_inputs(inputs: Any, device: torch.device | str) -> Any:
    """``inputs`` (a tensor, or tuples, lists and dicts of them) on ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, tuple | list):
        return type(inputs)(move_inputs(x, device) for x in inputs)
    if isinstance(inputs, dict):
        return {k: move_inputs(v, device) for k, v in inputs.items()}
    return inputs
