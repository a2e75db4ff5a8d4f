"""A seeded generator of small random architectures, for hunting silent breaks in pruning.

``make_model(seed)`` returns ``(model, example_inputs, description)``. The model is built
from random blocks (convs of every kind, every norm, attention, RNNs, slices, shuffles,
unwrapped parameters, tied weights, several inputs and outputs...) and always runs forward
on its example inputs (checked before it is returned). ``description.components`` lists
the building blocks it used, from :data:`COMPONENTS`, so a test can check that a seed
budget covers all of them.

Everything is small (a handful of channels, 8x8 images, 6 tokens) so one model runs
forward in a few milliseconds on one CPU thread. The same seed always gives the same
model, the same weights and the same inputs (torch's global RNG is left untouched).

``make_model(seed, exclude=[...])`` keeps components out (to hunt past a known failure
class); each seed is redrawn until it uses its focus component ``FOCUS[seed % len(FOCUS)]``,
so a few dozen consecutive seeds use every component of :data:`CORE` (the task's list).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

#: Every component the generator can use. ``test_random_architectures`` checks that a
#: seed budget uses each of them at least once.
COMPONENTS = (
    # convolutions
    "conv1d", "conv2d", "conv_grouped", "conv_depthwise", "conv_depthwise_multiplier", "conv_strided",
    "conv_dilated", "conv_transpose1d", "conv_transpose2d", "conv_transpose_grouped",
    # norms
    "batchnorm1d", "batchnorm2d", "groupnorm", "instancenorm_affine", "layernorm_channels_last",
    "layernorm_chw", "layernorm_tokens", "rmsnorm", "layernorm2d_permute", "layernorm2d_torchvision",
    # activations
    "activation", "prelu_per_channel", "prelu_shared", "se_gate",
    # wiring
    "residual_add", "residual_projection", "concat", "dense_concat", "split", "chunk",
    # channel selection by value
    "slice_prefix", "slice_step", "narrow", "index_list", "index_select",
    # shuffles
    "channel_shuffle_view", "nn_channel_shuffle", "pixel_shuffle", "pixel_unshuffle",
    # reshapes and MLPs
    "flatten_linear", "reshape_linear", "view_literal", "pool", "channels_last_mlp", "linear",
    "batchnorm_vector", "tokens_to_image",
    # attention and sequence models
    "multihead_attention", "multihead_attention_seq_first", "attention_heads", "attention_sdpa",
    "attention_separate_qkv", "embedding", "lstm", "gru", "rnn_bidirectional",
    # unwrapped parameters, tied weights
    "cls_token", "layer_scale", "pos_embedding", "tied_weights",
    # inputs, outputs, model state
    "input_tensor", "inputs_tuple", "inputs_dict", "second_input", "output_tensor", "outputs_tuple",
    "outputs_dict", "eval_mode", "float64",
    # beyond the list: more ways to write the same things
    "inplace_ops", "module_reuse", "functional_conv", "functional_linear", "channel_reduce_gate",
    "unflatten", "interpolate", "pad", "einsum_attention", "channel_buffer", "frozen_params",
    "weight_norm", "padding_mode", "width_attributes", "gated_mlp", "stack", "repeat_channels",
    "normalize_channels", "uneven_split", "unbind", "norm_variants", "lstm_proj", "nn_rnn",
    "mha_cross_kdim", "mha_options", "key_padding_mask", "transformer_layer", "embedding_max_norm",
    "data_dependent", "nested_inputs", "einsum_conv", "cat_spatial", "elementwise_merge", "dropout",
    "mode_dependent",
)

B = 2  # batch size: BatchNorm in training mode needs more than one value per channel
N_TOKENS = 6
VOCAB = 20


@dataclass(frozen=True)
class St:
    """Shape of the main stream: ``img`` (B,C,H,W), ``seq`` (B,C,L), ``tok`` (B,T,C), ``vec`` (B,C)."""

    kind: str
    c: int
    h: int = 0
    w: int = 0
    n: int = 0  # L for seq, T for tok

    @property
    def spatial(self) -> int:
        return self.h * self.w if self.kind == "img" else self.n


@dataclass
class Description:
    """What a generated model is made of."""

    seed: int
    blocks: list[str] = field(default_factory=list)
    components: set[str] = field(default_factory=set)

    @property
    def summary(self) -> str:
        return " > ".join(self.blocks)

    def __str__(self) -> str:
        return self.summary


class Ctx:
    def __init__(self, key: str, exclude: frozenset = frozenset()):
        self.rng = random.Random(key)
        self.desc = Description(0)
        self.embedding: nn.Embedding | None = None
        self.exclude = exclude
        self.focus: str | None = None  # a component this draw must use (favoured where cheap)

    def use(self, *names: str) -> None:
        for n in names:
            assert n in COMPONENTS, n
            self.desc.components.add(n)

    def pick(self, options):
        return self.rng.choice(list(options))

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def width(self, lo: int = 4) -> int:
        return self.pick([c for c in (4, 6, 8, 12, 16) if c >= lo])


# ---------------------------------------------------------------------------------------
# small modules used by the blocks
# ---------------------------------------------------------------------------------------


class ChannelsLast(nn.Module):
    """Move the channel dim last, apply ``inner`` (a LayerNorm, RMSNorm or MLP), move it back."""

    def __init__(self, inner: nn.Module, ndim: int):
        super().__init__()
        self.inner = inner
        self.ndim = ndim

    def forward(self, x):
        if self.ndim == 4:
            return self.inner(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.inner(x.transpose(1, 2)).transpose(1, 2)


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt LayerNorm2d, written out: a LayerNorm subclass that permutes."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class SEGate(nn.Module):
    def __init__(self, c: int, r: int):
        super().__init__()
        self.fc1 = nn.Conv2d(c, r, 1)
        self.fc2 = nn.Conv2d(r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class Residual(nn.Module):
    def __init__(self, body: nn.Module, proj: nn.Module | None = None, scale: nn.Parameter | None = None,
                 inplace: bool = False):
        super().__init__()
        self.body = body
        self.proj = proj
        self.scale = scale
        self.inplace = inplace

    def forward(self, x):
        y = self.body(x)
        if self.scale is not None:
            y = y * self.scale
        if self.inplace:  # on a copy: the body's last op may have saved its output for backward
            y = y.clone()
            y += x if self.proj is None else self.proj(x)
            return y
        return (x if self.proj is None else self.proj(x)) + y


class Concat(nn.Module):
    def __init__(self, branches: list[nn.Module], dim: int, keep_input: bool = False):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.dim = dim
        self.keep_input = keep_input

    def forward(self, x):
        outs = [b(x) for b in self.branches]
        if self.keep_input:
            outs = [x] + outs
        return torch.cat(outs, self.dim)


class Split(nn.Module):
    """Split the channel dim, run a branch on each piece, merge by cat or add."""

    def __init__(self, mode: str, arg, branches: list[nn.Module], merge: str, dim: int):
        super().__init__()
        self.mode, self.arg, self.merge, self.dim = mode, arg, merge, dim
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        if self.mode == "chunk":
            pieces = x.chunk(self.arg, self.dim)
        elif self.mode == "tensor_chunk":
            pieces = torch.chunk(x, self.arg, dim=self.dim)
        else:  # "split": an int size or a list of sizes
            pieces = torch.split(x, self.arg, dim=self.dim)
        outs = [b(p) for b, p in zip(self.branches, pieces)]
        if self.merge == "add":
            y = outs[0]
            for o in outs[1:]:
                y = y + o
            return y
        return torch.cat(outs, self.dim)


class ChannelSelect(nn.Module):
    """Pick channels by value: ``x[:, :k]``, ``x[:, ::2]``, ``narrow``, an index list, ``index_select``."""

    def __init__(self, mode: str, dim: int, k: int = 0, index: list[int] | None = None):
        super().__init__()
        self.mode, self.dim, self.k = mode, dim, k
        self.index = index
        if mode == "index_select":
            self.register_buffer("idx", torch.tensor(index, dtype=torch.long))

    def forward(self, x):
        if self.mode == "index_select":
            return x.index_select(self.dim, self.idx)
        if self.mode == "narrow":
            return x.narrow(self.dim, 1, self.k)
        if self.dim == 1:
            if self.mode == "prefix":
                return x[:, :self.k]
            if self.mode == "step":
                return x[:, ::2]
            return x[:, self.index]
        if self.mode == "prefix":
            return x[..., :self.k]
        if self.mode == "step":
            return x[..., ::2]
        return x[..., self.index]


class ShuffleView(nn.Module):
    """ShuffleNet's channel shuffle by view/transpose/reshape."""

    def __init__(self, groups: int, literal_c: int | None):
        super().__init__()
        self.groups = groups
        self.literal_c = literal_c

    def forward(self, x):
        b, c, h, w = x.shape
        if self.literal_c is not None:
            c = self.literal_c
        x = x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous()
        return x.view(b, -1, h, w)


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int, expand: int, norm: nn.Module, scale: bool):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm = norm
        self.pwconv1 = nn.Linear(c, expand * c)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(expand * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5)) if scale else None

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class ToTokens(nn.Module):
    """(B,C,H,W) or (B,C,L) -> (B,T,C), with an optional class token and position embedding."""

    def __init__(self, c: int, t: int, cls: bool, pos: bool):
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, c) * 0.1) if cls else None
        self.pos_embed = nn.Parameter(torch.randn(1, t + int(cls), c) * 0.1) if pos else None

    def forward(self, x):
        x = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        return x


class TokensToImage(nn.Module):
    def __init__(self, h: int, w: int, literal_c: int | None):
        super().__init__()
        self.h, self.w, self.literal_c = h, w, literal_c

    def forward(self, x):
        b = x.shape[0]
        c = self.literal_c if self.literal_c is not None else x.shape[2]
        return x.transpose(1, 2).reshape(b, c, self.h, self.w)


class Flatten(nn.Module):
    """(B, ...) -> (B, F) by flatten, reshape(B, -1) or a view with the literal size."""

    def __init__(self, mode: str, literal: int):
        super().__init__()
        self.mode, self.literal = mode, literal

    def forward(self, x):
        if self.mode == "flatten":
            return torch.flatten(x, 1)
        if self.mode == "reshape":
            return x.reshape(x.shape[0], -1)
        return x.contiguous().view(x.size(0), self.literal)


class Pool(nn.Module):
    """Global pooling of the spatial/token dims down to (B, C)."""

    def __init__(self, kind: str, mode: str):
        super().__init__()
        self.kind, self.mode = kind, mode

    def forward(self, x):
        if self.kind == "img":
            if self.mode == "adaptive":
                return F.adaptive_avg_pool2d(x, 1).flatten(1)
            return x.mean(dim=(2, 3))
        if self.kind == "seq":
            return x.amax(dim=-1) if self.mode == "max" else x.mean(-1)
        if self.mode == "first":  # class token
            return x[:, 0]
        return x.mean(dim=1)


class _Sizes:
    """Sizes kept as the usual attributes (``self.dim``, ``self.head_dim``...), which the engine
    keeps in sync with the layers, or (``named=False``) in a dict it does not look into."""

    def _set_sizes(self, named: bool, **sizes: int) -> None:
        self.named = named
        if named:
            for k, v in sizes.items():
                setattr(self, k, v)
        else:
            self.sizes = dict(sizes)

    def size(self, name: str) -> int:
        return getattr(self, name) if self.named else self.sizes[name]


class HandAttention(nn.Module, _Sizes):
    """Self-attention written out with heads: reshape to (B, T, H, D) and back."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, fused: bool, literal: bool, sdpa: bool,
                 einsum: bool = False, named: bool = True):
        super().__init__()
        self.einsum = einsum
        self._set_sizes(named, dim=dim, num_heads=num_heads, head_dim=head_dim, inner_dim=num_heads * head_dim)
        self.inner = num_heads * head_dim
        self.fused, self.literal, self.sdpa = fused, literal, sdpa
        self.scale = head_dim ** -0.5
        if fused:
            self.qkv = nn.Linear(dim, 3 * self.inner)
        else:
            self.q = nn.Linear(dim, self.inner)
            self.k = nn.Linear(dim, self.inner)
            self.v = nn.Linear(dim, self.inner)
        self.proj = nn.Linear(self.inner, dim)

    def forward(self, x):
        b, t, _ = x.shape
        hd = self.size("head_dim") if self.literal else -1
        heads = self.size("num_heads")
        if self.fused:
            qkv = self.qkv(x).reshape(b, t, 3, heads, hd).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:
            q = self.q(x).view(b, t, heads, hd).transpose(1, 2)
            k = self.k(x).view(b, t, heads, hd).transpose(1, 2)
            v = self.v(x).view(b, t, heads, hd).transpose(1, 2)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v)
        elif self.einsum:
            attn = torch.einsum("bhqd,bhkd->bhqk", q, k) * self.scale
            y = torch.einsum("bhqk,bhkd->bhqd", attn.softmax(dim=-1), v)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            y = attn.softmax(dim=-1) @ v
        y = y.transpose(1, 2).reshape(b, t, self.size("inner_dim") if self.literal else -1)
        return self.proj(y)


class MHABlock(nn.Module):
    """Self-attention by nn.MultiheadAttention, or cross-attention to a memory of another width
    (kdim/vdim) made from the same tokens; optionally with a key padding mask."""

    def __init__(self, dim: int, heads: int, batch_first: bool, norm: nn.Module | None, need_weights: bool,
                 options: dict | None = None, memory: nn.Module | None = None, mask: bool = False):
        super().__init__()
        self.norm = norm
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first, **(options or {}))
        self.batch_first = batch_first
        self.need_weights = need_weights
        self.memory = memory
        self.mask = mask

    def forward(self, x):
        y = x if self.norm is None else self.norm(x)
        kv = y if self.memory is None else self.memory(y)
        mask = None
        if self.mask:  # the last token is padding
            mask = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool, device=x.device)
            mask[:, -1] = True
        if not self.batch_first:
            y, kv = y.transpose(0, 1), kv.transpose(0, 1)
        y, _ = self.attn(y, kv, kv, need_weights=self.need_weights, key_padding_mask=mask)
        if not self.batch_first:
            y = y.transpose(0, 1)
        return x + y


class RNNBlock(nn.Module):
    def __init__(self, rnn: nn.Module, proj: nn.Module | None, residual: bool):
        super().__init__()
        self.rnn = rnn
        self.proj = proj
        self.residual = residual

    def forward(self, x):
        y, _ = self.rnn(x)
        if self.proj is not None:
            y = self.proj(y)
        return x + y if self.residual else y


class TokenConv(nn.Module):
    """A Conv1d over the token dim of (B, T, C)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class Merge(nn.Module):
    """Combine the main stream with the second input's features."""

    def __init__(self, mode: str, kind: str):
        super().__init__()
        self.mode, self.kind = mode, kind

    def forward(self, x, a):
        if self.mode == "cat":
            return torch.cat([x, a], dim=-1 if self.kind in ("tok", "vec") else 1)
        if self.kind == "img" and a.dim() == 2:
            return x + a[:, :, None, None]
        if self.kind == "seq" and a.dim() == 2:
            return x + a[:, :, None]
        if self.kind == "tok" and a.dim() == 2:
            return x + a[:, None, :]
        return x + a


class EmbedStem(nn.Module):
    def __init__(self, emb: nn.Embedding):
        super().__init__()
        self.emb = emb

    def forward(self, ids):
        return self.emb(ids)


class Net(nn.Module):
    def __init__(self, stem, blocks, head, aux_stem=None, merge=None, merge_at=-1, taps=None,
                 out_format="tensor", tap_names=None):
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.aux_stem = aux_stem
        self.merge = merge
        self.merge_at = merge_at
        self.taps = nn.ModuleDict(taps or {})
        self.out_format = out_format

    def forward(self, x, y=None):
        if isinstance(x, dict):  # one batch argument: {"x": ..., "y": ...}
            x, y = x["x"], x.get("y")
        elif isinstance(x, list):  # or [x, y]
            x, y = x[0], (x[1] if len(x) > 1 else None)
        h = self.stem(x)
        a = self.aux_stem(y) if self.aux_stem is not None else None
        extra = {}
        for i, blk in enumerate(self.blocks):
            if i == self.merge_at:
                h = self.merge(h, a)
            h = blk(h)
            if str(i) in self.taps:
                extra[f"tap{i}"] = self.taps[str(i)](h)
        if self.merge_at == len(self.blocks):
            h = self.merge(h, a)
        out = self.head(h)
        if self.out_format == "tensor":
            return out
        if self.out_format == "tuple":
            return (out, *extra.values())
        return {"out": out, **extra}



class Reuse(nn.Module):
    """The same layer applied twice (its input and output channels are one space)."""

    def __init__(self, layer: nn.Module, act: nn.Module):
        super().__init__()
        self.layer = layer
        self.act = act

    def forward(self, x):
        return self.layer(self.act(self.layer(x)))


class FunctionalConv(nn.Module):
    """A conv with its own parameters, called through F.conv1d / F.conv2d."""

    def __init__(self, c_in: int, c_out: int, two_d: bool):
        super().__init__()
        shape = (c_out, c_in, 3, 3) if two_d else (c_out, c_in, 3)
        self.weight = nn.Parameter(torch.randn(shape) * 0.2)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.two_d = two_d

    def forward(self, x):
        conv = F.conv2d if self.two_d else F.conv1d
        return conv(x, self.weight, self.bias, padding=1)


class FunctionalLinear(nn.Module):
    """A linear layer with its own parameters: F.linear, or a matmul with the transposed weight."""

    def __init__(self, c_in: int, c_out: int, matmul: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) * 0.3)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.matmul = matmul

    def forward(self, x):
        if self.matmul:
            return x @ self.weight.t() + self.bias
        return F.linear(x, self.weight, self.bias)


class SpatialGate(nn.Module):
    """CBAM's spatial attention: mean and max over the channels, a conv, a sigmoid gate."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(s))


class Unflatten(nn.Module):
    """(B, F) -> Linear -> (B, C, h, w), by view or nn.Unflatten (a decoder's first step)."""

    def __init__(self, f: int, c: int, h: int, w: int, module: bool):
        super().__init__()
        self.fc = nn.Linear(f, c * h * w)
        self.c, self.h, self.w = c, h, w
        self.unflatten = nn.Unflatten(1, (c, h, w)) if module else None

    def forward(self, x):
        y = self.fc(x)
        if self.unflatten is not None:
            return self.unflatten(y)
        return y.view(y.shape[0], self.c, self.h, self.w)


class Resize(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        if self.mode == "pad":
            return F.pad(x, (1, 1, 1, 1))
        return F.interpolate(x, scale_factor=2, mode=self.mode)


class ChannelMask(nn.Module):
    """Multiply by a per-channel buffer (not a parameter)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("mask", torch.rand(shape) + 0.5)

    def forward(self, x):
        return x * self.mask


class GatedMLP(nn.Module, _Sizes):
    """SwiGLU MLP on the last dim; splits by ``self.hidden_dim`` and normalizes with ``self.dim``."""

    def __init__(self, dim: int, hidden_dim: int, how: str, named: bool = True):
        super().__init__()
        self._set_sizes(named, dim=dim, hidden_dim=hidden_dim)
        self.how = how
        self.fc1 = nn.Linear(dim, 2 * hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        h = self.fc1(F.layer_norm(x, (self.size("dim"),)))
        hidden = self.size("hidden_dim")
        if self.how == "split_attr":
            a, g = h.split(hidden, dim=-1)
        elif self.how == "slice_attr":
            a, g = h[..., :hidden], h[..., hidden:]
        else:
            a, g = h.chunk(2, dim=-1)
        return x + self.fc2(a * F.silu(g))


class Stack(nn.Module):
    """Stack two branches: summed over the new dim, or flattened into interleaved channels."""

    def __init__(self, branches: list[nn.Module], mode: str, cdim: int):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.mode, self.cdim = mode, cdim

    def forward(self, x):
        outs = [b(x) for b in self.branches]
        if self.mode == "sum":
            return torch.stack(outs, 0).sum(0)
        if self.cdim == 1:  # (B, C, 2, ...) -> (B, 2C, ...)
            return torch.stack(outs, 2).flatten(1, 2)
        return torch.stack(outs, -1).flatten(-2)  # (..., C, 2) -> (..., 2C)


class RepeatChannels(nn.Module):
    def __init__(self, cdim: int, how: str):
        super().__init__()
        self.cdim, self.how = cdim, how

    def forward(self, x):
        if self.how == "repeat":
            reps = [1] * x.dim()
            reps[self.cdim] = 2
            return x.repeat(*reps)
        return torch.cat([x, x], dim=self.cdim)


class NormalizeChannels(nn.Module):
    def __init__(self, cdim: int, how: str):
        super().__init__()
        self.cdim, self.how = cdim, how

    def forward(self, x):
        if self.how == "softmax":
            return x.softmax(dim=self.cdim)
        return F.normalize(x, dim=self.cdim)



class DataDependent(nn.Module):
    """Control flow the trace must follow.

    ``"values"``: a test on values that always holds (it forces a trace on real tensors); the
    other layer is never used. ``"mode"``: one layer in training mode, the other in eval mode
    (like GoogLeNet's auxiliary heads), so the pruned model must run in both modes. A test
    whose outcome a prune can flip (``x.mean() > 0``) is left out on purpose: no trace can
    see the branch it did not take (the engine lists it in ``DG.unreached_modules``).
    """

    def __init__(self, a: nn.Module, b: nn.Module, how: str):
        super().__init__()
        self.a, self.b, self.how = a, b, how

    def forward(self, x):
        if self.how == "mode":
            return self.a(x) if self.training else self.b(x)
        if bool((x.abs().sum() >= 0).item()) or x.numel() == 0:
            return self.a(x)
        return self.b(x)


class EinsumConv(nn.Module):
    """A 1x1 conv / linear written as an einsum with the module's own weight."""

    def __init__(self, c_in: int, c_out: int, kind: str):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) * 0.3)
        self.eq = {"img": "bchw,oc->bohw", "seq": "bcl,oc->bol", "tok": "btc,oc->bto", "vec": "bc,oc->bo"}[kind]

    def forward(self, x):
        return torch.einsum(self.eq, x, self.weight)


class CatSpatial(nn.Module):
    """Concatenate along the spatial/token dim (the channels stay one space)."""

    def __init__(self, body: nn.Module, dim: int, pool: bool):
        super().__init__()
        self.body = body
        self.dim = dim
        self.pool = pool

    def forward(self, x):
        y = torch.cat([x, self.body(x)], dim=self.dim)
        if self.pool:  # back to the original length
            return y.narrow(self.dim, 0, x.shape[self.dim]) + y.narrow(self.dim, x.shape[self.dim], x.shape[self.dim])
        return y


class ElementwiseMerge(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module, how: str):
        super().__init__()
        self.a, self.b, self.how = a, b, how

    def forward(self, x):
        p, q = self.a(x), self.b(x)
        if self.how == "maximum":
            return torch.maximum(p, q)
        if self.how == "where":
            return torch.where(p > q, p, q * 0.5)
        if self.how == "mul":
            return p * torch.sigmoid(q)
        return torch.addcmul(p, q, q, value=0.1)


class Unbind(nn.Module):
    """Unbind the channel dim into single channels and stack them back (reversed)."""

    def __init__(self, dim: int, reverse: bool):
        super().__init__()
        self.dim, self.reverse = dim, reverse

    def forward(self, x):
        parts = list(x.unbind(self.dim))
        if self.reverse:
            parts = parts[::-1]
        return torch.stack(parts, dim=self.dim)


# ---------------------------------------------------------------------------------------
# layer builders
# ---------------------------------------------------------------------------------------


def _act(ctx: Ctx, c: int, allow_prelu: bool = True, inplace_ok: bool = False) -> nn.Module:
    r = ctx.rng.random()
    if allow_prelu and r < 0.2:
        ctx.use("prelu_per_channel")
        return nn.PReLU(c, init=0.2)
    if allow_prelu and r < 0.27:
        ctx.use("prelu_shared")
        return nn.PReLU()
    ctx.use("activation")
    if r > 0.85 and inplace_ok:  # only right after a conv/linear/norm, which keep no output for backward
        ctx.use("inplace_ops")
        return ctx.pick([nn.ReLU, nn.SiLU, nn.Hardswish, nn.ReLU6])(inplace=True)
    return ctx.pick([nn.ReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh, nn.ReLU6])() if r < 0.75 \
        else nn.LeakyReLU(0.1)


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n) if n % d == 0]


def _norm(ctx: Ctx, st: St) -> nn.Module | None:
    """A random norm of the channel dim of ``st`` (or None)."""
    c = st.c
    if st.kind == "img":
        opts = ["bn", "gn", "in", "ln_cl", "ln_chw", "rms_cl", "ln2d", "ln2d_tv", "none"]
        if st.h * st.w < 2:
            opts.remove("in")
    elif st.kind == "seq":
        opts = ["bn1d", "gn", "in1d", "ln_cl1d", "rms_cl1d", "none"]
        if st.n < 2:
            opts.remove("in1d")
    elif st.kind == "tok":
        opts = ["ln", "rms", "none"]
    else:
        opts = ["bn1d", "ln", "rms", "none"]
    k = ctx.pick(opts)
    if k == "none":
        return None
    odd = ctx.chance(0.15)  # no affine parameters, no running stats, no bias...
    if odd:
        ctx.use("norm_variants")
    if k == "bn":
        ctx.use("batchnorm2d")
        if odd:
            return ctx.pick([nn.BatchNorm2d(c, affine=False), nn.BatchNorm2d(c, track_running_stats=False),
                             nn.BatchNorm2d(c, momentum=None)])
        return nn.BatchNorm2d(c)
    if k == "bn1d":
        ctx.use("batchnorm1d")
        if st.kind == "vec":
            ctx.use("batchnorm_vector")
        if odd:
            return ctx.pick([nn.BatchNorm1d(c, affine=False), nn.BatchNorm1d(c, track_running_stats=False)])
        return nn.BatchNorm1d(c)
    if k == "gn":
        ctx.use("groupnorm")
        return nn.GroupNorm(ctx.pick([1] + _divisors(c)), c, affine=not odd)
    if k == "in":
        ctx.use("instancenorm_affine")
        return nn.InstanceNorm2d(c, affine=True, track_running_stats=odd)
    if k == "in1d":
        ctx.use("instancenorm_affine")
        return nn.InstanceNorm1d(c, affine=True, track_running_stats=odd)
    if k in ("ln_cl", "ln_cl1d"):
        ctx.use("layernorm_channels_last")
        return ChannelsLast(nn.LayerNorm(c), 4 if k == "ln_cl" else 3)
    if k in ("rms_cl", "rms_cl1d"):
        ctx.use("rmsnorm")
        return ChannelsLast(nn.RMSNorm(c), 4 if k == "rms_cl" else 3)
    if k == "ln_chw":
        ctx.use("layernorm_chw")
        return nn.LayerNorm([c, st.h, st.w])
    if k == "ln2d":
        ctx.use("layernorm2d_permute")
        return LayerNorm2d(c)
    if k == "ln2d_tv":
        from torchvision.models.convnext import LayerNorm2d as TVLayerNorm2d
        ctx.use("layernorm2d_torchvision")
        return TVLayerNorm2d(c, eps=1e-6)
    if k == "ln":
        ctx.use("layernorm_tokens")
        if odd:
            return ctx.pick([nn.LayerNorm(c, elementwise_affine=False), nn.LayerNorm(c, bias=False)])
        return nn.LayerNorm(c)
    ctx.use("rmsnorm")
    return nn.RMSNorm(c, elementwise_affine=not odd)


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _conv(ctx: Ctx, st: St, c_out: int, keep_size: bool) -> tuple[nn.Module, St, int]:
    """A random conv layer on an img/seq stream. Returns (layer, new state, real c_out)."""
    two_d = st.kind == "img"
    Conv = nn.Conv2d if two_d else nn.Conv1d
    ConvT = nn.ConvTranspose2d if two_d else nn.ConvTranspose1d
    ctx.use("conv2d" if two_d else "conv1d")
    size = min(st.h, st.w) if two_d else st.n
    kinds = ["plain", "plain", "grouped", "depthwise", "dw_mult", "dilated", "transpose"]
    if not keep_size and size >= 4:
        kinds += ["strided", "strided"]
    if not keep_size and size <= 8:
        kinds += ["transpose_up"]
    kind = ctx.pick(kinds)
    c = st.c
    groups = 1
    k, s, p, d = ctx.pick([1, 3, 3]), 1, 0, 1
    if kind == "grouped":
        divs = _divisors(c)
        if divs:
            groups = ctx.pick(divs)
            c_out = max(groups, (c_out // groups) * groups)
            ctx.use("conv_grouped")
    elif kind == "depthwise":
        groups, c_out, k = c, c, 3
        ctx.use("conv_depthwise")
    elif kind == "dw_mult":
        groups, c_out, k = c, 2 * c, 3
        ctx.use("conv_depthwise_multiplier")
    elif kind == "dilated":
        k, d = 3, 2
        ctx.use("conv_dilated")
    elif kind == "strided":
        k, s = 3, 2
        ctx.use("conv_strided")
    if kind in ("transpose", "transpose_up"):
        ctx.use("conv_transpose2d" if two_d else "conv_transpose1d")
        if kind == "transpose_up":
            k, s, p = 2, 2, 0
        else:
            k, s, p = 3, 1, 1
        tg = 1
        if ctx.chance(0.3) and _divisors(c):
            tg = ctx.pick(_divisors(c))
            c_out = max(tg, (c_out // tg) * tg)
            ctx.use("conv_transpose_grouped")
        layer = ConvT(c, c_out, k, stride=s, padding=p, groups=tg)

        def out(n):
            return (n - 1) * s - 2 * p + (k - 1) + 1
    else:
        p = d * (k - 1) // 2
        mode = "zeros"
        if p and ctx.chance(0.1) and size > p:
            mode = ctx.pick(["reflect", "circular", "replicate"])
            ctx.use("padding_mode")
        layer = Conv(c, c_out, k, stride=s, padding=p, dilation=d, groups=groups, bias=ctx.chance(0.6),
                     padding_mode=mode)

        def out(n):
            return _conv_out(n, k, s, p, d)
    if two_d:
        return layer, replace(st, c=c_out, h=out(st.h), w=out(st.w)), c_out
    return layer, replace(st, c=c_out, n=out(st.n)), c_out


def _maybe_weight_norm(ctx: Ctx, layer: nn.Module) -> nn.Module:
    if ctx.chance(0.012):
        ctx.use("weight_norm")
        return torch.nn.utils.parametrizations.weight_norm(layer)
    return layer


def _conv_unit(ctx: Ctx, st: St, c_out: int, keep_size: bool, tag: list[str]) -> tuple[nn.Module, St]:
    conv, st2, _ = _conv(ctx, st, c_out, keep_size)
    layers = [_maybe_weight_norm(ctx, conv)]
    norm = _norm(ctx, st2)
    if norm is not None:
        layers.append(norm)
    if ctx.chance(0.8):
        layers.append(_act(ctx, st2.c, inplace_ok=True))
    tag.append(f"conv{'2d' if st.kind == 'img' else '1d'}({st.c}->{st2.c})")
    return nn.Sequential(*layers), st2


def _linear_unit(ctx: Ctx, st: St, c_out: int, tag: list[str]) -> tuple[nn.Module, St]:
    """Linear on the last dim (tok or vec), with a norm and an activation."""
    ctx.use("linear")
    layers = [_maybe_weight_norm(ctx, nn.Linear(st.c, c_out, bias=ctx.chance(0.8)))]
    st2 = replace(st, c=c_out)
    norm = _norm(ctx, st2)
    if norm is not None:
        layers.append(norm)
    if ctx.chance(0.8):
        layers.append(_act(ctx, c_out, allow_prelu=st.kind == "vec", inplace_ok=True))
    tag.append(f"linear({st.c}->{c_out})")
    return nn.Sequential(*layers), st2


def _unit(ctx: Ctx, st: St, c_out: int, keep_size: bool, tag: list[str]) -> tuple[nn.Module, St]:
    if st.kind in ("img", "seq"):
        return _conv_unit(ctx, st, c_out, keep_size, tag)
    return _linear_unit(ctx, st, c_out, tag)


def _cdim(st: St) -> int:
    return 1 if st.kind in ("img", "seq", "vec") else -1


# ---------------------------------------------------------------------------------------
# blocks: each takes the stream's shape and returns (module, new shape), or None
# ---------------------------------------------------------------------------------------


def blk_unit(ctx, st, tag):
    return _unit(ctx, st, ctx.width(), keep_size=False, tag=tag)


def blk_residual(ctx, st, tag):
    ctx.use("residual_add")
    c_out = st.c if ctx.chance(0.7) else ctx.width()
    body, st2 = _unit(ctx, st, c_out, keep_size=True, tag=tag)
    if st2.c != c_out or (ctx.chance(0.5) and st2.c == st.c):
        body2, st2 = _unit(ctx, st2, c_out, keep_size=True, tag=tag)
        body = nn.Sequential(body, body2)
    if st2.spatial != st.spatial:
        return None
    proj = None
    if st2.c != st.c:
        ctx.use("residual_projection")
        if st.kind in ("img", "seq"):
            proj = (nn.Conv2d if st.kind == "img" else nn.Conv1d)(st.c, st2.c, 1)
        else:
            proj = nn.Linear(st.c, st2.c)
    scale = None
    if ctx.chance(0.3):
        ctx.use("layer_scale")
        shape = {"img": (st2.c, 1, 1), "seq": (st2.c, 1), "tok": (st2.c,), "vec": (st2.c,)}[st.kind]
        scale = nn.Parameter(torch.full(shape, 0.3))
    inplace = ctx.chance(0.2)
    if inplace:
        ctx.use("inplace_ops")
    tag.append("residual" + ("(+=)" if inplace else ""))
    return Residual(body, proj, scale, inplace), st2


def blk_concat(ctx, st, tag):
    ctx.use("concat")
    dense = ctx.chance(0.4)
    n = 1 if dense else ctx.pick([2, 2, 3])
    branches, widths = [], []
    for _ in range(n):
        b, s2 = _unit(ctx, st, ctx.width(), keep_size=True, tag=tag)
        if s2.spatial != st.spatial:
            return None
        branches.append(b)
        widths.append(s2.c)
    if dense:
        ctx.use("dense_concat")
    tag.append("dense_cat" if dense else "cat")
    return Concat(branches, _cdim(st), keep_input=dense), replace(st, c=sum(widths) + (st.c if dense else 0))


def blk_split(ctx, st, tag):
    c = st.c
    if c < 4:
        return None
    mode = ctx.pick(["chunk", "tensor_chunk", "split_int", "split_list"])
    uneven = ctx.chance(0.25)
    if mode in ("chunk", "tensor_chunk"):
        divs = [d for d in (2, 3, 4) if (c % d != 0 if uneven else c % d == 0) and d < c]
        if not divs:
            return None
        n = ctx.pick(divs)
        size = -(-c // n)  # torch.chunk: pieces of ceil(c / n), the last one smaller
        sizes = [size] * (c // size) + ([c % size] if c % size else [])
        arg = n
        ctx.use("chunk")
    elif mode == "split_int":
        opts = [d for d in range(2, c) if (c % d != 0 if uneven else c % d == 0) and -(-c // d) <= 4]
        size = ctx.pick(opts or [c // 2])
        sizes = [size] * (c // size) + ([c % size] if c % size else [])
        arg = size
        ctx.use("split")
    else:
        k = ctx.rng.randint(1, c - 1)
        sizes, arg = [k, c - k], [k, c - k]
        ctx.use("split")
    merge = "add" if len(set(sizes)) == 1 and ctx.chance(0.4) else "cat"
    branches, out = [], []
    for s in sizes:
        piece = replace(st, c=s)
        if ctx.chance(0.5) and s >= 1:
            want = s if merge == "add" else ctx.width(lo=2)
            b, s2 = _unit(ctx, piece, want, keep_size=True, tag=tag)
            if s2.spatial != st.spatial or (merge == "add" and s2.c != s):
                return None
        else:
            b, s2 = nn.Identity(), piece
        branches.append(b)
        out.append(s2.c)
    if merge == "add" and len(set(out)) != 1:
        return None
    if len(set(sizes)) > 1 and mode != "split_list":
        ctx.use("uneven_split")
    tag.append(f"{mode}{sizes}->{merge}")
    mode_arg = "split" if mode.startswith("split") else mode
    return Split(mode_arg, arg, branches, merge, _cdim(st)), replace(st, c=out[0] if merge == "add" else sum(out))


def blk_select(ctx, st, tag):
    c = st.c
    if c < 3:
        return None
    mode = ctx.pick(["prefix", "step", "narrow", "index", "index_select"])
    dim = _cdim(st)
    if mode == "prefix":
        k = ctx.rng.randint(2, c - 1)
        ctx.use("slice_prefix")
        m, c2 = ChannelSelect("prefix", dim, k=k), k
        tag.append(f"x[:, :{k}]")
    elif mode == "step":
        ctx.use("slice_step")
        m, c2 = ChannelSelect("step", dim), (c + 1) // 2
        tag.append("x[:, ::2]")
    elif mode == "narrow":
        k = ctx.rng.randint(2, c - 1)
        ctx.use("narrow")
        m, c2 = ChannelSelect("narrow", dim, k=k), k
        tag.append(f"narrow(1, 1, {k})")
    else:
        idx = sorted(ctx.rng.sample(range(c), ctx.rng.randint(2, c - 1)))
        if ctx.chance(0.3):
            idx = idx[::-1]
        ctx.use("index_list" if mode == "index" else "index_select")
        m, c2 = ChannelSelect(mode, dim, index=idx), len(idx)
        tag.append(f"{'x[:, idx]' if mode == 'index' else 'index_select'}{idx}")
    return m, replace(st, c=c2)


def blk_norm_act(ctx, st, tag):
    layers = []
    norm = _norm(ctx, st)
    if norm is not None:
        layers.append(norm)
        tag.append(type(norm).__name__ if not isinstance(norm, ChannelsLast)
                   else f"cl({type(norm.inner).__name__})")
    layers.append(_act(ctx, st.c, allow_prelu=st.kind != "tok"))
    return nn.Sequential(*layers), st


def blk_shuffle(ctx, st, tag):
    divs = [g for g in (2, 3, 4) if st.c % g == 0]
    if not divs:
        return None
    g = ctx.pick(divs)
    if ctx.chance(0.5):
        ctx.use("nn_channel_shuffle")
        tag.append(f"ChannelShuffle({g})")
        return nn.ChannelShuffle(g), st
    ctx.use("channel_shuffle_view")
    literal = st.c if ctx.chance(0.3) else None
    tag.append(f"shuffle_view({g}{', literal' if literal else ''})")
    return ShuffleView(g, literal), st


def blk_pixel(ctx, st, tag):
    if st.c % 4 == 0 and st.c >= 8 and st.h <= 8 and ctx.chance(0.6):
        ctx.use("pixel_shuffle")
        tag.append("PixelShuffle(2)")
        return nn.PixelShuffle(2), replace(st, c=st.c // 4, h=st.h * 2, w=st.w * 2)
    if st.h % 2 == 0 and st.h >= 4 and st.c <= 8:
        ctx.use("pixel_unshuffle")
        tag.append("PixelUnshuffle(2)")
        return nn.PixelUnshuffle(2), replace(st, c=st.c * 4, h=st.h // 2, w=st.w // 2)
    return None


def blk_se(ctx, st, tag):
    ctx.use("se_gate")
    tag.append("SE")
    return SEGate(st.c, max(2, st.c // 4)), st


def blk_convnext(ctx, st, tag):
    ctx.use("channels_last_mlp", "conv_depthwise", "conv2d", "residual_add")
    r = ctx.rng.random()
    if r < 0.5:
        ctx.use("layernorm_tokens")
        norm = nn.LayerNorm(st.c)
    elif r < 0.75:
        ctx.use("rmsnorm")
        norm = nn.RMSNorm(st.c)
    else:
        norm = nn.Identity()
    scale = ctx.chance(0.6)
    if scale:
        ctx.use("layer_scale")
    tag.append("convnext")
    return ConvNeXtBlock(st.c, ctx.pick([2, 4]), norm, scale), st


def blk_pool2d(ctx, st, tag):
    if st.h < 4:
        return None
    ctx.use("pool")
    tag.append("pool2")
    return ctx.pick([nn.MaxPool2d, nn.AvgPool2d])(2), replace(st, h=st.h // 2, w=st.w // 2)


def blk_img_to_tok(ctx, st, tag):
    if st.h * st.w > 16:
        return None
    cls, pos = ctx.chance(0.5), ctx.chance(0.6)
    if cls:
        ctx.use("cls_token")
    if pos:
        ctx.use("pos_embedding")
    tag.append(f"to_tokens({'cls' if cls else ''}{'+pos' if pos else ''})")
    return ToTokens(st.c, st.h * st.w, cls, pos), St("tok", st.c, n=st.h * st.w + int(cls))


def blk_seq_to_tok(ctx, st, tag):
    tag.append("transpose(1,2)")
    return ToTokens(st.c, st.n, False, False), St("tok", st.c, n=st.n)


def blk_to_vec(ctx, st, tag):
    if st.kind == "tok" and ctx.chance(0.3):
        ctx.use("pool")
        mode = ctx.pick(["first", "mean"])
        tag.append("tokens[:, 0]" if mode == "first" else "tokens.mean(1)")
        return Pool("tok", mode), St("vec", st.c)
    if ctx.chance(0.5) or st.kind == "tok" and st.n * st.c > 128:
        ctx.use("pool")
        tag.append("pool->vec")
        return Pool(st.kind, ctx.pick(["adaptive", "mean", "max"])), St("vec", st.c)
    n = st.c * (st.spatial or 1)
    if n > 256:
        return None
    mode = ctx.pick(["flatten", "reshape", "view"])
    ctx.use({"flatten": "flatten_linear", "reshape": "reshape_linear", "view": "view_literal"}[mode])
    if mode == "view":
        ctx.use("flatten_linear")
    c_out = ctx.width()
    tag.append(f"{mode}({n})->linear({c_out})")
    ctx.use("linear")
    return nn.Sequential(Flatten(mode, n), nn.Linear(n, c_out), _act(ctx, c_out)), St("vec", c_out)


def blk_tok_to_img(ctx, st, tag):
    shapes = [(h, st.n // h) for h in range(2, st.n) if st.n % h == 0 and st.n // h >= 2]
    if not shapes:
        return None
    h, w = ctx.pick(shapes)
    ctx.use("tokens_to_image")
    literal = st.c if ctx.chance(0.3) else None
    tag.append(f"tokens->img({h}x{w}{', literal' if literal else ''})")
    return TokensToImage(h, w, literal), St("img", st.c, h=h, w=w)


def blk_mha(ctx, st, tag):
    heads = ctx.pick([h for h in (1, 2, 4) if st.c % h == 0])
    bf = ctx.chance(0.6)
    ctx.use("multihead_attention")
    if not bf:
        ctx.use("multihead_attention_seq_first")
    norm = None
    if ctx.chance(0.6):
        ctx.use("layernorm_tokens")
        norm = nn.LayerNorm(st.c)
    options, memory = {}, None
    if ctx.chance(0.25):
        ctx.use("mha_cross_kdim", "linear")
        kd = ctx.width()
        memory = nn.Linear(st.c, kd)
        options.update(kdim=kd, vdim=kd)
    if ctx.chance(0.25):
        ctx.use("mha_options")
        options.update(ctx.pick([{"bias": False}, {"add_bias_kv": True}, {"add_zero_attn": True}]))
    mask = ctx.chance(0.2)
    if mask:
        ctx.use("key_padding_mask")
    tag.append(f"MHA(d={st.c},h={heads}{'' if bf else ',seq_first'}{',' + str(options) if options else ''}"
               f"{',mask' if mask else ''})")
    return MHABlock(st.c, heads, bf, norm, ctx.chance(0.5), options, memory, mask), st


def blk_transformer_layer(ctx, st, tag):
    heads = ctx.pick([h for h in (1, 2, 4) if st.c % h == 0])
    ctx.use("transformer_layer")
    norm_first = ctx.chance(0.5)
    layer = nn.TransformerEncoderLayer(st.c, heads, dim_feedforward=2 * st.c, dropout=0.0, batch_first=True,
                                       norm_first=norm_first, activation=ctx.pick(["relu", "gelu"]))
    tag.append(f"TransformerEncoderLayer(d={st.c},h={heads}{',norm_first' if norm_first else ''})")
    return layer, st


def blk_hand_attention(ctx, st, tag):
    heads = ctx.pick([2, 3, 4])
    hd = ctx.pick([2, 3, 4])
    fused = ctx.chance(0.6)
    literal = ctx.chance(0.5)
    sdpa = ctx.chance(0.4)
    ctx.use("attention_heads", "residual_add")
    if sdpa:
        ctx.use("attention_sdpa")
    if not fused:
        ctx.use("attention_separate_qkv")
    if literal:
        ctx.use("view_literal")
    tag.append(f"attn(h={heads},d={hd}{',fused' if fused else ''}{',literal' if literal else ''}{',sdpa' if sdpa else ''})")
    einsum = not sdpa and ctx.chance(0.4)
    if einsum:
        ctx.use("einsum_attention")
    named = "width_attributes" not in ctx.exclude and ctx.chance(0.7)
    if named:
        ctx.use("width_attributes")
    body = HandAttention(st.c, heads, hd, fused, literal, sdpa, einsum, named)
    if ctx.chance(0.5):
        ctx.use("layernorm_tokens")
        body = nn.Sequential(nn.LayerNorm(st.c), body)
    return Residual(body), st


def blk_mlp(ctx, st, tag):
    hidden = ctx.pick([2, 4]) * st.c
    ctx.use("channels_last_mlp", "linear", "residual_add")
    layers = []
    if ctx.chance(0.5):
        norm = _norm(ctx, st)
        if norm is not None:
            layers.append(norm)
    layers += [nn.Linear(st.c, hidden), _act(ctx, hidden, allow_prelu=False), nn.Linear(hidden, st.c)]
    scale = None
    if ctx.chance(0.3):
        ctx.use("layer_scale")
        scale = nn.Parameter(torch.full((st.c,), 0.3))
    tag.append(f"mlp({st.c}->{hidden})")
    return Residual(nn.Sequential(*layers), scale=scale), st


def blk_rnn(ctx, st, tag):
    cls = ctx.pick([nn.LSTM, nn.GRU, nn.LSTM, nn.GRU, nn.RNN])
    ctx.use({nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "nn_rnn"}[cls])
    hidden = ctx.width()
    bi = ctx.chance(0.3)
    if bi:
        ctx.use("rnn_bidirectional")
    layers = ctx.pick([1, 1, 1, 2])
    extra = {}
    if cls is nn.LSTM and ctx.chance(0.25):
        ctx.use("lstm_proj")
        extra["proj_size"] = ctx.pick([p for p in (2, 3, 4) if p < hidden])
    rnn = cls(st.c, hidden, num_layers=layers, batch_first=True, bidirectional=bi, **extra)
    out = extra.get("proj_size", hidden) * (2 if bi else 1)
    proj = None
    residual = False
    if ctx.chance(0.5):
        ctx.use("linear")
        proj = nn.Linear(out, st.c)
        out = st.c
        residual = ctx.chance(0.5)
        if residual:
            ctx.use("residual_add")
    tag.append(f"{cls.__name__}({st.c}->{hidden}{',bi' if bi else ''},L={layers}{'+proj' if proj else ''})")
    return RNNBlock(rnn, proj, residual), replace(st, c=out)


def blk_token_conv(ctx, st, tag):
    body, st2 = _conv_unit(ctx, St("seq", st.c, n=st.n), ctx.width(), keep_size=True, tag=tag)
    if st2.n != st.n:
        return None
    return TokenConv(body), replace(st, c=st2.c)



def blk_reuse(ctx, st, tag):
    ctx.use("module_reuse")
    if st.kind in ("img", "seq"):
        ctx.use("conv2d" if st.kind == "img" else "conv1d")
        layer = (nn.Conv2d if st.kind == "img" else nn.Conv1d)(st.c, st.c, 3, padding=1)
    else:
        ctx.use("linear")
        layer = nn.Linear(st.c, st.c)
    tag.append(f"reuse({type(layer).__name__})")
    return Reuse(layer, _act(ctx, st.c, allow_prelu=st.kind != "tok")), st


def blk_functional(ctx, st, tag):
    c_out = ctx.width()
    if st.kind in ("img", "seq"):
        ctx.use("functional_conv")
        tag.append(f"F.conv({st.c}->{c_out})")
        return FunctionalConv(st.c, c_out, st.kind == "img"), replace(st, c=c_out)
    ctx.use("functional_linear")
    matmul = ctx.chance(0.4)
    tag.append(f"{'matmul' if matmul else 'F.linear'}({st.c}->{c_out})")
    return FunctionalLinear(st.c, c_out, matmul), replace(st, c=c_out)


def blk_spatial_gate(ctx, st, tag):
    ctx.use("channel_reduce_gate")
    tag.append("spatial_gate")
    return SpatialGate(), st


def blk_unflatten(ctx, st, tag):
    h = ctx.pick([2, 3, 4])
    c = ctx.width()
    module = ctx.chance(0.5)
    ctx.use("unflatten", "linear")
    if not module:
        ctx.use("view_literal")
    tag.append(f"unflatten({c},{h},{h})")
    return Unflatten(st.c, c, h, h, module), St("img", c, h=h, w=h)


def blk_resize(ctx, st, tag):
    if st.h > 8:
        return None
    mode = ctx.pick(["nearest", "bilinear", "pad"])
    ctx.use("pad" if mode == "pad" else "interpolate")
    tag.append(mode)
    if mode == "pad":
        return Resize(mode), replace(st, h=st.h + 2, w=st.w + 2)
    return Resize(mode), replace(st, h=st.h * 2, w=st.w * 2)


def blk_channel_mask(ctx, st, tag):
    ctx.use("channel_buffer")
    shape = {"img": (1, st.c, 1, 1), "seq": (1, st.c, 1), "tok": (st.c,), "vec": (st.c,)}[st.kind]
    tag.append("x*mask_buffer")
    return ChannelMask(shape), st


def blk_gated_mlp(ctx, st, tag):
    hidden = ctx.pick([st.c, 2 * st.c, ctx.width()])
    how = ctx.pick(["split_attr", "slice_attr", "chunk"])
    ctx.use("gated_mlp", "linear", "residual_add")
    ctx.use("chunk" if how == "chunk" else ("split" if how == "split_attr" else "slice_prefix"))
    named = "width_attributes" not in ctx.exclude and ctx.chance(0.7)
    if named:
        ctx.use("width_attributes")
    tag.append(f"swiglu({st.c}->{hidden},{how}{'' if named else ',sizes'})")
    return GatedMLP(st.c, hidden, how, named), st


def blk_stack(ctx, st, tag):
    c_out = ctx.width()
    branches = []
    for _ in range(2):
        b, s2 = _unit(ctx, st, c_out, keep_size=True, tag=tag)
        if s2.spatial != st.spatial or s2.c != c_out:
            return None
        branches.append(b)
    mode = ctx.pick(["sum", "flatten"])
    ctx.use("stack")
    tag.append(f"stack({mode})")
    return Stack(branches, mode, _cdim(st)), replace(st, c=c_out if mode == "sum" else 2 * c_out)


def blk_repeat(ctx, st, tag):
    if st.c > 16:
        return None
    how = ctx.pick(["repeat", "cat_self"])
    ctx.use("repeat_channels")
    tag.append(f"{how}(x2)")
    return RepeatChannels(_cdim(st), how), replace(st, c=2 * st.c)


def blk_normalize(ctx, st, tag):
    how = ctx.pick(["normalize", "softmax"])
    ctx.use("normalize_channels")
    tag.append(f"{how}(channels)")
    return NormalizeChannels(_cdim(st), how), st



def blk_data_dependent(ctx, st, tag):
    c_out = ctx.width()
    a, s1 = _unit(ctx, st, c_out, keep_size=True, tag=tag)
    b, s2 = _unit(ctx, st, c_out, keep_size=True, tag=tag)
    if s1 != s2:
        return None
    how = ctx.pick(["values", "mode"])
    ctx.use("data_dependent" if how == "values" else "mode_dependent")
    tag.append("if x.abs().sum() >= 0" if how == "values" else "if self.training")
    return DataDependent(a, b, how), s1


def blk_einsum_conv(ctx, st, tag):
    c_out = ctx.width()
    ctx.use("einsum_conv")
    tag.append(f"einsum_conv({st.c}->{c_out})")
    return EinsumConv(st.c, c_out, st.kind), replace(st, c=c_out)


def blk_cat_spatial(ctx, st, tag):
    body, s2 = _unit(ctx, st, st.c, keep_size=True, tag=tag)
    if s2 != st:
        return None
    dim = {"img": 2, "seq": 2, "tok": 1}[st.kind]
    pool = ctx.chance(0.5) or st.spatial > 16
    ctx.use("cat_spatial")
    tag.append(f"cat(dim={dim}){'+fold' if pool else ''}")
    if pool:
        return CatSpatial(body, dim, True), st
    if st.kind == "img":
        return CatSpatial(body, dim, False), replace(st, h=2 * st.h)
    return CatSpatial(body, dim, False), replace(st, n=2 * st.n)


def blk_elementwise(ctx, st, tag):
    c_out = ctx.width()
    a, s1 = _unit(ctx, st, c_out, keep_size=True, tag=tag)
    b, s2 = _unit(ctx, st, c_out, keep_size=True, tag=tag)
    if s1 != s2:
        return None
    how = ctx.pick(["maximum", "where", "mul", "addcmul"])
    ctx.use("elementwise_merge")
    tag.append(how)
    return ElementwiseMerge(a, b, how), s1


def blk_dropout(ctx, st, tag):
    ctx.use("dropout")
    tag.append("dropout")
    if st.kind == "img" and ctx.chance(0.5):
        return nn.Dropout2d(0.1), st
    return nn.Dropout(0.1), st


def blk_unbind(ctx, st, tag):
    if st.c > 16:
        return None
    ctx.use("unbind")
    tag.append("unbind+stack")
    return Unbind(_cdim(st), ctx.chance(0.5)), st


_EXTRA = [(blk_reuse, 0.4), (blk_functional, 0.5), (blk_channel_mask, 0.3), (blk_normalize, 0.3),
          (blk_repeat, 0.3), (blk_data_dependent, 0.25), (blk_einsum_conv, 0.3), (blk_elementwise, 0.4),
          (blk_dropout, 0.2), (blk_unbind, 0.2)]

BLOCKS = {
    "img": [(blk_unit, 4), (blk_residual, 3), (blk_concat, 2), (blk_split, 2), (blk_select, 2),
            (blk_norm_act, 2), (blk_shuffle, 1), (blk_pixel, 1), (blk_se, 1), (blk_convnext, 1.5),
            (blk_pool2d, 1), (blk_img_to_tok, 1), (blk_to_vec, 0.7), (blk_spatial_gate, 0.4),
            (blk_resize, 0.4), (blk_stack, 0.4), (blk_cat_spatial, 0.3), *_EXTRA],
    "seq": [(blk_unit, 4), (blk_residual, 2), (blk_concat, 1), (blk_split, 1), (blk_select, 1),
            (blk_norm_act, 2), (blk_seq_to_tok, 0.7), (blk_to_vec, 0.4), (blk_cat_spatial, 0.3), *_EXTRA],
    "tok": [(blk_mha, 2), (blk_hand_attention, 2.5), (blk_mlp, 2), (blk_rnn, 1), (blk_norm_act, 1),
            (blk_unit, 1), (blk_token_conv, 1), (blk_select, 1), (blk_concat, 1), (blk_split, 1),
            (blk_tok_to_img, 0.7), (blk_to_vec, 0.4), (blk_gated_mlp, 1), (blk_stack, 0.4),
            (blk_transformer_layer, 0.8), (blk_cat_spatial, 0.3), *_EXTRA],
    "vec": [(blk_unit, 3), (blk_residual, 2), (blk_concat, 1), (blk_split, 1), (blk_select, 1),
            (blk_norm_act, 1), (blk_unflatten, 0.6), (blk_gated_mlp, 0.5), (blk_stack, 0.3), *_EXTRA],
}


#: Which components a block builder can add (beyond convs, norms and activations, which
#: most builders can add): a draw that must use ``ctx.focus`` favours these builders.
YIELDS = {
    blk_rnn: {"lstm", "gru", "nn_rnn", "lstm_proj", "rnn_bidirectional"},
    blk_mha: {"multihead_attention", "multihead_attention_seq_first", "mha_cross_kdim", "mha_options",
              "key_padding_mask"},
    blk_hand_attention: {"attention_heads", "attention_sdpa", "attention_separate_qkv", "einsum_attention",
                         "width_attributes", "view_literal"},
    blk_select: {"slice_prefix", "slice_step", "narrow", "index_list", "index_select"},
    blk_split: {"split", "chunk", "uneven_split"},
    blk_shuffle: {"channel_shuffle_view", "nn_channel_shuffle"},
    blk_pixel: {"pixel_shuffle", "pixel_unshuffle"},
    blk_to_vec: {"flatten_linear", "reshape_linear", "view_literal", "pool"},
    blk_img_to_tok: {"cls_token", "pos_embedding"},
    blk_tok_to_img: {"tokens_to_image"},
    blk_resize: {"pad", "interpolate"},
    blk_data_dependent: {"data_dependent", "mode_dependent"},
    blk_unflatten: {"unflatten"},
    blk_spatial_gate: {"channel_reduce_gate"},
    blk_transformer_layer: {"transformer_layer"},
    blk_functional: {"functional_conv", "functional_linear"},
    blk_unbind: {"unbind"},
    blk_dropout: {"dropout"},
    blk_einsum_conv: {"einsum_conv"},
    blk_cat_spatial: {"cat_spatial"},
    blk_channel_mask: {"channel_buffer"},
    blk_stack: {"stack"},
    blk_repeat: {"repeat_channels"},
    blk_elementwise: {"elementwise_merge"},
    blk_normalize: {"normalize_channels"},
    blk_se: {"se_gate"},
    blk_reuse: {"module_reuse"},
    blk_gated_mlp: {"gated_mlp", "width_attributes"},
    blk_residual: {"residual_projection", "layer_scale", "inplace_ops"},
    blk_concat: {"dense_concat"},
    blk_convnext: {"channels_last_mlp", "layer_scale"},
    blk_mlp: {"channels_last_mlp", "layer_scale"},
}

#: The stream a component needs (for the first stem of a focused draw).
KIND_FOR = {
    **{c: "tok" for c in ("lstm", "gru", "nn_rnn", "lstm_proj", "rnn_bidirectional", "multihead_attention",
                          "multihead_attention_seq_first", "mha_cross_kdim", "mha_options", "key_padding_mask",
                          "attention_heads", "attention_sdpa", "attention_separate_qkv", "einsum_attention",
                          "transformer_layer", "tied_weights", "embedding_max_norm", "tokens_to_image",
                          "width_attributes", "gated_mlp", "embedding")},
    **{c: "img" for c in ("channel_shuffle_view", "nn_channel_shuffle", "pixel_shuffle", "pixel_unshuffle",
                          "cls_token", "pad", "interpolate", "channel_reduce_gate", "se_gate", "conv2d",
                          "conv_transpose2d", "batchnorm2d", "layernorm_chw", "layernorm2d_permute",
                          "layernorm2d_torchvision", "channels_last_mlp")},
    **{c: "seq" for c in ("conv1d", "conv_transpose1d", "batchnorm1d")},
    **{c: "vec" for c in ("unflatten", "batchnorm_vector")},
}


def _pick_block(ctx: Ctx, st: St):
    table = BLOCKS[st.kind]
    fns = [f for f, _ in table]
    weights = [w * (15 if ctx.focus in YIELDS.get(f, ()) else 1) for f, w in table]
    return ctx.rng.choices(fns, weights)[0]


# ---------------------------------------------------------------------------------------
# stems, heads, model
# ---------------------------------------------------------------------------------------


def _stem(ctx: Ctx, kind: str, gen: torch.Generator) -> tuple[nn.Module, torch.Tensor, St, list[str]]:
    tag: list[str] = []
    if kind == "img":
        cin, side = ctx.pick([1, 3]), ctx.pick([4, 6, 8])
        x = torch.randn(B, cin, side, side, generator=gen)
        while True:
            m, st = _conv_unit(ctx, St("img", cin, h=side, w=side), ctx.width(), keep_size=True, tag=tag)
            if st.c >= 2:
                return m, x, st, tag
            tag.clear()
    if kind == "seq":
        cin, n = ctx.pick([1, 2, 3]), ctx.pick([8, 12, 16])
        x = torch.randn(B, cin, n, generator=gen)
        while True:
            m, st = _conv_unit(ctx, St("seq", cin, n=n), ctx.width(), keep_size=True, tag=tag)
            if st.c >= 2:
                return m, x, st, tag
            tag.clear()
    if kind == "tok":
        d = ctx.pick([4, 6, 8, 12])
        ctx.use("embedding")
        max_norm = None
        if ctx.chance(0.08):
            ctx.use("embedding_max_norm")
            max_norm = 1.0
        emb = nn.Embedding(VOCAB, d, padding_idx=0 if ctx.chance(0.3) else None, max_norm=max_norm)
        ctx.embedding = emb
        ids = torch.randint(0, VOCAB, (B, N_TOKENS), generator=gen)
        tag.append(f"embedding({VOCAB},{d})")
        stem = EmbedStem(emb)
        st = St("tok", d, n=N_TOKENS)
        if ctx.chance(0.4):
            ctx.use("pos_embedding")
            stem = nn.Sequential(stem, _AddParam(nn.Parameter(torch.randn(1, N_TOKENS, d) * 0.1)))
            tag.append("+pos")
        return stem, ids, st, tag
    f = ctx.pick([3, 5, 8])
    x = torch.randn(B, f, generator=gen)
    m, st = _linear_unit(ctx, St("vec", f), ctx.width(), tag)
    return m, x, st, tag


class _AddParam(nn.Module):
    def __init__(self, p: nn.Parameter):
        super().__init__()
        self.pos_embed = p

    def forward(self, x):
        return x + self.pos_embed


def _head(ctx: Ctx, st: St, n_out: int, tag: list[str], allow_tied: bool) -> nn.Module:
    if st.kind == "tok" and allow_tied and ctx.embedding is not None and ctx.chance(0.5):
        ctx.use("tied_weights")
        emb = ctx.embedding
        lin = nn.Linear(emb.embedding_dim, VOCAB, bias=False)
        lin.weight = emb.weight
        tag.append("tied_head")
        if st.c != emb.embedding_dim:
            ctx.use("linear")
            return nn.Sequential(nn.Linear(st.c, emb.embedding_dim), lin)
        return lin
    if st.kind == "img":
        r = ctx.rng.random()
        if r < 0.25:
            ctx.use("conv2d")
            tag.append("conv1x1_head")
            return nn.Conv2d(st.c, n_out, 1)
        if r < 0.5 and st.c * st.h * st.w <= 256:
            ctx.use("flatten_linear", "linear")
            tag.append("flatten_head")
            return nn.Sequential(nn.Flatten(), nn.Linear(st.c * st.h * st.w, n_out))
        ctx.use("pool", "linear")
        tag.append("pool_head")
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(st.c, n_out))
    if st.kind == "seq":
        ctx.use("pool", "linear")
        tag.append("pool_head")
        return nn.Sequential(Pool("seq", "mean"), nn.Linear(st.c, n_out))
    ctx.use("linear")
    tag.append("linear_head")
    return nn.Linear(st.c, n_out)


def _aux(ctx: Ctx, st: St, gen: torch.Generator) -> tuple[nn.Module, torch.Tensor, Merge, St]:
    """A second input and its stem, to be merged into a stream of shape ``st``."""
    ctx.use("second_input")
    if st.kind == "img" and ctx.chance(0.4):
        x = torch.randn(B, 2, st.h, st.w, generator=gen)
        c = ctx.width()
        ctx.use("conv2d")
        stem = nn.Sequential(nn.Conv2d(2, c, 3, padding=1), _act(ctx, c))
        if ctx.chance(0.5):
            return stem, x, Merge("cat", "img"), replace(st, c=st.c + c)
        stem = nn.Sequential(nn.Conv2d(2, st.c, 3, padding=1))
        return stem, x, Merge("add", "img"), st
    if st.kind == "tok" and ctx.chance(0.4):
        ids = torch.randint(0, VOCAB, (B, st.n), generator=gen)
        ctx.use("embedding")
        return EmbedStem(nn.Embedding(VOCAB, st.c)), ids, Merge("add", "tok"), st
    f = ctx.pick([2, 4])
    x = torch.randn(B, f, generator=gen)
    ctx.use("linear")
    if st.kind == "vec" and ctx.chance(0.5):
        c = ctx.width()
        return nn.Linear(f, c), x, Merge("cat", "vec"), replace(st, c=st.c + c)
    return nn.Linear(f, st.c), x, Merge("add", st.kind), st


def _tap(ctx: Ctx, st: St, tag: list[str]) -> nn.Module:
    """An extra output from an intermediate stream: the raw features or a small head."""
    if ctx.chance(0.3):
        tag.append("tap(raw)")
        return nn.Identity()
    return _head(ctx, st, ctx.pick([2, 3]), tag, allow_tied=False)


#: The components the task list names (the rest of :data:`COMPONENTS` are further ways to
#: write the same things). ``test_random_architectures`` checks that the fast seed budget
#: uses each of these, and the slow budget every component.
CORE = (
    "conv1d", "conv2d", "conv_grouped", "conv_depthwise", "conv_strided", "conv_dilated",
    "conv_transpose1d", "conv_transpose2d", "batchnorm1d", "batchnorm2d", "groupnorm",
    "instancenorm_affine", "layernorm_channels_last", "layernorm_chw", "rmsnorm", "layernorm2d_permute",
    "layernorm2d_torchvision", "activation", "prelu_per_channel", "residual_add", "concat", "split",
    "chunk", "slice_prefix", "slice_step", "narrow", "index_list", "index_select", "channel_shuffle_view",
    "nn_channel_shuffle", "pixel_shuffle", "flatten_linear", "reshape_linear", "channels_last_mlp",
    "multihead_attention", "attention_heads", "embedding", "lstm", "gru", "cls_token", "layer_scale",
    "pos_embedding", "tied_weights", "second_input", "inputs_tuple", "inputs_dict", "outputs_tuple",
    "outputs_dict",
)

#: Seed ``s`` retries its draw until it uses ``FOCUS[s % len(FOCUS)]``: first the core
#: components a plain draw uses least, then the rarest of the others. Any ``len(FOCUS)``
#: consecutive seeds use every one of them; the common components come along anyway.
FOCUS = (
    # core, rarest first (share of plain draws, 600 seeds)
    "reshape_linear", "channel_shuffle_view", "cls_token", "pixel_shuffle", "gru", "lstm",
    "nn_channel_shuffle", "slice_step", "attention_sdpa", "index_list", "index_select", "narrow",
    "slice_prefix", "multihead_attention", "flatten_linear", "conv_transpose1d", "conv_strided",
    "attention_heads", "tied_weights", "chunk", "split", "layernorm2d_permute", "layernorm_chw",
    "layernorm2d_torchvision", "conv_grouped", "batchnorm2d", "pos_embedding", "inputs_dict",
    "outputs_dict", "second_input",
    # the others, rarest first
    "lstm_proj", "pad", "nn_rnn", "interpolate", "data_dependent", "mode_dependent", "embedding_max_norm",
    "key_padding_mask", "mha_cross_kdim", "pixel_unshuffle", "rnn_bidirectional", "mha_options",
    "unflatten", "channel_reduce_gate", "uneven_split", "tokens_to_image", "functional_linear",
    "weight_norm", "transformer_layer", "einsum_attention", "multihead_attention_seq_first", "unbind",
    "functional_conv", "dropout", "einsum_conv", "cat_spatial", "channel_buffer", "stack",
    "attention_separate_qkv", "repeat_channels", "conv_transpose_grouped", "elementwise_merge",
    "normalize_channels", "se_gate", "batchnorm_vector", "module_reuse", "residual_projection",
    "view_literal", "gated_mlp", "frozen_params", "dense_concat", "nested_inputs", "width_attributes",
    "padding_mode", "float64", "prelu_shared", "conv_depthwise_multiplier", "norm_variants",
)


def make_model(seed: int, exclude=(), focus: bool | str = True) -> tuple[nn.Module, object, Description]:
    """A random model, its example inputs and its description; the same seed gives the same model.

    Args:
        exclude: components (names from :data:`COMPONENTS`) the model must not use, e.g.
            to hunt past a known failure class.
        focus: ``True`` makes seed ``s`` use ``FOCUS[s % len(FOCUS)]``; a component name
            forces that one; ``False`` takes the first draw as it comes.
    """
    exclude = frozenset(exclude)
    unknown = exclude - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; see COMPONENTS")
    if focus is True:
        focus = FOCUS[seed % len(FOCUS)]
    if focus in exclude:
        focus = False
    for attempt in range(500):
        made = _attempt(seed, attempt, exclude, focus or None)
        if made is not None:
            return made
    raise RuntimeError(f"seed {seed}: no model without {sorted(exclude)} and with {focus!r} in 500 draws")


def _attempt(seed: int, attempt: int, exclude: frozenset, focus: str | None):
    ctx = Ctx(f"{seed}:{attempt}", exclude)
    ctx.focus = focus
    gen = torch.Generator().manual_seed(seed * 7919 + attempt)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 7919 + attempt)
        model, inputs = _build(ctx, gen)
        if ctx.chance(0.15):
            ctx.use("float64")
            model = model.double()
            inputs = _map_inputs(inputs, lambda t: t.double() if t.is_floating_point() else t)
        if ctx.chance(0.3):
            ctx.use("eval_mode")
            model.eval()
        if ctx.chance(0.1):
            ctx.use("frozen_params")
            owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
            ctx.pick(owners).requires_grad_(False)
        if isinstance(inputs, dict):
            ctx.use("inputs_dict")
        elif isinstance(inputs, tuple):
            ctx.use("inputs_tuple")
        else:
            ctx.use("input_tensor")
        fmt = model.out_format
        ctx.use({"tensor": "output_tensor", "tuple": "outputs_tuple", "dict": "outputs_dict"}[fmt])
        if ctx.desc.components & exclude or (focus and focus not in ctx.desc.components):
            return None
        out = call(copy.deepcopy(model), inputs)
        ts = tensors_in(out)
        assert ts, "a generated model must return tensors"
        sum(t.float().sum() for t in ts if t.requires_grad).backward()  # and backward
    ctx.desc.seed = seed
    return model, inputs, ctx.desc


def tensors_in(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, tuple | list):
        return [t for o in out for t in tensors_in(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in tensors_in(o)]
    return []


def _build(ctx: Ctx, gen: torch.Generator) -> tuple[Net, object]:
    kinds, weights = ["img", "seq", "tok", "vec"], [4, 1.5, 3, 1]
    if ctx.focus in KIND_FOR and ctx.chance(0.8):
        weights = [w * (20 if k == KIND_FOR[ctx.focus] else 1) for k, w in zip(kinds, weights)]
    kind = ctx.rng.choices(kinds, weights)[0]
    stem, x, st, tag = _stem(ctx, kind, gen)
    ctx.desc.blocks.append(f"{kind}:" + ",".join(tag))
    n_blocks = ctx.rng.randint(2, 6)
    blocks, taps = [], {}
    want_aux = ctx.chance(0.3)
    aux_at = ctx.rng.randint(0, n_blocks) if want_aux else -1
    aux_stem = merge = None
    y = None
    tries = 0
    while len(blocks) < n_blocks and tries < 60:
        tries += 1
        if len(blocks) == aux_at and aux_stem is None:
            aux_stem, y, merge, st = _aux(ctx, st, gen)
            ctx.desc.blocks.append(f"merge({merge.mode})")
        fn = _pick_block(ctx, st)
        tag: list[str] = []
        used_before = set(ctx.desc.components)
        made = fn(ctx, st, tag)
        if made is None or ctx.desc.components & ctx.exclude:
            ctx.desc.components = used_before
            continue
        m, st2 = made
        if st2.c < 2 or st2.c > 64 or (st2.kind == "img" and (st2.h < 1 or st2.h > 16)):
            ctx.desc.components = used_before
            continue
        blocks.append(m)
        st = st2
        ctx.desc.blocks.append(",".join(tag) or fn.__name__)
        if ctx.chance(0.15):
            ttag: list[str] = []
            taps[str(len(blocks) - 1)] = _tap(ctx, st, ttag)
            ctx.desc.blocks.append("tap:" + ",".join(ttag))
    if want_aux and aux_stem is None:  # merge after the last block
        aux_at = len(blocks)
        aux_stem, y, merge, st = _aux(ctx, st, gen)
        ctx.desc.blocks.append(f"merge({merge.mode})")
    htag: list[str] = []
    head = _head(ctx, st, ctx.pick([3, 5]), htag, allow_tied=True)
    ctx.desc.blocks.append(",".join(htag))
    fmt = "tensor"
    if taps:
        fmt = ctx.pick(["tuple", "dict"])
    elif ctx.chance(0.2):
        fmt = ctx.pick(["tuple", "dict"])
    model = Net(stem, blocks, head, aux_stem, merge, aux_at, taps, fmt)
    if ctx.chance(0.1):
        ctx.use("nested_inputs")
        if ctx.chance(0.5):
            return model, ({"x": x, "y": y} if y is not None else {"x": x},)
        return model, ([x, y] if y is not None else [x],)
    if y is not None:
        inputs = (x, y) if ctx.chance(0.5) else {"x": x, "y": y}
    else:
        r = ctx.rng.random()
        inputs = x if r < 0.6 else ((x,) if r < 0.8 else {"x": x})
    return model, inputs


def _map_inputs(inputs, fn):
    if isinstance(inputs, dict):
        return {k: _map_inputs(v, fn) for k, v in inputs.items()}
    if isinstance(inputs, tuple | list):
        return type(inputs)(_map_inputs(v, fn) for v in inputs)
    return fn(inputs)


def call(model: nn.Module, inputs):
    """Call ``model`` the way the engine does: a tuple is positional args, a dict is kwargs."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)
