"""Closed-form output shapes for builtin layers while tracing on the meta device.

Torch's meta kernels for BatchNorm, convolutions and friends are written in Python and
cost about as much as a small real forward. Layers that the tracer records as units only
need the *shape* of their output, so during a meta trace their ``forward`` is swapped for
one of these functions (restored afterwards). Anything unusual (``output_size`` for a
transposed conv, string padding with dilation...) returns ``None`` from the selector and
keeps the layer's own forward.

Meta kernels check shapes but not dtypes: a float64 or int64 input runs through a float32
conv on the meta device, though the real model would refuse it. So every forward here
first runs :func:`input_dtype_check`, which mirrors torch's own dtype checks, and the
tracer puts the same check in front of the builtin layers that keep their own forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .fast_ops import meta_empty, meta_like

_RMSNorm = getattr(nn, "RMSNorm", None)  # torch >= 2.4
_NORMALIZED = (nn.LayerNorm,) + ((_RMSNorm,) if _RMSNorm is not None else ())

_SHAPE_PRESERVING = (
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.PReLU, *_NORMALIZED,
)

#: Reduced-precision inputs that torch's norm kernels accept with float32 parameters.
_MIXED_NORM_INPUTS = (torch.float16, torch.bfloat16)
_INDEX_DTYPES = (torch.int64, torch.int32)


class InputDtypeError(RuntimeError):
    """A builtin layer got an input whose dtype torch's own kernel refuses."""


def _autocast_on() -> bool:
    """Autocast casts layer inputs itself: a mismatch outside it is no error inside it.

    Only asked once a dtype differs, so the usual trace never pays for it.
    """
    return torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")


def _advice(param_dtype: torch.dtype) -> str:
    short = str(param_dtype).replace("torch.", "")
    cast = {torch.float32: "x.float()", torch.float64: "x.double()", torch.float16: "x.half()",
            torch.bfloat16: "x.bfloat16()"}.get(param_dtype, f"x.to({param_dtype})")
    return (f"Pass example_inputs in the dtype the model runs on (here {short}: `{cast}`), or convert the "
            f"model to the inputs' dtype before building the graph")


def _short(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _tensor_attr(module: nn.Module, name: str) -> torch.Tensor | None:
    """``getattr(module, name)`` if it is a tensor, reading the parameter and buffer tables
    first: ``getattr`` of a missing name goes through ``Module.__getattr__`` and an
    AttributeError, several microseconds on every traced layer."""
    t = module._parameters.get(name)
    if t is None:
        t = module._buffers.get(name)
    if t is None and name not in module._parameters and name not in module._buffers:
        t = getattr(module, name, None)  # a property: a parametrized weight
    return t if isinstance(t, torch.Tensor) else None


def input_dtype_check(module: nn.Module, name: str = "") -> Callable[[torch.Tensor], None] | None:
    """A check that raises :class:`InputDtypeError` where torch would refuse the input's dtype.

    It mirrors torch's CPU and CUDA kernels: convs, linear layers, PReLU and attention need
    the input in their weight's dtype; norm layers need a floating input in their
    parameters' dtype, or float16/bfloat16 against float32 parameters (torch's mixed
    path); RMSNorm needs a floating input of any precision; an embedding needs int64 or
    int32 ids. ``None`` for layers without such a check (FrozenBatchNorm2d is plain
    arithmetic and promotes). Parameter dtypes are read once: they do not change during a
    trace. Nothing is checked under autocast, which casts the inputs itself.
    """
    where = f"layer '{name}' ({type(module).__name__})" if name else f"layer {type(module).__name__}"

    if isinstance(module, nn.Embedding):
        def check_ids(x: torch.Tensor) -> None:
            if x.dtype not in _INDEX_DTYPES:
                raise InputDtypeError(
                    f"{where} takes integer ids (int64 or int32) but got an input of dtype {_short(x.dtype)}. "
                    f"Pass the ids as integers (`x.long()`)")
        return check_ids

    if isinstance(module, nn.modules.conv._ConvNd | nn.Linear | nn.PReLU | nn.MultiheadAttention):
        for pname in ("weight", "in_proj_weight", "q_proj_weight"):
            weight = _tensor_attr(module, pname)
            if weight is not None:
                break
        else:
            return None
        want = weight.dtype

        def check_same(x: torch.Tensor) -> None:
            if x.dtype != want and not _autocast_on():
                raise InputDtypeError(
                    f"{where} got an input of dtype {_short(x.dtype)} but its {pname} is {_short(want)}, and "
                    f"torch runs it only on inputs of its weight's dtype. {_advice(want)}")
        return check_same

    if _RMSNorm is not None and isinstance(module, _RMSNorm):
        weight = getattr(module, "weight", None)
        usual = weight.dtype if isinstance(weight, torch.Tensor) else torch.get_default_dtype()

        def check_floating(x: torch.Tensor) -> None:
            if not (x.dtype.is_floating_point or x.dtype.is_complex) and not _autocast_on():
                raise InputDtypeError(f"{where} got an input of dtype {_short(x.dtype)}, and torch normalizes "
                                      f"floating inputs only. {_advice(usual)}")
        return check_floating

    if isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm):
        params = [(n, t.dtype) for n in ("weight", "bias", "running_mean", "running_var")
                  if (t := _tensor_attr(module, n)) is not None]
        default = params[0][1] if params else torch.get_default_dtype()

        def check_norm(x: torch.Tensor) -> None:
            dtype = x.dtype
            if not (dtype.is_floating_point or dtype.is_complex):
                if not _autocast_on():
                    raise InputDtypeError(f"{where} got an input of dtype {_short(dtype)}, and torch normalizes "
                                          f"floating inputs only. {_advice(default)}")
                return
            for pname, want in params:
                if want != dtype and not (want == torch.float32 and dtype in _MIXED_NORM_INPUTS) \
                        and not _autocast_on():
                    raise InputDtypeError(
                        f"{where} got an input of dtype {_short(x.dtype)} but its {pname} is {_short(want)}, and "
                        f"torch runs it only on inputs of its parameters' dtype (or float16/bfloat16 inputs with "
                        f"float32 parameters). {_advice(want)}")
        return check_norm
    return None


def dtype_checked_forward(module: nn.Module, name: str = "") -> Callable | None:
    """The module's own forward behind :func:`input_dtype_check`, for builtin layers that
    keep it while tracing (no closed form here, or a trace on real tensors); ``None``
    when there is nothing to check."""
    if not is_builtin_forward(module):
        return None
    check = input_dtype_check(module, name)
    if check is None:
        return None
    own = type(module).forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        x = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(x, torch.Tensor):
            check(x)
        return own(module, *args, **kwargs)

    return forward


def _same_fn(module: nn.Module, check: Callable[[torch.Tensor], None] | None) -> Callable:
    """Shape-preserving layers; the channel check mirrors torch's own error."""
    if isinstance(module, _NORMALIZED):
        want, dim = tuple(module.normalized_shape), None
    elif isinstance(module, nn.GroupNorm):
        want, dim = module.num_channels, 1
    elif isinstance(module, nn.PReLU):
        want, dim = (module.num_parameters if module.num_parameters > 1 else None), 1
    else:
        want, dim = getattr(module, "num_features", None), 1
    label = type(module).__name__

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if check is not None:
            check(x)
        if dim is None:
            if tuple(x.shape[-len(want):]) != want:
                raise RuntimeError(f"{label}: expected input with shape [*, {', '.join(map(str, want))}], "
                                   f"got {list(x.shape)}")
        elif want is not None and (x.dim() <= dim or x.shape[dim] != want):
            raise RuntimeError(f"{label}: expected {want} channels in dim {dim}, got input {list(x.shape)}")
        return meta_like(x)

    return forward


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _conv_fn(conv: nn.modules.conv._ConvNd, check: Callable[[torch.Tensor], None] | None) -> Callable | None:
    if isinstance(conv.padding, str):
        if conv.padding != "valid":
            return None
        pads = (0,) * len(conv.kernel_size)
    else:
        pads = conv.padding
    ks, st, dl = conv.kernel_size, conv.stride, conv.dilation
    out_ch, in_ch = conv.out_channels, conv.in_channels

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or kwargs:
            raise RuntimeError("unexpected args")
        if check is not None:
            check(x)
        if x.dim() < len(ks) + 1 or x.shape[-len(ks) - 1] != in_ch:
            raise RuntimeError(f"{type(conv).__name__}: expected input with {in_ch} channels, got {list(x.shape)}")
        spatial = x.shape[-len(ks):]
        new = [_conv_out(s_, k, st_, p, d) for s_, k, st_, p, d in zip(spatial, ks, st, pads, dl)]
        lead = list(x.shape[:-len(ks) - 1])
        return meta_empty(lead + [out_ch] + new, x.dtype)

    return forward


def _conv_transpose_fn(conv: nn.modules.conv._ConvTransposeNd,
                       check: Callable[[torch.Tensor], None] | None) -> Callable | None:
    ks, st, pd, dl, op = conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.output_padding
    if isinstance(pd, str):
        return None
    out_ch, in_ch = conv.out_channels, conv.in_channels

    def forward(x: torch.Tensor, output_size: Any = None) -> torch.Tensor:
        if output_size is not None:
            raise RuntimeError("output_size needs the real forward")
        if check is not None:
            check(x)
        if x.dim() < len(ks) + 1 or x.shape[-len(ks) - 1] != in_ch:
            raise RuntimeError(f"{type(conv).__name__}: expected input with {in_ch} channels, got {list(x.shape)}")
        spatial = x.shape[-len(ks):]
        new = [(s_ - 1) * s - 2 * p + d * (k - 1) + o + 1
               for s_, k, s, p, d, o in zip(spatial, ks, st, pd, dl, op)]
        lead = list(x.shape[:-len(ks) - 1])
        return meta_empty(lead + [out_ch] + new, x.dtype)

    return forward


def _linear_fn(linear: nn.Linear, check: Callable[[torch.Tensor], None] | None) -> Callable:
    out, inn = linear.out_features, linear.in_features

    def forward(x: torch.Tensor) -> torch.Tensor:
        if check is not None:
            check(x)
        if x.dim() == 0 or x.shape[-1] != inn:
            raise RuntimeError(f"Linear: expected input with {inn} features in the last dim, got {list(x.shape)}")
        return meta_empty(list(x.shape[:-1]) + [out], x.dtype)

    return forward


def _embedding_fn(emb: nn.Embedding, check: Callable[[torch.Tensor], None] | None) -> Callable:
    dim, dtype = emb.embedding_dim, emb.weight.dtype

    def forward(idx: torch.Tensor) -> torch.Tensor:
        if check is not None:
            check(idx)
        return meta_empty(list(idx.shape) + [dim], dtype)

    return forward


def _attention_fn(mha: nn.MultiheadAttention, check: Callable[[torch.Tensor], None] | None) -> Callable | None:
    """``nn.MultiheadAttention``: ``(out [.., L, E], weights or None)``.

    Its functional forward runs dozens of slow Python meta references (see docs/engine.md,
    "Speed notes"). The widths that torch itself checks are checked here too, so a
    dry run after a prune still catches an inconsistent layer.
    """
    e, heads = mha.embed_dim, mha.num_heads
    if heads < 1 or e % heads:
        return None
    if mha._qkv_same_embed_dim:
        shapes_ok = tuple(mha.in_proj_weight.shape) == (3 * e, e)
    else:
        shapes_ok = (tuple(mha.q_proj_weight.shape) == (e, e) and tuple(mha.k_proj_weight.shape) == (e, mha.kdim)
                     and tuple(mha.v_proj_weight.shape) == (e, mha.vdim))
    if not shapes_ok or tuple(mha.out_proj.weight.shape) != (e, e) or mha.bias_k is not None:
        return None
    batch_first = mha.batch_first

    def forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask: Any = None,
                need_weights: bool = True, attn_mask: Any = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if check is not None:
            for t in (query, key, value):
                check(t)
        if query.dim() not in (2, 3) or key.dim() != query.dim() or value.dim() != query.dim():
            raise RuntimeError(f"MultiheadAttention: expected 2-D or 3-D query, key and value, got "
                               f"{list(query.shape)}, {list(key.shape)}, {list(value.shape)}")
        if query.shape[-1] != e or key.shape[-1] != mha.kdim or value.shape[-1] != mha.vdim:
            raise RuntimeError(f"MultiheadAttention: expected embed dims {e}/{mha.kdim}/{mha.vdim}, got query "
                               f"{list(query.shape)}, key {list(key.shape)}, value {list(value.shape)}")
        seq = 1 if batch_first and query.dim() == 3 else 0
        if key.shape[:-1] != value.shape[:-1]:
            raise RuntimeError(f"MultiheadAttention: key {list(key.shape)} and value {list(value.shape)} differ")
        out = meta_empty(list(query.shape[:-1]) + [e], query.dtype)
        if not need_weights:
            return out, None
        length, source = query.shape[seq], key.shape[seq]
        lead = [] if query.dim() == 2 else [query.shape[1 - seq]]
        shape = lead + ([length, source] if average_attn_weights else [heads, length, source])
        return out, meta_empty(shape, query.dtype)

    return forward


def fast_forward(module: nn.Module, name: str = "") -> Callable | None:
    """A shape-only replacement for ``module.forward``, or ``None`` to keep the real one.

    ``name`` (the module's qualified name) is for the message of a refused input dtype.
    """
    if not is_builtin_forward(module):
        return None
    check = input_dtype_check(module, name)
    if isinstance(module, nn.MultiheadAttention):
        return _attention_fn(module, check)
    if isinstance(module, _SHAPE_PRESERVING) or not isinstance(module, nn.modules.conv._ConvNd | nn.Linear | nn.Embedding):
        return _same_fn(module, check)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return _conv_transpose_fn(module, check)
    if isinstance(module, nn.modules.conv._ConvNd):
        return _conv_fn(module, check)
    if isinstance(module, nn.Linear):
        return _linear_fn(module, check)
    if isinstance(module, nn.Embedding):
        return _embedding_fn(module, check)
    return None


_BUILTIN_FORWARDS = {
    cls: cls.forward for cls in (
        nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
        nn.Linear, nn.Embedding, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
        nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm, nn.PReLU,
        nn.MultiheadAttention, *((_RMSNorm,) if _RMSNorm is not None else ()),
    )
}


def is_builtin_forward(module: nn.Module) -> bool:
    """True when ``module`` runs torch's own forward (subclasses may override it)."""
    if type(module) in _BUILTIN_FORWARDS:  # the usual case, without walking the table
        return True
    for cls, fwd in _BUILTIN_FORWARDS.items():
        if isinstance(module, cls):
            return type(module).forward is fwd
    try:
        from torchvision.ops.misc import FrozenBatchNorm2d
    except Exception:  # noqa: BLE001 - torchvision is optional here
        return False
    return type(module) is FrozenBatchNorm2d


# ----------------------------------------------------------------------------- element-wise modules
#: Activation and dropout layers whose forward is one element-wise call on their input.
#: Exact classes only: a subclass may override ``forward``.
ELEMENTWISE_MODULES = frozenset({
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.Mish, nn.Dropout,
})


def is_elementwise_module(module: nn.Module) -> bool:
    """``module`` is one of :data:`ELEMENTWISE_MODULES`: it maps each element on its own."""
    return type(module) in ELEMENTWISE_MODULES
