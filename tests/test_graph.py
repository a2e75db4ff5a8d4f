"""Dependency graph: the seed example, groups, atomicity, identity, records, bad input."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import assert_same_state, silence_channels, snapshot
from torch import nn
from torchvision.models import resnet18

import lightning_prune.engine as tp
from lightning_prune.engine import PruningError, TraceError
from lightning_prune.engine.graph.grouping import group_from


@pytest.fixture(scope="module")
def example():
    return torch.randn(1, 3, 64, 64)


def test_seed_minimal_example_runs_with_only_the_import_changed(tmp_path):
    # Seed README 003, "A Minimal Example of DepGraph" (pretrained weights -> random init).
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 224, 224))
    group = DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[2, 6, 9])
    if DG.check_pruning_group(group):
        group.prune()
    text = group.details()
    for name in ["bn1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.bn2", "layer1.1.conv1",
                 "layer1.1.conv2", "layer1.1.bn2", "layer2.0.conv1", "layer2.0.downsample.0"]:
        assert f" on {name} (" in text, name
    assert "(Pruning Root)" in text and "=>" in text
    assert str(group) == text
    assert model.conv1.out_channels == 61 and model.bn1.num_features == 61
    assert model.layer2[0].downsample[0].in_channels == 61
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    model.zero_grad()
    torch.save(model, tmp_path / "model.pth")
    loaded = torch.load(tmp_path / "model.pth", weights_only=False)
    assert loaded.conv1.out_channels == 61


def test_group_iteration_yields_dep_and_idxs(example):
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, example)
    group = DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[0, 1])
    dep, idxs = group[0]
    assert dep.target.module is model.conv1
    assert dep.handler.__name__ == "prune_out_channels"
    assert idxs == [0, 1]
    targets = {d.target.name: (d.handler.__name__, i) for d, i in group}
    assert targets["bn1"] == ("prune_out_channels", [0, 1])
    assert targets["layer2.0.downsample.0"] == ("prune_in_channels", [0, 1])
    assert len(group) == len(list(group))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "shufflenet_v2_x0_5",
                                  pytest.param("densenet121", marks=pytest.mark.slow),
                                  pytest.param("resnext50_32x4d", marks=pytest.mark.slow)])
def test_pruning_dead_channels_leaves_outputs_equal(arch):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(arch).eval()
    x = torch.randn(2, 3, 64, 64)
    DG = tp.DependencyGraph().build_dependency(model, x)
    checked = 0
    for group in list(DG.get_all_groups())[:6]:
        units = group.units
        if len(units) < 4:
            continue
        idxs = sorted(i for u in units[1:len(units) // 2] for i in u)
        group = DG.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, idxs)
        silence_channels(group)
        with torch.no_grad():
            before = model(x)
        group.prune()
        with torch.no_grad():
            after = model(x)
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked >= 3


def test_build_restores_mode_and_does_not_touch_the_model():
    model = resnet18()
    model.train()
    model.layer1.eval()
    before = snapshot(model)
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    tp.DependencyGraph().build_dependency(model, torch.randn(2, 3, 32, 32))
    assert model.training and not model.layer1.training and model.layer2.training
    assert_same_state(model, before)  # BN running stats untouched, no attribute written
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks_before
    assert all("forward" not in vars(m) for m in model.modules())


class _WritesAttributes(nn.Module):
    """A forward that counts calls, caches its input and adds an attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.calls = 0
        self.cache = None

    def forward(self, x):
        self.calls += 1
        self.cache = x
        self.bn.last_input_shape = tuple(x.shape)  # written on a traced unit's owner
        return self.bn(self.conv(x))


def test_build_undoes_attribute_writes_of_the_forward():
    model = _WritesAttributes()
    keys = {id(m): set(vars(m)) for m in model.modules()}
    tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8))
    assert model.calls == 0 and model.cache is None
    assert {id(m): set(vars(m)) for m in model.modules()} == keys  # nothing added, no forward left behind
    model(torch.randn(1, 3, 8, 8))
    assert model.calls == 1 and model.cache.device.type == "cpu"


def test_build_inside_a_training_loop_keeps_parameters_and_optimizer_valid():
    model = resnet18(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # stateless: slicing state is the callback's job
    ids = {id(p) for p in model.parameters()}
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    F.cross_entropy(model(x), y).backward()
    DG = tp.DependencyGraph().build_dependency(model, x)
    opt.step()
    group = DG.get_pruning_group(model.layer3[0].conv1, tp.prune_conv_out_channels, idxs=[0, 3, 5])
    group.prune()
    assert {id(p) for p in model.parameters()} == ids  # same Parameter objects
    assert model.layer3[0].conv1.weight.grad.shape == model.layer3[0].conv1.weight.shape
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    w = model.layer3[0].conv1.weight
    before = w.detach().clone()
    opt.step()
    assert not torch.equal(before, w.detach())


def test_group_prune_returns_a_primitive_record_that_survives_weights_only_load():
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32))
    record = DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[1, 4]).prune()
    assert record["tensors"]["conv1.weight"] == [(0, [i for i in range(64) if i not in (1, 4)])]
    assert record["tensors"]["bn1.running_mean"][0][0] == 0
    assert record["tensors"]["layer1.0.conv1.weight"][0][0] == 1
    assert record["attributes"]["conv1.out_channels"] == 62
    buf = io.BytesIO()
    torch.save(record, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == record
    assert DG.pruning_history[-1] is record


def test_model_outputs_are_protected_unless_asked():
    model = resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    DG = tp.DependencyGraph().build_dependency(model, x)
    with pytest.raises(PruningError, match="model output"):
        DG.get_pruning_group(model.fc, tp.prune_linear_out_channels, idxs=[0])
    assert all(g[0].dep.target.module is not model.fc for g in DG.get_all_groups())
    DG = tp.DependencyGraph().build_dependency(model, x, protect_outputs=False)
    DG.get_pruning_group(model.fc, tp.prune_linear_out_channels, idxs=[0]).prune()
    assert model(x).shape == (1, 9)


def test_failed_prune_leaves_the_model_exactly_as_it_was(monkeypatch):
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32))
    group = DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[1, 2])
    before = snapshot(model)
    pruner = tp.get_layer_pruner(model.layer2[0].downsample[0])

    def broken(layer, idxs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pruner, "prune_in_channels", broken)
    group = DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[1, 2])
    # a bug in a layer pruner is not a refusal: it surfaces as itself (a pruner's step must
    # not keep the group whole and carry on), and the model is still restored
    with pytest.raises(RuntimeError, match="disk on fire") as info:
        group.prune()
    assert not isinstance(info.value, PruningError)
    assert "conv1" in "".join(getattr(info.value, "__notes__", [])) or not hasattr(info.value, "add_note")
    assert_same_state(model, before)
    monkeypatch.undo()
    DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[1, 2]).prune()  # graph still valid
    assert model.conv1.out_channels == 62


def test_removing_every_channel_is_refused():
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32))
    group = DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=list(range(64)))
    assert not DG.check_pruning_group(group)
    before = snapshot(model)
    with pytest.raises(PruningError, match="remove all 64 channels"):
        group.prune()
    assert_same_state(model, before)


def test_bad_inputs_get_clear_errors():
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32))
    with pytest.raises(PruningError, match="not a submodule"):
        DG.get_pruning_group(nn.Conv2d(3, 3, 1), tp.prune_conv_out_channels, idxs=[0])
    with pytest.raises(PruningError, match=r"out of range for 64 channels"):
        DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[64])
    with pytest.raises(TraceError, match="example_inputs"):
        tp.DependencyGraph().build_dependency(model, torch.randn(1, 5, 32, 32))  # wrong channels

    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("cannot run")

    with pytest.raises(TraceError, match="could not run"):
        tp.DependencyGraph().build_dependency(Broken(), torch.randn(1))
    with pytest.raises(TypeError, match="model"):
        tp.DependencyGraph().build_dependency("resnet", torch.randn(1))
    with pytest.raises(TypeError, match="ignored_layers.*class"):
        list(DG.get_all_groups(ignored_layers=[nn.Linear]))
    with pytest.raises(ValueError, match="no module named 'layer9'"):
        list(DG.get_all_groups(ignored_layers=["layer9"]))


def test_get_all_groups_respects_ignored_layers_and_root_types():
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32))
    all_roots = [g[0].dep.target.name for g in DG.get_all_groups()]
    assert "conv1" in all_roots and "fc" not in all_roots
    ignored = [g[0].dep.target.name for g in DG.get_all_groups(ignored_layers=[model.conv1])]
    assert "conv1" not in ignored and "layer1.0.conv2" not in ignored  # same group as conv1
    linear_only = list(DG.get_all_groups(root_module_types=[nn.Linear]))
    assert linear_only == []  # the only Linear is the protected classifier
    by_name = [g[0].dep.target.name for g in DG.get_all_groups(ignored_layers=["layer4"])]
    assert not any(n.startswith("layer4") for n in by_name)


def test_producers_of_a_residual_stream_stay_bounded_and_groups_stay_whole():
    """A deep residual stream must not give every layer an edge to every earlier block."""
    from lightning_prune.engine.trace.state import MAX_PRODUCERS

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    depth = 3 * MAX_PRODUCERS
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *[Block() for _ in range(depth)], nn.Conv2d(4, 2, 1)).eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8))
    assert len(DG.tables.edges) <= (MAX_PRODUCERS + 2) * (depth + 1)  # linear in depth, not quadratic
    group = DG.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[1])
    pruned_layers = {dep.target.name for dep, _ in group}
    # the stream couples the stem and every block's conv, in and out: all of them are in the group
    assert {f"{i}.conv" for i in range(1, depth + 1)} <= pruned_layers
    group.prune()
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 2, 8, 8)
    assert model[1].conv.weight.shape == (3, 3, 3, 3)


class _TwoBranchCat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


def test_group_held_across_another_prune_removes_its_own_channels():
    """Pruning one group shifts positions in a shared consumer; a group made earlier must
    still remove the channels it was made for (it is re-derived from its components)."""
    torch.manual_seed(0)
    model, x = _TwoBranchCat().eval(), torch.randn(2, 3, 6, 6)
    DG = tp.DependencyGraph().build_dependency(model, x)
    first = DG.get_pruning_group(model.a, tp.prune_conv_out_channels, [0, 1])
    second = DG.get_pruning_group(model.b, tp.prune_conv_out_channels, [2])
    for g in (first, second):
        silence_channels(g)  # now both may go without changing the output
    kept_b = model.head.weight[:, [4, 5, 7]].clone()  # head inputs that read b's channels 0, 1, 3
    before = model(x)
    first.prune()  # head's inputs 4..7 (from b) move to 2..5
    second.prune()  # made before that prune: must still remove b's channel 2 (now head input 4)
    assert model.a.out_channels == 2 and model.b.out_channels == 3 and model.head.in_channels == 5
    torch.testing.assert_close(model.head.weight[:, 2:], kept_b)
    torch.testing.assert_close(model(x), before)
    assert "b" in second.details()  # a pruned group still prints what it removed


def test_get_all_groups_can_be_pruned_while_iterating():
    """The seed's loop prunes each group as it comes; later groups must not go stale."""
    torch.manual_seed(0)
    model, x = _TwoBranchCat().eval(), torch.randn(2, 3, 6, 6)
    DG = tp.DependencyGraph().build_dependency(model, x)
    pruned = 0
    for group in DG.get_all_groups():
        silence_channels(DG.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, [0]))
        before = model(x)
        group.prune(idxs=[0])
        torch.testing.assert_close(model(x), before)
        pruned += 1
    assert pruned == 2 and model.head.in_channels == 6


def test_sub_groups_from_a_layout_match_a_fresh_derivation():
    """group_for_units filters the parent group's layout while its layers are unchanged;
    that must give exactly the group that deriving it from scratch gives, before and
    after other groups are pruned."""
    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None).features[:5].eval()  # concats and a transition
    x = torch.randn(1, 3, 32, 32)
    DG = tp.DependencyGraph().build_dependency(model, x)
    groups = list(DG.get_all_groups())
    generator = torch.Generator().manual_seed(0)
    for k, group in enumerate(groups):
        units = sorted(torch.randperm(len(group.units), generator=generator)[: max(1, len(group.units) // 3)].tolist())
        sub = DG.group_for_units(group, units)
        comps = torch.as_tensor([group.unit_components[u] for u in units])
        fresh = group_from(DG, DG.tables, group.root_space, comps)
        assert list(sub.targets.items()) == list(fresh.targets.items()) and sub.units == fresh.units
        if k % 2 == 0:
            sub.prune()  # later groups share the concat consumers: their layouts go stale


def test_all_groups_are_the_same_with_and_without_the_in_order_fast_path():
    """get_all_groups skips sorting by position when element ids run in (space, position)
    order, which pruning must preserve; the general sort must give the same groups."""
    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None).features[:5].eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32))
    for _ in range(2):
        live = (DG.tables.elem_space >= 0) & DG.tables.alive
        key = (DG.tables.elem_space * (int(DG.tables.elem_pos.max()) + 1) + DG.tables.elem_pos)[live]
        assert DG.tables.elems_in_order and bool((key[1:] > key[:-1]).all())  # the invariant itself
        fast = [(g.root_space, list(g.targets.items()), g.units) for g in DG.get_all_groups()]
        DG.tables.elems_in_order = False
        slow = [(g.root_space, list(g.targets.items()), g.units) for g in DG.get_all_groups()]
        DG.tables.elems_in_order = True
        assert fast == slow and len(fast) > 3
        for group in list(DG.get_all_groups())[::2]:  # prune some, then compare again
            DG.group_for_units(group, list(range(0, len(group.units), 3))).prune()


class _Activations(nn.Module):
    """Every element-wise layer kind, in place and not, around a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.acts = nn.Sequential(nn.ReLU(inplace=True), nn.LeakyReLU(0.1), nn.Hardswish(), nn.SiLU(inplace=True),
                                  nn.GELU(), nn.Dropout(0.1), nn.ReLU6(), nn.Mish(), nn.ELU(), nn.Hardsigmoid())
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.tail = nn.Sequential(nn.Sigmoid(), nn.Tanh(), nn.Hardtanh())
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.acts(self.conv1(x))
        y = self.tail(self.conv2(y) + y)
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("make", [_Activations, lambda: torchvision.models.mobilenet_v3_small(weights=None),
                                  lambda: torchvision.models.efficientnet_b0(weights=None)],
                         ids=["activations", "mobilenet_v3_small", "efficientnet_b0"])
def test_activation_layers_label_like_the_recorded_ops(make, monkeypatch):
    """On the meta device, activation and dropout layers are labelled directly instead of
    through the recorded element-wise op; the groups must be exactly the same."""
    from lightning_prune.engine.trace import fast_meta
    from lightning_prune.engine.trace import tracer as trace

    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(1, 3, 64, 64)
    installed = []
    make_forward = trace.Tracer._elementwise
    monkeypatch.setattr(trace.Tracer, "_elementwise", lambda self, m: installed.append(m) or make_forward(self, m))

    def groups():
        DG = tp.DependencyGraph().build_dependency(model, x)
        assert DG.trace_device == "meta"
        return [(g.root_name, list(g.targets.items()), g.units) for g in DG.get_all_groups()]

    direct = groups()
    assert len(installed) >= 9  # the layers took the direct path
    monkeypatch.setattr(fast_meta, "ELEMENTWISE_MODULES", frozenset())
    installed.clear()
    recorded = groups()
    assert not installed and direct == recorded
    assert all("forward" not in m.__dict__ for m in model.modules())  # nothing left behind


def test_layers_with_their_own_hooks_trace_like_plain_ones():
    """Units are traced by wrapping forward, or by hooks when the layer has hooks of its
    own; both ways give the same groups, and the user's hooks still run."""
    def build(hooked: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
        calls = []
        if hooked:
            model[0].register_forward_hook(lambda mod, args, out: calls.append(out.shape))
            model[3].register_forward_pre_hook(lambda mod, args: calls.append("pre"))
        DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8))
        layout = sorted((g.root_name, len(g), len(g.units)) for g in DG.get_all_groups())
        return layout, calls, model

    plain, _, _ = build(False)
    hooked, calls, model = build(True)
    assert hooked == plain and calls  # same groups; the user's hooks ran during the trace
    assert "forward" not in model[0].__dict__ and "forward" not in model[2].__dict__  # nothing left behind


def test_failed_prune_restores_container_width_attributes(monkeypatch):
    """A container's width attribute (torchvision ViT's hidden_dim) synced during a prune
    is put back when the prune fails, and recorded when it succeeds."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=8,
                              mlp_dim=16, num_classes=3).eval()
    x = torch.randn(1, 3, 16, 16)
    DG = tp.DependencyGraph().build_dependency(model, x)
    group = DG.get_pruning_group(model.conv_proj, tp.prune_conv_out_channels, [0, 1])
    assert group.sensitive  # torchvision's ViT reshapes with self.hidden_dim
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(DG, "dry_run", lambda: "RuntimeError: simulated")
    with pytest.raises(tp.PruningError, match="simulated"):
        group.prune()
    assert model.hidden_dim == 8 and model.conv_proj.out_channels == 8
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    monkeypatch.undo()
    record = DG.get_pruning_group(model.conv_proj, tp.prune_conv_out_channels, [0, 1]).prune()
    width = model.conv_proj.out_channels  # 4: a channel goes with its offset in the other head
    assert width < 8 and model.hidden_dim == width and record["attributes"]["hidden_dim"] == width
    assert model(x).shape == (1, 3)
