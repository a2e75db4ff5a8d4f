"""Ready-made Lightning pieces for the main job: the digits data and a classifier task."""

from .digits import DigitsDataModule
from .imagefolder import ImageFolderDataModule
from .task import ImageClassifier

__all__ = ["DigitsDataModule", "ImageClassifier", "ImageFolderDataModule"]
