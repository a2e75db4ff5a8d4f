"""Count multiply-accumulate operations (MACs) and parameters of a model.

Pruning is judged by how many MACs and parameters it removes, so the counter has
to be cheap enough to call after every pruning step and must leave the model
exactly as it found it. It runs one forward pass, by default on the ``meta``
device (shapes only, no arithmetic, no memory), and reads each layer's cost from
the shapes it sees.

Counting convention (the ptflops convention that Torch-Pruning's published tables
use, so ResNet/MobileNet/DenseNet figures agree exactly), per call of a module,
with ``numel`` the number of elements of the whole batch:

===============================================  ==============================================
module                                           MACs
===============================================  ==============================================
``Conv1d/2d/3d``                                 ``out.numel * (C_in / groups) * prod(kernel)``
                                                 ``+ out.numel`` if it has a bias
``ConvTranspose1d/2d/3d``                        ``in.numel * (C_out / groups) * prod(kernel)``
                                                 ``+ out.numel`` if it has a bias
``Linear``                                       ``out.numel * in_features (+ out.numel bias)``
``Bilinear``                                     ``out.numel * in1 * in2 (+ out.numel bias)``
``BatchNorm/GroupNorm/InstanceNorm/LayerNorm/``  ``in.numel``, twice that with an affine
``RMSNorm``                                      weight
``ReLU/ReLU6/LeakyReLU/PReLU/ELU/GELU``          ``in.numel``
``Max/Avg/AdaptiveMax/AdaptiveAvg pooling``      ``in.numel``
``Upsample`` (and its subclasses)                ``out.numel``
``RNN/LSTM/GRU`` and their cells                 ``tokens * (weights + biases)`` of the module
other modules (Dropout, Identity, SiLU, ...)      0 of their own
===============================================  ==============================================

Rules are found through the class hierarchy, so subclasses (for example a quantised
``Linear``) are counted like their base class.

Functional calls are counted too: matrix products (``torch.matmul``, ``@``,
``bmm``, ``einsum``, ``F.linear``), ``F.conv*`` / ``F.conv_transpose*`` and
``F.scaled_dot_product_attention`` that run *outside* any module with a rule above
are counted at the ATen level (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``mv``,
``convolution`` and the fused attention kernels), as the products only (bias
additions are not counted there). This is what makes attention visible: the
``Q @ K^T`` and ``attn @ V`` products of ``nn.MultiheadAttention`` and of
hand-written attention blocks shrink when heads are pruned, so the count must see
them. A call inside a module that has a rule (``F.linear`` inside ``nn.Linear``) is
never counted twice. Functional element-wise operations (``F.relu``, ``+``,
``F.interpolate``) are not counted, like ptflops.

The forward runs in eval mode (like Torch-Pruning), so Dropout and training-only
branches cost nothing. Data-dependent models (detection heads, ``if x.sum() > 0``)
cannot run on meta; they are counted with a real ``no_grad`` forward on cloned
buffers and inputs instead, which gives the same figures, only slower.

Where the figures differ from Torch-Pruning's ``count_ops_and_params`` (CNNs built
from the layers above, e.g. torchvision ResNet/MobileNet/DenseNet/EfficientNet,
agree exactly):

* figures are for the whole batch given; Torch-Pruning divides by the size of the
  first dimension of the first input. With a batch of one they agree;
* ``Linear`` adds one MAC per output element for the bias (like convolutions);
  Torch-Pruning adds ``out_features`` once per call, whatever the number of tokens;
* ``ConvTranspose`` counts the products it performs (one per input element and
  weight of its group, as fvcore does); Torch-Pruning applies the convolution
  formula to the output, which over-counts strided transposed convolutions;
* ``nn.MultiheadAttention`` is counted through its projection and attention
  products; Torch-Pruning's closed formula also counts the projection biases,
  query scaling and softmax (about 0.1% of a ViT);
* ``RNN/LSTM/GRU`` count their weight products per token; Torch-Pruning's formula
  gives a figure many times larger;
* functional matmuls/convolutions/attention are counted (Torch-Pruning misses the
  attention of Swin and MaxViT entirely), and so are subclasses of counted
  modules, ``Upsample`` subclasses, ``RMSNorm`` and ``Bilinear``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ..inputs import call_model

__all__ = ["count_ops_and_params", "count_params"]

_LOG = logging.getLogger(__name__)
_MISSING = object()

ForwardFn = Callable[[nn.Module, Any], Any]
ModuleRule = Callable[[nn.Module, Any, Any], int]
AtenRule = Callable[[tuple, Any], int]


# --------------------------------------------------------------------------- module rules


def _numel(value: Any) -> int:
    """Element count of a tensor (or a packed sequence); 0 for anything else."""
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, PackedSequence):
        return value.data.numel()
    return 0


def _bias_macs(module: nn.Module, out: Any) -> int:
    """One addition per output element when the layer has a bias tensor."""
    return _numel(out) if isinstance(getattr(module, "bias", None), torch.Tensor) else 0


def _conv_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Each output element reads ``(C_in / groups) * prod(kernel)`` weights.

    The weight shape ``(C_out, C_in / groups, *kernel)`` is used rather than the
    module's attributes, so a pruned layer whose attributes lag behind is still right.
    """
    return _numel(out) * math.prod(module.weight.shape[1:]) + _bias_macs(module, out)


def _conv_transpose_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Each *input* element is multiplied by ``(C_out / groups) * prod(kernel)`` weights."""
    return _numel(inp) * math.prod(module.weight.shape[1:]) + _bias_macs(module, out)


def _linear_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Each output element is a dot product over ``in_features``."""
    return _numel(out) * module.weight.shape[1] + _bias_macs(module, out)


def _bilinear_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Each output element is ``x1^T W_k x2``: ``in1 * in2`` products."""
    return _numel(out) * math.prod(module.weight.shape[1:]) + _bias_macs(module, out)


def _norm_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Normalising costs one op per element, the affine scale/shift one more."""
    affine = isinstance(getattr(module, "weight", None), torch.Tensor)
    return _numel(inp) * (2 if affine else 1)


def _input_elementwise_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Activations and pooling: one op per input element (ptflops convention)."""
    return _numel(inp)


def _output_elementwise_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Upsampling: one op per output element."""
    return _numel(out)


def _rnn_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Every weight and bias element of every layer/direction is used once per token."""
    tokens = _numel(inp) // max(int(module.input_size), 1)
    return tokens * sum(p.numel() for p in module.parameters(recurse=False))


def _build_module_rules() -> dict[type, ModuleRule]:
    """Map layer classes to their rule; looked up along the MRO of a module's class."""
    rules: dict[type, ModuleRule] = {}
    groups: list[tuple[str, ModuleRule]] = [
        ("Conv1d Conv2d Conv3d", _conv_macs),
        ("ConvTranspose1d ConvTranspose2d ConvTranspose3d", _conv_transpose_macs),
        ("Linear", _linear_macs),
        ("Bilinear", _bilinear_macs),
        (
            "BatchNorm1d BatchNorm2d BatchNorm3d SyncBatchNorm GroupNorm "
            "InstanceNorm1d InstanceNorm2d InstanceNorm3d LayerNorm RMSNorm",
            _norm_macs,
        ),
        ("ReLU ReLU6 LeakyReLU PReLU ELU GELU", _input_elementwise_macs),
        (
            "MaxPool1d MaxPool2d MaxPool3d AvgPool1d AvgPool2d AvgPool3d "
            "AdaptiveMaxPool1d AdaptiveMaxPool2d AdaptiveMaxPool3d "
            "AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d",
            _input_elementwise_macs,
        ),
        ("Upsample", _output_elementwise_macs),
        ("RNN LSTM GRU RNNCell LSTMCell GRUCell", _rnn_macs),
    ]
    for names, rule in groups:
        for name in names.split():
            cls = getattr(nn, name, None)  # RMSNorm only exists on recent torch
            if cls is not None:
                rules[cls] = rule
    return rules


_MODULE_RULES = _build_module_rules()


def _rule_for(module: nn.Module) -> ModuleRule | None:
    """The rule of the closest class in the module's MRO that has one."""
    for cls in type(module).__mro__:
        rule = _MODULE_RULES.get(cls)
        if rule is not None:
            return rule
    return None


# --------------------------------------------------------------------------- ATen rules


def _matmul_rule(operand: int) -> AtenRule:
    """``out.numel * K`` where K is the contracted (last) dim of ``args[operand]``."""

    def rule(args: tuple, out: Any) -> int:
        return _numel(out) * args[operand].shape[-1]

    return rule


def _convolution_rule(args: tuple, out: Any) -> int:
    """``aten.convolution(input, weight, bias, stride, padding, dilation, transposed, ...)``."""
    inp, weight, transposed = args[0], args[1], bool(args[6])
    return (_numel(inp) if transposed else _numel(out)) * math.prod(weight.shape[1:])


def _attention_rule(args: tuple, out: Any) -> int:
    """Fused attention ``(..., L, E)`` layout: ``Q @ K^T`` plus ``attn @ V``."""
    query, key, value = args[0], args[1], args[2]
    return math.prod(query.shape[:-1]) * key.shape[-2] * (query.shape[-1] + value.shape[-1])


def _build_aten_rules() -> dict[Any, AtenRule]:
    """Keyed by ``OpOverloadPacket``; ops missing from this torch build are skipped."""
    table: dict[str, AtenRule] = {
        "mm": _matmul_rule(0),
        "bmm": _matmul_rule(0),
        "mv": _matmul_rule(0),
        "dot": _matmul_rule(0),
        "vdot": _matmul_rule(0),
        "addmm": _matmul_rule(1),
        "_addmm_activation": _matmul_rule(1),
        "baddbmm": _matmul_rule(1),
        "addmv": _matmul_rule(1),
        "convolution": _convolution_rule,
    }
    for name in (
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
    ):
        table[name] = _attention_rule
    rules: dict[Any, AtenRule] = {}
    for name, rule in table.items():
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None:
            rules[packet] = rule
    return rules


_ATEN_RULES = _build_aten_rules()


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
        rule = _ATEN_RULES.get(getattr(func, "overloadpacket", None))
        if rule is not None:
            self.macs[self._stack[-1]] += int(rule(args, out))


def _first_input(args: tuple, kwargs: dict) -> Any:
    """The tensor a layer was called on, whether passed by position or by keyword."""
    if args:
        return args[0]
    return next(iter(kwargs.values()), None)


class _Uncacheable(Exception):
    """An op call whose result cannot be replayed from its arguments' metadata."""


def _signature(value: Any) -> Any:
    """Hashable description of an op argument: metadata for tensors, typed values otherwise."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "meta":
            raise _Uncacheable
        return (value.dtype, tuple(value.shape), value.stride(), value.storage_offset())
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_signature(v) for v in value))
    if isinstance(value, dict):
        return (dict, tuple((k, _signature(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError as error:
        raise _Uncacheable from error
    # The type keeps 2 and 2.0 apart: they give different result dtypes.
    return (type(value), value)


def _output_spec(out: Any, args: tuple, kwargs: dict) -> Any:
    """How to rebuild ``out``: fresh empty tensors, or the argument an in-place op returned."""
    if out is None:
        return ("none",)
    if isinstance(out, (list, tuple)):
        return (type(out), tuple(_output_spec(o, args, kwargs) for o in out))
    if not isinstance(out, torch.Tensor):
        raise _Uncacheable
    for index, arg in enumerate(args):
        if arg is out:
            return ("arg", index)
    for key, arg in kwargs.items():
        if arg is out:
            return ("kwarg", key)
    if out.device.type != "meta" or out.storage_offset() != 0:
        raise _Uncacheable
    return ("new", tuple(out.shape), out.stride(), out.dtype)


def _rebuild(spec: Any, args: tuple, kwargs: dict) -> Any:
    kind = spec[0]
    if kind == "new":
        return torch.empty_strided(spec[1], spec[2], dtype=spec[3], device="meta")
    if kind == "arg":
        return args[spec[1]]
    if kind == "kwarg":
        return kwargs[spec[1]]
    if kind == "none":
        return None
    return kind(_rebuild(s, args, kwargs) for s in spec[1])


def _returns_views(func: Any) -> bool:
    """Views share metadata with their base; replaying them as fresh tensors would break that."""
    schema = getattr(func, "_schema", None)
    if schema is None:
        return True
    return any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)


class _MetaOpCache:
    """Replays meta-device op results from a previous call with the same argument metadata.

    Many meta kernels (batch norm, layer norm, hardtanh, GELU, addmm, ...) are Python
    reference implementations that take about a millisecond each; a network repeats
    the same few shapes, so replaying the output metadata makes counting 5-10x faster.
    Only ops that return fresh tensors or an in-place argument whose metadata they do
    not change are cached; results on meta depend on nothing but argument metadata.
    """

    def __init__(self, max_entries: int = 8192) -> None:
        self._entries: dict[Any, Any] = {}
        self._max_entries = max_entries

    def run(self, func: Any, args: tuple, kwargs: dict) -> Any:
        try:
            key = None
            if not _returns_views(func):
                # Factory ops without a dtype read the global default dtype.
                key = (func, torch.get_default_dtype(), _signature(args), _signature(kwargs))
        except _Uncacheable:
            key = None
        spec = self._entries.get(key) if key is not None else None
        if spec is not None:
            return _rebuild(spec, args, kwargs)
        before = key and _signature((args, kwargs))
        out = func(*args, **kwargs)
        # Ops that change an argument's metadata (unsqueeze_, resize_, out=) cannot be replayed.
        if key is not None and _signature((args, kwargs)) == before:
            self._store(key, out, args, kwargs)
        return out

    def _store(self, key: Any, out: Any, args: tuple, kwargs: dict) -> None:
        try:
            spec = _output_spec(out, args, kwargs)
        except _Uncacheable:
            return
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = spec


_META_CACHE = _MetaOpCache()


class _FunctionalOpCounter(TorchDispatchMode):
    """Sees every ATen op of the forward, so functional matmuls are not missed."""

    def __init__(self, recorder: _MacRecorder, cache: _MetaOpCache | None) -> None:
        super().__init__()
        self._recorder = recorder
        self._cache = cache

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = self._cache.run(func, args, kwargs) if self._cache is not None else func(*args, **kwargs)
        self._recorder.functional(func, args, out)
        return out


# --------------------------------------------------------------------------- model protection


@contextlib.contextmanager
def _counting_hooks(model: nn.Module, recorder: _MacRecorder) -> Iterator[None]:
    """Hook every submodule; every handle is removed again, also on errors."""
    handles = []
    try:
        for name, module in model.named_modules():
            rule = _rule_for(module)
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


@contextlib.contextmanager
def _eval_flags(model: nn.Module) -> Iterator[None]:
    """Count in eval mode like Torch-Pruning, restoring each submodule's own flag.

    The flags are set directly instead of through ``train()``, which user code may
    override with side effects.
    """
    saved = [(module, module.training) for module in model.modules()]
    try:
        for module, _ in saved:
            module.training = False
        yield
    finally:
        for module, flag in saved:
            module.training = flag


@contextlib.contextmanager
def _swapped_tensors(
    model: nn.Module,
    replace_param: Callable[[torch.Tensor], torch.Tensor] | None,
    replace_buffer: Callable[[torch.Tensor], torch.Tensor],
) -> Iterator[None]:
    """Temporarily replace parameters/buffers, keeping tied tensors tied.

    ``setattr`` is used (not the ``_parameters`` dict) so modules that cache their
    weights, such as ``nn.LSTM._flat_weights``, see the replacements too.
    """
    memo: dict[int, torch.Tensor] = {}
    swapped: list[tuple[nn.Module, str, torch.Tensor]] = []
    try:
        for module in model.modules():
            if replace_param is not None:
                for name, param in list(module._parameters.items()):
                    if param is not None:
                        new = memo.get(id(param))
                        if new is None:
                            new = nn.Parameter(replace_param(param), requires_grad=param.requires_grad)
                            memo[id(param)] = new
                        swapped.append((module, name, param))
                        setattr(module, name, new)
            for name, buffer in list(module._buffers.items()):
                if buffer is not None:
                    new = memo.setdefault(id(buffer), replace_buffer(buffer))
                    swapped.append((module, name, buffer))
                    setattr(module, name, new)
        yield
    finally:
        for module, name, original in reversed(swapped):
            setattr(module, name, original)


@contextlib.contextmanager
def _restored_attributes(model: nn.Module) -> Iterator[None]:
    """Undo attributes a forward (re)binds on its modules.

    Forwards cache things on ``self``: old-style ``weight_norm`` sets ``weight``,
    torchvision's anchor generator moves ``cell_anchors`` to the input's device. After
    a meta forward those would be meta tensors, so every attribute rebound or added
    during counting is put back (a shallow restore: in-place edits of a list are not).
    """
    saved = [(vars(module), dict(vars(module))) for module in model.modules()]
    try:
        yield
    finally:
        for attrs, before in saved:
            for key in [k for k in attrs if k not in before]:
                del attrs[key]
            for key, value in before.items():
                if attrs.get(key, _MISSING) is not value:
                    attrs[key] = value


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


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every tensor in nested tuples, lists, dicts and namedtuples."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map_tensors(v, fn) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, Mapping):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _to_meta(tensor: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(tensor, device="meta")


def _clone(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().clone()


def _call_model(model: nn.Module, inputs: Any, forward_fn: ForwardFn | None) -> Any:
    """``forward_fn(model, inputs)``, or the engine's convention (:func:`~lightning_prune.engine.inputs.call_model`)."""
    return forward_fn(model, inputs) if forward_fn is not None else call_model(model, inputs)


def _record_forward(
    model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None, on_meta: bool
) -> _MacRecorder:
    """One protected forward pass with counting hooks.

    On meta, parameters, buffers and inputs are shape-only stand-ins. Otherwise the
    real parameters are used with cloned buffers and inputs, so running statistics
    and the caller's tensors stay untouched.
    """
    recorder = _MacRecorder()
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(_eval_flags(model))
        if on_meta:
            stack.enter_context(_swapped_tensors(model, _to_meta, _to_meta))
            inputs = _map_tensors(example_inputs, _to_meta)
        else:
            stack.enter_context(_swapped_tensors(model, None, _clone))
            inputs = _map_tensors(example_inputs, _clone)
        # Inside the swap: the swap's own bookkeeping (nn.LSTM._flat_weights) is put
        # back by the swap itself, what the forward rebinds is put back here first.
        stack.enter_context(_restored_attributes(model))
        stack.enter_context(_counting_hooks(model, recorder))
        if not on_meta:
            stack.enter_context(_NoFusedAttention())
        stack.enter_context(_FunctionalOpCounter(recorder, _META_CACHE if on_meta else None))
        _call_model(model, inputs, forward_fn)
    return recorder


def _describe_shapes(value: Any) -> Any:
    """Shapes of the tensors in ``value``, for error messages."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        shapes = [_describe_shapes(v) for v in value]
        return tuple(shapes) if isinstance(value, tuple) else shapes
    if isinstance(value, Mapping):
        return {k: _describe_shapes(v) for k, v in value.items()}
    return type(value).__name__


def _record(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None) -> _MacRecorder:
    """Count on meta first (fast); fall back to a real forward for data-dependent models."""
    try:
        return _record_forward(model, example_inputs, forward_fn, on_meta=True)
    except Exception as meta_error:  # any failure on meta means "try for real"
        _LOG.debug("meta forward failed (%s); counting with a real forward", meta_error)
    try:
        return _record_forward(model, example_inputs, forward_fn, on_meta=False)
    except Exception as error:
        raise RuntimeError(
            f"count_ops_and_params: the model could not run on example_inputs of shape "
            f"{_describe_shapes(example_inputs)} ({type(error).__name__}: {error}). "
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
) -> tuple[int, int] | tuple[int, int, dict[str, int], dict[str, int]]:
    """Count the MACs of one forward pass on ``example_inputs`` and the model's parameters.

    See the module docstring for the per-layer convention. The forward runs in eval
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

    Returns:
        ``(macs, params)``, or with ``layer_wise`` ``(macs, params, layer_macs,
        layer_params)`` where the dicts map each qualified module name (``""`` for
        the root) to what that module does or owns itself, children excluded, so
        their values sum to the totals.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``forward_fn`` is not callable.
        RuntimeError: the model cannot run on ``example_inputs``.
    """
    _check_model(model, "count_ops_and_params")
    if forward_fn is not None and not callable(forward_fn):
        raise TypeError(
            f"count_ops_and_params: `forward_fn` must be callable, got {type(forward_fn).__name__}"
        )
    recorder = _record(model, example_inputs, forward_fn)
    layer_params = _layer_params(model)
    macs = sum(recorder.macs.values())
    params = sum(layer_params.values())
    if not layer_wise:
        return macs, params
    layer_macs = dict.fromkeys(layer_params, 0)
    layer_macs.update(recorder.macs)
    return macs, params, layer_macs, layer_params
