"""Keeping DDP ranks in step through a prune.

Every rank prunes its own replica, so every rank must make the same decision. Data
decides it for gradient-based criteria, and each rank sees different data: gradients
and any statistics an importance accumulates are averaged across ranks before scoring
(:func:`reduce_importance_inputs`). Whatever else could differ (an unseeded random
criterion) is caught by :func:`decisions_agree`, which every rank runs before the prune
is committed. After a prune, DDP's buckets no longer fit the parameters, so the module is
wrapped again (:func:`rewrap_ddp`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def reduce_importance_inputs(module: nn.Module, importance: Any) -> None:
    """Average ``.grad`` of every parameter and the importance's statistics over ranks."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    params = list(module.parameters())
    # A parameter unused on one rank has no .grad there: agree on who has one first, so
    # every rank enters the same collectives.
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float64)
    dist.all_reduce(present)
    for p, count in zip(params, present.tolist()):
        if count == 0:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world
    reduce = getattr(importance, "reduce_statistics", None)
    if callable(reduce):
        reduce(module, _all_reduce_sum)


def _all_reduce_sum(tensor: torch.Tensor) -> None:
    dist.all_reduce(tensor)


def decision_digest(record: dict) -> str:
    """A short fingerprint of a prune's record (which indices of which tensors)."""
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def decisions_agree(trainer: pl.Trainer, record: dict) -> bool:
    """True on every rank iff every rank's record is the same (collective: all ranks call it)."""
    if trainer.world_size <= 1 or not is_distributed():
        return True
    digest = decision_digest(record)
    reference = trainer.strategy.broadcast(digest, src=0)
    differs = torch.tensor([float(reference != digest)], dtype=torch.float64)
    dist.all_reduce(differs)
    return float(differs.item()) == 0.0


def rewrap_ddp(trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
    """DDP fixes its buckets at wrap time: wrap the (re)shaped module again."""
    strategy = trainer.strategy
    if not hasattr(strategy, "configure_ddp") or trainer.world_size <= 1:
        return
    optimizers = strategy.optimizers
    strategy.model = pl_module
    strategy.configure_ddp()
    strategy.optimizers = optimizers
