"""Pruners that regularize during sparse training, and the gradient machinery they share.

See :mod:`.base` for the training loop and ``docs/sparse_training.md`` for the formulas.
"""

from .base import SparseTrainingPruner
from .bn_scale import BNScalePruner
from .group_norm import GroupNormPruner
from .growing_reg import GrowingRegPruner
from .slices import GradientCoefficients, GroupSlices, UnitSlice, group_slices

__all__ = [
    "SparseTrainingPruner", "BNScalePruner", "GroupNormPruner", "GrowingRegPruner",
    "GradientCoefficients", "GroupSlices", "UnitSlice", "group_slices",
]
