"""MetaPruner: heads, budgets, schedules, history, bad input."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
import torchvision
from helpers import assert_same_state, snapshot
from torch import nn
from torchvision.models import resnet18

import lightning_prune.engine as tp


class Attention(nn.Module):
    """Hand-written attention: separate q/k/v Linears, a stored head count."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = (f(x).view(B, N, self.num_heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, -1))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class SmallViT(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2, patch: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def test_hand_written_vit_heads_are_pruned_and_attributes_updated():
    torch.manual_seed(0)
    model = SmallViT()
    x = torch.randn(2, 3, 16, 16)
    pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5, prune_num_heads=True, head_pruning_ratio=0.5)
    pruner.step()
    for blk in model.blocks:
        assert blk.attn.num_heads == 2  # 4 heads -> 2
        assert blk.attn.q.out_features == blk.attn.k.out_features == blk.attn.v.out_features == 2 * 4
        assert blk.fc1.out_features == 32  # MLP hidden 64 -> 32
    assert model.patch.out_channels == 16 and model.cls_token.shape[-1] == 16
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()


def small_torchvision_vit() -> nn.Module:
    """torchvision's own VisionTransformer (nn.MultiheadAttention, hidden_dim), at toy size."""
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                hidden_dim=64, mlp_dim=128, num_classes=10)


def test_torchvision_vit_heads_without_hand_fixes():
    torch.manual_seed(0)
    model = small_torchvision_vit()
    x = torch.randn(1, 3, 32, 32)
    pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5, prune_num_heads=True, head_pruning_ratio=0.5)
    pruner.step()
    for layer in model.encoder.layers:
        mha = layer.self_attention
        assert mha.num_heads == 2 and mha.head_dim == 8 and mha.embed_dim == 16
    assert model.hidden_dim == 16  # kept in sync with the pruned width, no hand fix
    assert model(x).shape == (1, 10)


@pytest.mark.slow
def test_torchvision_vit_b_16_heads_without_hand_fixes():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16()
    x = torch.randn(1, 3, 224, 224)
    pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5, prune_num_heads=True, head_pruning_ratio=0.5)
    pruner.step()
    for layer in model.encoder.layers:
        mha = layer.self_attention
        assert mha.num_heads == 6 and mha.head_dim == 32 and mha.embed_dim == 192
    assert model.hidden_dim == 192  # kept in sync with the pruned width, no hand fix
    assert model(x).shape == (1, 1000)


@pytest.mark.parametrize("name, size", [
    ("resnet18", 64), ("small_vit", 32),
    pytest.param("resnet50", 224, marks=pytest.mark.slow), pytest.param("vit_b_16", 224, marks=pytest.mark.slow),
])
def test_macs_budget_lands_within_two_percent(name, size):
    torch.manual_seed(0)
    model = small_torchvision_vit() if name == "small_vit" else torchvision.models.get_model(name)
    x = torch.randn(1, 3, size, size)
    base, _ = tp.utils.count_ops_and_params(model, x)
    tp.pruner.MetaPruner(model, x, target_macs=0.5).step()
    macs, _ = tp.utils.count_ops_and_params(model, x)
    assert macs / base == pytest.approx(0.5, abs=0.01)  # the issue asks for 2%; we hold 1%
    assert model(x).shape == (1, 10 if name == "small_vit" else 1000)


def test_params_budget_with_iterative_steps():
    model = resnet18()
    x = torch.randn(1, 3, 64, 64)
    _, base = tp.utils.count_ops_and_params(model, x)
    pruner = tp.pruner.MetaPruner(model, x, target_params=0.4, iterative_steps=2)
    pruner.step()
    _, half = tp.utils.count_ops_and_params(model, x)
    pruner.step()
    _, params = tp.utils.count_ops_and_params(model, x)
    assert half / base == pytest.approx(0.7, abs=0.02)  # linear schedule: 30% of params go per step
    assert params / base == pytest.approx(0.4, abs=0.02)


@pytest.mark.parametrize("scheduler", ["linear", "cosine", "exponential"])
def test_iterative_schedules_reach_the_target(scheduler):
    model = resnet18()
    x = torch.randn(1, 3, 32, 32)
    pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5, iterative_steps=3,
                                  iterative_pruning_ratio_scheduler=scheduler)
    widths = []
    for _ in range(3):
        pruner.step()
        widths.append(model.layer4[0].conv1.out_channels)
    expected = tp.pruner.get_scheduler(scheduler)(0.5, 3)
    assert widths == [round(512 * (1 - r)) for r in expected[1:]]
    with pytest.warns(UserWarning, match="steps are done"):
        pruner.step()
    assert model.layer4[0].conv1.out_channels == 256


def test_history_replays_on_a_fresh_model():
    torch.manual_seed(0)
    model = resnet18()
    x = torch.randn(1, 3, 32, 32)
    pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=0.4, iterative_steps=2)
    records = [pruner.step(), pruner.step()]
    history = pruner.pruning_history()
    assert history == records
    buf = io.BytesIO()
    torch.save(history, buf)
    buf.seek(0)
    history = torch.load(buf, weights_only=True)
    fresh = resnet18()
    replay = tp.pruner.MetaPruner(fresh, x, pruning_ratio=0.4, iterative_steps=2)
    replay.load_pruning_history(history)
    assert {n: p.shape for n, p in fresh.state_dict().items()} == {n: p.shape for n, p in model.state_dict().items()}
    fresh.load_state_dict(model.state_dict())
    model.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(x), model(x))


def test_no_state_is_shared_between_pruners():
    a, b = resnet18(), resnet18()
    x = torch.randn(1, 3, 32, 32)
    pa = tp.pruner.MetaPruner(a, x)
    pb = tp.pruner.MetaPruner(b, x)
    pa.step()
    assert pb.pruning_history() == [] and pb.current_step == 0
    assert pa.pruning_ratio_dict is not pb.pruning_ratio_dict and pa.skipped is not pb.skipped


def test_deprecated_ch_sparsity_warns_and_works():
    model = resnet18()
    with pytest.warns(DeprecationWarning, match="pruning_ratio"):
        pruner = tp.pruner.MetaPruner(model, torch.randn(1, 3, 32, 32), ch_sparsity=0.5)
    pruner.step()
    assert model.layer1[0].conv1.out_channels == 32


@pytest.mark.parametrize("kwargs, error, match", [
    ({"pruning_ratio": 1.0}, ValueError, r"pruning_ratio must be a number in \[0, 1\)"),
    ({"pruning_ratio": -0.1}, ValueError, "pruning_ratio"),
    ({"pruning_ratio": "half"}, ValueError, "pruning_ratio"),
    ({"importance": "magic"}, ValueError, "magnitude"),
    ({"pruning_ratio_dict": {nn.Conv2d(3, 3, 1): 0.3}}, ValueError, "not a submodule"),
    ({"pruning_ratio_dict": {"layer9": 0.3}}, ValueError, "no module named 'layer9'"),
    ({"round_to": 128}, ValueError, "round_to=128 is larger than conv1"),
    ({"ignored_layers": [nn.Linear]}, TypeError, "class Linear"),
    ({"target_macs": 0.5, "pruning_ratio": 0.3}, ValueError, "either pruning_ratio or a budget"),
    ({"iterative_steps": 0}, ValueError, "iterative_steps"),
])
def test_bad_input_is_refused_and_the_model_is_unchanged(kwargs, error, match):
    model = resnet18()
    model.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    before = snapshot(model)
    with pytest.raises(error, match=match):
        tp.pruner.MetaPruner(model, torch.randn(1, 3, 32, 32), **kwargs).step()
    assert_same_state(model, before)


def test_groups_that_would_break_are_kept_whole_with_a_warning():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Linear(8, 3)
            self.n = 8  # not a known width attribute: the engine cannot know to update it

        def forward(self, x):
            return self.b(self.a(x).view(-1, self.n))

    model = Tied()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tp.pruner.MetaPruner(model, torch.randn(2, 4), pruning_ratio=0.5).step()
    assert any("kept whole" in str(w.message) for w in caught)
    assert model.a.out_features == 8 and model(torch.randn(2, 4)).shape == (2, 3)
