"""Label rules for ops that split a dim or select part of it: split/chunk/unbind, narrow,
select, indexing (get and set) and index_select.

A selection names channel positions. A prune shifts positions, so a selection of part
of a channel dim freezes the whole dim, while a selection of the whole dim passes its
labels on (checked by a dry run when it was written with today's width).
"""

from __future__ import annotations

from typing import Any

import torch

from ..tree import is_tensor
from .labels import Label
from .ops_shape import norm_dim
from .state import Labels, TraceState


# ------------------------------------------------------------------------- split / select
def _outputs(out: Any) -> list[torch.Tensor]:
    return [o for o in out if is_tensor(o)] if isinstance(out, list | tuple) else [out]


def rule_split(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """split, chunk, tensor_split, split_with_sizes, unbind: slices along one dim."""
    x = args[0]
    labs = st.labels(x)
    prods = st.prods(x)
    if name == "unbind":
        dim = norm_dim(args[1] if len(args) > 1 else kwargs.get("dim", 0), x.dim())
        rest = labs[:dim] + labs[dim + 1:]
        if labs[dim] is not None:
            st.table.freeze(labs[dim])
        for o in _outputs(out):
            st.set(o, rest, prods)
        return
    dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
    dim = norm_dim(dim, x.dim())
    sizes = args[1] if len(args) > 1 else kwargs.get(
        "split_size_or_sections", kwargs.get("split_size", kwargs.get("chunks", kwargs.get("sections"))))
    outs = _outputs(out)
    if labs[dim] is not None:
        even = len(outs) > 1 and all(o.dim() == x.dim() and o.shape[dim] == outs[0].shape[dim] for o in outs)
        whole = len(outs) == 1 and outs[0].dim() == x.dim() and outs[0].shape[dim] == x.shape[dim]
        if name in ("chunk", "unsafe_chunk", "tensor_split") and isinstance(sizes, int) and even:
            # Equal chunks of the current width: every chunk must lose the same offsets.
            grid = labs[dim].view(len(outs), -1)
            st.table.unify_broadcast(grid, grid[:1])
        elif not whole:
            # Section sizes written as ints (often from an attribute) will not follow a
            # prune, and neither do unequal chunks (chunk(3) of 8 is 3+3+2; of 7, 3+3+1).
            st.table.mark_sensitive(labs[dim])
    offset = 0
    for o in outs:
        size = o.shape[dim] if o.dim() == x.dim() else 0
        new = list(labs)
        if labs[dim] is not None:
            new[dim] = labs[dim][offset:offset + size]
        offset += size
        st.set(o, tuple(new), prods)


# A selection by value (``x[:, :8]``, ``x.narrow(1, 0, 8)``, ``x[:, [0, 2]]``) names fixed
# positions: once a channel before or inside it is pruned, the same positions pick other
# channels, or more than are left. So a labeled dim it selects from keeps its labels only
# when the selection is the whole dim in order, and is frozen otherwise. A slice that
# covers the dim still does after a prune (slice bounds clamp); a whole-dim ``narrow`` or
# index list written with the current width does not, so those are marked sensitive and
# a prune that touches them is checked by a dry run.


def _whole_slice(k: slice, n: int) -> bool:
    """``k`` selects every position of a dim of size ``n``, in order."""
    try:
        return k.indices(n) == (0, n, 1)
    except (TypeError, ValueError, RuntimeError):  # bounds we cannot read (meta tensors)
        return False


def _whole_index(index: Any, n: int) -> bool:
    """``index`` (positions or a boolean mask) selects every position of a dim of size ``n``, in order."""
    if is_tensor(index) and index.device.type == "meta":
        return False
    idx = torch.as_tensor(index).cpu()
    if idx.dim() != 1 or idx.numel() != n:
        return False
    if idx.dtype == torch.bool:
        return bool(idx.all())
    if idx.dtype.is_floating_point or idx.dtype.is_complex:
        return False
    return bool(torch.equal(idx.long(), torch.arange(n)))


def _selected(st: TraceState, lab: Label | None, whole: bool, sensitive: bool = False) -> Label | None:
    """The labels of a selection from a dim labeled ``lab``: all of them, or none (frozen)."""
    if lab is None:
        return None
    if not whole:
        st.table.freeze(lab)
        return None
    if sensitive:
        st.table.mark_sensitive(lab)
    return lab


def rule_narrow_select(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0]
    labs = list(st.labels(x))
    dim = norm_dim(args[1] if len(args) > 1 else kwargs.get("dim"), x.dim())
    if name == "select":
        if labs[dim] is not None:
            st.table.freeze(labs[dim])
        labs.pop(dim)
    elif labs[dim] is not None:  # narrow, narrow_copy
        start = args[2] if len(args) > 2 else kwargs.get("start")
        length = args[3] if len(args) > 3 else kwargs.get("length")
        n = x.shape[dim]
        try:
            whole = int(length) == n and norm_dim(int(start), n) == 0
        except (TypeError, ValueError, RuntimeError, NotImplementedError):  # a meta start: unknown
            whole = False
        labs[dim] = _selected(st, labs[dim], whole, sensitive=True)
    st.set(out, tuple(labs), st.prods(x))


def index_labels(st: TraceState, x: torch.Tensor, key: Any) -> Labels | None:
    """Labels of ``x[key]``; ``None`` when the key is too dynamic to follow."""
    labs = list(st.labels(x))
    if not isinstance(key, tuple):
        key = (key,)
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    out: list[Label | None] = []
    d = 0
    advanced = 0
    for k in key:
        if k is Ellipsis:
            skip = x.dim() - n_real
            out.extend(labs[d:d + skip])
            d += skip
        elif k is None:
            out.append(None)
        elif isinstance(k, bool):
            return None
        elif isinstance(k, int) or (is_tensor(k) and k.dim() == 0 and not k.dtype.is_floating_point):
            if labs[d] is not None:
                st.table.freeze(labs[d])
            d += 1
        elif isinstance(k, slice):
            lab = labs[d]
            out.append(_selected(st, lab, lab is not None and _whole_slice(k, x.shape[d])))
            d += 1
        elif (is_tensor(k) and k.dim() == 1) or (isinstance(k, list) and all(isinstance(v, int) for v in k)):
            # positions or a boolean mask (a list of bools is a mask too)
            advanced += 1
            lab = labs[d]
            out.append(_selected(st, lab, lab is not None and _whole_index(k, x.shape[d]), sensitive=True))
            d += 1
        else:
            return None
    if advanced > 1:
        return None
    out.extend(labs[d:])
    return tuple(out)


def rule_getitem(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, key = args[0], args[1]
    labels = index_labels(st, x, key)
    if labels is None or len(labels) != out.dim():
        st.freeze_all(x)
        return
    st.set(out, labels, st.prods(x))


def rule_setitem(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, key, value = args[0], args[1], args[2]
    labels = index_labels(st, x, key)
    if not is_tensor(value):
        return
    if labels is None:
        st.freeze_all(x)
        st.freeze_all(value)
        return
    vlabs = st.labels(value)
    # right-align value against the selected view (broadcasting semantics)
    for k in range(1, value.dim() + 1):
        if k > len(labels) or value.shape[-k] == 1:
            continue
        st.table.unify(labels[-k], vlabs[-k])
    st.set(x, st.labels(x), st.prods(x) | st.prods(value))


def rule_index_select(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0]
    dim = norm_dim(args[1] if len(args) > 1 else kwargs.get("dim"), x.dim())
    index = args[2] if len(args) > 2 else kwargs.get("index")
    labs = list(st.labels(x))
    if labs[dim] is not None:
        labs[dim] = _selected(st, labs[dim], _whole_index(index, x.shape[dim]), sensitive=True)
    st.set(out, tuple(labs), st.prods(x))
