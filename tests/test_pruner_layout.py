"""MetaPruner's public planning surface (plan, groups, graph_kwargs) and the pruner package's names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightning_prune.engine as tp
from lightning_prune.engine.pruner import budget


class Net(nn.Module):
    """conv1(3->8) -> bn1 -> relu -> conv2(8->8) -> bn2 -> relu -> pool -> fc(8->4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def make(**kwargs) -> tuple[nn.Module, tp.pruner.MetaPruner]:
    torch.manual_seed(0)
    model = Net().eval()
    return model, tp.pruner.MetaPruner(model, X, **kwargs)


def test_plan_is_what_step_prunes_and_prunes_nothing():
    model, pruner = make(pruning_ratio=0.5)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    plans = pruner.plan(pruner.DG, 0.5)
    assert {n: p.shape for n, p in model.named_parameters()} == shapes
    removed = {p.root_name: len(p.remove) for p in plans}
    assert removed == {"conv1": 4, "conv2": 4}
    pruner.step()
    assert model.conv1.out_channels == 4 and model.conv2.out_channels == 4


def test_plan_with_scores_ranks_by_them():
    _, pruner = make()
    scores = {g.root_name: torch.arange(len(g.units), dtype=torch.float32).flip(0) for g in pruner.groups(pruner.DG)}
    plans = {p.root_name: p for p in pruner.plan(pruner.DG, 0.25, scores)}
    assert sorted(plans["conv1"].remove) == [6, 7]  # the lowest given scores go


def test_groups_is_a_fresh_list_and_follows_ignored_layers():
    model, pruner = make()
    first = pruner.groups(pruner.DG)
    first.clear()
    assert [g.root_name for g in pruner.groups(pruner.DG)] == ["conv1", "conv2"]
    only_conv2 = pruner.groups(pruner.DG, ignored_layers=list(model.conv1.modules()))
    assert [g.root_name for g in only_conv2] == ["conv2"]
    assert [g.root_name for g in pruner.groups(pruner.DG)] == ["conv1", "conv2"]


def test_graph_kwargs_is_a_read_only_copy():
    forward = lambda m, x: m(x)  # noqa: E731
    _, pruner = make(forward_fn=forward)
    kwargs = pruner.graph_kwargs
    assert kwargs["forward_fn"] is forward
    assert set(kwargs) == {"forward_fn", "output_transform", "unwrapped_parameters", "customized_pruners"}
    kwargs["forward_fn"] = None
    assert pruner.graph_kwargs["forward_fn"] is forward
    with pytest.raises(AttributeError):
        pruner.graph_kwargs = {}


def test_budget_trials_leave_the_pruner_as_it_was():
    model, pruner = make(target_params=0.6, ignored_layers=["conv2"])
    ignored = pruner.ignored_layers
    ratio = pruner.final_channel_ratio()
    assert 0 < ratio < 1
    assert pruner.ignored_layers is ignored and all(any(m is x for x in model.modules()) for m in ignored)
    trial = budget.simulate(pruner, ratio, {}, "params")
    assert pruner.ignored_layers is ignored and trial > 0
    pruner.step()
    assert model.conv2.out_channels == 8  # still ignored in the real step


def test_public_names_stay_where_they_were():
    from lightning_prune.engine.pruner import variants
    from lightning_prune.engine.pruner.regularizers import SparseTrainingPruner

    for name in ("BNScalePruner", "GroupNormPruner", "GrowingRegPruner"):
        cls = getattr(tp.pruner, name)
        assert getattr(variants, name) is cls and issubclass(cls, SparseTrainingPruner)
    assert tp.pruner.SparseTrainingPruner is SparseTrainingPruner
    for name in ("GROUP_REDUCTIONS", "NORMALIZERS", "normalize_scores", "reduce_scores", "RootMap",
                 "GroupImportance", "Importance"):
        assert hasattr(tp.importance, name), name
