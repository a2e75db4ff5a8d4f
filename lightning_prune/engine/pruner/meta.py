"""MetaPruner: rank channels by importance and prune every group to a ratio or a budget.

Follows Torch-Pruning's ``MetaPruner`` arguments. One ``step()``:

1. *Heads* (``prune_num_heads=True``): a graph in ``blocks`` mode couples whole attention
   heads; ``head_pruning_ratio`` of the heads of each attention group go, weakest first.
2. *Channels*: every group gets a removal plan from importance scores (per group, or
   ranked jointly inside a scope: ``global_pruning``, ``isomorphic``, tuple keys of
   ``pruning_ratio_dict``), then the plans are executed group by group.

Every prune is atomic; a group whose prune the engine refuses (the dry run shows the model
would break) is kept whole and reported with a warning. ``step()`` returns the record of
what was removed, and the pruner keeps the whole history.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..graph import DependencyGraph, Group
from ..graph.dependency import resolve_ignored
from ..history.serialization import apply_history
from ..utils import count_ops_and_params
from .arguments import (
    check_latency_options,
    check_num_heads,
    check_positive_int,
    check_ratio,
    check_round_to,
    resolve_importance,
    resolve_num_heads,
    resolve_ratio_arguments,
    resolve_ratio_dict,
)
from .atomic_step import merge_step_records, prune_step
from .budget import solve_ratio_for_budget
from .latency_budget import LatencyBudget, LatencyReport, LatencyTimer
from .latency_trial import apply_widths
from .planning import GroupPlan, plan_global, plan_local, ratio_for, scope_of, unit_scores
from .scheduler import check_schedule, get_scheduler, linear_scheduler


class MetaPruner:
    """Prune a model's channels (and attention heads) by importance.

    Args:
        model: the model to prune, in place.
        example_inputs: inputs for one forward pass (tensor, tuple or dict).
        importance: an importance criterion object, or a name (``"magnitude"``,
            ``"taylor"``, ``"hessian"``, ``"bn_scale"``, ``"lamp"``, ``"fpgm"``,
            ``"random"``). Default: L2 group magnitude.
        pruning_ratio: fraction of each group's channels to remove (a *channel* ratio,
            so parameters fall roughly by ``1 - (1 - r)^2``). Default 0.5 without a
            budget; with ``target_macs`` / ``target_params`` it must be left out and stays
            ``None``: the ratio then comes from the budget (see :meth:`final_channel_ratio`).
        pruning_ratio_dict: per-layer ratios. Keys are modules, dotted names, or tuples
            of them; a tuple forms one scope ranked jointly (as in isomorphic pruning).
        max_pruning_ratio: no group loses more than this fraction (global pruning).
        target_macs / target_params: prune until this fraction of the initial MACs or
            parameters remains (e.g. ``0.5``), instead of a channel ratio.
        target_latency: prune until the model runs in this fraction of the dense time,
            measured (see :mod:`.latency_budget`; ``pruner.latency_report`` says what it
            reached). ``latency_batch_size`` (default: the example's batch),
            ``latency_threads`` (default: torch's count) and ``latency_device`` (default:
            the model's) say where; ``latency_timer`` replaces the measurement.
        iterative_steps: number of ``step()`` calls to reach the target, following
            ``iterative_pruning_ratio_scheduler`` (a callable or "linear", "cosine",
            "exponential").
        ignored_layers: modules, parameters or dotted names whose outputs are kept.
        round_to: keep channel counts multiples of this.
        global_pruning / isomorphic: rank channels across groups (isomorphic: only
            across groups of the same structure).
        prune_num_heads / head_pruning_ratio / head_pruning_ratio_dict: remove whole
            attention heads (found automatically in ``nn.MultiheadAttention`` and in
            hand-written attention that splits heads with ``view``/``reshape``).
        num_heads: optionally restrict head pruning to these layers (``{layer: heads}``).
        prune_head_dims: also prune dims inside heads (same offsets in every head).
        customized_pruners, unwrapped_parameters, root_module_types, forward_fn,
        output_transform: passed to the dependency graph.
        ch_sparsity, ch_sparsity_dict: deprecated aliases of the ratio arguments.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        importance: Any = None,
        global_pruning: bool = False,
        pruning_ratio: float | None = None,
        pruning_ratio_dict: dict | None = None,
        max_pruning_ratio: float = 1.0,
        iterative_steps: int = 1,
        iterative_pruning_ratio_scheduler: Any = linear_scheduler,
        ignored_layers: Sequence[Any] | None = None,
        round_to: int | None = None,
        isomorphic: bool = False,
        num_heads: dict | None = None,
        prune_num_heads: bool = False,
        prune_head_dims: bool = True,
        head_pruning_ratio: float = 0.0,
        head_pruning_ratio_dict: dict | None = None,
        customized_pruners: dict | None = None,
        unwrapped_parameters: Any = None,
        root_module_types: Sequence[type] | None = None,
        forward_fn: Any = None,
        output_transform: Any = None,
        target_macs: float | None = None,
        target_params: float | None = None,
        target_latency: float | None = None,
        latency_batch_size: int | None = None,
        latency_threads: int | None = None,
        latency_device: str | torch.device | None = None,
        latency_timer: LatencyTimer | None = None,
        ch_sparsity: float | None = None,
        ch_sparsity_dict: dict | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"MetaPruner: `model` must be an nn.Module, got {type(model).__name__}")
        pruning_ratio, pruning_ratio_dict, budgets = resolve_ratio_arguments(
            pruning_ratio, pruning_ratio_dict, target_macs, target_params, ch_sparsity, ch_sparsity_dict,
            target_latency=target_latency)
        check_latency_options(target_latency, latency_batch_size, latency_threads, latency_device, latency_timer)
        # Under a budget there is no channel ratio of the user's: None, so that nothing can
        # use a made-up one. Whatever needs a ratio asks _channel_ratio_for_step().
        self.pruning_ratio: float | None = None if budgets else check_ratio(
            "pruning_ratio", 0.5 if pruning_ratio is None else pruning_ratio)
        self.max_pruning_ratio = check_ratio("max_pruning_ratio", max_pruning_ratio, upper_inclusive=True)
        self.head_pruning_ratio = check_ratio("head_pruning_ratio", head_pruning_ratio)
        check_positive_int("iterative_steps", iterative_steps)
        check_positive_int("round_to", round_to, optional=True)
        self.model = model
        self.example_inputs = example_inputs
        self.importance = resolve_importance(importance)
        self.global_pruning = bool(global_pruning)
        self.isomorphic = bool(isomorphic)
        self.iterative_steps = iterative_steps
        self.scheduler = get_scheduler(iterative_pruning_ratio_scheduler)
        self.round_to = round_to
        self.prune_num_heads = bool(prune_num_heads)
        self.prune_head_dims = bool(prune_head_dims)
        self.target_macs = target_macs
        self.target_params = target_params
        self.target_latency = target_latency
        self.root_module_types = tuple(root_module_types) if root_module_types is not None else None
        self._graph_kwargs = {
            "forward_fn": forward_fn, "output_transform": output_transform,
            "unwrapped_parameters": unwrapped_parameters, "customized_pruners": customized_pruners,
        }
        self.ignored_layers = resolve_ignored(model, ignored_layers)
        self.pruning_ratio_dict = resolve_ratio_dict(model, pruning_ratio_dict, "pruning_ratio_dict")
        self.head_pruning_ratio_dict = resolve_ratio_dict(model, head_pruning_ratio_dict, "head_pruning_ratio_dict")
        self.num_heads = resolve_num_heads(model, num_heads)
        # id(graph) -> (graph, key, groups), see groups()
        self._group_cache: dict[int, tuple[DependencyGraph, tuple, list[Group]]] = {}
        self.latency_budget = None if target_latency is None else LatencyBudget(
            model, example_inputs, target_latency, latency_batch_size, latency_threads, latency_device, latency_timer)
        self._latency_widths: dict[str, int] = {}  # group root -> units to keep, from the latency budget
        self._setup(model, example_inputs, forward_fn, budgets)

    def _setup(self, model: nn.Module, example_inputs: Any, forward_fn: Any, budgets: list) -> None:
        self.current_step = 0
        self._history: list[dict] = []
        self.skipped: list[str] = []
        self.DG = self._build("offsets")
        self._initial_units = {g.root_name: len(g.units) for g in self.groups(self.DG)}
        check_round_to(self.groups(self.DG), self.round_to)
        self._initial_heads: dict[str, int] = {}
        if self.prune_num_heads or self.num_heads:
            heads = [g for g in self.groups(self._build("blocks")) if g.is_head_group]
            check_num_heads(self.num_heads, heads)
            if self.prune_num_heads:
                self._initial_heads = {g.root_name: len(g.units) for g in heads}
        self._budget_base = None
        if budgets:
            self._budget_base = count_ops_and_params(model, example_inputs, forward_fn=forward_fn)

    # ------------------------------------------------------------------ graph helpers
    def _build(self, split_mode: str) -> DependencyGraph:
        return DependencyGraph().build_dependency(self.model, self.example_inputs, split_mode=split_mode,
                                                  **self._graph_kwargs)

    def _rebuild(self, history: list[dict]) -> None:
        """Rebuild ``DG`` from the model as it is now, with this pruning history."""
        self.DG = self._build("offsets")
        self.DG.pruning_history = history

    @property
    def graph_kwargs(self) -> dict[str, Any]:
        """The arguments every graph of this pruner is built with (``forward_fn``,
        ``output_transform``, ``unwrapped_parameters``, ``customized_pruners``); a copy."""
        return dict(self._graph_kwargs)

    def groups(self, graph: DependencyGraph, ignored_layers: Sequence[Any] | None = None) -> list[Group]:
        """Every prunable group of ``graph`` (a new list), reused until the graph changes.

        Construction, the budget solver and ``step()`` all walk the same groups; deriving
        them once per graph version (not once per walk) saves much of a step.

        Args:
            graph: ``DG`` or another graph of this pruner's model (or of a clone of it).
            ignored_layers: the resolved modules or parameters of ``graph``'s model to
                keep; default ``self.ignored_layers`` (pass them for a clone's graph).
        """
        ignored = self.ignored_layers if ignored_layers is None else list(ignored_layers)
        key = (graph.version, tuple(map(id, ignored)), self.root_module_types)
        cache = self._group_cache
        hit = cache.get(id(graph))
        if hit is not None and hit[0] is graph and hit[1] == key:
            return list(hit[2])
        groups = list(graph.get_all_groups(ignored_layers=ignored, root_module_types=self.root_module_types))
        for stale in [k for k, v in cache.items() if v[0] is not self.DG]:
            del cache[stale]  # graphs this pruner no longer uses (head graphs, rebuilt ones)
        cache[id(graph)] = (graph, key, groups)
        return list(groups)

    @property
    def latency_report(self) -> LatencyReport | None:
        """What the last latency-budget step reached (``None`` without ``target_latency``)."""
        return self.latency_budget.report if self.latency_budget is not None else None

    # ------------------------------------------------------------------ public API
    def estimate_importance(self, group: Group) -> torch.Tensor:
        return self.importance(group)

    def update_regularizer(self) -> None:
        """Hook for sparse-training pruners; MetaPruner has no regularizer."""

    def regularize(self, model: nn.Module | None = None, *args: Any, **kwargs: Any) -> None:
        """Hook for sparse-training pruners; MetaPruner has no regularizer."""

    def step(self, interactive: bool = False) -> dict | Iterator[Group]:
        """Prune one step of the schedule.

        Returns the record of what was removed, or with ``interactive=True`` a generator
        of groups to prune one by one (``group.prune()``), in order; do not keep them.
        """
        if self.current_step >= self.iterative_steps:
            warnings.warn(f"all {self.iterative_steps} pruning steps are done; step() pruned nothing",
                          stacklevel=3)
            return iter(()) if interactive else {"tensors": {}, "attributes": {}}
        self.current_step += 1
        self.skipped = []
        if interactive:
            return self._interactive(self._step_groups())
        try:
            records = prune_step(self, self._step_groups, self._rebuild)
        except BaseException:
            self.current_step -= 1  # the step was undone: it did not happen
            raise
        if self.skipped:
            warnings.warn(f"{len(self.skipped)} group(s) were kept whole because pruning them would break the "
                          f"model; see pruner.skipped. First: {self.skipped[0]}", stacklevel=3)
        record = merge_step_records(records)
        self._history.append(record)
        return record

    def _interactive(self, gen: Iterator[Group]) -> Iterator[Group]:
        start = len(self.DG.pruning_history)
        yield from gen
        self._history.append(merge_step_records(self.DG.pruning_history[start:]))

    def pruning_history(self) -> list[dict]:
        """Records of every step so far (primitive types; ``torch.save``-able)."""
        return [dict(r) for r in self._history]

    def load_pruning_history(self, history: list[dict]) -> None:
        """Replay ``history`` on this pruner's (unpruned) model and rebuild the graph."""
        apply_history(self.model, history)
        self.follow_history(history)

    def follow_history(self, history: list[dict], current_step: int | None = None) -> None:
        """The model was reshaped to ``history`` by someone else (a checkpoint load, a
        rollback): adopt it as this pruner's history and rebuild the graph.

        ``current_step`` is the schedule position (default: one step per record).
        """
        self._history = [dict(r) for r in history]
        self.current_step = min(self.iterative_steps, len(history)) if current_step is None else int(current_step)
        self.DG = self._build("offsets")

    # ------------------------------------------------------------------ planning
    def _step_groups(self) -> Iterator[Group]:
        if self.prune_num_heads and self.head_pruning_ratio_at_step() > 0:
            yield from self._head_groups()
            self.DG = self._build("offsets")
        ratio = self._channel_ratio_at_step()
        plans = self.plan(self.DG, ratio)
        apply_widths(plans, self._latency_widths if self.latency_budget is not None else None)
        for plan in plans:
            if plan.remove:
                yield self.DG.group_for_units(plan.group, plan.remove)

    def _schedule(self, target: float) -> list[float]:
        """The cumulative ratio after each step, for a target ratio (``iterative_steps + 1`` values)."""
        return check_schedule(self.scheduler(target, self.iterative_steps), self.iterative_steps, target)

    def head_pruning_ratio_at_step(self) -> float:
        return self._schedule(self.head_pruning_ratio)[self.current_step]

    def _head_groups(self) -> Iterator[Group]:
        graph = self._build("blocks")
        self.DG = graph
        plans = []
        head_groups = [g for g in self.groups(graph) if g.is_head_group and len(g.units) >= 2 and (
            not self.num_heads or any(d.target.name in self.num_heads for d, _ in g))]
        with self.scoring_pass():
            scores = [unit_scores(g, self.estimate_importance(g)) for g in head_groups]
        for g, s in zip(head_groups, scores):
            name = g.root_name
            target = ratio_for(name, self.head_pruning_ratio, self.head_pruning_ratio_dict)
            plans.append(GroupPlan(g, name, None, self._schedule(target)[self.current_step],
                                   self._initial_heads.get(name, len(g.units)), s))
        plan_local(plans, self.max_pruning_ratio, None)
        for plan in plans:
            if plan.remove:
                yield graph.group_for_units(plan.group, plan.remove)

    def _channel_ratio_at_step(self) -> float:
        return self._channel_ratio_for_step(self.current_step)

    def final_channel_ratio(self) -> float:
        """The channel ratio (a fraction of each group's *initial* units) the last step prunes to.

        ``pruning_ratio`` without a budget. Under ``target_macs`` / ``target_params``, the
        ratio that :func:`~lightning_prune.engine.pruner.budget.solve_ratio_for_budget`
        finds for the final target, from the model and importance as they are now: a few
        trial prunes of meta-device clones, so it costs about as much as a budget step's
        planning. Groups named in ``pruning_ratio_dict`` use their own ratio either way.
        """
        return self._channel_ratio_for_step(self.iterative_steps)

    def _channel_ratio_for_step(self, step: int) -> float:
        """The channel ratio that step ``step`` (1 to ``iterative_steps``) of the schedule reaches."""
        if self._budget_base is None:
            assert self.pruning_ratio is not None  # set whenever there is no budget
            return self._schedule(self.pruning_ratio)[step]
        if self.latency_budget is not None:
            fraction = 1 - self._schedule(1 - self.target_latency)[step]
            ratio, self._latency_widths = self.latency_budget.solve(self, fraction)
            return ratio
        base_macs, base_params = self._budget_base
        keep = self.target_macs if self.target_macs is not None else self.target_params
        fraction = 1 - self._schedule(1 - keep)[step]
        metric = "macs" if self.target_macs is not None else "params"
        base = base_macs if metric == "macs" else base_params
        return solve_ratio_for_budget(self, metric, fraction * base)

    def scoring_pass(self) -> contextlib.AbstractContextManager:
        """Context for scoring every group of the unchanged model (see ``Importance.scoring_pass``)."""
        enter = getattr(self.importance, "scoring_pass", None)
        return enter() if callable(enter) else contextlib.nullcontext()

    def plan(self, graph: DependencyGraph, ratio: float, scores: dict[str, torch.Tensor] | None = None,
             ignored_layers: Sequence[Any] | None = None) -> list[GroupPlan]:
        """A removal plan for every group of ``graph``, as ``step()`` makes it; nothing is pruned.

        Args:
            graph: ``DG``, or the graph of a clone of the model (the budget solver's trials).
            ratio: the channel ratio of groups without one of their own in
                ``pruning_ratio_dict``.
            scores: per-unit scores by group root name, instead of scoring each group
                with the importance (a group whose entry is missing or of another size
                scores zeros).
            ignored_layers: the modules of ``graph``'s model to keep, see :meth:`groups`.
        """
        with self.scoring_pass():
            plans = self._score_plans(graph, ratio, scores, ignored_layers)
        local = [p for p in plans if p.scope is None]
        joint = [p for p in plans if p.scope is not None]
        plan_local(local, self.max_pruning_ratio, self.round_to)
        plan_global(joint, self.max_pruning_ratio, self.round_to)
        return plans

    def _score_plans(self, graph: DependencyGraph, default_ratio: float, scores: dict[str, torch.Tensor] | None,
                     ignored_layers: Sequence[Any] | None) -> list[GroupPlan]:
        plans = []
        for g in self.groups(graph, ignored_layers):
            if not self.prune_head_dims and g.is_head_group:
                continue
            name = g.root_name
            target = ratio_for(name, default_ratio, self.pruning_ratio_dict)
            if self._budget_base is None and target != default_ratio:
                target = self._schedule(target)[self.current_step]
            if scores is not None:
                s = scores.get(name)
                if s is None or s.numel() != len(g.units):
                    s = torch.zeros(len(g.units))
            else:
                s = unit_scores(g, self.estimate_importance(g))
            scope = scope_of(g, self.pruning_ratio_dict, self.global_pruning, self.isomorphic)
            plans.append(GroupPlan(g, name, scope, target, self._initial_units.get(name, len(g.units)), s))
        return plans
