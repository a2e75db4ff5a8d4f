"""Build a benchmark model from its name: built-in, torchvision, timm or a class path."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from .config import ModelSpec

__all__ = ["BUILTIN_MODELS", "build_model"]


def _small_resnet(input_shape: list[int], num_classes: int, **kwargs: Any) -> nn.Module:
    from ..models import SmallResNet

    kwargs.setdefault("num_classes", num_classes)
    kwargs.setdefault("in_channels", input_shape[1])
    return SmallResNet(**kwargs)


#: Built-in models: ``name -> factory(input_shape, num_classes, **kwargs)``.
BUILTIN_MODELS: dict[str, Callable[..., nn.Module]] = {"small_resnet": _small_resnet}


def build_model(spec: ModelSpec, input_shape: list[int], num_classes: int) -> nn.Module:
    """Instantiate ``spec`` with random init (nothing is downloaded)."""
    name, kwargs = spec.name, dict(spec.kwargs)
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name](input_shape, num_classes, **kwargs)
    if name.startswith("timm:"):
        try:
            import timm
        except ImportError as err:
            raise ImportError(f"model {name!r} needs timm: pip install timm (or the bench extra)") from err
        kwargs.setdefault("pretrained", False)
        return timm.create_model(name.removeprefix("timm:"), **kwargs)
    import torchvision

    tv_name = name.removeprefix("torchvision:")
    if tv_name in torchvision.models.list_models():
        kwargs.setdefault("weights", None)
        return torchvision.models.get_model(tv_name, **kwargs)
    if "." in name and not name.startswith("torchvision:"):
        module_name, _, attr = name.rpartition(".")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"model {name!r}: cannot import {attr!r} from {module_name!r} ({err})") from err
        model = factory(**kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model {name!r} built a {type(model).__name__}, not an nn.Module")
        return model
    raise ValueError(f"unknown model {name!r}: use one of {sorted(BUILTIN_MODELS)}, a torchvision name "
                     f"(torchvision.models.list_models()), 'timm:<name>' or a class path like 'pkg.module.Class'")
