"""Failures the random-architecture generator found (tests/random_architectures.py), one per class.

Each prune either leaves a model that runs with its dense output shapes, or is refused
with the model exactly as it was.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_state, snapshot
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

import lightning_prune.engine as tp


def test_a_weight_normed_layer_keeps_its_channels_whole() -> None:
    model, x = nn.Sequential(weight_norm(nn.Conv2d(3, 8, 3)), nn.ReLU(), nn.Conv2d(8, 4, 3)), torch.randn(2, 3, 8, 8)
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    before = snapshot(model)
    with pytest.raises(tp.PruningError, match="cannot be pruned"):
        DG.get_pruning_group(model[0], tp.prune_conv_out_channels, [0, 1, 2, 3])
    assert_same_state(model, before)
    assert model(x).shape == (2, 4, 4, 4)


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4 * 3 * 3)
        self.unflatten = nn.Unflatten(1, (4, 3, 3))
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(self.unflatten(self.fc(z))).mean((2, 3))


def test_unflatten_with_literal_sizes_is_checked_and_refused() -> None:
    model, z = Decoder(), torch.randn(2, 8)
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=z)
    group = next(g for g in DG.get_all_groups() if g.root_name == "fc")
    before = snapshot(model)
    with pytest.raises(tp.PruningError, match="no longer runs forward"):
        group.prune(list(group.units[0]))
    assert_same_state(model, before)
    assert model(z).shape == (2, 4)


class LiteralLayerNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 8), nn.Linear(8, 4)
        self.width = (8,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.layer_norm(self.fc1(x), self.width))


def test_functional_layer_norm_with_a_literal_shape_is_checked_and_refused() -> None:
    model, x = LiteralLayerNorm(), torch.randn(2, 3)
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    before = snapshot(model)
    with pytest.raises(tp.PruningError, match="normalized_shape"):
        DG.get_pruning_group(model.fc1, tp.prune_linear_out_channels, [0, 1]).prune()
    assert_same_state(model, before)


def test_torchvision_layernorm2d_still_prunes_through_f_layer_norm() -> None:
    from torchvision.models.convnext import LayerNorm2d

    model = nn.Sequential(nn.Conv2d(3, 8, 3), LayerNorm2d(8), nn.Conv2d(8, 4, 1))
    x = torch.randn(2, 3, 8, 8)
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    DG.get_pruning_group(model[0], tp.prune_conv_out_channels, [0, 1]).prune()
    assert model[1].normalized_shape == (6,) and model(x).shape == (2, 4, 6, 6)


class Cross(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.mem = nn.Linear(4, 8), nn.Linear(4, 6)
        self.attn = nn.MultiheadAttention(8, 2, kdim=6, vdim=6, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, kv = self.q(x), self.mem(x)
        return self.head(q + self.attn(q, kv, kv)[0])


@pytest.mark.parametrize("importance", [tp.importance.MagnitudeImportance(p=2), tp.importance.TaylorImportance()])
def test_attention_with_other_key_and_value_widths_is_scored_without_a_crash(importance) -> None:
    torch.manual_seed(0)
    model, x = Cross(), torch.randn(2, 5, 4)
    if isinstance(importance, tp.importance.TaylorImportance):
        model(x).sum().backward()
    pruner = tp.pruner.MetaPruner(model, x, importance=importance, pruning_ratio=0.5)
    with pytest.warns(UserWarning, match="kept whole"):
        pruner.step()  # scoring the attention's group used to index past k_proj's 6 columns
    assert model.attn.embed_dim == 8 and "kdim=6" in pruner.skipped[0], "the layer pruner refuses this layout"
    assert model(x).shape == (2, 5, 3)


class AttentionBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.head(h + self.attn(h, h, h)[0])


def test_ignoring_a_sublayer_of_attention_keeps_the_attention_output() -> None:
    model, x = AttentionBlock(), torch.randn(2, 5, 4)
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    for g in DG.get_all_groups(ignored_layers=[model.attn.out_proj]):
        g.prune([i for unit in g.units[: len(g.units) // 2] for i in unit])
    assert model.attn.out_proj.out_features == 8
    assert model(x).shape == (2, 5, 3)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.train_head, self.eval_head = nn.Linear(8, 3), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.train_head(h) if self.training else self.eval_head(h)


@pytest.mark.parametrize("built_in_train_mode", [True, False])
def test_a_head_used_only_in_the_other_mode_is_pruned_with_its_input(built_in_train_mode: bool) -> None:
    model, x = TwoHeads().train(built_in_train_mode), torch.randn(2, 4)
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    assert DG.unreached_modules == []
    DG.get_pruning_group(model.stem, tp.prune_linear_out_channels, [0, 1, 2, 3]).prune()
    assert model.train_head.in_features == model.eval_head.in_features == 4
    for mode in (True, False):
        assert model.train(mode)(x).shape == (2, 3)


def test_groups_of_multi_channel_units_prune_inside_inference_mode() -> None:
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.Conv2d(8, 4, 3))
    x = torch.randn(2, 4, 10, 10)
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    with torch.inference_mode():
        group = next(iter(DG.get_all_groups()))
        group.prune([i for u in group.units[:1] for i in u])
    assert model[0].out_channels == 6 and not model[0].weight.is_inference()
    model(x).sum().backward()
