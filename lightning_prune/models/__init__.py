"""Small reference models for tests, benchmarks and examples."""

from .small_resnet import BasicBlock, SmallResNet

__all__ = ["BasicBlock", "SmallResNet"]
