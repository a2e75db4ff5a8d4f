"""Pruners for ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` (features are the last dim).

``prune_out_channels`` removes hidden units from every layer and direction: unit ``i``
is row ``g*H + i`` of each gate ``g`` in ``weight_ih``/``weight_hh``/biases, column ``i``
of ``weight_hh``, and an input column of the next layer (columns ``i`` and ``H+i`` when
bidirectional, whose input is ``[forward H | backward H]``). The layer's output
therefore loses features ``i`` (and ``H+i`` when bidirectional); idxs are hidden-unit
indices in ``[0, hidden_size)``. ``prune_in_channels`` removes input features, which only
layer 0 sees. Projected LSTMs (``proj_size > 0``) are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .base import LayerPruner, PruningError, keep_indices, normalize_idxs, slice_tensor
from .conv import CallLabel

__all__ = ["RNNPruner", "LSTMPruner"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


class RNNPruner(LayerPruner):
    TARGET_TYPES = (nn.LSTM, nn.GRU, nn.RNN)
    NAME = "rnn"
    out_channel_dim = -1
    in_channel_dim = -1

    def _what(self, layer: nn.Module, direction: str) -> CallLabel:
        return CallLabel(self.NAME, direction, layer)

    def _check(self, layer: nn.Module, what: object) -> None:
        if getattr(layer, "proj_size", 0) > 0:
            raise PruningError(
                f"{what}: LSTMs with proj_size={layer.proj_size} are not supported; exclude this layer "
                f"with ignored_layers"
            )
        if layer.mode not in _GATES:
            raise PruningError(
                f"{what}: unknown RNN mode {layer.mode!r}; exclude this layer with ignored_layers"
            )

    @staticmethod
    def _suffixes(layer: nn.Module) -> list[str]:
        return ["", "_reverse"] if layer.bidirectional else [""]

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        what = self._what(layer, "out")
        self._check(layer, what)
        hidden = layer.hidden_size
        remove = normalize_idxs(idxs, hidden, what)
        if not remove:
            return layer
        keep = keep_indices(hidden, remove)
        rows = [g * hidden + i for g in range(_GATES[layer.mode]) for i in keep]
        next_in = keep + [hidden + i for i in keep] if layer.bidirectional else keep
        for k in range(layer.num_layers):
            for sfx in self._suffixes(layer):
                slice_tensor(getattr(layer, f"weight_ih_l{k}{sfx}"), 0, rows)
                if k > 0:
                    slice_tensor(getattr(layer, f"weight_ih_l{k}{sfx}"), 1, next_in)
                slice_tensor(getattr(layer, f"weight_hh_l{k}{sfx}"), 0, rows)
                slice_tensor(getattr(layer, f"weight_hh_l{k}{sfx}"), 1, keep)
                slice_tensor(getattr(layer, f"bias_ih_l{k}{sfx}", None), 0, rows)
                slice_tensor(getattr(layer, f"bias_hh_l{k}{sfx}", None), 0, rows)
        layer.hidden_size = len(keep)
        _refresh(layer)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        what = self._what(layer, "in")
        self._check(layer, what)
        remove = normalize_idxs(idxs, layer.input_size, what)
        if not remove:
            return layer
        keep = keep_indices(layer.input_size, remove)
        for sfx in self._suffixes(layer):
            slice_tensor(getattr(layer, f"weight_ih_l0{sfx}"), 1, keep)
        layer.input_size = len(keep)
        _refresh(layer)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.hidden_size

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.input_size


class LSTMPruner(RNNPruner):
    TARGET_TYPES = (nn.LSTM,)
    NAME = "lstm"


def _refresh(layer: nn.Module) -> None:
    # cuDNN packs the weights into one buffer; re-pack after slicing. The packing writes
    # into the existing parameters in place, so parameter objects stay the same.
    flatten = getattr(layer, "flatten_parameters", None)
    if callable(flatten):
        flatten()
