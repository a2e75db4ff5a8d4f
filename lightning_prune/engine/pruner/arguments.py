"""Checking and resolving the arguments of the pruners.

Every function here raises ``ValueError`` (or ``TypeError``) with the argument's name
and what would be valid, so that a wrong argument fails when the pruner is built, not
half-way through a step. Modules given by object or by dotted name are turned into
dotted names here, once; planning then only compares names.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import importance as imp

if TYPE_CHECKING:
    from ..graph import Group


def check_ratio(name: str, value: Any, upper_inclusive: bool = False) -> float:
    """``value`` as a float in ``[0, 1)`` (``[0, 1]`` with ``upper_inclusive``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value and (
        value <= 1 if upper_inclusive else value < 1)
    if not ok:
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{name} must be a number in {bound}, got {value!r}")
    return float(value)


def check_nonnegative(name: str, value: Any) -> float:
    """``value`` as a finite float ``>= 0`` (a penalty strength)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_positive_int(name: str, value: Any, optional: bool = False) -> None:
    """``value`` must be an int ``>= 1`` (or ``None`` when ``optional``)."""
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if optional else ''}, got {value!r}")


def resolve_ratio_arguments(pruning_ratio: float | None, pruning_ratio_dict: dict | None,
                            target_macs: float | None, target_params: float | None,
                            ch_sparsity: float | None, ch_sparsity_dict: dict | None,
                            stacklevel: int = 2, target_latency: float | None = None,
                            ) -> tuple[float | None, dict | None, list[float]]:
    """``(pruning_ratio, pruning_ratio_dict, budgets)`` after the deprecated aliases.

    ``budgets`` lists the budget given (``target_macs``, ``target_params`` or
    ``target_latency``), if any.
    ``pruning_ratio`` is returned as passed (``None`` when left out): the pruner picks its
    default only when there is no budget. ``stacklevel`` is that of the pruner's caller,
    so deprecation warnings point at the line that built the pruner.
    """
    if ch_sparsity is not None:
        warnings.warn("ch_sparsity is deprecated; use pruning_ratio", DeprecationWarning, stacklevel=stacklevel + 1)
        if pruning_ratio is not None:
            raise ValueError("pass either pruning_ratio or the deprecated ch_sparsity, not both")
        pruning_ratio = ch_sparsity
    if ch_sparsity_dict is not None:
        warnings.warn("ch_sparsity_dict is deprecated; use pruning_ratio_dict", DeprecationWarning,
                      stacklevel=stacklevel + 1)
        if pruning_ratio_dict is not None:
            raise ValueError("pass either pruning_ratio_dict or the deprecated ch_sparsity_dict, not both")
        pruning_ratio_dict = ch_sparsity_dict
    budgets = [b for b in (target_macs, target_params, target_latency) if b is not None]
    if len(budgets) > 1:
        given = [n for n, b in (("target_macs", target_macs), ("target_params", target_params),
                                ("target_latency", target_latency)) if b is not None]
        raise ValueError(f"pass at most one of target_macs, target_params and target_latency, got {given}")
    if budgets and pruning_ratio is not None:
        raise ValueError("pass either pruning_ratio or a budget (target_macs / target_params / target_latency), "
                         "not both")
    if target_latency is not None and not (isinstance(target_latency, int | float) and not isinstance(
            target_latency, bool) and 0 < target_latency < 1):
        raise ValueError(f"target_latency is the fraction of the dense latency to reach and must be in (0, 1) "
                         f"(e.g. 0.5 for twice as fast), got {target_latency!r}")
    for name, b in (("target_macs", target_macs), ("target_params", target_params)):
        if b is not None and not (isinstance(b, int | float) and 0 < b <= 1):
            raise ValueError(f"{name} is the fraction to keep and must be in (0, 1], got {b!r}")
    return pruning_ratio, pruning_ratio_dict, budgets


def check_latency_options(target_latency: float | None, batch_size: Any, threads: Any, device: Any,
                          timer: Any) -> None:
    """The ``latency_*`` arguments configure ``target_latency``; each must be valid and none alone."""
    options = {"latency_batch_size": batch_size, "latency_threads": threads, "latency_device": device,
               "latency_timer": timer}
    if target_latency is None:
        given = [n for n, v in options.items() if v is not None]
        if given:
            raise ValueError(f"{given[0]} configures the latency budget and needs target_latency (got "
                             f"target_latency=None); pass target_latency=0.5 or drop {given[0]}")
        return
    check_positive_int("latency_batch_size", batch_size, optional=True)
    check_positive_int("latency_threads", threads, optional=True)
    if device is not None:
        try:
            parsed = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"latency_device must be a torch device or its name ('cpu', 'cuda:0'), got "
                             f"{device!r}") from err
        if parsed.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("latency_device is a CUDA device but CUDA is not available; use latency_device='cpu'")
    if timer is not None:
        if not (callable(getattr(timer, "model", None)) and callable(getattr(timer, "layer", None))):
            raise TypeError("latency_timer must have model(module, inputs) -> LatencyStats and layer(spec) -> ms "
                            f"methods (see LatencyTimer), got {type(timer).__name__}")
        if threads is not None or device is not None:
            raise ValueError("latency_threads and latency_device configure the default timer; with latency_timer, "
                             "set them on your timer instead")


def resolve_importance(importance: Any) -> Any:
    """The criterion object for ``importance`` (a name, a class, an object; default L2 magnitude)."""
    if importance is None:
        return imp.GroupMagnitudeImportance(p=2)
    return imp.get_importance(importance)


def scope_members(model: nn.Module, key: Any, arg: str) -> tuple[set[str], Any]:
    """``(dotted names of every module under key, key)`` for a key of a ratio dict.

    ``key`` is a module, a dotted name, or a tuple of them (one jointly ranked scope).
    """
    names = {id(m): n for n, m in model.named_modules()}
    items = key if isinstance(key, tuple) else (key,)
    members: set[str] = set()
    for item in items:
        if isinstance(item, str):
            mods = dict(model.named_modules())
            if item not in mods:
                raise ValueError(f"{arg}: no module named {item!r} in the model")
            item = mods[item]
        if not isinstance(item, nn.Module) or id(item) not in names:
            raise ValueError(f"{arg}: key {item!r} is not a submodule of the model; use modules of this "
                             f"model instance, dotted names, or tuples of them")
        members.update(names[id(m)] for m in item.modules())
    return members, key


def resolve_ratio_dict(model: nn.Module, table: dict | None, arg: str) -> list[tuple[set[str], Any, float]]:
    """``{key: ratio}`` -> ``[(member names, key, ratio)]``, in the dict's order, checked."""
    out = []
    for key, ratio in (table or {}).items():
        members, key = scope_members(model, key, arg)
        out.append((members, key, check_ratio(f"{arg}[{key!r}]", ratio)))
    return out


def resolve_num_heads(model: nn.Module, num_heads: dict | None) -> dict[str, int]:
    """``{layer or dotted name: heads}`` -> ``{name: heads}``, checked."""
    if not num_heads:
        return {}
    names = {id(m): n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    out: dict[str, int] = {}
    for layer, heads in num_heads.items():
        if isinstance(layer, str) and layer in modules:
            layer = modules[layer]
        if not isinstance(layer, nn.Module) or id(layer) not in names:
            raise ValueError(f"num_heads: key {layer!r} is not a layer of the model; use the layer (e.g. the qkv "
                             f"Linear) or its dotted name")
        if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
            raise ValueError(f"num_heads[{names[id(layer)]}] must be a positive int, got {heads!r}")
        out[names[id(layer)]] = heads
    return out


def check_round_to(groups: list[Group], round_to: int | None) -> None:
    """Every group must have at least ``round_to`` prunable channels."""
    if not round_to:
        return
    for g in groups:
        channels = len(g.units) * len(g.units[0])
        if channels < round_to:
            raise ValueError(
                f"round_to={round_to} is larger than {g.root_name}, which has {channels} prunable "
                f"channels; use a smaller round_to or add it to ignored_layers"
            )


def check_num_heads(num_heads: dict[str, int], head_groups: list[Group]) -> None:
    """``num_heads`` says how many heads a layer has: hold the graph's head groups to it."""
    for name, heads in num_heads.items():
        found = sorted({len(g.units) for g in head_groups if any(d.target.name == name for d, _ in g)})
        if not found:
            where = sorted({g.root_name for g in head_groups})[:5]
            raise ValueError(f"num_heads[{name!r}]={heads}, but the graph finds no attention heads at {name!r}"
                             + (f"; it finds heads at {where}" if where else "") +
                             ". Name a layer that projects q, k, v or the attention output")
        if heads not in found:
            raise ValueError(f"num_heads[{name!r}]={heads}, but the graph finds {found[0]} heads there; "
                             f"check the number (heads are found automatically, num_heads only checks them)")
