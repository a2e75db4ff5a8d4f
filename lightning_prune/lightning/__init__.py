"""Ready-made Lightning pieces for the main job: the digits data and a classifier task."""

from .digits import DigitsDataModule
from .task import ImageClassifier

__all__ = ["DigitsDataModule", "ImageClassifier"]
