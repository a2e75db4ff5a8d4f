"""Per-layer widths: what a structural prune changes, layer by layer."""

from __future__ import annotations

from torch import nn

__all__ = ["layer_widths"]


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output width of every layer that has one (``out_channels`` or ``out_features``), by name.

    Read from the module attributes, which the engine keeps in sync with the weights, so
    a pruned model reports its new widths.
    """
    out: dict[str, int] = {}
    for name, module in model.named_modules():
        width = getattr(module, "out_channels", None) or getattr(module, "out_features", None)
        if isinstance(width, int) and name:
            out[name] = width
    return out
