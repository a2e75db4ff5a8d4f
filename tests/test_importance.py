"""Importance criteria: every score checked against a hand computation from the weights."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import CustomScale, CustomScalePruner, assert_same_state, snapshot
from torch import nn

import lightning_prune.engine as tp
import lightning_prune.engine.importance as imp
from lightning_prune.engine.importance.base import RootMap


def build(model, x):
    return tp.DependencyGraph().build_dependency(model, x)


def sq(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double().pow(2).sum()


class ConvBNConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 3, 1)
        with torch.no_grad():
            self.bn.weight.copy_(torch.tensor([0.5, -2.0, 1.5, 0.1]))
            self.bn.bias.copy_(torch.tensor([0.3, 0.0, -1.0, 2.0]))

    def forward(self, x):
        return self.c2(torch.relu(self.bn(self.c1(x))))


@pytest.fixture
def cbc():
    torch.manual_seed(0)
    model = ConvBNConv()
    DG = build(model, torch.randn(1, 2, 6, 6))
    group = DG.get_pruning_group(model.c1, tp.prune_conv_out_channels, [0, 1, 2, 3])
    return model, DG, group


def cbc_items(model: ConvBNConv, p: float = 2.0, bias: bool = False) -> torch.Tensor:
    """[3 items, 4 channels]: c1 filters, bn gammas, c2 input columns, by hand."""
    c1, bn, c2 = model.c1, model.bn, model.c2
    rows = []
    for i_item in range(3):
        row = []
        for i in range(4):
            if i_item == 0:
                v = c1.weight[i].detach().double().abs().pow(p).sum()
                if bias:
                    v = v + c1.bias[i].detach().double().abs().pow(p)
            elif i_item == 1:
                v = bn.weight[i].detach().double().abs().pow(p)
                if bias:
                    v = v + bn.bias[i].detach().double().abs().pow(p)
            else:
                v = c2.weight[:, i].detach().double().abs().pow(p).sum()
            row.append(v)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def close(a, b, tol=1e-5):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.allclose(a, b, rtol=tol, atol=tol), (a, b)


# ----------------------------------------------------------------------------- magnitude
def test_group_l2_score_by_hand(cbc):
    model, _, group = cbc
    scores = imp.GroupMagnitudeImportance(p=2, normalizer=None)(group)
    assert scores.dtype == torch.float32 and scores.shape == (4,)
    close(scores, cbc_items(model).mean(0))


def test_group_l1_with_bias_by_hand(cbc):
    model, _, group = cbc
    scores = imp.GroupMagnitudeImportance(p=1, normalizer=None, bias=True)(group)
    close(scores, cbc_items(model, p=1, bias=True).mean(0))


def test_each_reduction_by_hand(cbc):
    model, _, group = cbc
    items = cbc_items(model)
    expected = {
        "mean": items.mean(0), "sum": items.sum(0), "max": items.amax(0),
        "prod": items.prod(0), "first": items[0],
    }
    for how, want in expected.items():
        close(imp.GroupMagnitudeImportance(group_reduction=how, normalizer=None)(group), want)


def test_each_normalizer_by_hand(cbc):
    model, _, group = cbc
    x = cbc_items(model).mean(0)
    ordered = sorted(x.tolist())
    lamp = torch.tensor([v / sum(w for w in ordered if w >= v) for v in x.tolist()])
    expected = {
        "mean": x / x.mean(), "sum": x / x.sum(), "max": x / x.max(),
        "gaussian": (x - x.mean()) / x.std(correction=0), "lamp": lamp, "none": x, None: x,
    }
    for how, want in expected.items():
        close(imp.GroupMagnitudeImportance(normalizer=how)(group), want)


def test_reduction_only_counts_items_that_scored_the_index():
    scores = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]], dtype=torch.float64)
    hit = torch.tensor([[True, True, False], [True, False, False]])
    want = {"mean": [2, 2, 0], "sum": [4, 2, 0], "max": [3, 2, 0], "prod": [3, 2, 0], "first": [1, 2, 0]}
    for how, w in want.items():
        close(imp.reduce_scores(scores, hit, how), w)


def test_lamp_normalizer_ties_share_the_denominator():
    x = torch.tensor([1.0, 2.0, 2.0, 3.0], dtype=torch.float64)
    close(imp.normalize_scores(x, "lamp"), [1 / 8, 2 / 7, 2 / 7, 1.0])


def test_dividing_normalizers_leave_all_zero_scores_finite():
    for how in imp.NORMALIZERS:
        out = imp.normalize_scores(torch.zeros(3, dtype=torch.float64), how)
        assert torch.isfinite(out).all() and (out == 0).all(), how


def test_scores_follow_the_root_order_through_root_idxs(cbc):
    model, DG, _ = cbc
    group = DG.get_pruning_group(model.c2, tp.prune_conv_in_channels, [3, 1])
    assert list(group[0].idxs) == [1, 3]
    scores = imp.GroupMagnitudeImportance(normalizer=None)(group)
    close(scores, cbc_items(model).mean(0)[[1, 3]])


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 6, 1)
        self.head = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


def test_coupled_channel_at_another_index_maps_back_to_its_root():
    torch.manual_seed(1)
    model = Concat()
    DG = build(model, torch.randn(1, 3, 4, 4))
    group = DG.get_pruning_group(model.b, tp.prune_conv_out_channels, [1, 3])
    head = [idxs for dep, idxs in group if dep.target.name == "head"][0]
    assert list(head) == [5, 7] and head.root_idxs == [1, 3]
    scores = imp.GroupMagnitudeImportance(normalizer=None)(group)
    want = [(sq(model.b.weight[i]) + sq(model.head.weight[:, 4 + i])) / 2 for i in (1, 3)]
    close(scores, want)


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.a(x)
        return self.head(torch.cat([y, y], 1))


def test_channel_read_twice_sums_both_columns():
    torch.manual_seed(2)
    model = Twice()
    DG = build(model, torch.randn(1, 3, 4, 4))
    group = DG.get_pruning_group(model.a, tp.prune_conv_out_channels, [0, 1, 2, 3])
    scores = imp.GroupMagnitudeImportance(group_reduction="sum", normalizer=None)(group)
    w = model.head.weight
    close(scores, [sq(model.a.weight[i]) + sq(w[:, i]) + sq(w[:, 4 + i]) for i in range(4)])


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(self.mha(h, h, h)[0])


def mha_by_hand(model: Heads, i: int) -> torch.Tensor:
    e = 8
    w, o = model.mha.in_proj_weight, model.mha.out_proj.weight
    rows = [i, e + i, 2 * e + i]
    mha = sq(w[rows]) + sq(w[:, i]) - sq(w[rows, i]) + sq(o[i]) + sq(o[:, i]) - sq(o[i, i])
    return (sq(model.a.weight[i]) + mha + sq(model.b.weight[:, i])) / 3


def test_units_spanning_two_root_idxs_map_each_head_offset():
    torch.manual_seed(3)
    model = Heads()
    DG = build(model, torch.randn(1, 3, 4))
    full = list(DG.get_all_groups())[0]
    assert full.units == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert full[0].idxs.root_idxs == [0, 1, 2, 3, 0, 1, 2, 3]  # the unit's first root idx
    scores = imp.GroupMagnitudeImportance(normalizer=None)(full)
    close(scores, [mha_by_hand(model, i) for i in range(8)])
    sub = DG.get_pruning_group(model.a, tp.prune_linear_out_channels, [1])
    assert list(sub[0].idxs) == [1, 5]
    close(imp.GroupMagnitudeImportance(normalizer=None)(sub), [mha_by_hand(model, 1), mha_by_hand(model, 5)])


def test_whole_head_units_score_each_channel_like_offset_units():
    torch.manual_seed(3)
    model = Heads()
    x = torch.randn(1, 3, 4)
    offsets = list(build(model, x).get_all_groups())[0]
    blocks = list(tp.DependencyGraph().build_dependency(model, x, split_mode="blocks").get_all_groups())[0]
    assert blocks.units == [[0, 1, 2, 3], [4, 5, 6, 7]]
    mag = imp.GroupMagnitudeImportance(normalizer=None)
    close(mag(blocks), mag(offsets))


def test_root_map_shares_a_unit_total_when_counts_differ():
    class FakeGroup(list):
        units = [[0, 2], [1]]

    root = tp.graph.group.Idxs([0, 1, 2], root_idxs=[0, 1, 0], units=[0, 1, 0])
    group = FakeGroup([tp.GroupItem(None, root)])
    item = tp.graph.group.Idxs([7], root_idxs=[0], units=[0])  # one channel for the 2-index unit
    scores, hit = RootMap(group).scatter(item, torch.tensor([6.0]))
    close(scores, [3.0, 0.0, 3.0])
    assert hit.tolist() == [True, False, True]


class Mixed(nn.Module):
    """Grouped conv inputs, GroupNorm, ConvTranspose inputs, depthwise conv outputs."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, groups=8, padding=1)
        self.gc = nn.Conv2d(8, 4, 1, groups=2)
        self.gn = nn.GroupNorm(2, 4)
        self.ct = nn.ConvTranspose2d(4, 6, 2, stride=2)

    def forward(self, x):
        return self.ct(self.gn(self.gc(self.dw(self.c1(x)))))


def test_grouped_depthwise_groupnorm_and_transposed_slices():
    torch.manual_seed(4)
    model = Mixed()
    with torch.no_grad():
        model.gn.weight.normal_()
    DG = build(model, torch.randn(1, 3, 6, 6))
    g1 = DG.get_pruning_group(model.c1, tp.prune_conv_out_channels, list(range(8)))
    got = imp.GroupMagnitudeImportance(group_reduction="sum", normalizer=None)(g1)
    # gc: 2 groups of 4 inputs and 2 outputs; input i is read by its own group's filters only
    want = [sq(model.c1.weight[i]) + sq(model.dw.weight[i]) + sq(model.gc.weight[2 * (i // 4):2 * (i // 4) + 2, i % 4])
            for i in range(8)]
    close(got, want)
    g2 = DG.get_pruning_group(model.gc, tp.prune_conv_out_channels, list(range(4)))
    got = imp.GroupMagnitudeImportance(group_reduction="sum", normalizer=None)(g2)
    want = [sq(model.gc.weight[j]) + sq(model.gn.weight[j]) + sq(model.ct.weight[j]) for j in range(4)]
    close(got, want)


class TransposedOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.ct = nn.ConvTranspose2d(3, 4, 2, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.c = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.c(self.bn(self.ct(x)))


def test_conv_transpose_out_channels_are_weight_dim_1():
    torch.manual_seed(5)
    model = TransposedOut()
    DG = build(model, torch.randn(1, 3, 4, 4))
    group = DG.get_pruning_group(model.ct, tp.prune_conv_transpose_out_channels, [0, 1, 2, 3])
    got = imp.GroupMagnitudeImportance(group_reduction="sum", normalizer=None)(group)
    close(got, [sq(model.ct.weight[:, j]) + sq(model.bn.weight[j]) + sq(model.c.weight[:, j]) for j in range(4)])


class Tokens(nn.Module):
    """Linear embedding, a class token (unwrapped parameter), LayerNorm, LSTM, Embedding."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(5, 6)
        self.cls = nn.Parameter(torch.randn(1, 1, 6))
        self.ln = nn.LayerNorm(6)
        self.lstm = nn.LSTM(6, 4, batch_first=True)
        self.head = nn.Linear(4, 2)
        self.table = nn.Embedding(10, 4)

    def forward(self, x, ids):
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), self.emb(x)], 1)
        h = self.lstm(self.ln(h))[0]
        return self.head(h + self.table(ids))


def test_layernorm_parameter_lstm_and_embedding_slices():
    torch.manual_seed(6)
    model = Tokens()
    with torch.no_grad():
        model.ln.weight.normal_()
    DG = build(model, (torch.randn(2, 3, 5), torch.randint(0, 10, (2, 4))))
    mag = imp.GroupMagnitudeImportance(group_reduction="sum", normalizer=None)
    g = DG.get_pruning_group(model.emb, tp.prune_linear_out_channels, list(range(6)))
    close(mag(g), [sq(model.emb.weight[j]) + sq(model.cls[0, 0, j]) + sq(model.ln.weight[j])
                   + sq(model.lstm.weight_ih_l0[:, j]) for j in range(6)])
    g = DG.get_pruning_group(model.lstm, tp.prune_lstm_out_channels, list(range(4)))
    w_ih, w_hh, h = model.lstm.weight_ih_l0, model.lstm.weight_hh_l0, 4
    want = []
    for i in range(4):
        rows = [k * h + i for k in range(4)]
        lstm = sq(w_ih[rows]) + sq(w_hh[rows]) + sq(w_hh[:, i]) - sq(w_hh[rows, i])
        want.append(lstm + sq(model.head.weight[:, i]) + sq(model.table.weight[:, i]))
    close(mag(g), want)


def test_unknown_layers_are_skipped():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.s.view(1, -1, 1, 1)

    class ScalePruner(tp.LayerPruner):
        couples_in_out = True

        def prune_out_channels(self, layer, idxs):
            tp.pruning.slice_tensor(layer.s, 0, tp.pruning.keep_indices(layer.s.shape[0], idxs))
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer):
            return layer.s.shape[0]

        get_in_channels = get_out_channels

    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), Scale(), nn.Conv2d(4, 2, 1))
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 4, 4), customized_pruners={Scale: ScalePruner()})
    group = DG.get_pruning_group(model[0], tp.prune_conv_out_channels, [0, 1, 2, 3])
    assert any(isinstance(d.target.module, Scale) for d, _ in group)
    got = imp.GroupMagnitudeImportance(normalizer=None)(group)
    close(got, [(sq(model[0].weight[i]) + sq(model[2].weight[:, i])) / 2 for i in range(4)])


def test_target_types_select_layers(cbc):
    model, _, group = cbc
    got = imp.GroupMagnitudeImportance(normalizer=None, target_types=[nn.BatchNorm2d])(group)
    close(got, model.bn.weight.detach().pow(2))


# ----------------------------------------------------------------------------- gradients
def set_grads(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


def taylor_items(model: ConvBNConv, multivariable: bool = False) -> torch.Tensor:
    def one(w, g):
        prod = (w.detach() * g).double()
        return prod.sum().abs() if multivariable else prod.abs().sum()

    c1, bn, c2 = model.c1, model.bn, model.c2
    return torch.stack([
        torch.stack([one(c1.weight[i], c1.weight.grad[i]) for i in range(4)]),
        torch.stack([one(bn.weight[i], bn.weight.grad[i]) for i in range(4)]),
        torch.stack([one(c2.weight[:, i], c2.weight.grad[:, i]) for i in range(4)]),
    ])


def test_taylor_uses_grads_by_hand(cbc):
    model, _, group = cbc
    set_grads(model, 0)
    close(imp.GroupTaylorImportance(normalizer=None)(group), taylor_items(model).mean(0))
    close(imp.GroupTaylorImportance(normalizer=None, multivariable=True)(group),
          taylor_items(model, multivariable=True).mean(0))


def test_taylor_after_a_real_backward_is_finite_and_positive(cbc):
    model, _, group = cbc
    model(torch.randn(2, 2, 6, 6)).pow(2).sum().backward()
    scores = imp.TaylorImportance()(group)
    assert torch.isfinite(scores).all() and (scores > 0).all()


def test_taylor_without_grads_raises(cbc):
    _, _, group = cbc
    with pytest.raises(RuntimeError, match=r"GroupTaylorImportance needs gradients: run loss.backward\(\) before pruner.step\(\)"):
        imp.GroupTaylorImportance()(group)


def hessian_items(model: ConvBNConv, h: dict) -> torch.Tensor:
    c1, bn, c2 = model.c1, model.bn, model.c2

    def one(w, hh):
        return (0.5 * hh.double() * w.detach().double().pow(2)).sum()

    return torch.stack([
        torch.stack([one(c1.weight[i], h["c1"][i]) for i in range(4)]),
        torch.stack([one(bn.weight[i], h["bn"][i]) for i in range(4)]),
        torch.stack([one(c2.weight[:, i], h["c2"][:, i]) for i in range(4)]),
    ])


def test_hessian_accumulates_squared_grads_and_zero_grad_forgets(cbc):
    model, _, group = cbc
    hess = imp.GroupHessianImportance(normalizer=None)
    grads = []
    for seed in (1, 2):
        set_grads(model, seed)
        grads.append({n: m.weight.grad.clone() for n, m in (("c1", model.c1), ("bn", model.bn), ("c2", model.c2))})
        hess.accumulate_grad(model)
    assert hess.num_samples == 2
    model.zero_grad(set_to_none=True)
    h = {n: (grads[0][n] ** 2 + grads[1][n] ** 2) / 2 for n in grads[0]}
    close(hess(group), hessian_items(model, h).mean(0))
    hess.zero_grad()
    assert hess.num_samples == 0
    with pytest.raises(RuntimeError, match="needs gradients"):
        hess(group)
    set_grads(model, 3)  # nothing accumulated: falls back to grad ** 2
    h = {n: m.weight.grad ** 2 for n, m in (("c1", model.c1), ("bn", model.bn), ("c2", model.c2))}
    close(hess(group), hessian_items(model, h).mean(0))


def test_hessian_statistics_made_stale_by_a_prune_are_reported(cbc):
    model, DG, group = cbc
    hess = imp.HessianImportance()
    set_grads(model, 4)
    hess.accumulate_grad(model)
    model.zero_grad(set_to_none=True)
    group.prune(idxs=[0])
    fresh = DG.get_pruning_group(model.c1, tp.prune_conv_out_channels, [0, 1, 2])
    with pytest.raises(RuntimeError, match="zero_grad"):
        hess(fresh)


# ----------------------------------------------------------------------------- others
def test_bn_scale_is_abs_gamma(cbc):
    model, _, group = cbc
    close(imp.BNScaleImportance(normalizer=None)(group), model.bn.weight.detach().abs())
    close(imp.BNScaleImportance()(group), model.bn.weight.detach().abs() / model.bn.weight.detach().abs().mean())


def test_bn_scale_without_batchnorm_is_zero():
    model = Concat()
    DG = build(model, torch.randn(1, 3, 4, 4))
    group = DG.get_pruning_group(model.a, tp.prune_conv_out_channels, [0, 1])
    assert imp.BNScaleImportance()(group).tolist() == [0.0, 0.0]


def test_lamp_keeps_the_order_and_tops_at_one(cbc):
    model, _, group = cbc
    lamp = imp.LAMPImportance()(group)
    plain = cbc_items(model).mean(0)
    assert torch.equal(torch.argsort(lamp), torch.argsort(plain))
    assert lamp.max().item() == pytest.approx(1.0)
    assert ((lamp > 0) & (lamp <= 1)).all()


def test_fpgm_scores_a_duplicated_filter_lowest():
    model = nn.Sequential(nn.Linear(2, 4, bias=False), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [-3.0, -4.0]]))
    DG = build(model, torch.randn(1, 2))
    group = DG.get_pruning_group(model[0], tp.prune_linear_out_channels, [0, 1, 2, 3])
    close(imp.FPGMImportance(normalizer=None)(group), [10.0, 10.0, 20.0, 20.0], tol=1e-4)
    close(imp.FPGMImportance()(group), [10 / 15, 10 / 15, 20 / 15, 20 / 15], tol=1e-4)


def test_random_scores(cbc):
    _, _, group = cbc
    a = imp.RandomImportance(seed=3)(group)
    assert a.shape == (4,) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert ((a >= 0) & (a < 1)).all()
    assert torch.equal(a, imp.RandomImportance(seed=3)(group))


# ----------------------------------------------------------------------------- API
def test_get_importance_names_and_errors():
    cases = {
        "magnitude": imp.GroupMagnitudeImportance, "l2": imp.GroupMagnitudeImportance,
        "group_norm": imp.GroupMagnitudeImportance, "taylor": imp.GroupTaylorImportance,
        "hessian": imp.GroupHessianImportance, "bn_scale": imp.BNScaleImportance,
        "lamp": imp.LAMPImportance, "fpgm": imp.FPGMImportance, "random": imp.RandomImportance,
    }
    for name, cls in cases.items():
        assert type(imp.get_importance(name)) is cls
        assert imp.IMPORTANCES[name] is cls
    assert imp.get_importance("l1").p == 1 and imp.get_importance("L2").p == 2
    assert imp.get_importance("Group-Norm", p=1).p == 1
    assert imp.get_importance("magnitude", normalizer="lamp").normalizer == "lamp"
    obj = imp.TaylorImportance()
    assert imp.get_importance(obj) is obj
    with pytest.raises(ValueError, match="valid names: .*bn_scale.*taylor"):
        imp.get_importance("l3")
    with pytest.raises(ValueError, match="p=1"):
        imp.get_importance("l1", p=2)
    with pytest.raises(ValueError, match="instance"):
        imp.get_importance(obj, normalizer=None)


def test_aliases_accept_the_same_arguments(cbc):
    _, _, group = cbc
    want = imp.GroupMagnitudeImportance(p=2, group_reduction="max", normalizer="sum", bias=True)(group)
    for cls in (imp.GroupNormImportance, imp.MagnitudeImportance):
        assert issubclass(cls, imp.GroupMagnitudeImportance)
        close(cls(p=2, group_reduction="max", normalizer="sum", bias=True)(group), want)
    assert issubclass(imp.TaylorImportance, imp.GroupTaylorImportance)
    assert issubclass(imp.HessianImportance, imp.GroupHessianImportance)
    imp.TaylorImportance(group_reduction="sum", normalizer=None, multivariable=True)
    imp.HessianImportance(group_reduction="sum", normalizer=None)


@pytest.mark.parametrize("p", [0, -1, math.inf, "2", True, None])
def test_bad_p_raises(p):
    with pytest.raises(ValueError, match="p must be"):
        imp.GroupMagnitudeImportance(p=p)


def test_bad_reduction_and_normalizer_name_the_choices():
    with pytest.raises(ValueError, match="group_reduction must be one of 'mean', 'sum', 'max', 'prod', 'first'"):
        imp.GroupMagnitudeImportance(group_reduction="median")
    with pytest.raises(ValueError, match="normalizer must be one of .*'gaussian', 'lamp'"):
        imp.GroupTaylorImportance(normalizer="zscore")
    with pytest.raises(ValueError, match="p must be"):
        imp.FPGMImportance(p=-2)


def test_importances_do_not_modify_the_model_and_work_under_no_grad(cbc):
    model, _, group = cbc
    model.train()
    set_grads(model, 5)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    snap = snapshot(model)
    hess = imp.GroupHessianImportance()
    hess.accumulate_grad(model)
    criteria = [imp.get_importance(name) for name in imp.IMPORTANCES if name != "hessian"] + [hess]
    with torch.no_grad():
        for criterion in criteria:
            scores = criterion(group)
            assert scores.shape == (4,) and torch.isfinite(scores).all(), criterion
    assert_same_state(model, snap)
    assert model.training
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n


def test_nan_weights_raise_a_clear_error(cbc):
    model, _, group = cbc
    with torch.no_grad():
        model.c1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="NaN"):
        imp.GroupMagnitudeImportance()(group)


def test_docs_examples(cbc):
    """The three 'writing a new criterion' examples of docs/importance.md."""
    model, _, group = cbc

    class MeanAbsImportance(imp.GroupImportance):
        def item_scores(self, dep, idxs):
            pieces = imp.channel_slices(dep, idxs)
            if not pieces:
                return None
            values = torch.cat([p.gather() for p in pieces], dim=1)
            return values.abs().mean(dim=1)

    got = MeanAbsImportance(normalizer=None)(group)
    want = [(model.c1.weight[i].abs().mean() + model.bn.weight[i].abs() + model.c2.weight[:, i].abs().mean()) / 3
            for i in range(4)]
    close(got, torch.stack(want).detach())

    class MyMagnitude(imp.GroupMagnitudeImportance):
        def channel_slices(self, dep, idxs):
            layer = dep.target.module
            if isinstance(layer, CustomScale):
                rows = torch.as_tensor(list(idxs)).view(-1, 1)
                return [imp.ChannelSlice(layer.params, imp.along(1), rows)]
            return super().channel_slices(dep, idxs)

    net = nn.Sequential(nn.Conv2d(3, 4, 1), CustomScale(4), nn.Conv2d(4, 2, 1))
    DG = tp.DependencyGraph().build_dependency(net, torch.randn(1, 3, 4, 4),
                                               customized_pruners={CustomScale: CustomScalePruner()})
    g = DG.get_pruning_group(net[0], tp.prune_conv_out_channels, [0, 1, 2, 3])
    got = MyMagnitude(group_reduction="sum", normalizer=None)(g)
    close(got, [sq(net[0].weight[i]) + sq(net[1].params[:, i]) + sq(net[2].weight[:, i]) for i in range(4)])

    class ConsumerL2Importance(imp.Importance):
        def __call__(self, group):
            root_map = RootMap(group)
            scores = torch.zeros(root_map.size, dtype=torch.float64)
            for dep, idxs in group:
                layer = dep.target.module
                if dep.handler.__name__ != "prune_in_channels" or not isinstance(layer, nn.Linear):
                    continue
                local = layer.weight.detach()[:, list(idxs)].double().pow(2).sum(0)
                item_scores, _ = root_map.scatter(idxs, local)
                scores += item_scores
            return scores.float()

    heads = Heads()
    DG = build(heads, torch.randn(1, 3, 4))
    g = DG.get_pruning_group(heads.a, tp.prune_linear_out_channels, [2])
    close(ConsumerL2Importance()(g), [sq(heads.b.weight[:, 2]), sq(heads.b.weight[:, 6])])

    root = torch.as_tensor(list(g[0].idxs))
    order = root.argsort()
    item = [idxs for dep, idxs in g if dep.target.name == "b"][0]
    pos = order[torch.searchsorted(root[order], torch.as_tensor(item.root_idxs))]
    assert pos.tolist() == [0, 0]  # root_idxs names a unit's first root index; RootMap spreads it


def test_rootmap_reused_mappings_match_the_general_path(monkeypatch):
    """The cached one-to-one mapping of an item's units gives what the general path gives.

    A transformer's residual stream has units of several root indices (the same offset in
    every head), and most items list them in the same order, so the mapping is reused.
    """
    model = nn.Sequential(nn.Linear(8, 12), nn.TransformerEncoderLayer(12, 3, 24, batch_first=True),
                          nn.Linear(12, 4))
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(2, 5, 8))
    group = max(DG.get_all_groups(), key=len)
    assert max(len(u) for u in group.units) > 1  # units span heads
    generator = torch.Generator().manual_seed(0)
    items = [(idxs, torch.rand(len(idxs), generator=generator, dtype=torch.float64)) for _, idxs in group]
    fast_map = RootMap(group)
    fast = [fast_map.scatter(idxs, local) for idxs, local in items]
    assert any(plan is not None for _, plan in fast_map._plan_cache)  # the reuse path ran
    monkeypatch.setattr(RootMap, "_one_to_one_plan", lambda self, units: None)
    slow_map = RootMap(group)
    for (scores, hit), (idxs, local) in zip(fast, items):
        want_scores, want_hit = slow_map.scatter(idxs, local)
        torch.testing.assert_close(scores, want_scores)
        assert torch.equal(hit, want_hit)


@pytest.mark.parametrize("p", [1, 2])
def test_magnitude_scoring_pass_gives_the_same_scores(p):
    """Per-weight sums shared across groups inside a scoring pass change no score."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.ReLU(),
                          nn.Conv2d(6, 5, 1), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(1, 3, 9, 9)
    model(x)
    DG = tp.DependencyGraph().build_dependency(model, x)
    groups = list(DG.get_all_groups())
    importance = imp.GroupMagnitudeImportance(p=p)
    plain = [importance(g) for g in groups]
    with importance.scoring_pass():
        shared = [importance(g) for g in groups]
        assert importance.pass_cache  # the conv weights' sums were cached
    assert importance.pass_cache is None  # and dropped with the pass
    for a, b in zip(plain, shared):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
