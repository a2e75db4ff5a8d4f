"""Saving the pruned model at the end of a fit, in a format that loads without our callback.

* ``"pt"``: ``{"state_dict", "history"}`` (tensors and primitives): loads with
  ``torch.load(weights_only=True)`` into a fresh module or into the bare network it wraps,
  through :func:`lightning_prune.load_pruned_checkpoint`;
* ``"torch_export"``: a ``torch.export`` program whose batch dimension is dynamic;
* ``"onnx"``: an ONNX graph (needs the ``onnx`` and ``onnxscript`` packages), dynamic batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .history import ModuleHistory
from .modes import eval_mode


def export_module(module: nn.Module, example: Any, path: str, fmt: str) -> None:
    if fmt == "pt":
        torch.save({"state_dict": module.state_dict(), "history": ModuleHistory.of(module).records}, path)
        return
    args = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    # batch 2: torch.export specializes a dimension of size 1, so 1 could never be dynamic
    args = tuple(_at_batch(a, 2) for a in args)
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} if isinstance(a, torch.Tensor) and a.dim() > 0 else None for a in args)
    with eval_mode(module), torch.no_grad():
        if fmt == "torch_export":
            torch.export.save(torch.export.export(module, args, dynamic_shapes=dynamic), path)
            return
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as err:
            raise ImportError("export_format='onnx' needs the onnx and onnxscript packages: "
                              "pip install onnx onnxscript (or use export_format='torch_export')") from err
        torch.onnx.export(module, args, path, dynamic_shapes=dynamic)


def _at_batch(value: Any, n: int) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] != n:
        return value[:1].expand(n, *value.shape[1:]).clone()
    return value
