"""Every code example of the seed README (Torch-Pruning 003), with only the import changed.

Deviations, each forced by the environment and noted inline: ``pretrained=True`` becomes
random init (nothing can be downloaded), and whole-model ``torch.load`` passes
``weights_only=False``, which torch >= 2.6 requires for pickled modules (our own saved
forms load with the default; see test_serialization.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

import lightning_prune.engine as tp


def test_scan_all_groups():
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 224, 224))
    n = 0
    for group in DG.get_all_groups(ignored_layers=[model.conv1], root_module_types=[nn.Conv2d, nn.Linear]):
        # Handle groups in sequential order
        idxs = [2, 4, 6]  # your pruning indices
        group.prune(idxs=idxs)
        print(group)
        n += 1
    assert n == 11  # 12 conv/linear groups in resnet18, minus the one rooted at conv1
    assert model.conv1.out_channels == 64  # ignored
    assert model.layer4[1].conv1.out_channels == 509
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_high_level_pruner_reproduces_the_seed_figures():
    model = resnet18()
    example_inputs = torch.randn(1, 3, 224, 224)
    # 1. Importance criterion
    imp = tp.importance.GroupNormImportance(p=2)  # or GroupTaylorImportance(), GroupHessianImportance(), etc.
    # 2. Initialize a pruner with the model and the importance criterion
    ignored_layers = []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m.out_features == 1000:
            ignored_layers.append(m)  # DO NOT prune the final classifier!
    pruner = tp.pruner.MetaPruner(  # We can always choose MetaPruner if sparse training is not required.
        model,
        example_inputs,
        importance=imp,
        pruning_ratio=0.5,  # remove 50% channels, ResNet18 = {64, 128, 256, 512} => ResNet18_Half = {32, 64, 128, 256}
        # pruning_ratio_dict = {model.conv1: 0.2, model.layer2: 0.8}, # customized pruning ratios for layers or blocks
        ignored_layers=ignored_layers,
        round_to=8,
    )
    # 3. Prune & finetune the model
    base_macs, base_nparams = tp.utils.count_ops_and_params(model, example_inputs)
    pruner.step()
    macs, nparams = tp.utils.count_ops_and_params(model, example_inputs)
    print(f"MACs: {base_macs / 1e9} G -> {macs / 1e9} G, #Params: {base_nparams / 1e6} M -> {nparams / 1e6} M")
    # Seed: MACs: 1.822177768 G -> 0.487202536 G, #Params: 11.689512 M -> 3.05588 M
    assert base_macs == pytest.approx(1.822177768e9, rel=1e-9)
    assert base_nparams == 11_689_512
    assert macs == pytest.approx(0.487202536e9, rel=0.01)
    assert nparams == pytest.approx(3.05588e6, rel=0.01)
    assert [model.layer1[0].conv1.out_channels, model.layer4[0].conv1.out_channels] == [32, 256]


def _pruner(model, **kw):
    return tp.pruner.MetaPruner(model, torch.randn(1, 3, 64, 64), importance=tp.importance.GroupNormImportance(p=2),
                                ignored_layers=[model.fc], **kw)


def test_global_and_isomorphic_pruning():
    for kw in ({"global_pruning": True}, {"isomorphic": True, "global_pruning": True}):
        model = resnet18()
        base = sum(p.numel() for p in model.parameters())
        pruner = _pruner(model, pruning_ratio=0.5, **kw)
        pruner.step()
        widths = {m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)}
        assert sum(p.numel() for p in model.parameters()) < 0.6 * base
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
        assert len(widths) > 1


def test_pruning_ratio_dict_with_scopes():
    model = resnet18()
    pruner = _pruner(model, global_pruning=True, pruning_ratio=0.5,
                     pruning_ratio_dict={(model.layer1, model.layer2): 0.4, model.layer3: 0.2})
    pruner.step()
    # Each key is one jointly ranked scope. layer3's three groups (two block-internal, one
    # residual stream) keep 80% of their channels together; (layer1, layer2)'s groups 60%.
    layer3 = model.layer3[0].conv1.out_channels + model.layer3[1].conv1.out_channels + model.layer3[0].bn2.num_features
    assert layer3 == pytest.approx(0.8 * 3 * 256, abs=2)
    l12 = sum(model.layer1[i].conv1.out_channels + model.layer2[i].conv1.out_channels for i in (0, 1)) \
        + model.layer2[0].bn2.num_features
    assert l12 == pytest.approx(0.6 * (64 + 64 + 128 + 128 + 128), abs=2)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_interactive_pruning():
    model = resnet18()
    example_inputs = torch.randn(1, 3, 64, 64)
    iterative_steps = 2
    pruner = tp.pruner.MetaPruner(model, example_inputs, importance=tp.importance.GroupNormImportance(p=2),
                                  pruning_ratio=0.5, iterative_steps=iterative_steps, ignored_layers=[model.fc])
    seen = []
    for _ in range(iterative_steps):
        for group in pruner.step(interactive=True):  # Warning: groups must be handled sequentially.
            print(group)
            # do whatever you like with the group
            dep, idxs = group[0]  # get the idxs
            target_module = dep.target.module  # get the root module
            pruning_fn = dep.handler  # get the pruning function
            seen.append((target_module, pruning_fn.__name__, len(idxs)))
            group.prune()
        macs, nparams = tp.utils.count_ops_and_params(model, example_inputs)
    assert seen and all(fn == "prune_out_channels" for _, fn, _ in seen)
    assert model.layer1[0].conv1.out_channels == 32 and model.layer4[0].conv1.out_channels == 256
    assert len(pruner.pruning_history()) == iterative_steps


def test_soft_pruning_zeroes_instead_of_removing():
    model = resnet18().eval()
    pruner = _pruner(model, pruning_ratio=0.25)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    zeroed = 0
    for group in pruner.step(interactive=True):
        record = group.soft_prune()
        zeroed += len(record["tensors"])
        dep, idxs = group[0]
        assert torch.all(dep.target.module.weight[list(idxs)] == 0)
    assert zeroed > 0
    assert {n: p.shape for n, p in model.named_parameters()} == shapes  # nothing removed


def test_low_level_functions():
    model = resnet18()
    tp.prune_conv_out_channels(model.conv1, idxs=[2, 6, 9])
    # fix the broken dependencies manually
    tp.prune_batchnorm_out_channels(model.bn1, idxs=[2, 6, 9])
    tp.prune_conv_in_channels(model.layer2[0].conv1, idxs=[2, 6, 9])
    assert model.conv1.out_channels == 61 and model.bn1.num_features == 61
    assert model.layer2[0].conv1.in_channels == 61


def test_save_and_load(tmp_path):
    model = resnet18()
    _pruner(model, pruning_ratio=0.5).step()
    model.zero_grad()  # Remove gradients
    torch.save(model, tmp_path / "model.pth")  # without .state_dict
    model = torch.load(tmp_path / "model.pth", weights_only=False)  # torch >= 2.6 needs weights_only=False here
    assert model.layer1[0].conv1.out_channels == 32
    # The weights_only-friendly form (seed 002, "Method 2"):
    state_dict = tp.state_dict(model)
    torch.save(state_dict, tmp_path / "pruned.pth")
    new_model = resnet18().eval()
    loaded_state_dict = torch.load(tmp_path / "pruned.pth", map_location="cpu")
    tp.load_state_dict(new_model, state_dict=loaded_state_dict)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(new_model(x), model.eval()(x))


class Scale(nn.Module):
    """The seed's 'static attributes' example: a width stored at construction."""

    def __init__(self, dim, init_value=1.0, trainable=True, use_nchw=True, static=True):
        super().__init__()
        self.shape = (dim, 1, 1) if use_nchw else (dim,)
        self.static = static
        self.scale = nn.Parameter(init_value * torch.ones(dim), requires_grad=trainable)

    def forward(self, x):
        if self.static:
            return x * self.scale.view(self.shape)
        return x * self.scale.view(-1, 1, 1)  # this works for pruning


@pytest.mark.parametrize("static", [True, False])
def test_static_attributes_are_caught_or_followed(static):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), Scale(8, static=static), nn.ReLU(), nn.Conv2d(8, 4, 3))
    x = torch.randn(1, 3, 16, 16)
    DG = tp.DependencyGraph().build_dependency(model, x)
    group = DG.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[1, 2])
    if static:
        # The stale `self.shape` would break the forward: the engine refuses, model unchanged.
        with pytest.raises(tp.PruningError, match="no longer runs forward"):
            group.prune()
        assert model[0].out_channels == 8 and model[1].scale.shape == (8,)
    else:
        group.prune()
        assert model[1].scale.shape == (6,)
    assert model(x).shape == (1, 4, 12, 12)


def test_sparse_training_loop_and_taylor():
    model = resnet18(num_classes=10)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    imp = tp.importance.GroupTaylorImportance()
    pruner = tp.pruner.MetaPruner(model, x[:1], importance=imp, pruning_ratio=0.5, ignored_layers=[model.fc])
    with pytest.raises(RuntimeError, match="backward"):
        pruner.step()
    assert model.layer1[0].conv1.out_channels == 64  # nothing happened
    loss = F.cross_entropy(model(x), y)
    loss.backward()  # Taylor expansion requires gradients for importance estimation
    del loss
    pruner.step()
    assert model.layer1[0].conv1.out_channels == 32
