"""Per-layer width timing: which channel counts a layer runs fast at, found by measurement.

Kernels are not linear in the channel count. A vectorized convolution may run 60 output
channels as slowly as 64, or 64 much faster than 63, and which widths are friendly
depends on the device, the library, the batch size and the thread count. So the latency
budget does not guess multiples of 8: it builds each layer standalone at a few candidate
widths around the planned one, times it on the configured device, and keeps the width
that runs best for its size (see :func:`choose_width`).

:class:`LayerSpec` is everything a layer's speed depends on, hashable, so that the many
identical layers of a network (the blocks of a ResNet stage, the layers of a ViT) are
timed once: :class:`WidthTable` is the cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch
from torch import nn

from .latency import measure_latency

__all__ = ["LayerSpec", "WidthTable", "candidate_widths", "choose_width", "layer_spec", "time_layer_ms"]

#: Channel multiples tried around a planned width; the measurement decides which helps.
MULTIPLES = (8, 16, 32)


@dataclass(frozen=True)
class LayerSpec:
    """A standalone conv or linear layer and the input it sees (batch included)."""

    kind: str  # "conv1d", "conv2d", "conv3d" or "linear"
    in_channels: int
    out_channels: int
    input_shape: tuple[int, ...]  # the full input shape; the channel entry is replaced by in_channels
    kernel_size: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] | str = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True
    dtype: torch.dtype = torch.float32

    @property
    def depthwise(self) -> bool:
        return self.kind != "linear" and self.groups == self.in_channels == self.out_channels > 1

    def with_in(self, width: int) -> LayerSpec:
        """The same layer taking ``width`` input channels (a depthwise conv keeps in = out = groups)."""
        if self.depthwise:
            return replace(self, in_channels=width, out_channels=width, groups=width)
        return replace(self, in_channels=width)

    def with_out(self, width: int) -> LayerSpec:
        """The same layer producing ``width`` output channels."""
        if self.depthwise:
            return replace(self, in_channels=width, out_channels=width, groups=width)
        return replace(self, out_channels=width)

    def build(self, device: torch.device | str) -> tuple[nn.Module, torch.Tensor]:
        """The layer and an input of the right shape, with small random values (no denormals)."""
        if self.kind == "linear":
            layer: nn.Module = nn.Linear(self.in_channels, self.out_channels, bias=self.bias)
            shape = (*self.input_shape[:-1], self.in_channels)
        else:
            conv = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d}[self.kind]
            layer = conv(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, self.bias)
            shape = (self.input_shape[0], self.in_channels, *self.input_shape[2:])
        layer = layer.to(device=device, dtype=self.dtype)
        return layer, torch.randn(shape, device=device, dtype=self.dtype)


_CONVS = {nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.Conv3d: "conv3d"}


def layer_spec(module: nn.Module, input_shape: Iterable[int], dtype: torch.dtype = torch.float32) -> LayerSpec | None:
    """The :class:`LayerSpec` of a conv or linear layer fed ``input_shape``; ``None`` for other layers.

    Grouped (not depthwise) convolutions are left out: their width moves in steps of the
    group count, which the planner does not choose here.
    """
    shape = tuple(int(s) for s in input_shape)
    if isinstance(module, nn.Linear):
        return LayerSpec("linear", module.in_features, module.out_features, shape, bias=module.bias is not None,
                         dtype=dtype)
    kind = next((k for cls, k in _CONVS.items() if type(module) is cls or isinstance(module, cls)), None)
    if kind is None or not isinstance(module, nn.modules.conv._ConvNd) or module.transposed:
        return None
    spec = LayerSpec(kind, module.in_channels, module.out_channels, shape, tuple(module.kernel_size),
                     tuple(module.stride), module.padding if isinstance(module.padding, str) else tuple(module.padding),
                     tuple(module.dilation), module.groups, module.bias is not None, dtype)
    if module.groups != 1 and not spec.depthwise:
        return None
    return spec


def time_layer_ms(spec: LayerSpec, device: torch.device | str = "cpu", threads: int | None = None,
                  repeats: int = 3) -> float:
    """Median milliseconds of one forward of the layer ``spec`` describes (after one warm-up)."""
    layer, x = spec.build(device)
    return measure_latency(layer, x, warmup=1, repeats=repeats, device=device, threads=threads).median_ms


class WidthTable:
    """Cached layer timings: ``table.ms(spec)`` times each distinct layer once.

    Args:
        timer: ``timer(spec) -> milliseconds``; default :func:`time_layer_ms` on ``device``
            with ``threads``. Replaceable, e.g. by a deterministic cost table in tests or a
            remote measurement.
        device / threads: where and with how many intra-op threads the default timer runs.
    """

    def __init__(self, timer: Callable[[LayerSpec], float] | None = None, device: torch.device | str = "cpu",
                 threads: int | None = None) -> None:
        self.timer = timer if timer is not None else (lambda spec: time_layer_ms(spec, device, threads))
        self.times: dict[LayerSpec, float] = {}

    def ms(self, spec: LayerSpec) -> float:
        if spec not in self.times:
            self.times[spec] = float(self.timer(spec))
        return self.times[spec]

    def __len__(self) -> int:
        return len(self.times)


def candidate_widths(planned: int, current: int, step: int = 1, window: float = 0.125,
                     multiples: Iterable[int] = MULTIPLES) -> list[int]:
    """Channel counts near ``planned`` worth timing: itself and the nearby multiples.

    Candidates lie in ``[planned * (1 - window), planned * (1 + window)]``, at most
    ``current`` (a prune never adds channels), at least ``step``, and are multiples of
    ``step`` (the channels of one pruning unit, e.g. a head's dims).
    """
    lo = max(step, math.floor(planned * (1 - window)))
    hi = min(current, math.ceil(planned * (1 + window)))
    out = {planned}
    for m in multiples:
        m = m * step // math.gcd(m, step)  # a multiple of both
        for c in (m * (planned // m), m * -(-planned // m)):
            if lo <= c <= hi and c >= step:
                out.add(c)
    return sorted(out)


def choose_width(times: dict[int, float], planned: int, margin: float = 0.03) -> int:
    """The width to use, from measured ``{width: ms}`` around ``planned``.

    Time grows with width; what matters is how far each width sits *below* the trend of
    its neighbours. A least-squares line through the measured points is that trend; the
    width with the largest saving against it wins, but only when that saving beats the
    planned width's by more than ``margin`` of its time (smaller differences are noise).
    """
    if planned not in times:
        raise ValueError(f"choose_width: the planned width {planned} must be among the timed ones {sorted(times)}")
    if len(times) < 3:
        return planned
    xs, ys = list(times), [times[w] for w in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0

    def residual(w: int) -> float:
        return times[w] - (my + slope * (w - mx))

    best = min(xs, key=lambda w: (residual(w), abs(w - planned)))
    if residual(planned) - residual(best) > margin * max(times[planned], 1e-12):
        return best
    return planned
