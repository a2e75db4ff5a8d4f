"""How a known layer couples the channels of its inputs, outputs and parameters.

A layer with a layer pruner is traced as one unit. Its rule allocates the layer's channel
spaces (``out`` and ``in``; a single space when input and output channels are the same
channels) and couples them to the labels of the tensors that flow in and out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..tree import is_tensor, tensor_leaves
from .labels import Label
from .ops_math import tensors_in

if TYPE_CHECKING:
    from .tracer import Tracer

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_RNN = (nn.LSTM, nn.GRU, nn.RNN)
_NORMALIZED = (nn.LayerNorm,) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _is_builtin(tracer: Tracer, module: nn.Module) -> bool:
    return not tracer.customized or not any(isinstance(module, cls) for cls in tracer.customized)


def _sizes(pruner: Any, module: nn.Module) -> tuple[int | None, int | None]:
    try:
        out = pruner.get_out_channels(module)
    except NotImplementedError:
        out = None
    try:
        inn = pruner.get_in_channels(module)
    except NotImplementedError:
        inn = None
    return out, inn


def _couples(pruner: Any, module: nn.Module) -> bool:
    fn = getattr(pruner, "couples", None)
    if callable(fn):
        return bool(fn(module))
    return bool(getattr(pruner, "couples_in_out", False))


def _dim(pruner: Any, module: nn.Module, which: str) -> int:
    fn = getattr(pruner, f"{which}_channel_dim_of", None)
    if callable(fn):
        return int(fn(module))
    return int(getattr(pruner, f"{which}_channel_dim", 1))


def layer_spaces(tracer: Tracer, module: nn.Module, pruner: Any) -> tuple[Label | None, Label | None]:
    """The (out, in) labels of a layer; the same object when they are coupled."""
    out_n, in_n = _sizes(pruner, module)
    out_lab = tracer.space(module, "out", out_n) if out_n else None
    in_lab = out_lab if _couples(pruner, module) else (tracer.space(module, "in", in_n) if in_n else None)
    if _computed_weight(module):
        tracer.table.freeze(out_lab)
        tracer.table.freeze(in_lab)
    return out_lab, in_lab


def _computed_weight(module: nn.Module) -> bool:
    """The layer's ``weight`` is recomputed from other tensors at every forward
    (``parametrizations.weight_norm``, old-style ``weight_norm``'s ``weight_g``/``weight_v``).

    A layer pruner slices ``weight`` itself, which the next forward would rebuild at its old
    size, so such a layer keeps its channels whole.
    """
    # parametrize.is_parametrized, without its getattr (a miss costs an AttributeError)
    if isinstance(module._modules.get("parametrizations"), nn.ModuleDict):
        return True
    weight = module.__dict__.get("weight")
    return isinstance(weight, torch.Tensor) and "weight" not in module._parameters


def _first_float(inputs: list[torch.Tensor]) -> torch.Tensor | None:
    for t in inputs:
        if t.dtype.is_floating_point or t.dtype.is_complex:
            return t
    return None


def _carry(tracer: Tracer, x: torch.Tensor, o: torch.Tensor, skip: set[int]) -> list[Label | None]:
    """Non-channel dims of ``o`` take ``x``'s labels where they line up."""
    lx = tracer.state.labels(x)
    new: list[Label | None] = [None] * o.dim()
    if o.dim() != x.dim():
        for d, lab in enumerate(lx):
            if d not in skip:
                tracer.table.freeze(lab)
        return new
    for d in range(o.dim()):
        if d in skip:
            continue
        lab = lx[d]
        if lab is not None and o.shape[d] != x.shape[d]:
            tracer.table.freeze(lab)
            lab = None
        new[d] = lab
    return new


def _unify_channel(tracer: Tracer, lab: Label | None, space: Label | None) -> None:
    if space is None:
        tracer.table.freeze(lab)
    else:
        tracer.table.unify(lab, space)


def _unify_groups(tracer: Tracer, space: Label | None, groups: int) -> None:
    """Same offset in every group is one channel: groups keep equal widths."""
    if space is not None and groups > 1 and space.numel() % groups == 0:
        grid = space.view(groups, -1)
        tracer.table.unify_broadcast(grid, grid[:1])


def apply_module_rule(tracer: Tracer, module: nn.Module, name: str, pruner: Any,
                      args: tuple, kwargs: dict, output: Any) -> None:
    st = tracer.state
    inputs = tensors_in(args, kwargs)
    x = _first_float(inputs)
    prods = st.union_prods(inputs)
    for p in prods:
        tracer.edges.add((p, name))
    here = frozenset({name})
    st.note_call(name)
    builtin = _is_builtin(tracer, module)

    if builtin and isinstance(module, nn.MultiheadAttention):
        _rule_mha(tracer, module, pruner, args, kwargs, output, here)
        return
    if builtin and isinstance(module, _RNN):
        _rule_rnn(tracer, module, pruner, x, args, output, here)
        return

    out_lab, in_lab = layer_spaces(tracer, module, pruner)
    if builtin and isinstance(module, _CONV + _CONVT) and module.groups > 1:
        out_lab, in_lab = _conv_groups(tracer, module, out_lab, in_lab)
    if builtin and isinstance(module, nn.GroupNorm):
        _unify_groups(tracer, out_lab, module.num_groups)

    cin = _dim(pruner, module, "in")
    cout = _dim(pruner, module, "out")
    if builtin and isinstance(module, _NORMALIZED) and x is not None:
        _freeze_inner_normalized(tracer, module, x)
    is_embedding = builtin and isinstance(module, nn.Embedding)
    if out_lab is None and in_lab is None and x is not None:
        # Nothing to prune in this layer (e.g. PReLU with one shared slope): transparent.
        outs = [o for o in tensor_leaves(output)]
        for o in outs:
            st.set(o, tuple(_carry(tracer, x, o, set())), prods | here)
        return
    if x is not None and not is_embedding and x.dim() > 0:
        d = cin % x.dim()
        lx = st.labels(x)
        if in_lab is not None and x.shape[d] == in_lab.numel():
            tracer.table.unify(lx[d], in_lab)
        else:
            tracer.table.freeze(lx[d])
            tracer.table.freeze(in_lab)
    for extra in inputs:
        if extra is not x:
            st.freeze_all(extra)
    for i, o in enumerate(tensor_leaves(output)):
        if o.dim() == 0:
            continue
        d = cout % o.dim()
        labels = _carry(tracer, x, o, {d}) if (x is not None and not is_embedding) else [None] * o.dim()
        if i == 0 and out_lab is not None and o.shape[d] == out_lab.numel():
            labels[d] = out_lab
        elif i == 0:
            tracer.table.freeze(out_lab)
        st.set(o, tuple(labels), here)


def _freeze_inner_normalized(tracer: Tracer, norm: nn.Module, x: torch.Tensor) -> None:
    """``LayerNorm([C, H, W])`` prunes only ``C``: ``H`` and ``W`` are fixed in
    ``normalized_shape`` (and its weight), so whatever they carry cannot be pruned."""
    n = len(tuple(norm.normalized_shape))
    labels = tracer.state.labels(x)
    for k in range(1, min(n, x.dim())):
        tracer.table.freeze(labels[-k])


def _conv_groups(tracer: Tracer, conv: nn.Module, out_lab: Label | None, in_lab: Label | None):
    g = conv.groups
    cin = conv.in_channels
    if g == cin and out_lab is not None:
        # Depthwise: input channel k *is* its group of outputs.
        per = out_lab.numel() // g
        if per == 1:  # the usual depthwise conv: each output channel is its own group
            if in_lab is not None and in_lab is not out_lab:
                tracer.table.unify(in_lab, out_lab)
            return out_lab, out_lab
        grid = out_lab.view(g, per)
        tracer.table.unify_broadcast(grid, grid[:, :1])
        if in_lab is not None and in_lab is not out_lab:
            tracer.table.unify(in_lab, grid[:, 0])
        return out_lab, grid[:, 0]
    _unify_groups(tracer, out_lab, g)
    _unify_groups(tracer, in_lab, g)
    return out_lab, in_lab


def _rule_mha(tracer: Tracer, mha: nn.MultiheadAttention, pruner: Any, args: tuple, kwargs: dict,
              output: Any, here: frozenset) -> None:
    st = tracer.state
    space, _ = layer_spaces(tracer, mha, pruner)
    if tracer.state.split_mode == "blocks" and space is not None and mha.num_heads > 1:
        grid = space.view(mha.num_heads, -1)  # whole heads
        tracer.table.unify_broadcast(grid, grid[:, :1])
        tracer.table.mark_heads(grid[:, 0])
    else:
        _unify_groups(tracer, space, mha.num_heads)
    names = ("query", "key", "value")
    qkv = [args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(names)]
    q = qkv[0]
    for t in qkv:
        if is_tensor(t):
            _unify_channel(tracer, st.labels(t)[-1], space if t.shape[-1] == mha.embed_dim else None)
    for k, v in kwargs.items():
        if k not in names and is_tensor(v):
            st.freeze_all(v)
    for extra in args[3:]:
        if is_tensor(extra):
            st.freeze_all(extra)
    outs = list(output) if isinstance(output, tuple) else [output]
    if is_tensor(outs[0]):
        labels = _carry(tracer, q, outs[0], {outs[0].dim() - 1})
        labels[-1] = space
        st.set(outs[0], tuple(labels), here)
    for o in outs[1:]:
        if is_tensor(o):
            st.set(o, (None,) * o.dim(), here)


def _rule_rnn(tracer: Tracer, rnn: nn.Module, pruner: Any, x: torch.Tensor | None, args: tuple,
              output: Any, here: frozenset) -> None:
    st = tracer.state
    out_lab, in_lab = layer_spaces(tracer, rnn, pruner)
    if x is not None:
        _unify_channel(tracer, st.labels(x)[-1], in_lab)
    dirs = 2 if rnn.bidirectional else 1
    for h in tensor_leaves(args[1:]):
        _unify_channel(tracer, st.labels(h)[-1], out_lab)
    seq, hidden = output
    seq_lab = out_lab.repeat(dirs) if out_lab is not None else None
    if seq_lab is not None and seq.shape[-1] == seq_lab.numel():
        st.set(seq, (None,) * (seq.dim() - 1) + (seq_lab,), here)
    for h in tensor_leaves(hidden):
        st.set(h, (None,) * (h.dim() - 1) + (out_lab,), here)


def param_labels(tracer: Tracer, module: nn.Module, pruner: Any, attr: str, t: torch.Tensor):
    """Labels of a layer's parameter used *outside* the layer's forward (e.g. ``F.linear(x,
    self.qkv.weight)`` in torchvision's Swin). Unknown roles get no labels, which freezes
    whatever they touch."""
    labels: list[Label | None] = [None] * t.dim()
    if not _is_builtin(tracer, module):
        return tuple(labels)
    out_lab, in_lab = layer_spaces(tracer, module, pruner)
    if isinstance(module, nn.Linear):
        if attr == "weight":
            labels = [out_lab, in_lab]
        elif attr == "bias":
            labels = [out_lab]
    elif isinstance(module, _CONV + _CONVT) and module.groups == 1:
        transposed = isinstance(module, _CONVT)
        if attr == "weight":
            labels[0], labels[1] = (in_lab, out_lab) if transposed else (out_lab, in_lab)
        elif attr == "bias":
            labels = [out_lab]
    elif isinstance(module, _CONV) and _is_depthwise(module):
        if attr in ("weight", "bias"):  # weight [C, 1, k...]: channel c is in and out channel c
            labels[0] = out_lab
    elif t.dim() == 1 and out_lab is not None and t.numel() == out_lab.numel() and in_lab is out_lab:
        labels = [out_lab]
    elif isinstance(module, nn.Embedding) and attr == "weight":
        labels = [None, out_lab]
    if all(lab is None for lab in labels):
        # A role we cannot express (a grouped conv's weight, weight_norm's weight_g...):
        # the layer's own channels must then stay whole too, or they would form a group
        # that leaves out the tensors this forward couples them to.
        tracer.table.freeze(out_lab)
        tracer.table.freeze(in_lab)
    return tuple(labels)


def _is_depthwise(conv: nn.Module) -> bool:
    """One input channel per output channel (multiplier 1): input channel c *is* output channel c."""
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
