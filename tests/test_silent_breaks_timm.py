"""Silent breaks the per-family timm sweep found, written as small torch models.

Each prune of a single group by hand (``group.prune``) either leaves a model that runs
with its dense output shapes, or is refused with the model exactly as it was.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_state, snapshot
from torch import nn

import lightning_prune.engine as tp


def _prune_half_of(model: nn.Module, x: torch.Tensor, root: str) -> None:
    DG = tp.DependencyGraph().build_dependency(model, x)
    group = next(g for g in DG.get_all_groups() if g.root_name == root)
    n = len(group.units) // 2
    group.prune(sorted(i for u in group.units[:n] for i in u))


class HeadDimFromInputWidth(nn.Module):
    """timm's CaiT, ConViT, CrossViT, VOLO and BEiT: ``C // num_heads`` with ``C`` read from the input."""

    def __init__(self, dim: int = 32, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, -1))


class TinyViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 32)
        self.norm = nn.LayerNorm(32)
        self.attn = HeadDimFromInputWidth()
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = x + self.attn(self.norm(x))
        return self.head(x.mean(1))


def test_a_width_read_from_a_shape_makes_its_group_checked_and_refused() -> None:
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(1, 5, 16)
    before = snapshot(model)
    with pytest.raises(tp.PruningError, match=r"in attn \(HeadDimFromInputWidth\).*invalid for input"):
        _prune_half_of(model, x, "embed")
    assert_same_state(model, before)
    assert model(x).shape == (1, 10)


def test_a_pruner_step_keeps_the_groups_tied_to_a_read_width_whole() -> None:
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(1, 5, 16)
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(), pruning_ratio=0.5)
    with pytest.warns(UserWarning, match="kept whole"):
        pruner.step()
    assert model.embed.out_features == 32, "the residual width feeds C // num_heads: kept"
    assert model.attn.qkv.out_features == 96, "so does the head dim of qkv's output"
    assert pruner.skipped and all("HeadDimFromInputWidth" in s for s in pruner.skipped)
    out = model(x)
    assert out.shape == (1, 10)
    out.sum().backward()


class Conv2dSame(nn.Conv2d):
    """timm's ``Conv2dSame``: a Conv2d subclass whose forward pads and calls ``F.conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def test_a_depthwise_conv_subclass_with_its_own_forward_joins_its_producers_group() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), Conv2dSame(8, 8, 3, groups=8, bias=False), nn.Conv2d(8, 4, 1))
    x = torch.randn(1, 3, 8, 8)
    DG = tp.DependencyGraph().build_dependency(net, x)
    roots = [g.root_name for g in DG.get_all_groups()]
    assert roots == ["0"], "the depthwise conv is one group with the conv that feeds it"
    DG.get_pruning_group(net[0], tp.prune_conv_out_channels, [0, 3]).prune()
    assert (net[0].out_channels, net[2].out_channels, net[2].groups, net[3].in_channels) == (6, 6, 6, 6)
    assert net(x).shape == (1, 4, 8, 8)


def test_a_dead_depthwise_channel_through_f_conv2d_prunes_to_equal_outputs() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), Conv2dSame(8, 8, 3, groups=8, bias=False), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        net[2].weight[5] = 0  # channel 5 of the depthwise conv outputs zeros
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        dense = net(x)
    DG = tp.DependencyGraph().build_dependency(net, x)
    DG.get_pruning_group(net[0], tp.prune_conv_out_channels, [5]).prune()
    with torch.no_grad():
        torch.testing.assert_close(net(x), dense, rtol=0, atol=1e-6)


class GroupedFunctional(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def test_a_grouped_conv_through_f_conv2d_keeps_its_channels_whole() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 1), GroupedFunctional(8, 8, 3, padding=1, groups=2), nn.Conv2d(8, 4, 1))
    x = torch.randn(1, 3, 8, 8)
    DG = tp.DependencyGraph().build_dependency(net, x)
    assert [g.root_name for g in DG.get_all_groups()] == [], "a role the trace cannot follow freezes the layer"
    before = snapshot(net)
    with pytest.raises(tp.PruningError, match="cannot be pruned"):
        DG.get_pruning_group(net[1], tp.prune_conv_out_channels, [0])
    assert_same_state(net, before)


class SplitBlock(nn.Module):
    """timm's Res2Net: ``width`` is the split size of ``conv1``'s output, not of the branch convs."""

    def __init__(self) -> None:
        super().__init__()
        self.width = 8
        self.conv1 = nn.Conv2d(3, 16, 1)
        self.convs = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1) for _ in range(2)])
        self.conv3 = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(self.conv1(x), self.width, 1)
        return self.conv3(torch.cat([conv(p) for conv, p in zip(self.convs, parts)], 1))


def test_a_width_attribute_that_only_shares_the_old_value_is_left_alone() -> None:
    torch.manual_seed(0)
    block, x = SplitBlock().eval(), torch.randn(1, 3, 8, 8)
    _prune_half_of(block, x, "convs.0")
    assert block.width == 8, "the guessed rewrite broke the model, so it was undone"
    assert block.convs[0].out_channels == 4 and block.conv3.in_channels == 12
    assert block(x).shape == (1, 4, 8, 8)


class WidthReshape(nn.Module):
    """torchvision's ViT: a container reshapes with its own ``hidden_dim``, which must follow the prune."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden_dim = 8
        self.proj = nn.Conv2d(3, 8, 2, stride=2)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x).reshape(x.shape[0], self.hidden_dim, -1).mean(-1)
        return self.head(y)


def test_a_width_attribute_that_the_forward_needs_still_follows_the_prune() -> None:
    torch.manual_seed(0)
    model, x = WidthReshape().eval(), torch.randn(2, 3, 8, 8)
    _prune_half_of(model, x, "proj")
    assert model.hidden_dim == 4 and model.proj.out_channels == 4
    assert model(x).shape == (2, 4)


class BlurPool(nn.Module):
    """timm's BlurPool2d (TResNet): a depthwise F.conv2d of a buffer, with ``groups`` kept as a literal."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("filt", torch.ones(channels, 1, 3, 3) / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.filt, stride=2, groups=self.channels)


def test_a_depthwise_f_conv2d_with_literal_groups_is_checked_and_refused() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BlurPool(8), nn.Conv2d(8, 4, 1))
    x = torch.randn(1, 3, 8, 8)
    DG = tp.DependencyGraph().build_dependency(net, x)
    before = snapshot(net)
    with pytest.raises(tp.PruningError, match=r"in 1 \(BlurPool\)"):
        DG.get_pruning_group(net[0], tp.prune_conv_out_channels, [0, 1]).prune()
    assert_same_state(net, before)
    assert net(x).shape == (1, 4, 4, 4)
