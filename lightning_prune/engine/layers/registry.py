"""Which pruner handles which layer: the built-in table and user-supplied ``customized_pruners``.

:func:`get_layer_pruner` looks in ``customized_pruners`` first, then in
:data:`DEFAULT_PRUNERS`, each matched along the class's MRO (so subclasses of
``nn.Conv2d`` and the like are handled). A pruner needs only the methods of
:class:`~.base.LayerPrunerProtocol`; it need not subclass :class:`~.base.LayerPruner`.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Mapping

from torch import nn

from .base import LayerPruner
from .functions import (
    batchnorm_pruner,
    conv_pruner,
    conv_transpose_pruner,
    embedding_pruner,
    frozen_batchnorm_pruner,
    groupnorm_pruner,
    instancenorm_pruner,
    layernorm_pruner,
    linear_pruner,
    lstm_pruner,
    multihead_attention_pruner,
    parameter_pruner,
    prelu_pruner,
    rmsnorm_pruner,
    rnn_pruner,
)
from .norm import frozen_batchnorm_type


def _build_default_pruners() -> dict[type, LayerPruner]:
    pruners: dict[type, LayerPruner] = {}
    for pruner in (
        conv_pruner,
        conv_transpose_pruner,
        linear_pruner,
        batchnorm_pruner,
        instancenorm_pruner,
        layernorm_pruner,
        rmsnorm_pruner,
        groupnorm_pruner,
        prelu_pruner,
        embedding_pruner,
        multihead_attention_pruner,
        rnn_pruner,
        parameter_pruner,
    ):
        for cls in pruner.TARGET_TYPES:
            pruners[cls] = pruner
    pruners[nn.LSTM] = lstm_pruner  # same logic; its own name shows up in error messages
    return pruners


#: Layer class -> pruner instance for every layer type supported out of the box.
#: torchvision's ``FrozenBatchNorm2d`` is added once torchvision is imported (see below).
DEFAULT_PRUNERS: dict[type, LayerPruner] = _build_default_pruners()


def register_frozen_batchnorm() -> None:
    """Add ``FrozenBatchNorm2d`` to :data:`DEFAULT_PRUNERS` if torchvision imports.

    Importing torchvision costs over a second and may fail on a broken install, so it
    is not imported for the engine's sake: this runs at import only if torchvision is
    already loaded, and otherwise on the first look-up of a torchvision layer.
    """
    frozen_bn = frozen_batchnorm_type()
    if frozen_bn is not None:
        DEFAULT_PRUNERS.setdefault(frozen_bn, frozen_batchnorm_pruner)


if "torchvision" in sys.modules:
    register_frozen_batchnorm()

_INSTANCES: weakref.WeakKeyDictionary[type, object] = weakref.WeakKeyDictionary()


def _instance_of(pruner_cls: type) -> object:
    """One instance per pruner class, so repeated look-ups return the same pruner."""
    if pruner_cls not in _INSTANCES:
        _INSTANCES[pruner_cls] = pruner_cls()
    return _INSTANCES[pruner_cls]


_PROTOCOL = ("prune_out_channels", "prune_in_channels", "get_out_channels", "get_in_channels")


def normalize_customized_pruners(customized_pruners: Mapping[type, object] | None) -> dict[type, object]:
    """Validate ``{LayerClass: pruner}``; pruner classes are instantiated.

    A pruner needs only the four protocol methods (it need not subclass
    :class:`LayerPruner`). Mistakes raise ``TypeError`` naming the offending key.
    """
    if not customized_pruners:
        return {}
    if not isinstance(customized_pruners, Mapping):
        raise TypeError(
            f"customized_pruners must be a dict {{LayerClass: pruner}}, got {type(customized_pruners).__name__}"
        )
    out: dict[type, object] = {}
    for key, pruner in customized_pruners.items():
        if not isinstance(key, type):
            raise TypeError(
                f"customized_pruners keys must be layer classes, got instance of {type(key).__name__}; "
                f"use {{type(x): pruner}}"
            )
        if isinstance(pruner, type):
            pruner = _instance_of(pruner)
        missing = [m for m in _PROTOCOL if not callable(getattr(pruner, m, None))]
        if missing:
            raise TypeError(
                f"customized_pruners[{key.__name__}]: {type(pruner).__name__} lacks {', '.join(missing)}; "
                f"a pruner needs {', '.join(_PROTOCOL)}"
            )
        out[key] = pruner
    return out


def _lookup(cls: type, table: Mapping[type, object]) -> object | None:
    for base in cls.__mro__:
        if base in table:
            return table[base]
    return None


def get_layer_pruner(
    module: object, customized_pruners: Mapping[type, object] | None = None
) -> object | None:
    """The pruner for ``module``, or ``None`` if no pruner handles its type.

    Customized pruners win over the defaults, so users can override a built-in layer;
    within each table the most specific class along the MRO wins.
    """
    cls = type(module)
    if cls.__module__.startswith("torchvision."):
        register_frozen_batchnorm()
    custom = normalize_customized_pruners(customized_pruners)
    found = _lookup(cls, custom)
    if found is not None:
        return found
    return _lookup(cls, DEFAULT_PRUNERS)
