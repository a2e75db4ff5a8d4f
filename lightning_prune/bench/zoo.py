"""Prunability of torchvision's model zoo.

For each float model (random init) this builds the dependency graph, removes a fraction
of the channels of every prunable group, and checks that the pruned model

* runs forward, and backward where it has a differentiable output,
* has fewer parameters,
* keeps every output shape (detection: the same output keys).

Classifier and box heads are never pruned: their outputs reach the model output, which
the dependency graph protects on its own; detection heads are also listed explicitly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..engine import DependencyGraph, PruningError
from ..engine.graph.trace import _tensor_leaves
from ..engine.importance import GroupMagnitudeImportance
from ..engine.pruner.planning import unit_scores

_ROOT_MAGNITUDE = GroupMagnitudeImportance(p=2, group_reduction="first", normalizer=None)

DETECTION_HEAD_NAMES = (
    "box_predictor", "cls_logits", "bbox_pred", "bbox_reg", "mask_fcn_logits", "kps_score_lowres",
    "classification_head", "regression_head", "ctrness",
)


@dataclass
class ZooResult:
    name: str
    ok: bool
    params_before: int = 0
    params_after: int = 0
    build_s: float = 0.0
    groups: int = 0
    pruned_groups: int = 0
    skipped_groups: int = 0
    error: str = ""
    notes: list[str] = field(default_factory=list)


def float_model_names() -> list[str]:
    import torchvision

    quantized = set(torchvision.models.list_models(module=torchvision.models.quantization))
    return [n for n in torchvision.models.list_models() if n not in quantized]


def task_of(name: str) -> str:
    import torchvision.models as tvm

    for task, module in (("detection", tvm.detection), ("segmentation", tvm.segmentation),
                         ("video", tvm.video), ("optical_flow", tvm.optical_flow)):
        if name in tvm.list_models(module=module):
            return task
    return "classification"


def example_inputs_for(name: str, task: str, image_size: int | None = None) -> Any:
    """Random inputs of the shape ``name`` expects; ``image_size`` shrinks images for speed."""
    if task == "detection":
        return ([torch.rand(3, image_size or 224, image_size or 224)],)
    if task == "video":
        if name.startswith(("mvit", "s3d")):
            return torch.randn(1, 3, 16, 224, 224)
        return torch.randn(1, 3, 8, 112, 112)
    if task == "optical_flow":
        return (torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128))
    if task == "segmentation":
        return torch.randn(1, 3, image_size or 224, image_size or 224)
    size = 299 if name == "inception_v3" else 224
    if image_size and not name.startswith(("vit_", "inception", "maxvit")):
        size = image_size
    return torch.randn(1, 3, size, size)


def build_model(name: str, task: str) -> nn.Module:
    import torchvision

    kwargs: dict[str, Any] = {"weights": None}
    if task == "classification" and name in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = True
    if task == "detection":
        kwargs["weights_backbone"] = None
    if task == "segmentation":
        kwargs["weights_backbone"] = None
        if name.startswith(("fcn", "deeplabv3")):
            kwargs["aux_loss"] = False
    return torchvision.models.get_model(name, **kwargs)


def _outputs_signature(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, dict):
        return {k: _outputs_signature(v) for k, v in out.items()}
    if isinstance(out, tuple | list):
        return tuple(_outputs_signature(o) for o in out)
    return type(out).__name__


def _detection_signature(out: Any) -> Any:
    return [sorted(o.keys()) for o in out]


def _run(model: nn.Module, inputs: Any) -> Any:
    return model(*inputs) if isinstance(inputs, tuple) else model(inputs)


def magnitude_order(group: Any) -> list[list[int]]:
    """Units of a group, weakest first, by the L2 magnitude of the root layer's channels."""
    scores = unit_scores(group, _ROOT_MAGNITUDE(group))
    return [group.units[i] for i in torch.argsort(scores, stable=True).tolist()]


def prune_by_ratio(DG: DependencyGraph, ratio: float, ignored_layers: list[Any],
                   reasons: list[str] | None = None) -> tuple[int, int, int]:
    """Remove ``ratio`` of the units of every group (weakest by magnitude first).

    Groups whose prune is refused (the dry run shows the model would break) are skipped
    and their reasons collected in ``reasons``.
    """
    total = pruned = skipped = 0
    for group in DG.get_all_groups(ignored_layers=ignored_layers):
        total += 1
        units = magnitude_order(group)
        n = int(len(units) * ratio)
        if n == 0 or n >= len(units):
            continue
        idxs = sorted(i for u in units[:n] for i in u)
        try:
            group.prune(idxs)
            pruned += 1
        except PruningError as err:
            skipped += 1
            if reasons is not None:
                reasons.append(str(err).splitlines()[0][:200])
    return total, pruned, skipped


def check_model(name: str, ratio: float = 0.5, image_size: int | None = None) -> ZooResult:
    """Prune ``name`` by ``ratio`` of its channels and check it still works."""
    task = task_of(name)
    res = ZooResult(name, ok=False)
    try:
        torch.manual_seed(0)
        model = build_model(name, task).eval()
        inputs = example_inputs_for(name, task, image_size)
        with torch.no_grad():
            before = _run(model, inputs)
        sig = _detection_signature(before) if task == "detection" else _outputs_signature(before)
        res.params_before = sum(p.numel() for p in model.parameters())
        ignored = [m for n, m in model.named_modules() if n.split(".")[-1] in DETECTION_HEAD_NAMES]
        t0 = time.perf_counter()
        trace_inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        DG = DependencyGraph().build_dependency(model, trace_inputs)
        res.build_s = time.perf_counter() - t0
        res.groups, res.pruned_groups, res.skipped_groups = prune_by_ratio(DG, ratio, ignored, res.notes)
        res.params_after = sum(p.numel() for p in model.parameters())
        out = _run(model, inputs)
        after = _detection_signature(out) if task == "detection" else _outputs_signature(out)
        if after != sig:
            raise AssertionError(f"output shapes changed: {sig} -> {after}")
        leaves = [t for t in _tensor_leaves(out) if t.requires_grad and t.dtype.is_floating_point]
        if leaves:
            sum(t.float().sum() for t in leaves).backward()
        else:
            res.notes.append("no differentiable output")
        if task == "classification":
            model.train()
            x = inputs if isinstance(inputs, torch.Tensor) else inputs[0]
            out = model(torch.cat([x, x]))
            sum(t.float().sum() for t in _tensor_leaves(out)).backward()
        if res.params_after >= res.params_before:
            raise AssertionError(f"params did not fall: {res.params_before} -> {res.params_after}")
        res.ok = True
    except Exception as err:  # noqa: BLE001 - reported in the table, the sweep goes on
        res.error = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    return res
