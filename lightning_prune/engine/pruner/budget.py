"""Prune to a MACs or parameter budget instead of a channel ratio.

The channel ratio that meets a budget is found by bisection. Each trial prunes a
*meta-device clone* of the model (shapes only, no weights copied) with the same removal
plan the real step will use: importance is scored once on the real model, so the trial
differs from the real prune only in the ratio. MACs and parameters are then counted on
the clone, which is cheap because nothing is computed.
"""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import PruningError
from ..graph import DependencyGraph
from ..utils import count_ops_and_params
from .planning import unit_scores

if TYPE_CHECKING:
    from .meta import MetaPruner


def meta_clone(model: nn.Module) -> nn.Module:
    """A deep copy whose parameters and buffers live on the meta device (nothing is copied)."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    # Objects a module only refers to (a Lightning trainer, a tokenizer, a logger) are
    # shared, not copied: copying them is slow, and some cannot be copied at all.
    for m in model.modules():
        for key, value in vars(m).items():
            if key not in _MODULE_TABLES and not isinstance(value, _COPIED):
                memo.setdefault(id(value), value)
    return copy.deepcopy(model, memo)


_MODULE_TABLES = frozenset({"_parameters", "_buffers", "_modules"})
_COPIED = (nn.Module, torch.Tensor, list, tuple, dict, set, int, float, bool, str, type(None))


def apply_plans(graph: DependencyGraph, plans: list) -> None:
    """Prune a clone's graph as the real step would: a refused group is kept whole there too."""
    for plan in plans:
        if plan.remove:
            try:
                graph.group_for_units(plan.group, plan.remove).prune()
            except PruningError:
                pass  # the real step keeps this group whole too


def simulate(pruner: MetaPruner, ratio: float, scores: dict[str, torch.Tensor], metric: str) -> float:
    """MACs or params after pruning a meta clone of ``pruner.model`` at ``ratio``."""
    graph_kwargs = pruner.graph_kwargs
    clone = meta_clone(pruner.model)
    graph = DependencyGraph().build_dependency(clone, pruner.example_inputs, **graph_kwargs)
    # The plan keeps the clone's modules of the same names as the ignored ones. Only
    # modules are looked up by name: an ignored parameter does not carry over.
    names = {id(m): n for n, m in pruner.model.named_modules()}
    clone_modules = dict(clone.named_modules())
    ignored = [clone_modules[names[id(m)]] for m in pruner.ignored_layers if id(m) in names]
    apply_plans(graph, pruner.plan(graph, ratio, scores, ignored_layers=ignored))
    macs, params = count_ops_and_params(clone, pruner.example_inputs, forward_fn=graph_kwargs["forward_fn"])
    return float(macs if metric == "macs" else params)


def solve_ratio_for_budget(pruner: MetaPruner, metric: str, target: float, tolerance: float = 0.005,
                           iterations: int = 12) -> float:
    """The channel ratio whose pruned model has ``metric`` closest to ``target``.

    MACs and parameters fall roughly as ``(1 - r)^2``, so the search starts from
    ``r = 1 - sqrt(target / current)`` and refines by regula falsi inside a bracket; it
    usually needs two to four trial prunes.
    """
    with pruner.scoring_pass():
        scores = {g.root_name: unit_scores(g, pruner.estimate_importance(g)) for g in pruner.groups(pruner.DG)}
    lo, hi = 0.0, pruner.max_pruning_ratio if pruner.max_pruning_ratio < 1 else 0.999
    f_lo = simulate(pruner, lo, scores, metric) - target
    if f_lo <= 0:
        return lo
    f_hi = None
    guess = min(hi, max(lo, 1 - (target / (f_lo + target)) ** 0.5))
    best, best_err = lo, abs(f_lo)
    for _ in range(iterations):
        value = simulate(pruner, guess, scores, metric) - target
        if abs(value) < best_err:
            best, best_err = guess, abs(value)
        if abs(value) <= tolerance * target:
            return guess
        if value > 0:
            lo, f_lo = guess, value
        else:
            hi, f_hi = guess, value
        if f_hi is None:
            guess = min(hi, guess * 1.25 + 0.01)  # not overshot yet: push further
        else:
            guess = lo + (hi - lo) * f_lo / (f_lo - f_hi)  # regula falsi
            if not (lo < guess < hi) or min(guess - lo, hi - guess) < 1e-4 * (hi - lo):
                guess = (lo + hi) / 2
    if best_err > 0.02 * target:
        warnings.warn(f"the closest reachable {metric} is {100 * best_err / target:.1f}% away from the budget "
                      f"(channel granularity or max_pruning_ratio)", stacklevel=3)
    return best
