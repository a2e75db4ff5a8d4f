"""Output metadata of common functional ops on meta tensors, computed from shapes.

Torch's meta kernels for element-wise ops, adaptive pooling and plain attention are
slow Python references; their results depend only on broadcasting, type promotion and
the arguments' shapes, so the tracer computes them here (see docs/engine.md, "Speed
notes").
"""

from __future__ import annotations

from typing import Any

import torch

META = torch.device("meta")


def meta_empty(shape: Any, dtype: torch.dtype) -> torch.Tensor:
    """A new meta tensor (a device object, not the string: torch parses that at every call)."""
    return torch.empty(shape, dtype=dtype, device=META)


def meta_like(x: torch.Tensor) -> torch.Tensor:
    """A new meta tensor of ``x``'s shape and dtype, as a shape-preserving op returns.

    ``x.detach()`` when ``x`` is contiguous: a new tensor object at a third of the cost
    of ``torch.empty``. A meta tensor has no data, so sharing ``x``'s (empty) storage
    changes nothing a forward can see. Others get a contiguous empty tensor, as before.
    """
    if x.is_contiguous():
        return x.detach()
    return torch.empty(x.shape, dtype=x.dtype, device=META)


# ----------------------------------------------------------------------------- element-wise
_UNARY = frozenset({
    "relu", "relu_", "relu6", "gelu", "silu", "silu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardswish",
    "hardswish_", "hardsigmoid", "hardsigmoid_", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu",
    "elu_", "mish", "dropout", "dropout_", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d",
    "dropout3d", "contiguous", "clone", "detach", "softmax", "log_softmax", "__neg__", "neg", "abs", "exp", "sqrt",
    "rsqrt", "square", "erf", "sign", "clamp", "clamp_", "clamp_min", "clamp_max", "softplus", "selu", "celu",
    "glu_", "sin", "cos", "log", "reciprocal",
})
_BINARY = frozenset({
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "__add__", "__radd__", "__iadd__", "__sub__",
    "__rsub__", "__isub__", "__mul__", "__rmul__", "__imul__", "__truediv__", "__rtruediv__", "__itruediv__",
    "maximum", "minimum", "pow", "__pow__",
})


def broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """Broadcast two shapes (a fast stand-in for torch.broadcast_shapes)."""
    if a == b:
        return a
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise RuntimeError(f"shapes {a} and {b} do not broadcast")
    return tuple(out)


def _fast_cat(args: tuple, kwargs: dict) -> Any:
    seq = args[0] if args else kwargs.get("tensors")
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if not isinstance(seq, list | tuple) or not seq or "out" in kwargs:
        return NotImplemented
    first = seq[0]
    if not all(isinstance(t, torch.Tensor) and t.device.type == "meta" and t.dim() == first.dim()
               and t.dtype == first.dtype for t in seq) or not isinstance(dim, int) or first.dim() == 0:
        return NotImplemented
    d = dim % first.dim()
    shape = list(first.shape)
    for t in seq[1:]:
        if any(a != b for i, (a, b) in enumerate(zip(t.shape, shape)) if i != d):
            raise RuntimeError(f"cat: sizes of tensors must match except in dimension {d}")
        shape[d] += t.shape[d]
    return meta_empty(shape, first.dtype)


_ADAPTIVE_POOLS = {"adaptive_avg_pool1d": 1, "adaptive_avg_pool2d": 2, "adaptive_avg_pool3d": 3,
                   "_adaptive_avg_pool2d": 2, "_adaptive_avg_pool3d": 3}


def _fast_adaptive_pool(name: str, args: tuple, kwargs: dict) -> Any:
    """Adaptive average pooling keeps every leading dim and sets the spatial ones.

    Torch's meta path for it decomposes into a slow Python ``mean`` reference.
    """
    x = args[0] if args else kwargs.get("input")
    size = args[1] if len(args) > 1 else kwargs.get("output_size")
    n = _ADAPTIVE_POOLS[name]
    if not isinstance(x, torch.Tensor) or x.device.type != "meta" or x.dim() < n + 1:
        return NotImplemented
    sizes = (size,) * n if isinstance(size, int) else tuple(size) if isinstance(size, list | tuple) else None
    if sizes is None or len(sizes) != n:
        return NotImplemented
    spatial = x.shape[-n:]
    out = [s_in if s_out is None else s_out for s_in, s_out in zip(spatial, sizes)]
    if any(not isinstance(v, int) or v < 1 for v in out):
        return NotImplemented
    return meta_empty(list(x.shape[:-n]) + out, x.dtype)


_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _fast_attention(args: tuple, kwargs: dict) -> Any:
    """``scaled_dot_product_attention``: ``[..., L, Ev]`` from ``q [..., L, E]``, ``v [..., S, Ev]``.

    Torch's meta path decomposes it into slow Python references. Only the plain case is handled here: no mask, equal batch dims.
    """
    bound = dict(zip(_SDPA_ARGS, args))
    bound.update(kwargs)
    q, k, v = bound.get("query"), bound.get("key"), bound.get("value")
    if not all(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in (q, k, v)):
        return NotImplemented
    if bound.get("attn_mask") is not None or bound.get("enable_gqa") or set(bound) - set(_SDPA_ARGS):
        return NotImplemented
    if not (q.dim() == k.dim() == v.dim() >= 2) or q.dtype != k.dtype or q.dtype != v.dtype:
        return NotImplemented
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        return NotImplemented
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise RuntimeError(f"scaled_dot_product_attention: query {list(q.shape)}, key {list(k.shape)} and value "
                           f"{list(v.shape)} do not match")
    return meta_empty(list(q.shape[:-1]) + [v.shape[-1]], q.dtype)


def fast_elementwise(name: str, args: tuple, kwargs: dict) -> Any:
    """Output of a common element-wise op on meta tensors, or ``NotImplemented``.

    Torch's meta kernels for these ops are slow Python references; the result is fully determined by broadcasting and type promotion, so compute it here.
    """
    if name in ("cat", "concat", "concatenate"):
        return _fast_cat(args, kwargs)
    if name in _ADAPTIVE_POOLS:
        return _fast_adaptive_pool(name, args, kwargs)
    if name == "scaled_dot_product_attention":
        return _fast_attention(args, kwargs)
    if name in _UNARY:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x.device.type != "meta" or "dtype" in kwargs:
            return NotImplemented
        if kwargs.get("inplace") or name.endswith("_"):
            return x
        return meta_like(x)
    if name in _BINARY and len(args) >= 2 and not kwargs.get("out"):
        a, b = args[0], args[1]
        ta, tb = isinstance(a, torch.Tensor), isinstance(b, torch.Tensor)
        if not (ta or tb) or (ta and a.device.type != "meta") or (tb and b.device.type != "meta"):
            return NotImplemented
        if name.endswith("_") or name.startswith("__i"):
            return a if ta else NotImplemented
        shape = broadcast(tuple(a.shape) if ta else (), tuple(b.shape) if tb else ())
        dtype = a.dtype if ta and tb and a.dtype == b.dtype else torch.result_type(a, b)
        if ta and dtype == a.dtype and shape == a.shape:
            return meta_like(a)
        return meta_empty(shape, dtype)
    return NotImplemented
