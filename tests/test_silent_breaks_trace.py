"""Prunes that used to return normally and leave a model that cannot run forward.

Three kinds: a LayerNorm over several dims that never joined its producer's group, a
channel selection with fixed bounds whose labels followed the channels it happened to
pick, and example inputs of a dtype the model cannot run on, which the meta trace
accepted. Each test checks real behaviour: the pruned model runs with the dense output
shapes, or the prune (or the build) is refused and the model is exactly unchanged.
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_same_state, snapshot
from torch import nn

import lightning_prune.engine as tp
from lightning_prune.engine import PruningError, TraceError


def build(model, x, **kw):
    return tp.DependencyGraph().build_dependency(model, example_inputs=x, **kw)


def names_in(group) -> set[tuple[str, str]]:
    return {(d.target.name, d.handler.__name__) for d, _ in group}


def assert_refused(model, x, layer, idxs) -> None:
    """Pruning ``idxs`` of ``layer``'s outputs is refused and changes nothing."""
    dense = model(x).shape
    before = snapshot(model)
    DG = build(model, x)
    with pytest.raises(PruningError):
        DG.get_pruning_group(layer, tp.prune_conv_out_channels, idxs=idxs).prune()
    assert_same_state(model, before)
    assert model(x).shape == dense


# ---------------------------------------------------------------- LayerNorm over several dims
def test_layernorm_over_channels_and_space_joins_the_conv_group():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LayerNorm([8, 6, 6]), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        model[1].weight.normal_()
    w0 = model[1].weight.detach().clone()
    x = torch.randn(2, 3, 6, 6)
    dense = model(x).shape
    group = build(model, x).get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0, 2, 4, 6])
    assert ("1", "prune_out_channels") in names_in(group)
    group.prune()
    ln = model[1]
    assert ln.normalized_shape == (4, 6, 6)
    assert ln.weight.shape == (4, 6, 6) and ln.bias.shape == (4, 6, 6)
    assert torch.equal(ln.weight, w0[[1, 3, 5, 7]])
    assert model(x).shape == dense
    # the shape-only LayerNorm of the meta trace checks the new normalized_shape
    assert build(model, x).get_all_groups()
    tp.prune_layernorm_out_channels(ln, [0])  # now out of step with the conv before it
    with pytest.raises(TraceError):
        build(model, x)


def test_layernorm_over_channels_and_length_after_conv1d():
    model = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.LayerNorm((8, 10)), nn.ReLU(), nn.Conv1d(8, 4, 1))
    x = torch.randn(2, 3, 10)
    dense = model(x).shape
    group = build(model, x).get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[1, 5, 6])
    assert ("1", "prune_out_channels") in names_in(group)
    group.prune()
    assert model[1].normalized_shape == (5, 10) and model[1].weight.shape == (5, 10)
    assert model[3].in_channels == 5
    assert model(x).shape == dense


@pytest.mark.skipif(not hasattr(nn, "RMSNorm"), reason="nn.RMSNorm needs torch >= 2.4")
def test_rmsnorm_over_channels_and_space_joins_the_conv_group():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.RMSNorm([8, 5, 5]), nn.Conv2d(8, 4, 1))
    x = torch.randn(1, 3, 5, 5)
    dense = model(x).shape
    group = build(model, x).get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0, 1, 2, 3])
    assert ("1", "prune_out_channels") in names_in(group)
    group.prune()
    assert model[1].normalized_shape == (4, 5, 5) and model[1].weight.shape == (4, 5, 5)
    assert model(x).shape == dense


@pytest.mark.skipif(not hasattr(nn, "RMSNorm"), reason="nn.RMSNorm needs torch >= 2.4")
def test_rmsnorm_without_a_weight_follows_its_input():
    # No weight to carry its channels: the layer itself must join the group for its
    # normalized_shape to follow.
    model = nn.Sequential(nn.Linear(4, 8), nn.RMSNorm(8, elementwise_affine=False), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    group = build(model, x).get_pruning_group(model[0], tp.prune_linear_out_channels, idxs=[0])
    assert ("1", "prune_out_channels") in names_in(group)
    group.prune()
    assert model[1].normalized_shape == (7,) and model(x).shape == (3, 2)


class InnerDimLabeled(nn.Module):
    """The second normalized dim of the LayerNorm is a Linear's output."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.norm = nn.LayerNorm((4, 6))
        self.head = nn.Linear(6, 3)

    def forward(self, x):  # x: [B, 4, 5]
        return self.head(self.norm(self.fc(x)))


def test_the_other_normalized_dims_cannot_be_pruned():
    model = InnerDimLabeled()
    x = torch.randn(2, 4, 5)
    before = snapshot(model)
    DG = build(model, x)
    assert not [g for g in DG.get_all_groups() if ("fc", "prune_out_channels") in names_in(g)]
    with pytest.raises(PruningError):
        DG.get_pruning_group(model.fc, tp.prune_linear_out_channels, idxs=[0]).prune()
    assert_same_state(model, before)
    assert model(x).shape == (2, 4, 3)


def test_one_dim_layernorm_is_unchanged():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    group = build(model, x).get_pruning_group(model[0], tp.prune_linear_out_channels, idxs=[2, 7])
    assert ("1", "prune_out_channels") in names_in(group)
    group.prune()
    assert model[1].normalized_shape == (6,) and model(x).shape == (3, 2)


# ---------------------------------------------------------------- selections by value
class Select(nn.Module):
    """conv 3->16, a selection from its channels, a conv that reads what was selected."""

    def __init__(self, pick, width: int):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.b = nn.Conv2d(width, 4, 1)
        self.pick = pick

    def forward(self, x):
        return self.b(self.pick(self.a(x)))


PARTIAL = {
    "first_8": lambda t: t[:, :8],
    "half_of_the_shape": lambda t: t[:, :t.shape[1] // 2],
    "middle": lambda t: t[:, 4:12],
    "every_second": lambda t: t[:, ::2],
    "ellipsis_then_slice": lambda t: t.permute(0, 2, 3, 1)[..., :8].permute(0, 3, 1, 2),
    "narrow": lambda t: t.narrow(1, 0, 8),
    "index_list": lambda t: t[:, [0, 2, 4, 6, 8, 10, 12, 14]],
    "index_tensor": lambda t: t[:, torch.arange(0, 16, 2)],
    "bool_mask": lambda t: t[:, torch.arange(16) < 8],
    "index_select": lambda t: t.index_select(1, torch.arange(8, 16)),
}


@pytest.mark.parametrize("name", list(PARTIAL))
def test_a_fixed_selection_of_channels_freezes_them(name):
    model = Select(PARTIAL[name], 8)
    assert_refused(model, torch.randn(1, 3, 4, 4), model.a, [1])


WHOLE = {
    "colon": lambda t: t[:, :],
    "zero_to_width": lambda t: t[:, 0:16],
    "up_to_the_shape": lambda t: t[:, :t.shape[1]],
    "past_the_end": lambda t: t[:, :100],
    "narrow_of_the_shape": lambda t: t.narrow(1, 0, t.shape[1]),
    "arange_of_the_shape": lambda t: t[:, torch.arange(t.shape[1])],
    "index_select_of_the_shape": lambda t: t.index_select(1, torch.arange(t.shape[1])),
}


@pytest.mark.parametrize("name", list(WHOLE))
def test_a_selection_of_the_whole_dim_keeps_its_channels(name):
    model = Select(WHOLE[name], 16)
    x = torch.randn(1, 3, 4, 4)
    dense = model(x).shape
    group = build(model, x).get_pruning_group(model.a, tp.prune_conv_out_channels, idxs=[1, 9])
    assert ("b", "prune_in_channels") in names_in(group)
    group.prune()
    assert model.a.out_channels == 14 and model.b.in_channels == 14
    assert model(x).shape == dense


FIXED_WHOLE = {
    "narrow_of_16": lambda t: t.narrow(1, 0, 16),
    "list_of_16": lambda t: t[:, list(range(16))],
    "index_select_of_16": lambda t: t.index_select(1, torch.arange(16)),
}


@pytest.mark.parametrize("name", list(FIXED_WHOLE))
def test_a_whole_selection_written_with_the_width_is_refused_by_the_dry_run(name):
    # Whole today, but 16 is a literal: after a prune it names positions that do not exist.
    model = Select(FIXED_WHOLE[name], 16)
    assert_refused(model, torch.randn(1, 3, 4, 4), model.a, [1])


class WriteInto(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.c = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = self.a(x).clone()
        y[:, :8] = self.c(x)
        return self.b(y)


def test_writing_into_fixed_channels_freezes_both_sides():
    model = WriteInto()
    x = torch.randn(1, 3, 4, 4)
    assert_refused(model, x, model.c, [1])
    assert_refused(model, x, model.a, [1])


class IndexFill(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.b(self.a(x).index_fill(1, torch.tensor([0, 1]), 0.0))


def test_index_fill_of_fixed_channels_freezes_them():
    model = IndexFill()
    assert_refused(model, torch.randn(1, 3, 4, 4), model.a, [3])


class UnevenChunks(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.heads = nn.ModuleList([nn.Conv2d(3, 2, 1), nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1)])

    def forward(self, x):
        parts = self.stem(x).chunk(3, dim=1)  # 3 + 3 + 2; of 7 channels it would be 3 + 3 + 1
        return sum(h(p) for h, p in zip(self.heads, parts))


def test_uneven_chunks_are_checked_by_the_dry_run():
    model = UnevenChunks()
    x = torch.randn(1, 3, 4, 4)
    DG = build(model, x)
    group = DG.get_pruning_group(model.stem, tp.prune_conv_out_channels, idxs=[0])
    assert group.sensitive
    assert_refused(model, x, model.stem, [0])


class EvenTensorSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.a = nn.Conv2d(4, 2, 1)
        self.b = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        p, q = torch.tensor_split(self.stem(x), 2, dim=1)
        return self.a(p) + self.b(q)


def test_even_tensor_split_still_prunes_the_same_offset_in_each_part():
    model = EvenTensorSplit()
    x = torch.randn(1, 3, 4, 4)
    dense = model(x).shape
    group = build(model, x).get_pruning_group(model.stem, tp.prune_conv_out_channels, idxs=[1])
    assert dict(((d.target.name, d.handler.__name__), i) for d, i in group)[("stem", "prune_out_channels")] == [1, 5]
    group.prune()
    assert model.a.in_channels == 3 and model.b.in_channels == 3 and model(x).shape == dense


# ---------------------------------------------------------------- example inputs of the wrong dtype
def conv_model():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_conv_model_refuses_inputs_of_another_dtype(dtype):
    model = conv_model()
    before = snapshot(model)
    with pytest.raises(RuntimeError):
        model(torch.ones(1, 3, 8, 8, dtype=dtype))  # what the real model does with them
    with pytest.raises(TraceError) as info:
        build(model, torch.ones(1, 3, 8, 8, dtype=dtype))
    msg = str(info.value)
    short = str(dtype).replace("torch.", "")
    assert "'0' (Conv2d)" in msg and short in msg and "float32" in msg and "x.float()" in msg
    assert_same_state(model, before)
    assert build(model, torch.ones(1, 3, 8, 8)).get_all_groups()  # float32 inputs still build


def test_linear_mlp_refuses_float64_inputs():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    before = snapshot(model)
    with pytest.raises(TraceError, match=r"'0' \(Linear\).*float64.*float32"):
        build(model, torch.ones(2, 4, dtype=torch.float64))
    assert_same_state(model, before)


class TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, ids):
        return self.head(torch.relu(self.fc(self.emb(ids))))


def test_integer_token_ids_into_an_embedding_still_build():
    model = TokenModel()
    ids = torch.randint(0, 20, (2, 5))
    dense = model(ids).shape
    DG = build(model, ids)
    assert DG.get_all_groups()
    DG.get_pruning_group(model.emb, tp.prune_embedding_out_channels, idxs=[0, 3]).prune()
    DG.get_pruning_group(model.fc, tp.prune_linear_out_channels, idxs=[1]).prune()
    assert model.emb.embedding_dim == 6 and model.fc.out_features == 5 and model(ids).shape == dense


def test_float_ids_into_an_embedding_are_refused():
    with pytest.raises(TraceError, match=r"'emb' \(Embedding\).*int64 or int32"):
        build(TokenModel(), torch.zeros(2, 5))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_model_with_matching_inputs_builds(dtype):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4))
    model = model.to(dtype).eval()
    x = torch.randn(1, 3, 8, 8).to(dtype)
    DG = build(model, x)
    group = DG.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0, 1])
    group.prune()
    assert model[0].out_channels == 6 and model[-1].in_features == 6 * 36
    if dtype == torch.bfloat16:  # float16 convs do not run on every CPU build of torch
        assert model(x).shape == (1, 4) and model(x).dtype == dtype


def test_norm_with_float32_parameters_accepts_a_bfloat16_input_like_torch():
    model = nn.Sequential(nn.Linear(4, 8).to(torch.bfloat16), nn.LayerNorm(8), nn.ReLU())
    x = torch.randn(2, 4, dtype=torch.bfloat16)
    model(x)  # torch's mixed-precision norm path
    DG = build(model, x, protect_outputs=False)
    DG.get_pruning_group(model[0], tp.prune_linear_out_channels, idxs=[0]).prune()
    assert model(x).shape == (2, 7)


def test_norm_refuses_a_float64_input_with_float32_parameters():
    model = nn.Sequential(nn.Linear(4, 8).double(), nn.LayerNorm(8), nn.Linear(8, 2).double())
    with pytest.raises(TraceError, match=r"'1' \(LayerNorm\).*float64.*float32"):
        build(model, torch.randn(2, 4, dtype=torch.float64))
