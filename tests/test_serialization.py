"""Saving pruned models as tensors + primitives, and rebuilding them from fresh instances."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
import torchvision
from helpers import assert_same_state, snapshot
from torch import nn

import lightning_prune.engine as tp
from lightning_prune.bench.zoo import prune_by_ratio
from lightning_prune.engine.history.serialization import (
    FORMAT,
    apply_history,
    apply_record,
    load_state_dict,
    state_dict,
)

SIZES = {"resnet18": 64, "vit_b_16": 224}


def _build(name: str) -> nn.Module:
    return getattr(torchvision.models, name)().eval()


def _fresh(name: str) -> nn.Module:
    """A new, unpruned instance. ViT-B is built on ``meta`` and given uninitialized storage:
    its random init costs seconds, and every value is overwritten by the load anyway."""
    if name == "resnet18":
        return torchvision.models.resnet18().eval()
    with torch.device("meta"):
        model = _build(name)
    return model.to_empty(device="cpu").eval()


def _save_load(obj) -> object:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module", params=list(SIZES))
def pruned(request):
    """(name, pruned model, its graph, input) for each architecture, pruned by 50%."""
    return _make_pruned(request.param)


@pytest.fixture(scope="module")
def pruned_resnet():
    return _make_pruned("resnet18")


def _make_pruned(name: str):
    torch.manual_seed(0)
    model = _build(name)
    x = torch.randn(1, 3, SIZES[name], SIZES[name])
    DG = tp.DependencyGraph().build_dependency(model, x)
    _, done, _ = prune_by_ratio(DG, 0.5, [])
    assert done > 0
    return name, model, DG, x, _outputs(model, x)


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_state_dict_round_trip(pruned):
    name, model, _, x, expected = pruned
    loaded = _save_load(state_dict(model))
    assert loaded["format"] == FORMAT
    fresh = _fresh(name)
    params_before = {n: id(p) for n, p in fresh.named_parameters()}
    assert load_state_dict(fresh, state_dict=loaded) is fresh
    assert {n: id(p) for n, p in fresh.named_parameters()} == params_before  # same Parameter objects
    torch.testing.assert_close(_outputs(fresh, x), expected)
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())
    if name == "vit_b_16":
        assert fresh.hidden_dim == model.hidden_dim < 768
        assert fresh.encoder.layers[0].self_attention.embed_dim == model.hidden_dim


def test_seed_usage(tmp_path, pruned_resnet):
    """The Torch-Pruning README snippet, with the one changed import."""
    _, pruned_model, _, x, expected = pruned_resnet
    sd = tp.state_dict(pruned_model)
    torch.save(sd, tmp_path / "pruned.pth")
    new_model = torchvision.models.resnet18().eval()
    loaded_state_dict = torch.load(tmp_path / "pruned.pth", map_location="cpu")  # weights_only=True default
    tp.load_state_dict(new_model, state_dict=loaded_state_dict)
    torch.testing.assert_close(_outputs(new_model, x), expected)


def test_history_replay(pruned):
    name, model, DG, x, expected = pruned
    history = _save_load(DG.pruning_history)
    fresh = _fresh(name)
    ids = {n: id(p) for n, p in fresh.named_parameters()}
    apply_history(fresh, history)
    assert {n: id(p) for n, p in fresh.named_parameters()} == ids
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(_outputs(fresh, x), expected)
    if name == "vit_b_16":
        assert fresh.hidden_dim == model.hidden_dim


def test_apply_record_one_by_one_matches_history(pruned_resnet):
    name, model, DG, _, _ = pruned_resnet
    fresh = _fresh(name)
    for record in DG.pruning_history:
        apply_record(fresh, record)
    assert {n: t.shape for n, t in fresh.state_dict().items()} == {n: t.shape for n, t in model.state_dict().items()}
    assert fresh.layer1[0].conv1.out_channels == model.layer1[0].conv1.out_channels < 64


def _small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


def _small_record() -> dict:
    model = _small()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8))
    group = DG.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[1, 5])
    return group.prune()


@pytest.mark.parametrize("corrupt", ["unknown_tensor", "bad_index", "bad_dim", "missing_module", "late_record"])
def test_bad_record_leaves_model_unchanged(corrupt):
    record = copy.deepcopy(_small_record())
    history = [record]
    if corrupt == "unknown_tensor":
        record["tensors"]["9.weight"] = [(0, [0])]
        match = "unknown tensor '9.weight'"
    elif corrupt == "bad_index":
        record["tensors"]["3.weight"] = [(1, [0, 99])]
        match = "index 99 is out of range"
    elif corrupt == "bad_dim":
        record["tensors"]["1.bias"] = [(3, [0])]
        match = "dim 3 is out of range"
    elif corrupt == "missing_module":
        record["attributes"]["7.out_channels"] = 6
        match = "missing module '7'"
    else:  # the second record no longer fits after the first shrank conv 0 to 6 channels
        history = [record, {"tensors": {"0.weight": [(0, [0, 7])]}, "attributes": {}}]
        match = "record 1: index 7 is out of range"
    model = _small()
    snap = snapshot(model)
    with pytest.raises(ValueError, match=match) as err:
        apply_history(model, history)
    assert "does not match this model" in str(err.value)
    assert_same_state(model, snap)


def test_failing_slice_rolls_back(monkeypatch):
    """Even an error during the slicing itself (after validation) restores everything."""
    import lightning_prune.engine.history.serialization as ser

    calls = []

    def flaky(tensor, dim, keep):
        calls.append(dim)
        if len(calls) == 3:
            raise RuntimeError("boom")
        ser_slice(tensor, dim, keep)

    ser_slice = ser.slice_tensor
    monkeypatch.setattr(ser, "slice_tensor", flaky)
    model = _small()
    snap = snapshot(model)
    with pytest.raises(ValueError, match="boom"):
        apply_record(model, _small_record())
    assert_same_state(model, snap)


def test_not_a_record():
    with pytest.raises(ValueError, match="not a pruning record"):
        apply_record(_small(), {"conv.weight": [(0, [0])]})


def test_state_dict_is_primitive_only():
    model = _small()
    sd = state_dict(model)
    assert sd["attributes"]["0.out_channels"] == 8
    assert "training" not in {k.rpartition(".")[2] for k in sd["attributes"]}
    assert sd["shapes"]["1.running_mean"] == [8]
    _save_load(sd)  # weights_only=True


def test_wrong_format_and_names():
    model = _small()
    sd = state_dict(model)
    with pytest.raises(ValueError, match="unsupported pruned state dict format"):
        load_state_dict(_small(), {**sd, "format": "torch_pruning/1"})
    with pytest.raises(ValueError, match="no 'format' key"):
        load_state_dict(_small(), {k: v for k, v in sd.items() if k != "format"})
    bad = {**sd, "shapes": {**sd["shapes"], "9.weight": [1]}}
    target = _small()
    snap = snapshot(target)
    with pytest.raises(ValueError, match="unknown tensors \\['9.weight'\\]"):
        load_state_dict(target, bad)
    bad = {**sd, "attributes": {**sd["attributes"], "5.width": 3}}
    with pytest.raises(ValueError, match="missing module '5'"):
        load_state_dict(target, bad)
    assert_same_state(target, snap)


def test_failed_load_leaves_model_unchanged():
    """A state dict that lacks a key fails inside nn.Module.load_state_dict: roll back."""
    model = _small()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8))
    DG.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0, 2]).prune()
    sd = state_dict(model)
    del sd["state_dict"]["3.bias"]
    target = _small()
    snap = snapshot(target)
    with pytest.raises(ValueError, match="3.bias"):
        load_state_dict(target, sd)
    assert_same_state(target, snap)


def test_plain_state_dict_restores_shapes_and_warns():
    model = _small()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8))
    DG.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0, 2]).prune()
    fresh = _small()
    with pytest.warns(UserWarning, match="width attributes"):
        load_state_dict(fresh, _save_load(model.state_dict()))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(_outputs(fresh, x), _outputs(model, x))
    assert fresh[0].out_channels == 8  # attributes could not be restored


def test_non_persistent_buffer_is_restored():
    class WithMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 6)
            self.register_buffer("scale", torch.arange(6.0), persistent=False)

        def forward(self, x):
            return self.fc(x) * self.scale

    model = WithMask()
    with torch.no_grad():
        model.scale.data = torch.tensor([1.0, 3.0, 5.0])
        model.fc.weight.data = model.fc.weight.data[:3]
        model.fc.bias.data = model.fc.bias.data[:3]
        model.fc.out_features = 3
    fresh = WithMask()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_state_dict(fresh, _save_load(state_dict(model)))
    x = torch.randn(2, 4)
    torch.testing.assert_close(fresh(x), model(x))
    assert fresh.fc.out_features == 3
