"""Any ``ImageFolder`` directory (``root/train/<class>/*.png``, ``root/val/<class>/*.png``)."""

from __future__ import annotations

import os

import lightning.pytorch as pl
from torch.utils.data import DataLoader


class ImageFolderDataModule(pl.LightningDataModule):
    """Images in class folders, resized and normalized like torchvision's ImageNet models.

    Args:
        root: directory holding ``train/`` and ``val/`` class folders.
        image_size: side of the square crop fed to the model.
        batch_size: batch size for both splits.
        num_workers: DataLoader workers.
    """

    def __init__(self, root: str, image_size: int = 224, batch_size: int = 32, num_workers: int = 2) -> None:
        super().__init__()
        self.root = root
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers

    def setup(self, stage: str | None = None) -> None:
        from torchvision import datasets, transforms

        for split in ("train", "val"):
            if not os.path.isdir(os.path.join(self.root, split)):
                raise FileNotFoundError(f"ImageFolderDataModule: {os.path.join(self.root, split)} does not exist; "
                                        f"expected root/train/<class>/... and root/val/<class>/...")
        norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        train_tf = transforms.Compose([transforms.RandomResizedCrop(self.image_size), transforms.RandomHorizontalFlip(),
                                       transforms.ToTensor(), norm])
        val_tf = transforms.Compose([transforms.Resize(int(self.image_size * 1.14)),
                                     transforms.CenterCrop(self.image_size), transforms.ToTensor(), norm])
        self.train_set = datasets.ImageFolder(os.path.join(self.root, "train"), train_tf)
        self.val_set = datasets.ImageFolder(os.path.join(self.root, "val"), val_tf)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)
