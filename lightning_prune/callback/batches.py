"""Training batches for the callback's own passes, read without disturbing the fit.

The callback reads a few training batches for importance gradients, BatchNorm
recalibration and (optionally) the example input. Reading them must not change what the
fit itself does next: the global RNG and the loader's own generators are put back, the
module's buffers (BatchNorm running statistics) are restored after a gradient pass, and
``self.log`` calls from inside ``training_step`` go nowhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

#: Keys tried, in order, for the model input of a dict batch.
INPUT_KEYS = ("input", "inputs", "x", "image", "images", "pixel_values", "input_ids")


def default_batch_to_input(batch: Any, input_key: str | int | None = None) -> Any:
    """The model input inside a batch: what ``pl_module(input)`` takes.

    * a tensor is the input;
    * a tuple or list: its first element, or ``batch[input_key]``;
    * a dict (or a dataclass, read as a dict of its fields): ``batch[input_key]``, or the
      first of :data:`INPUT_KEYS` present.
    """
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        batch = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    if isinstance(batch, torch.Tensor):
        if input_key is not None:
            raise ValueError(f"PruningCallback: input_key={input_key!r} was given but the batch is a single tensor")
        return batch
    if isinstance(batch, Mapping):
        if input_key is not None:
            if input_key not in batch:
                raise ValueError(f"PruningCallback: input_key={input_key!r} is not a key of the batch; its keys "
                                 f"are {sorted(map(str, batch))}")
            return batch[input_key]
        for key in INPUT_KEYS:
            if key in batch:
                return batch[key]
        raise ValueError(
            f"PruningCallback: cannot tell the model input in a dict batch with keys {sorted(map(str, batch))}: "
            f"set input_key to one of them, or override PruningCallback.batch_to_input(batch, pl_module)")
    if isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) > 0:
        if input_key is None:
            return batch[0]
        if not isinstance(input_key, int) or not -len(batch) <= input_key < len(batch):
            raise ValueError(f"PruningCallback: input_key={input_key!r} must be an index below {len(batch)} for a "
                             f"{type(batch).__name__} batch")
        return batch[input_key]
    raise ValueError(
        f"PruningCallback: cannot tell the model input in a batch of type {type(batch).__name__}: override "
        f"PruningCallback.batch_to_input(batch, pl_module), or set example_input to an input shape")


def train_loader(trainer: pl.Trainer) -> Any:
    """The training dataloader (Lightning's processed one once the fit loop has it)."""
    loader = getattr(trainer, "train_dataloader", None)
    source = getattr(trainer.fit_loop, "_data_source", None)  # loaders passed to fit(); Lightning 2.x
    if loader is None and source is not None and source.is_defined():
        loader = source.dataloader()
    return loader


def training_batches(trainer: pl.Trainer, n: int) -> list[Any]:
    """Up to ``n`` training batches, with the global RNG and the loader's generators put back."""
    loader = train_loader(trainer)
    if loader is None or n <= 0:
        return []
    generators = _loader_generators(loader)
    states = [g.get_state() for g in generators]
    batches = []
    try:
        with torch.random.fork_rng():
            for i, batch in enumerate(loader):
                if i >= n:
                    break
                batches.append(batch)
    finally:
        for g, state in zip(generators, states):
            g.set_state(state)
    return batches


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """Private generators a DataLoader shuffles with; reading extra batches must not advance them."""
    found: list[torch.Generator] = []
    for obj in (loader, getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


@contextlib.contextmanager
def side_pass(pl_module: pl.LightningModule) -> Iterator[None]:
    """Run ``training_step`` for the callback's own purposes, leaving no trace.

    Buffers (BatchNorm running statistics) are restored, the RNG is forked (dropout),
    ``self.log`` / ``self.log_dict`` are silenced, and gradients are cleared afterwards.
    """
    buffers = [(b, b.detach().clone()) for b in pl_module.buffers()]
    pl_module.zero_grad(set_to_none=True)
    silenced = {name: pl_module.__dict__.get(name) for name in ("log", "log_dict")}
    pl_module.__dict__["log"] = _no_log
    pl_module.__dict__["log_dict"] = _no_log
    try:
        with torch.random.fork_rng():
            yield
    finally:
        for name, value in silenced.items():
            if value is None:
                pl_module.__dict__.pop(name, None)
            else:
                pl_module.__dict__[name] = value
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)


def _no_log(*args: Any, **kwargs: Any) -> None:
    """``self.log`` during the callback's own passes: their losses are not the fit's."""


def training_loss(pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> torch.Tensor:
    """The loss ``training_step`` returns for ``batch`` (automatic optimization only)."""
    out = pl_module.training_step(batch, batch_idx)
    loss = out["loss"] if isinstance(out, Mapping) else out
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.requires_grad:
        raise ValueError(
            f"PruningCallback: {type(pl_module).__name__}.training_step must return a scalar loss tensor with a "
            f"graph (or a dict with 'loss') for gradient-based importance; got {type(out).__name__}. Override "
            f"PruningCallback.importance_loss(pl_module, batch, batch_idx)")
    return loss


def module_device(module: nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))
