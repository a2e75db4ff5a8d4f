"""Small LightningModules, data and trainers shared by the callback tests."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_prune import PruningCheckpointMixin

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")
warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")


class ConvNet(PruningCheckpointMixin, pl.LightningModule):
    """conv-BN-ReLU x2 + linear head on 1x8x8 inputs; Lightning's loaders work on it."""

    def __init__(self, width: int = 16, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        )
        self.head = nn.Linear(width, 4)
        self.example_input_array = torch.zeros(1, 1, 8, 8)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def data(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    return x, y


def loaders(batch_size: int = 32, seed: int = 0):
    x, y = data(seed=seed)
    return (DataLoader(TensorDataset(x, y), batch_size=batch_size),
            DataLoader(TensorDataset(x[:32], y[:32]), batch_size=32))


def trainer(max_epochs: int, callbacks: list, root=None, **kw) -> pl.Trainer:
    kw.setdefault("logger", False)
    return pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=root is not None and "checkpoint" not in kw,
                      default_root_dir=root, accelerator="cpu", devices=1, **kw)


def state(module: nn.Module) -> dict:
    """Values and shapes of every tensor, and every module's primitive attributes."""
    tensors = {k: v.detach().clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    attrs = {f"{n}.{k}": v for n, m in module.named_modules() for k, v in vars(m).items()
             if isinstance(v, int | float | bool | str) and k in ("in_channels", "out_channels", "num_features",
                                                                   "in_features", "out_features")}
    return {"tensors": tensors, "attrs": attrs}


def assert_same(module: nn.Module, saved: dict) -> None:
    now = state(module)
    assert now["attrs"] == saved["attrs"]
    assert now["tensors"].keys() == saved["tensors"].keys()
    for k, v in saved["tensors"].items():
        assert now["tensors"][k].shape == v.shape, k
        assert torch.equal(now["tensors"][k], v), k


class RecordingLogger(pl.loggers.Logger):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[dict] = []

    @property
    def name(self):
        return "recording"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.append(dict(metrics))


def optimizer_state(optimizer) -> dict:
    return {id(p): {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
            for p, s in optimizer.state.items()}
