"""Label rules for ops that move, merge, split or select tensor dims.

Each rule receives the positional ``args``/``kwargs`` of the call and its output, and
sets the output's labels from the input's. None of them look at the values of the tensors
being moved, so they work on the meta device; selections look at their index (a slice,
an index list or tensor) to tell a whole dim from part of one.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..tree import is_tensor
from .labels import FROZEN, Label
from .state import Labels, TraceState


def _norm_dim(d: int, ndim: int) -> int:
    return d % ndim if ndim else 0


# ------------------------------------------------------------------------- reshape family
def _reshape_groups(src: list[int], dst: list[int]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of input dims with runs of output dims that hold the same elements."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src) or j < len(dst):
        if i < len(src) and src[i] == 1 and (j >= len(dst) or dst[j] != 1):
            groups.append(([i], []))
            i += 1
            continue
        if j < len(dst) and dst[j] == 1 and (i >= len(src) or src[i] != 1):
            groups.append(([], [j]))
            j += 1
            continue
        if i >= len(src) or j >= len(dst):
            return None
        gi, gj = [i], [j]
        pi, pj = src[i], dst[j]
        i += 1
        j += 1
        while pi != pj:
            if pi < pj:
                if i >= len(src):
                    return None
                pi *= src[i]
                gi.append(i)
                i += 1
            else:
                if j >= len(dst):
                    return None
                pj *= dst[j]
                gj.append(j)
                j += 1
        groups.append((gi, gj))
    return groups


def _flat_group_label(st: TraceState, sizes: list[int], labs: list[Label | None]) -> Label | None:
    """Row-major labels of the merged dims (``None`` when no dim in the run is labeled)."""
    labeled = [k for k, lab in enumerate(labs) if lab is not None and sizes[k] > 1]
    if not labeled:
        return None
    if len(labeled) > 1:
        # Merging two independently labeled dims (rare): no single element can stand for
        # a position, so neither side may be pruned.
        for k in labeled:
            st.table.freeze(labs[k])
        return None
    k = labeled[0]
    shape = [1] * len(sizes)
    shape[k] = sizes[k]
    return labs[k].view(shape).expand(sizes).reshape(-1)


def _split_label(st: TraceState, flat: Label, sizes: list[int]) -> list[Label | None]:
    """Labels of output dims ``sizes`` that together hold the elements of ``flat``.

    When one output dim alone determines the element (flatten undone, a pure broadcast)
    it carries the labels exactly. Otherwise (heads split out of a projection, groups of a
    channel shuffle) the innermost dim carries them and positions are coupled across the
    outer dims, so every block loses the same channels and the shape stays rectangular.
    """
    out: list[Label | None] = [None] * len(sizes)
    big = [k for k, s in enumerate(sizes) if s > 1]
    if not big:
        return out
    if len(big) == 1:
        out[big[0]] = flat
        return out
    grid = flat.view(sizes)
    for k in reversed(big):
        idx = [0] * len(sizes)
        idx[k] = slice(None)
        line = grid[tuple(idx)]
        shape = [1] * len(sizes)
        shape[k] = sizes[k]
        if torch.equal(line.view(shape).expand(sizes), grid):
            out[k] = line
            return out
    # "offsets": the innermost dim carries the channels (same offset in every block).
    # "blocks": the next dim out carries whole blocks (attention heads removed whole).
    k = big[-2] if st.split_mode == "blocks" else big[-1]
    idx = [0] * len(sizes)
    idx[k] = slice(None)
    line = grid[tuple(idx)]
    shape = [1] * len(sizes)
    shape[k] = sizes[k]
    st.table.unify_broadcast(grid, line.view(shape))
    if st.split_mode == "blocks":
        st.table.mark_heads(line)
    out[k] = line
    return out


def reshape_labels(st: TraceState, x: torch.Tensor, out_shape: list[int]) -> Labels:
    src = list(x.shape)
    labs = st.labels(x)
    groups = _reshape_groups(src, out_shape)
    if groups is None:
        st.freeze_all(x)
        return (None,) * len(out_shape)
    out: list[Label | None] = [None] * len(out_shape)
    for gi, gj in groups:
        flat = _flat_group_label(st, [src[i] for i in gi], [labs[i] for i in gi])
        if flat is None or not gj:
            continue
        for k, lab in zip(gj, _split_label(st, flat, [out_shape[j] for j in gj])):
            out[k] = lab
    return tuple(out)


def _explicit_sizes(args: tuple, kwargs: dict) -> list[Any] | None:
    shape = args[1:] if len(args) > 1 else kwargs.get("shape", kwargs.get("size"))
    if shape is None:
        return None
    if len(shape) == 1 and isinstance(shape[0], list | tuple | torch.Size):
        shape = shape[0]
    return list(shape)


def rule_reshape(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0]
    labels = reshape_labels(st, x, list(out.shape))
    if name in ("view", "reshape"):
        sizes = _explicit_sizes(args, kwargs)
        if sizes is not None and len(sizes) == len(labels):
            for s, lab in zip(sizes, labels):
                if lab is not None and isinstance(s, int) and s != -1:
                    st.table.mark_sensitive(lab)
    st.set(out, labels, st.prods(x))


# ------------------------------------------------------------------------- permutations
def _perm_from_call(name: str, args: tuple, kwargs: dict, ndim: int) -> list[int] | None:
    if name == "permute":
        dims = args[1:] if len(args) > 1 else kwargs.get("dims")
        if len(dims) == 1 and isinstance(dims[0], list | tuple):
            dims = dims[0]
        return [_norm_dim(d, ndim) for d in dims]
    perm = list(range(ndim))
    if name in ("transpose", "swapaxes", "swapdims", "transpose_"):
        a = args[1] if len(args) > 1 else kwargs.get("dim0")
        b = args[2] if len(args) > 2 else kwargs.get("dim1")
        a, b = _norm_dim(a, ndim), _norm_dim(b, ndim)
        perm[a], perm[b] = perm[b], perm[a]
        return perm
    if name in ("t", "mT", "mH", "adjoint"):
        if ndim >= 2:
            perm[-1], perm[-2] = perm[-2], perm[-1]
        return perm
    if name in ("T", "H"):
        return perm[::-1]
    if name in ("movedim", "moveaxis"):
        src = args[1] if len(args) > 1 else kwargs.get("source")
        dst = args[2] if len(args) > 2 else kwargs.get("destination")
        src = [src] if isinstance(src, int) else list(src)
        dst = [dst] if isinstance(dst, int) else list(dst)
        src = [_norm_dim(d, ndim) for d in src]
        dst = [_norm_dim(d, ndim) for d in dst]
        order = [d for d in range(ndim) if d not in src]
        result: list[int | None] = [None] * ndim
        for s, d in zip(src, dst):
            result[d] = s
        it = iter(order)
        return [r if r is not None else next(it) for r in result]
    return None


def rule_permute(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0]
    perm = _perm_from_call(name, args, kwargs, x.dim())
    if perm is None:
        st.freeze_all(x)
        return
    labs = st.labels(x)
    st.set(out, tuple(labs[p] for p in perm), st.prods(x))


def rule_flip_roll(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0]
    labs = list(st.labels(x))
    if name == "flip":
        dims = args[1] if len(args) > 1 else kwargs.get("dims")
        dims = [dims] if isinstance(dims, int) else list(dims)
        for d in dims:
            d = _norm_dim(d, x.dim())
            if labs[d] is not None:
                labs[d] = labs[d].flip(0)
    else:  # roll
        shifts = args[1] if len(args) > 1 else kwargs.get("shifts")
        dims = args[2] if len(args) > 2 else kwargs.get("dims")
        if dims is None:
            st.freeze_all(x)
            labs = [None] * x.dim()
        else:
            shifts = [shifts] if isinstance(shifts, int) else list(shifts)
            dims = [dims] if isinstance(dims, int) else list(dims)
            for s, d in zip(shifts, dims):
                d = _norm_dim(d, x.dim())
                if labs[d] is not None:
                    labs[d] = labs[d].roll(s, 0)
    st.set(out, tuple(labs), st.prods(x))


# ------------------------------------------------------------------------- concat / stack
def _tensor_list(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    seq = args[0] if args else kwargs.get("tensors")
    return [t for t in seq if is_tensor(t)]


def align_same_rank(st: TraceState, tensors: list[torch.Tensor], skip: int | None) -> list[Label | None]:
    """Unify dims of equally-shaped tensors (except ``skip``); returns the shared labels."""
    ndim = tensors[0].dim()
    result: list[Label | None] = [None] * ndim
    for d in range(ndim):
        if d == skip:
            continue
        labs = [st.labels(t)[d] for t in tensors if t.dim() == ndim and t.shape[d] > 1]
        result[d] = st.table.couple(labs)
    return result


def rule_cat(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    tensors = [t for t in _tensor_list(args, kwargs) if t.dim() == out.dim()]
    if not tensors:
        return
    dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", 0))
    dim = _norm_dim(dim, out.dim())
    labels = align_same_rank(st, tensors, skip=dim)
    parts = [st.labels(t)[dim] for t in tensors]
    if any(p is not None for p in parts):
        labels[dim] = torch.cat(
            [p if p is not None else torch.full((t.shape[dim],), FROZEN, dtype=torch.long)
             for p, t in zip(parts, tensors)]
        )
    st.set(out, tuple(labels), st.union_prods(tensors))


def rule_stack(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    tensors = _tensor_list(args, kwargs)
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    dim = _norm_dim(dim, out.dim())
    labels = align_same_rank(st, tensors, skip=None)
    labels.insert(dim, None)
    st.set(out, tuple(labels), st.union_prods(tensors))


# ------------------------------------------------------------------------- split / select
def _outputs(out: Any) -> list[torch.Tensor]:
    return [o for o in out if is_tensor(o)] if isinstance(out, list | tuple) else [out]


def rule_split(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """split, chunk, tensor_split, split_with_sizes, unbind: slices along one dim."""
    x = args[0]
    labs = st.labels(x)
    prods = st.prods(x)
    if name == "unbind":
        dim = _norm_dim(args[1] if len(args) > 1 else kwargs.get("dim", 0), x.dim())
        rest = labs[:dim] + labs[dim + 1:]
        if labs[dim] is not None:
            st.table.freeze(labs[dim])
        for o in _outputs(out):
            st.set(o, rest, prods)
        return
    dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
    dim = _norm_dim(dim, x.dim())
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
    dim = _norm_dim(args[1] if len(args) > 1 else kwargs.get("dim"), x.dim())
    if name == "select":
        if labs[dim] is not None:
            st.table.freeze(labs[dim])
        labs.pop(dim)
    elif labs[dim] is not None:  # narrow, narrow_copy
        start = args[2] if len(args) > 2 else kwargs.get("start")
        length = args[3] if len(args) > 3 else kwargs.get("length")
        n = x.shape[dim]
        try:
            whole = int(length) == n and _norm_dim(int(start), n) == 0
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
    dim = _norm_dim(args[1] if len(args) > 1 else kwargs.get("dim"), x.dim())
    index = args[2] if len(args) > 2 else kwargs.get("index")
    labs = list(st.labels(x))
    if labs[dim] is not None:
        labs[dim] = _selected(st, labs[dim], _whole_index(index, x.shape[dim]), sensitive=True)
    st.set(out, tuple(labs), st.prods(x))


# ------------------------------------------------------------------------- expand / repeat
def rule_expand(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0]
    labs = st.labels(x)
    lead = out.dim() - x.dim()
    new: list[Label | None] = [None] * lead
    for d, lab in enumerate(labs):
        new.append(lab if x.shape[d] == out.shape[lead + d] else None)
    st.set(out, tuple(new), st.prods(x))


def rule_repeat(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0]
    labs = st.labels(x)
    lead = out.dim() - x.dim()
    new: list[Label | None] = [None] * lead
    for d, lab in enumerate(labs):
        reps = out.shape[lead + d] // max(x.shape[d], 1)
        if lab is not None and reps > 1:
            lab = lab.repeat(reps)
        new.append(lab)
    st.set(out, tuple(new), st.prods(x))


def rule_repeat_interleave(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0]
    if not is_tensor(x):
        return
    dim = kwargs.get("dim", args[2] if len(args) > 2 else None)
    reps = args[1] if len(args) > 1 else kwargs.get("repeats")
    labs = list(st.labels(x))
    if dim is None or not isinstance(reps, int):
        st.freeze_all(x)
        return
    dim = _norm_dim(dim, x.dim())
    if labs[dim] is not None:
        labs[dim] = labs[dim].repeat_interleave(reps)
    st.set(out, tuple(labs), st.prods(x))


def rule_pixel_shuffle(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0]
    labs = list(st.labels(x))
    c = -3
    r = args[1] if len(args) > 1 else kwargs.get("upscale_factor", kwargs.get("downscale_factor"))
    lab = labs[c]
    new = [None] * out.dim()
    if lab is not None:
        if name == "pixel_shuffle":
            grid = lab.view(-1, r * r)
            st.table.unify_broadcast(grid, grid[:, :1])
            new[c] = grid[:, 0]
        else:
            new[c] = lab.repeat_interleave(r * r)
    for d in range(out.dim() + c):
        new[d] = labs[d] if x.shape[d] == out.shape[d] else None
    st.set(out, tuple(new), st.prods(x))


def rule_channel_shuffle(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0]
    groups = args[1] if len(args) > 1 else kwargs.get("groups")
    labs = list(st.labels(x))
    lab = labs[1]
    if lab is not None:
        grid = lab.view(groups, -1)
        st.table.unify_broadcast(grid, grid[:1])
        labs[1] = grid.t().reshape(-1)
    st.set(out, tuple(labs), st.prods(x))


def numel_of(shape: list[int]) -> int:
    return math.prod(shape)
