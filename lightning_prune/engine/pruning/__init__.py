"""Layer pruners, the low-level ``prune_*_channels`` functions and the pruner registry.

Each ``prune_X_out_channels`` / ``prune_X_in_channels`` is a bound method of a singleton
pruner (``fn.__self__``), so the dependency graph can go from a function back to the
pruner that owns it. All take ``(layer, idxs)`` with ``idxs`` the channels to **remove**
and return the (same, modified in place) layer.

:func:`get_layer_pruner` finds the pruner for a module: user-supplied
``customized_pruners`` first, then :data:`DEFAULT_PRUNERS`, each matched by exact type
and then along the class's MRO (so subclasses of ``nn.Conv2d`` etc. are handled).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Mapping

from torch import nn

from .activation import PReLUPruner
from .attention import MultiheadAttentionPruner
from .base import LayerPruner, PruningError, keep_indices, normalize_idxs, slice_tensor
from .conv import ConvPruner, ConvTransposePruner, DepthwiseConvPruner, is_depthwise_conv
from .embedding import EmbeddingPruner
from .linear import LinearPruner
from .norm import (
    BatchNormPruner,
    CoupledPruner,
    FrozenBatchNormPruner,
    GroupNormPruner,
    InstanceNormPruner,
    LayerNormPruner,
    RMSNormPruner,
    frozen_batchnorm_type,
)
from .parameter import ParameterPruner
from .rnn import LSTMPruner, RNNPruner

# --- singleton pruners ---------------------------------------------------------------
conv_pruner = ConvPruner()
conv_transpose_pruner = ConvTransposePruner()
depthwise_conv_pruner = DepthwiseConvPruner()
linear_pruner = LinearPruner()
batchnorm_pruner = BatchNormPruner()
instancenorm_pruner = InstanceNormPruner()
frozen_batchnorm_pruner = FrozenBatchNormPruner()
layernorm_pruner = LayerNormPruner()
rmsnorm_pruner = RMSNormPruner()
groupnorm_pruner = GroupNormPruner()
prelu_pruner = PReLUPruner()
embedding_pruner = EmbeddingPruner()
multihead_attention_pruner = MultiheadAttentionPruner()
lstm_pruner = LSTMPruner()
rnn_pruner = RNNPruner()
parameter_pruner = ParameterPruner(dim=0, in_dim=1)

# --- public low-level functions -------------------------------------------------------
prune_conv_out_channels = conv_pruner.prune_out_channels
prune_conv_in_channels = conv_pruner.prune_in_channels
prune_conv_transpose_out_channels = conv_transpose_pruner.prune_out_channels
prune_conv_transpose_in_channels = conv_transpose_pruner.prune_in_channels
prune_depthwise_conv_out_channels = depthwise_conv_pruner.prune_out_channels
prune_depthwise_conv_in_channels = depthwise_conv_pruner.prune_in_channels
prune_linear_out_channels = linear_pruner.prune_out_channels
prune_linear_in_channels = linear_pruner.prune_in_channels
prune_batchnorm_out_channels = batchnorm_pruner.prune_out_channels
prune_batchnorm_in_channels = batchnorm_pruner.prune_in_channels
prune_instancenorm_out_channels = instancenorm_pruner.prune_out_channels
prune_instancenorm_in_channels = instancenorm_pruner.prune_in_channels
prune_frozen_batchnorm_out_channels = frozen_batchnorm_pruner.prune_out_channels
prune_frozen_batchnorm_in_channels = frozen_batchnorm_pruner.prune_in_channels
prune_layernorm_out_channels = layernorm_pruner.prune_out_channels
prune_layernorm_in_channels = layernorm_pruner.prune_in_channels
prune_groupnorm_out_channels = groupnorm_pruner.prune_out_channels
prune_groupnorm_in_channels = groupnorm_pruner.prune_in_channels
prune_prelu_out_channels = prelu_pruner.prune_out_channels
prune_prelu_in_channels = prelu_pruner.prune_in_channels
prune_embedding_out_channels = embedding_pruner.prune_out_channels
prune_embedding_in_channels = embedding_pruner.prune_in_channels
prune_multihead_attention_out_channels = multihead_attention_pruner.prune_out_channels
prune_multihead_attention_in_channels = multihead_attention_pruner.prune_in_channels
prune_lstm_out_channels = lstm_pruner.prune_out_channels
prune_lstm_in_channels = lstm_pruner.prune_in_channels
prune_rnn_out_channels = rnn_pruner.prune_out_channels
prune_rnn_in_channels = rnn_pruner.prune_in_channels
prune_parameter_out_channels = parameter_pruner.prune_out_channels
prune_parameter_in_channels = parameter_pruner.prune_in_channels

HAS_RMSNORM = hasattr(nn, "RMSNorm")
if HAS_RMSNORM:
    prune_rmsnorm_out_channels = rmsnorm_pruner.prune_out_channels
    prune_rmsnorm_in_channels = rmsnorm_pruner.prune_in_channels


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


def _register_frozen_batchnorm() -> None:
    """Add ``FrozenBatchNorm2d`` to :data:`DEFAULT_PRUNERS` if torchvision imports.

    Importing torchvision costs over a second and may fail on a broken install, so it
    is not imported for the engine's sake: this runs at import only if torchvision is
    already loaded, and otherwise on the first look-up of a torchvision layer.
    """
    frozen_bn = frozen_batchnorm_type()
    if frozen_bn is not None:
        DEFAULT_PRUNERS.setdefault(frozen_bn, frozen_batchnorm_pruner)


if "torchvision" in sys.modules:
    _register_frozen_batchnorm()

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
        _register_frozen_batchnorm()
    custom = normalize_customized_pruners(customized_pruners)
    found = _lookup(cls, custom)
    if found is not None:
        return found
    return _lookup(cls, DEFAULT_PRUNERS)


__all__ = [
    "DEFAULT_PRUNERS",
    "HAS_RMSNORM",
    "BatchNormPruner",
    "ConvPruner",
    "ConvTransposePruner",
    "CoupledPruner",
    "DepthwiseConvPruner",
    "EmbeddingPruner",
    "FrozenBatchNormPruner",
    "GroupNormPruner",
    "InstanceNormPruner",
    "LSTMPruner",
    "LayerNormPruner",
    "LayerPruner",
    "LinearPruner",
    "MultiheadAttentionPruner",
    "PReLUPruner",
    "ParameterPruner",
    "PruningError",
    "RMSNormPruner",
    "RNNPruner",
    "get_layer_pruner",
    "is_depthwise_conv",
    "keep_indices",
    "normalize_customized_pruners",
    "normalize_idxs",
    "slice_tensor",
    "prune_conv_out_channels",
    "prune_conv_in_channels",
    "prune_conv_transpose_out_channels",
    "prune_conv_transpose_in_channels",
    "prune_depthwise_conv_out_channels",
    "prune_depthwise_conv_in_channels",
    "prune_linear_out_channels",
    "prune_linear_in_channels",
    "prune_batchnorm_out_channels",
    "prune_batchnorm_in_channels",
    "prune_instancenorm_out_channels",
    "prune_instancenorm_in_channels",
    "prune_frozen_batchnorm_out_channels",
    "prune_frozen_batchnorm_in_channels",
    "prune_layernorm_out_channels",
    "prune_layernorm_in_channels",
    "prune_groupnorm_out_channels",
    "prune_groupnorm_in_channels",
    "prune_prelu_out_channels",
    "prune_prelu_in_channels",
    "prune_embedding_out_channels",
    "prune_embedding_in_channels",
    "prune_multihead_attention_out_channels",
    "prune_multihead_attention_in_channels",
    "prune_lstm_out_channels",
    "prune_lstm_in_channels",
    "prune_rnn_out_channels",
    "prune_rnn_in_channels",
    "prune_parameter_out_channels",
    "prune_parameter_in_channels",
]
if HAS_RMSNORM:
    __all__ += ["prune_rmsnorm_out_channels", "prune_rmsnorm_in_channels"]
