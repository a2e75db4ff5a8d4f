"""Trace a model once and turn every op into label unions.

The model runs with its parameters and buffers swapped for stand-ins by
:mod:`lightning_prune.engine.harness`: meta tensors first (no arithmetic, no memory), and
real no-grad clones only if the model needs real values (data-dependent control flow such
as detection post-processing). The user's parameters, buffers, train/eval mode and plain
attributes are left exactly as they were.

Layers that have a layer pruner (Conv, Linear, norms, attention, custom layers...) are
recorded as units through forward hooks; everything else is recorded op by op through a
:class:`~torch.overrides.TorchFunctionMode`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import TraceError
from ..harness import run_forward, stand_in_forward, stand_in_inputs
from ..layers import get_layer_pruner
from ..tree import describe_tensors, is_tensor, tensor_leaves
from . import layer_rules
from .fast_meta import (
    InputDtypeError,
    dtype_checked_forward,
    fast_forward,
    is_builtin_forward,
    is_elementwise_module,
)
from .fast_ops import fast_elementwise, meta_like
from .labels import ElementTable, Label
from .ops import apply_rule, op_name
from .ops_math import rule_elementwise
from .result import Space, TraceResult, named_modules_with_duplicates, output_shapes
from .state import TraceState

_OWN_FORWARD_UNITS = (nn.MultiheadAttention, nn.LSTM, nn.GRU, nn.RNN)


class _Recorder(TorchFunctionMode):
    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = op_name(func)
        out = fast_elementwise(name, args, kwargs) if self.tracer.device == "meta" else NotImplemented
        if out is NotImplemented:
            out = func(*args, **kwargs)
        if self.tracer.depth == 0 and self.tracer.recording:
            if out is None and name != "__setitem__":
                return out
            if is_tensor(out) or isinstance(out, tuple | list | int) or out is None:  # int: x.size(1)
                apply_rule(self.tracer.state, name, args, kwargs, out)
        return out


class Tracer:
    def __init__(
        self,
        model: nn.Module,
        customized_pruners: dict | None = None,
        unwrapped_parameters: dict[int, int | None] | None = None,
        split_mode: str = "offsets",
    ) -> None:
        self.model = model
        self.customized = customized_pruners or {}
        self.unwrapped = unwrapped_parameters  # id(param) -> dim (None: every dim)
        self.split_mode = split_mode
        self.table = ElementTable()
        self.state = TraceState(self.table)
        self.state.source_labels = self._source_labels
        self.state.split_mode = split_mode
        self.spaces: list[Space] = []
        self._space_of: dict[tuple, Space] = {}
        self.depth = 0
        self.edges: set[tuple[str, str]] = set()
        self.called: set[str] = set()
        self.modules = named_modules_with_duplicates(model)
        self.module_names = {id(m): n for n, m in reversed(list(self.modules.items()))}
        self.pruners = {}
        #: Layers traced as one unit: a builtin layer running torch's own forward, or a layer
        #: with a user pruner. Subclasses that override forward (torchvision's LayerNorm2d
        #: permutes around F.layer_norm) are traced op by op instead.
        self.units: set[int] = set()
        # Pruner and unit-ness depend on the class alone: look them up once per class
        # (a model has hundreds of modules and a handful of classes).
        by_class: dict[type, tuple[Any, bool]] = {}
        for mod in self.modules.values():
            cls = type(mod)
            hit = by_class.get(cls)
            if hit is None:
                pr = get_layer_pruner(mod, self.customized)
                custom = any(issubclass(cls, c) for c in self.customized)
                unit = pr is not None and (custom or is_builtin_forward(mod) or isinstance(mod, _OWN_FORWARD_UNITS))
                hit = by_class[cls] = (pr, unit)
            if hit[0] is not None:
                self.pruners[id(mod)] = hit[0]
                if hit[1]:
                    self.units.add(id(mod))
        self._stand_in: dict[int, tuple[str, torch.Tensor]] = {}
        #: ``id(parameter or buffer) -> qualified name``, as the last run's stand-ins named them.
        self.tensor_names: dict[int, str] = {}

    # ------------------------------------------------------------------ spaces
    def space(self, module: nn.Module, role: str, size: int) -> Label:
        key = ("module", self.module_names[id(module)], role)
        sp = self._space_of.get(key)
        if sp is None:
            sp = Space(key, self.table.alloc(size), module, key[1], role, self.pruners.get(id(module)))
            self._space_of[key] = sp
            self.spaces.append(sp)
        return sp.elems

    def param_space(self, name: str, param: torch.Tensor, dim: int) -> Label:
        key = ("param", name, dim)
        sp = self._space_of.get(key)
        if sp is None:
            sp = Space(key, self.table.alloc(param.shape[dim]), None, name, "param", None, param, dim)
            self._space_of[key] = sp
            self.spaces.append(sp)
        return sp.elems

    # ------------------------------------------------------------------ sources
    def _source_labels(self, t: torch.Tensor):
        entry = self._stand_in.get(id(t))
        if entry is None:
            return None
        name, original = entry
        owner_name, _, attr = name.rpartition(".")
        owner = self.modules.get(owner_name)
        pruner = self.pruners.get(id(owner)) if owner is not None else None
        if pruner is not None:
            labels = layer_rules.param_labels(self, owner, pruner, attr, t)
            return labels, frozenset({owner_name})
        if not t.dtype.is_floating_point:
            return None
        dims = range(t.dim())
        if self.unwrapped is not None and id(original) in self.unwrapped:
            chosen = self.unwrapped[id(original)]
            dims = range(t.dim()) if chosen is None else [chosen % t.dim()]
        elif self.unwrapped is not None:  # given explicitly: the others are kept whole
            return None
        labels = [None] * t.dim()
        for d in dims:
            if t.shape[d] > 1:
                labels[d] = self.param_space(name, original, d)
        return tuple(labels), frozenset({name})

    #: False for a dry run: the forward runs with the same fast shape-only paths, but no
    #: labels are recorded.
    recording = True

    def dry_run(self, example_inputs: Any, forward_fn: Callable | None, device: str) -> Any:
        """Run forward without recording labels; the output (meta tensors on the meta device)."""
        self.recording = False
        try:
            return self._run_once(example_inputs, forward_fn, device)
        finally:
            self.recording = True

    # ------------------------------------------------------------------ hooks
    def _pre_hook(self, module, args, kwargs):
        self.depth += 1

    def _post_hook(self, module, args, kwargs, output):
        self.depth -= 1
        if self.depth == 0 and self.recording:
            name = self.module_names[id(module)]
            self.called.add(name)
            # Our own label arithmetic must not be recorded as part of the model.
            with torch._C.DisableTorchFunction():
                layer_rules.apply_module_rule(self, module, name, self.pruners[id(module)], args, kwargs, output)

    def _traced(self, module: nn.Module, forward: Callable) -> Callable:
        """``forward`` with the work of :meth:`_pre_hook` and :meth:`_post_hook` around it."""

        def traced(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            output = forward(*args, **kwargs)
            self._post_hook(module, args, kwargs, output)
            return output

        return traced

    def _traced_shape_only(self, module: nn.Module, forward: Callable) -> Callable:
        """:meth:`_traced` around a shape-only ``forward`` (:mod:`.fast_meta`), all of it
        run with the recorder off: one wrapper and one switch of torch's function mode
        per layer instead of two (see :func:`_unrecorded`)."""
        name = self.module_names[id(module)]
        pruner = self.pruners[id(module)]
        rule = layer_rules.apply_module_rule

        def traced(*args: Any, **kwargs: Any) -> Any:
            with torch._C.DisableTorchFunction():
                output = forward(*args, **kwargs)
                if self.depth == 0 and self.recording:
                    self.called.add(name)
                    rule(self, module, name, pruner, args, kwargs, output)
            return output

        return traced

    def _elementwise(self, module: nn.Module) -> Callable:
        """The forward of an activation or dropout layer on the meta device, labels included.

        Its own forward is one element-wise call, which the recorder would intercept and
        label through :func:`.ops.apply_rule`; this applies the same rule directly,
        without torch's function-mode dispatch, which dominates the cost of such layers.
        Anything but one meta tensor takes the module's own forward.
        """
        own = type(module).forward
        inplace = bool(getattr(module, "inplace", False))

        def forward(*args: Any, **kwargs: Any) -> Any:
            x = args[0] if len(args) == 1 and not kwargs else None
            if not is_tensor(x) or x.device.type != "meta":
                return own(module, *args, **kwargs)
            with torch._C.DisableTorchFunction():
                out = x if inplace else meta_like(x)
                if self.depth == 0 and self.recording:
                    rule_elementwise(self.state, [x], [out])
            return out

        return forward

    # ------------------------------------------------------------------ run
    def run(self, example_inputs: Any, forward_fn: Callable | None, output_transform: Callable | None,
            protect_outputs: bool = True) -> TraceResult:
        errors = []
        for device in ("meta", "real"):
            try:
                out = self._run_once(example_inputs, forward_fn, device)
            except Exception as err:  # noqa: BLE001 - we re-raise with context below
                self._reset()
                if isinstance(err, InputDtypeError):
                    # The real model refuses these inputs as well: retrying on real tensors
                    # would only fail again, with torch's message that names no layer.
                    raise TraceError(f"the model cannot run on example_inputs ({describe_tensors(example_inputs)}): "
                                     f"{err}") from err
                errors.append((device, err))
                continue
            outs = [out]
            if self._unreached():
                # Some layers only run in the other mode (GoogLeNet's aux heads in training,
                # an eval-only head of a model built in train mode): trace that mode too and
                # merge, so their inputs are pruned with their producers.
                try:
                    outs.append(self._run_once(example_inputs, forward_fn, device, training=not self.model.training))
                except Exception as err:  # noqa: BLE001 - reported through unreached_modules
                    self.train_trace_error = f"{type(err).__name__}: {err}"
            for o in outs:
                if output_transform is not None:
                    o = output_transform(o)
                if protect_outputs:
                    for leaf in tensor_leaves(o):
                        self.state.freeze_all(leaf)
            return TraceResult(self.table, self.spaces, self.edges, dict(self.state.unknown_ops),
                               set(self.called), device, output_shapes(out))
        device, err = errors[-1]
        raise TraceError(
            f"the model could not run on example_inputs ({describe_tensors(example_inputs)}): "
            f"{type(err).__name__}: {err}. Pass example_inputs that `model(*example_inputs)` accepts "
            f"(a tensor, a tuple of positional args or a dict of keyword args), or a forward_fn "
            f"that calls the model."
        ) from err

    def release(self) -> None:
        """Drop the per-trace state, which refers back to the tracer.

        Without this the trace's labels (hundreds of small tensors) form a reference cycle
        that only the cyclic GC frees, later and all at once; dropped here, reference
        counting frees them as soon as the build returns.
        """
        self.state.source_labels = None
        self._stand_in = {}

    def _reset(self) -> None:
        self.table = ElementTable()
        self.state = TraceState(self.table)
        self.state.source_labels = self._source_labels
        self.state.split_mode = self.split_mode
        self.spaces = []
        self._space_of = {}
        self.depth = 0
        self.edges = set()
        self.called = set()
        self._stand_in = {}

    train_trace_error = ""

    def _unreached(self) -> list[str]:
        reached = self.called
        return [n for n, m in self.modules.items()
                if id(m) in self.units and n not in reached and any(True for _ in m.parameters(recurse=False))
                and not any(n.startswith(r + ".") for r in reached)
                and ("module", n, "out") not in self._space_of]

    def _run_once(self, example_inputs: Any, forward_fn: Callable | None, device: str,
                  training: bool | None = None) -> Any:
        """One recorded forward on stand-ins (:func:`~lightning_prune.engine.harness.stand_in_forward`).

        ``training`` sets every module's mode (flags set directly, ``train()`` is not
        called); ``None`` keeps the mode each is in.
        """
        self.device = device
        with stand_in_forward(self.modules, device, training=training) as stand_ins:
            self._stand_in = stand_ins.names
            self.tensor_names = stand_ins.original_names
            return self._run_recorded(stand_in_inputs(example_inputs, device), forward_fn, device)

    device = "meta"

    def _run_recorded(self, inputs: Any, forward_fn: Callable | None, device: str) -> Any:
        model = self.model
        handles = []
        wrapped: list[nn.Module] = []  # modules given a traced forward (none had its own)
        try:
            for mod in self.modules.values():
                if id(mod) not in self.units:
                    if device == "meta" and is_elementwise_module(mod) and _bare(mod):
                        mod.__dict__["forward"] = self._elementwise(mod)
                        wrapped.append(mod)
                    continue
                # In place of a builtin layer's forward: a shape-only one on the meta device, or
                # its own behind the dtype check that meta kernels (and a failed meta trace's
                # real retry, for the message) would otherwise leave to torch or skip.
                own = fast = None
                if "forward" not in mod.__dict__:
                    name = self.module_names[id(mod)]
                    fast = fast_forward(mod, name) if device == "meta" else None
                    own = _unrecorded(fast) if fast is not None else dtype_checked_forward(mod, name)
                if _bare(mod):
                    # no hooks of its own: wrap forward instead of adding two hooks, so the
                    # call keeps torch's hook-free fast path
                    mod.__dict__["forward"] = (self._traced_shape_only(mod, fast) if fast is not None else
                                               self._traced(mod, own if own is not None else mod.forward))
                    wrapped.append(mod)
                    continue
                handles.append(mod.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
                handles.append(mod.register_forward_hook(self._post_hook, with_kwargs=True))
                if own is not None:
                    mod.__dict__["forward"] = own
            with torch.no_grad(), _Recorder(self):
                for t in tensor_leaves(inputs):
                    self.state.set(t, (None,) * t.dim())
                out = run_forward(model, inputs, forward_fn)
        finally:
            for h in handles:
                h.remove()
            # dropped before the harness restores attributes, so most modules pass its quick
            # check; that restore also drops the other shape-only forwards
            for mod in wrapped:
                mod.__dict__.pop("forward", None)
        return out


def _bare(module: nn.Module) -> bool:
    """No forward set on the instance and no hooks: a forward can be installed in its place."""
    return "forward" not in module.__dict__ and not (module._forward_hooks or module._forward_pre_hooks)


def _unrecorded(forward: Callable) -> Callable:
    """A shape-only ``forward`` (:mod:`.fast_meta`) run with the recorder off.

    It is our own arithmetic on shapes: recorded, every ``.shape`` it reads would be an
    intercepted call, several per layer.
    """

    def shape_only(*args: Any, **kwargs: Any) -> Any:
        with torch._C.DisableTorchFunction():
            return forward(*args, **kwargs)

    return shape_only
