"""Count multiply-accumulate operations (MACs) and parameters of a model.

Pruning is judged by how many MACs and parameters it removes, so the counter has
to be cheap enough to call after every pruning step and must leave the model
exactly as it found it. It runs one forward pass, by default on the ``meta``
device (shapes only, no arithmetic, no memory), and reads each layer's cost from
the shapes it sees: module hooks apply the per-layer rules and a dispatch mode sees
the functional ops, both from :mod:`.mac_rules`, where the counting convention and
its differences from Torch-Pruning are written down.

The forward runs in eval mode (like Torch-Pruning), so Dropout and training-only
branches cost nothing. Data-dependent models (detection heads, ``if x.sum() > 0``)
cannot run on meta; they are counted with a real ``no_grad`` forward on cloned
buffers and inputs instead, which gives the same figures, only slower. Both runs go
through :func:`~lightning_prune.engine.harness.stand_in_forward`, like the tracer's.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ..harness import ForwardFn, run_forward, stand_in_forward, stand_in_inputs
from ..tree import describe_tensors
from .mac_rules import ModuleRule, aten_rule_for, rule_for
from .meta_cache import MetaOpCache

__all__ = ["MetaOpCache", "count_ops_and_params", "count_params"]

_LOG = logging.getLogger(__name__)


# --------------------------------------------------------------------------- recording


class _MacRecorder:
    """Accumulates MACs per qualified module name during one forward pass.

    A stack of running modules attributes functional ops to the innermost module;
    ``_rule_depth`` > 0 means a module with a rule is running, whose own formula
    already covers every ATen op inside it.
    """

    def __init__(self) -> None:
        self.macs: dict[str, int] = defaultdict(int)
        self._stack: list[str] = [""]
        self._rule_depth = 0

    def enter(self, name: str, rule: ModuleRule | None, module: nn.Module, args: tuple) -> None:
        self._stack.append(name)
        if rule is not None:
            self._rule_depth += 1

    def leave(
        self, name: str, rule: ModuleRule | None, module: nn.Module, args: tuple, kwargs: dict, output: Any
    ) -> None:
        try:
            # output is None when the forward raised (hooks run with always_call=True).
            if rule is not None and output is not None and self._rule_depth == 1:
                self.macs[name] += int(rule(module, _first_input(args, kwargs), output))
        finally:
            if rule is not None:
                self._rule_depth -= 1
            self._stack.pop()

    def functional(self, func: Any, args: tuple, out: Any) -> None:
        if self._rule_depth:
            return
        rule = aten_rule_for(func)
        if rule is not None:
            self.macs[self._stack[-1]] += int(rule(args, out))


def _first_input(args: tuple, kwargs: dict) -> Any:
    """The tensor a layer was called on, whether passed by position or by keyword."""
    if args:
        return args[0]
    return next(iter(kwargs.values()), None)


class _FunctionalOpCounter(TorchDispatchMode):
    """Sees every ATen op of the forward, so functional matmuls are not missed."""

    def __init__(self, recorder: _MacRecorder, cache: MetaOpCache | None) -> None:
        super().__init__()
        self._recorder = recorder
        self._cache = cache

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = self._cache.run(func, args, kwargs) if self._cache is not None else func(*args, **kwargs)
        self._recorder.functional(func, args, out)
        return out


@contextlib.contextmanager
def _counting_hooks(modules: Mapping[str, nn.Module], recorder: _MacRecorder) -> Iterator[None]:
    """Hook every submodule; every handle is removed again, also on errors."""
    handles = []
    try:
        for name, module in modules.items():
            rule = rule_for(module)
            handles.append(
                module.register_forward_pre_hook(partial(recorder.enter, name, rule), prepend=True)
            )
            handles.append(
                module.register_forward_hook(
                    partial(recorder.leave, name, rule), with_kwargs=True, always_call=True
                )
            )
        yield
    finally:
        for handle in handles:
            handle.remove()


class _NoFusedAttention(TorchFunctionMode):
    """Keeps ``nn.MultiheadAttention`` off its fused fast path, for this thread only.

    The fused kernel (``_native_multi_head_attention``) hides the projections and
    products from the counter. The fast path is skipped whenever a torch-function mode is
    active ("some Tensor argument has_torch_function"), and modes are per thread, unlike
    ``torch.backends.mha.set_fastpath_enabled(False)``, which would also slow down the
    caller's other threads while we count. Only the real-forward fallback needs it: meta
    tensors never take the fast path.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return func(*args, **(kwargs or {}))


# --------------------------------------------------------------------------- running


def _record_forward(
    model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None, on_meta: bool,
    cache: MetaOpCache | None = None,
) -> _MacRecorder:
    """One protected forward pass with counting hooks.

    On meta, parameters, buffers and inputs are shape-only stand-ins. Otherwise the
    real parameters (detached) are used with cloned buffers and inputs, so running
    statistics and the caller's tensors stay untouched. ``cache`` replays meta results.
    """
    recorder = _MacRecorder()
    device = "meta" if on_meta else "real"
    modules = dict(model.named_modules())
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(stand_in_forward(modules, device, training=False))
        inputs = stand_in_inputs(example_inputs, device)
        stack.enter_context(_counting_hooks(modules, recorder))
        if not on_meta:
            stack.enter_context(_NoFusedAttention())
        stack.enter_context(_FunctionalOpCounter(recorder, cache if on_meta else None))
        run_forward(model, inputs, forward_fn)
    return recorder


def _record(
    model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None, cache: MetaOpCache
) -> _MacRecorder:
    """Count on meta first (fast); fall back to a real forward for data-dependent models."""
    try:
        return _record_forward(model, example_inputs, forward_fn, on_meta=True, cache=cache)
    except Exception as meta_error:  # any failure on meta means "try for real"
        _LOG.debug("meta forward failed (%s); counting with a real forward", meta_error)
    try:
        return _record_forward(model, example_inputs, forward_fn, on_meta=False)
    except Exception as error:
        raise RuntimeError(
            f"count_ops_and_params: the model could not run on example_inputs of shape "
            f"{describe_tensors(example_inputs)} ({type(error).__name__}: {error}). "
            "Pass inputs the model accepts (a tensor, a tuple/list of positional arguments "
            "or a dict of keyword arguments), or a forward_fn that calls it."
        ) from error


# --------------------------------------------------------------------------- public API


def _check_model(model: Any, caller: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{caller}: `model` must be a torch.nn.Module, got {type(model).__name__}")


def _layer_params(model: nn.Module) -> dict[str, int]:
    """Parameters owned directly by each module; a shared tensor counts at its first owner."""
    seen: set[int] = set()
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        total = 0
        for param in module.parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                total += param.numel()
        counts[name] = total
    return counts


def count_params(model: nn.Module) -> int:
    """Number of parameter elements; a tensor shared by several modules counts once.

    Frozen parameters (``requires_grad=False``) are included: pruning shrinks them too.
    """
    _check_model(model, "count_params")
    return sum(param.numel() for param in model.parameters())


def count_ops_and_params(
    model: nn.Module,
    example_inputs: Any,
    layer_wise: bool = False,
    forward_fn: ForwardFn | None = None,
    *,
    cache: MetaOpCache | None = None,
) -> tuple[int, int] | tuple[int, int, dict[str, int], dict[str, int]]:
    """Count the MACs of one forward pass on ``example_inputs`` and the model's parameters.

    See :mod:`.mac_rules` for the per-layer convention. The forward runs in eval
    mode on the meta device when possible, falling back to a real ``no_grad`` forward
    (with cloned buffers and inputs) for data-dependent models; the model's modes,
    buffers, parameters and hooks are left exactly as they were.

    Args:
        model: the network.
        example_inputs: a tensor, a tuple/list of positional arguments or a dict of
            keyword arguments. MACs are for the whole batch given.
        layer_wise: also return per-module MACs and parameters.
        forward_fn: ``forward_fn(model, example_inputs)`` calls the model instead of
            the default unpacking of ``example_inputs``.
        cache: a :class:`MetaOpCache` to replay meta op results from, and to keep the
            new ones in. By default each call makes its own; pass one to several counts
            of models with the same shapes (repeated counts, a solver trying ratios).

    Returns:
        ``(macs, params)``, or with ``layer_wise`` ``(macs, params, layer_macs,
        layer_params)`` where the dicts map each qualified module name (``""`` for
        the root) to what that module does or owns itself, children excluded, so
        their values sum to the totals.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``forward_fn`` is not callable or
            ``cache`` is not a :class:`MetaOpCache`.
        RuntimeError: the model cannot run on ``example_inputs``.
    """
    _check_model(model, "count_ops_and_params")
    if forward_fn is not None and not callable(forward_fn):
        raise TypeError(
            f"count_ops_and_params: `forward_fn` must be callable, got {type(forward_fn).__name__}"
        )
    if cache is not None and not isinstance(cache, MetaOpCache):
        raise TypeError(f"count_ops_and_params: `cache` must be a MetaOpCache, got {type(cache).__name__}")
    recorder = _record(model, example_inputs, forward_fn, MetaOpCache() if cache is None else cache)
    layer_params = _layer_params(model)
    macs = sum(recorder.macs.values())
    params = sum(layer_params.values())
    if not layer_wise:
        return macs, params
    layer_macs = dict.fromkeys(layer_params, 0)
    layer_macs.update(recorder.macs)
    return macs, params, layer_macs, layer_params
