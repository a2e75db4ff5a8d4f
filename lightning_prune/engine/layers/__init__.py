# ruff: noqa: F405 - names listed in __all__ come from the star import of .functions
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

from ..errors import PruningError
from .activation import PReLUPruner
from .attention import MultiheadAttentionPruner
from .base import LayerPruner, LayerPrunerProtocol, keep_indices, normalize_idxs, slice_tensor
from .conv import ConvPruner, ConvTransposePruner, DepthwiseConvPruner, is_depthwise_conv
from .embedding import EmbeddingPruner
from .functions import *  # noqa: F403 - the prune_* functions and singletons
from .functions import HAS_RMSNORM
from .linear import LinearPruner
from .norm import (
    BatchNormPruner,
    CoupledPruner,
    FrozenBatchNormPruner,
    GroupNormPruner,
    InstanceNormPruner,
    LayerNormPruner,
    RMSNormPruner,
)
from .parameter import ParameterPruner
from .registry import DEFAULT_PRUNERS, get_layer_pruner, normalize_customized_pruners
from .rnn import LSTMPruner, RNNPruner

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
    "LayerPrunerProtocol",
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
