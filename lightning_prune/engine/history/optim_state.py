"""Slice optimizer state so that it follows a prune.

A prune keeps every ``nn.Parameter`` the same Python object and only replaces its
``.data``, so an optimizer's ``param_groups`` stay valid. Its per-parameter *state*
(SGD's ``momentum_buffer``, Adam's ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``,
RMSprop's ``square_avg``, Adagrad's ``sum``, Adafactor's ``row_var``/``col_var``...)
still has the old shapes: ``step()`` would then fail, or broadcast silently. The record
returned by a prune says which indices each parameter kept, so the state can be sliced
the same way, and the moments of the kept channels survive instead of being reset.

How an entry is matched. A record does not hold the sizes *before* a slice (channels
removed at the end leave no trace), so the pre-slice shape cannot be rebuilt from the
parameter alone. Instead every state tensor is walked forwards through the record's
slices, starting from its own shape. It is sliced when it has the parameter's number of
dims, every slice fits its size, and the result has the parameter's new shape, where a
dim of size 1 stands for a reduced (broadcast) dim that is left whole (Adafactor's
factored moments). 0-d tensors (``step``, NAdam's ``mu_product``) and plain Python
values are per-parameter scalars and are kept as they are.

Any other entry cannot be mapped. The parameter's whole state is then cleared, with a
warning: torch's optimizers re-initialize a parameter's state only when it is empty
(``if len(state) == 0``), so deleting one key would make Adam or RMSprop fail on the
missing one. ``strict=True`` raises instead, before anything is changed.

This assumes the state entries are element-aligned with the parameter, as in every
``torch.optim`` optimizer. Call it once per record, right after the prune that made it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .records import SliceRecord

__all__ = ["shape_after_slices", "slice_optimizer_state", "slice_optimizers"]

# Entries that carry no per-channel data and are kept as they are.
_SCALAR_TYPES = (bool, int, float, complex, str, type(None))


@dataclass
class _Plan:
    """What will be done to one optimizer, computed before anything is changed."""

    optimizer: torch.optim.Optimizer
    # (param, name, key, slices to apply to that entry)
    slices: list[tuple[nn.Parameter, str, str, list[SliceRecord]]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    # param name -> (param, keys that could not be mapped)
    resets: dict[str, tuple[nn.Parameter, list[str]]] = field(default_factory=dict)
    # LBFGS caches the total number of elements of its parameters.
    stale_numel: bool = False


def shape_after_slices(shape: Sequence[int], slices: Sequence[SliceRecord]) -> tuple[int, ...]:
    """The shape of a tensor of ``shape`` after the record's ``slices``, applied in order.

    A dim of size 1 is left whole (it is a reduced, broadcast dim of a state entry; a
    recorded slice never applies to a real dim of size 1, since it would keep all or
    nothing). Raises ``ValueError`` when a kept index does not fit the size it slices.
    """
    plan = _entry_slices(tuple(shape), slices)
    if plan is None:
        raise ValueError(f"slices {_short(slices)} do not fit a tensor of shape {tuple(shape)}")
    return plan[1]


def slice_optimizer_state(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    record: Mapping[str, Any],
    strict: bool = False,
) -> dict[str, list[str]]:
    """Slice ``optimizer``'s per-parameter state the way ``record`` sliced the parameters.

    Args:
        optimizer: a ``torch.optim.Optimizer`` (or a wrapper with an ``.optimizer``, such
            as Lightning's ``LightningOptimizer``).
        model: the pruned model; record names are resolved with ``named_parameters()``.
        record: what a prune returned, ``{"tensors": {name: [(dim, kept), ...]}, ...}``,
            or only its ``"tensors"`` mapping. Buffers and parameters that have no state
            in this optimizer are ignored.
        strict: raise ``ValueError`` for an entry that cannot be mapped instead of
            clearing that parameter's state.

    Returns:
        ``{"sliced": [...], "reset": [...], "kept": [...]}`` of ``"param_name:state_key"``.
    """
    return _slice_all([optimizer], model, record, strict, stacklevel=3)


def slice_optimizers(
    optimizers: Iterable[torch.optim.Optimizer],
    model: nn.Module,
    record: Mapping[str, Any],
    strict: bool = False,
) -> dict[str, list[str]]:
    """:func:`slice_optimizer_state` for several optimizers; one combined report.

    With ``strict=True`` every optimizer is checked before any is changed.
    """
    return _slice_all(optimizers, model, record, strict, stacklevel=3)


def _slice_all(
    optimizers: Iterable[torch.optim.Optimizer],
    model: nn.Module,
    record: Mapping[str, Any],
    strict: bool,
    stacklevel: int,
) -> dict[str, list[str]]:
    """Plan every optimizer first (so ``strict`` changes nothing), then apply.

    ``stacklevel`` is the caller's frame as seen from here, for the reset warning.
    """
    params = _named_slices(model, _record_tensors(record))
    names = {id(p): n for n, p in model.named_parameters()}
    plans = [_plan(unwrap_optimizer(opt), params, names) for opt in optimizers]
    if strict:
        problems = [f"{name}:{key}" for plan in plans for name, (_, keys) in plan.resets.items() for key in keys]
        if problems:
            raise ValueError(
                f"optimizer state entries cannot be mapped to the pruned parameters: {', '.join(problems)}; "
                f"pass strict=False to reset those parameters' state instead"
            )
    report: dict[str, list[str]] = {"sliced": [], "reset": [], "kept": []}
    for plan in plans:
        part = _apply(plan, stacklevel + 1)
        for key, items in part.items():
            report[key].extend(items)
    return report


# ---------------------------------------------------------------------- planning
def _record_tensors(record: Mapping[str, Any]) -> Mapping[str, Sequence[SliceRecord]]:
    """Accept a full record or only its ``"tensors"`` mapping."""
    tensors = record.get("tensors")
    return tensors if isinstance(tensors, Mapping) else record


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """Lightning's ``LightningOptimizer`` wraps the real optimizer in ``.optimizer``."""
    if not isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "optimizer"):
        return optimizer.optimizer
    return optimizer


def _named_slices(
    model: nn.Module, tensors: Mapping[str, Sequence[SliceRecord]]
) -> list[tuple[str, nn.Parameter, list[SliceRecord]]]:
    """``(name, param, slices)`` for each pruned parameter, its dims made non-negative.

    A parameter named twice (tied weights recorded under two names) gets both lists,
    in record order, so each slice still applies once.
    """
    by_name = dict(model.named_parameters(remove_duplicate=False))
    out: dict[int, tuple[str, nn.Parameter, list[SliceRecord]]] = {}
    for name, slices in tensors.items():
        param = by_name.get(name)
        if param is None:
            continue  # a buffer, or a tensor of another model
        entry = out.setdefault(id(param), (name, param, []))
        ndim = max(param.dim(), 1)
        entry[2].extend((int(d) % ndim, [int(i) for i in kept]) for d, kept in slices)
    return list(out.values())


def _plan(
    optimizer: torch.optim.Optimizer,
    params: list[tuple[str, nn.Parameter, list[SliceRecord]]],
    names: dict[int, str],
) -> _Plan:
    plan = _Plan(optimizer)
    if isinstance(optimizer, torch.optim.LBFGS):
        # LBFGS keeps flat vectors over all its parameters under the first one.
        _plan_lbfgs(plan, params, names)
        return plan
    for name, param, slices in params:
        state = optimizer.state.get(param)
        if not state:
            continue
        for key, value in state.items():
            _plan_entry(plan, name, param, key, value, slices)
    return plan


def _plan_entry(
    plan: _Plan, name: str, param: nn.Parameter, key: Any, value: Any, slices: list[SliceRecord]
) -> None:
    label = f"{name}:{key}"
    if isinstance(value, _SCALAR_TYPES) or (isinstance(value, torch.Tensor) and value.dim() == 0):
        plan.kept.append(label)
        return
    if isinstance(value, torch.Tensor) and value.dim() == param.dim():
        found = _entry_slices(tuple(value.shape), slices)
        if found is not None and _broadcasts_to(found[1], tuple(param.shape)):
            if found[0]:
                plan.slices.append((param, name, key, found[0]))
            else:
                plan.kept.append(label)
            return
    plan.resets.setdefault(name, (param, []))[1].append(str(key))


def _plan_lbfgs(
    plan: _Plan, params: list[tuple[str, nn.Parameter, list[SliceRecord]]], names: dict[int, str]
) -> None:
    """LBFGS's history is flat over all parameters: any prune invalidates all of it."""
    pruned = {id(p) for _, p, _ in params}
    groups = plan.optimizer.param_groups
    if not any(id(p) in pruned for g in groups for p in g["params"]):
        return
    plan.stale_numel = True
    for g in groups:
        for p in g["params"]:
            state = plan.optimizer.state.get(p)
            if state:
                plan.resets[names.get(id(p), "<unnamed>")] = (p, [str(k) for k in state])


def _entry_slices(
    shape: tuple[int, ...], slices: Sequence[SliceRecord]
) -> tuple[list[SliceRecord], tuple[int, ...]] | None:
    """Walk ``shape`` through ``slices``: the slices to apply and the final shape.

    ``None`` when a slice does not fit. Dims of size 1 are skipped: a recorded slice
    never applies to a real dim of size 1, so there it means a reduced dim.
    """
    sizes = list(shape)
    todo: list[SliceRecord] = []
    for dim, kept in slices:
        if dim >= len(sizes):
            return None
        if sizes[dim] == 1:
            continue
        if kept and (min(kept) < 0 or max(kept) >= sizes[dim]):
            return None
        todo.append((dim, kept))
        sizes[dim] = len(kept)
    return todo, tuple(sizes)


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    return len(shape) == len(target) and all(s in (t, 1) for s, t in zip(shape, target))


# ---------------------------------------------------------------------- applying
def _apply(plan: _Plan, stacklevel: int) -> dict[str, list[str]]:
    state = plan.optimizer.state
    sliced = []
    for param, name, key, slices in plan.slices:
        if name in plan.resets:
            continue  # the whole state of this parameter is cleared below
        state[param][key] = _index(state[param][key], slices)
        sliced.append(f"{name}:{key}")
    reset = []
    for name, (param, _bad) in plan.resets.items():
        entry = state.get(param)
        if entry is not None:
            reset.extend(f"{name}:{key}" for key in entry)
            entry.clear()
    if plan.stale_numel:
        plan.optimizer._numel_cache = None  # recomputed lazily by LBFGS._numel()
    if plan.resets:
        _warn_reset(plan, stacklevel + 1)
    kept = [label for label in plan.kept if label.split(":", 1)[0] not in plan.resets]
    return {"sliced": sliced, "reset": reset, "kept": kept}


def _index(tensor: torch.Tensor, slices: list[SliceRecord]) -> torch.Tensor:
    with torch.no_grad():
        for dim, kept in slices:
            index = torch.as_tensor(kept, dtype=torch.long, device=tensor.device)
            tensor = torch.index_select(tensor, dim, index)
    return tensor


def _warn_reset(plan: _Plan, stacklevel: int) -> None:
    details = "; ".join(f"{name} (cannot map: {', '.join(keys)})" for name, (_, keys) in plan.resets.items())
    warnings.warn(
        f"{type(plan.optimizer).__name__}: state reset for {len(plan.resets)} pruned parameter(s), "
        f"which the optimizer will re-initialize: {details}",
        stacklevel=stacklevel,
    )


def _short(slices: Sequence[SliceRecord]) -> str:
    return str([(d, f"{len(k)} kept, max {max(k) if k else None}") for d, k in slices])
