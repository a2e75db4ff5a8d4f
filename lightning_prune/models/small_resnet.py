"""A small residual CNN for 8x8 digits.

It has what makes structural pruning non-trivial (residual adds that couple channels
across blocks, BatchNorm after every conv, a strided 1x1 shortcut) and trains to ~98%
on scikit-learn's digits in a few seconds on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["BasicBlock", "SmallResNet"]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, plus a shortcut (1x1 conv+BN when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """conv3x3 stem, residual stages, global average pool, linear head.

    Stage ``i`` has ``blocks[i]`` basic blocks and ``width * 2**i`` channels; every stage
    after the first halves the resolution (8x8 -> 4x4 for two stages).

    Args:
        num_classes: outputs of the head.
        width: channels of the stem and the first stage.
        blocks: number of blocks per stage.
        in_channels: image channels (1 for digits).
        seed: the weights are initialised from a private generator with this seed, so
            the same arguments always give the same model, whatever the global RNG.
    """

    def __init__(self, num_classes: int = 10, width: int = 32, blocks: Sequence[int] = (2, 2),
                 in_channels: int = 1, seed: int = 0) -> None:
        super().__init__()
        if not blocks or any(b < 1 for b in blocks):
            raise ValueError(f"blocks must be a non-empty sequence of positive ints, got {blocks!r}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        stages = []
        channels = width
        for i, n in enumerate(blocks):
            out = width * 2**i
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(channels, out, stride)] + [BasicBlock(out, out) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int = 0) -> None:
        """Kaiming-normal convs, unit BN, small uniform head, all from ``seed``.

        A private generator keeps the init independent of the global RNG, so a model is
        reproducible even when other code drew random numbers first.
        """
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                    m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
                elif isinstance(m, nn.BatchNorm2d):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                    m.reset_running_stats()
                elif isinstance(m, nn.Linear):
                    bound = 1.0 / m.in_features**0.5
                    m.weight.uniform_(-bound, bound, generator=gen)
                    m.bias.uniform_(-bound, bound, generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))
