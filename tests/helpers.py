"""Shared test helpers: state comparison, 'provably dead channel' construction, a custom layer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

import lightning_prune.engine as tp


def snapshot(model: nn.Module) -> dict:
    """Everything a failed prune must leave untouched: tensors, their ids, plain attrs."""
    tensors = {n: (id(t), t.detach().clone()) for n, t in model.state_dict(keep_vars=True).items()}
    attrs = {}
    for name, mod in model.named_modules():
        for k, v in vars(mod).items():
            if isinstance(v, int | float | bool | str | tuple) and not k.startswith("_"):
                attrs[f"{name}.{k}"] = v
    return {"tensors": tensors, "attrs": attrs}


def assert_same_state(model: nn.Module, snap: dict) -> None:
    now = snapshot(model)
    assert now["attrs"] == snap["attrs"]
    assert now["tensors"].keys() == snap["tensors"].keys()
    for name, (tid, value) in snap["tensors"].items():
        tid2, value2 = now["tensors"][name]
        assert tid == tid2, f"{name} was replaced by a new tensor object"
        assert value.shape == value2.shape, f"{name} changed shape {value.shape} -> {value2.shape}"
        assert torch.equal(value, value2), f"{name} changed value"


def silence_channels(group) -> None:
    """Make the group's channels contribute nothing downstream.

    Zero the input-side weights that read the group's channels in every consumer layer
    (convs with groups == 1 and linears). Whatever the pruned channels held, nothing else
    depends on them any more, so pruning them must leave the model output unchanged.
    """
    with torch.no_grad():
        for dep, idxs in group:
            mod = dep.target.module
            name = getattr(dep.handler, "__name__", "")
            if name != "prune_in_channels":
                continue
            if isinstance(mod, nn.Linear):
                mod.weight[:, idxs] = 0
            elif isinstance(mod, nn.modules.conv._ConvTransposeNd) and mod.groups == 1:
                mod.weight[idxs] = 0
            elif isinstance(mod, nn.modules.conv._ConvNd) and mod.groups < mod.in_channels:
                # grouped conv: input channel g*cin_g + b is read through weight[:, b]
                per_group = mod.in_channels // mod.groups
                mod.weight[:, sorted({i % per_group for i in idxs})] = 0


class CustomScale(nn.Module):
    """A layer the engine does not know: per-channel scale and shift in one parameter."""

    def __init__(self, c):
        super().__init__()
        self.params = nn.Parameter(torch.randn(2, c))

    def forward(self, x):
        return x * self.params[0].view(1, -1, 1, 1) + self.params[1].view(1, -1, 1, 1)


class CustomScalePruner(tp.LayerPruner):
    couples_in_out = True

    def prune_out_channels(self, layer, idxs):
        keep = tp.pruning.keep_indices(layer.params.shape[1], idxs)
        tp.pruning.slice_tensor(layer.params, 1, keep)
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer):
        return layer.params.shape[1]

    get_in_channels = get_out_channels


#: The zoo benchmark script, which the zoo tests load as a module.
PRUNE_ZOO_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "prune_zoo.py"


def load_prune_zoo_script():
    spec = importlib.util.spec_from_file_location("prune_zoo_script", PRUNE_ZOO_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
