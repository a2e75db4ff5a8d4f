"""The protocol every benchmark method follows, and the registry that names them.

A method takes a trained :class:`~lightning_prune.lightning.ImageClassifier` (a deep copy
of the dense one) and makes it smaller in place, to a :class:`PruneTarget`. Everything a
method may need (data, epochs, example input) comes in one :class:`MethodContext`, so
adding a method means writing one class and registering it; the runner does not change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn

__all__ = ["METHODS", "MethodContext", "PruneTarget", "PruningMethod", "get_method", "register_method"]


@dataclass(frozen=True)
class PruneTarget:
    """``kind="ratio"``: remove ``value`` of each group's channels; ``"macs"``/``"params"``: keep
    ``value`` of the dense MACs/params."""

    kind: Literal["ratio", "macs", "params"]
    value: float

    def pruner_kwargs(self) -> dict[str, float]:
        """The matching ``MetaPruner`` / ``PruningCallback`` argument."""
        key = {"ratio": "pruning_ratio", "macs": "target_macs", "params": "target_params"}[self.kind]
        return {key: self.value}

    def weight_sparsity(self) -> float:
        """Fraction of weights a mask-only method zeroes for the same nominal target.

        Removing a fraction ``r`` of channels on both sides of a layer removes about
        ``1 - (1 - r)**2`` of its weights; a budget that keeps ``b`` of the model keeps ``b``
        of the weights.
        """
        if self.kind == "ratio":
            return 1.0 - (1.0 - self.value) ** 2
        return 1.0 - self.value


@dataclass
class MethodContext:
    """What a method may use besides the model."""

    example_input: torch.Tensor
    datamodule: pl.LightningDataModule | None
    ignored_layers: list[str]
    finetune_epochs: int = 0
    sparse_epochs: int = 3
    regularization_strength: float = 1e-4
    recalibrate_bn: bool = True
    recalibration_batches: int = 16
    importance_batches: int = 8
    round_to: int | None = None
    device: str = "cpu"

    def require_data(self, method: str) -> pl.LightningDataModule:
        if self.datamodule is None:
            raise ValueError(f"method {method!r} needs training data: turn `accuracy` on (digits by default) "
                             f"or give a `datamodule`")
        return self.datamodule

    def train_batches(self, n: int) -> list[Any]:
        """The first ``n`` training batches (for gradients and BatchNorm statistics)."""
        if self.datamodule is None or n == 0:
            return []
        out = []
        for batch in self.datamodule.train_dataloader():
            out.append(batch)
            if len(out) == n:
                break
        return out

    def trainer(self, max_epochs: int, callbacks: list[pl.Callback]) -> pl.Trainer:
        """A quiet Trainer for finetuning on the benchmark's device: no logger, checkpoints or progress bar."""
        if self.device.startswith("cuda"):
            index = int(self.device.split(":")[1]) if ":" in self.device else 0
            accelerator, devices = "gpu", [index]
        else:
            accelerator, devices = "cpu", 1
        return pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, accelerator=accelerator,
                          devices=devices)


class PruningMethod(ABC):
    """One way of making a model smaller.

    Attributes:
        name: the config name.
        kind: ``"structural"`` (channels removed), ``"sparse"`` (sparse training, then a
            structural prune) or ``"masking"`` (weights zeroed, shapes unchanged).
    """

    name: str = ""
    kind: Literal["structural", "sparse", "masking"] = "structural"

    @abstractmethod
    def apply(self, module: pl.LightningModule, target: PruneTarget, ctx: MethodContext) -> None:
        """Make ``module`` (whose network is ``module.model``) smaller in place."""


#: Config name -> factory of the method.
METHODS: dict[str, Callable[[], PruningMethod]] = {}


def register_method(name: str, factory: Callable[[], PruningMethod]) -> None:
    """Make ``name`` usable in a bench config's ``methods`` list."""
    if name in METHODS:
        raise ValueError(f"benchmark method {name!r} is already registered")
    METHODS[name] = factory


def get_method(name: str) -> PruningMethod:
    if name not in METHODS:
        raise ValueError(f"unknown benchmark method {name!r} in `methods`; valid: {', '.join(sorted(METHODS))}")
    method = METHODS[name]()
    method.name = name
    return method


def output_layers(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the layers whose output tensor is returned by the model (the classifier).

    Structural methods never prune these (the dependency graph protects model outputs);
    the masking baseline leaves them alone too, so both change the same layers.
    """
    produced: dict[int, str] = {}
    handles = [m.register_forward_hook(lambda mod, inp, out, name=name: produced.__setitem__(id(out), name))
               for name, m in model.named_modules() if name and not list(m.children())]
    try:
        with torch.no_grad():
            out = model(example_input)
    finally:
        for h in handles:
            h.remove()
    outs = out if isinstance(out, tuple | list) else [out]
    return [produced[id(o)] for o in outs if id(o) in produced]
