"""Couple the channel spaces of layers that share one weight tensor (weight tying).

A language model often ties its input ``nn.Embedding`` and its output ``nn.Linear`` to one
``weight``. Each layer's rule only sees its own channels, so without this step the
embedding's features and the output layer's input features land in different groups, and
pruning either one cuts the shared tensor under the other layer.

For every tensor held by more than one traced layer, :func:`couple_tied_spaces` asks each
layer's pruner which dim of the tensor its ``out`` and ``in`` channels slice, by pruning
a meta-device copy of the layer once. The spaces that slice the same dim of the shared
tensor are unified; a dim that one layer slices and another cannot prune is frozen. The
group prune then cuts the tensor once (see :mod:`..layers.session`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..history.records import recording
from .labels import ElementTable
from .tracer import Space


def _shared_tensors(layers: Iterable[tuple[str, nn.Module]]) -> dict[int, list[tuple[str, nn.Module, str]]]:
    """``id(tensor) -> [(layer name, layer, attribute)]`` for tensors held by two or more layers."""
    holders: dict[int, list[tuple[str, nn.Module, str]]] = {}
    for name, layer in layers:
        # most layers are leaves: their own parameter table, without named_parameters' walk
        params = layer.named_parameters() if layer._modules else layer._parameters.items()
        seen: set[int] = set()
        for attr, t in params:
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                holders.setdefault(id(t), []).append((name, layer, attr))
    return {k: v for k, v in holders.items() if len({id(m) for _, m, _ in v}) > 1}


def _sliced_dims(layer: nn.Module, pruner: Any, role: str, attr: str) -> set[int] | None:
    """Dims of ``layer``'s tensor ``attr`` that pruning one ``role`` channel slices.

    ``None`` when the pruner cannot be probed (it fails on a meta copy): the caller then
    keeps the shared tensor's layers whole, which is safe.
    """
    memo: dict[int, Any] = {}
    for t in list(layer.parameters()) + list(layer.buffers()):
        memo[id(t)] = nn.Parameter(torch.empty_like(t, device="meta"), t.requires_grad) \
            if isinstance(t, nn.Parameter) else torch.empty_like(t, device="meta")
    probe = copy.deepcopy(layer, memo)
    target = dict(probe.named_parameters())[attr]
    try:
        size = pruner.get_out_channels(probe) if role == "out" else pruner.get_in_channels(probe)
        if not size or size < 2:
            return set()
        fn = pruner.prune_out_channels if role == "out" else pruner.prune_in_channels
        with recording({id(target): attr}) as rec:
            fn(probe, [0])
    except NotImplementedError:
        return set()
    except Exception:  # noqa: BLE001 - an unprobeable custom pruner: keep the layers whole
        return None
    return {int(d) for d, _ in rec.record.get(attr, [])}


def couple_tied_spaces(table: ElementTable, spaces: list[Space], space_of: dict[tuple, Space]) -> list[str]:
    """Unify or freeze the spaces of layers that share a tensor; the names of tied tensors found."""
    layers = {sp.name: sp.module for sp in spaces if sp.module is not None and sp.pruner is not None}
    pruner_of = {sp.name: sp.pruner for sp in spaces if sp.module is not None}
    tied = _shared_tensors(layers.items())
    found = []
    for holders in tied.values():
        by_dim: dict[int, list[Space]] = {}
        unknown = False
        for name, layer, attr in holders:
            for role in ("out", "in"):
                sp = space_of.get(("module", name, role))
                if sp is None:
                    continue
                dims = _sliced_dims(layer, pruner_of[name], role, attr)
                if dims is None:
                    unknown = True
                    continue
                for d in dims:
                    by_dim.setdefault(d, []).append(sp)
        found.append(f"{holders[0][0]}.{holders[0][2]}")
        all_spaces = [space_of[k] for name, _, _ in holders for k in (("module", name, "out"), ("module", name, "in"))
                      if k in space_of]
        if unknown:
            for sp in all_spaces:
                table.freeze(sp.elems)
            continue
        holder_count = len({id(m) for _, m, _ in holders})
        for sps in by_dim.values():
            layers_here = {id(sp.module) for sp in sps}
            sizes = {sp.elems.numel() for sp in sps}
            if len(layers_here) < holder_count or len(sizes) != 1:
                # some layer holds this dim without a space that could follow a prune of it
                for sp in sps:
                    table.freeze(sp.elems)
                continue
            for sp in sps[1:]:
                table.unify(sps[0].elems, sp.elems)
    return found
