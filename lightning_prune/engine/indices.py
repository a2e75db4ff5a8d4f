"""Index lists to tensors, fast.

The engine keeps channel indices as Python lists (they go into records, which must be
primitive types) and turns them into ``LongTensor`` indices for slicing and scoring.
``torch.as_tensor(list)`` converts element by element (30 us for 512 ints here); packing
the ints into an ``array`` first and viewing its buffer costs a quarter of that, which
adds up over the hundreds of conversions of one pruner step.
"""

from __future__ import annotations

import array
from collections.abc import Sequence

import torch

__all__ = ["long_tensor"]


def long_tensor(values: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """``values`` (plain Python ints) as a 1-D ``torch.long`` tensor on ``device``."""
    if len(values) == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    try:
        packed = array.array("q", values)
    except TypeError:  # not plain ints (numpy integers and the like): the slow, general path
        return torch.as_tensor(list(values), dtype=torch.long, device=device)
    # frombuffer shares the array's memory and keeps it alive; clone-free on CPU
    out = torch.frombuffer(packed, dtype=torch.long)
    return out if device is None or torch.device(device).type == "cpu" else out.to(device)
