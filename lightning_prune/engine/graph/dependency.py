"""The dependency graph: which channels of which layers must be pruned together.

Usage follows Torch-Pruning::

    DG = DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 224, 224))
    group = DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[2, 6, 9])
    if DG.check_pruning_group(group):
        group.prune()

How it works: one trace (see :mod:`.trace`) turns every op into unions between channel
*elements*; connected components of the unions are the units that must go together. A
component that touches a model output, a model input or an op of fixed size is frozen.
After a prune, the graph drops the removed elements, so it stays valid for further prunes
of the same model without re-tracing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .. import layers
from ..errors import PruningError, TraceError
from ..indices import SortedIdxs
from ..layers import get_layer_pruner
from ..layers.session import slice_session
from ..history.records import recording, tensor_names
from ..trace.tied import couple_tied_spaces
from ..trace.tracer import Space, Tracer, output_shapes
from .group import Group
from .layout import GroupLayouts
from .snapshot import HEAD_COUNT_ATTRIBUTES, HEAD_DIM_ATTRIBUTES, ModelSnapshot, sync_ancestor_widths

__all__ = ["DependencyGraph", "TraceError"]

logger = logging.getLogger(__name__)


def _default_root_types() -> tuple[type, ...]:
    return (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention, nn.LSTM, nn.GRU, nn.RNN,
            nn.Embedding)


class DependencyGraph(GroupLayouts):
    """Finds groups of coupled channels in any model that runs forward."""

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.pruning_history: list[dict] = []
        #: When a list, each successful group prune appends what undoes it (newest last):
        #: a pruner uses it to make a whole step atomic.
        self.undo_log: list[ModelSnapshot] | None = None
        #: Re-run the model after every group prune and refuse the group if it broke
        #: (normally only groups touching size-sensitive ops are re-checked).
        self.check_every_prune = False
        #: Bumped whenever the graph's channels change (a build, a prune): groups made
        #: at one version are stale at the next.
        self.version = 0

    # ------------------------------------------------------------------ build
    def build_dependency(
        self,
        model: nn.Module,
        example_inputs: Any,
        forward_fn: Callable[[nn.Module, Any], Any] | None = None,
        output_transform: Callable[[Any], Any] | None = None,
        unwrapped_parameters: Any = None,
        customized_pruners: dict[type, Any] | None = None,
        verbose: bool = True,
        protect_outputs: bool = True,
        ignored_params: Any = None,
        split_mode: str = "offsets",
    ) -> DependencyGraph:
        """Trace ``model`` once on ``example_inputs`` and compute its channel groups.

        Args:
            model: any ``nn.Module`` that runs forward on ``example_inputs``.
            example_inputs: a tensor, a tuple of positional args, or a dict of kwargs.
            forward_fn: ``forward_fn(model, example_inputs)`` for models called unusually.
            output_transform: maps the model output to the tensors whose dims are protected.
            unwrapped_parameters: parameters that belong to no prunable layer (class token,
                position embedding, layer scale). Found automatically; pass a list of
                parameters, ``(param, dim)`` pairs or a ``{param: dim}`` dict to choose
                which dim of which parameter may be pruned (others are then kept whole).
            customized_pruners: ``{LayerClass: pruner}`` for custom layers.
            protect_outputs: keep every dim that reaches a model output (default). Pass
                ``False`` only if you really want output widths to change.
            split_mode: how a channel dim split into blocks (attention heads, chunks) is
                coupled: ``"offsets"`` removes the same offsets from every head (head dims),
                ``"blocks"`` removes whole heads.
        """
        if split_mode not in ("offsets", "blocks"):
            raise ValueError(f"split_mode must be 'offsets' or 'blocks', got {split_mode!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"build_dependency: `model` must be an nn.Module, got {type(model).__name__}")
        # The graph's tables are updated in place by every later prune; made inside an
        # inference_mode block they would be inference tensors that cannot be.
        with torch.inference_mode(False):
            self._build(model, example_inputs, forward_fn, output_transform, unwrapped_parameters,
                        customized_pruners, protect_outputs, ignored_params, split_mode)
        if verbose and self.unknown_ops:
            logger.info("channels touched by ops without a rule were kept whole: %s", self.unknown_ops)
        return self

    def _build(self, model, example_inputs, forward_fn, output_transform, unwrapped_parameters,
               customized_pruners, protect_outputs, ignored_params, split_mode) -> None:
        self.model = model
        self.customized_pruners = dict(customized_pruners or {})
        unwrapped = _normalize_unwrapped(model, unwrapped_parameters)
        self.split_mode = split_mode
        tracer = Tracer(model, self.customized_pruners, unwrapped, split_mode)
        try:
            result = tracer.run(example_inputs, forward_fn, output_transform, protect_outputs)
        finally:
            tracer.release()
        ignored = _normalize_unwrapped(model, ignored_params) or {}
        for sp in result.spaces:
            if sp.role == "param" and id(sp.param) in ignored:
                result.table.freeze(sp.elems)
        self.tied_tensors = couple_tied_spaces(result.table, result.spaces, {sp.key: sp for sp in result.spaces})
        self._example_inputs = example_inputs
        self._forward_fn = forward_fn
        self.output_shapes = result.output_shapes
        self.trace_device = result.device
        self.unknown_ops = result.unknown_ops
        self._pruners = tracer.pruners
        self._modules = tracer.modules
        self._module_names = tracer.module_names
        self._edges = result.edges
        self._adjacency: dict[str, set[str]] = {}
        for a, b in result.edges:
            self._adjacency.setdefault(a, set()).add(b)
            self._adjacency.setdefault(b, set()).add(a)
        self.spaces: list[Space] = result.spaces
        self._space_index = {sp.key: i for i, sp in enumerate(self.spaces)}
        self._comp = result.table.components()
        self._frozen = int(self._comp[0])
        self._by_comp: tuple[torch.Tensor, torch.Tensor] | None = None  # see _component_index
        n = result.table.size
        sens = result.table.sensitive_mask()
        self._comp_sensitive = torch.zeros(n, dtype=torch.bool)
        self._comp_sensitive[self._comp[sens]] = True
        for sp in result.spaces:  # a user's layer pruner is checked by running the model after it
            if sp.module is not None and sp.pruner is not None and not _is_builtin(sp.pruner):
                self._comp_sensitive[self._comp[sp.elems]] = True
        self._comp_heads = torch.zeros(n, dtype=torch.bool)
        self._comp_heads[self._comp[result.table.heads_mask()]] = True
        self._alive = torch.ones(n, dtype=torch.bool)
        self.version += 1
        self._space_version = [self.version] * len(self.spaces)  # version of each space's last change
        self._unit_table: torch.Tensor | None = None  # scratch for _unit_of (all -1), made on first use
        self._elem_space = torch.full((n,), -1, dtype=torch.long)
        self._elem_pos = torch.full((n,), -1, dtype=torch.long)
        self._elems_in_order = False  # set by _index_all_spaces
        self._index_all_spaces()
        self._tensor_names = tensor_names(model, tracer.modules)
        space_names = {sp.name for sp in self.spaces}

        def reached(name: str) -> bool:  # called itself or inside a called module
            parts = name.split(".")
            return any(".".join(parts[:k]) in result.called for k in range(1, len(parts) + 1))

        self.unreached_modules = [
            name for name, mod in self._modules.items()
            if id(mod) in self._pruners and name not in space_names and not reached(name)
            and any(True for _ in mod.parameters(recurse=False))
        ]

    def _index_all_spaces(self) -> None:
        """Record each element's space and position in it, for every space in one vectorized pass."""
        if not self.spaces:
            return
        sizes = torch.as_tensor([sp.elems.numel() for sp in self.spaces], dtype=torch.long)
        elems = torch.cat([sp.elems.reshape(-1) for sp in self.spaces])
        starts = torch.cumsum(sizes, 0) - sizes
        # index_copy_, not t[elems] = ...: half the time of advanced-index assignment
        self._elem_space.index_copy_(0, elems, torch.repeat_interleave(torch.arange(len(self.spaces)), sizes))
        self._elem_pos.index_copy_(0, elems, torch.arange(elems.numel()) - torch.repeat_interleave(starts, sizes))
        # ``elems`` lists every placed element in (space, position) order. The tracer numbers
        # elements space by space, so their ids usually increase along it; layouts then need
        # no sort by position. Pruning keeps that (survivors keep their ids and are
        # renumbered in order), so it holds for the graph's life.
        self._elems_in_order = bool((elems[1:] > elems[:-1]).all())

    def _require_built(self) -> None:
        if self.model is None:
            raise RuntimeError("call build_dependency(model, example_inputs) before using the graph")

    # ------------------------------------------------------------------ queries
    def get_out_channels(self, module: nn.Module) -> int | None:
        pr = get_layer_pruner(module, getattr(self, "customized_pruners", None))
        return None if pr is None else pr.get_out_channels(module)

    def get_in_channels(self, module: nn.Module) -> int | None:
        pr = get_layer_pruner(module, getattr(self, "customized_pruners", None))
        return None if pr is None else pr.get_in_channels(module)

    @staticmethod
    def is_out_channel_pruning_fn(fn: Any) -> bool:
        name = getattr(fn, "__name__", "")
        return "in_channels" not in name

    def name_of(self, module: nn.Module) -> str:
        name = self._module_names.get(id(module))
        if name is None:
            raise PruningError(
                f"{type(module).__name__} is not a submodule of the model this graph was built for; "
                f"pass a module from the same model instance"
            )
        return name

    def _space_for(self, target: Any, pruning_fn: Any) -> int:
        if isinstance(target, torch.Tensor) and not isinstance(target, nn.Module):
            name = self._tensor_names.get(id(target))
            dims = [i for i, sp in enumerate(self.spaces) if sp.role == "param" and sp.name == name]
            if not dims:
                raise PruningError(f"parameter {name or '(unknown)'} has no prunable dim in this graph")
            want = getattr(pruning_fn, "dim", None)
            for i in dims:
                if want is None or self.spaces[i].dim == want:
                    return i
            return dims[0]
        name = self.name_of(target)
        self._check_pruning_fn(target, name, pruning_fn)
        role = "out" if self.is_out_channel_pruning_fn(pruning_fn) else "in"
        for key in (("module", name, role), ("module", name, "out")):
            if key in self._space_index:
                return self._space_index[key]
        raise PruningError(
            f"{name} ({type(target).__name__}) has no traced {role} channels: it was not reached "
            f"by the forward pass or it has no layer pruner. Check example_inputs, or register a "
            f"pruner with customized_pruners={{{type(target).__name__}: pruner}}"
        )

    def _check_pruning_fn(self, module: nn.Module, name: str, pruning_fn: Any) -> None:
        """Refuse a ``pruning_fn`` written for another layer type (``prune_linear_*`` on a conv).

        The function only picks ``out`` or ``in`` channels here; the layer's own pruner does
        the work. A function of another family is almost always a copy-paste slip, and
        silently using the layer's pruner would hide it.
        """
        owner = getattr(pruning_fn, "__self__", None)
        registered = self._pruners.get(id(module))
        if owner is None or registered is None or owner is registered:
            return
        if isinstance(registered, type(owner)) or isinstance(owner, type(registered)):
            return
        targets = getattr(owner, "TARGET_TYPES", ())
        if targets and isinstance(module, targets):
            return
        fn_name = getattr(pruning_fn, "__name__", repr(pruning_fn))
        raise PruningError(
            f"get_pruning_group: pruning_fn {type(owner).__name__}.{fn_name} does not prune {name} "
            f"({type(module).__name__}), whose pruner is {type(registered).__name__}. Pass "
            f"{type(registered).__name__}'s prune_out_channels / prune_in_channels (for built-in layers, "
            f"the tp.prune_<layer>_out_channels function of its type)"
        )

    def get_pruning_group(self, module: Any, pruning_fn: Any, idxs: Sequence[int]) -> Group:
        """All channels coupled to ``idxs`` of ``module`` (out or in, as ``pruning_fn`` says)."""
        self._require_built()
        i = self._space_for(module, pruning_fn)
        sp = self.spaces[i]
        size = sp.elems.numel()
        idxs = _validate_idxs(idxs, size, sp.name)
        comps = torch.unique(self._comp[sp.elems[torch.as_tensor(idxs, dtype=torch.long)]])
        if bool((comps == self._frozen).any()):
            frozen = [k for k in idxs if int(self._comp[sp.elems[k]]) == self._frozen]
            raise PruningError(
                f"channels {frozen[:8]}{'...' if len(frozen) > 8 else ''} of {sp.name} cannot be pruned: "
                f"they reach a model output or an op whose size is fixed (see docs/engine.md, 'Limits'). "
                f"Pick other channels, or build the graph with protect_outputs=False if you do mean to "
                f"change an output width"
            )
        return self._group_from(i, comps)

    def check_pruning_group(self, group: Group) -> bool:
        """``True`` when pruning ``group`` leaves at least one channel in every layer."""
        try:
            group = self._current(group)
        except PruningError:
            return False
        return self._problem(group) is None

    def _problem(self, group: Group) -> str | None:
        for s, pos in group._targets:
            sp = self.spaces[s]
            if len(pos) >= sp.elems.numel():
                return f"pruning would remove all {sp.elems.numel()} channels of {sp.name}"
            live = self._live_size(sp)
            if live is not None and live != sp.elems.numel():
                return (f"{sp.name} has {live} channels but the graph expects {sp.elems.numel()}: the model "
                        f"was changed outside this graph; rebuild it with build_dependency")
        return None

    def _live_size(self, sp: Space) -> int | None:
        if sp.role == "param":
            return sp.param.shape[sp.dim]
        try:
            if sp.role == "in":
                return sp.pruner.get_in_channels(sp.module)
            return sp.pruner.get_out_channels(sp.module)
        except NotImplementedError:
            return None

    def get_all_groups(
        self,
        ignored_layers: Iterable[Any] | None = None,
        root_module_types: Iterable[type] | None = None,
    ) -> Iterator[Group]:
        """Every prunable group, each rooted at the first layer of ``root_module_types``.

        Channels of ignored layers' outputs are left out of every group. Each group holds
        all currently prunable channels of its root.
        """
        self._require_built()
        roots = tuple(root_module_types) if root_module_types is not None else _default_root_types()
        blocked = self._blocked_components(ignored_layers)
        covered = torch.zeros_like(self._alive)
        covered[self._frozen] = True
        if blocked.numel():
            covered[blocked] = True
        requests: list[tuple[int, torch.Tensor]] = []
        for name, mod in self._modules.items():
            if not isinstance(mod, roots):
                continue
            key = ("module", name, "out")
            if key not in self._space_index:
                continue
            i = self._space_index[key]
            comps = self._comp[self.spaces[i].elems]
            free = ~covered[comps]
            if not bool(free.any()):
                continue
            chosen = torch.unique(comps[free])
            covered[chosen] = True
            requests.append((i, chosen))
        layouts = self._layouts([comps for _, comps in requests])
        # made now, at the version the layouts describe: a caller may prune between yields
        groups = [self._make_group(i, chosen, layout) for (i, chosen), layout in zip(requests, layouts)]
        yield from groups

    def _blocked_components(self, ignored_layers: Iterable[Any] | None) -> torch.Tensor:
        comps = []
        for mod in resolve_ignored(self.model, ignored_layers):
            if isinstance(mod, nn.Module):
                name = self._module_names.get(id(mod))
                key = ("module", name, "out")
                if key in self._space_index:
                    comps.append(self._comp[self.spaces[self._space_index[key]].elems])
            else:
                name = self._tensor_names.get(id(mod))
                for sp in self.spaces:
                    if sp.role == "param" and sp.name == name:
                        comps.append(self._comp[sp.elems])
        return torch.unique(torch.cat(comps)) if comps else torch.zeros(0, dtype=torch.long)

    # ------------------------------------------------------------------ prune
    def _checked_snapshot(self, group: Group) -> ModelSnapshot:
        """Refuse a group that cannot be pruned; otherwise what is needed to undo its prune."""
        problem = self._problem(group)
        if problem is not None:
            raise PruningError(f"cannot prune group rooted at {group.root_name}: {problem}")
        modules = [self.spaces[s].module for s, _ in group._targets if self.spaces[s].module is not None]
        tensors = [self.spaces[s].param for s, _ in group._targets if self.spaces[s].param is not None]
        return ModelSnapshot(self.model, self._modules, modules, tensors, self._module_names)

    def _apply(self, group: Group) -> dict:
        self._require_built()
        if group.applied:
            raise PruningError(
                f"the group rooted at {group.root_name} was already pruned; pruning it again would remove "
                f"other channels. Get a fresh group from get_pruning_group or get_all_groups"
            )
        # Inside a user's inference_mode block, sliced parameters would become inference
        # tensors that can never train again.
        with torch.inference_mode(False):
            return self._apply_now(self._current(group))

    def _apply_now(self, group: Group) -> dict:
        snapshot = self._checked_snapshot(group)
        old_sizes = {s: self.spaces[s].elems.numel() for s, _ in group._targets}
        space_idxs = self._space_idxs(group)
        calls = self._calls(group, space_idxs)
        try:
            with recording(self._tensor_names) as rec, slice_session() as session:
                for k, (fn, target, idxs) in enumerate(calls):
                    session.call = k
                    fn(target, idxs)
                for s, pos in group._targets:
                    sp = self.spaces[s]
                    if sp.module is not None:
                        sync_ancestor_widths(self._modules, self._pruners, sp.name,
                                             old_sizes[s], old_sizes[s] - len(pos), journal=snapshot.note)
                self._sync_block_counts(group, snapshot.note)
            if group.sensitive or self.check_every_prune:
                err = self.dry_run()
                if err is not None:
                    raise PruningError(f"the pruned model no longer runs forward: {err}")
        except PruningError as err:  # a refusal: the group cannot be pruned as asked
            snapshot.restore()
            raise PruningError(f"cannot prune group rooted at {group.root_name}: {err}. The model is unchanged.") \
                from err
        except BaseException as err:  # a bug in a layer pruner: undo, then fail loudly with the original error
            snapshot.restore()
            if hasattr(err, "add_note"):
                err.add_note(f"(raised while pruning the group rooted at {group.root_name}; the model was restored. "
                             f"A layer pruner that cannot prune should raise lightning_prune.engine.PruningError)")
            raise
        self._drop_elements(space_idxs)
        if self.undo_log is not None:
            self.undo_log.append(snapshot)
        record = {"tensors": rec.record, "attributes": snapshot.attribute_changes()}
        group._comps = None  # done: it now describes what was removed, and is never re-derived
        group.applied = True
        self.pruning_history.append(record)
        self.version += 1
        for s, _ in group._targets:
            self._space_version[s] = self.version
        return record

    def _drop_elements(self, removed_by_space: dict[int, SortedIdxs]) -> None:
        """Forget the removed channels of each space.

        The removed elements die, each space keeps the rest in order, and the survivors'
        positions are renumbered (their space is unchanged). ``removed_by_space`` comes from
        :meth:`_space_idxs`: the objects the layer pruners got, which bring the kept
        positions they already worked out. ``index_select`` / ``index_fill_`` /
        ``index_copy_`` rather than ``t[idx]`` and boolean masks: 1-D advanced indexing is
        several times slower on CPU. Concatenating all the group's spaces into one pass was
        slower still: the work is in the elements, not in the per-space calls.
        """
        for s, removed in removed_by_space.items():
            sp = self.spaces[s]
            elems = sp.elems
            self._alive.index_fill_(0, elems.index_select(0, removed.tensor()), False)
            elems = elems.index_select(0, removed.kept(elems.numel()).tensor(elems.device))
            sp.elems = elems
            self._elem_pos.index_copy_(0, elems, torch.arange(elems.numel()))

    def _sync_block_counts(self, group: Group, journal: Any = None) -> None:
        """Keep ``num_heads`` / ``head_dim``-style attributes of attention modules in sync.

        When units span several channels (same offset in every head, or whole heads), the
        number of units *is* the head dim (offsets mode) or the head count (blocks mode).
        """
        if not group.units or len(group.units[0]) < 2:
            return
        total = self._unit_total(group)
        removed = set(group[0].idxs)
        gone = sum(1 for u in group.units if u[0] in removed)
        names = HEAD_COUNT_ATTRIBUTES if self.split_mode == "blocks" else HEAD_DIM_ATTRIBUTES
        for s, _ in group._targets:
            sp = self.spaces[s]
            if sp.module is not None:
                sync_ancestor_widths(self._modules, self._pruners, sp.name, total, total - gone, names, journal)

    def _unit_total(self, group: Group) -> int:
        """Units in the whole root layer (prunable or not): the head count or head dim."""
        comps = torch.unique(self._comp[self.spaces[group._root].elems])
        return int((comps != self._frozen).sum())

    def _soft_apply(self, group: Group) -> dict:
        """Record what :meth:`_apply` would remove, undo it, and zero those slices instead."""
        if group.applied:
            raise PruningError(f"the group rooted at {group.root_name} was already pruned; get a fresh group")
        with torch.inference_mode(False):
            return self._soft_apply_now(self._current(group))

    def _soft_apply_now(self, group: Group) -> dict:
        snapshot = self._checked_snapshot(group)
        try:
            with recording(self._tensor_names) as rec, slice_session() as session:
                for k, (fn, target, idxs) in enumerate(self._calls(group, self._space_idxs(group))):
                    session.call = k
                    fn(target, idxs)
        finally:
            snapshot.restore()
        by_name = dict(self.model.named_parameters())  # statistics buffers are left alone
        zeroed: dict[str, list] = {}
        with torch.no_grad():
            for name, slices in rec.record.items():
                t = by_name.get(name)
                if t is None or name.endswith("num_batches_tracked"):
                    continue
                kept_dims: dict[int, list[int]] = {}
                for dim, keep in slices:
                    prev = kept_dims.get(dim, list(range(t.shape[dim])))
                    kept_dims[dim] = [prev[i] for i in keep]
                for dim, keep in kept_dims.items():
                    removed = sorted(set(range(t.shape[dim])) - set(keep))
                    if removed:
                        t.index_fill_(dim, torch.as_tensor(removed, dtype=torch.long, device=t.device), 0)
                        zeroed.setdefault(name, []).append((dim, removed))
        return {"tensors": zeroed, "attributes": {}}

    def _space_idxs(self, group: Group) -> dict[int, SortedIdxs]:
        """A :class:`SortedIdxs` of each target space's positions, one object per distinct list.

        Target positions are sorted and unique (layouts list them in order), and the layers
        of one group usually lose the same positions: sharing the object lets the layer
        pruners and :meth:`_drop_elements` work out the kept positions once.
        """
        shared: dict[tuple[int, ...], SortedIdxs] = {}
        out = {}
        for s, pos in group._targets:
            key = tuple(pos)
            idxs = shared.get(key)
            if idxs is None:
                idxs = shared[key] = SortedIdxs(pos)
            out[s] = idxs
        return out

    def _calls(self, group: Group, idxs: dict[int, SortedIdxs]) -> list[tuple[Any, Any, list[int]]]:
        """``(handler, target, idxs)`` for every layer the group prunes, in order.

        Built-in pruners get the shared :class:`SortedIdxs` of :meth:`_space_idxs`; custom
        pruners get a plain list of their own.
        """
        calls = []
        targets = dict(group._targets)
        for s, pos in group._targets:
            sp = self.spaces[s]
            if sp.role == "in":
                out_key = ("module", sp.name, "out")
                if out_key in self._space_index and self._space_index[out_key] in targets and _prunes_both(sp.module):
                    continue  # e.g. depthwise conv: pruning outputs already removed these inputs
            shared = sp.role == "param" or _is_builtin(sp.pruner)
            calls.append((self._handler(s), sp.param if sp.role == "param" else sp.module,
                          idxs[s] if shared else list(pos)))
        return calls

    def dry_run(self) -> str | None:
        """Run the model forward once (on meta tensors when possible); what broke, if anything.

        ``None`` when the model runs and every output keeps the shape it had when the graph
        was built; otherwise a message naming the failing module and op. Uses the tracer's
        shape-only fast paths, so on the meta device it costs about a tenth of a build.
        """
        device = "meta" if self.trace_device == "meta" else "real"
        tracer = Tracer(self.model, self.customized_pruners, None, self.split_mode)
        try:
            out = tracer.dry_run(self._example_inputs, self._forward_fn, device)
        except Exception as err:  # noqa: BLE001 - reported to the caller
            where = self._failing_module(err)
            return f"{where}{type(err).__name__}: {err}"
        shapes = output_shapes(out)
        if shapes != self.output_shapes:
            return f"the output shapes changed from {self.output_shapes} to {shapes}"
        return None

    def _failing_module(self, err: BaseException) -> str:
        """``"in <name> (<Type>): "`` for the innermost module of the model whose code raised."""
        found = ""
        tb = err.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in self._module_names:
                name = self._module_names[id(owner)] or "(the model)"
                found = f"in {name} ({type(owner).__name__}): "
            tb = tb.tb_next
        return found


def _is_builtin(pruner: Any) -> bool:
    """A pruner of this package (they never mutate their ``idxs``), not a user's."""
    return type(pruner).__module__.startswith(_PRUNING_PACKAGE)


_PRUNING_PACKAGE = layers.__name__ + "."  # lightning_prune.engine.layers.


def _prunes_both(module: nn.Module) -> bool:
    return (isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
            and module.groups == module.in_channels)


def _validate_idxs(idxs: Sequence[int], size: int, name: str) -> list[int]:
    if isinstance(idxs, torch.Tensor):
        idxs = idxs.flatten().tolist()
    out = []
    for i in idxs:
        if isinstance(i, bool) or not isinstance(i, int):
            try:
                i = int(i)
            except (TypeError, ValueError):
                raise PruningError(f"{name}: idxs must be integers, got {i!r}") from None
        if i < 0 or i >= size:
            raise PruningError(f"{name}: index {i} is out of range for {size} channels; pass indices in [0, {size})")
        out.append(i)
    return sorted(set(out))


def resolve_ignored(model: nn.Module, items: Iterable[Any] | None) -> list[Any]:
    """Modules (with their submodules) and parameters named by ``ignored_layers``.

    Accepts modules, parameters and dotted module names. Anything else is an error, so a
    typo never silently prunes a layer the user meant to keep.
    """
    if items is None:
        return []
    if isinstance(items, nn.Module | str | torch.Tensor):
        items = [items]
    named = dict(model.named_modules())
    params = {id(p) for p in model.parameters()}
    owned = {id(m) for m in named.values()}
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            if item not in named:
                close = [n for n in named if n.endswith(item) or item in n][:3]
                hint = f" Did you mean {close}?" if close else ""
                raise ValueError(f"ignored_layers: no module named {item!r} in the model.{hint}")
            out.extend(named[item].modules())
        elif isinstance(item, nn.Module):
            if id(item) not in owned:
                raise ValueError(f"ignored_layers: {type(item).__name__} is not a submodule of the model")
            out.extend(item.modules())
        elif isinstance(item, torch.Tensor):
            if id(item) not in params:
                raise ValueError("ignored_layers: a tensor that is not a parameter of the model was given")
            out.append(item)
        elif isinstance(item, type):
            raise TypeError(
                f"ignored_layers: got the class {item.__name__}; pass module instances or names, e.g. "
                f"[m for m in model.modules() if isinstance(m, {item.__name__})]"
            )
        else:
            raise TypeError(f"ignored_layers: expected modules, parameters or dotted names, got {type(item).__name__}")
    return out


def _normalize_unwrapped(model: nn.Module, spec: Any) -> dict[int, int | None] | None:
    if spec is None:
        return None
    params = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
    pairs: list[tuple[Any, int | None]] = []
    if isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        for item in spec:
            if isinstance(item, tuple | list) and len(item) == 2:
                pairs.append((item[0], item[1]))
            else:
                pairs.append((item, None))
    out: dict[int, int | None] = {}
    for p, dim in pairs:
        if not isinstance(p, torch.Tensor) or id(p) not in params:
            raise ValueError("unwrapped_parameters: every entry must be a parameter of the model "
                             "(optionally with a dim: (param, dim) or {param: dim})")
        if dim is not None and not isinstance(dim, int):
            raise TypeError(f"unwrapped_parameters: dim must be an int, got {type(dim).__name__}")
        out[id(p)] = dim
    return out
