"""Saving and restoring pruned models without pickling them.

A pruned model has the same classes as the original one, only smaller tensors and a few
changed width attributes (``out_channels``, ``hidden_dim``...). So it can be rebuilt from a
fresh, unpruned instance in two ways, both made of tensors and primitives only (they load
with ``torch.load(weights_only=True)``, the default since torch 2.6):

* **Replaying records.** :func:`apply_record` / :func:`apply_history` redo the slices of
  ``group.prune()`` records (``DG.pruning_history``) on a model of the original
  architecture. Useful when the history is already stored (a Lightning checkpoint) and
  the weights come separately.
* **A pruned state dict.** :func:`state_dict` stores the weights, every tensor's shape and
  every primitive module attribute; :func:`load_state_dict` resizes a fresh model to match
  and loads the weights. No record is needed, so it also works for models pruned by hand.

Both keep every ``nn.Parameter`` the same Python object (only ``.data`` changes), and
both are atomic: when the input does not match the model, a ``ValueError`` says why and
the model is left exactly as it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..layers.base import slice_tensor
from .records import MODULE_INTERNALS, is_primitive

__all__ = ["FORMAT", "apply_history", "apply_record", "architecture", "load_state_dict", "restore_architecture",
           "state_dict"]

#: Value of the ``"format"`` key of :func:`state_dict`'s output.
FORMAT = "lightning_prune.pruned/1"

_MISSING = object()


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer under every name it has (tied weights appear twice)."""
    table: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    table.update(model.named_buffers(remove_duplicate=False))
    return table


def _split_attribute(path: str) -> tuple[str, str]:
    """``"layer1.0.conv1.out_channels"`` -> ``("layer1.0.conv1", "out_channels")``."""
    module, _, attr = path.rpartition(".")
    return module, attr


class _Undo:
    """Remembers tensor data and attribute values so a failed change can be rolled back.

    Only references are kept: changes replace ``.data`` instead of writing into it.
    """

    def __init__(self) -> None:
        self._tensors: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        self._attrs: dict[tuple[int, str], tuple[nn.Module, str, Any]] = {}

    def tensor(self, t: torch.Tensor) -> None:
        self._tensors.setdefault(id(t), (t, t.data, t.grad))

    def attribute(self, module: nn.Module, attr: str) -> None:
        self._attrs.setdefault((id(module), attr), (module, attr, module.__dict__.get(attr, _MISSING)))

    def restore(self) -> None:
        with torch.no_grad():
            for t, data, grad in self._tensors.values():
                t.data = data
                t.grad = grad
        for module, attr, old in self._attrs.values():
            if old is _MISSING:
                module.__dict__.pop(attr, None)
            else:
                module.__dict__[attr] = old


# ---------------------------------------------------------------------- records
def _record_parts(record: Any, where: str) -> tuple[Mapping, Mapping]:
    if not isinstance(record, Mapping) or not set(record) <= {"tensors", "attributes"} or "tensors" not in record:
        raise ValueError(
            f"{where} is not a pruning record: expected a dict with 'tensors' and 'attributes' "
            f"as returned by group.prune(), got {type(record).__name__}"
            + (f" with keys {sorted(map(str, record))}" if isinstance(record, Mapping) else "")
        )
    tensors = record["tensors"]
    attributes = record.get("attributes") or {}
    if not isinstance(tensors, Mapping) or not isinstance(attributes, Mapping):
        raise ValueError(f"{where}: 'tensors' and 'attributes' must be dicts")
    return tensors, attributes


def _plan_record(record: Any, where: str, tensors: dict[str, torch.Tensor], modules: dict[str, nn.Module],
                 shapes: dict[int, list[int]]) -> tuple[list, list]:
    """Check ``record`` against the (simulated) current shapes and return what to do.

    ``shapes`` (keyed by tensor id, so tied names share one entry) is updated as if the
    record had been applied, so a history is validated record by record before anything
    is touched.
    """
    slices_by_name, attributes = _record_parts(record, where)
    mismatch = "the record does not match this model"
    slices: list[tuple[torch.Tensor, int, list[int]]] = []
    for name, items in slices_by_name.items():
        tensor = tensors.get(name)
        if tensor is None:
            raise ValueError(f"{where}: unknown tensor {name!r}; {mismatch}")
        shape = shapes.setdefault(id(tensor), list(tensor.shape))
        for item in items:
            if not isinstance(item, Sequence) or len(item) != 2:
                raise ValueError(f"{where}: slice {item!r} of {name!r} is not a (dim, kept_indices) pair")
            dim, keep = int(item[0]), [int(i) for i in item[1]]
            if not -len(shape) <= dim < len(shape):
                raise ValueError(f"{where}: dim {dim} is out of range for {name!r} of shape {tuple(shape)}; "
                                 f"{mismatch}")
            dim %= len(shape)
            bad = [i for i in keep if not 0 <= i < shape[dim]]
            if bad:
                raise ValueError(f"{where}: index {bad[0]} is out of range for dim {dim} of {name!r} "
                                 f"(size {shape[dim]}); {mismatch}")
            shape[dim] = len(keep)
            slices.append((tensor, dim, keep))
    attrs: list[tuple[nn.Module, str, Any]] = []
    for path, value in attributes.items():
        module_name, attr = _split_attribute(str(path))
        module = modules.get(module_name)
        if module is None:
            raise ValueError(f"{where}: attribute {path!r} belongs to missing module {module_name!r}; {mismatch}")
        if attr in module._parameters or attr in module._buffers or attr in module._modules:
            raise ValueError(f"{where}: attribute {path!r} names a parameter, buffer or submodule, "
                             f"not a plain attribute; {mismatch}")
        attrs.append((module, attr, value))
    return slices, attrs


def apply_history(model: nn.Module, history: Iterable[Mapping]) -> None:
    """Replay pruning records in order on a model of the original architecture.

    Typical use: rebuild a pruned model from ``DG.pruning_history`` saved next to its
    weights, then ``model.load_state_dict(weights)``. Every record is validated (with the
    shapes the earlier records leave) before the first tensor is touched; on any mismatch a
    ``ValueError`` names the record and tensor and the model is left unchanged.
    """
    records = list(history)
    tensors = _tensors(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    shapes: dict[int, list[int]] = {}
    plans = [_plan_record(rec, f"record {i}", tensors, modules, shapes) for i, rec in enumerate(records)]
    undo = _Undo()
    try:
        for slices, attrs in plans:
            for tensor, dim, keep in slices:
                undo.tensor(tensor)
                slice_tensor(tensor, dim, keep)
            for module, attr, value in attrs:
                undo.attribute(module, attr)
                setattr(module, attr, value)
    except Exception as err:
        undo.restore()
        raise ValueError(f"replaying the pruning history failed ({type(err).__name__}: {err}); "
                         f"the model is unchanged") from err


def apply_record(model: nn.Module, record: Mapping) -> None:
    """Replay one ``group.prune()`` record on ``model`` (see :func:`apply_history`)."""
    apply_history(model, [record])


# ------------------------------------------------------------------ state dicts
def _primitive_attributes(model: nn.Module) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for name, module in model.named_modules():
        for attr, value in module.__dict__.items():
            if attr not in MODULE_INTERNALS and is_primitive(value):
                attributes[f"{name}.{attr}" if name else attr] = value
    return attributes


def architecture(model: nn.Module) -> dict[str, Any]:
    """What a prune can change, without the weights: every tensor's shape, every primitive
    module attribute, and the values of non-persistent buffers (which no ``state_dict``
    restores). :func:`restore_architecture` puts a model back to it.
    """
    persistent = set(model.state_dict(keep_vars=True))
    return {
        "shapes": {name: list(t.shape) for name, t in _tensors(model).items()},
        "attributes": _primitive_attributes(model),
        "non_persistent_buffers": {
            name: b.detach().clone() for name, b in model.named_buffers(remove_duplicate=False)
            if name not in persistent
        },
    }


def restore_architecture(model: nn.Module, spec: Mapping[str, Any],
                         attributes: Iterable[str] | None = None) -> Callable[[], None]:
    """Give ``model`` the shapes and width attributes of :func:`architecture`'s ``spec``.

    Resized tensors get zero-filled storage (their values are meant to be loaded next);
    tensors whose shape already matches are left alone. Only the attributes named in
    ``attributes`` are reset (default: all those of ``spec``): a module's own bookkeeping
    (Lightning's, say) must not be rewound with its widths. Parameters stay the same
    objects. Returns a function that undoes the change.
    """
    tensors = _tensors(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    shapes = spec["shapes"]
    unknown = sorted(set(shapes) - set(tensors))
    if unknown:
        raise ValueError(f"the architecture names tensors this model lacks: {unknown[:5]}")
    wanted = spec["attributes"] if attributes is None else {
        p: spec["attributes"][p] for p in attributes if p in spec["attributes"]}
    undo = _Undo()
    try:
        with torch.no_grad():
            for name, shape in shapes.items():
                t = tensors[name]
                if list(t.shape) != list(shape) and not isinstance(t, nn.parameter.UninitializedTensorMixin):
                    undo.tensor(t)
                    t.data = torch.zeros(shape, dtype=t.dtype, device=t.device)
                    if t.grad is not None:
                        t.grad = None
            for name, value in spec.get("non_persistent_buffers", {}).items():
                t = tensors[name]
                undo.tensor(t)
                t.data = value.to(device=t.device, dtype=t.dtype).clone()
        for path, value in wanted.items():
            module_name, attr = _split_attribute(str(path))
            module = modules.get(module_name)
            if module is not None and module.__dict__.get(attr, _MISSING) != value:
                undo.attribute(module, attr)
                setattr(module, attr, value)
    except Exception:
        undo.restore()
        raise
    return undo.restore


def state_dict(model: nn.Module) -> dict[str, Any]:
    """A "pruned state dict": everything needed to rebuild ``model`` from a fresh instance.

    Keys: ``"format"`` (:data:`FORMAT`), ``"state_dict"`` (``model.state_dict()``),
    ``"shapes"`` (every parameter and buffer), ``"attributes"`` (every primitive attribute of
    every module: widths such as ``out_channels`` or ViT's ``hidden_dim`` that forward
    passes depend on) and ``"non_persistent_buffers"`` (buffers that ``model.state_dict()``
    leaves out but whose size may have changed). Only tensors and primitives, so it loads
    with ``torch.load(weights_only=True)``. Restore with :func:`load_state_dict`.
    """
    sd = model.state_dict()
    tensors = _tensors(model)
    persistent = set(sd)
    return {
        "format": FORMAT,
        "state_dict": sd,
        "shapes": {name: list(t.shape) for name, t in tensors.items()},
        "attributes": _primitive_attributes(model),
        "non_persistent_buffers": {
            name: b.detach() for name, b in model.named_buffers(remove_duplicate=False) if name not in persistent
        },
    }


def _is_tensor_dict(sd: Mapping) -> bool:
    values = [v for k, v in sd.items() if not str(k).endswith("_extra_state")]
    return bool(values) and all(isinstance(v, torch.Tensor) for v in values)


def _parse(sd: Any) -> tuple[Mapping, dict[str, list[int]], Mapping | None, Mapping]:
    """``(weights, shapes, attributes or None, non-persistent buffers)`` from either format."""
    if not isinstance(sd, Mapping):
        raise ValueError(f"load_state_dict expects a dict from lightning_prune's state_dict() or a plain "
                         f"model.state_dict(), got {type(sd).__name__}")
    if "format" in sd:
        if sd["format"] != FORMAT:
            raise ValueError(f"unsupported pruned state dict format {sd['format']!r}; expected {FORMAT!r}")
        missing = [k for k in ("state_dict", "shapes") if k not in sd]
        if missing:
            raise ValueError(f"pruned state dict of format {FORMAT!r} lacks {missing}")
        shapes = {str(k): [int(s) for s in v] for k, v in sd["shapes"].items()}
        return sd["state_dict"], shapes, sd.get("attributes") or {}, sd.get("non_persistent_buffers") or {}
    if not _is_tensor_dict(sd):
        raise ValueError(
            f"not a pruned state dict: no 'format' key (expected {FORMAT!r}), and not a plain "
            f"model.state_dict() either (keys: {sorted(map(str, sd))[:5]})"
        )
    warnings.warn(
        "load_state_dict got a plain model.state_dict(): tensor shapes are inferred from it, but width "
        "attributes (out_channels, hidden_dim, ...) could not be restored. Save with "
        "lightning_prune.engine.state_dict(model) to keep them.",
        stacklevel=3,
    )
    shapes = {k: list(v.shape) for k, v in sd.items()
              if isinstance(v, torch.Tensor) and not str(k).endswith("_extra_state")}
    return sd, shapes, None, {}


def load_state_dict(model: nn.Module, state_dict: Mapping) -> nn.Module:
    """Resize a fresh (unpruned) ``model`` to a saved pruned model and load its weights.

    ``state_dict`` is the output of :func:`state_dict` (possibly after ``torch.save`` and
    ``torch.load(weights_only=True)``) or a plain ``model.state_dict()`` of the pruned model;
    the latter restores shapes but not width attributes, and warns about it. Parameters stay
    the same objects. On any mismatch a ``ValueError`` is raised and ``model`` is unchanged.
    Returns ``model``.
    """
    weights, shapes, attributes, extra = _parse(state_dict)
    tensors = _tensors(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    mismatch = "the pruned state dict does not match this model"
    unknown = sorted((set(shapes) | set(extra)) - set(tensors))
    if unknown:
        raise ValueError(f"unknown tensors {unknown[:5]}{' ...' if len(unknown) > 5 else ''}; {mismatch}")
    for name, t in weights.items():
        if isinstance(t, torch.Tensor) and name in shapes and list(t.shape) != shapes[name]:
            raise ValueError(f"{name!r}: weights of shape {tuple(t.shape)} but recorded shape "
                             f"{tuple(shapes[name])}; the pruned state dict is corrupt")
    attrs: list[tuple[nn.Module, str, Any]] = []
    for path, value in (attributes or {}).items():
        module_name, attr = _split_attribute(str(path))
        module = modules.get(module_name)
        if module is None:
            raise ValueError(f"attribute {path!r} belongs to missing module {module_name!r}; {mismatch}")
        if module.__dict__.get(attr, _MISSING) != value:
            attrs.append((module, attr, value))
    undo = _Undo()
    try:
        with torch.no_grad():
            # Every tensor that is resized or loaded gets fresh storage; load_state_dict()
            # copies in place, so this keeps the old storage intact for a rollback.
            for name, t in tensors.items():
                if isinstance(t, nn.parameter.UninitializedTensorMixin):
                    continue
                shape = shapes.get(name, list(t.shape))
                if shape == list(t.shape) and name not in weights:
                    continue
                undo.tensor(t)
                t.data = torch.empty(shape, dtype=t.dtype, device=t.device)
                if t.grad is not None and list(t.grad.shape) != shape:
                    t.grad = None
            for name, value in extra.items():
                t = tensors[name]
                undo.tensor(t)
                t.data = value.to(device=t.device, dtype=t.dtype).clone()
        for module, attr, value in attrs:
            undo.attribute(module, attr)
            setattr(module, attr, value)
        model.load_state_dict(weights)
    except Exception as err:
        undo.restore()
        raise ValueError(f"loading the pruned state dict failed ({type(err).__name__}: {err}); "
                         f"the model is unchanged") from err
    return model
