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


def norm_dim(d: int, ndim: int) -> int:
    """``d`` as a non-negative dim of a tensor with ``ndim`` dims."""
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
    elif name == "unflatten":
        # the new sizes are literals (nn.Unflatten keeps them as an attribute no prune updates)
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        sizes = args[2] if len(args) > 2 else kwargs.get("sizes")
        if isinstance(dim, int) and sizes is not None:
            start = norm_dim(dim, x.dim())
            for lab in labels[start:start + len(sizes)]:
                st.table.mark_sensitive(lab)
    st.set(out, labels, st.prods(x))


# ------------------------------------------------------------------------- permutations
def _perm_from_call(name: str, args: tuple, kwargs: dict, ndim: int) -> list[int] | None:
    if name == "permute":
        dims = args[1:] if len(args) > 1 else kwargs.get("dims")
        if len(dims) == 1 and isinstance(dims[0], list | tuple):
            dims = dims[0]
        return [norm_dim(d, ndim) for d in dims]
    perm = list(range(ndim))
    if name in ("transpose", "swapaxes", "swapdims", "transpose_"):
        a = args[1] if len(args) > 1 else kwargs.get("dim0")
        b = args[2] if len(args) > 2 else kwargs.get("dim1")
        a, b = norm_dim(a, ndim), norm_dim(b, ndim)
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
        src = [norm_dim(d, ndim) for d in src]
        dst = [norm_dim(d, ndim) for d in dst]
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
            d = norm_dim(d, x.dim())
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
                d = norm_dim(d, x.dim())
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
    dim = norm_dim(dim, out.dim())
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
    dim = norm_dim(dim, out.dim())
    labels = align_same_rank(st, tensors, skip=None)
    labels.insert(dim, None)
    st.set(out, tuple(labels), st.union_prods(tensors))


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
    dim = norm_dim(dim, x.dim())
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
