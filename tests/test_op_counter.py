"""MACs/params counting: exact figures, hand-computed layer costs, and model safety."""

from __future__ import annotations

import logging
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from lightning_prune.engine.utils import count_ops_and_params, count_params, op_counter

# --------------------------------------------------------------------------- helpers


class ConvBnReluLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.bn(self.conv(x)))).flatten(1))


class DataDependent(nn.Module):
    """Branches on values, so it cannot run on meta and takes the real-forward fallback."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU(inplace=True)  # would overwrite the caller's input if not cloned
        self.conv = nn.Conv2d(3, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        if x.sum() >= 0:
            x = self.bn(self.conv(x))
        return x


def _hook_dicts(model: nn.Module) -> list[dict]:
    return [
        dict(d)
        for m in model.modules()
        for d in (
            m._forward_hooks,
            m._forward_pre_hooks,
            m._forward_hooks_with_kwargs,
            m._forward_hooks_always_called,
        )
    ]


def _snapshot(model: nn.Module) -> tuple[list[bool], dict[str, torch.Tensor], list[int]]:
    modes = [m.training for m in model.modules()]
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ids = [id(p) for p in model.parameters()]
    return modes, state, ids


def _assert_unchanged(model: nn.Module, before: tuple, hooks_before: list[dict]) -> None:
    modes, state, ids = before
    assert [m.training for m in model.modules()] == modes
    after = model.state_dict()
    assert after.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(after[key], value), key
        assert after[key].device == value.device, key
    assert [id(p) for p in model.parameters()] == ids
    assert all(p.grad is None for p in model.parameters())
    assert _hook_dicts(model) == hooks_before


# --------------------------------------------------------------------------- exact figures


def test_resnet18_matches_published_torch_pruning_figures() -> None:
    torch.manual_seed(0)
    macs, params = count_ops_and_params(resnet18(), torch.randn(1, 3, 224, 224))
    assert (macs, params) == (1_822_177_768, 11_689_512)


def test_conv_bn_relu_linear_counted_term_by_term() -> None:
    model = ConvBnReluLinear()
    n, h, w = 2, 10, 12
    macs, params, layer_macs, layer_params = count_ops_and_params(
        model, torch.randn(n, 3, h, w), layer_wise=True
    )
    conv_out = n * 8 * h * w
    expected = {
        "conv": conv_out * 3 * 3 * 3 + conv_out,  # products + one bias add per output
        "bn": 2 * conv_out,  # normalise + affine
        "act": conv_out,
        "pool": conv_out,  # one op per input element
        "fc": (n * 5) * 8 + n * 5,
    }
    for name, value in expected.items():
        assert layer_macs[name] == value, name
    assert macs == sum(expected.values())
    assert layer_params == {"": 0, "conv": 8 * 3 * 9 + 8, "bn": 16, "act": 0, "pool": 0, "fc": 8 * 5 + 5}
    assert params == sum(layer_params.values()) == count_params(model)


def test_grouped_and_depthwise_conv() -> None:
    grouped = nn.Conv2d(8, 12, 3, groups=4, bias=False)
    macs, _ = count_ops_and_params(grouped, torch.randn(1, 8, 9, 9))
    assert macs == (12 * 7 * 7) * (8 // 4) * 3 * 3
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    macs, _ = count_ops_and_params(depthwise, torch.randn(1, 8, 9, 9))
    assert macs == (8 * 9 * 9) * 1 * 3 * 3 + 8 * 9 * 9


def test_conv_transpose_counts_products_per_input_element() -> None:
    layer = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
    x = torch.randn(1, 4, 5, 5)
    out_numel = 1 * 6 * 11 * 11  # (5 - 1) * 2 + 3 = 11
    macs, params = count_ops_and_params(layer, x)
    assert macs == x.numel() * (6 // 2) * 3 * 3 + out_numel
    assert params == 4 * 3 * 9 + 6


def test_norms_upsample_and_lstm() -> None:
    x = torch.randn(2, 8, 4, 6)
    assert count_ops_and_params(nn.GroupNorm(2, 8), x)[0] == 2 * x.numel()
    assert count_ops_and_params(nn.InstanceNorm2d(8), x)[0] == x.numel()  # not affine
    assert count_ops_and_params(nn.LayerNorm(6), x)[0] == 2 * x.numel()
    assert count_ops_and_params(nn.Upsample(scale_factor=2), x)[0] == 4 * x.numel()
    lstm = nn.LSTM(6, 5, batch_first=True)
    tokens = 2 * 3
    weights = 4 * 5 * 6 + 4 * 5 * 5 + 2 * 4 * 5  # w_ih, w_hh, b_ih + b_hh
    assert count_ops_and_params(lstm, torch.randn(2, 3, 6))[0] == tokens * weights


# --------------------------------------------------------------------------- functional ops


class FunctionalLinear(nn.Module):
    """Uses ``fc``'s weight through F.linear without ever calling ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.fc.weight, self.fc.bias)


def test_functional_linear_with_a_module_weight_counted_once() -> None:
    x = torch.randn(3, 6)
    macs, _, layer_macs, _ = count_ops_and_params(FunctionalLinear(), x, layer_wise=True)
    assert macs == 3 * 4 * 6  # functional ops count products only
    assert layer_macs[""] == macs and layer_macs["fc"] == 0
    # Inside nn.Linear the same addmm is covered by the module rule, not added again.
    assert count_ops_and_params(nn.Linear(6, 4), x)[0] == 3 * 4 * 6 + 3 * 4


class HandAttention(nn.Module):
    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        manual = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        fused = F.scaled_dot_product_attention(q, k, v)
        return manual + fused


def test_functional_matmul_and_sdpa_outside_modules_are_counted() -> None:
    n, length, dim = 2, 5, 8
    macs, _, layer_macs, _ = count_ops_and_params(
        HandAttention(dim), torch.randn(n, length, dim), layer_wise=True
    )
    qkv = n * length * 3 * dim * dim
    attention = n * length * length * dim * 2  # Q @ K^T and attn @ V over all heads
    assert layer_macs["qkv"] == qkv
    assert layer_macs[""] == 2 * attention  # manual and fused paths
    assert macs == qkv + 2 * attention


def test_multihead_attention_counts_projections_and_products() -> None:
    n, length, dim, heads = 2, 5, 8, 2
    mha = nn.MultiheadAttention(dim, heads, batch_first=True)
    x = torch.randn(n, length, dim)
    expected = n * length * dim * 3 * dim + 2 * n * length * length * dim + n * length * dim * dim
    assert count_ops_and_params(mha, (x, x, x))[0] == expected
    no_weights = count_ops_and_params(mha, (x, x, x), forward_fn=lambda m, a: m(*a, need_weights=False))
    assert no_weights[0] == expected


# --------------------------------------------------------------------------- model safety


def test_model_unchanged_modes_stats_hooks_grads() -> None:
    model = ConvBnReluLinear()
    model.train()
    model.bn.eval()  # mixed modes must come back per submodule
    user_hook = model.conv.register_forward_hook(lambda *_: None)
    before, hooks_before = _snapshot(model), _hook_dicts(model)
    count_ops_and_params(model, torch.randn(2, 3, 8, 8))
    _assert_unchanged(model, before, hooks_before)
    assert model.conv._forward_hooks  # the user's own hook survives
    user_hook.remove()
    assert all(not d for d in _hook_dicts(model))


def test_fallback_real_forward_protects_buffers_and_inputs(caplog: pytest.LogCaptureFixture) -> None:
    model = DataDependent().train()
    x = torch.randn(1, 3, 4, 4)
    x_before = x.clone()
    before, hooks_before = _snapshot(model), _hook_dicts(model)
    with caplog.at_level(logging.DEBUG, logger=op_counter.__name__):
        macs, params = count_ops_and_params(model, x)
    assert "meta forward failed" in caplog.text
    assert macs == x.numel() + 4 * 4 * 4 * 3 + 2 * 4 * 4 * 4
    assert params == 4 * 3 + 8
    assert torch.equal(x, x_before)
    _assert_unchanged(model, before, hooks_before)


def test_meta_and_real_forward_give_identical_layer_counts() -> None:
    model = nn.Sequential(ConvBnReluLinear(), nn.Unflatten(1, (1, 5)), HandAttention(5, 1))
    x = torch.randn(2, 3, 8, 8)
    meta = op_counter._record_forward(model, x, None, on_meta=True).macs
    real = op_counter._record_forward(model, x, None, on_meta=False).macs
    assert dict(meta) == dict(real) and sum(meta.values()) > 0


def test_meta_cache_does_not_replay_metadata_changing_inplace_ops() -> None:
    cache = op_counter.MetaOpCache()
    for _ in range(2):
        t = torch.empty(3, 4, device="meta")
        out = cache.run(torch.ops.aten.unsqueeze_.default, (t, 0), {})
        assert out is t and t.shape == (1, 3, 4)
    first = cache.run(
        torch.ops.aten.addmm.default,
        (torch.empty(5, device="meta"), torch.empty(2, 3, device="meta"), torch.empty(3, 5, device="meta")),
        {},
    )
    again = cache.run(
        torch.ops.aten.addmm.default,
        (torch.empty(5, device="meta"), torch.empty(2, 3, device="meta"), torch.empty(3, 5, device="meta")),
        {},
    )
    assert first.shape == again.shape == (2, 5) and first is not again


def test_repeated_counts_are_identical() -> None:
    model, x = ConvBnReluLinear(), torch.randn(1, 3, 6, 6)
    assert count_ops_and_params(model, x) == count_ops_and_params(model, x)


# --------------------------------------------------------------------------- inputs and outputs


Pair = namedtuple("Pair", ["left", "right"])


class TwoInputs(nn.Module):
    def __init__(self, out: str) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(6, 3)
        self.out = out

    def forward(self, image: torch.Tensor, extra: torch.Tensor) -> object:
        left, right = self.a(image), self.b(extra)
        if self.out == "dict":
            return {"left": left, "right": right}
        if self.out == "namedtuple":
            return Pair(left, right)
        if self.out == "list":
            return [left, right]
        return left + right


@pytest.mark.parametrize("out", ["tensor", "dict", "namedtuple", "list"])
def test_tuple_and_dict_inputs_any_output_type(out: str) -> None:
    model = TwoInputs(out)
    image, extra = torch.randn(2, 4), torch.randn(2, 6)
    expected = 2 * 3 * 4 + 2 * 3 + 2 * 3 * 6 + 2 * 3
    assert count_ops_and_params(model, (image, extra))[0] == expected
    assert count_ops_and_params(model, [image, extra])[0] == expected
    assert count_ops_and_params(model, {"image": image, "extra": extra})[0] == expected
    via_fn = count_ops_and_params(model, {"x": (image, extra)}, forward_fn=lambda m, inp: m(*inp["x"]))
    assert via_fn[0] == expected


def test_layer_wise_sums_equal_totals_on_resnet18() -> None:
    model = resnet18(num_classes=10)
    macs, params, layer_macs, layer_params = count_ops_and_params(
        model, torch.randn(1, 3, 64, 64), layer_wise=True
    )
    names = {name for name, _ in model.named_modules()}
    assert set(layer_macs) == set(layer_params) == names
    assert sum(layer_macs.values()) == macs and sum(layer_params.values()) == params
    assert layer_macs["layer1.0.conv1"] == (64 * 16 * 16) * 64 * 9


def test_shared_parameters_counted_once() -> None:
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    model[1].weight = model[0].weight
    _, params, _, layer_params = count_ops_and_params(model, torch.randn(1, 4), layer_wise=True)
    assert params == count_params(model) == 16
    assert layer_params["0"] == 16 and layer_params["1"] == 0


# --------------------------------------------------------------------------- errors


def test_non_module_model_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="`model`"):
        count_ops_and_params(lambda x: x, torch.randn(1))
    with pytest.raises(TypeError, match="`model`"):
        count_params(object())


def test_wrong_input_shape_names_the_shape_and_leaves_model_clean() -> None:
    model = ConvBnReluLinear().train()
    before, hooks_before = _snapshot(model), _hook_dicts(model)
    with pytest.raises(RuntimeError, match=r"could not run on example_inputs of shape \(1, 4, 8, 8\)"):
        count_ops_and_params(model, torch.randn(1, 4, 8, 8))
    _assert_unchanged(model, before, hooks_before)
    assert all(not d for d in hooks_before)


def test_lstm_weight_cache_and_forward_cached_attributes_restored() -> None:
    class CachesOnSelf(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True)
            self.scale = torch.ones(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.scale = self.scale.to(x.device)  # rebinds an attribute, as anchor generators do
            self.last_input_shape = x.shape
            return self.lstm(x)[0] * self.scale

    model = CachesOnSelf()
    x = torch.randn(2, 3, 6)
    with torch.no_grad():
        expected = model(x)
    scale, flat = model.scale, list(model.lstm._flat_weights)
    del model.last_input_shape
    macs, _ = count_ops_and_params(model, x)
    assert macs == 2 * 3 * sum(p.numel() for p in model.lstm.parameters())
    assert model.scale is scale and not hasattr(model, "last_input_shape")
    assert all(a is b for a, b in zip(model.lstm._flat_weights, flat))
    assert all(w.device.type == "cpu" for w in model.lstm._flat_weights)
    with torch.no_grad():
        assert torch.equal(model(x), expected)
