"""Index mapping through ops: every coupling checked against a hand-derived answer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import CustomScale, CustomScalePruner, silence_channels
from torch import nn

import lightning_prune.engine as tp
from lightning_prune.engine import PruningError


def targets(group) -> dict[tuple[str, str], list[int]]:
    return {(d.target.name, d.handler.__name__): idxs for d, idxs in group}


def build(model, x, **kw):
    return tp.DependencyGraph().build_dependency(model, x, **kw)


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 6, 1)
        self.head = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


def test_concat_maps_indices_to_the_right_offset():
    model = Concat()
    x = torch.randn(1, 3, 8, 8)
    DG = build(model, x)
    g = DG.get_pruning_group(model.b, tp.prune_conv_out_channels, idxs=[1, 3])
    assert targets(g)[("head", "prune_in_channels")] == [5, 7]
    assert ("a", "prune_out_channels") not in targets(g)
    g.prune()
    assert model.head.in_channels == 8 and model(x).shape == (1, 5, 8, 8)


class Split(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.left = nn.Conv2d(3, 3, 1)
        self.right = nn.Conv2d(5, 2, 1)

    def forward(self, x):
        y = self.stem(x)
        a, b = torch.split(y, [3, 5], dim=1)
        return torch.cat([self.left(a), self.right(b)], 1)


def test_split_maps_indices_and_rejects_a_prune_that_breaks_the_sizes():
    model = Split()
    DG = build(model, torch.randn(1, 3, 4, 4))
    g = DG.get_pruning_group(model.stem, tp.prune_conv_out_channels, idxs=[1, 6])
    assert targets(g)[("left", "prune_in_channels")] == [1]
    assert targets(g)[("right", "prune_in_channels")] == [3]
    assert g.sensitive  # split sizes are written as ints
    with pytest.raises(PruningError, match="no longer runs forward.*unchanged"):
        g.prune()
    assert model.stem.out_channels == 8 and model.left.in_channels == 3


class Chunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.a = nn.Conv2d(4, 2, 1)
        self.b = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        p, q = self.stem(x).chunk(2, dim=1)
        return self.a(p) + self.b(q)


def test_chunk_couples_the_same_offset_in_every_chunk():
    model = Chunk()
    x = torch.randn(1, 3, 4, 4)
    DG = build(model, x)
    g = DG.get_pruning_group(model.stem, tp.prune_conv_out_channels, idxs=[1])
    assert targets(g)[("stem", "prune_out_channels")] == [1, 5]
    assert targets(g)[("a", "prune_in_channels")] == [1] and targets(g)[("b", "prune_in_channels")] == [1]
    g.prune()
    assert model(x).shape == (1, 2, 4, 4)


class FlattenHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 2 * 2, 7)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.conv(x), 2), 1))


def test_flatten_expands_a_channel_to_its_spatial_positions():
    model = FlattenHead()
    x = torch.randn(2, 3, 8, 8)
    DG = build(model, x)
    g = DG.get_pruning_group(model.conv, tp.prune_conv_out_channels, idxs=[1])
    assert targets(g)[("fc", "prune_in_channels")] == [4, 5, 6, 7]
    silence_channels(g)
    before = model(x)
    g.prune()
    torch.testing.assert_close(model(x), before)
    assert model.fc.in_features == 12


class ViewAndUnbind(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.out = nn.Linear(2, 3)

    def forward(self, x):
        a, b, c = self.proj(x).view(x.shape[0], 3, -1).unbind(1)
        return self.out(a + b + c)


def test_reshape_split_and_unbind_couple_rows_of_the_same_column():
    model = ViewAndUnbind()
    x = torch.randn(4, 6)
    DG = build(model, x)
    g = DG.get_pruning_group(model.out, tp.prune_linear_in_channels, idxs=[1])
    # view(3, 2): element 2r+c of proj's output is column c of row r; unbind over rows.
    assert targets(g)[("proj", "prune_out_channels")] == [1, 3, 5]
    g.prune()
    assert model(x).shape == (4, 3)


class TinyAttention(nn.Module):
    """q/k/v as separate Linears, heads split with view/permute, merged with transpose."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = (f(x).view(B, N, self.heads, -1).permute(0, 2, 1, 3) for f in (self.q, self.k, self.v))
        attn = (q @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, -1))


def test_attention_heads_keep_equal_widths_and_q_k_stay_coupled():
    model = TinyAttention()
    x = torch.randn(2, 5, 8)
    DG = build(model, x)
    g = DG.get_pruning_group(model.v, tp.prune_linear_out_channels, idxs=[1])
    t = targets(g)
    assert t[("v", "prune_out_channels")] == [1, 5]  # same offset in both heads
    assert t[("proj", "prune_in_channels")] == [1, 5]
    assert ("q", "prune_out_channels") not in t
    gq = DG.get_pruning_group(model.q, tp.prune_linear_out_channels, idxs=[2])
    assert targets(gq)[("k", "prune_out_channels")] == [2, 6]
    gq.prune()
    g = DG.get_pruning_group(model.v, tp.prune_linear_out_channels, idxs=[1])
    g.prune()
    assert model(x).shape == (2, 5, 8)


class GQA(nn.Module):
    """Grouped-query attention: 4 query heads share 2 key/value heads via expand+reshape."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(8, 8)   # 4 heads x 2
        self.kv = nn.Linear(8, 4)  # 2 heads x 2
        self.o = nn.Linear(8, 8)

    def forward(self, x):
        B, N, _ = x.shape
        q = self.q(x).view(B, N, 4, -1).transpose(1, 2)
        kv = self.kv(x).view(B, N, 2, -1).transpose(1, 2)
        kv = kv[:, :, None].expand(-1, -1, 2, -1, -1).reshape(B, 4, N, -1)
        out = F.scaled_dot_product_attention(q, kv, kv)
        return self.o(out.transpose(1, 2).reshape(B, N, -1))


def test_grouped_query_expand_couples_the_shared_head_dim():
    model = GQA()
    x = torch.randn(1, 3, 8)
    DG = build(model, x)
    g = DG.get_pruning_group(model.kv, tp.prune_linear_out_channels, idxs=[0])
    t = targets(g)
    assert t[("kv", "prune_out_channels")] == [0, 2]
    assert t[("q", "prune_out_channels")] == [0, 2, 4, 6]
    assert t[("o", "prune_in_channels")] == [0, 2, 4, 6]
    g.prune()
    assert model(x).shape == (1, 3, 8)


class Shuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        y = self.a(x)
        B, C, H, W = y.shape
        y = y.view(B, 2, C // 2, H, W).transpose(1, 2).reshape(B, C, H, W)
        return self.b(y)


def test_channel_shuffle_maps_through_the_permutation():
    model = Shuffle()
    x = torch.randn(1, 3, 4, 4)
    DG = build(model, x)
    g = DG.get_pruning_group(model.a, tp.prune_conv_out_channels, idxs=[1])
    t = targets(g)
    assert t[("a", "prune_out_channels")] == [1, 4]  # offset 1 in both groups of 3
    assert t[("b", "prune_in_channels")] == [2, 3]   # shuffled positions of channels 1 and 4
    silence_channels(g)
    before = model(x)
    g.prune()
    torch.testing.assert_close(model(x), before)


class TwoInTwoOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fa = nn.Linear(4, 6)
        self.fb = nn.Linear(5, 6)
        self.head1 = nn.Linear(6, 2)
        self.head2 = nn.Linear(6, 3)

    def forward(self, a, b=None):
        h = torch.relu(self.fa(a) + self.fb(b))
        return {"one": self.head1(h), "two": (self.head2(h), h.sum(-1))}


@pytest.mark.parametrize("as_dict", [False, True])
def test_multiple_inputs_and_outputs(as_dict):
    model = TwoInTwoOut()
    a, b = torch.randn(3, 4), torch.randn(3, 5)
    inputs = {"a": a, "b": b} if as_dict else (a, b)
    DG = build(model, inputs)
    g = DG.get_pruning_group(model.fa, tp.prune_linear_out_channels, idxs=[0, 2])
    t = targets(g)
    assert t[("fb", "prune_out_channels")] == [0, 2]
    assert t[("head1", "prune_in_channels")] == [0, 2] and t[("head2", "prune_in_channels")] == [0, 2]
    with pytest.raises(PruningError, match="model output"):
        DG.get_pruning_group(model.head2, tp.prune_linear_out_channels, idxs=[0])
    g.prune()
    out = model(a, b)
    assert out["one"].shape == (3, 2) and out["two"][0].shape == (3, 3)


def test_forward_fn_and_output_transform():
    model = TwoInTwoOut()
    a, b = torch.randn(3, 4), torch.randn(3, 5)
    calls = []

    def forward_fn(m, inputs):
        calls.append(1)
        return m(inputs[0], b=inputs[1])

    # Protect only head1's output: head2's width becomes prunable.
    DG = build(model, (a, b), forward_fn=forward_fn, output_transform=lambda out: out["one"])
    assert calls
    g = DG.get_pruning_group(model.head2, tp.prune_linear_out_channels, idxs=[0])
    assert list(targets(g)) == [("head2", "prune_out_channels")]


def test_custom_layer_with_customized_pruner():
    model = nn.Sequential(nn.Conv2d(3, 5, 1), CustomScale(5), nn.Conv2d(5, 2, 1))
    x = torch.randn(1, 3, 4, 4)
    DG = build(model, x, customized_pruners={CustomScale: CustomScalePruner()})
    g = DG.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[1, 3])
    t = targets(g)
    assert t[("1", "prune_out_channels")] == [1, 3] and t[("2", "prune_in_channels")] == [1, 3]
    g.prune()
    assert model[1].params.shape == (2, 3) and model(x).shape == (1, 2, 4, 4)


class TinyViT(nn.Module):
    def __init__(self, dim=6, tokens=4):
        super().__init__()
        self.patch = nn.Linear(3, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim))
        self.gamma = nn.Parameter(torch.ones(dim))
        self.mlp = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 2)

    def forward(self, x):
        x = self.patch(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = x + self.gamma * self.mlp(x)
        return self.head(x[:, 0])


def test_unwrapped_parameters_are_found_and_pruned_along_the_channel_dim():
    model = TinyViT()
    x = torch.randn(2, 4, 3)
    DG = build(model, x)
    g = DG.get_pruning_group(model.patch, tp.prune_linear_out_channels, idxs=[2])
    names = {d.target.name: (d.target.pruning_dim, i) for d, i in g}
    assert names["cls_token"] == (2, [2]) and names["pos"] == (2, [2]) and names["gamma"] == (0, [2])
    ids = {id(p) for p in model.parameters()}
    g.prune()
    assert {id(p) for p in model.parameters()} == ids
    assert model.cls_token.shape == (1, 1, 5) and model.pos.shape == (1, 5, 5)
    assert model(x).shape == (2, 2)
    # the token dim of pos is coupled to the input and can never be pruned
    assert not any(d.target.name == "pos" and d.target.pruning_dim == 1 for grp in DG.get_all_groups() for d, _ in grp)


def test_unwrapped_parameters_can_be_overridden():
    model = TinyViT()
    x = torch.randn(2, 4, 3)
    # Only cls_token is declared: the others are kept whole, which freezes their channels.
    DG = build(model, x, unwrapped_parameters=[(model.cls_token, 2)])
    with pytest.raises(PruningError, match="cannot be pruned"):
        DG.get_pruning_group(model.patch, tp.prune_linear_out_channels, idxs=[2])
    with pytest.raises(ValueError, match="unwrapped_parameters"):
        build(model, x, unwrapped_parameters=[torch.zeros(3)])


def test_multihead_attention_and_lstm_layers():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(4, 8)
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
            self.lstm = nn.LSTM(8, 6, batch_first=True, bidirectional=True)
            self.head = nn.Linear(12, 3)

        def forward(self, x):
            h = self.inp(x)
            h = self.mha(h, h, h)[0] + h
            return self.head(self.lstm(h)[0])

    model = Net().eval()
    x = torch.randn(2, 5, 4)
    DG = build(model, x)
    g = DG.get_pruning_group(model.inp, tp.prune_linear_out_channels, idxs=[1])
    assert targets(g)[("mha", "prune_out_channels")] == [1, 5]  # same offset in both heads
    assert targets(g)[("lstm", "prune_in_channels")] == [1, 5]
    g.prune()
    g = DG.get_pruning_group(model.lstm, tp.prune_lstm_out_channels, idxs=[0])
    assert targets(g)[("head", "prune_in_channels")] == [0, 6]  # forward and backward halves
    g.prune()
    assert model(x).shape == (2, 5, 3) and model.mha.embed_dim == 6 and model.lstm.hidden_size == 5


def test_grouped_conv_and_groupnorm_keep_groups_equal():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(2, 8), nn.Conv2d(8, 8, 3, padding=1, groups=4),
                          nn.Conv2d(8, 2, 1))
    x = torch.randn(1, 3, 6, 6)
    DG = build(model, x)
    g = DG.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0])
    t = targets(g)
    # GroupNorm (2 groups of 4) and the grouped conv (4 groups of 2) both need equal groups:
    # offset 0 couples to 4 (GroupNorm) and to 2, 6 (conv groups) -> 0, 2, 4, 6.
    assert t[("0", "prune_out_channels")] == [0, 2, 4, 6]
    g.prune()
    assert model(x).shape == (1, 2, 6, 6)
    assert model[1].num_channels == 4 and model[2].groups == 4


def test_depthwise_conv_is_coupled_in_and_out():
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.Conv2d(6, 6, 3, padding=1, groups=6),
                          nn.Conv2d(6, 4, 1))
    x = torch.randn(2, 3, 5, 5)
    model.eval()
    DG = build(model, x)
    g = DG.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[2, 4])
    assert targets(g)[("2", "prune_out_channels")] == [2, 4]
    silence_channels(g)
    before = model(x)
    g.prune()
    torch.testing.assert_close(model(x), before)
    assert model[2].groups == 4 and model[2].in_channels == 4


@pytest.mark.parametrize("fn, shape, size", [
    ("adaptive_avg_pool1d", (2, 6, 9), 4),
    ("adaptive_avg_pool2d", (2, 6, 7, 5), 1),
    ("adaptive_avg_pool2d", (2, 6, 7, 5), (3, None)),
    ("adaptive_avg_pool2d", (6, 7, 5), [2, 2]),
    ("adaptive_avg_pool3d", (1, 6, 4, 5, 6), (2, 3, 1)),
])
def test_meta_shortcut_for_adaptive_pooling_matches_torch(fn, shape, size):
    from lightning_prune.engine.trace.fast_ops import fast_elementwise

    got = fast_elementwise(fn, (torch.empty(shape, device="meta"), size), {})
    want = getattr(torch.nn.functional, fn)(torch.zeros(shape), size)
    assert got.device.type == "meta" and got.shape == want.shape and got.dtype == want.dtype


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("need_weights,average", [(False, True), (True, True), (True, False)])
def test_fast_attention_shapes_match_torch(batch_first, batched, need_weights, average):
    """The meta stand-in for nn.MultiheadAttention gives torch's output shapes."""
    from lightning_prune.engine.trace.fast_meta import fast_forward

    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=12, vdim=10)
    q_shape, kv_len = ((2, 5, 16) if batch_first else (5, 2, 16)) if batched else (5, 16), 7
    k_shape = list(q_shape[:-1]) + [12]
    k_shape[1 if batch_first and batched else 0] = kv_len
    v_shape = k_shape[:-1] + [10]
    real = mha(torch.randn(q_shape), torch.randn(k_shape), torch.randn(v_shape),
               need_weights=need_weights, average_attn_weights=average)
    fast = fast_forward(mha)
    meta = fast(torch.empty(q_shape, device="meta"), torch.empty(k_shape, device="meta"),
                torch.empty(v_shape, device="meta"), need_weights=need_weights, average_attn_weights=average)
    assert meta[0].device.type == "meta" and meta[0].shape == real[0].shape
    assert (meta[1] is None) == (real[1] is None)
    if real[1] is not None:
        assert meta[1].shape == real[1].shape


def test_fast_attention_rejects_a_wrong_width():
    from lightning_prune.engine.trace.fast_meta import fast_forward

    fast = fast_forward(nn.MultiheadAttention(16, 4))
    x = torch.empty(5, 2, 12, device="meta")
    with pytest.raises(RuntimeError, match="embed dims"):
        fast(x, x, x)


def test_fast_sdpa_shape_matches_torch():
    from lightning_prune.engine.trace.fast_ops import fast_elementwise

    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 6)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    got = fast_elementwise("scaled_dot_product_attention", tuple(t.to("meta") for t in (q, k, v)), {})
    assert got.device.type == "meta" and got.shape == want.shape
    masked = fast_elementwise("scaled_dot_product_attention", tuple(t.to("meta") for t in (q, k, v)),
                              {"attn_mask": torch.ones(5, 7, dtype=torch.bool, device="meta")})
    assert masked is NotImplemented  # masks take torch's own path
