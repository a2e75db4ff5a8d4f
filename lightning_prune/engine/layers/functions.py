"""One pruner instance per built-in layer type, and Torch-Pruning's ``prune_X_out/in_channels`` functions.

Each function is a bound method of its singleton (``fn.__self__`` is the pruner), so the
dependency graph can go from a function a user passes back to the pruner that owns it.
All take ``(layer, idxs)`` with ``idxs`` the channels to **remove** and return the
layer, modified in place.
"""

from __future__ import annotations

from torch import nn

from .activation import PReLUPruner
from .attention import MultiheadAttentionPruner
from .conv import ConvPruner, ConvTransposePruner, DepthwiseConvPruner
from .embedding import EmbeddingPruner
from .linear import LinearPruner
from .norm import (
    BatchNormPruner,
    FrozenBatchNormPruner,
    GroupNormPruner,
    InstanceNormPruner,
    LayerNormPruner,
    RMSNormPruner,
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

__all__ = sorted(n for n in list(globals()) if n.startswith("prune_") or n.endswith("_pruner")) + ["HAS_RMSNORM"]
