"""Prunability of torchvision's model zoo (and a sample of timm's).

For each float model (random init) this builds the dependency graph, removes a fraction
of the channels of every prunable group, and checks that the pruned model

* runs forward, and backward where it has a differentiable output,
* has fewer parameters,
* keeps every output shape (detection: the same output keys).

It also counts MACs before and after with :func:`~lightning_prune.engine.utils.count_ops_and_params`
(a model whose MACs cannot be counted is still reported, with ``n/a``).

Classifier and box heads are never pruned: their outputs reach the model output, which
the dependency graph protects on its own; detection heads are also listed explicitly.

timm models are named ``timm/<name>`` (for example ``timm/resnet18``) and are built with
``timm.create_model(name, pretrained=False)``: random init, nothing is downloaded.
:mod:`.zoo_report` turns a list of :class:`ZooResult` into the table of
``docs/zoo_report.md``.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..engine import DependencyGraph, PruningError
from ..engine.harness import call_model
from ..engine.importance import GroupMagnitudeImportance
from ..engine.pruner.planning import unit_scores
from ..engine.tree import tensor_leaves
from ..engine.utils import count_ops_and_params

_LOG = logging.getLogger(__name__)

_ROOT_MAGNITUDE = GroupMagnitudeImportance(p=2, group_reduction="first", normalizer=None)

DETECTION_HEAD_NAMES = (
    "box_predictor", "cls_logits", "bbox_pred", "bbox_reg", "mask_fcn_logits", "kps_score_lowres",
    "classification_head", "regression_head", "ctrness",
)

TIMM_PREFIX = "timm/"
#: The timm models the report adds (those the installed timm has): CNNs, a ConvNeXt and ViTs.
TIMM_SAMPLE = (
    "resnet18", "efficientnet_b0", "convnext_atto", "mobilenetv3_small_100",
    "vit_tiny_patch16_224", "deit_tiny_patch16_224",
)

@dataclass
class ZooResult:
    """What :func:`check_model` found for one model.

    ``macs_before``/``macs_after`` are ``None`` when the MACs could not be counted
    (``macs_error`` says why); that does not make the model fail. ``skip_reasons``
    holds the first line of each refused prune, ``notes`` short remarks for the table.
    """

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
    task: str = ""
    macs_before: int | None = None
    macs_after: int | None = None
    macs_error: str = ""
    skip_reasons: list[str] = field(default_factory=list)
    total_s: float = 0.0

    @property
    def status(self) -> str:
        return "ok" if self.ok else "FAIL"

    @property
    def note(self) -> str:
        """The table's note: the error, groups kept whole, why MACs are missing, remarks."""
        parts = [self.error] if self.error else []
        if self.skipped_groups:
            plural = "s" if self.skipped_groups > 1 else ""
            parts.append(f"{self.skipped_groups} group{plural} kept whole")
        if self.macs_error:
            parts.append(f"MACs n/a ({self.macs_error})")
        parts.extend(self.notes)
        return "; ".join(parts)


def float_model_names() -> list[str]:
    import torchvision

    quantized = set(torchvision.models.list_models(module=torchvision.models.quantization))
    return [n for n in torchvision.models.list_models() if n not in quantized]


def timm_available() -> bool:
    return importlib.util.find_spec("timm") is not None


def timm_model_names(sample: Iterable[str] = TIMM_SAMPLE) -> list[str]:
    """``timm/<name>`` for each model of ``sample`` that the installed timm provides."""
    import timm

    known = set(timm.list_models())
    missing = [n for n in sample if n not in known]
    if missing:
        _LOG.warning("timm %s has no %s; left out of the report", timm.__version__, ", ".join(missing))
    return [TIMM_PREFIX + n for n in sample if n in known]


def is_timm(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


def task_of(name: str) -> str:
    if is_timm(name):
        return "classification"
    import torchvision.models as tvm

    for task, module in (("detection", tvm.detection), ("segmentation", tvm.segmentation),
                         ("video", tvm.video), ("optical_flow", tvm.optical_flow)):
        if name in tvm.list_models(module=module):
            return task
    return "classification"


def _timm_image_size(model: nn.Module | None, image_size: int | None) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    # ViT-style models embed a fixed grid of patches: they keep their own size
    if image_size and model is not None and not hasattr(model, "patch_embed"):
        size = image_size
    return size


def example_inputs_for(name: str, task: str, image_size: int | None = None,
                       model: nn.Module | None = None) -> Any:
    """Random inputs of the shape ``name`` expects; ``image_size`` shrinks images for speed.

    ``model`` (the built model) is only read for timm models: their input size comes
    from their ``pretrained_cfg``.
    """
    if is_timm(name):
        size = _timm_image_size(model, image_size)
        return torch.randn(1, 3, size, size)
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
    """A random-init model; ``timm/<name>`` through ``timm.create_model`` (nothing downloaded)."""
    if is_timm(name):
        import timm

        return timm.create_model(name[len(TIMM_PREFIX):], pretrained=False)
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


def count_macs(model: nn.Module, inputs: Any) -> tuple[int | None, str]:
    """MACs of one forward pass on ``inputs`` (called like :func:`check_model` calls the model).

    Returns ``(macs, "")``, or ``(None, reason)`` when they cannot be counted.
    """
    try:
        macs, _ = count_ops_and_params(model, inputs)
    except Exception as err:  # noqa: BLE001 - a missing count is reported, not fatal
        reason = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}" if str(err) else type(err).__name__
        _LOG.warning("could not count the MACs of %s: %s", type(model).__name__, reason)
        return None, reason
    return int(macs), ""


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


def check_model(name: str, ratio: float = 0.5, image_size: int | None = None,
                macs: bool = True) -> ZooResult:
    """Prune ``name`` by ``ratio`` of its channels and check it still works.

    Never raises for a broken model: the error is in the result (``ok=False``), so a
    sweep goes on. ``macs=False`` skips counting MACs.
    """
    t_start = time.perf_counter()
    res = ZooResult(name, ok=False)
    try:
        res.task = task = task_of(name)
        torch.manual_seed(0)
        model = build_model(name, task).eval()
        inputs = example_inputs_for(name, task, image_size, model=model)
        with torch.no_grad():
            before = call_model(model, inputs)
        sig = _detection_signature(before) if task == "detection" else _outputs_signature(before)
        res.params_before = sum(p.numel() for p in model.parameters())
        if macs:
            res.macs_before, res.macs_error = count_macs(model, inputs)
        ignored = [m for n, m in model.named_modules() if n.split(".")[-1] in DETECTION_HEAD_NAMES]
        t0 = time.perf_counter()
        trace_inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        DG = DependencyGraph().build_dependency(model, trace_inputs)
        res.build_s = time.perf_counter() - t0
        res.groups, res.pruned_groups, res.skipped_groups = prune_by_ratio(
            DG, ratio, ignored, res.skip_reasons)
        res.params_after = sum(p.numel() for p in model.parameters())
        out = call_model(model, inputs)
        after = _detection_signature(out) if task == "detection" else _outputs_signature(out)
        if after != sig:
            raise AssertionError(f"output shapes changed: {sig} -> {after}")
        leaves = [t for t in tensor_leaves(out) if t.requires_grad and t.dtype.is_floating_point]
        if leaves:
            sum(t.float().sum() for t in leaves).backward()
        else:
            res.notes.append("no differentiable output")
        if task == "classification":
            model.train()
            x = inputs if isinstance(inputs, torch.Tensor) else inputs[0]
            out = model(torch.cat([x, x]))
            sum(t.float().sum() for t in tensor_leaves(out)).backward()
            model.eval()
        if res.params_after >= res.params_before:
            raise AssertionError(f"params did not fall: {res.params_before} -> {res.params_after}")
        if macs and res.macs_before is not None:
            res.macs_after, res.macs_error = count_macs(model, inputs)
        res.ok = True
    except Exception as err:  # noqa: BLE001 - reported in the table, the sweep goes on
        res.error = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}" if str(err) else type(err).__name__
    res.total_s = time.perf_counter() - t_start
    return res


def _warm_up() -> None:
    """One small build first, so the first model's build time carries no one-off costs."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(288, 4))
    DependencyGraph().build_dependency(net.eval(), torch.randn(1, 3, 8, 8))


def run_zoo(names: Sequence[str], ratio: float = 0.5, image_size: int | None = None,
            on_result: Callable[[int, ZooResult], None] | None = None, macs: bool = True) -> list[ZooResult]:
    """:func:`check_model` on each of ``names`` in turn; a failing model never stops the sweep.

    ``on_result(i, result)`` (``i`` counts from 1) is called as each model finishes.
    """
    _warm_up()
    results = []
    for i, name in enumerate(names, 1):
        res = check_model(name, ratio, image_size, macs=macs)
        results.append(res)
        if on_result is not None:
            on_result(i, res)
    return results
