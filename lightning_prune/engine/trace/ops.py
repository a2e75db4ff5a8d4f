"""Dispatch a traced call to its label rule.

Ops are recognised by name, so ``torch.cat``, ``Tensor.view`` and ``Tensor.__add__`` all
find their rule whether they were called as functions or methods. Ops without a specific
rule fall back, in order, to:

1. *element-wise*: the output has the broadcast shape of the tensor inputs;
2. *aligned*: the output has the rank of the first input (pooling, interpolation, padding);
3. *unknown*: every labeled dim of every input is frozen. Conservative, never wrong: the
   channels it touches simply cannot be pruned. ``DependencyGraph.unknown_ops`` lists them.
"""

from __future__ import annotations

from typing import Any

import torch

from ..tree import is_tensor
from . import ops_math as m
from . import ops_select as sel
from . import ops_shape as s
from .fast_ops import broadcast
from .state import TraceState

_SHAPE_RULES = {
    **dict.fromkeys(["view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as",
                     "reshape_as", "squeeze_", "unsqueeze_", "ravel", "atleast_2d", "atleast_3d"], s.rule_reshape),
    **dict.fromkeys(["permute", "transpose", "transpose_", "swapaxes", "swapdims", "t", "T", "mT", "mH", "H",
                     "adjoint", "movedim", "moveaxis"], s.rule_permute),
    **dict.fromkeys(["flip", "roll"], s.rule_flip_roll),
    **dict.fromkeys(["cat", "concat", "concatenate"], s.rule_cat),
    **dict.fromkeys(["stack"], s.rule_stack),
    **dict.fromkeys(["split", "chunk", "tensor_split", "split_with_sizes", "unbind", "unsafe_split",
                     "unsafe_chunk"], sel.rule_split),
    **dict.fromkeys(["narrow", "narrow_copy", "select"], sel.rule_narrow_select),
    "__getitem__": sel.rule_getitem,
    "__setitem__": sel.rule_setitem,
    "index_select": sel.rule_index_select,
    **dict.fromkeys(["expand", "expand_as", "broadcast_to"], s.rule_expand),
    **dict.fromkeys(["repeat", "tile"], s.rule_repeat),
    "repeat_interleave": s.rule_repeat_interleave,
    **dict.fromkeys(["pixel_shuffle", "pixel_unshuffle"], s.rule_pixel_shuffle),
    **dict.fromkeys(["channel_shuffle", "native_channel_shuffle"], s.rule_channel_shuffle),
}

# Ops whose output values are scattered, sorted or gathered along a dim, or written to fixed
# positions of it: labeled dims that they touch cannot be followed, so they are frozen.
_FREEZING = {
    "sort", "argsort", "topk", "gather", "scatter", "scatter_add", "scatter_reduce", "nonzero",
    "masked_select", "unique", "unique_consecutive", "take", "take_along_dim", "kthvalue", "mode",
    "index_put", "index_put_", "index_add", "index_copy", "masked_scatter", "unfold", "fold",
    "bincount", "histc", "searchsorted", "bucketize", "multinomial", "cdist", "pdist", "diag",
    "diagonal", "tril", "triu", "trace", "outer", "kron", "cross", "stft", "fft_fft", "det",
    "inverse", "nms", "batched_nms", "index_fill", "index_reduce", "slice_scatter", "select_scatter",
    "diagonal_scatter", "as_strided", "hsplit", "vsplit", "dsplit",
}

# Ops whose outputs do not depend on the inputs' channel layout at all (fresh constants).
_CONSTANT = {
    "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "zeros", "ones", "empty",
    "full", "arange", "linspace", "logspace", "rand", "randn", "randint", "eye", "tensor",
    "as_tensor", "meshgrid", "size", "shape", "dim", "numel", "stride",
}

_LIKE = {"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like"}

_MATH_RULES = {
    "linear": m.rule_linear,
    "embedding": m.rule_embedding,
    "scaled_dot_product_attention": m.rule_sdpa,
}

_NORMS = {"batch_norm", "instance_norm", "group_norm", "layer_norm", "rms_norm", "prelu"}
_CONVS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "convolution"}


def op_name(func: Any) -> str:
    name = getattr(func, "__name__", "") or ""
    if name in ("__get__", "__set__"):
        owner = getattr(func, "__self__", None)
        name = getattr(owner, "__name__", name)
    return name


def _outs(out: Any) -> list[torch.Tensor]:
    if is_tensor(out):
        return [out]
    if isinstance(out, tuple | list):
        return [o for o in out if is_tensor(o)]
    return []


#: Calls that hand a tensor's sizes to Python. An int read this way and used later (in a
#: ``reshape(B, N, 3, heads, C // heads)``, a ``split``, a new tensor) is a constant to the
#: trace, which cannot follow it to where it is used: a prune of that dim may break the
#: model without any labeled op noticing. So the dims read are marked sensitive, and a
#: group holding them is re-checked with a dry run before its prune is kept.
_SHAPE_READS = {"size", "shape", "numel"}


def _mark_read_dims(st: TraceState, name: str, args: tuple) -> None:
    if not args or not is_tensor(args[0]):
        return
    labels = st.labels(args[0])
    if name == "size" and len(args) > 1 and isinstance(args[1], int):
        labels = (labels[args[1]],) if -len(labels) <= args[1] < len(labels) else ()
    for lab in labels:
        st.table.mark_sensitive(lab)


def apply_rule(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Propagate labels from the inputs of one traced call (named by :func:`op_name`) to its outputs."""
    if name in _SHAPE_READS:
        _mark_read_dims(st, name, args)
        return
    if name == "__setitem__":
        if args and is_tensor(args[0]):
            sel.rule_setitem(st, name, args, kwargs, out)
        return
    outs = _outs(out)
    if not outs:
        return
    inputs = m.tensors_in(args, kwargs)
    if name in _CONSTANT:
        return
    base = name[:-1] if name.endswith("_") and not name.startswith("__") else name
    if base.startswith("__i") and base.endswith("__"):  # __iadd__ -> __add__
        base = "__" + base[3:]
    if name in _LIKE:
        if inputs:
            labs = st.labels(inputs[0])
            st.set(outs[0], labs if outs[0].shape == inputs[0].shape else (None,) * outs[0].dim(),
                   st.prods(inputs[0]))
        return
    if not inputs:
        return
    rule = _SHAPE_RULES.get(name) or _SHAPE_RULES.get(base)
    if rule is not None and (rule in (s.rule_cat, s.rule_stack) or (args and is_tensor(args[0]))):
        rule(st, base if base in _SHAPE_RULES else name, args, kwargs, out)
        return
    if base in _MATH_RULES:
        _MATH_RULES[base](st, args, kwargs, outs[0])
        return
    if base in _NORMS:
        m.rule_norm(st, base, args, kwargs, out)
        return
    if base in _CONVS:
        m.rule_conv(st, base, args, kwargs, outs[0])
        return
    if base in ("matmul", "__matmul__", "mm", "bmm", "__rmatmul__"):
        a, b = (args[1], args[0]) if base == "__rmatmul__" else (args[0], args[1])
        m.rule_matmul(st, a, b, outs[0])
        return
    if base in ("addmm", "baddbmm", "addbmm"):
        m.rule_matmul(st, args[1], args[2], outs[0])
        m.rule_elementwise(st, [args[0], outs[0]], [outs[0]])
        return
    if base == "einsum":
        m.rule_einsum(st, args, outs[0])
        return
    if base in _FREEZING:
        for t in inputs:
            st.freeze_all(t)
        return
    if base in m._REDUCTIONS and is_tensor(args[0]) and m.rule_reduction(st, base, args, kwargs, out):
        return
    # Generic fallbacks.
    try:
        shape: tuple[int, ...] = ()
        for t in inputs:
            shape = broadcast(shape, tuple(t.shape))
        bshape = list(shape)
    except RuntimeError:
        bshape = None
    if bshape is not None and list(outs[0].shape) == bshape:
        m.rule_elementwise(st, inputs, outs)
        return
    first = inputs[0]
    if all(o.dim() == first.dim() for o in outs):
        m.rule_aligned(st, first, inputs[1:], outs)
        return
    st.note_unknown(name)
    for t in inputs:
        st.freeze_all(t)
