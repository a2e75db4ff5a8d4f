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
from ..pruning import PruningError
from ..records import merge_records
from .budget import solve_ratio_for_budget
from .planning import GroupPlan, plan_global, plan_local, unit_scores
from .scheduler import check_schedule, get_scheduler, linear_scheduler


def _check_ratio(name: str, value: Any, upper_inclusive: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value and (
        value <= 1 if upper_inclusive else value < 1)
    if not ok:
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{name} must be a number in {bound}, got {value!r}")
    return float(value)


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
        ch_sparsity: float | None = None,
        ch_sparsity_dict: dict | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"MetaPruner: `model` must be an nn.Module, got {type(model).__name__}")
        if ch_sparsity is not None:
            warnings.warn("ch_sparsity is deprecated; use pruning_ratio", DeprecationWarning, stacklevel=2)
            if pruning_ratio is not None:
                raise ValueError("pass either pruning_ratio or the deprecated ch_sparsity, not both")
            pruning_ratio = ch_sparsity
        if ch_sparsity_dict is not None:
            warnings.warn("ch_sparsity_dict is deprecated; use pruning_ratio_dict", DeprecationWarning, stacklevel=2)
            if pruning_ratio_dict is not None:
                raise ValueError("pass either pruning_ratio_dict or the deprecated ch_sparsity_dict, not both")
            pruning_ratio_dict = ch_sparsity_dict
        budgets = [b for b in (target_macs, target_params) if b is not None]
        if len(budgets) > 1:
            raise ValueError("pass at most one of target_macs and target_params")
        if budgets and pruning_ratio is not None:
            raise ValueError("pass either pruning_ratio or a budget (target_macs / target_params), not both")
        for name, b in (("target_macs", target_macs), ("target_params", target_params)):
            if b is not None and not (isinstance(b, int | float) and 0 < b <= 1):
                raise ValueError(f"{name} is the fraction to keep and must be in (0, 1], got {b!r}")
        # Under a budget there is no channel ratio of the user's: None, so that nothing can
        # use a made-up one. Whatever needs a ratio asks _channel_ratio_for_step().
        self.pruning_ratio: float | None = None if budgets else _check_ratio(
            "pruning_ratio", 0.5 if pruning_ratio is None else pruning_ratio)
        self.max_pruning_ratio = _check_ratio("max_pruning_ratio", max_pruning_ratio, upper_inclusive=True)
        self.head_pruning_ratio = _check_ratio("head_pruning_ratio", head_pruning_ratio)
        if not isinstance(iterative_steps, int) or isinstance(iterative_steps, bool) or iterative_steps < 1:
            raise ValueError(f"iterative_steps must be a positive int, got {iterative_steps!r}")
        if round_to is not None and (not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1):
            raise ValueError(f"round_to must be a positive int or None, got {round_to!r}")
        self.model = model
        self.example_inputs = example_inputs
        self.importance = _resolve_importance(importance)
        self.global_pruning = bool(global_pruning)
        self.isomorphic = bool(isomorphic)
        self.iterative_steps = iterative_steps
        self.scheduler = get_scheduler(iterative_pruning_ratio_scheduler)
        self.round_to = round_to
        self.prune_num_heads = bool(prune_num_heads)
        self.prune_head_dims = bool(prune_head_dims)
        self.target_macs = target_macs
        self.target_params = target_params
        self.root_module_types = tuple(root_module_types) if root_module_types is not None else None
        self._graph_kwargs = {
            "forward_fn": forward_fn, "output_transform": output_transform,
            "unwrapped_parameters": unwrapped_parameters, "customized_pruners": customized_pruners,
        }
        self.ignored_layers = resolve_ignored(model, ignored_layers)
        self.pruning_ratio_dict = _resolve_ratio_dict(model, pruning_ratio_dict, "pruning_ratio_dict")
        self.head_pruning_ratio_dict = _resolve_ratio_dict(model, head_pruning_ratio_dict, "head_pruning_ratio_dict")
        self.num_heads = _resolve_num_heads(model, num_heads)
        # id(graph) -> (graph, key, groups), see _groups
        self._group_cache: dict[int, tuple[DependencyGraph, tuple, list[Group]]] = {}
        self._setup(model, example_inputs, forward_fn, budgets)

    def _setup(self, model: nn.Module, example_inputs: Any, forward_fn: Any, budgets: list) -> None:
        self.current_step = 0
        self._history: list[dict] = []
        self.skipped: list[str] = []
        self.DG = self._build("offsets")
        self._initial_units = {self._root_name(g): len(g.units) for g in self._groups(self.DG)}
        self._check_round_to()
        self._initial_heads: dict[str, int] = {}
        if self.prune_num_heads or self.num_heads:
            heads = [g for g in self._groups(self._build("blocks")) if g.is_head_group]
            self._check_num_heads(heads)
            if self.prune_num_heads:
                self._initial_heads = {self._root_name(g): len(g.units) for g in heads}
        self._budget_base = None
        if budgets:
            from ..utils import count_ops_and_params

            self._budget_base = count_ops_and_params(model, example_inputs, forward_fn=forward_fn)

    # ------------------------------------------------------------------ graph helpers
    def _build(self, split_mode: str) -> DependencyGraph:
        return DependencyGraph().build_dependency(self.model, self.example_inputs, split_mode=split_mode,
                                                  **self._graph_kwargs)

    def _groups(self, graph: DependencyGraph) -> list[Group]:
        """Every prunable group of ``graph``, reused until the graph changes.

        Construction, the budget solver and ``step()`` all walk the same groups; deriving
        them once per graph version (not once per walk) saves a third of a step.
        """
        key = (graph.version, tuple(map(id, self.ignored_layers)), self.root_module_types)
        cache = self._group_cache
        hit = cache.get(id(graph))
        if hit is not None and hit[0] is graph and hit[1] == key:
            return list(hit[2])
        groups = list(graph.get_all_groups(ignored_layers=self.ignored_layers,
                                           root_module_types=self.root_module_types))
        for stale in [k for k, v in cache.items() if v[0] is not self.DG]:
            del cache[stale]  # graphs this pruner no longer uses (head graphs, rebuilt ones)
        cache[id(graph)] = (graph, key, groups)
        return list(groups)

    @staticmethod
    def _root_name(group: Group) -> str:
        return group.root_name

    def _check_round_to(self) -> None:
        if not self.round_to:
            return
        for g in self._groups(self.DG):
            channels = len(g.units) * len(g.units[0])
            if channels < self.round_to:
                raise ValueError(
                    f"round_to={self.round_to} is larger than {self._root_name(g)}, which has {channels} prunable "
                    f"channels; use a smaller round_to or add it to ignored_layers"
                )

    def _check_num_heads(self, head_groups: list[Group]) -> None:
        """``num_heads`` says how many heads a layer has: hold the graph to it."""
        for name, heads in self.num_heads.items():
            found = sorted({len(g.units) for g in head_groups if any(d.target.name == name for d, _ in g)})
            if not found:
                where = sorted({self._root_name(g) for g in head_groups})[:5]
                raise ValueError(f"num_heads[{name!r}]={heads}, but the graph finds no attention heads at {name!r}"
                                 + (f"; it finds heads at {where}" if where else "") +
                                 ". Name a layer that projects q, k, v or the attention output")
            if heads not in found:
                raise ValueError(f"num_heads[{name!r}]={heads}, but the graph finds {found[0]} heads there; "
                                 f"check the number (heads are found automatically, num_heads only checks them)")

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
            try:
                records = self._prune_step(check_each=False)
            except _BrokenStep:
                # Some group left a model that no longer runs, which its own checks did not
                # catch. The step was undone; redo it checking every group, so that only the
                # groups that break the model are kept whole (and named in pruner.skipped).
                self.skipped = []
                records = self._prune_step(check_each=True)
        except BaseException:
            self.current_step -= 1  # the step was undone: it did not happen
            raise
        if self.skipped:
            warnings.warn(f"{len(self.skipped)} group(s) were kept whole because pruning them would break the "
                          f"model; see pruner.skipped. First: {self.skipped[0]}", stacklevel=3)
        record = _merge(records)
        self._history.append(record)
        return record

    def _prune_step(self, check_each: bool) -> list[dict]:
        """Prune this step's groups; all or nothing.

        Each successful group prune leaves its undo in a log. If anything raises, or the
        model no longer runs forward after the step, every group is undone (newest first)
        and the graph is rebuilt, so the model is exactly as before the step.
        """
        undo: list = []
        graph_at_start = self.DG
        history_at_start = len(graph_at_start.pruning_history)
        records: list[dict] = []
        graphs: list[DependencyGraph] = []
        try:
            for group in self._step_groups():
                graph = group.graph
                if graph not in graphs:
                    graphs.append(graph)
                    graph.undo_log, graph.check_every_prune = undo, check_each
                try:
                    records.append(group.prune())
                except PruningError as err:
                    self.skipped.append(str(err).splitlines()[0])
            problem = self.DG.dry_run() if records and not check_each else None
        except BaseException:
            self._undo(undo, graph_at_start, history_at_start)
            raise
        finally:
            for graph in graphs:
                graph.undo_log, graph.check_every_prune = None, False
        if problem is not None:
            self._undo(undo, graph_at_start, history_at_start)
            raise _BrokenStep(problem)
        return records

    def _undo(self, undo: list, graph_at_start: DependencyGraph, history_at_start: int) -> None:
        for snapshot in reversed(undo):
            snapshot.restore()
        if undo or self.DG is not graph_at_start:
            kept = graph_at_start.pruning_history[:history_at_start]
            self.DG = self._build("offsets")
            self.DG.pruning_history = kept

    def _interactive(self, gen: Iterator[Group]) -> Iterator[Group]:
        start = len(self.DG.pruning_history)
        yield from gen
        self._history.append(_merge(self.DG.pruning_history[start:]))

    def pruning_history(self) -> list[dict]:
        """Records of every step so far (primitive types; ``torch.save``-able)."""
        return [dict(r) for r in self._history]

    def load_pruning_history(self, history: list[dict]) -> None:
        """Replay ``history`` on this pruner's (unpruned) model and rebuild the graph."""
        from ..serialization import apply_history

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
        plans = self._plans(self.DG, ratio)
        for plan in plans:
            if plan.remove:
                yield self.DG.group_for_units(plan.group, plan.remove)

    def head_pruning_ratio_at_step(self) -> float:
        schedule = check_schedule(self.scheduler(self.head_pruning_ratio, self.iterative_steps),
                                  self.iterative_steps, self.head_pruning_ratio)
        return schedule[self.current_step]

    def _head_groups(self) -> Iterator[Group]:
        graph = self._build("blocks")
        self.DG = graph
        plans = []
        head_groups = [g for g in self._groups(graph) if g.is_head_group and len(g.units) >= 2 and (
            not self.num_heads or any(d.target.name in self.num_heads for d, _ in g))]
        with self.scoring_pass():
            scores = [unit_scores(g, self.estimate_importance(g)) for g in head_groups]
        for g, s in zip(head_groups, scores):
            name = self._root_name(g)
            target = self._ratio_for(g, self.head_pruning_ratio, self.head_pruning_ratio_dict)
            schedule = check_schedule(self.scheduler(target, self.iterative_steps), self.iterative_steps, target)
            plans.append(GroupPlan(g, name, None, schedule[self.current_step],
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
            schedule = check_schedule(self.scheduler(self.pruning_ratio, self.iterative_steps),
                                      self.iterative_steps, self.pruning_ratio)
            return schedule[step]
        base_macs, base_params = self._budget_base
        keep = self.target_macs if self.target_macs is not None else self.target_params
        removed = check_schedule(self.scheduler(1 - keep, self.iterative_steps), self.iterative_steps, 1 - keep)
        fraction = 1 - removed[step]
        metric = "macs" if self.target_macs is not None else "params"
        base = base_macs if metric == "macs" else base_params
        return solve_ratio_for_budget(self, metric, fraction * base)

    def scoring_pass(self) -> contextlib.AbstractContextManager:
        """Context for scoring every group of the unchanged model (see ``Importance.scoring_pass``)."""
        enter = getattr(self.importance, "scoring_pass", None)
        return enter() if callable(enter) else contextlib.nullcontext()

    def _plans(self, graph: DependencyGraph, default_ratio: float,
               scores: dict[str, torch.Tensor] | None = None) -> list[GroupPlan]:
        with self.scoring_pass():
            plans = self._score_plans(graph, default_ratio, scores)
        local = [p for p in plans if p.scope is None]
        joint = [p for p in plans if p.scope is not None]
        plan_local(local, self.max_pruning_ratio, self.round_to)
        plan_global(joint, self.max_pruning_ratio, self.round_to)
        return plans

    def _score_plans(self, graph: DependencyGraph, default_ratio: float,
                     scores: dict[str, torch.Tensor] | None) -> list[GroupPlan]:
        plans = []
        for g in self._groups(graph):
            if not self.prune_head_dims and g.is_head_group:
                continue
            name = self._root_name(g)
            target = self._ratio_for(g, default_ratio, self.pruning_ratio_dict)
            if self._budget_base is None and target != default_ratio:
                schedule = check_schedule(self.scheduler(target, self.iterative_steps), self.iterative_steps, target)
                target = schedule[self.current_step]
            if scores is not None:
                s = scores.get(name)
                if s is None or s.numel() != len(g.units):
                    s = torch.zeros(len(g.units))
            else:
                s = unit_scores(g, self.estimate_importance(g))
            plans.append(GroupPlan(g, name, self._scope(g), target, self._initial_units.get(name, len(g.units)), s))
        return plans

    def _ratio_for(self, group: Group, default: float, table: list) -> float:
        root = self._root_name(group)
        for members, _, ratio in table:
            if root in members:
                return ratio
        return default

    def _scope(self, group: Group) -> Any:
        root = self._root_name(group)
        for i, (members, key, _) in enumerate(self.pruning_ratio_dict):
            # A tuple key is always one jointly ranked scope; a single key becomes its own
            # scope under global pruning, so its ratio still holds.
            if root in members and (isinstance(key, tuple) or self.global_pruning):
                return ("scope", i)
        if self.isomorphic:
            sig = tuple(sorted((type(d.target.module).__name__, d.handler.__name__) for d, _ in group))
            return ("isomorphic", sig, len(group.units[0]))
        if self.global_pruning:
            return "global"
        return None


class _BrokenStep(Exception):
    """A step pruned groups that each passed their checks, and the model no longer runs."""


def _merge(records: list[dict]) -> dict:
    tensors = merge_records([r.get("tensors", {}) for r in records])
    attributes: dict[str, Any] = {}
    for r in records:
        attributes.update(r.get("attributes", {}))
    return {"tensors": tensors, "attributes": attributes}


def _resolve_importance(importance: Any) -> Any:
    from .. import importance as imp

    if importance is None:
        return imp.GroupMagnitudeImportance(p=2)
    return imp.get_importance(importance)


def _members(model: nn.Module, key: Any, arg: str) -> tuple[set[str], Any]:
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


def _resolve_ratio_dict(model: nn.Module, table: dict | None, arg: str) -> list[tuple[set[str], Any, float]]:
    out = []
    for key, ratio in (table or {}).items():
        members, key = _members(model, key, arg)
        out.append((members, key, _check_ratio(f"{arg}[{key!r}]", ratio)))
    return out


def _resolve_num_heads(model: nn.Module, num_heads: dict | None) -> dict[str, int]:
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
