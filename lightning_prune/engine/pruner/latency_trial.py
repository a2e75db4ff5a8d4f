"""Trial prunes for the latency budget: runnable copies of the model at a ratio, and width snapping.

A latency can only be measured on a model that runs, so a trial here is the budget
solver's meta-clone trial (:mod:`.budget`) made real: the clone is pruned on the meta
device (shapes only), then given storage on the timing device, with the real model's
tensors copied where the shapes still match and small random values elsewhere (a timing
does not depend on the values, as long as they are ordinary floats, not denormals).

Snapping: for each group, the conv and linear layers whose width the group sets are
timed standalone at a few candidate widths around the planned one (through a
:class:`~lightning_prune.engine.measure.layer_timing.WidthTable`), and the group keeps
the width that runs best for its size (:func:`~lightning_prune.engine.measure.layer_timing.choose_width`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..graph import DependencyGraph
from ..harness import run_forward
from ..measure.layer_timing import WidthTable, candidate_widths, choose_width, layer_spec
from ..tree import map_tensors
from .budget import apply_plans, meta_clone
from .planning import GroupPlan

if TYPE_CHECKING:
    from .meta import MetaPruner

__all__ = ["GroupWidth", "apply_widths", "input_shapes", "materialize", "pruned_clone", "snap_widths"]


@dataclass
class GroupWidth:
    """What snapping needs to know of one group of a trial: its planned width and its layers."""

    root_name: str
    keep_units: int
    current_units: int
    unit_size: int
    layers: dict[str, set[str]] = field(default_factory=dict)  # layer name -> {"in", "out"}


def apply_widths(plans: list[GroupPlan], widths: dict[str, int] | None) -> None:
    """Override the plans' removals so that each group named in ``widths`` keeps that many units.

    The weakest units go first, as in the plan itself; a width above the group's current
    one keeps every unit.
    """
    for p in plans:
        keep = (widths or {}).get(p.root_name)
        if keep is None:
            continue
        n = max(0, len(p.units) - max(1, keep))
        p.remove = torch.argsort(p.unit_scores, stable=True)[:n].tolist() if n else []


def pruned_clone(pruner: MetaPruner, ratio: float, scores: dict[str, torch.Tensor],
                 widths: dict[str, int] | None = None) -> tuple[nn.Module, list[GroupWidth]]:
    """A meta clone of ``pruner.model`` pruned as ``step()`` would at ``ratio`` (and ``widths``).

    Also returns, for every group, its planned width and the layers it sets, read before
    the prune (a group refused by the engine is kept whole, as the real step does).
    """
    clone = meta_clone(pruner.model)
    graph = DependencyGraph().build_dependency(clone, pruner.example_inputs, **pruner.graph_kwargs)
    names = {id(m): n for n, m in pruner.model.named_modules()}
    clone_modules = dict(clone.named_modules())
    ignored = [clone_modules[names[id(m)]] for m in pruner.ignored_layers if id(m) in names]
    plans = pruner.plan(graph, ratio, scores, ignored_layers=ignored)
    apply_widths(plans, widths)
    infos = []
    for plan in plans:
        info = GroupWidth(plan.root_name, len(plan.units) - len(plan.remove), len(plan.units), plan.unit_size)
        for dep, _ in plan.group:
            side = getattr(dep.handler, "__name__", "")
            if isinstance(dep.target.module, nn.Module) and side in ("prune_out_channels", "prune_in_channels"):
                info.layers.setdefault(dep.target.name, set()).add("out" if "out" in side else "in")
        infos.append(info)
    apply_plans(graph, plans)
    return clone, infos


def materialize(clone: nn.Module, source: nn.Module, device: torch.device | str) -> nn.Module:
    """Give a meta ``clone`` real storage on ``device``, in place; returns it.

    Tensors whose shape matches ``source``'s tensor of the same name are copied (the dense
    model, or the unpruned layers of a trial); pruned ones get small random weights, and
    float buffers (BatchNorm statistics) ones, so that nothing computes on denormals or NaNs.
    """
    sources = dict(itertools.chain(source.named_parameters(), source.named_buffers()))
    clone.to_empty(device=device)
    with torch.no_grad():
        for name, tensor in clone.named_parameters():
            _fill(tensor, sources.get(name), lambda t: t.normal_(0.0, 0.02))
        for name, tensor in clone.named_buffers():
            _fill(tensor, sources.get(name), lambda t: t.fill_(1.0 if t.is_floating_point() else 0))
    return clone


def _fill(tensor: torch.Tensor, source: torch.Tensor | None, init: Any) -> None:
    if source is not None and source.shape == tensor.shape and source.dtype == tensor.dtype:
        tensor.copy_(source)
    else:
        init(tensor)


def input_shapes(model: nn.Module, inputs: Any, forward_fn: Any = None) -> dict[str, tuple[int, ...]]:
    """Input shape of every conv and linear layer, from one forward on meta tensors (no arithmetic)."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
            def hook(mod: nn.Module, args: tuple, name: str = name) -> None:
                if args and isinstance(args[0], torch.Tensor):
                    shapes.setdefault(name, tuple(args[0].shape))
            hooks.append(module.register_forward_pre_hook(hook))
    meta_inputs = map_tensors(inputs, lambda t: torch.empty_like(t, device="meta"))
    try:
        with torch.no_grad():
            run_forward(model, meta_inputs, forward_fn)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def snap_widths(pruner: MetaPruner, ratio: float, scores: dict[str, torch.Tensor], table: WidthTable,
                inputs: Any, margin: float = 0.03) -> dict[str, int]:
    """``{group root: units to keep}`` for the groups whose measured best width is not the planned one.

    Each group's conv and linear layers are timed (through ``table``) as they are in the
    trial at ``ratio``, with the group's width set to each candidate of
    :func:`~lightning_prune.engine.measure.layer_timing.candidate_widths`.
    """
    clone, infos = pruned_clone(pruner, ratio, scores)
    shapes = input_shapes(clone, inputs, pruner.graph_kwargs["forward_fn"])
    modules = dict(clone.named_modules())
    dtype = next((p.dtype for p in pruner.model.parameters() if p.is_floating_point()), torch.float32)
    widths: dict[str, int] = {}
    for info in infos:
        specs = []
        for name, sides in info.layers.items():
            spec = layer_spec(modules[name], shapes[name], dtype) if name in shapes else None
            if spec is not None:
                specs.append((spec, sides))
        if not specs or info.keep_units < 1:
            continue
        step = info.unit_size
        planned = info.keep_units * step
        candidates = candidate_widths(planned, info.current_units * step, step)
        if len(candidates) < 3:
            continue
        times = {c: sum(table.ms(_resized(spec, sides, c)) for spec, sides in specs) for c in candidates}
        chosen = choose_width(times, planned, margin)
        if chosen != planned:
            widths[info.root_name] = chosen // step
    return widths


def _resized(spec: Any, sides: set[str], width: int) -> Any:
    if "out" in sides:
        spec = spec.with_out(width)
    if "in" in sides:
        spec = spec.with_in(width)
    return spec
