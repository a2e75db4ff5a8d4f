"""Label rules for arithmetic: element-wise ops, reductions, contractions, functional layers."""

from __future__ import annotations

from typing import Any

import torch

from ..tree import is_tensor
from .labels import Label
from .state import Labels, TraceState


def tensors_in(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    if not kwargs and len(args) == 1 and is_tensor(args[0]):  # a layer's usual call
        return [args[0]]
    out: list[torch.Tensor] = []
    for a in (*args, *kwargs.values()):
        if is_tensor(a):
            out.append(a)
        elif isinstance(a, list | tuple):
            out.extend(t for t in a if is_tensor(t))
    return out


def broadcast_labels(st: TraceState, tensors: list[torch.Tensor], out_shape: list[int]) -> Labels:
    """Right-align inputs against the output and couple the dims that meet."""
    ndim = len(out_shape)
    result: list[Label | None] = [None] * ndim
    for k in range(1, ndim + 1):
        size = out_shape[-k]
        if size <= 1:
            continue
        labs = [st.labels(t)[-k] for t in tensors if t.dim() >= k and t.shape[-k] == size]
        result[-k] = st.table.couple(labs)
    return tuple(result)


def rule_elementwise(st: TraceState, tensors: list[torch.Tensor], outs: list[torch.Tensor]) -> None:
    labels = broadcast_labels(st, tensors, list(outs[0].shape))
    prods = st.union_prods(tensors)
    for o in outs:
        st.set(o, labels if o.shape == outs[0].shape else (None,) * o.dim(), prods)


def rule_aligned(st: TraceState, x: torch.Tensor, others: list[torch.Tensor], outs: list[torch.Tensor]) -> None:
    """Same rank as ``x``: dims of equal size keep their labels (pooling, interpolate, pad...).

    A labeled dim that changes size to anything but 1 is frozen: the op would not follow a
    pruned width. Other tensor inputs' labeled dims are frozen too (their role is unknown).
    """
    labs = st.labels(x)
    for t in others:
        if t is not x:
            st.freeze_all(t)
    prods = st.union_prods([x] + others)
    for o in outs:
        new: list[Label | None] = []
        for d in range(o.dim()):
            lab = labs[d] if d < len(labs) else None
            if lab is not None and o.shape[d] != x.shape[d]:
                if o.shape[d] != 1:
                    st.table.freeze(lab)
                lab = None
            new.append(lab)
        st.set(o, tuple(new), prods)


_REDUCTIONS = {
    "sum", "mean", "amax", "amin", "max", "min", "std", "var", "norm", "prod", "logsumexp",
    "argmax", "argmin", "all", "any", "nansum", "nanmean", "median", "count_nonzero",
    "std_mean", "var_mean", "aminmax",
}


def rule_reduction(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> bool:
    x = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 and not is_tensor(args[1]) else None)
    if name == "norm":
        dim = kwargs.get("dim", args[2] if len(args) > 2 else None)
    outs = [o for o in (out if isinstance(out, tuple | list) else [out]) if is_tensor(o)]
    if dim is None:
        if all(o.dim() == 0 for o in outs):
            for o in outs:
                st.set(o, (), st.prods(x))
            return True
        return False
    dims = {dim % x.dim()} if isinstance(dim, int) else {d % x.dim() for d in dim}
    labs = st.labels(x)
    keep = [labs[d] for d in range(x.dim()) if d not in dims]
    for o in outs:
        if o.dim() == x.dim():  # keepdim
            st.set(o, tuple(None if d in dims else labs[d] for d in range(x.dim())), st.prods(x))
        elif o.dim() == len(keep):
            st.set(o, tuple(keep), st.prods(x))
    return True


def rule_matmul(st: TraceState, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    la, lb = st.labels(a), st.labels(b)
    prods = st.prods(a) | st.prods(b)
    if a.dim() == 1 or b.dim() == 1:
        st.table.unify(la[-1], lb[0] if b.dim() == 1 else lb[-2])
        st.set(out, (None,) * out.dim(), prods)
        st.freeze_all(a)
        st.freeze_all(b)
        return
    st.table.unify(la[-1], lb[-2])
    batch = out.dim() - 2
    result: list[Label | None] = [None] * out.dim()
    for k in range(1, batch + 1):
        labs = []
        for t, lt in ((a, la), (b, lb)):
            if t.dim() - 2 >= k and t.shape[-2 - k] > 1:
                labs.append(lt[-2 - k])
        if any(lab is None for lab in labs):
            for lab in labs:
                st.table.freeze(lab)
        elif labs:
            for lab in labs[1:]:
                st.table.unify(labs[0], lab)
            result[-2 - k] = labs[0]
    result[-2] = la[-2]
    result[-1] = lb[-1]
    st.set(out, tuple(result), prods)


def rule_einsum(st: TraceState, args: tuple, out: torch.Tensor) -> None:
    eq = args[0]
    operands = list(args[1]) if len(args) == 2 and isinstance(args[1], list | tuple) else list(args[1:])
    if not isinstance(eq, str) or "..." in eq or "->" not in eq:
        for t in operands:
            if is_tensor(t):
                st.freeze_all(t)
        return
    lhs, rhs = eq.replace(" ", "").split("->")
    letters: dict[str, list[Label | None]] = {}
    for spec, t in zip(lhs.split(","), operands):
        labs = st.labels(t)
        for ch, lab, size in zip(spec, labs, t.shape):
            if size > 1:
                letters.setdefault(ch, []).append(lab)
    result: list[Label | None] = []
    for ch in rhs:
        result.append(st.table.couple(letters.get(ch, [])))
    for ch, labs in letters.items():
        if ch not in rhs:
            st.table.couple(labs)
    st.set(out, tuple(result), st.union_prods([t for t in operands if is_tensor(t)]))


def rule_linear(st: TraceState, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
    x = args[0]
    w = args[1] if len(args) > 1 else kwargs.get("weight")
    b = args[2] if len(args) > 2 else kwargs.get("bias")
    lx, lw = st.labels(x), st.labels(w)
    st.table.unify(lx[-1], lw[-1] if w.dim() == 2 else None)
    out_lab = lw[0] if w.dim() == 2 else None
    if is_tensor(b):
        st.table.unify(out_lab, st.labels(b)[0])
    prods = st.prods(x) | st.prods(w)
    st.set(out, tuple(lx[:-1]) + (out_lab,), prods)


def rule_conv(st: TraceState, name: str, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
    x = args[0]
    w = args[1] if len(args) > 1 else kwargs.get("weight")
    b = args[2] if len(args) > 2 else kwargs.get("bias")
    groups = kwargs.get("groups", args[6] if len(args) > 6 else 1)
    lx, lw = st.labels(x), st.labels(w)
    transposed = "transpose" in name
    w_in, w_out = (lw[0], lw[1]) if transposed else (lw[1], lw[0])
    if groups == 1:
        st.table.unify(lx[1], w_in)
        out_lab = w_out
    elif not transposed and groups == x.shape[1] == w.shape[0] and w.shape[1] == 1:
        # depthwise with multiplier 1 (timm's Conv2dSame calls F.conv2d): channel c in is channel c out.
        # ``groups`` is passed as a value: a conv layer's pruner updates its own, but a literal
        # (timm's BlurPool2d: groups=self.channels with a buffer filter) would not follow, so
        # the dry run decides.
        st.table.unify(lx[1], lw[0])
        st.table.mark_sensitive(lw[0])
        out_lab = lw[0]
    else:
        st.freeze_all(x)
        st.freeze_all(w)
        out_lab = None
    if is_tensor(b):
        st.table.unify(out_lab, st.labels(b)[0])
    new = [None] * out.dim()
    new[1] = out_lab
    new[0] = lx[0] if out.shape[0] == x.shape[0] else None
    st.set(out, tuple(new), st.prods(x) | st.prods(w))


def rule_norm(st: TraceState, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """batch_norm, instance_norm, group_norm, layer_norm, rms_norm, prelu called functionally."""
    x = args[0]
    outs = [o for o in (out if isinstance(out, tuple | list) else [out]) if is_tensor(o)]
    lx = list(st.labels(x))
    if name in ("layer_norm", "rms_norm"):
        shape = args[1] if len(args) > 1 else kwargs.get("normalized_shape")
        cdim = -1
        if len(shape) != 1:
            for d in range(1, len(shape) + 1):
                st.table.freeze(lx[-d])
        else:
            # The shape is passed as a value: it follows a prune only when it is a
            # normalization layer's own normalized_shape (torchvision's LayerNorm2d), which
            # its pruner updates. A dry run tells the two apart.
            st.table.mark_sensitive(lx[-1])
    else:
        cdim = 1 if x.dim() > 1 else 0
    params = [t for t in tensors_in(args[1:], kwargs) if t.dim() == 1 and t.numel() == x.shape[cdim]]
    for p in params:
        st.table.unify(lx[cdim], st.labels(p)[0])
    if name == "group_norm":
        g = args[1] if len(args) > 1 else kwargs.get("num_groups")
        if lx[cdim] is not None and g > 1:
            grid = lx[cdim].view(g, -1)
            st.table.unify_broadcast(grid, grid[:1])
    prods = st.union_prods([x] + params)
    for o in outs:
        st.set(o, tuple(lx) if o.shape == x.shape else (None,) * o.dim(), prods)


def rule_embedding(st: TraceState, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
    w = args[1] if len(args) > 1 else kwargs.get("weight")
    lw = st.labels(w)
    st.table.freeze(lw[0])
    st.set(out, (None,) * (out.dim() - 1) + (lw[1],), st.prods(w))


def rule_sdpa(st: TraceState, args: tuple, kwargs: dict, out: Any) -> None:
    q = args[0] if args else kwargs["query"]
    k = args[1] if len(args) > 1 else kwargs["key"]
    v = args[2] if len(args) > 2 else kwargs["value"]
    lq, lk, lv = st.labels(q), st.labels(k), st.labels(v)
    st.table.unify(lq[-1], lk[-1])
    batch = broadcast_labels(st, [q, k, v], list(q.shape[:-2]) + [1, 1])
    o = out[0] if isinstance(out, tuple) else out
    new = list(batch[:-2]) + [lq[-2], lv[-1]]
    st.set(o, tuple(new), st.union_prods([q, k, v]))
    for extra in tensors_in(args[3:], {kk: vv for kk, vv in kwargs.items() if kk not in ("query", "key", "value")}):
        st.freeze_all(extra)
