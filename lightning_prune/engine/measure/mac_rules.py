"""What each layer and each ATen op costs, in multiply-accumulate operations (MACs).

The rules read only shapes (and a layer's weight shape), so they give the same figures
on the meta device as on real tensors; :mod:`.op_counter` runs the forward that feeds them.

Counting convention (the ptflops convention that Torch-Pruning's published tables
use, so ResNet/MobileNet/DenseNet figures agree exactly), per call of a module,
with ``numel`` the number of elements of the whole batch:

===============================================  ==============================================
module                                           MACs
===============================================  ==============================================
``Conv1d/2d/3d``                                 ``out.numel * (C_in / groups) * prod(kernel)``
                                                 ``+ out.numel`` if it has a bias
``ConvTranspose1d/2d/3d``                        ``in.numel * (C_out / groups) * prod(kernel)``
                                                 ``+ out.numel`` if it has a bias
``Linear``                                       ``out.numel * in_features (+ out.numel bias)``
``Bilinear``                                     ``out.numel * in1 * in2 (+ out.numel bias)``
``BatchNorm/GroupNorm/InstanceNorm/LayerNorm/``  ``in.numel``, twice that with an affine
``RMSNorm``                                      weight
``ReLU/ReLU6/LeakyReLU/PReLU/ELU/GELU``          ``in.numel``
``Max/Avg/AdaptiveMax/AdaptiveAvg pooling``      ``in.numel``
``Upsample`` (and its subclasses)                ``out.numel``
``RNN/LSTM/GRU`` and their cells                 ``tokens * (weights + biases)`` of the module
other modules (Dropout, Identity, SiLU, ...)      0 of their own
===============================================  ==============================================

Rules are found through the class hierarchy, so subclasses (for example a quantised
``Linear``) are counted like their base class.

Functional calls are counted too: matrix products (``torch.matmul``, ``@``,
``bmm``, ``einsum``, ``F.linear``), ``F.conv*`` / ``F.conv_transpose*`` and
``F.scaled_dot_product_attention`` that run *outside* any module with a rule above
are counted at the ATen level (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``mv``,
``convolution`` and the fused attention kernels), as the products only (bias
additions are not counted there). This is what makes attention visible: the
``Q @ K^T`` and ``attn @ V`` products of ``nn.MultiheadAttention`` and of
hand-written attention blocks shrink when heads are pruned, so the count must see
them. A call inside a module that has a rule (``F.linear`` inside ``nn.Linear``) is
never counted twice. Functional element-wise operations (``F.relu``, ``+``,
``F.interpolate``) are not counted, like ptflops.

Where the figures differ from Torch-Pruning's ``count_ops_and_params`` (CNNs built
from the layers above, e.g. torchvision ResNet/MobileNet/DenseNet/EfficientNet,
agree exactly):

* figures are for the whole batch given; Torch-Pruning divides by the size of the
  first dimension of the first input. With a batch of one they agree;
* ``Linear`` adds one MAC per output element for the bias (like convolutions);
  Torch-Pruning adds ``out_features`` once per call, whatever the number of tokens;
* ``ConvTranspose`` counts the products it performs (one per input element and
  weight of its group, as fvcore does); Torch-Pruning applies the convolution
  formula to the output, which over-counts strided transposed convolutions;
* ``nn.MultiheadAttention`` is counted through its projection and attention
  products; Torch-Pruning's closed formula also counts the projection biases,
  query scaling and softmax (about 0.1% of a ViT);
* ``RNN/LSTM/GRU`` count their weight products per token; Torch-Pruning's formula
  gives a figure many times larger;
* functional matmuls/convolutions/attention are counted (Torch-Pruning misses the
  attention of Swin and MaxViT entirely), and so are subclasses of counted
  modules, ``Upsample`` subclasses, ``RMSNorm`` and ``Bilinear``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

__all__ = ["AtenRule", "ModuleRule", "aten_rule_for", "numel", "rule_for"]

ModuleRule = Callable[[nn.Module, Any, Any], int]
AtenRule = Callable[[tuple, Any], int]


# --------------------------------------------------------------------------- module rules


def numel(value: Any) -> int:
    """Element count of a tensor (or a packed sequence); 0 for anything else."""
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, PackedSequence):
        return value.data.numel()
    return 0


def _bias_macs(module: nn.Module, out: Any) -> int:
    """One addition per output element when the layer has a bias tensor."""
    return numel(out) if isinstance(getattr(module, "bias", None), torch.Tensor) else 0


def _conv_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Each output element reads ``(C_in / groups) * prod(kernel)`` weights.

    The weight shape ``(C_out, C_in / groups, *kernel)`` is used rather than the
    module's attributes, so a pruned layer whose attributes lag behind is still right.
    """
    return numel(out) * math.prod(module.weight.shape[1:]) + _bias_macs(module, out)


def _conv_transpose_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Each *input* element is multiplied by ``(C_out / groups) * prod(kernel)`` weights."""
    return numel(inp) * math.prod(module.weight.shape[1:]) + _bias_macs(module, out)


def _linear_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Each output element is a dot product over ``in_features``."""
    return numel(out) * module.weight.shape[1] + _bias_macs(module, out)


def _bilinear_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Each output element is ``x1^T W_k x2``: ``in1 * in2`` products."""
    return numel(out) * math.prod(module.weight.shape[1:]) + _bias_macs(module, out)


def _norm_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Normalising costs one op per element, the affine scale/shift one more."""
    affine = isinstance(getattr(module, "weight", None), torch.Tensor)
    return numel(inp) * (2 if affine else 1)


def _input_elementwise_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Activations and pooling: one op per input element (ptflops convention)."""
    return numel(inp)


def _output_elementwise_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Upsampling: one op per output element."""
    return numel(out)


def _rnn_macs(module: nn.Module, inp: Any, out: Any) -> int:
    """Every weight and bias element of every layer/direction is used once per token."""
    tokens = numel(inp) // max(int(module.input_size), 1)
    return tokens * sum(p.numel() for p in module.parameters(recurse=False))


def _build_module_rules() -> dict[type, ModuleRule]:
    """Map layer classes to their rule; looked up along the MRO of a module's class."""
    rules: dict[type, ModuleRule] = {}
    groups: list[tuple[str, ModuleRule]] = [
        ("Conv1d Conv2d Conv3d", _conv_macs),
        ("ConvTranspose1d ConvTranspose2d ConvTranspose3d", _conv_transpose_macs),
        ("Linear", _linear_macs),
        ("Bilinear", _bilinear_macs),
        (
            "BatchNorm1d BatchNorm2d BatchNorm3d SyncBatchNorm GroupNorm "
            "InstanceNorm1d InstanceNorm2d InstanceNorm3d LayerNorm RMSNorm",
            _norm_macs,
        ),
        ("ReLU ReLU6 LeakyReLU PReLU ELU GELU", _input_elementwise_macs),
        (
            "MaxPool1d MaxPool2d MaxPool3d AvgPool1d AvgPool2d AvgPool3d "
            "AdaptiveMaxPool1d AdaptiveMaxPool2d AdaptiveMaxPool3d "
            "AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d",
            _input_elementwise_macs,
        ),
        ("Upsample", _output_elementwise_macs),
        ("RNN LSTM GRU RNNCell LSTMCell GRUCell", _rnn_macs),
    ]
    for names, rule in groups:
        for name in names.split():
            cls = getattr(nn, name, None)  # RMSNorm only exists on recent torch
            if cls is not None:
                rules[cls] = rule
    return rules


_MODULE_RULES = _build_module_rules()


def rule_for(module: nn.Module) -> ModuleRule | None:
    """The rule of the closest class in the module's MRO that has one."""
    for cls in type(module).__mro__:
        rule = _MODULE_RULES.get(cls)
        if rule is not None:
            return rule
    return None


# --------------------------------------------------------------------------- ATen rules


def _matmul_rule(operand: int) -> AtenRule:
    """``out.numel * K`` where K is the contracted (last) dim of ``args[operand]``."""

    def rule(args: tuple, out: Any) -> int:
        return numel(out) * args[operand].shape[-1]

    return rule


def _convolution_rule(args: tuple, out: Any) -> int:
    """``aten.convolution(input, weight, bias, stride, padding, dilation, transposed, ...)``."""
    inp, weight, transposed = args[0], args[1], bool(args[6])
    return (numel(inp) if transposed else numel(out)) * math.prod(weight.shape[1:])


def _attention_rule(args: tuple, out: Any) -> int:
    """Fused attention ``(..., L, E)`` layout: ``Q @ K^T`` plus ``attn @ V``."""
    query, key, value = args[0], args[1], args[2]
    return math.prod(query.shape[:-1]) * key.shape[-2] * (query.shape[-1] + value.shape[-1])


def _build_aten_rules() -> dict[Any, AtenRule]:
    """Keyed by ``OpOverloadPacket``; ops missing from this torch build are skipped."""
    table: dict[str, AtenRule] = {
        "mm": _matmul_rule(0),
        "bmm": _matmul_rule(0),
        "mv": _matmul_rule(0),
        "dot": _matmul_rule(0),
        "vdot": _matmul_rule(0),
        "addmm": _matmul_rule(1),
        "_addmm_activation": _matmul_rule(1),
        "baddbmm": _matmul_rule(1),
        "addmv": _matmul_rule(1),
        "convolution": _convolution_rule,
    }
    for name in (
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
    ):
        table[name] = _attention_rule
    rules: dict[Any, AtenRule] = {}
    for name, rule in table.items():
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None:
            rules[packet] = rule
    return rules


_ATEN_RULES = _build_aten_rules()


def aten_rule_for(func: Any) -> AtenRule | None:
    """The rule of an ATen op (any overload of a counted packet), or ``None``."""
    return _ATEN_RULES.get(getattr(func, "overloadpacket", None))
