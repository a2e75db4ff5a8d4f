"""Prunes that used to return normally and leave a model that cannot run (graph side).

Each case either prunes and leaves a model that runs forward and backward with its dense
output shapes, or is refused with the model exactly as it was.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import assert_same_state, snapshot
from torch import nn

import lightning_prune.engine as tp


class TiedLM(nn.Module):
    """Embedding and output projection share one weight, as in GPT-2 or Llama with tie_word_embeddings."""

    def __init__(self, vocab: int = 20, dim: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.mix(self.emb(ids))))


def _ids() -> torch.Tensor:
    return torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(0))


def test_tied_weight_couples_both_layers_and_is_cut_once() -> None:
    torch.manual_seed(0)
    model = TiedLM()
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=_ids())
    assert DG.tied_tensors == ["emb.weight"]
    group = DG.get_pruning_group(model.emb, tp.prune_embedding_out_channels, [1, 5, 9])
    pruned = {(item.dep.target.name, "in" if "in_channels" in item.dep.handler.__name__ else "out") for item in group}
    assert {("emb", "out"), ("out", "in"), ("mix", "in")} <= pruned
    group.prune()
    assert model.out.weight is model.emb.weight, "the tie must survive the prune"
    assert model.emb.weight.shape == (20, 13)
    assert model.emb.embedding_dim == 13 and model.out.in_features == 13
    out = model(_ids())
    assert out.shape == (2, 5, 20)
    out.sum().backward()


def test_tied_weight_dead_channel_prunes_to_equal_outputs() -> None:
    torch.manual_seed(1)
    model = TiedLM().eval()
    with torch.no_grad():
        model.emb.weight[:, 3] = 0  # channel 3 of the tied space reaches nothing downstream
    ids = _ids()
    with torch.no_grad():
        dense = model(ids)
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=ids)
    DG.get_pruning_group(model.emb, tp.prune_embedding_out_channels, [3]).prune()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), dense, rtol=0, atol=1e-6)


def test_tied_weight_under_the_pruner_and_replayed_history() -> None:
    torch.manual_seed(2)
    model = TiedLM()
    pruner = tp.pruner.MetaPruner(model, _ids(), importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=0.5)
    pruner.step()
    assert model.out.weight is model.emb.weight
    assert model.emb.embedding_dim == model.out.in_features == 8
    assert model(_ids()).shape == (2, 5, 20)
    fresh = TiedLM()
    tp.apply_history(fresh, pruner.DG.pruning_history)  # the tied tensor is recorded once
    assert fresh.emb.weight.shape == model.emb.weight.shape
    assert fresh(_ids()).shape == (2, 5, 20)


def test_a_group_pruned_twice_is_refused_and_the_model_kept() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 8, 8))
    group = DG.get_pruning_group(model[0], tp.prune_conv_out_channels, [0, 1])
    group.prune()
    before = snapshot(model)
    with pytest.raises(tp.PruningError, match="already pruned"):
        group.prune()
    with pytest.raises(tp.PruningError, match="already pruned"):
        group.soft_prune()
    assert_same_state(model, before)
    assert model[0].out_channels == 6
    # a fresh group of the same layer still works
    DG.get_pruning_group(model[0], tp.prune_conv_out_channels, [0]).prune()
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 4, 4, 4)


def _conv_bn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))


def _trains(model: nn.Module) -> None:
    for p in model.parameters():
        assert not p.is_inference(), "a parameter became an inference tensor"
    model(torch.randn(2, 3, 8, 8)).sum().backward()


def test_graph_built_under_inference_mode_prunes_atomically() -> None:
    model = _conv_bn()
    with torch.inference_mode():
        DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 8, 8))
    DG.get_pruning_group(model[0], tp.prune_conv_out_channels, [0, 1]).prune()
    assert (model[0].out_channels, model[1].num_features, model[3].in_channels) == (6, 6, 6)
    DG.get_pruning_group(model[0], tp.prune_conv_out_channels, [0]).prune()  # the graph keeps working
    assert model[0].out_channels == 5
    _trains(model)


def test_prune_inside_inference_mode_leaves_trainable_parameters() -> None:
    model = _conv_bn()
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 8, 8))
    with torch.inference_mode():
        DG.get_pruning_group(model[0], tp.prune_conv_out_channels, [0, 1]).prune()
    assert model[0].weight.shape == (6, 3, 3, 3)
    _trains(model)


def test_pruner_step_inside_inference_mode() -> None:
    model = _conv_bn()
    pruner = tp.pruner.MetaPruner(model, torch.randn(1, 3, 8, 8), importance=tp.importance.MagnitudeImportance(),
                                  pruning_ratio=0.5)
    with torch.inference_mode():
        pruner.step()
    assert model[0].out_channels == 4
    _trains(model)


def test_pruning_fn_of_another_layer_type_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(), nn.LazyLinear(4))
    x = torch.randn(1, 3, 8, 8)
    model(x)
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    with pytest.raises(tp.PruningError, match=r"pruning_fn LinearPruner.prune_out_channels does not prune 0 \(Conv2d\)"):
        DG.get_pruning_group(model[0], tp.prune_linear_out_channels, [0])
    with pytest.raises(tp.PruningError, match="does not prune 4"):
        DG.get_pruning_group(model[4], tp.prune_conv_in_channels, [0])
    # the conv family is one family: Torch-Pruning code passes prune_conv_* for a depthwise conv
    group = DG.get_pruning_group(model[2], tp.prune_conv_out_channels, [1])
    assert group.root_name == "2"
    ref = copy.deepcopy(model)
    group.prune()
    assert model(x).shape == ref(x).shape


class Scale(nn.Module):
    """A custom layer with a per-channel weight and a per-channel buffer."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.register_buffer("offset", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[None, :, None, None] + self.offset[None, :, None, None]


class ForgetfulScalePruner(tp.LayerPruner):
    """A user's pruner with a bug: it slices the weight and forgets the buffer."""

    couples_in_out = True

    def prune_out_channels(self, layer: nn.Module, idxs) -> nn.Module:
        keep = [i for i in range(layer.weight.shape[0]) if i not in set(idxs)]
        layer.weight = nn.Parameter(layer.weight.data[keep])
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[0]

    get_in_channels = get_out_channels


def _scaled_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Scale(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(8, 4, 1))


def test_a_broken_user_pruner_is_refused_by_name_and_the_rest_prunes() -> None:
    torch.manual_seed(0)
    model, x = _scaled_net(), torch.randn(2, 3, 6, 6)
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(), pruning_ratio=0.5,
                                  customized_pruners={Scale: ForgetfulScalePruner()})
    with pytest.warns(UserWarning, match="kept whole"):
        pruner.step()
    assert model[0].out_channels == 8 and model[1].weight.shape == (8,), "the broken group is kept whole"
    assert model[3].out_channels == 4, "the other group still prunes"
    assert len(pruner.skipped) == 1
    assert "in 1 (Scale)" in pruner.skipped[0] and "no longer runs forward" in pruner.skipped[0]
    model(x).sum().backward()


def test_a_broken_user_pruner_is_refused_for_a_hand_pruned_group() -> None:
    model, x = _scaled_net(), torch.randn(2, 3, 6, 6)
    DG = tp.DependencyGraph().build_dependency(model, x, customized_pruners={Scale: ForgetfulScalePruner()})
    before = snapshot(model)
    with pytest.raises(tp.PruningError, match=r"in 1 \(Scale\)"):
        DG.get_pruning_group(model[0], tp.prune_conv_out_channels, [0, 1]).prune()
    assert_same_state(model, before)
    assert model(x).shape == (2, 4, 6, 6)


class ExplodingOnSecondCall(tp.LayerPruner):
    """A pruner whose second call fails with an unexpected error (a bug, not a refusal)."""

    couples_in_out = True

    def __init__(self) -> None:
        self.calls = 0

    def prune_out_channels(self, layer: nn.Module, idxs) -> nn.Module:
        self.calls += 1
        if self.calls == 2:
            raise KeyError("bug in a layer pruner")
        keep = [i for i in range(layer.weight.shape[0]) if i not in set(idxs)]
        layer.weight = nn.Parameter(layer.weight.data[keep])
        layer.offset = layer.offset[keep]
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[0]

    get_in_channels = get_out_channels


def test_a_step_that_fails_midway_is_undone_entirely() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Scale(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          Scale(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    x = torch.randn(2, 3, 6, 6)
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(), pruning_ratio=0.5,
                                  customized_pruners={Scale: ExplodingOnSecondCall()})
    before = snapshot(model)
    with pytest.raises(KeyError, match="bug in a layer pruner"):
        pruner.step()
    assert_same_state(model, before)
    assert [model[0].out_channels, model[3].out_channels] == [8, 8]
    assert pruner.current_step == 0 and pruner.pruning_history() == []
    assert model(x).shape == (2, 4, 6, 6)
