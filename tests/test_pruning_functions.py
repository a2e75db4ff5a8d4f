"""Tests of the low-level ``prune_*_channels`` functions and the pruner registry.

Exactness is checked by constructing situations where the pruned layer must reproduce
the original exactly: removed output channels are sliced off the original output, and
removed input channels are fed zeros in the original.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_prune.engine import records
from lightning_prune.engine.layers.conv import describe_layer
from lightning_prune.engine.pruning import (
    DEFAULT_PRUNERS,
    HAS_RMSNORM,
    LayerPruner,
    ParameterPruner,
    PruningError,
    get_layer_pruner,
    prune_batchnorm_in_channels,
    prune_batchnorm_out_channels,
    prune_conv_in_channels,
    prune_conv_out_channels,
    prune_conv_transpose_in_channels,
    prune_conv_transpose_out_channels,
    prune_depthwise_conv_in_channels,
    prune_depthwise_conv_out_channels,
    prune_embedding_in_channels,
    prune_embedding_out_channels,
    prune_frozen_batchnorm_out_channels,
    prune_groupnorm_in_channels,
    prune_groupnorm_out_channels,
    prune_instancenorm_in_channels,
    prune_instancenorm_out_channels,
    prune_layernorm_in_channels,
    prune_layernorm_out_channels,
    prune_linear_in_channels,
    prune_linear_out_channels,
    prune_lstm_in_channels,
    prune_lstm_out_channels,
    prune_multihead_attention_in_channels,
    prune_multihead_attention_out_channels,
    prune_parameter_in_channels,
    prune_parameter_out_channels,
    prune_prelu_in_channels,
    prune_prelu_out_channels,
    prune_rnn_in_channels,
    prune_rnn_out_channels,
)
from lightning_prune.engine.pruning import __all__ as PRUNING_ALL

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def keep_of(size: int, remove: list[int]) -> list[int]:
    return [i for i in range(size) if i not in set(remove)]


def snapshot(obj: nn.Module | torch.Tensor) -> tuple[dict, dict]:
    """Tensors and plain attributes of a layer (or a tensor), to prove a refusal changed nothing."""
    if isinstance(obj, torch.Tensor):
        return {"tensor": obj.detach().clone()}, {"id": id(obj)}
    state = {k: v.detach().clone() for k, v in obj.state_dict().items()}
    attrs = {}
    for name, mod in obj.named_modules():
        for key, value in vars(mod).items():
            if not key.startswith("_") and isinstance(value, (int, float, bool, str, tuple, type(None))):
                attrs[f"{name}.{key}"] = value
        for key, p in mod.named_parameters(recurse=False):
            attrs[f"{name}.id.{key}"] = id(p)
    return state, attrs


def assert_same_snapshot(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    assert a[1] == b[1]
    assert a[0].keys() == b[0].keys()
    for key in a[0]:
        assert a[0][key].shape == b[0][key].shape, key
        assert torch.equal(a[0][key], b[0][key]), key


def assert_refused(fn, layer, idxs, match: str) -> PruningError:
    before = snapshot(layer)
    with pytest.raises(PruningError, match=match) as info:
        fn(layer, idxs)
    assert_same_snapshot(before, snapshot(layer))
    return info.value


def fill_grads(layer: nn.Module) -> dict[str, torch.Tensor]:
    for p in layer.parameters():
        p.grad = torch.randn_like(p)
    return {n: p.grad.clone() for n, p in layer.named_parameters()}


def record_of(layer: nn.Module, fn, idxs) -> dict:
    with records.recording(records.tensor_names(layer)) as rec:
        fn(layer, idxs)
    return rec.record


# ----------------------------------------------------------------------------- API shape
def test_public_functions_are_bound_methods_of_pruners() -> None:
    import lightning_prune.engine.pruning as pruning

    names = [n for n in PRUNING_ALL if n.startswith("prune_")]
    assert len(names) >= 30
    for name in names:
        fn = getattr(pruning, name)
        assert isinstance(fn.__self__, LayerPruner), name
        expected = "prune_out_channels" if name.endswith("_out_channels") else "prune_in_channels"
        assert fn.__name__ == expected, name
    assert HAS_RMSNORM and "prune_rmsnorm_out_channels" in PRUNING_ALL
    for name in PRUNING_ALL:
        assert hasattr(pruning, name), name


def test_channel_dim_attributes() -> None:
    assert prune_conv_out_channels.__self__.out_channel_dim == 1
    assert prune_batchnorm_out_channels.__self__.couples_in_out is True
    assert prune_linear_out_channels.__self__.out_channel_dim == -1
    assert prune_layernorm_out_channels.__self__.in_channel_dim == -1
    assert prune_embedding_out_channels.__self__.out_channel_dim == -1
    assert prune_multihead_attention_out_channels.__self__.couples_in_out is True
    assert prune_lstm_out_channels.__self__.out_channel_dim == -1
    assert prune_prelu_out_channels.__self__.out_channel_dim == 1
    assert prune_conv_out_channels.__self__.couples(nn.Conv2d(4, 4, 3, groups=4)) is True
    assert prune_conv_out_channels.__self__.couples(nn.Conv2d(4, 4, 3)) is False


# ----------------------------------------------------------------------------- conv
def test_conv_out_channels_exact_identity_grad_records() -> None:
    conv = nn.Conv2d(3, 6, 3, padding=1)
    x = torch.randn(2, 3, 5, 5)
    ref = conv(x).detach()
    grads = fill_grads(conv)
    weight, bias = conv.weight, conv.bias
    remove = [0, 4]
    keep = keep_of(6, remove)

    rec = record_of(conv, prune_conv_out_channels, remove)

    assert conv.weight is weight and conv.bias is bias
    assert conv.out_channels == 4 and conv.weight.shape == (4, 3, 3, 3) and conv.bias.shape == (4,)
    assert torch.equal(conv.weight.grad, grads["weight"][keep])
    assert torch.equal(conv.bias.grad, grads["bias"][keep])
    assert rec == {"weight": [(0, keep)], "bias": [(0, keep)]}
    out = conv(x)
    torch.testing.assert_close(out, ref[:, keep], atol=ATOL, rtol=0)
    out.sum().backward()


def test_conv_in_channels_exact_with_zeroed_inputs() -> None:
    conv = nn.Conv2d(5, 4, 3)
    remove = [1, 3]
    keep = keep_of(5, remove)
    x = torch.randn(2, 5, 6, 6)
    x[:, remove] = 0
    ref = conv(x).detach()
    rec = record_of(conv, prune_conv_in_channels, remove)
    assert rec == {"weight": [(1, keep)]}
    assert conv.in_channels == 3 and conv.weight.shape == (4, 3, 3, 3)
    torch.testing.assert_close(conv(x[:, keep]), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("cls", "spatial"),
    [(nn.Conv1d, (7,)), (nn.Conv3d, (4, 4, 4)), (nn.ConvTranspose1d, (5,)), (nn.ConvTranspose3d, (3, 3, 3))],
)
def test_conv_1d_3d_and_transpose_run_after_pruning(cls, spatial) -> None:
    conv = cls(4, 6, 3)
    out_fn = prune_conv_transpose_out_channels if conv.transposed else prune_conv_out_channels
    in_fn = prune_conv_transpose_in_channels if conv.transposed else prune_conv_in_channels
    x = torch.randn(1, 4, *spatial)
    x[:, 2] = 0
    ref = conv(x).detach()
    out_fn(conv, [1, 5])
    in_fn(conv, [2])
    assert (conv.out_channels, conv.in_channels) == (4, 3)
    out = conv(x[:, [0, 1, 3]])
    torch.testing.assert_close(out, ref[:, [0, 2, 3, 4]], atol=ATOL, rtol=0)
    out.sum().backward()
    assert conv.weight.grad.shape == conv.weight.shape


def test_conv_transpose_weight_layout() -> None:
    convt = nn.ConvTranspose2d(4, 6, 3, stride=2)
    x = torch.randn(2, 4, 5, 5)
    ref = convt(x).detach()
    rec = record_of(convt, prune_conv_transpose_out_channels, [0, 3])
    assert rec == {"weight": [(1, [1, 2, 4, 5])], "bias": [(0, [1, 2, 4, 5])]}
    assert convt.weight.shape == (4, 4, 3, 3)
    torch.testing.assert_close(convt(x), ref[:, [1, 2, 4, 5]], atol=ATOL, rtol=0)
    rec = record_of(convt, prune_conv_transpose_in_channels, [2])
    assert rec == {"weight": [(0, [0, 1, 3])]}
    assert convt.in_channels == 3 and convt.weight.shape == (3, 4, 3, 3)


def test_grouped_conv_uniform_offsets() -> None:
    conv = nn.Conv2d(6, 4, 3, groups=2)  # 3 inputs, 2 outputs per group
    x = torch.randn(1, 6, 5, 5)
    x[:, [1, 4]] = 0
    ref = conv(x).detach()
    rec = record_of(conv, prune_conv_in_channels, [1, 4])  # offset 1 of both groups
    assert rec == {"weight": [(1, [0, 2])]}
    assert conv.in_channels == 4 and conv.groups == 2 and conv.weight.shape == (4, 2, 3, 3)
    torch.testing.assert_close(conv(x[:, [0, 2, 3, 5]]), ref, atol=ATOL, rtol=0)

    ref = conv(x[:, [0, 2, 3, 5]]).detach()
    prune_conv_out_channels(conv, [0, 2])  # offset 0 of both groups
    assert conv.out_channels == 2 and conv.weight.shape == (2, 2, 3, 3)
    torch.testing.assert_close(conv(x[:, [0, 2, 3, 5]]), ref[:, [1, 3]], atol=ATOL, rtol=0)


def test_grouped_conv_non_uniform_refused() -> None:
    conv = nn.Conv2d(6, 4, 3, groups=2)
    err = assert_refused(prune_conv_in_channels, conv, [1, 3], "same positions in each of the 2 groups")
    assert "prune_conv_in_channels on Conv2d(6, 4" in str(err)
    assert_refused(prune_conv_out_channels, conv, [0], "same positions in each of the 2 groups")
    assert_refused(prune_conv_out_channels, conv, [0, 3], "same positions")


def test_grouped_conv_transpose_uniform_offsets() -> None:
    convt = nn.ConvTranspose2d(4, 6, 3, groups=2)  # weight [4, 3, 3, 3]
    x = torch.randn(1, 4, 4, 4)
    x[:, [0, 2]] = 0
    ref = convt(x).detach()
    assert_refused(prune_conv_transpose_out_channels, convt, [0], "same positions")
    assert_refused(prune_conv_transpose_in_channels, convt, [0, 1], "same positions")
    prune_conv_transpose_out_channels(convt, [2, 5])
    prune_conv_transpose_in_channels(convt, [0, 2])
    assert convt.weight.shape == (2, 2, 3, 3) and (convt.in_channels, convt.out_channels) == (2, 4)
    torch.testing.assert_close(convt(x[:, [1, 3]]), ref[:, [0, 1, 3, 4]], atol=ATOL, rtol=0)
    # now groups == in_channels: a depthwise transposed conv with 2 outputs per input
    assert_refused(prune_conv_transpose_out_channels, convt, [0], "whole groups")


@pytest.mark.parametrize("fn", [prune_depthwise_conv_out_channels, prune_conv_out_channels])
def test_depthwise_conv_multiplier_one(fn) -> None:
    conv = nn.Conv2d(5, 5, 3, groups=5, padding=1)
    x = torch.randn(2, 5, 4, 4)
    ref = conv(x).detach()
    remove = [0, 3]
    keep = keep_of(5, remove)
    rec = record_of(conv, fn, remove)
    assert rec == {"weight": [(0, keep)], "bias": [(0, keep)]}
    assert conv.in_channels == conv.out_channels == conv.groups == 3
    torch.testing.assert_close(conv(x[:, keep]), ref[:, keep], atol=ATOL, rtol=0)
    # in-channels of a multiplier-1 depthwise conv are its out-channels
    prune_depthwise_conv_in_channels(conv, [1])
    prune_conv_in_channels(conv, [0])
    assert conv.in_channels == conv.out_channels == conv.groups == 1
    assert conv(x[:, [4]]).shape == (2, 1, 4, 4)


def test_depthwise_conv_multiplier_two() -> None:
    conv = nn.Conv2d(4, 8, 3, groups=4)  # outputs 2k, 2k+1 come from input k
    x = torch.randn(1, 4, 5, 5)
    ref = conv(x).detach()
    assert_refused(prune_depthwise_conv_out_channels, conv, [2], "whole groups")
    assert_refused(prune_conv_out_channels, conv, [2, 5], "whole groups")
    prune_depthwise_conv_out_channels(conv, [2, 3])  # all outputs of input 1
    assert (conv.in_channels, conv.out_channels, conv.groups) == (3, 6, 3)
    torch.testing.assert_close(conv(x[:, [0, 2, 3]]), ref[:, [0, 1, 4, 5, 6, 7]], atol=ATOL, rtol=0)
    prune_conv_in_channels(conv, [0])  # input 0 (now) and its 2 outputs
    assert (conv.in_channels, conv.out_channels, conv.groups) == (2, 4, 2)
    torch.testing.assert_close(conv(x[:, [2, 3]]), ref[:, [4, 5, 6, 7]], atol=ATOL, rtol=0)


def test_depthwise_conv_transpose() -> None:
    convt = nn.ConvTranspose2d(4, 4, 3, groups=4)
    x = torch.randn(1, 4, 3, 3)
    ref = convt(x).detach()
    prune_conv_transpose_out_channels(convt, [1])
    assert (convt.in_channels, convt.out_channels, convt.groups) == (3, 3, 3)
    torch.testing.assert_close(convt(x[:, [0, 2, 3]]), ref[:, [0, 2, 3]], atol=ATOL, rtol=0)


def test_depthwise_pruner_rejects_plain_conv() -> None:
    conv = nn.Conv2d(4, 4, 3)
    assert_refused(prune_depthwise_conv_out_channels, conv, [0], "not a depthwise conv")
    assert_refused(prune_depthwise_conv_in_channels, conv, [0], "prune_conv_out_channels")


# ----------------------------------------------------------------------------- bad idxs
@pytest.mark.parametrize(
    ("idxs", "match"),
    [
        ([6], "out of range"),
        ([-1], "out of range"),
        (list(range(6)), "removing all 6"),
        ([0.0, 1.0], "must be integers"),
        (torch.tensor([1.0]), "must be integers"),
    ],
)
def test_bad_idxs_refused_and_layer_named(idxs, match) -> None:
    conv = nn.Conv2d(3, 6, 3)
    err = assert_refused(prune_conv_out_channels, conv, idxs, match)
    assert "prune_conv_out_channels on Conv2d(3, 6" in str(err)
    lin = nn.Linear(4, 6)
    err = assert_refused(prune_linear_out_channels, lin, idxs, match)
    assert "prune_linear_out_channels on Linear(in_features=4" in str(err)


def test_idxs_as_tensor_and_duplicates() -> None:
    lin = nn.Linear(3, 6)
    prune_linear_out_channels(lin, torch.tensor([5, 1, 1]))
    assert lin.out_features == 4 and lin.weight.shape == (4, 3)
    prune_linear_out_channels(lin, [])
    assert lin.out_features == 4


# ----------------------------------------------------------------------------- linear
def test_linear_out_and_in_exact() -> None:
    lin = nn.Linear(5, 6)
    grads = fill_grads(lin)
    weight = lin.weight
    x = torch.randn(3, 5)
    x[:, [0, 4]] = 0
    ref = lin(x).detach()
    rec = record_of(lin, prune_linear_out_channels, [2])
    assert rec == {"weight": [(0, [0, 1, 3, 4, 5])], "bias": [(0, [0, 1, 3, 4, 5])]}
    rec = record_of(lin, prune_linear_in_channels, [0, 4])
    assert rec == {"weight": [(1, [1, 2, 3])]}
    assert lin.weight is weight and (lin.in_features, lin.out_features) == (3, 5)
    assert torch.equal(lin.weight.grad, grads["weight"][[0, 1, 3, 4, 5]][:, [1, 2, 3]])
    out = lin(x[:, 1:4])
    torch.testing.assert_close(out, ref[:, [0, 1, 3, 4, 5]], atol=ATOL, rtol=0)
    out.sum().backward()


def test_linear_without_bias_and_subclass() -> None:
    lin = nn.modules.linear.NonDynamicallyQuantizableLinear(4, 4, bias=False)
    prune_linear_out_channels(lin, [3])
    prune_linear_in_channels(lin, [0])
    assert lin.weight.shape == (3, 3) and lin.bias is None
    assert lin(torch.randn(2, 3)).shape == (2, 3)


# ----------------------------------------------------------------------------- norms
def test_batchnorm_running_stats_and_eval_exact() -> None:
    bn = nn.BatchNorm2d(5)
    bn(torch.randn(8, 5, 3, 3) * 3 + 1)  # populate running stats
    bn.eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(2, 5, 3, 3)
    ref = bn(x).detach()
    remove = [1, 2]
    keep = keep_of(5, remove)
    rec = record_of(bn, prune_batchnorm_out_channels, remove)
    assert set(rec) == {"weight", "bias", "running_mean", "running_var"}
    assert all(v == [(0, keep)] for v in rec.values())
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(bn, name), before[name][keep])
    assert torch.equal(bn.num_batches_tracked, before["num_batches_tracked"])
    assert bn.num_features == 3
    torch.testing.assert_close(bn(x[:, keep]), ref[:, keep], atol=ATOL, rtol=0)
    prune_batchnorm_in_channels(bn, [0])
    assert bn.num_features == 2 and bn.running_var.shape == (2,)


@pytest.mark.parametrize(("affine", "track"), [(False, True), (True, False), (False, False)])
def test_batchnorm_optional_tensors(affine, track) -> None:
    bn = nn.BatchNorm1d(4, affine=affine, track_running_stats=track)
    prune_batchnorm_out_channels(bn, [0])
    assert bn.num_features == 3
    out = bn(torch.randn(5, 3))
    assert out.shape == (5, 3)
    if affine:
        assert bn.weight.shape == (3,)
    if track:
        assert bn.running_mean.shape == (3,)


def test_sync_batchnorm_pruned() -> None:
    bn = nn.SyncBatchNorm(6)
    assert get_layer_pruner(bn) is prune_batchnorm_out_channels.__self__
    prune_batchnorm_out_channels(bn, [0, 5])
    assert bn.num_features == 4
    assert all(t.shape == (4,) for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var))


@pytest.mark.parametrize("affine", [False, True])
def test_instancenorm(affine) -> None:
    norm = nn.InstanceNorm2d(4, affine=affine)
    x = torch.randn(2, 4, 5, 5)
    ref = norm(x).detach()
    prune_instancenorm_out_channels(norm, [1])
    prune_instancenorm_in_channels(norm, [0])
    assert norm.num_features == 2
    torch.testing.assert_close(norm(x[:, [2, 3]]), ref[:, [2, 3]], atol=ATOL, rtol=0)


def test_frozen_batchnorm() -> None:
    from torchvision.ops import misc
    bn = misc.FrozenBatchNorm2d(4)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean"):
            getattr(bn, name).normal_()
        bn.running_var.uniform_(0.5, 2)
    assert get_layer_pruner(bn) is prune_frozen_batchnorm_out_channels.__self__
    x = torch.randn(1, 4, 3, 3)
    ref = bn(x)
    rec = record_of(bn, prune_frozen_batchnorm_out_channels, [2])
    assert len(rec) == 4 and all(v == [(0, [0, 1, 3])] for v in rec.values())
    torch.testing.assert_close(bn(x[:, [0, 1, 3]]), ref[:, [0, 1, 3]], atol=ATOL, rtol=0)


def test_layernorm() -> None:
    ln = nn.LayerNorm(6)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    w0, b0 = ln.weight.detach().clone(), ln.bias.detach().clone()
    weight = ln.weight
    rec = record_of(ln, prune_layernorm_out_channels, [0, 5])
    assert rec == {"weight": [(0, [1, 2, 3, 4])], "bias": [(0, [1, 2, 3, 4])]}
    assert ln.normalized_shape == (4,) and ln.weight is weight
    x = torch.randn(2, 3, 4)
    ref = F.layer_norm(x, (4,), w0[1:5], b0[1:5], ln.eps)
    torch.testing.assert_close(ln(x), ref, atol=ATOL, rtol=0)
    prune_layernorm_in_channels(ln, [1])
    assert ln.normalized_shape == (3,) and ln(torch.randn(3)).shape == (3,)


def test_layernorm_multi_dim_prunes_its_first_dim_and_no_affine() -> None:
    ln = nn.LayerNorm((3, 4))
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    w0, b0 = ln.weight.detach().clone(), ln.bias.detach().clone()
    prune_layernorm_out_channels(ln, [0])
    assert ln.normalized_shape == (2, 4) and ln.weight.shape == (2, 4) and ln.bias.shape == (2, 4)
    x = torch.randn(5, 2, 4)
    ref = F.layer_norm(x, (2, 4), w0[1:], b0[1:], ln.eps)
    torch.testing.assert_close(ln(x), ref, atol=ATOL, rtol=0)
    ln = nn.LayerNorm(4, elementwise_affine=False)
    prune_layernorm_out_channels(ln, [0])
    assert ln.normalized_shape == (3,) and ln(torch.randn(2, 3)).shape == (2, 3)


def test_rmsnorm() -> None:
    assert HAS_RMSNORM  # nn.RMSNorm is in every torch >= 2.4, the oldest pyproject.toml allows
    from lightning_prune.engine.pruning import prune_rmsnorm_in_channels, prune_rmsnorm_out_channels

    norm = nn.RMSNorm(5)
    with torch.no_grad():
        norm.weight.normal_()
    w0 = norm.weight.detach().clone()
    assert get_layer_pruner(norm) is prune_rmsnorm_out_channels.__self__
    prune_rmsnorm_out_channels(norm, [2])
    prune_rmsnorm_in_channels(norm, [0])
    assert norm.normalized_shape == (3,)
    x = torch.randn(2, 3)
    ref = F.rms_norm(x, (3,), w0[[1, 3, 4]], norm.eps)
    torch.testing.assert_close(norm(x), ref, atol=ATOL, rtol=0)


def test_groupnorm_whole_groups_exact() -> None:
    gn = nn.GroupNorm(3, 6)
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    x = torch.randn(2, 6, 4, 4)
    ref = gn(x).detach()
    prune_groupnorm_out_channels(gn, [2, 3])  # group 1
    assert (gn.num_groups, gn.num_channels) == (2, 4)
    keep = [0, 1, 4, 5]
    torch.testing.assert_close(gn(x[:, keep]), ref[:, keep], atol=ATOL, rtol=0)


def test_groupnorm_uniform_offsets_keep_groups() -> None:
    gn = nn.GroupNorm(2, 6)
    rec = record_of(gn, prune_groupnorm_in_channels, [0, 3])
    assert rec == {"weight": [(0, [1, 2, 4, 5])], "bias": [(0, [1, 2, 4, 5])]}
    assert (gn.num_groups, gn.num_channels) == (2, 4)
    assert gn(torch.randn(1, 4, 2, 2)).shape == (1, 4, 2, 2)
    assert_refused(prune_groupnorm_out_channels, gn, [0], "whole groups")
    gn1 = nn.GroupNorm(1, 4, affine=False)
    prune_groupnorm_out_channels(gn1, [1])
    assert (gn1.num_groups, gn1.num_channels) == (1, 3)


# ----------------------------------------------------------------------------- prelu / embedding
def test_prelu() -> None:
    act = nn.PReLU(4, init=0.1)
    with torch.no_grad():
        act.weight.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    x = torch.randn(2, 4, 3)
    ref = act(x)
    prune_prelu_out_channels(act, [1])
    assert act.num_parameters == 3 and act.weight.shape == (3,)
    torch.testing.assert_close(act(x[:, [0, 2, 3]]), ref[:, [0, 2, 3]], atol=ATOL, rtol=0)
    prune_prelu_in_channels(act, [0])
    assert act.num_parameters == 2


def test_prelu_shared_slope_is_noop() -> None:
    act = nn.PReLU()
    before = snapshot(act)
    assert prune_prelu_out_channels(act, [3, 7]) is act
    assert prune_prelu_out_channels.__self__.get_out_channels(act) is None
    assert_same_snapshot(before, snapshot(act))


def test_embedding() -> None:
    emb = nn.Embedding(10, 6, padding_idx=0)
    tokens = torch.tensor([[0, 3, 9]])
    ref = emb(tokens).detach()
    rec = record_of(emb, prune_embedding_out_channels, [1, 4])
    assert rec == {"weight": [(1, [0, 2, 3, 5])]}
    assert emb.embedding_dim == 4 and emb.weight.shape == (10, 4)
    torch.testing.assert_close(emb(tokens), ref[..., [0, 2, 3, 5]])
    prune_embedding_in_channels(emb, [0])
    assert emb.embedding_dim == 3
    emb(tokens).sum().backward()


# ----------------------------------------------------------------------------- attention
def _zero_mha_channels(mha: nn.MultiheadAttention, remove: list[int]) -> None:
    embed = mha.embed_dim
    rows = remove + [embed + i for i in remove] + [2 * embed + i for i in remove]
    with torch.no_grad():
        mha.in_proj_weight[rows] = 0
        mha.in_proj_bias[rows] = 0
        mha.out_proj.weight[:, remove] = 0
        for b in (mha.bias_k, mha.bias_v):
            if b is not None:
                b[..., remove] = 0


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("extra", [False, True])
def test_multihead_attention_exact(batch_first, extra) -> None:
    embed, heads = 8, 2
    mha = nn.MultiheadAttention(embed, heads, batch_first=batch_first, add_bias_kv=extra, add_zero_attn=extra)
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    remove = [1, 6]  # offset 1 of head 0 and offset 2 of head 1
    keep = keep_of(embed, remove)
    _zero_mha_channels(mha, remove)
    shape = (2, 5, embed) if batch_first else (5, 2, embed)
    q, kv = torch.randn(shape), torch.randn(shape)
    q[..., remove] = 0
    kv[..., remove] = 0
    with torch.no_grad():  # a live graph would keep the old shapes in its grad accumulators
        ref, ref_attn = mha(q, kv, kv)
    ids = {id(p) for p in mha.parameters()}

    prune_multihead_attention_out_channels(mha, remove)

    assert {id(p) for p in mha.parameters()} == ids
    assert (mha.embed_dim, mha.kdim, mha.vdim, mha.head_dim) == (6, 6, 6, 3)
    assert mha.in_proj_weight.shape == (18, 6) and mha.in_proj_bias.shape == (18,)
    assert mha.out_proj.weight.shape == (6, 6)
    assert (mha.out_proj.in_features, mha.out_proj.out_features) == (6, 6)
    if extra:
        assert mha.bias_k.shape == (1, 1, 6) and mha.bias_v.shape == (1, 1, 6)
    # The softmax scale follows head_dim (4 -> 3); undo that to compare exactly.
    with torch.no_grad():
        mha.in_proj_weight[:6] *= math.sqrt(3 / 4)
        mha.in_proj_bias[:6] *= math.sqrt(3 / 4)
    out, attn = mha(q[..., keep], kv[..., keep], kv[..., keep])
    torch.testing.assert_close(out, ref[..., keep], atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(attn, ref_attn, atol=ATOL, rtol=1e-5)
    out.sum().backward()
    assert mha.in_proj_weight.grad.shape == (18, 6)


def test_multihead_attention_records_and_eval_fast_path() -> None:
    mha = nn.MultiheadAttention(4, 2, batch_first=True)
    rec = record_of(mha, prune_multihead_attention_in_channels, [0, 3])
    assert rec["in_proj_weight"] == [(0, [1, 2, 5, 6, 9, 10]), (1, [1, 2])]
    assert rec["in_proj_bias"] == [(0, [1, 2, 5, 6, 9, 10])]
    assert rec["out_proj.weight"] == [(0, [1, 2]), (1, [1, 2])]
    assert rec["out_proj.bias"] == [(0, [1, 2])]
    mha.eval()
    x = torch.randn(2, 3, 2)
    with torch.no_grad():
        out, _ = mha(x, x, x, need_weights=False)
    assert out.shape == (2, 3, 2)


def test_multihead_attention_refusals() -> None:
    mha = nn.MultiheadAttention(8, 2)
    err = assert_refused(prune_multihead_attention_out_channels, mha, [0], "multiple of 2")
    assert "MultiheadAttention" in str(err)
    cross = nn.MultiheadAttention(8, 2, kdim=5, vdim=5)
    assert_refused(prune_multihead_attention_out_channels, cross, [0, 1], "kdim=5")


# ----------------------------------------------------------------------------- rnn
def test_lstm_out_channels_exact_bidirectional_two_layers() -> None:
    hidden, remove = 6, [1, 4]
    keep = keep_of(hidden, remove)
    lstm = nn.LSTM(5, hidden, num_layers=2, bidirectional=True, batch_first=True)
    with torch.no_grad():  # removed units influence nothing that is kept
        for k in range(2):
            for sfx in ("", "_reverse"):
                getattr(lstm, f"weight_hh_l{k}{sfx}")[:, remove] = 0
                if k:
                    w = getattr(lstm, f"weight_ih_l{k}{sfx}")
                    w[:, remove] = 0
                    w[:, [hidden + i for i in remove]] = 0
    ids = [id(p) for p in lstm.parameters()]
    x = torch.randn(3, 4, 5)
    with torch.no_grad():
        ref, (h_ref, c_ref) = lstm(x)
    rec = record_of(lstm, prune_lstm_out_channels, remove)
    rows = [g * hidden + i for g in range(4) for i in keep]
    assert rec["weight_ih_l0"] == [(0, rows)]
    assert rec["weight_ih_l1_reverse"] == [(0, rows), (1, keep + [hidden + i for i in keep])]
    assert rec["weight_hh_l1"] == [(0, rows), (1, keep)]
    assert rec["bias_hh_l0_reverse"] == [(0, rows)]
    assert [id(p) for p in lstm.parameters()] == ids
    assert lstm.hidden_size == 4 and lstm.weight_ih_l1.shape == (16, 8)
    out, (h, c) = lstm(x)
    torch.testing.assert_close(out, ref[..., keep + [hidden + i for i in keep]], atol=ATOL, rtol=0)
    torch.testing.assert_close(h, h_ref[..., keep], atol=ATOL, rtol=0)
    torch.testing.assert_close(c, c_ref[..., keep], atol=ATOL, rtol=0)
    out.sum().backward()


def test_lstm_in_channels_exact() -> None:
    lstm = nn.LSTM(5, 3, bidirectional=True)
    x = torch.randn(4, 2, 5)
    x[..., [0, 2]] = 0
    ref, _ = lstm(x)
    rec = record_of(lstm, prune_lstm_in_channels, [0, 2])
    assert rec == {"weight_ih_l0": [(1, [1, 3, 4])], "weight_ih_l0_reverse": [(1, [1, 3, 4])]}
    assert lstm.input_size == 3
    torch.testing.assert_close(lstm(x[..., [1, 3, 4]])[0], ref, atol=ATOL, rtol=0)


def test_lstm_proj_refused() -> None:
    lstm = nn.LSTM(4, 6, proj_size=2)
    assert_refused(prune_lstm_out_channels, lstm, [0], "proj_size=2")
    assert_refused(prune_lstm_in_channels, lstm, [0], "LSTM")


@pytest.mark.parametrize("cls", [nn.GRU, nn.RNN])
def test_gru_and_rnn(cls) -> None:
    rnn = cls(4, 6, num_layers=2, bias=False)
    assert get_layer_pruner(rnn) is prune_rnn_out_channels.__self__
    prune_rnn_out_channels(rnn, [0, 5])
    prune_rnn_in_channels(rnn, [3])
    gates = 3 if cls is nn.GRU else 1
    assert rnn.weight_hh_l1.shape == (gates * 4, 4) and rnn.weight_ih_l0.shape == (gates * 4, 3)
    out, h = rnn(torch.randn(5, 2, 3))
    assert out.shape == (5, 2, 4) and h.shape == (2, 2, 4)


# ----------------------------------------------------------------------------- parameter
def test_parameter_pruning() -> None:
    param = nn.Parameter(torch.randn(4, 6, 3))
    param.grad = torch.randn_like(param)
    data, grad = param.detach().clone(), param.grad.clone()
    assert prune_parameter_out_channels(param, [1]) is param
    assert torch.equal(param.data, data[[0, 2, 3]]) and torch.equal(param.grad, grad[[0, 2, 3]])
    prune_parameter_in_channels(param, [0, 5])
    assert param.shape == (3, 4, 3)
    prune_parameter_out_channels(param, [2], dim=-1)
    assert param.shape == (3, 4, 2) and isinstance(param, nn.Parameter)
    with records.recording({id(param): "pos"}) as rec:
        prune_parameter_out_channels(param, [0], dim=1)
    assert rec.record == {"pos": [(1, [1, 2, 3])]}
    assert_refused(prune_parameter_out_channels, param, [9], "out of range")
    before = snapshot(param)
    with pytest.raises(PruningError, match="dim 5 is out of range"):
        prune_parameter_out_channels(param, [0], dim=5)
    assert_same_snapshot(before, snapshot(param))


def test_parameter_pruner_class() -> None:
    pruner = ParameterPruner(dim=-1)
    token = nn.Parameter(torch.randn(1, 1, 8))
    assert pruner.couples_in_out and pruner.out_channel_dim == -1
    assert pruner.get_out_channels(token) == 8 == pruner.get_in_channels(token)
    pruner.prune_in_channels(token, [0, 1])
    assert token.shape == (1, 1, 6)
    plain = torch.randn(5, 2)
    ParameterPruner(0).prune_out_channels(plain, [4])
    assert plain.shape == (4, 2)


# ----------------------------------------------------------------------------- registry
class MyConv(nn.Conv2d):
    pass


class DuckPruner:
    def prune_out_channels(self, layer, idxs):
        return layer

    def prune_in_channels(self, layer, idxs):
        return layer

    def get_out_channels(self, layer):
        return 1

    def get_in_channels(self, layer):
        return 1


def test_registry_defaults_and_mro() -> None:
    assert get_layer_pruner(nn.Conv2d(2, 2, 1)) is prune_conv_out_channels.__self__
    assert get_layer_pruner(MyConv(2, 2, 1)) is prune_conv_out_channels.__self__
    assert get_layer_pruner(nn.ConvTranspose2d(2, 2, 1)) is prune_conv_transpose_out_channels.__self__
    assert get_layer_pruner(nn.LSTM(2, 2)) is prune_lstm_out_channels.__self__
    assert get_layer_pruner(nn.Parameter(torch.zeros(2))) is prune_parameter_out_channels.__self__
    assert get_layer_pruner(nn.ReLU()) is None
    assert nn.BatchNorm2d in DEFAULT_PRUNERS and nn.MultiheadAttention in DEFAULT_PRUNERS


def test_frozen_batchnorm_lookup_survives_broken_torchvision(monkeypatch) -> None:
    from lightning_prune.engine.layers import registry
    from lightning_prune.engine.layers.norm import frozen_batchnorm_type

    monkeypatch.setitem(sys.modules, "torchvision.ops.misc", None)  # `import` now raises
    assert frozen_batchnorm_type() is None
    registry.register_frozen_batchnorm()  # must not raise
    assert get_layer_pruner(nn.Conv2d(1, 1, 1)) is prune_conv_out_channels.__self__


def test_registry_customized() -> None:
    duck = DuckPruner()
    assert get_layer_pruner(MyConv(2, 2, 1), {MyConv: duck}) is duck
    assert get_layer_pruner(MyConv(2, 2, 1), {nn.Conv2d: duck}) is duck
    from_class = get_layer_pruner(nn.ReLU(), {nn.ReLU: DuckPruner})
    assert isinstance(from_class, DuckPruner)
    assert get_layer_pruner(nn.ReLU(), {nn.ReLU: DuckPruner}) is from_class
    assert get_layer_pruner(nn.Linear(2, 2), {nn.ReLU: duck}) is prune_linear_out_channels.__self__


def test_registry_customized_errors() -> None:
    with pytest.raises(TypeError, match=r"got instance of Linear; use \{type\(x\): pruner\}"):
        get_layer_pruner(nn.Linear(2, 2), {nn.Linear(2, 2): DuckPruner()})
    with pytest.raises(TypeError, match=r"customized_pruners\[ReLU\].*prune_in_channels"):
        get_layer_pruner(nn.ReLU(), {nn.ReLU: object()})


def test_describe_layer_one_line() -> None:
    text = describe_layer(nn.MultiheadAttention(4, 2))
    assert "\n" not in text and text.startswith("MultiheadAttention(embed_dim=4, num_heads=2")


def test_shared_sorted_idxs_prune_like_plain_lists_and_record_plain_lists():
    """The graph hands built-in pruners one SortedIdxs per group: the kept indices are worked
    out once, records still hold plain lists, and bad indices are still refused."""
    import pickle

    from lightning_prune.engine.indices import KeptIdxs, SortedIdxs
    from lightning_prune.engine.pruning import (
        PruningError,
        prune_batchnorm_out_channels,
        prune_conv_out_channels,
    )

    torch.manual_seed(0)
    conv_a, bn_a = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)
    conv_b, bn_b = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)
    conv_b.load_state_dict(conv_a.state_dict())
    bn_a.running_mean.uniform_()
    bn_b.load_state_dict(bn_a.state_dict())
    shared = SortedIdxs([1, 4, 6])
    with records.recording() as rec:
        prune_conv_out_channels(conv_a, shared)
        prune_batchnorm_out_channels(bn_a, shared)
    prune_conv_out_channels(conv_b, [6, 1, 4, 4])
    prune_batchnorm_out_channels(bn_b, [6, 1, 4])
    for a, b in ((conv_a, conv_b), (bn_a, bn_b)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert type(shared.kept(8)) is KeptIdxs and shared.kept(8) is shared.kept(8) == [0, 2, 3, 5, 7]
    for slices in rec.record.values():
        assert all(type(keep) is list for _, keep in slices)
    pickle.dumps(rec.record)  # plain types only
    with pytest.raises(PruningError, match="out of range"):
        prune_conv_out_channels(nn.Conv2d(3, 4, 1), SortedIdxs([1, 9]))
    with pytest.raises(PruningError, match="would leave zero"):
        prune_conv_out_channels(nn.Conv2d(3, 2, 1), SortedIdxs([0, 1]))
