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

from ..errors import PruningError, TraceError
from ..indices import long_tensor
from ..layers import get_layer_pruner
from ..trace.tied import couple_tied_spaces
from ..trace.tracer import Space, Tracer, output_shapes
from .apply import group_problem
from .group import Group
from .grouping import group_from, make_group
from .layout import layouts, sub_layout
from .lookup import blocked_components, is_out_channel_pruning_fn, module_name, space_for, validate_idxs
from .names import ModelIndex, normalize_unwrapped, resolve_ignored
from .snapshot import ModelSnapshot
from .tables import ElementTables

__all__ = ["DependencyGraph", "TraceError", "resolve_ignored"]

logger = logging.getLogger(__name__)


def _default_root_types() -> tuple[type, ...]:
    return (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention, nn.LSTM, nn.GRU, nn.RNN,
            nn.Embedding)


class DependencyGraph:
    """Finds groups of coupled channels in any model that runs forward.

    After :meth:`build_dependency`, :attr:`tables` holds the traced channel elements and
    their components (see :class:`~.tables.ElementTables`) and :attr:`names` the model's
    modules, tensors and layer pruners (see :class:`~.names.ModelIndex`).
    """

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.pruning_history: list[dict] = []
        #: When a list, each successful group prune appends what undoes it (newest last):
        #: a pruner uses it to make a whole step atomic.
        self.undo_log: list[ModelSnapshot] | None = None
        #: Re-run the model after every group prune and refuse the group if it broke
        #: (normally only groups touching size-sensitive ops are re-checked).
        self.check_every_prune = False
        self.tables: ElementTables | None = None
        self.names: ModelIndex | None = None
        self.customized_pruners: dict[type, Any] = {}
        self.split_mode = "offsets"
        #: Names of tensors shared by several layers (cut once, for all of them).
        self.tied_tensors: list[str] = []
        #: Shapes of the model's outputs at the build: a prune must keep them.
        self.output_shapes: list[tuple[int, ...]] = []
        #: ``"meta"`` or ``"real"``: where the trace (and every dry run) ran.
        self.trace_device = "meta"
        #: Ops without a rule (their channels were kept whole), with how often each ran.
        self.unknown_ops: dict[str, int] = {}
        #: Prunable layers that no trace reached.
        self.unreached_modules: list[str] = []
        self._example_inputs: Any = None  # for dry_run
        self._forward_fn: Callable[[nn.Module, Any], Any] | None = None

    @property
    def version(self) -> int:
        """Bumped whenever the graph's channels change (a build, a prune): groups made at one
        version are stale at the next."""
        return 0 if self.tables is None else self.tables.version

    @property
    def spaces(self) -> list[Space]:
        """Every traced run of prunable channels (``tables.spaces``)."""
        return [] if self.tables is None else self.tables.spaces

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
        unwrapped = normalize_unwrapped(model, unwrapped_parameters)
        self.split_mode = split_mode
        tracer = Tracer(model, self.customized_pruners, unwrapped, split_mode)
        try:
            result = tracer.run(example_inputs, forward_fn, output_transform, protect_outputs)
        finally:
            tracer.release()
        ignored = normalize_unwrapped(model, ignored_params) or {}
        for sp in result.spaces:
            if sp.role == "param" and id(sp.param) in ignored:
                result.table.freeze(sp.elems)
        self.tied_tensors = couple_tied_spaces(result.table, result.spaces, {sp.key: sp for sp in result.spaces})
        self._example_inputs = example_inputs
        self._forward_fn = forward_fn
        self.output_shapes = result.output_shapes
        self.trace_device = result.device
        self.unknown_ops = result.unknown_ops
        self.tables = ElementTables.from_trace(result, self.version + 1)
        self.names = ModelIndex(model, tracer.modules, tracer.module_names, tracer.tensor_names,
                                tracer.pruners)
        space_names = {sp.name for sp in result.spaces}

        def reached(name: str) -> bool:  # called itself or inside a called module
            parts = name.split(".")
            return any(".".join(parts[:k]) in result.called for k in range(1, len(parts) + 1))

        self.unreached_modules = [
            name for name, mod in tracer.modules.items()
            if id(mod) in tracer.pruners and name not in space_names and not reached(name)
            and any(True for _ in mod.parameters(recurse=False))
        ]

    def require_built(self) -> None:
        """Raise unless :meth:`build_dependency` has run."""
        if self.tables is None:
            raise RuntimeError("call build_dependency(model, example_inputs) before using the graph")

    # ------------------------------------------------------------------ queries
    def get_out_channels(self, module: nn.Module) -> int | None:
        pr = get_layer_pruner(module, self.customized_pruners)
        return None if pr is None else pr.get_out_channels(module)

    def get_in_channels(self, module: nn.Module) -> int | None:
        pr = get_layer_pruner(module, self.customized_pruners)
        return None if pr is None else pr.get_in_channels(module)

    @staticmethod
    def is_out_channel_pruning_fn(fn: Any) -> bool:
        return is_out_channel_pruning_fn(fn)

    def name_of(self, module: nn.Module) -> str:
        return module_name(self.names, module)

    def get_pruning_group(self, module: Any, pruning_fn: Any, idxs: Sequence[int]) -> Group:
        """All channels coupled to ``idxs`` of ``module`` (out or in, as ``pruning_fn`` says)."""
        self.require_built()
        tables = self.tables
        i = space_for(tables, self.names, module, pruning_fn)
        sp = tables.spaces[i]
        idxs = validate_idxs(idxs, sp.elems.numel(), sp.name)
        comps = torch.unique(tables.comp[sp.elems[torch.as_tensor(idxs, dtype=torch.long)]])
        if bool((comps == tables.frozen).any()):
            frozen = [k for k in idxs if int(tables.comp[sp.elems[k]]) == tables.frozen]
            raise PruningError(
                f"channels {frozen[:8]}{'...' if len(frozen) > 8 else ''} of {sp.name} cannot be pruned: "
                f"they reach a model output or an op whose size is fixed (see docs/engine.md, 'Limits'). "
                f"Pick other channels, or build the graph with protect_outputs=False if you do mean to "
                f"change an output width"
            )
        return group_from(self, tables, i, comps)

    def check_pruning_group(self, group: Group) -> bool:
        """``True`` when pruning ``group`` leaves at least one channel in every layer."""
        try:
            group = self.refresh_group(group)
        except PruningError:
            return False
        return group_problem(self.tables, group) is None

    def get_all_groups(
        self,
        ignored_layers: Iterable[Any] | None = None,
        root_module_types: Iterable[type] | None = None,
    ) -> Iterator[Group]:
        """Every prunable group, each rooted at the first layer of ``root_module_types``.

        Channels of ignored layers' outputs are left out of every group. Each group holds
        all currently prunable channels of its root.
        """
        self.require_built()
        tables = self.tables
        roots = tuple(root_module_types) if root_module_types is not None else _default_root_types()
        blocked = blocked_components(tables, self.names, ignored_layers)
        covered = torch.zeros_like(tables.alive)
        covered[tables.frozen] = True
        if blocked.numel():
            covered[blocked] = True
        requests: list[tuple[int, torch.Tensor]] = []
        space_index, spaces, comp = tables.space_index, tables.spaces, tables.comp
        for name, mod in self.names.modules.items():
            if not isinstance(mod, roots):
                continue
            key = ("module", name, "out")
            if key not in space_index:
                continue
            i = space_index[key]
            comps = comp[spaces[i].elems]
            free = ~covered[comps]
            if not bool(free.any()):
                continue
            chosen = torch.unique(comps[free])
            covered[chosen] = True
            requests.append((i, chosen))
        found = layouts(tables, [comps for _, comps in requests])
        # made now, at the version the layouts describe: a caller may prune between yields
        groups = [make_group(self, tables, i, chosen, layout) for (i, chosen), layout in zip(requests, found)]
        yield from groups

    def refresh_group(self, group: Group) -> Group:
        """``group``, its positions re-derived (in place) if a prune happened since it was made.

        A group stores positions; pruning another group that shares a layer (the consumer
        of a concat, say) shifts them. Components do not shift, so the group is rebuilt
        from its components: a group held across prunes still removes the same channels.
        """
        tables = self.tables
        if group.version == tables.version or group.components is None:
            return group
        if tables.unchanged_since(group.version, list(group.targets)):
            group.version = tables.version  # the prunes since then did not touch it
            return group
        fresh = group_from(self, tables, group.root_space, group.components)
        if not fresh.targets:
            raise PruningError(f"the channels of the group rooted at {group.root_name} were already pruned")
        group.adopt(fresh)
        return group

    def group_for_units(self, group: Group, units: Sequence[int]) -> Group:
        """The sub-group of ``group`` that removes the given units (indices into ``group.units``).

        Units are tracked by component, so this stays right even after other groups were
        pruned since ``group`` was made and its root positions shifted.
        """
        tables = self.tables
        comps = long_tensor([group.unit_components[u] for u in units])
        parent = group.layout
        if group.components is not None and tables.unchanged_since(group.version, parent.space_ids):
            return make_group(self, tables, group.root_space, comps, sub_layout(tables, parent, comps))
        return group_from(self, tables, group.root_space, comps)

    # ------------------------------------------------------------------ checks
    def dry_run(self) -> str | None:
        """Run the model forward once (on meta tensors when possible); what broke, if anything.

        ``None`` when the model runs and every output keeps the shape it had when the graph
        was built; otherwise a message naming the failing module and op. Uses the tracer's
        shape-only fast paths.
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
        module_names = self.names.module_names
        found = ""
        tb = err.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in module_names:
                name = module_names[id(owner)] or "(the model)"
                found = f"in {name} ({type(owner).__name__}): "
            tb = tb.tb_next
        return found
