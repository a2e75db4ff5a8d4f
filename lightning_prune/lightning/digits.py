"""scikit-learn's digits as a LightningDataModule (embedded data: no download)."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset

from ..data.digits import load_digits_split


class DigitsDataModule(pl.LightningDataModule):
    """1,797 real 8x8 handwritten digits, split stratified into train and validation.

    Args:
        batch_size: training batch size.
        val_fraction: fraction of each class held out for validation.
        seed: seed of the split and of the training shuffle.
        channels: repeat the grey channel to feed models that expect RGB (e.g. torchvision's ViT).
    """

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.2, seed: int = 0, channels: int = 1) -> None:
        super().__init__()
        self.channels = channels
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        x_train, y_train, x_val, y_val = load_digits_split(self.val_fraction, self.seed)
        if self.channels != 1:
            x_train, x_val = x_train.repeat(1, self.channels, 1, 1), x_val.repeat(1, self.channels, 1, 1)
        self.train_set = TensorDataset(x_train, y_train)
        self.val_set = TensorDataset(x_val, y_val)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=512)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
