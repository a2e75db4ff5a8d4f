"""PruningCallback inside a real Trainer: schedule, optimizer state, resume, loading, bad input."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning_helpers import RecordingLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_prune import PruningCallback, load_pruned_checkpoint
from lightning_prune.callback import HISTORY_KEY

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class Net(pl.LightningModule):
    def __init__(self, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(Block(16), Block(16))
        self.head = nn.Linear(16, 4)
        self.example_input_array = torch.zeros(1, 1, 8, 8)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.9)}


def loaders(seed: int = 0, shuffle: bool = True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    train = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=shuffle)
    val = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=64)
    return train, val


def trainer(max_epochs: int, callbacks: list, tmp_path=None, **kw) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=tmp_path is not None,
                      default_root_dir=tmp_path, deterministic=True, **kw)


class Probe(Callback):
    """Records params and a pruned weight at every epoch start (after PruningCallback)."""

    def __init__(self) -> None:
        self.params: list[int] = []
        self.weights: list[torch.Tensor] = []
        self.lr: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.params.append(sum(p.numel() for p in pl_module.parameters()))
        self.weights.append(pl_module.blocks[0].conv1.weight.detach().clone())
        self.lr.append(trainer.optimizers[0].param_groups[0]["lr"])


class StopAfter(Callback):
    """Stops the fit after ``epoch``, as an interruption would (max_epochs stays as configured)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch >= self.epoch:
            trainer.should_stop = True


def test_prunes_exactly_on_the_scheduled_epochs_and_training_continues():
    pl.seed_everything(0)
    model = Net()
    ids = {id(p) for p in model.parameters()}
    probe = Probe()
    cb = PruningCallback(pruning_ratio=0.5, prune_epochs=[1, 3], recalibration_batches=2)
    trainer(5, [cb, probe]).fit(model, *loaders())
    p = probe.params
    assert p[0] == p[0] and p[1] < p[0] and p[2] == p[1] and p[3] < p[2] and p[4] == p[3]  # falls at 1 and 3 only
    assert {id(q) for q in model.parameters()} == ids  # same Parameter objects
    # after the last prune the (pruned) weights still change: the optimizer holds them
    assert probe.weights[4].shape == model.blocks[0].conv1.weight.shape
    assert not torch.equal(probe.weights[4], model.blocks[0].conv1.weight.detach())
    # optimizer state follows the new shapes, and the LR schedule kept its progress
    opt = model.trainer.optimizers[0]
    for q in model.parameters():
        if q in opt.state:
            assert opt.state[q]["exp_avg"].shape == q.shape
    assert probe.lr == pytest.approx([1e-2 * 0.9 ** e for e in range(5)])
    assert model.blocks[0].conv1.out_channels == 8
    # the summary times both models with the benchmark's measurement, in turns, and says how
    for side in ("before", "after"):
        row = cb.summary[side]
        assert row["latency_ms_bs1"] > 0 and row["latency_iqr_ms_bs1"] >= 0
        assert row["latency_threads"] == torch.get_num_threads()
    after = cb.summary["after"]
    assert after["latency_interleaved"] == 1.0 and after["speedup_p25_bs1"] <= after["speedup_bs1"] <= after[
        "speedup_p75_bs1"]
    assert cb.dense_model is not None and not cb.dense_model.training
    assert cb.dense_model.blocks[0].conv1.out_channels == 16  # the dense copy kept its widths
    assert not any(p.requires_grad for p in cb.dense_model.parameters())


def test_adam_moments_of_kept_channels_survive_the_prune():
    pl.seed_everything(0)
    model = Net()
    seen = {}

    class Capture(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                w = pl_module.blocks[0].conv1.weight
                seen["before"] = trainer.optimizers[0].state[w]["exp_avg"].clone()

    cb = PruningCallback(pruning_ratio=0.5, measure_latency=False, prune_epochs=[1], recalibrate_bn=False)

    class After(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                w = pl_module.blocks[0].conv1.weight
                seen["after"] = trainer.optimizers[0].state[w]["exp_avg"].clone()
                seen["record"] = cb.pruner.pruning_history()[0]["tensors"]["blocks.0.conv1.weight"]

    trainer(2, [Capture(), cb, After()]).fit(model, *loaders())
    expected = seen["before"]
    for dim, kept in seen["record"]:
        expected = expected.index_select(dim, torch.tensor(kept))
    torch.testing.assert_close(seen["after"], expected, rtol=0, atol=0)


def test_resume_mid_schedule_matches_an_uninterrupted_run(tmp_path):
    def run(max_epochs, ckpt=None, root=None, stop_after=None):
        pl.seed_everything(0)
        model = Net()
        cb = PruningCallback(pruning_ratio=0.5, measure_latency=False, prune_epochs=[1, 3], recalibration_batches=2)
        ck = ModelCheckpoint(dirpath=root, save_last=True, every_n_epochs=1) if root else None
        extra = [StopAfter(stop_after)] if stop_after is not None else []
        t = trainer(max_epochs, [cb] + ([ck] if ck else []) + extra, tmp_path=root)
        # Lightning does not restore a shuffling RNG on resume, so a reproducible data order is
        # part of "deterministic settings" here.
        t.fit(model, *loaders(shuffle=False), ckpt_path=ckpt)
        return model

    a = run(5)
    run(5, root=tmp_path / "b", stop_after=1)  # interrupted between the two prunes
    b = run(5, ckpt=str(tmp_path / "b" / "last.ckpt"), root=tmp_path / "b2")
    assert {n: p.shape for n, p in a.state_dict().items() if n != HISTORY_KEY} == \
        {n: p.shape for n, p in b.state_dict().items() if n != HISTORY_KEY}
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=n)


def test_pruned_checkpoint_loads_into_a_fresh_module(tmp_path):
    pl.seed_everything(0)
    model = Net()
    cb = PruningCallback(pruning_ratio=0.5, measure_latency=False, prune_epochs=[0])
    t = trainer(1, [cb], tmp_path=tmp_path)
    t.fit(model, *loaders())
    path = tmp_path / "pruned.ckpt"
    t.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)  # primitives and tensors only
    assert HISTORY_KEY in raw["state_dict"]
    fresh = load_pruned_checkpoint(Net(), str(path))
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(x), model(x))
    assert fresh.blocks[0].conv1.out_channels == 8


@pytest.mark.parametrize("kwargs, match", [
    ({"ignored_layers": ["blocks.9"]}, "no module matches 'blocks.9'"),
    ({"pruning_ratio_dict": {"nope*": 0.2}}, "no module matches 'nope\\*'"),
    ({"example_input": "first_batch"}, None),  # works: taken from the training dataloader
])
def test_bad_names_stop_the_fit_at_setup(tmp_path, kwargs, match):
    pl.seed_everything(0)
    model = Net()
    cb = PruningCallback(pruning_ratio=0.5, measure_latency=False, prune_epochs=[0], **kwargs)
    t = trainer(1, [cb], tmp_path=tmp_path)
    if match is None:
        t.fit(model, *loaders())
        assert model.blocks[0].conv1.out_channels == 8
        return
    with pytest.raises(ValueError, match=match):
        t.fit(model, *loaders())
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing half-pruned was written
    assert model.blocks[0].conv1.out_channels == 16


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="pruning_ratio"):
        PruningCallback(pruning_ratio=1.5)
    with pytest.raises(ValueError, match="magnitude"):
        PruningCallback(importance="magic")
    with pytest.raises(ValueError, match="regularization"):
        PruningCallback(regularization="l0")
    with pytest.raises(ValueError, match="prune_epochs"):
        PruningCallback(prune_epochs=[3, 1])


def test_missing_example_input_is_explained():
    class NoExample(Net):
        def __init__(self):
            super().__init__()
            self.example_input_array = None

    with pytest.raises(ValueError, match="example_input_array is not set"):
        trainer(1, [PruningCallback(prune_epochs=[0])]).fit(NoExample(), *loaders())


def test_sparse_training_regularizes_after_backward():
    pl.seed_everything(0)
    model = Net()
    cb = PruningCallback(pruning_ratio=0.5, measure_latency=False, prune_epochs=[1], regularization="group_norm",
                         regularization_strength=1e-3, recalibration_batches=2)
    trainer(2, [cb]).fit(model, *loaders())
    assert type(cb.pruner).__name__ == "GroupNormPruner"
    assert model.blocks[0].conv1.out_channels == 8


def test_export_as_torch_export_program(tmp_path):
    pl.seed_everything(0)
    model = Net()
    path = tmp_path / "pruned.pt2"
    cb = PruningCallback(pruning_ratio=0.5, measure_latency=False, prune_epochs=[0], export_path=str(path), export_format="torch_export")
    trainer(1, [cb]).fit(model, *loaders())
    program = torch.export.load(str(path))
    x = torch.randn(3, 1, 8, 8)[:1]
    model.eval()
    torch.testing.assert_close(program.module()(x), model(x))
    with pytest.raises(ValueError, match="export_format"):
        PruningCallback(export_format="tflite")


def test_export_as_onnx_runs_in_onnx_checker(tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx is part of the dev extra")
    pl.seed_everything(0)
    model = Net()
    path = tmp_path / "pruned.onnx"
    cb = PruningCallback(pruning_ratio=0.5, measure_latency=False, prune_epochs=[0], export_path=str(path), export_format="onnx")
    trainer(1, [cb]).fit(model, *loaders())
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    conv_shapes = {tuple(init.dims) for init in graph.graph.initializer if len(init.dims) == 4}
    assert (8, 8, 3, 3) in conv_shapes and (16, 16, 3, 3) not in conv_shapes


def test_each_prune_logs_params_macs_and_per_layer_widths():
    pl.seed_everything(0)
    model = Net()
    logger = RecordingLogger()
    cb = PruningCallback(pruning_ratio=0.5, measure_latency=False, pruning_steps=2, start_epoch=1, recalibrate_bn=False)
    pl.Trainer(max_epochs=3, callbacks=[cb], logger=logger, enable_progress_bar=False, enable_model_summary=False,
               enable_checkpointing=False).fit(model, *loaders())
    prunes = [m for m in logger.metrics if "pruning/step" in m]
    dense = [m for m in logger.metrics if "pruning/params" in m and "pruning/step" not in m]
    assert len(prunes) == 2 and [m["epoch"] for m in prunes] == [1.0, 2.0]  # each point carries its epoch
    assert len(dense) == 1 and dense[0]["epoch"] == 1.0  # the dense baseline, logged before the first prune
    assert dense[0]["pruning/params"] == sum(p.numel() for p in Net().parameters()) > prunes[0]["pruning/params"]
    assert prunes[0]["pruning/params"] > prunes[1]["pruning/params"] == sum(p.numel() for p in model.parameters())
    assert prunes[1]["pruning/width/blocks.0.conv1"] == model.blocks[0].conv1.out_channels == 8
    assert prunes[0]["pruning/width/blocks.0.conv1"] == 12
    assert prunes[1]["pruning/width/head"] == 4  # the classifier keeps its outputs
