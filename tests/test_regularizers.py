"""Sparse-training regularizers: every touched gradient against a closed form computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightning_prune.engine as tp
from lightning_prune.engine.importance import Importance
from lightning_prune.engine.pruner import (
    BNScalePruner,
    GroupNormPruner,
    GrowingRegPruner,
    MagnitudePruner,
    MetaPruner,
    RandomPruner,
)

X = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))


class ConvNet(nn.Module):
    """conv1(3->4) -> bn1 -> relu -> conv2(4->3, 1x1) -> bn2 -> relu -> pool -> fc(3->2).

    Two groups: G1 = conv1 rows, bn1, conv2 columns; G2 = conv2 rows, bn2, fc columns.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 1)
        self.bn2 = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class MLP(nn.Module):
    """fc1(5->4) -> BatchNorm1d -> relu -> fc2(4->2): one group of 4 units."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 4)
        self.bn = nn.BatchNorm1d(4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.bn(self.fc1(x))))


class ResNetTiny(nn.Module):
    """A residual add couples bn0 and bn1: one group holding two BatchNorms."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = F.relu(self.bn0(self.conv0(x)))
        z = F.relu(self.bn1(self.conv1(y)) + y)
        return self.fc(z.mean((2, 3)))


def _seeded(cls, seed=0):
    torch.manual_seed(seed)
    model = cls()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape))  # BN gammas of both signs, biases non-zero
    return model


def _zero_grads(model):
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_grads(model, expected, untouched_zero=True):
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        if name in expected:
            torch.testing.assert_close(p.grad, expected[name], rtol=1e-5, atol=1e-7, msg=name)
        elif untouched_zero:
            assert torch.count_nonzero(p.grad) == 0, f"{name} should not be touched"


# --------------------------------------------------------------------- closed forms (by hand)
def _convnet_sq(m, bias):
    """Per-unit sum of squared weights of G1 and G2 of ConvNet."""
    w1, w2, wf = m.conv1.weight.detach(), m.conv2.weight.detach(), m.fc.weight.detach()
    sq1 = w1.pow(2).sum((1, 2, 3)) + m.bn1.weight.detach() ** 2 + w2.pow(2).sum((0, 2, 3))
    sq2 = w2.pow(2).sum((1, 2, 3)) + m.bn2.weight.detach() ** 2 + wf.pow(2).sum(0)
    if bias:
        sq1 = sq1 + m.conv1.bias.detach() ** 2 + m.bn1.bias.detach() ** 2
        sq2 = sq2 + m.conv2.bias.detach() ** 2 + m.bn2.bias.detach() ** 2
    return sq1, sq2


def _gamma(imp, alpha):
    if alpha == 0:
        return torch.ones_like(imp)
    return alpha ** ((imp.max() - imp) / (imp.max() - imp.min() + 1e-12))


def _convnet_coef_grads(m, c1, c2, bias):
    """grad = coef_unit * w for every slice; conv2 weights belong to both groups."""
    d = {n: p.detach() for n, p in m.named_parameters()}
    out = {
        "conv1.weight": c1.view(-1, 1, 1, 1) * d["conv1.weight"],
        "bn1.weight": c1 * d["bn1.weight"],
        "conv2.weight": (c2.view(-1, 1, 1, 1) + c1.view(1, -1, 1, 1)) * d["conv2.weight"],
        "bn2.weight": c2 * d["bn2.weight"],
        "fc.weight": c2.view(1, -1) * d["fc.weight"],
    }
    if bias:
        out.update({"conv1.bias": c1 * d["conv1.bias"], "bn1.bias": c1 * d["bn1.bias"],
                    "conv2.bias": c2 * d["conv2.bias"], "bn2.bias": c2 * d["bn2.bias"]})
    return out


def _groupnorm_expected(m, reg, alpha, bias, eps=GroupNormPruner.eps):
    sq1, sq2 = _convnet_sq(m, bias)
    imp1, imp2 = _convnet_sq(m, False)  # default importance: L2 magnitude (weights only), up to a scale
    c1 = reg * _gamma(imp1, alpha) / (sq1.sqrt() + eps)
    c2 = reg * _gamma(imp2, alpha) / (sq2.sqrt() + eps)
    return _convnet_coef_grads(m, c1, c2, bias)


# --------------------------------------------------------------------- simple variants
def test_default_importances():
    m = _seeded(ConvNet)
    assert isinstance(MagnitudePruner(m, X).importance, tp.importance.GroupMagnitudeImportance)
    assert MagnitudePruner(m, X).importance.p == 2
    assert isinstance(RandomPruner(m, X).importance, tp.importance.RandomImportance)
    assert isinstance(BNScalePruner(m, X).importance, tp.importance.BNScaleImportance)
    assert isinstance(GroupNormPruner(m, X).importance, tp.importance.GroupMagnitudeImportance)
    assert isinstance(GrowingRegPruner(m, X).importance, tp.importance.GroupMagnitudeImportance)
    custom = tp.importance.GroupMagnitudeImportance(p=1)
    for cls in (RandomPruner, GrowingRegPruner):
        pruner = cls(m, X, importance=custom, pruning_ratio=0.25)
        assert isinstance(pruner, MetaPruner) and pruner.importance is custom
        assert pruner.pruning_ratio == 0.25
    for name in ("MagnitudePruner", "RandomPruner", "BNScalePruner", "GroupNormPruner", "GrowingRegPruner"):
        assert name in tp.pruner.__all__ and hasattr(tp.pruner, name)


def test_random_pruner_prunes():
    m = _seeded(ConvNet)
    RandomPruner(m, X, pruning_ratio=0.5, importance=tp.importance.RandomImportance(seed=1)).step()
    assert m.conv1.out_channels == 2 and m(X).shape == (2, 2)


# --------------------------------------------------------------------- BNScale
def test_bnscale_l1_closed_form():
    m = _seeded(ConvNet)
    pruner = BNScalePruner(m, X, reg=0.01)
    _zero_grads(m)
    pruner.regularize(m)
    _assert_grads(m, {"bn1.weight": 0.01 * torch.sign(m.bn1.weight.detach()),
                      "bn2.weight": 0.01 * torch.sign(m.bn2.weight.detach())})
    _zero_grads(m)
    pruner.regularize(m, reg=0.5)  # per-call override
    torch.testing.assert_close(m.bn1.weight.grad, 0.5 * torch.sign(m.bn1.weight.detach()))


def test_bnscale_l1_skips_ignored_and_untrained():
    m = _seeded(ConvNet)
    pruner = BNScalePruner(m, X, reg=0.01, ignored_layers=[m.bn2])
    m.bn1.weight.requires_grad_(False)
    _zero_grads(m)
    assert m.bn1.weight.grad is None
    pruner.regularize()
    assert m.bn1.weight.grad is None
    _assert_grads(m, {})  # bn2 is ignored, bn1 not trained: nothing changes


def test_bnscale_group_lasso_closed_form():
    m = _seeded(ResNetTiny)
    reg = 0.03
    pruner = BNScalePruner(m, X, reg=reg, group_lasso=True)
    _zero_grads(m)
    pruner.regularize(m)
    g0, g1 = m.bn0.weight.detach(), m.bn1.weight.detach()
    norm = (g0 ** 2 + g1 ** 2).sqrt()  # the residual couples channel i of bn0 and bn1
    _assert_grads(m, {"bn0.weight": reg * g0 / norm, "bn1.weight": reg * g1 / norm})


def test_bnscale_group_lasso_single_bn_is_sign():
    m = _seeded(MLP)
    pruner = BNScalePruner(m, torch.randn(4, 5), reg=0.2, group_lasso=True)
    _zero_grads(m)
    pruner.regularize()
    _assert_grads(m, {"bn.weight": 0.2 * torch.sign(m.bn.weight.detach())})


# --------------------------------------------------------------------- GroupNorm
@pytest.mark.parametrize("alpha,bias", [(4.0, False), (0.0, False), (2.0, True)])
def test_groupnorm_closed_form(alpha, bias):
    m = _seeded(ConvNet)
    pruner = GroupNormPruner(m, X, reg=0.1, alpha=alpha, bias=bias)
    _zero_grads(m)
    pruner.regularize(m)
    _assert_grads(m, _groupnorm_expected(m, 0.1, alpha, bias))


def test_groupnorm_per_call_overrides():
    m = _seeded(ConvNet)
    pruner = GroupNormPruner(m, X, reg=0.1, alpha=4)
    _zero_grads(m)
    pruner.regularize(m, alpha=0, bias=True)
    _assert_grads(m, _groupnorm_expected(m, 0.1, 0.0, True))


def test_groupnorm_mlp_with_bias():
    m = _seeded(MLP)
    pruner = GroupNormPruner(m, torch.randn(4, 5), reg=0.05, alpha=0, bias=True)
    _zero_grads(m)
    pruner.regularize()
    d = {n: p.detach() for n, p in m.named_parameters()}
    sq = (d["fc1.weight"].pow(2).sum(1) + d["fc1.bias"] ** 2 + d["bn.weight"] ** 2 + d["bn.bias"] ** 2
          + d["fc2.weight"].pow(2).sum(0))
    c = 0.05 / (sq.sqrt() + GroupNormPruner.eps)
    _assert_grads(m, {"fc1.weight": c.view(-1, 1) * d["fc1.weight"], "fc1.bias": c * d["fc1.bias"],
                      "bn.weight": c * d["bn.weight"], "bn.bias": c * d["bn.bias"],
                      "fc2.weight": c.view(1, -1) * d["fc2.weight"]})


class FixedImportance(Importance):
    """Scores known in advance, per group root."""

    def __init__(self, table):
        self.table = table

    def __call__(self, group):
        return torch.as_tensor(self.table[group[0].dep.target.name], dtype=torch.float32)


def test_groupnorm_gamma_follows_importance():
    m = _seeded(ConvNet)
    imp = FixedImportance({"conv1": [3.0, 1.0, 2.0, 5.0], "conv2": [1.0, 1.0, 1.0]})
    pruner = GroupNormPruner(m, X, importance=imp, reg=0.1, alpha=4)
    groups = {g[0].dep.target.name: g for g in pruner.DG.get_all_groups()}
    gamma = pruner.unit_gamma(groups["conv1"])
    expected = 4.0 ** (torch.tensor([5.0 - 3, 5 - 1, 5 - 2, 0]) / 4)
    torch.testing.assert_close(gamma, expected)
    assert gamma.argsort().tolist() == [3, 0, 2, 1]  # weaker unit -> larger gamma; strongest = 1
    assert torch.equal(pruner.unit_gamma(groups["conv2"]), torch.ones(3))  # equal importances
    assert torch.equal(pruner.unit_gamma(groups["conv1"], alpha=0), torch.ones(4))
    # and the gradients use exactly these gammas
    _zero_grads(m)
    pruner.regularize()
    sq1, sq2 = _convnet_sq(m, False)
    c1 = 0.1 * expected / (sq1.sqrt() + GroupNormPruner.eps)
    c2 = 0.1 / (sq2.sqrt() + GroupNormPruner.eps)
    _assert_grads(m, _convnet_coef_grads(m, c1, c2, False))


def test_groupnorm_after_step_and_identity():
    m = _seeded(ConvNet)
    ids = {n: id(p) for n, p in m.named_parameters()}
    pruner = GroupNormPruner(m, X, reg=0.1, alpha=4, pruning_ratio=0.5)
    _zero_grads(m)
    pruner.regularize()
    pruner.step()
    assert m.conv1.out_channels == 2 and m.conv2.out_channels == 2
    _zero_grads(m)
    pruner.regularize(m)  # groups re-read: shapes follow the pruned model
    for p in m.parameters():
        assert p.grad.shape == p.shape
    _assert_grads(m, _groupnorm_expected(m, 0.1, 4.0, False))
    assert {n: id(p) for n, p in m.named_parameters()} == ids
    assert m(X).shape == (2, 2)


def test_groupnorm_interactive_step():
    m = _seeded(ConvNet)
    pruner = GroupNormPruner(m, X, reg=0.1, alpha=2, pruning_ratio=0.5)
    pruner.regularize()  # no grads at all yet: nothing to do, no error
    for group in pruner.step(interactive=True):
        group.prune()
    _zero_grads(m)
    pruner.regularize()
    _assert_grads(m, _groupnorm_expected(m, 0.1, 2.0, False))


def test_groupnorm_skips_untrained_weights():
    m = _seeded(ConvNet)
    pruner = GroupNormPruner(m, X, reg=0.1, alpha=0)
    m.conv2.weight.requires_grad_(False)
    _zero_grads(m)
    pruner.regularize()
    assert m.conv2.weight.grad is None
    expected = _groupnorm_expected(m, 0.1, 0.0, False)  # frozen weights still count in the norms
    del expected["conv2.weight"]
    _assert_grads(m, expected)


# --------------------------------------------------------------------- GrowingReg
def _weak_convnet():
    """ConvNet whose G1 units 1 and 3 and G2 unit 0 are clearly the weakest."""
    m = _seeded(ConvNet)
    with torch.no_grad():
        for i in (1, 3):
            m.conv1.weight[i] *= 0.01
            m.bn1.weight[i] = 0.01
            m.conv2.weight[:, i] *= 0.01
        m.conv2.weight[0] *= 0.01
        m.bn2.weight[0] = 0.01
        m.fc.weight[:, 0] *= 0.01
    return m


def test_growingreg_lambdas_and_bn_grads():
    m = _weak_convnet()
    reg, delta = 1e-3, 2e-3
    pruner = GrowingRegPruner(m, X, reg=reg, delta_reg=delta, pruning_ratio=0.5)
    pruner.update_regularizer()
    pruner.update_regularizer()
    lam = pruner.group_lambdas()
    grown = reg + 2 * delta
    torch.testing.assert_close(lam["conv1"], torch.tensor([reg, grown, reg, grown]))
    torch.testing.assert_close(lam["conv2"], torch.tensor([grown, reg, reg]))  # 3 units: keep 2
    _zero_grads(m)
    pruner.regularize(m)
    expected = _convnet_coef_grads(m, lam["conv1"], lam["conv2"], False)
    _assert_grads(m, expected)
    # regression: Torch-Pruning 1.6.1 wrote BN terms into a copy, so BN grads stayed 0
    assert torch.count_nonzero(m.bn1.weight.grad) == 4
    assert torch.count_nonzero(m.bn2.weight.grad) == 3
    torch.testing.assert_close(m.bn1.weight.grad, lam["conv1"] * m.bn1.weight.detach())


def test_growingreg_lazy_init_and_after_step():
    m = _weak_convnet()
    reg, delta = 1e-3, 1e-3
    pruner = GrowingRegPruner(m, X, reg=reg, delta_reg=delta, pruning_ratio=0.5)
    _zero_grads(m)
    pruner.regularize()  # no update_regularizer yet: every lambda is reg
    _assert_grads(m, _convnet_coef_grads(m, torch.full((4,), reg), torch.full((3,), reg), False))
    pruner.update_regularizer()
    pruner.step()  # removes the grown units; survivors keep their lambda (reg)
    assert m.conv1.out_channels == 2 and m.conv2.out_channels == 2
    lam = pruner.group_lambdas()
    torch.testing.assert_close(lam["conv1"], torch.full((2,), reg))
    torch.testing.assert_close(lam["conv2"], torch.full((2,), reg))
    _zero_grads(m)
    pruner.regularize()
    _assert_grads(m, _convnet_coef_grads(m, lam["conv1"], lam["conv2"], False))
    pruner.update_regularizer()  # target reached: nothing left to grow
    torch.testing.assert_close(pruner.group_lambdas()["conv1"], torch.full((2,), reg))


def test_growingreg_attention_counts_crossing_weights_once():
    class Att(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin1 = nn.Linear(5, 8)
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
            self.lin2 = nn.Linear(8, 2)

        def forward(self, x):
            h = self.lin1(x)
            a, _ = self.mha(h, h, h)
            return self.lin2(a + h)

    m = _seeded(Att)
    reg = 0.1
    pruner = GrowingRegPruner(m, torch.randn(2, 3, 5), reg=reg, delta_reg=0.0)
    _zero_grads(m)
    pruner.regularize()
    # embedding channel c owns in_proj rows c, 8+c, 16+c, column c, and out_proj row/column c;
    # a weight owned by two channels gets 2*reg, a crossing entry (row and column of one channel) reg.
    rows = torch.arange(24).view(-1, 1) % 8
    cols = torch.arange(8).view(1, -1)
    k_in = torch.where(rows == cols, 1.0, 2.0)
    k_out = torch.where(torch.arange(8).view(-1, 1) == cols, 1.0, 2.0)
    d = {n: p.detach() for n, p in m.named_parameters()}
    _assert_grads(m, {"lin1.weight": reg * d["lin1.weight"], "lin2.weight": reg * d["lin2.weight"],
                      "mha.in_proj_weight": reg * k_in * d["mha.in_proj_weight"],
                      "mha.out_proj.weight": reg * k_out * d["mha.out_proj.weight"]})


class WideConvNet(nn.Module):
    """conv1(3->30) -> bn1 -> relu -> conv2(30->30) -> bn2 -> relu -> pool -> fc(30->4): two groups of 30 units."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 30, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(30)
        self.conv2 = nn.Conv2d(30, 30, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(30)
        self.fc = nn.Linear(30, 4)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _grown_units(pruner, reg):
    """Per group root, the units whose lambda grew above ``reg``."""
    return {name: sorted((lam > reg).nonzero().flatten().tolist()) for name, lam in pruner.group_lambdas().items()}


def _weakest_units(pruner, counts):
    out = {}
    for g in pruner.DG.get_all_groups():
        scores = tp.pruner.planning.unit_scores(g, pruner.estimate_importance(g))
        out[g.root_name] = sorted(torch.argsort(scores, stable=True)[:counts[g.root_name]].tolist())
    return out


def test_growingreg_under_a_budget_grows_what_the_budget_prunes():
    """target_macs=0.7 and no pruning_ratio: the penalty grows on the units the budget removes, not on half."""
    m = _seeded(WideConvNet)
    reg, delta = 1e-3, 2e-3
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    pruner = GrowingRegPruner(m, x, reg=reg, delta_reg=delta, target_macs=0.7)
    assert pruner.pruning_ratio is None  # no made-up ratio under a budget
    macs_before = tp.utils.count_ops_and_params(m, x)[0]
    pruner.update_regularizer()
    grown = _grown_units(pruner, reg)
    lam = pruner.group_lambdas()
    for name, units in grown.items():
        torch.testing.assert_close(lam[name][units], torch.full((len(units),), reg + delta))  # grew by delta_reg
    assert grown == _weakest_units(pruner, {name: len(units) for name, units in grown.items()})
    pruner.step()
    removed = {"conv1": 30 - m.conv1.out_channels, "conv2": 30 - m.conv2.out_channels}
    assert {name: len(units) for name, units in grown.items()} == removed  # exactly the units the budget prunes
    assert all(0 < n < 15 for n in removed.values()), removed  # half would be 15 per group
    macs_after = tp.utils.count_ops_and_params(m, x)[0]
    assert abs(macs_after / macs_before - 0.7) < 0.02


def test_growingreg_pruning_ratio_grows_that_fraction():
    m = _seeded(WideConvNet)
    reg, delta = 1e-3, 1e-3
    pruner = GrowingRegPruner(m, torch.randn(2, 3, 8, 8), reg=reg, delta_reg=delta, pruning_ratio=0.2)
    pruner.update_regularizer()
    grown = _grown_units(pruner, reg)
    assert {name: len(units) for name, units in grown.items()} == {"conv1": 6, "conv2": 6}  # 20% of 30
    assert grown == _weakest_units(pruner, {"conv1": 6, "conv2": 6})
    pruner.update_regularizer()
    torch.testing.assert_close(pruner.group_lambdas()["conv1"][grown["conv1"]], torch.full((6,), reg + 2 * delta))


def test_budget_pruners_keep_pruning_ratio_unset():
    m = _seeded(WideConvNet)
    x = torch.randn(2, 3, 8, 8)
    for cls in (MetaPruner, GroupNormPruner, BNScalePruner, GrowingRegPruner):
        assert cls(m, x, target_params=0.6).pruning_ratio is None
    assert MetaPruner(m, x).pruning_ratio == 0.5  # Torch-Pruning's default, without a budget only
    ratio = MetaPruner(m, x, target_macs=0.7).final_channel_ratio()
    assert 0.05 < ratio < 0.3, ratio  # about 1 - sqrt(0.7), not 0.5
    assert MetaPruner(m, x, pruning_ratio=0.3, iterative_steps=3).final_channel_ratio() == pytest.approx(0.3)


# --------------------------------------------------------------------- the seed's loop
def _sparse_train(model, pruner, train_loader, optimizer, epochs):
    # A function, so that the last `out`/`loss` (and their autograd graph) are gone before
    # the prune: a live graph keeps the old AccumulateGrad nodes, whose recorded shapes no
    # longer match the pruned parameters.
    for _epoch in range(epochs):
        model.train()
        pruner.update_regularizer()  # <== initialize regularizer
        for _i, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            out = model(data)
            loss = F.cross_entropy(out, target)
            loss.backward()  # after loss.backward()
            pruner.regularize(model)  # <== for sparse training
            optimizer.step()  # before optimizer.step()


@pytest.mark.parametrize("make", [
    lambda m: tp.pruner.GroupNormPruner(m, X, pruning_ratio=0.5, reg=1e-3),
    lambda m: tp.pruner.BNScalePruner(m, X, pruning_ratio=0.5, reg=1e-3),
    lambda m: tp.pruner.BNScalePruner(m, X, pruning_ratio=0.5, reg=1e-3, group_lasso=True),
    lambda m: tp.pruner.GrowingRegPruner(m, X, pruning_ratio=0.5),
])
def test_seed_sparse_training_loop(make):
    model = _seeded(ConvNet)
    pruner = make(model)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 5, 5), torch.randint(0, 2, (8,)))
    train_loader = torch.utils.data.DataLoader(data, batch_size=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    _sparse_train(model, pruner, train_loader, optimizer, epochs=1)
    pruner.step()
    model.eval()
    assert model.conv1.out_channels == 2
    assert model(X).shape == (2, 2)
    # sparse training can go on after the prune
    optimizer.zero_grad()
    F.cross_entropy(model(X), torch.tensor([0, 1])).backward()
    pruner.regularize(model)
    optimizer.step()


# --------------------------------------------------------------------- bad input
def test_bad_arguments():
    m = _seeded(ConvNet)
    with pytest.raises(ValueError, match="reg"):
        BNScalePruner(m, X, reg=-1)
    with pytest.raises(ValueError, match="reg"):
        GroupNormPruner(m, X, reg=-1e-4)
    with pytest.raises(ValueError, match="reg"):
        GrowingRegPruner(m, X, reg=-1e-5)
    with pytest.raises(ValueError, match="delta_reg"):
        GrowingRegPruner(m, X, delta_reg=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        GroupNormPruner(m, X, alpha=-1)
    with pytest.raises(ValueError, match="reg"):
        BNScalePruner(m, X).regularize(reg=-0.1)
    with pytest.raises(ValueError, match="model"):
        GroupNormPruner(m, X).regularize(ConvNet())
    with pytest.raises(ValueError, match="pruning_ratio"):
        GroupNormPruner(m, X, pruning_ratio=1.5)  # MetaPruner's arguments still checked
